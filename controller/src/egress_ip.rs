//! Egress IPs (OpenShift's `NetNamespace.egressIPs`, `HostSubnet.egressIPs` and
//! `HostSubnet.egressCIDRs`): the addresses a project's traffic leaves the cluster with,
//! and which nodes may hold them. Stored beside the NetNamespaces and HostSubnets (one
//! record per project and per node, one guard for both), so that every change is one
//! transaction that sees every other project's and node's egress addresses.
//!
//! Placement (`placement`): an address that a node lists in its `egressIPs` is that
//! node's (manual); one that falls in `egressCIDRs` goes to one of the live nodes
//! listing such a CIDR, balanced; every agent computes the same placement from the same
//! records and the same set of live nodes (their leases, `NodeLease`), so no master is
//! needed.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

use crate::{
    hostsubnets::validate_node_name,
    netnamespaces::{validate_annotations, validate_project_name, CHANGE_NETWORK_ANNOTATION},
    Error, Result,
};

/// Egress IPs a project may have (the dataplane's per-project entry holds this many).
pub const MAX_PROJECT_EGRESS_IPS: usize = oxsdn_common::egress_ip::MAX_EGRESS_IPS as usize;
/// Egress IPs and CIDRs a node may list (bounds the records and the placement's work).
pub const MAX_NODE_EGRESS: usize = 256;

/// `NetNamespace.egressIPs` of one project.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectEgressIps {
    pub project: String,
    #[serde(rename = "egressIPs")]
    pub egress_ips: Vec<Ipv4Addr>,
}

/// `HostSubnet.egressIPs` and `HostSubnet.egressCIDRs` of one node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeEgress {
    pub node: String,
    #[serde(rename = "egressIPs", default)]
    pub egress_ips: Vec<Ipv4Addr>,
    #[serde(rename = "egressCIDRs", default)]
    pub egress_cidrs: Vec<Ipv4Network>,
}

/// A node agent's heartbeat: rewritten every `LEASE_INTERVAL_MS` while the agent runs,
/// with the network of its underlay address (where egress IPs it holds must lie).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeLease {
    pub node: String,
    pub network: Ipv4Network,
    /// Increases with every renewal: watchers see a change.
    pub beat: u64,
}

/// How often an agent renews its lease.
pub const LEASE_INTERVAL_MS: u64 = 250;
/// A node whose lease has not been renewed for this long (as its watcher's clock sees
/// it) is dead: its automatic egress IPs move. Four renewals may be lost first.
pub const LEASE_TIMEOUT_MS: u64 = 1000;

fn duplicates<T: Ord + Copy>(items: &[T]) -> Option<T> {
    let mut seen = BTreeSet::new();
    items.iter().copied().find(|i| !seen.insert(*i))
}

fn usable(ip: Ipv4Addr) -> bool {
    !(ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast() || ip.is_link_local())
}

impl ProjectEgressIps {
    pub fn check(&self) -> Result<()> {
        validate_project_name(&self.project)?;
        if self.egress_ips.len() > MAX_PROJECT_EGRESS_IPS {
            return Err(Error::Invalid(format!(
                "project {:?}: {} egress IPs, at most {MAX_PROJECT_EGRESS_IPS}",
                self.project,
                self.egress_ips.len()
            )));
        }
        if let Some(ip) = duplicates(&self.egress_ips) {
            return Err(Error::Invalid(format!("project {:?}: egress IP {ip} given twice", self.project)));
        }
        if let Some(ip) = self.egress_ips.iter().find(|ip| !usable(**ip)) {
            return Err(Error::Invalid(format!("project {:?}: {ip} cannot be an egress IP", self.project)));
        }
        Ok(())
    }
}

