//! `Cluster`: the controller's operations, each one store transaction.
//!
//! Every operation reads what it needs, computes its writes and commits them in one
//! transaction that compares the mod revision of every key it read. If anything changed
//! in between, the transaction does not apply and the operation starts over (up to
//! `MAX_ATTEMPTS` times), so concurrent writers never lose an update and every
//! multi-project command is all-or-nothing.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::Ipv4Addr,
    sync::{
        mpsc::{self, Receiver},
        Arc,
    },
    time::Duration,
};

use ipnetwork::Ipv4Network;
use rand::Rng;
use serde::{de::DeserializeOwned, Serialize};

use crate::{
    hostsubnets::validate_node_name,
    netnamespaces::{validate_annotations, validate_labels, validate_project_name, LabelSelector, DEFAULT_PROJECT},
    service::{validate_ports, validate_service_name},
    store::{Compare, KeyValue, Op, Store, StoreError, WatchEvent},
    subnets::SubnetAllocator,
    vnid::{VnidAllocator, GLOBAL_VNID, MAX_VNID, MIN_VNID},
    ClusterConfig, Error, HostSubnet, NetNamespace, Result, Service,
};

mod annotations;
mod egress;
mod egress_ip;
mod import;
mod policy;
mod services;

pub use annotations::Annotated;
pub use egress::EgressPolicyEvent;
pub use egress_ip::EgressIpEvent;
pub use policy::{ApplyOutcome, LabelOutcome, LabelTarget, Labeled, NetworkPolicyEvent, PodAddressEvent, PodMetaEvent};
pub use services::{NewService, ServiceEvent};

/// Key layout in the store.
pub mod keys {
    /// Every key of oxsdn's starts with this.
    pub const PREFIX: &str = "/oxsdn/";
    pub const CONFIG: &str = "/oxsdn/config";
    pub const NETNAMESPACES: &str = "/oxsdn/netnamespaces/";
    pub const HOSTSUBNETS: &str = "/oxsdn/hostsubnets/";
    /// Services under `<project>/<name>`.
    pub const SERVICES: &str = "/oxsdn/services/";
    pub const PROJECT_ID_COUNTER: &str = "/oxsdn/counters/project-id";
    pub const SERVICE_ID_COUNTER: &str = "/oxsdn/counters/service-id";
    /// NetworkPolicies under `<project>/<name>`.
    pub const NETWORK_POLICIES: &str = "/oxsdn/networkpolicies/";
    pub const POLICY_ID_COUNTER: &str = "/oxsdn/counters/policy-id";
    /// EgressNetworkPolicies under `<project>` (one per project).
    pub const EGRESS_POLICIES: &str = "/oxsdn/egressnetworkpolicies/";
    /// Pods' labels and named ports under `<project>/<name>`.
    pub const POD_META: &str = "/oxsdn/podmeta/";
    /// Pods' addresses under `<node>/<container id>/<ifname>`: each node writes its own.
    pub const POD_ADDRESSES: &str = "/oxsdn/pods/";
    /// Rewritten by every change to a NetNamespace. Per-key compares cannot see a record
    /// that another writer adds meanwhile, so operations that depend on the whole set
    /// (which VNIDs are in use, who else shares a VNID) also compare this key.
    pub const NETNAMESPACES_GUARD: &str = "/oxsdn/guards/netnamespaces";
    /// The same for HostSubnets (which subnets and node IPs are taken).
    pub const HOSTSUBNETS_GUARD: &str = "/oxsdn/guards/hostsubnets";
    /// The same for Services (which ClusterIPs are taken, which projects have services).
    pub const SERVICES_GUARD: &str = "/oxsdn/guards/services";
    pub const NETWORK_POLICIES_GUARD: &str = "/oxsdn/guards/networkpolicies";
    pub const POD_META_GUARD: &str = "/oxsdn/guards/podmeta";
    pub const EGRESS_POLICIES_GUARD: &str = "/oxsdn/guards/egressnetworkpolicies";
    pub const POD_ADDRESSES_GUARD: &str = "/oxsdn/guards/pods";
    /// Egress IPs of projects (NetNamespace.egressIPs) under `<project>`.
    pub const PROJECT_EGRESS_IPS: &str = "/oxsdn/egressips/projects/";
    /// Egress IPs and CIDRs of nodes (HostSubnet.egressIPs, egressCIDRs) under `<node>`.
    pub const NODE_EGRESS: &str = "/oxsdn/egressips/nodes/";
    /// One guard for both: every change checks the whole set.
    pub const EGRESS_IPS_GUARD: &str = "/oxsdn/guards/egressips";
    /// The node agents' leases under `<node>`: each node writes its own.
    pub const LEASES: &str = "/oxsdn/leases/";
}

