//! Egress IPs of projects and nodes, and the nodes' leases. A change to either kind of
//! egress record is one transaction that reads all of both (one guard), the HostSubnets
//! and the leases' networks, and checks the whole (`EgressIpState::check`) before it
//! writes: nothing conflicting is ever stored.

use std::{collections::BTreeMap, sync::mpsc::Receiver};

use super::{keys, policy::ApplyOutcome, Attempt, Cluster, Record};
use crate::{
    egress_ip::{EgressIpState, NodeEgress, NodeLease, ProjectEgressIps},
    hostsubnets::validate_node_name,
    netnamespaces::validate_annotations,
    policy::manifest::Object,
    store::Op,
    vnid::GLOBAL_VNID,
    Error, HostSubnet, NetNamespace, Result,
};

impl Record for ProjectEgressIps {
    const PREFIX: &'static str = keys::PROJECT_EGRESS_IPS;
    const GUARD: &'static str = keys::EGRESS_IPS_GUARD;
    const KIND: &'static str = "project egress IPs";
    fn key_name(&self) -> String {
        self.project.clone()
    }
    fn validate(&self) -> Result<()> {
        self.check()
    }
}

impl Record for NodeEgress {
    const PREFIX: &'static str = keys::NODE_EGRESS;
    const GUARD: &'static str = keys::EGRESS_IPS_GUARD;
    const KIND: &'static str = "node egress";
    fn key_name(&self) -> String {
        self.node.clone()
    }
    fn validate(&self) -> Result<()> {
        self.check()
    }
}

impl Record for NodeLease {
    const PREFIX: &'static str = keys::LEASES;
    /// Renewals write no guard (they would rewrite it four times a second per node);
    /// nothing lists leases in a transaction.
    const GUARD: &'static str = keys::LEASES;
    const KIND: &'static str = "node lease";
    fn key_name(&self) -> String {
        self.node.clone()
    }
    fn validate(&self) -> Result<()> {
        validate_node_name(&self.node)
    }
}

/// A change to a project's or a node's egress record, or a lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EgressIpEvent {
    Project(ProjectEgressIps),
    ProjectDeleted(String),
    Node(NodeEgress),
    NodeDeleted(String),
    Lease(NodeLease),
    LeaseDeleted(String),
}

impl Attempt<'_> {
    /// The egress state as stored, with `change` applied, checked.
    fn egress_state(&mut self, change: impl FnOnce(&mut EgressIpState)) -> Result<EgressIpState> {
        let mut state = EgressIpState {
            projects: self.records::<ProjectEgressIps>("")?.into_iter().map(|p| (p.project.clone(), p)).collect(),
            nodes: self.records::<NodeEgress>("")?.into_iter().map(|n| (n.node.clone(), n)).collect(),
            node_ips: self.hostsubnets()?.into_values().map(|hs| (hs.host, hs.host_ip)).collect(),
            node_networks: Default::default(),
        };
        // Not guarded: the networks nodes report do not change while they run.
        for kv in self.store.list(keys::LEASES)?.kvs {
            let lease: NodeLease = super::decode_record(&kv)?;
            state.node_networks.insert(lease.node, lease.network);
        }
        change(&mut state);
        state.check()?;
        Ok(state)
    }
}

impl Cluster {
    /// Sets the egress IPs of project `project` (none: clears them); whether they
    /// changed. The project must exist and not be global.
    pub fn set_project_egress_ips(&self, record: &ProjectEgressIps) -> Result<bool> {
        record.check()?;
        self.transact("egress IPs", |a| {
            let ns = a.record::<NetNamespace>(&record.project)?;
            let ns = ns.ok_or_else(|| Error::UnknownProject(record.project.clone()))?;
            if ns.netid == GLOBAL_VNID && !record.egress_ips.is_empty() {
                return Err(Error::Invalid(format!(
                    "project {:?} is global (VNID 0): egress IPs are not allowed in the default or a global project",
                    record.project
                )));
            }
            let before = a.record::<ProjectEgressIps>(&record.project)?;
            if before.map_or(record.egress_ips.is_empty(), |b| b == *record) {
                return Ok(false);
            }
            a.egress_state(|s| {
                s.projects.insert(record.project.clone(), record.clone());
            })?;
            if record.egress_ips.is_empty() {
                a.delete_record::<ProjectEgressIps>(&record.project)?;
            } else {
                a.put_record(record)?;
            }
            Ok(true)
        })
    }