impl NodeEgress {
    pub fn check(&self) -> Result<()> {
        validate_node_name(&self.node)?;
        if self.egress_ips.len() > MAX_NODE_EGRESS || self.egress_cidrs.len() > MAX_NODE_EGRESS {
            return Err(Error::Invalid(format!(
                "node {:?}: at most {MAX_NODE_EGRESS} egress IPs and {MAX_NODE_EGRESS} egress CIDRs",
                self.node
            )));
        }
        if let Some(ip) = duplicates(&self.egress_ips) {
            return Err(Error::Invalid(format!("node {:?}: egress IP {ip} given twice", self.node)));
        }
        if let Some(ip) = self.egress_ips.iter().find(|ip| !usable(**ip)) {
            return Err(Error::Invalid(format!("node {:?}: {ip} cannot be an egress IP", self.node)));
        }
        if let Some(cidr) = self.egress_cidrs.iter().find(|c| c.network() != c.ip() || c.prefix() < 8) {
            return Err(Error::Invalid(format!(
                "node {:?}: egress CIDR {cidr} must be a network address with a prefix of at least /8",
                self.node
            )));
        }
        Ok(())
    }

    fn in_cidrs(&self, ip: Ipv4Addr) -> bool {
        self.egress_cidrs.iter().any(|c| c.contains(ip))
    }
}

/// Everything the egress IP checks and the placement read.
#[derive(Clone, Debug, Default)]
pub struct EgressIpState {
    pub projects: BTreeMap<String, ProjectEgressIps>,
    pub nodes: BTreeMap<String, NodeEgress>,
    /// Node name -> underlay address (HostSubnet.hostIP).
    pub node_ips: BTreeMap<String, Ipv4Addr>,
    /// Node name -> its underlay network (from its lease).
    pub node_networks: BTreeMap<String, Ipv4Network>,
}

impl EgressIpState {
    /// Checks the whole state: every project egress IP lies in some node's network or
    /// egress CIDRs, is no node's address, and belongs to one project only; every
    /// manual node egress IP lies in that node's network or egress CIDRs, and is listed
    /// by one node only. The first problem found, naming what conflicts.
    pub fn check(&self) -> Result<()> {
        let mut owner: BTreeMap<Ipv4Addr, &str> = BTreeMap::new();
        for p in self.projects.values() {
            for ip in &p.egress_ips {
                if let Some(other) = owner.insert(*ip, &p.project) {
                    return Err(Error::Invalid(format!(
                        "egress IP {ip} would belong to two projects, {other:?} and {:?}",
                        p.project
                    )));
                }
                if let Some((node, _)) = self.node_ips.iter().find(|(_, a)| *a == ip) {
                    return Err(Error::Invalid(format!("egress IP {ip} is node {node:?}'s own address")));
                }
                let inside = self.nodes.values().any(|n| n.in_cidrs(*ip) || n.egress_ips.contains(ip))
                    || self.node_networks.values().any(|net| net.contains(*ip));
                if !inside {
                    return Err(Error::Invalid(format!(
                        "egress IP {ip} of project {:?} is outside every node's network and egress CIDRs",
                        p.project
                    )));
                }
            }
        }
        let mut manual: BTreeMap<Ipv4Addr, &str> = BTreeMap::new();
        for n in self.nodes.values() {
            for ip in &n.egress_ips {
                if let Some(other) = manual.insert(*ip, &n.node) {
                    return Err(Error::Invalid(format!(
                        "egress IP {ip} would be held by two nodes, {other:?} and {:?}",
                        n.node
                    )));
                }
                let network = self.node_networks.get(&n.node);
                if !(n.in_cidrs(*ip) || network.is_some_and(|net| net.contains(*ip))) {
                    return Err(Error::Invalid(format!(
                        "egress IP {ip} is outside node {:?}'s network ({}) and egress CIDRs",
                        n.node,
                        network.map_or("not reported yet".to_owned(), |n| n.to_string())
                    )));
                }
                if self.node_ips.values().any(|a| a == ip) {
                    return Err(Error::Invalid(format!("egress IP {ip} is a node's own address")));
                }
            }
        }
        Ok(())
    }