/// How often an operation is tried before it fails with `Error::Contention`.
const MAX_ATTEMPTS: u32 = 50;

/// A change to a NetNamespace, seen through `Cluster::watch_netnamespaces`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetNamespaceEvent {
    Upsert(NetNamespace),
    Deleted(String),
}

/// A change to a HostSubnet, seen through `Cluster::watch_hostsubnets`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostSubnetEvent {
    Upsert(HostSubnet),
    /// The node name.
    Deleted(String),
}

pub struct Cluster {
    store: Arc<dyn Store>,
    /// VNIDs handed out to projects; narrowed only by tests.
    vnid_range: (u32, u32),
}

/// A kind of record stored one per key under `PREFIX`, every change to which rewrites
/// `GUARD` (see `Attempt::list_guarded`).
pub(crate) trait Record: Serialize + DeserializeOwned + 'static {
    const PREFIX: &'static str;
    const GUARD: &'static str;
    /// What it is called in messages and thread names.
    const KIND: &'static str;
    /// The record's key below `PREFIX`.
    fn key_name(&self) -> String;
    /// Checks the fields as the operations that write the record do, so that a record
    /// no operation could have written (a corrupted store, a hand edit) is refused on
    /// reading instead of reaching a dataplane.
    fn validate(&self) -> Result<()>;
}

impl Record for NetNamespace {
    const PREFIX: &'static str = keys::NETNAMESPACES;
    const GUARD: &'static str = keys::NETNAMESPACES_GUARD;
    const KIND: &'static str = "netnamespace";
    fn key_name(&self) -> String {
        self.name.clone()
    }
    fn validate(&self) -> Result<()> {
        validate_project_name(&self.name)?;
        validate_labels(&self.labels)?;
        validate_annotations(&self.annotations)?;
        if self.netid != GLOBAL_VNID && !(MIN_VNID..=MAX_VNID).contains(&self.netid) {
            // A VXLAN VNI has 24 bits: a larger VNID would alias a smaller one.
            return Err(Error::Invalid(format!(
                "VNID {} is neither {GLOBAL_VNID} nor in [{MIN_VNID}, {MAX_VNID}]",
                self.netid
            )));
        }
        Ok(())
    }
}

impl Record for HostSubnet {
    const PREFIX: &'static str = keys::HOSTSUBNETS;
    const GUARD: &'static str = keys::HOSTSUBNETS_GUARD;
    const KIND: &'static str = "hostsubnet";
    fn key_name(&self) -> String {
        self.host.clone()
    }
    fn validate(&self) -> Result<()> {
        validate_node_name(&self.host)?;
        // The gateway is the subnet's first address after the network address.
        if self.subnet.prefix() > 30 {
            return Err(Error::Invalid(format!("node subnet {} has fewer than 2 host bits", self.subnet)));
        }
        Ok(())
    }
}

impl Record for Service {
    const PREFIX: &'static str = keys::SERVICES;
    const GUARD: &'static str = keys::SERVICES_GUARD;
    const KIND: &'static str = "service";
    fn key_name(&self) -> String {
        format!("{}/{}", self.project, self.name)
    }
    fn validate(&self) -> Result<()> {
        validate_project_name(&self.project)?;
        validate_service_name(&self.name)?;
        validate_ports(&self.ports)
    }
}

fn record_key<R: Record>(name: &str) -> String {
    format!("{}{name}", R::PREFIX)
}

/// One try of an operation: every read becomes a compare of the transaction, so its
/// writes apply only if nothing it read has changed since.
struct Attempt<'a> {
    store: &'a dyn Store,
    compares: Vec<Compare>,
    ops: Vec<Op>,
    /// Guards of the collections the attempt changes; rewritten at commit.
    changed: Vec<&'static str>,
}