    /// Sets the manual egress IPs and the egress CIDRs of node `record.node`, which must
    /// have a HostSubnet (both empty: clears them); whether they changed.
    pub fn set_node_egress(&self, record: &NodeEgress) -> Result<bool> {
        record.check()?;
        self.transact("egress IPs", |a| {
            if a.record::<HostSubnet>(&record.node)?.is_none() {
                return Err(Error::UnknownNode(record.node.clone()));
            }
            let empty = record.egress_ips.is_empty() && record.egress_cidrs.is_empty();
            if a.record::<NodeEgress>(&record.node)?.map_or(empty, |b| b == *record) {
                return Ok(false);
            }
            a.egress_state(|s| {
                s.nodes.insert(record.node.clone(), record.clone());
            })?;
            if empty {
                a.delete_record::<NodeEgress>(&record.node)?;
            } else {
                a.put_record(record)?;
            }
            Ok(true)
        })
    }

    pub fn list_project_egress_ips(&self) -> Result<(Vec<ProjectEgressIps>, u64)> {
        self.list_records("")
    }

    pub fn list_node_egress(&self) -> Result<(Vec<NodeEgress>, u64)> {
        self.list_records("")
    }

    pub fn list_leases(&self) -> Result<(Vec<NodeLease>, u64)> {
        self.list_records("")
    }

    /// Renews node `lease.node`'s lease (a plain write: only that node writes it).
    pub fn renew_lease(&self, lease: &NodeLease) -> Result<()> {
        lease.validate()?;
        let value = serde_json::to_vec(lease).map_err(|e| Error::Invalid(format!("encoding a lease: {e}")))?;
        let key = format!("{}{}", keys::LEASES, lease.node);
        self.store().txn(&[], &[Op::Put { key, value }])?;
        Ok(())
    }

    /// Deletes node `node`'s lease (its agent stops): the others count it dead at once.
    pub fn delete_lease(&self, node: &str) -> Result<()> {
        self.store().txn(&[], &[Op::Delete { key: format!("{}{node}", keys::LEASES) }])?;
        Ok(())
    }

    /// Changes to egress records and leases after `after_revision` (from the lists),
    /// on one channel.
    pub fn watch_egress_ips(&self, after_revision: u64) -> Result<Receiver<EgressIpEvent>> {
        let (tx, rx) = std::sync::mpsc::channel();
        let projects = self.watch_records(after_revision, EgressIpEvent::Project, |name| {
            Some(EgressIpEvent::ProjectDeleted(name.to_owned()))
        })?;
        let nodes = self.watch_records(after_revision, EgressIpEvent::Node, |name| {
            Some(EgressIpEvent::NodeDeleted(name.to_owned()))
        })?;
        let leases = self.watch_records(after_revision, EgressIpEvent::Lease, |name| {
            Some(EgressIpEvent::LeaseDeleted(name.to_owned()))
        })?;
        for (what, source) in [("project egress IPs", projects), ("node egress", nodes), ("leases", leases)] {
            let tx = tx.clone();
            std::thread::Builder::new()
                .name(format!("watch {what}"))
                .spawn(move || {
                    for event in source {
                        if tx.send(event).is_err() {
                            return;
                        }
                    }
                })
                .map_err(|e| Error::Invalid(format!("starting a watch thread: {e}")))?;
        }
        Ok(rx)
    }
}

