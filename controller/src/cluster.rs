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
    netnamespaces::{validate_labels, validate_project_name, LabelSelector, DEFAULT_PROJECT},
    store::{Compare, KeyValue, Op, Store, StoreError, WatchEvent},
    subnets::SubnetAllocator,
    vnid::{VnidAllocator, GLOBAL_VNID, MAX_VNID, MIN_VNID},
    ClusterConfig, Error, HostSubnet, NetNamespace, Result,
};

/// Key layout in the store.
pub mod keys {
    pub const CONFIG: &str = "/oxsdn/config";
    pub const NETNAMESPACES: &str = "/oxsdn/netnamespaces/";
    pub const HOSTSUBNETS: &str = "/oxsdn/hostsubnets/";
    pub const PROJECT_ID_COUNTER: &str = "/oxsdn/counters/project-id";
    /// Rewritten by every change to a NetNamespace. Per-key compares cannot see a record
    /// that another writer adds meanwhile, so operations that depend on the whole set
    /// (which VNIDs are in use, who else shares a VNID) also compare this key.
    pub const NETNAMESPACES_GUARD: &str = "/oxsdn/guards/netnamespaces";
    /// The same for HostSubnets (which subnets and node IPs are taken).
    pub const HOSTSUBNETS_GUARD: &str = "/oxsdn/guards/hostsubnets";
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

/// One try of an operation: every read becomes a compare of the transaction, so its
/// writes apply only if nothing it read has changed since.
struct Attempt<'a> {
    store: &'a dyn Store,
    compares: Vec<Compare>,
    ops: Vec<Op>,
    /// Guard keys read; rewritten if the attempt writes anything.
    guards: Vec<&'static str>,
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
        self.read_guard(guard)?;
        Ok(self.store.list(prefix)?.kvs)
    }

    fn read_guard(&mut self, guard: &'static str) -> Result<()> {
        self.get(guard)?;
        if !self.guards.contains(&guard) {
            self.guards.push(guard);
        }
        Ok(())
    }

    fn put(&mut self, key: String, value: Vec<u8>) {
        self.ops.push(Op::Put { key, value });
    }

    fn put_record<T: Serialize>(&mut self, key: String, record: &T) -> Result<()> {
        let value = serde_json::to_vec(record).map_err(|e| Error::BadRecord {
            key: key.clone(),
            reason: format!("cannot encode: {e}"),
        })?;
        self.put(key, value);
        Ok(())
    }

    fn delete(&mut self, key: String) {
        self.ops.push(Op::Delete { key });
    }

    /// All NetNamespaces by name, guarded against concurrent additions.
    fn netnamespaces(&mut self) -> Result<BTreeMap<String, NetNamespace>> {
        self.list_guarded(keys::NETNAMESPACES_GUARD, keys::NETNAMESPACES)?
            .iter()
            .map(|kv| decode_netnamespace(kv).map(|ns| (ns.name.clone(), ns)))
            .collect()
    }

    /// All HostSubnets by node name, guarded against concurrent additions.
    fn hostsubnets(&mut self) -> Result<BTreeMap<String, HostSubnet>> {
        self.list_guarded(keys::HOSTSUBNETS_GUARD, keys::HOSTSUBNETS)?
            .iter()
            .map(|kv| decode_hostsubnet(kv).map(|hs| (hs.host.clone(), hs)))
            .collect()
    }

    fn config(&mut self) -> Result<ClusterConfig> {
        let kv = self.get(keys::CONFIG)?.ok_or(Error::NotInitialised)?;
        decode_config(&kv)
    }
}

fn netnamespace_key(name: &str) -> String {
    format!("{}{name}", keys::NETNAMESPACES)
}

fn hostsubnet_key(node: &str) -> String {
    format!("{}{node}", keys::HOSTSUBNETS)
}

fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<T> {
    serde_json::from_slice(&kv.value).map_err(|e| Error::BadRecord {
        key: kv.key.clone(),
        reason: e.to_string(),
    })
}

/// Decodes a record stored under `prefix` + name, checking that it names itself the same.
fn decode_named<T: DeserializeOwned>(
    kv: &KeyValue,
    prefix: &str,
    name_of: impl Fn(&T) -> &str,
) -> Result<T> {
    let record: T = decode(kv)?;
    let key_name = kv.key.strip_prefix(prefix).unwrap_or(&kv.key);
    if name_of(&record) != key_name {
        return Err(Error::BadRecord {
            key: kv.key.clone(),
            reason: format!("record is named {:?}", name_of(&record)),
        });
    }
    Ok(record)
}