/// A global project (VNID 0) has no egress IPs (`set_project_egress_ips` refuses them):
/// making one global that has some would let its traffic leave with the node's address.
/// The egress record is read in the same attempt, so a concurrent change fails it.
fn refuse_global_with_egress_ips(a: &mut Attempt, project: &str) -> Result<()> {
    match a.record::<crate::egress_ip::ProjectEgressIps>(project)? {
        Some(r) if !r.egress_ips.is_empty() => Err(Error::Invalid(format!(
            "project {project:?} has egress IPs, which a global project cannot have: clear them first \
             (oxsdnctl set egress-ips {project})"
        ))),
        _ => Ok(()),
    }
}

impl Attempt<'_> {
    fn get(&mut self, key: &str) -> Result<Option<KeyValue>> {
        let kv = self.store.get(key)?;
        self.compares.push(Compare::ModRevision {
            key: key.to_owned(),
            mod_revision: kv.as_ref().map_or(0, |kv| kv.mod_revision),
        });
        Ok(kv)
    }

    /// Lists a collection whose every change rewrites `guard`. The guard is read first
    /// and compared at commit, which covers every record of the list: a change after the
    /// guard read fails the transaction, a change before it is in the list. So one
    /// compare does for thousands of records (etcd limits a transaction's compares).
    fn list_guarded(&mut self, guard: &'static str, prefix: &str) -> Result<Vec<KeyValue>> {
        self.get(guard)?;
        Ok(self.store.list(prefix)?.kvs)
    }

    /// The records of kind `R` whose key names start with `below` ("" for all), guarded
    /// against concurrent changes.
    fn records<R: Record>(&mut self, below: &str) -> Result<Vec<R>> {
        self.list_guarded(R::GUARD, &record_key::<R>(below))?.iter().map(decode_record).collect()
    }

    fn record<R: Record>(&mut self, name: &str) -> Result<Option<R>> {
        self.get(&record_key::<R>(name))?.map(|kv| decode_record(&kv)).transpose()
    }

    fn put(&mut self, key: String, value: Vec<u8>) {
        self.ops.push(Op::Put { key, value });
    }

    fn put_json<T: Serialize>(&mut self, key: String, value: &T) -> Result<()> {
        let value = serde_json::to_vec(value)
            .map_err(|e| Error::BadRecord { key: key.clone(), reason: format!("cannot encode: {e}") })?;
        self.put(key, value);
        Ok(())
    }

    fn put_record<R: Record>(&mut self, record: &R) -> Result<()> {
        self.changes::<R>();
        self.put_json(record_key::<R>(&record.key_name()), record)
    }

    /// Deletes record `name` of kind `R`; false if there is none.
    fn delete_record<R: Record>(&mut self, name: &str) -> Result<bool> {
        let key = record_key::<R>(name);
        if self.get(&key)?.is_none() {
            return Ok(false);
        }
        self.changes::<R>();
        self.ops.push(Op::Delete { key });
        Ok(true)
    }

    /// Notes that the attempt changes records of kind `R`, so that their guard is
    /// rewritten. Writers need not compare the guard: it protects readers of the whole
    /// collection, and any record they themselves depend on they compare by key.
    fn changes<R: Record>(&mut self) {
        if !self.changed.contains(&R::GUARD) {
            self.changed.push(R::GUARD);
        }
    }

    /// The next `count` values of the counter at `key` (its first is 1), written back at
    /// commit.
    fn next_ids(&mut self, key: &str, what: &str, count: usize) -> Result<impl Iterator<Item = u32>> {
        let counter = self.get(key)?;
        let last = decode_counter(counter.as_ref())?;
        let end = u64::try_from(count)
            .ok()
            .and_then(|count| last.checked_add(count))
            .filter(|&end| end <= u64::from(u32::MAX))
            .ok_or_else(|| Error::Invalid(format!("{what} ids are exhausted")))?;
        self.put(key.to_owned(), end.to_string().into_bytes());
        // Every id is at most `end`, which fits a u32.
        Ok((last + 1..=end).map(|id| id as u32))
    }

    /// All NetNamespaces by name, guarded against concurrent additions.
    fn netnamespaces(&mut self) -> Result<BTreeMap<String, NetNamespace>> {
        Ok(self.records::<NetNamespace>("")?.into_iter().map(|ns| (ns.name.clone(), ns)).collect())
    }

    /// All HostSubnets by node name, guarded against concurrent additions.
    fn hostsubnets(&mut self) -> Result<BTreeMap<String, HostSubnet>> {
        Ok(self.records::<HostSubnet>("")?.into_iter().map(|hs| (hs.host.clone(), hs)).collect())
    }

    fn config(&mut self) -> Result<ClusterConfig> {
        let kv = self.get(keys::CONFIG)?.ok_or(Error::NotInitialised)?;
        decode_config(&kv)
    }
}

fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<T> {
    serde_json::from_slice(&kv.value).map_err(|e| Error::BadRecord { key: kv.key.clone(), reason: e.to_string() })
}

/// Decodes a record, checking that it names itself as its key does.
pub(crate) fn decode_record<R: Record>(kv: &KeyValue) -> Result<R> {
    let record: R = decode(kv)?;
    let name = record.key_name();
    if kv.key.strip_prefix(R::PREFIX) != Some(name.as_str()) {
        return Err(Error::BadRecord { key: kv.key.clone(), reason: format!("record is named {name:?}") });
    }
    record.validate().map_err(|e| Error::BadRecord { key: kv.key.clone(), reason: e.to_string() })?;
    Ok(record)
}

pub(crate) fn decode_config(kv: &KeyValue) -> Result<ClusterConfig> {
    let config: ClusterConfig = decode(kv)?;
    config.validate().map_err(|e| Error::BadRecord { key: kv.key.clone(), reason: e.to_string() })?;
    Ok(config)
}

/// A counter record: a decimal number; absent means 0.
pub(crate) fn decode_counter(kv: Option<&KeyValue>) -> Result<u64> {
    let Some(kv) = kv else { return Ok(0) };
    std::str::from_utf8(&kv.value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::BadRecord { key: kv.key.clone(), reason: "not a decimal counter".into() })
}

/// `projects` without repetitions, in order of first appearance, each checked to exist.
fn select<'p>(all: &BTreeMap<String, NetNamespace>, projects: &'p [String]) -> Result<Vec<&'p str>> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for p in projects {
        if !all.contains_key(p) {
            return Err(Error::UnknownProject(p.clone()));
        }
        if seen.insert(p.as_str()) {
            out.push(p.as_str());
        }
    }
    Ok(out)
}

fn validate_project_names(projects: &[String]) -> Result<()> {
    projects.iter().try_for_each(|p| validate_project_name(p))
}

/// Node IPs must be unicast addresses outside the pod and service networks.
fn validate_node_ip(ip: Ipv4Addr, config: &ClusterConfig) -> Result<()> {
    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast() {
        return Err(Error::Invalid(format!("node IP {ip} is not a unicast host address")));
    }
    for (network_kind, network) in [("cluster", config.cluster_network), ("service", config.service_network)] {
        if network.contains(ip) {
            return Err(Error::NodeIpInPodNetwork { ip, network_kind, network: network.to_string() });
        }
    }
    Ok(())
}

/// Passes decoded store events on; undecodable ones are logged and skipped. The thread
/// ends when either side of it is gone.
fn relay<E: Send + 'static>(
    events: Receiver<WatchEvent>,
    what: &'static str,
    decode: impl Fn(WatchEvent) -> Result<E> + Send + 'static,
) -> Result<Receiver<E>> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(format!("oxsdn-watch-{what}"))
        .spawn(move || {
            for event in events {
                match decode(event) {
                    Ok(e) => {
                        if tx.send(e).is_err() {
                            return;
                        }
                    }
                    Err(error) => tracing::warn!(%error, "skipping an undecodable {what} record"),
                }
            }
        })
        .map_err(|e| StoreError::Unavailable(format!("cannot start a watch thread: {e}")))?;
    Ok(rx)
}