impl Attempt<'_> {
    /// `apply` of NetNamespace and HostSubnet objects: their egress IPs and CIDRs, all
    /// checked together with the stored ones (`outcomes[i]` for `objects[i]`). What they
    /// say of the project or node (netid, hostIP, subnet) must be what it is.
    pub(super) fn apply_egress_objects(
        &mut self,
        objects: &[&Object],
        projects: &BTreeMap<String, NetNamespace>,
        outcomes: &mut [ApplyOutcome],
    ) -> Result<()> {
        if !objects.iter().any(|o| matches!(o, Object::NetNamespaceEgress(_) | Object::HostSubnetEgress(_))) {
            return Ok(());
        }
        let nodes = self.hostsubnets()?;
        let mut projects_changed = Vec::new();
        let mut nodes_changed = Vec::new();
        for object in objects {
            match object {
                Object::NetNamespaceEgress(ns) => {
                    let name = &ns.record.project;
                    let project = projects.get(name).ok_or_else(|| Error::UnknownProject(name.clone()))?;
                    if ns.netid.is_some_and(|netid| netid != project.netid) {
                        return Err(Error::Invalid(format!(
                            "NetNamespace {name:?}: netid {} is not the project's ({}): oxsdn assigns VNIDs (use \
                             pod-network commands to change them)",
                            ns.netid.unwrap_or_default(),
                            project.netid
                        )));
                    }
                    if project.netid == GLOBAL_VNID && !ns.record.egress_ips.is_empty() {
                        return Err(Error::Invalid(format!("project {name:?} is global (VNID 0): no egress IPs")));
                    }
                    projects_changed.push(ns.record.clone());
                }
                Object::HostSubnetEgress(hs) => {
                    let name = &hs.record.node;
                    let node = nodes.get(name).ok_or_else(|| Error::UnknownNode(name.clone()))?;
                    if hs.host_ip.is_some_and(|ip| ip != node.host_ip) || hs.subnet.is_some_and(|s| s != node.subnet) {
                        return Err(Error::Invalid(format!(
                            "HostSubnet {name:?}: hostIP and subnet must be the node's ({}, {})",
                            node.host_ip, node.subnet
                        )));
                    }
                    nodes_changed.push(hs.record.clone());
                }
                _ => {}
            }
        }
        let before = self.egress_state(|_| {})?;
        self.egress_state(|s| {
            for p in &projects_changed {
                s.projects.insert(p.project.clone(), p.clone());
            }
            for n in &nodes_changed {
                s.nodes.insert(n.node.clone(), n.clone());
            }
        })?;
        for (i, object) in objects.iter().enumerate() {
            let changed = match object {
                Object::NetNamespaceEgress(ns) => {
                    let name = &ns.record.project;
                    let (old, new) = (before.projects.get(name), &ns.record);
                    let egress_changed = old.map_or(!new.egress_ips.is_empty(), |o| o != new);
                    if egress_changed {
                        if new.egress_ips.is_empty() {
                            self.delete_record::<ProjectEgressIps>(name)?;
                        } else {
                            self.put_record(new)?;
                        }
                    }
                    egress_changed | self.merge_annotations(&projects[name], &ns.annotations)?
                }
                Object::HostSubnetEgress(hs) => {
                    let name = &hs.record.node;
                    let (old, new) = (before.nodes.get(name), &hs.record);
                    let empty = new.egress_ips.is_empty() && new.egress_cidrs.is_empty();
                    if old.map_or(!empty, |o| o != new) {
                        if empty {
                            self.delete_record::<NodeEgress>(name)?;
                        } else {
                            self.put_record(new)?;
                        }
                        true
                    } else {
                        false
                    }
                }
                _ => continue,
            };
            // The project or node exists (checked above): applying egress configures it.
            if changed {
                outcomes[i] = ApplyOutcome::Configured;
            }
        }
        Ok(())
    }

    /// Sets a NetNamespace manifest's annotations on `project` (others kept, as
    /// `kubectl apply` keeps those it did not set); whether that changed it.
    fn merge_annotations(&mut self, project: &NetNamespace, annotations: &BTreeMap<String, String>) -> Result<bool> {
        let mut merged = project.annotations.clone();
        merged.extend(annotations.iter().map(|(k, v)| (k.clone(), v.clone())));
        if merged == project.annotations {
            return Ok(false);
        }
        validate_annotations(&merged)?;
        self.put_record(&NetNamespace { annotations: merged, ..project.clone() })?;
        Ok(true)
    }
}