fn decode_netnamespace(kv: &KeyValue) -> Result<NetNamespace> {
    decode_named(kv, keys::NETNAMESPACES, |ns: &NetNamespace| &ns.name)
}

fn decode_hostsubnet(kv: &KeyValue) -> Result<HostSubnet> {
    decode_named(kv, keys::HOSTSUBNETS, |hs: &HostSubnet| &hs.host)
}

fn decode_config(kv: &KeyValue) -> Result<ClusterConfig> {
    let config: ClusterConfig = decode(kv)?;
    config.validate().map_err(|e| Error::BadRecord {
        key: kv.key.clone(),
        reason: e.to_string(),
    })?;
    Ok(config)
}

/// A counter record: a decimal number; absent means 0.
pub(crate) fn decode_counter(kv: Option<&KeyValue>) -> Result<u64> {
    let Some(kv) = kv else { return Ok(0) };
    std::str::from_utf8(&kv.value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::BadRecord {
            key: kv.key.clone(),
            reason: "not a decimal counter".into(),
        })
}

/// `projects` without repetitions, in order of first appearance, each checked to exist.
fn select<'p>(
    all: &BTreeMap<String, NetNamespace>,
    projects: &'p [String],
) -> Result<Vec<&'p str>> {
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
        return Err(Error::Invalid(format!(
            "node IP {ip} is not a unicast host address"
        )));
    }
    for (network_kind, network) in [
        ("cluster", config.cluster_network),
        ("service", config.service_network),
    ] {
        if network.contains(ip) {
            return Err(Error::NodeIpInPodNetwork {
                ip,
                network_kind,
                network: network.to_string(),
            });
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
        Cluster {
            store,
            vnid_range: (MIN_VNID, MAX_VNID),
        }
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
    fn transact<T>(
        &self,
        what: &str,
        mut body: impl FnMut(&mut Attempt) -> Result<T>,
    ) -> Result<T> {
        for attempt in 0..MAX_ATTEMPTS {
            let mut a = Attempt {
                store: self.store.as_ref(),
                compares: Vec::new(),
                ops: Vec::new(),
                guards: Vec::new(),
            };
            let out = body(&mut a)?;
            if a.ops.is_empty() {
                return Ok(out);
            }
            for guard in std::mem::take(&mut a.guards) {
                a.put(guard.to_owned(), Vec::new());
            }
            if self.store.txn(&a.compares, &a.ops)? {
                return Ok(out);
            }
            // Random, growing pauses keep competing writers from colliding in lockstep.
            let max_ms = 2u64 << attempt.min(5);
            std::thread::sleep(Duration::from_millis(
                rand::thread_rng().gen_range(1..=max_ms),
            ));
        }
        Err(Error::Contention(what.to_owned()))
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
                a.put_record(keys::CONFIG.to_owned(), config)?;
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
        let netid = if name == DEFAULT_PROJECT {
            GLOBAL_VNID
        } else {
            self.vnid_allocator(all.values()).allocate()?
        };
        let counter = a.get(keys::PROJECT_ID_COUNTER)?;
        let id = decode_counter(counter.as_ref())?
            .checked_add(1)
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| Error::Invalid("project ids are exhausted".into()))?;
        a.put(
            keys::PROJECT_ID_COUNTER.to_owned(),
            id.to_string().into_bytes(),
        );
        let ns = NetNamespace {
            name: name.to_owned(),
            netid,
            id,
            labels,
        };
        a.put_record(netnamespace_key(name), &ns)?;
        Ok(ns)
    }

    /// The NetNamespace of project `name`, created if missing (the master's reaction to a
    /// new namespace).
    pub fn ensure_netnamespace(&self, name: &str) -> Result<NetNamespace> {
        validate_project_name(name)?;
        self.transact("netnamespaces", |a| {
            match a.get(&netnamespace_key(name))? {
                Some(kv) => decode_netnamespace(&kv),
                None => self.create_netnamespace_in(a, name, BTreeMap::new()),
            }
        })
    }

    /// Creates project `name` with `labels`. Idempotent: if it exists, `labels` are merged
    /// into its labels (same keys overwritten, others kept) and its VNID is left alone.
    pub fn create_netnamespace(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<NetNamespace> {
        validate_project_name(name)?;
        validate_labels(&labels)?;
        self.transact("netnamespaces", |a| {
            match a.get(&netnamespace_key(name))? {
                Some(kv) => {
                    let mut ns = decode_netnamespace(&kv)?;
                    Self::relabel_in(a, &mut ns, &labels, &[])?;
                    Ok(ns)
                }
                None => self.create_netnamespace_in(a, name, labels.clone()),
            }
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
            let kv = a
                .get(&netnamespace_key(name))?
                .ok_or_else(|| Error::UnknownProject(name.to_owned()))?;
            let mut ns = decode_netnamespace(&kv)?;
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
            a.read_guard(keys::NETNAMESPACES_GUARD)?;
            a.put_record(netnamespace_key(&ns.name), ns)?;
        }
        Ok(())
    }

    pub fn get_netnamespace(&self, name: &str) -> Result<Option<NetNamespace>> {
        validate_project_name(name)?;
        self.store
            .get(&netnamespace_key(name))?
            .map(|kv| decode_netnamespace(&kv))
            .transpose()
    }

    /// All NetNamespaces sorted by name, and the store revision they were read at (to
    /// watch from).
    pub fn list_netnamespaces(&self) -> Result<(Vec<NetNamespace>, u64)> {
        let snapshot = self.store.list(keys::NETNAMESPACES)?;
        let all = snapshot
            .kvs
            .iter()
            .map(decode_netnamespace)
            .collect::<Result<_>>()?;
        Ok((all, snapshot.revision))
    }

    /// Deletes project `name`. Its VNID becomes free once no other project uses it; its
    /// id is never reused.
    pub fn delete_netnamespace(&self, name: &str) -> Result<()> {
        validate_project_name(name)?;
        self.transact("netnamespaces", |a| {
            a.read_guard(keys::NETNAMESPACES_GUARD)?;
            let key = netnamespace_key(name);
            a.get(&key)?
                .ok_or_else(|| Error::UnknownProject(name.to_owned()))?;
            a.delete(key);
            Ok(())
        })
    }

    /// Names of the projects whose labels match `selector` (see `LabelSelector`), sorted.
    pub fn select_projects(&self, selector: &str) -> Result<Vec<String>> {
        let selector = LabelSelector::parse(selector)?;
        let (all, _) = self.list_netnamespaces()?;
        Ok(all
            .into_iter()
            .filter(|ns| selector.matches(&ns.labels))
            .map(|ns| ns.name)
            .collect())
    }

    /// `oc adm pod-network join-projects --to=<to> <projects>`: every project other than
    /// `to` gets `to`'s current VNID (so joining a global project makes them global).
    /// Returns the resulting records of those projects. Any unknown project, `to`
    /// included, fails the whole command.
    pub fn join_projects(&self, to: &str, projects: &[String]) -> Result<Vec<NetNamespace>> {
        validate_project_name(to)?;
        validate_project_names(projects)?;
        self.transact("netnamespaces", |a| {
            let mut all = a.netnamespaces()?;
            let target = all
                .get(to)
                .ok_or_else(|| Error::UnknownProject(to.to_owned()))?
                .netid;
            let mut out = Vec::new();
            for name in select(&all, projects)?.into_iter().filter(|p| *p != to) {
                let ns = all
                    .get_mut(name)
                    .ok_or_else(|| Error::UnknownProject(name.to_owned()))?;
                if ns.netid != target {
                    ns.netid = target;
                    a.put_record(netnamespace_key(name), ns)?;
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
            let mut all = a.netnamespaces()?;
            let selected = select(&all, projects)?;
            let mut users: HashMap<u32, usize> = HashMap::new();
            for ns in all.values() {
                *users.entry(ns.netid).or_default() += 1;
            }
            let mut allocator = self.vnid_allocator(all.values());
            let mut out = Vec::new();
            for name in selected {
                let ns = all
                    .get_mut(name)
                    .ok_or_else(|| Error::UnknownProject(name.to_owned()))?;
                let sole_user = users.get(&ns.netid) == Some(&1);
                if ns.netid == GLOBAL_VNID || !sole_user {
                    let fresh = allocator.allocate()?;
                    users.entry(ns.netid).and_modify(|n| *n -= 1);
                    users.insert(fresh, 1);
                    ns.netid = fresh;
                    a.put_record(netnamespace_key(name), ns)?;
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
            let mut all = a.netnamespaces()?;
            let mut out = Vec::new();
            for name in select(&all, projects)? {
                let ns = all
                    .get_mut(name)
                    .ok_or_else(|| Error::UnknownProject(name.to_owned()))?;
                if ns.netid != GLOBAL_VNID {
                    ns.netid = GLOBAL_VNID;
                    a.put_record(netnamespace_key(name), ns)?;
                }
                out.push(ns.clone());
            }
            Ok(out)
        })
    }

    /// NetNamespace changes after `after_revision` (from `list_netnamespaces`).
    pub fn watch_netnamespaces(&self, after_revision: u64) -> Result<Receiver<NetNamespaceEvent>> {
        let events = self.store.watch(keys::NETNAMESPACES, after_revision)?;
        relay(events, "netnamespace", |event| match event {
            WatchEvent::Put(kv) => decode_netnamespace(&kv).map(NetNamespaceEvent::Upsert),
            WatchEvent::Delete { key, .. } => Ok(NetNamespaceEvent::Deleted(
                key.strip_prefix(keys::NETNAMESPACES)
                    .unwrap_or(&key)
                    .to_owned(),
            )),
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
            if let Some(other) = all
                .values()
                .find(|hs| hs.host_ip == host_ip && hs.host != name)
            {
                return Err(Error::Invalid(format!(
                    "node IP {host_ip} is already used by node {:?}",
                    other.host
                )));
            }
            let hs = match all.get(name) {
                Some(hs) if hs.host_ip == host_ip => return Ok(hs.clone()),
                Some(hs) => HostSubnet {
                    host_ip,
                    ..hs.clone()
                },
                None => {
                    let used: HashSet<Ipv4Network> = all.values().map(|hs| hs.subnet).collect();
                    let subnet =
                        SubnetAllocator::new(config.cluster_network, config.host_subnet_length)?
                            .allocate(&used)?;
                    HostSubnet {
                        host: name.to_owned(),
                        host_ip,
                        subnet,
                    }
                }
            };
            a.put_record(hostsubnet_key(name), &hs)?;
            Ok(hs)
        })
    }

    pub fn get_hostsubnet(&self, name: &str) -> Result<Option<HostSubnet>> {
        validate_node_name(name)?;
        self.store
            .get(&hostsubnet_key(name))?
            .map(|kv| decode_hostsubnet(&kv))
            .transpose()
    }

    /// All HostSubnets sorted by node name, and the store revision they were read at.
    pub fn list_hostsubnets(&self) -> Result<(Vec<HostSubnet>, u64)> {
        let snapshot = self.store.list(keys::HOSTSUBNETS)?;
        let all = snapshot
            .kvs
            .iter()
            .map(decode_hostsubnet)
            .collect::<Result<_>>()?;
        Ok((all, snapshot.revision))
    }

    /// Deletes node `name`'s HostSubnet, freeing its subnet.
    pub fn delete_node(&self, name: &str) -> Result<()> {
        validate_node_name(name)?;
        self.transact("hostsubnets", |a| {
            a.read_guard(keys::HOSTSUBNETS_GUARD)?;
            let key = hostsubnet_key(name);
            a.get(&key)?
                .ok_or_else(|| Error::UnknownNode(name.to_owned()))?;
            a.delete(key);
            Ok(())
        })
    }

    /// HostSubnet changes after `after_revision` (from `list_hostsubnets`).
    pub fn watch_hostsubnets(&self, after_revision: u64) -> Result<Receiver<HostSubnetEvent>> {
        let events = self.store.watch(keys::HOSTSUBNETS, after_revision)?;
        relay(events, "hostsubnet", |event| match event {
            WatchEvent::Put(kv) => decode_hostsubnet(&kv).map(HostSubnetEvent::Upsert),
            WatchEvent::Delete { key, .. } => Ok(HostSubnetEvent::Deleted(
                key.strip_prefix(keys::HOSTSUBNETS)
                    .unwrap_or(&key)
                    .to_owned(),
            )),
        })
    }
}

#[cfg(test)]
mod tests;