impl Cluster {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Cluster { store, vnid_range: (MIN_VNID, MAX_VNID) }
    }

    /// Allocates VNIDs from `[min, max]` instead of `[MIN_VNID, MAX_VNID]`, so tests can
    /// run out of them. Every process writing the same store should use the same range.
    /// Panics if `min > max`.
    pub fn with_vnid_range(mut self, min: u32, max: u32) -> Self {
        assert!(min <= max, "empty VNID range [{min}, {max}]");
        self.vnid_range = (min, max);
        self
    }

    fn vnid_allocator<'n>(&self, all: impl IntoIterator<Item = &'n NetNamespace>) -> VnidAllocator {
        let (min, max) = self.vnid_range;
        VnidAllocator::with_range(min, max, all.into_iter().map(|ns| ns.netid))
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Runs `body` as a transaction, trying again while other writers get in between.
    fn transact<T>(&self, what: &str, mut body: impl FnMut(&mut Attempt) -> Result<T>) -> Result<T> {
        for attempt in 0..MAX_ATTEMPTS {
            let mut a =
                Attempt { store: self.store.as_ref(), compares: Vec::new(), ops: Vec::new(), changed: Vec::new() };
            let out = body(&mut a)?;
            if a.ops.is_empty() {
                return Ok(out);
            }
            for guard in std::mem::take(&mut a.changed) {
                a.put(guard.to_owned(), Vec::new());
            }
            if self.store.txn(&a.compares, &a.ops)? {
                return Ok(out);
            }
            // Random, growing pauses keep competing writers from colliding in lockstep.
            let max_ms = 2u64 << attempt.min(5);
            std::thread::sleep(Duration::from_millis(rand::thread_rng().gen_range(1..=max_ms)));
        }
        Err(Error::Contention(what.to_owned()))
    }

    // ---- records of any kind -----------------------------------------------------------

    fn get_record<R: Record>(&self, name: &str) -> Result<Option<R>> {
        self.store.get(&record_key::<R>(name))?.map(|kv| decode_record(&kv)).transpose()
    }

    /// The records of kind `R` whose key names start with `below` ("" for all), sorted
    /// by key, and the store revision they were read at (to watch from).
    fn list_records<R: Record>(&self, below: &str) -> Result<(Vec<R>, u64)> {
        let snapshot = self.store.list(&record_key::<R>(below))?;
        let all = snapshot.kvs.iter().map(decode_record).collect::<Result<_>>()?;
        Ok((all, snapshot.revision))
    }

    /// Changes to records of kind `R` after `after_revision`, as events: `upsert` of the
    /// record written, `deleted` of the key name deleted (`None`: not a key of an `R`,
    /// skipped like an undecodable record).
    fn watch_records<R: Record, E: Send + 'static>(
        &self,
        after_revision: u64,
        upsert: fn(R) -> E,
        deleted: fn(&str) -> Option<E>,
    ) -> Result<Receiver<E>> {
        let events = self.store.watch(R::PREFIX, after_revision)?;
        relay(events, R::KIND, move |event| match event {
            WatchEvent::Put(kv) => decode_record(&kv).map(upsert),
            WatchEvent::Delete { key, .. } => key
                .strip_prefix(R::PREFIX)
                .and_then(deleted)
                .ok_or_else(|| Error::BadRecord { reason: format!("not the key of a {}", R::KIND), key }),
        })
    }

    // ---- configuration ----------------------------------------------------------------

    pub fn config(&self) -> Result<ClusterConfig> {
        let kv = self.store.get(keys::CONFIG)?.ok_or(Error::NotInitialised)?;
        decode_config(&kv)
    }

    /// Stores `config` if the cluster has none yet. The configuration cannot change after
    /// that: the same one again is accepted, any other refused naming the differences.
    pub fn init_config(&self, config: &ClusterConfig) -> Result<ClusterConfig> {
        config.validate()?;
        self.transact(keys::CONFIG, |a| match a.get(keys::CONFIG)? {
            None => {
                a.put_json(keys::CONFIG.to_owned(), config)?;
                Ok(config.clone())
            }
            Some(kv) => {
                let current = decode_config(&kv)?;
                let differences = current.differences(config);
                if differences.is_empty() {
                    Ok(current)
                } else {
                    Err(Error::InvalidConfig(format!(
                        "the cluster is already initialised and its configuration cannot change ({})",
                        differences.join(", ")
                    )))
                }
            }
        })
    }

    // ---- NetNamespaces ----------------------------------------------------------------

    /// Creates `name` within the attempt: VNID 0 for `default`, a fresh one otherwise,
    /// and the next project id.
    fn create_netnamespace_in(
        &self,
        a: &mut Attempt,
        name: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<NetNamespace> {
        let all = a.netnamespaces()?;
        let mut created = self.create_netnamespaces_in(a, &all, vec![(name, labels)])?;
        Ok(created.remove(0))
    }

    /// Creates the projects `new` (none of which is in `all`, every project) within the
    /// attempt, each with a fresh VNID (0 for `default`) and the next project id.
    fn create_netnamespaces_in(
        &self,
        a: &mut Attempt,
        all: &BTreeMap<String, NetNamespace>,
        new: Vec<(&str, BTreeMap<String, String>)>,
    ) -> Result<Vec<NetNamespace>> {
        let mut vnids = self.vnid_allocator(all.values());
        let ids = a.next_ids(keys::PROJECT_ID_COUNTER, "project", new.len())?;
        let mut created = Vec::with_capacity(new.len());
        for ((name, labels), id) in new.into_iter().zip(ids) {
            let netid = if name == DEFAULT_PROJECT { GLOBAL_VNID } else { vnids.allocate()? };
            let ns = NetNamespace { name: name.to_owned(), netid, id, labels, annotations: BTreeMap::new() };
            a.put_record(&ns)?;
            created.push(ns);
        }
        Ok(created)
    }

    /// Creates, in one transaction, every project of `names` that does not exist yet, and
    /// returns them all. Created one by one, each project lists every other to find a
    /// free VNID, so loading thousands is quadratic; a batch lists once. A transaction
    /// writes one key per new project: keep batches within etcd's `--max-txn-ops`.
    pub fn create_netnamespaces(&self, names: &[String]) -> Result<Vec<NetNamespace>> {
        validate_project_names(names)?;
        self.transact("netnamespaces", |a| {
            let mut all = a.netnamespaces()?;
            let mut seen = HashSet::new();
            let new = names
                .iter()
                .filter(|name| !all.contains_key(*name) && seen.insert(name.as_str()))
                .map(|name| (name.as_str(), BTreeMap::new()))
                .collect();
            for ns in self.create_netnamespaces_in(a, &all, new)? {
                all.insert(ns.name.clone(), ns);
            }
            Ok(names.iter().map(|name| all[name].clone()).collect())
        })
    }

    /// The NetNamespace of project `name`, created if missing (the master's reaction to a
    /// new namespace). With credentials that may not create projects (a node's on etcd),
    /// a missing project is `Error::ProjectCreationDenied`, and nothing is written.
    pub fn ensure_netnamespace(&self, name: &str) -> Result<NetNamespace> {
        validate_project_name(name)?;
        self.transact("netnamespaces", |a| match a.record(name)? {
            Some(ns) => Ok(ns),
            None => self.create_netnamespace_in(a, name, BTreeMap::new()),
        })
        .map_err(|e| match e {
            Error::Store(reason @ StoreError::PermissionDenied(_)) => {
                Error::ProjectCreationDenied { project: name.to_owned(), reason }
            }
            other => other,
        })
    }

    /// Creates project `name` with `labels`. Idempotent: if it exists, `labels` are merged
    /// into its labels (same keys overwritten, others kept) and its VNID is left alone.
    pub fn create_netnamespace(&self, name: &str, labels: BTreeMap<String, String>) -> Result<NetNamespace> {
        validate_project_name(name)?;
        validate_labels(&labels)?;
        self.transact("netnamespaces", |a| match a.record(name)? {
            Some(mut ns) => {
                Self::relabel_in(a, &mut ns, &labels, &[])?;
                Ok(ns)
            }
            None => self.create_netnamespace_in(a, name, labels.clone()),
        })
    }

    /// Sets `set` and removes `remove` from the labels of project `name`.
    pub fn label_netnamespace(
        &self,
        name: &str,
        set: &BTreeMap<String, String>,
        remove: &[String],
    ) -> Result<NetNamespace> {
        validate_project_name(name)?;
        validate_labels(set)?;
        self.transact("netnamespaces", |a| {
            let mut ns = a.record(name)?.ok_or_else(|| Error::UnknownProject(name.to_owned()))?;
            Self::relabel_in(a, &mut ns, set, remove)?;
            Ok(ns)
        })
    }

    fn relabel_in(
        a: &mut Attempt,
        ns: &mut NetNamespace,
        set: &BTreeMap<String, String>,
        remove: &[String],
    ) -> Result<()> {
        let mut labels = ns.labels.clone();
        labels.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
        labels.retain(|k, _| !remove.contains(k));
        if labels != ns.labels {
            ns.labels = labels;
            a.put_record(ns)?;
        }
        Ok(())
    }

    pub fn get_netnamespace(&self, name: &str) -> Result<Option<NetNamespace>> {
        validate_project_name(name)?;
        self.get_record(name)
    }

    /// All NetNamespaces sorted by name, and the store revision they were read at (to
    /// watch from).
    pub fn list_netnamespaces(&self) -> Result<(Vec<NetNamespace>, u64)> {
        self.list_records("")
    }

    /// Deletes project `name`, with its NetworkPolicies and pods' labels, as Kubernetes
    /// deletes a namespace's objects. Its VNID becomes free once no other project uses it;
    /// its id is never reused. A project that still has services is not deleted
    /// (`Error::ProjectHasServices`): they would outlive it, isolated by a VNID that is
    /// no longer its, so they go first, as Kubernetes deletes a namespace's contents
    /// before the namespace.
    pub fn delete_netnamespace(&self, name: &str) -> Result<()> {
        validate_project_name(name)?;
        self.transact("netnamespaces", |a| {
            // Guarded: a service created meanwhile fails the transaction.
            let services = a.records::<Service>(&format!("{name}/"))?;
            if !a.delete_record::<NetNamespace>(name)? {
                return Err(Error::UnknownProject(name.to_owned()));
            }
            if !services.is_empty() {
                return Err(Error::ProjectHasServices {
                    project: name.to_owned(),
                    services: services.into_iter().map(|s| s.name).collect(),
                });
            }
            a.delete_namespace_contents(name, &HashSet::new())
        })
    }

    /// Names of the projects whose labels match `selector` (see `LabelSelector`), sorted.
    pub fn select_projects(&self, selector: &str) -> Result<Vec<String>> {
        let selector = LabelSelector::parse(selector)?;
        let (all, _) = self.list_netnamespaces()?;
        Ok(all.into_iter().filter(|ns| selector.matches(&ns.labels)).map(|ns| ns.name).collect())
    }

    /// `oc adm pod-network join-projects --to=<to> <projects>`: every project other than
    /// `to` gets `to`'s current VNID (so joining a global project makes them global).
    /// Returns the resulting records of those projects. Any unknown project, `to`
    /// included, fails the whole command. Like every pod-network command, refused with
    /// `Error::NotMultitenant` unless the cluster runs the multitenant plugin.
    pub fn join_projects(&self, to: &str, projects: &[String]) -> Result<Vec<NetNamespace>> {
        validate_project_name(to)?;
        validate_project_names(projects)?;
        self.transact("netnamespaces", |a| {
            a.require_multitenant()?;
            let mut all = a.netnamespaces()?;
            let target = all.get(to).ok_or_else(|| Error::UnknownProject(to.to_owned()))?.netid;
            let mut out = Vec::new();
            for name in select(&all, projects)?.into_iter().filter(|p| *p != to) {
                let ns = all.get_mut(name).ok_or_else(|| Error::UnknownProject(name.to_owned()))?;
                if ns.netid != target {
                    if target == GLOBAL_VNID {
                        refuse_global_with_egress_ips(a, name)?;
                    }
                    ns.netid = target;
                    a.put_record(&*ns)?;
                }
                out.push(ns.clone());
            }
            Ok(out)
        })
    }

    /// `oc adm pod-network isolate-projects <projects>`: a project that is the only user
    /// of a non-global VNID keeps it; any other gets a fresh VNID of its own. Projects
    /// are taken in order, as OpenShift's master handles one annotation after another:
    /// isolating both of two projects sharing a VNID moves the first and leaves the
    /// second, then the sole user, in place. `default` is refused, failing the whole
    /// command; so is any unknown project.
    pub fn isolate_projects(&self, projects: &[String]) -> Result<Vec<NetNamespace>> {
        if projects.iter().any(|p| p == DEFAULT_PROJECT) {
            return Err(Error::IsolateDefault);
        }
        validate_project_names(projects)?;
        self.transact("netnamespaces", |a| {
            a.require_multitenant()?;
            let mut all = a.netnamespaces()?;
            let selected = select(&all, projects)?;
            let mut users: HashMap<u32, usize> = HashMap::new();
            for ns in all.values() {
                *users.entry(ns.netid).or_default() += 1;
            }
            let mut allocator = self.vnid_allocator(all.values());
            let mut out = Vec::new();
            for name in selected {
                let ns = all.get_mut(name).ok_or_else(|| Error::UnknownProject(name.to_owned()))?;
                let sole_user = users.get(&ns.netid) == Some(&1);
                if ns.netid == GLOBAL_VNID || !sole_user {
                    let fresh = allocator.allocate()?;
                    users.entry(ns.netid).and_modify(|n| *n -= 1);
                    users.insert(fresh, 1);
                    ns.netid = fresh;
                    a.put_record(&*ns)?;
                }
                out.push(ns.clone());
            }
            Ok(out)
        })
    }

    /// `oc adm pod-network make-projects-global <projects>`: VNID 0 for each.
    pub fn make_projects_global(&self, projects: &[String]) -> Result<Vec<NetNamespace>> {
        validate_project_names(projects)?;
        self.transact("netnamespaces", |a| {
            a.require_multitenant()?;
            let mut all = a.netnamespaces()?;
            let mut out = Vec::new();
            for name in select(&all, projects)? {
                let ns = all.get_mut(name).ok_or_else(|| Error::UnknownProject(name.to_owned()))?;
                if ns.netid != GLOBAL_VNID {
                    refuse_global_with_egress_ips(a, name)?;
                    ns.netid = GLOBAL_VNID;
                    a.put_record(&*ns)?;
                }
                out.push(ns.clone());
            }
            Ok(out)
        })
    }

    /// NetNamespace changes after `after_revision` (from `list_netnamespaces`).
    pub fn watch_netnamespaces(&self, after_revision: u64) -> Result<Receiver<NetNamespaceEvent>> {
        self.watch_records(after_revision, NetNamespaceEvent::Upsert, |name| {
            Some(NetNamespaceEvent::Deleted(name.to_owned()))
        })
    }

    // ---- HostSubnets ------------------------------------------------------------------

    /// The HostSubnet of node `name` at `host_ip`: the existing one (its IP updated in
    /// place if it changed; the subnet is kept), or a new one with the first free subnet
    /// in OpenShift's order.
    pub fn register_node(&self, name: &str, host_ip: Ipv4Addr) -> Result<HostSubnet> {
        validate_node_name(name)?;
        self.transact("hostsubnets", |a| {
            let config = a.config()?;
            validate_node_ip(host_ip, &config)?;
            let all = a.hostsubnets()?;
            if let Some(other) = all.values().find(|hs| hs.host_ip == host_ip && hs.host != name) {
                return Err(Error::Invalid(format!("node IP {host_ip} is already used by node {:?}", other.host)));
            }
            let hs = match all.get(name) {
                Some(hs) if hs.host_ip == host_ip => return Ok(hs.clone()),
                Some(hs) => HostSubnet { host_ip, ..hs.clone() },
                None => {
                    let used: HashSet<Ipv4Network> = all.values().map(|hs| hs.subnet).collect();
                    let subnet =
                        SubnetAllocator::new(config.cluster_network, config.host_subnet_length)?.allocate(&used)?;
                    HostSubnet { host: name.to_owned(), host_ip, subnet }
                }
            };
            a.put_record(&hs)?;
            Ok(hs)
        })
    }

    pub fn get_hostsubnet(&self, name: &str) -> Result<Option<HostSubnet>> {
        validate_node_name(name)?;
        self.get_record(name)
    }

    /// All HostSubnets sorted by node name, and the store revision they were read at.
    pub fn list_hostsubnets(&self) -> Result<(Vec<HostSubnet>, u64)> {
        self.list_records("")
    }

    /// Deletes node `name`'s HostSubnet, freeing its subnet.
    pub fn delete_node(&self, name: &str) -> Result<()> {
        validate_node_name(name)?;
        self.transact("hostsubnets", |a| {
            if a.delete_record::<HostSubnet>(name)? {
                a.delete_record::<crate::egress_ip::NodeEgress>(name)?;
                Ok(())
            } else {
                Err(Error::UnknownNode(name.to_owned()))
            }
        })
    }

    /// HostSubnet changes after `after_revision` (from `list_hostsubnets`).
    pub fn watch_hostsubnets(&self, after_revision: u64) -> Result<Receiver<HostSubnetEvent>> {
        self.watch_records(after_revision, HostSubnetEvent::Upsert, |name| {
            Some(HostSubnetEvent::Deleted(name.to_owned()))
        })
    }
}

#[cfg(test)]
mod tests;