    /// Which node holds each project egress IP, given the nodes alive. A node's manual
    /// egress IP is that node's while it lives (OpenShift does not move them); an
    /// address in egress CIDRs goes to a live node listing such a CIDR, each address in
    /// turn (sorted) to the one holding the fewest so far, ties to the first by name:
    /// balanced, and the same on every node that sees the same records and leases.
    /// Addresses no live node may hold are absent.
    pub fn placement(&self, live: &BTreeSet<String>) -> BTreeMap<Ipv4Addr, String> {
        let mut out = BTreeMap::new();
        let mut load: BTreeMap<&str, usize> = BTreeMap::new();
        let mut automatic = BTreeSet::new();
        for ip in self.projects.values().flat_map(|p| p.egress_ips.iter().copied()) {
            match self.nodes.values().find(|n| n.egress_ips.contains(&ip)) {
                Some(n) if live.contains(&n.node) => {
                    *load.entry(&n.node).or_default() += 1;
                    out.insert(ip, n.node.clone());
                }
                Some(_) => {}
                None => {
                    automatic.insert(ip);
                }
            }
        }
        for ip in automatic {
            let candidates = self.nodes.values().filter(|n| live.contains(&n.node) && n.in_cidrs(ip));
            if let Some(n) = candidates.min_by_key(|n| (load.get(n.node.as_str()).copied().unwrap_or(0), &n.node)) {
                *load.entry(&n.node).or_default() += 1;
                out.insert(ip, n.node.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn state() -> EgressIpState {
        let mut s = EgressIpState::default();
        for (n, a) in [("n1", "10.0.0.11"), ("n2", "10.0.0.12"), ("n3", "10.0.0.13")] {
            s.node_ips.insert(n.into(), ip(a));
            s.node_networks.insert(n.into(), "10.0.0.0/24".parse().unwrap());
            s.nodes.insert(
                n.into(),
                NodeEgress { node: n.into(), egress_cidrs: vec!["10.0.1.0/24".parse().unwrap()], ..Default::default() },
            );
        }
        s
    }

    fn project(s: &mut EgressIpState, name: &str, ips: &[&str]) {
        s.projects.insert(
            name.into(),
            ProjectEgressIps { project: name.into(), egress_ips: ips.iter().map(|a| ip(a)).collect() },
        );
    }

    #[test]
    fn automatic_placement_is_balanced_and_moves_off_dead_nodes() {
        let mut s = state();
        project(&mut s, "a", &["10.0.1.1", "10.0.1.2"]);
        project(&mut s, "b", &["10.0.1.3"]);
        s.check().unwrap();
        let all: BTreeSet<String> = ["n1", "n2", "n3"].map(String::from).into();
        let placed = s.placement(&all);
        let holders: BTreeSet<&String> = placed.values().collect();
        assert_eq!(holders.len(), 3, "{placed:?}");
        let without_n1: BTreeSet<String> = ["n2", "n3"].map(String::from).into();
        let placed = s.placement(&without_n1);
        assert_eq!(placed.len(), 3);
        assert!(placed.values().all(|n| n != "n1"), "{placed:?}");
        assert!(s.placement(&BTreeSet::new()).is_empty());
    }

    #[test]
    fn manual_egress_ips_stay_with_their_node() {
        let mut s = state();
        s.nodes.get_mut("n2").unwrap().egress_ips.push(ip("10.0.0.50"));
        project(&mut s, "a", &["10.0.0.50"]);
        s.check().unwrap();
        let all: BTreeSet<String> = ["n1", "n2"].map(String::from).into();
        assert_eq!(s.placement(&all).get(&ip("10.0.0.50")).map(String::as_str), Some("n2"));
        let without_n2: BTreeSet<String> = ["n1"].map(String::from).into();
        assert!(s.placement(&without_n2).is_empty());
    }

    #[test]
    fn conflicts_are_refused() {
        let mut s = state();
        project(&mut s, "a", &["10.0.1.1"]);
        project(&mut s, "b", &["10.0.1.1"]);
        assert!(s.check().unwrap_err().to_string().contains("two projects, \"a\" and \"b\""));
        let mut s = state();
        project(&mut s, "a", &["192.168.9.9"]);
        assert!(s.check().unwrap_err().to_string().contains("outside every node's network"));
        let mut s = state();
        project(&mut s, "a", &["10.0.0.12"]);
        assert!(s.check().unwrap_err().to_string().contains("node \"n2\"'s own address"));
        let mut s = state();
        s.nodes.get_mut("n1").unwrap().egress_ips.push(ip("10.0.0.50"));
        s.nodes.get_mut("n2").unwrap().egress_ips.push(ip("10.0.0.50"));
        assert!(s.check().unwrap_err().to_string().contains("two nodes, \"n1\" and \"n2\""));
        let mut s = state();
        s.nodes.get_mut("n1").unwrap().egress_ips.push(ip("10.9.0.50"));
        assert!(s.check().unwrap_err().to_string().contains("outside node \"n1\"'s network"));
        let p = ProjectEgressIps { project: "a".into(), egress_ips: vec![ip("10.0.1.1"), ip("10.0.1.1")] };
        assert!(p.check().is_err());
        let n =
            NodeEgress { node: "n1".into(), egress_cidrs: vec!["10.0.1.1/24".parse().unwrap()], ..Default::default() };
        assert!(n.check().is_err());
    }
}

/// OpenShift's NetNamespace object (`network.openshift.io/v1`) as a manifest holds it:
/// what `oxsdnctl apply` takes of it is `egressIPs` and `metadata.annotations`. `netid`
/// and `netname`, when given, must be the project's: oxsdn assigns VNIDs itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetNamespaceManifest {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netid: Option<u32>,
    #[serde(rename = "egressIPs", default, skip_serializing_if = "Vec::is_empty")]
    pub egress_ips: Vec<Ipv4Addr>,
}

/// OpenShift's HostSubnet object (`network.openshift.io/v1`) as a manifest holds it:
/// what `oxsdnctl apply` takes of it is `egressIPs` and `egressCIDRs`; `host`, `hostIP`
/// and `subnet`, when given, must be the node's (registered by its agent).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostSubnetManifest {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(rename = "hostIP", default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<Ipv4Network>,
    #[serde(rename = "egressIPs", default, skip_serializing_if = "Vec::is_empty")]
    pub egress_ips: Vec<Ipv4Addr>,
    #[serde(rename = "egressCIDRs", default, skip_serializing_if = "Vec::is_empty")]
    pub egress_cidrs: Vec<Ipv4Network>,
}

/// The egress part of a NetNamespace manifest, its annotations (set on the project,
/// others kept), and what it says the project is.
#[derive(Clone, Debug, PartialEq)]
pub struct NetNamespaceEgress {
    pub record: ProjectEgressIps,
    pub annotations: BTreeMap<String, String>,
    pub netid: Option<u32>,
}

/// The egress part of a HostSubnet manifest, and what it says the node is.
#[derive(Clone, Debug, PartialEq)]
pub struct HostSubnetEgress {
    pub record: NodeEgress,
    pub host_ip: Option<Ipv4Addr>,
    pub subnet: Option<Ipv4Network>,
}

impl NetNamespaceManifest {
    pub fn into_egress(self) -> std::result::Result<NetNamespaceEgress, String> {
        let name = self.metadata.name.unwrap_or_default();
        if let Some(netname) = self.netname.filter(|n| *n != name) {
            return Err(format!("NetNamespace {name:?}: netname {netname:?} must be metadata.name"));
        }
        let annotations = self.metadata.annotations.unwrap_or_default();
        if annotations.contains_key(CHANGE_NETWORK_ANNOTATION) {
            // Only OpenShift's master acts on it; without an API server nothing would.
            return Err(format!(
                "NetNamespace {name:?}: metadata.annotations[{CHANGE_NETWORK_ANNOTATION}]: use `oxsdnctl pod-network` \
                 to join, isolate or make projects global"
            ));
        }
        validate_annotations(&annotations).map_err(|e| format!("NetNamespace {name:?}: metadata.annotations: {e}"))?;
        let record = ProjectEgressIps { project: name, egress_ips: self.egress_ips };
        record.check().map_err(|e| e.to_string())?;
        Ok(NetNamespaceEgress { record, annotations, netid: self.netid })
    }
}

impl HostSubnetManifest {
    pub fn into_egress(self) -> std::result::Result<HostSubnetEgress, String> {
        let name = self.metadata.name.unwrap_or_default();
        if let Some(host) = self.host.filter(|h| *h != name) {
            return Err(format!("HostSubnet {name:?}: host {host:?} must be metadata.name"));
        }
        let record = NodeEgress { node: name, egress_ips: self.egress_ips, egress_cidrs: self.egress_cidrs };
        record.check().map_err(|e| e.to_string())?;
        Ok(HostSubnetEgress { record, host_ip: self.host_ip, subnet: self.subnet })
    }
}
