//! NetworkPolicy on a node: the policy engine keeps what the cluster says (namespaces'
//! labels, pods' labels, named ports and addresses, NetworkPolicies) and the node's own
//! pods, compiles them (`compile`) and writes what changed into the policy maps. It is
//! the one writer of `POD_IDENTITIES`, `IP_IDENTITIES`, `IDENTITIES`, `POLICY_PEERS`,
//! `POLICY_CIDRS`, `POLICY_SLOTS` and `POLICY_GENERATION`. It compiles in every mode, so switching to
//! networkpolicy finds everything in place.
//!
//! A pod added on this node gets its identity before its `PODS` entry exists
//! (`add_local_pod`, on the CNI path): no packet reaches it before its policies apply.
//! Changes from the cluster are compiled on a thread of the engine's, coalesced.

pub mod compile;
pub mod mirrors;
pub mod selector;

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::Path,
    sync::{Arc, Condvar, Mutex},
    time::Duration,
};

use anyhow::Result;
use aya::maps::lpm_trie::Key;
use ipnetwork::Ipv4Network;
use oxsdn_common::{
    addr::ip_key,
    policy::{
        IdentityPolicy, PolicyCidr, PortRange, PortSet, CIDR_KEY_FIXED_BITS, MAX_IDENTITIES, POLICY_RULES, PORT_SET_LEN,
    },
    stats, MAX_POD_SLOTS,
};
use oxsdn_controller::policy::{NetworkPolicyRecord, PodAddress, PodMeta, NAMESPACE_NAME_LABEL};

use self::compile::{compile, Compiled, IdentityKey, Numbering, PodView};
use crate::maps::{self, ignore_missing, NodeMaps};

/// A pod of this node, as the agent plugged it in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalPod {
    pub slot: u32,
    pub namespace: String,
    pub name: String,
    pub ip: Ipv4Addr,
}

#[derive(Default)]
struct State {
    /// Namespace -> its labels, `kubernetes.io/metadata.name` included.
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// (namespace, name) -> labels and named ports.
    pod_meta: BTreeMap<(String, String), PodMeta>,
    /// Other nodes' pods, by record key.
    remote: BTreeMap<String, PodAddress>,
    /// This node's pods, by attachment (`container/ifname`).
    local: BTreeMap<String, LocalPod>,
    policies: BTreeMap<(String, String), NetworkPolicyRecord>,
    numbering: Numbering,
    /// What the maps hold.
    written: Compiled,
    /// Whether the agent handed over its pods (`begin`): compiling before would take
    /// running pods' identities away.
    ready: bool,
}

impl State {
    fn view(&self, namespace: &str, name: &str, ip: Ipv4Addr, local_slot: Option<u32>) -> PodView {
        let meta = self.pod_meta.get(&(namespace.to_owned(), name.to_owned()));
        PodView {
            namespace: namespace.to_owned(),
            ip,
            local_slot,
            labels: meta.map(|m| m.labels.clone()).unwrap_or_default(),
            ports: meta.map(|m| m.ports.clone()).unwrap_or_default(),
        }
    }

    fn pods(&self) -> Vec<PodView> {
        let remote = self.remote.values().map(|a| self.view(&a.namespace, &a.name, a.ip, None));
        let local = self.local.values().map(|p| self.view(&p.namespace, &p.name, p.ip, Some(p.slot)));
        remote.chain(local).collect()
    }

    /// Numbers as the maps have them, for the pods and policies the engine knows.
    fn seed_from_written(&mut self) {
        let pods = self.pods();
        let pairs = pods
            .iter()
            .filter_map(|pod| Some((IdentityKey::of(pod), *self.written.ip_identities.get(&ip_key(pod.ip))?)));
        let pairs: Vec<(IdentityKey, u32)> = pairs.collect();
        self.numbering.seed(pairs, &self.written.slots);
    }

    fn compile(&mut self) -> Compiled {
        let pods = self.pods();
        let policies: Vec<NetworkPolicyRecord> = self.policies.values().cloned().collect();
        let compiled = compile(&mut self.numbering, &self.namespaces, &pods, &policies);
        for warning in &compiled.warnings {
            tracing::warn!("network policies: {warning}");
        }
        compiled
    }
}

pub struct PolicyEngine {
    node: String,
    /// Its own handles on the maps: the engine's writes never wait for the other writers.
    maps: Mutex<NodeMaps>,
    state: Mutex<State>,
    dirty: (Mutex<bool>, Condvar),
}

/// How long the engine waits after a change for more before it compiles.
const COALESCE: Duration = Duration::from_millis(20);

impl PolicyEngine {
    /// An engine for node `node` writing the maps pinned in `pin_dir`, compiling on a
    /// thread of its own.
    /// It compiles nothing before `begin`.
    pub fn start(node: &str, pin_dir: &Path) -> Result<Arc<PolicyEngine>> {
        let maps = NodeMaps::open(pin_dir)?;
        let written = read_back(&maps)?;
        let engine = Arc::new(PolicyEngine {
            node: node.to_owned(),
            maps: Mutex::new(maps),
            state: Mutex::new(State { written, ..State::default() }),
            dirty: (Mutex::new(false), Condvar::new()),
        });
        let worker = engine.clone();
        std::thread::Builder::new().name("oxsdn-policy".into()).spawn(move || worker.run())?;
        Ok(engine)
    }

    fn run(&self) {
        loop {
            {
                let (lock, wake) = &self.dirty;
                let mut dirty = lock.lock().unwrap();
                while !*dirty {
                    dirty = wake.wait(dirty).unwrap();
                }
                *dirty = false;
            }
            std::thread::sleep(COALESCE);
            if let Err(e) = self.recompile() {
                tracing::error!("applying network policies: {e:#}");
            }
        }
    }

    fn mark_dirty(&self) {
        let (lock, wake) = &self.dirty;
        *lock.lock().unwrap() = true;
        wake.notify_one();
    }

    /// The node's pods, once the mirrors have listed the cluster: numbers what the maps
    /// hold as they are, compiles, writes what changed (what a previous agent left that
    /// no longer applies goes) and lets changes be compiled from now on.
    pub fn begin(&self, local: impl IntoIterator<Item = (String, LocalPod)>) -> Result<()> {
        {
            let mut state = self.state.lock().unwrap();
            state.local.extend(local);
            state.seed_from_written();
            state.ready = true;
        }
        self.recompile()
    }

    /// Compiles what the engine holds now and writes what changed.
    pub fn recompile(&self) -> Result<()> {
        let mut state = self.state.lock().unwrap();
        if !state.ready {
            return Ok(());
        }
        let compiled = state.compile();
        write(&mut self.maps.lock().unwrap(), &state.written, &compiled)?;
        state.written = compiled;
        Ok(())
    }

    /// A pod this node plugs in: its identity and entries are written before this
    /// returns (the agent writes its `PODS` entry after).
    pub fn add_local_pod(&self, attachment: &str, pod: LocalPod) -> Result<()> {
        let mut state = self.state.lock().unwrap();
        state.local.insert(attachment.to_owned(), pod.clone());
        if !state.ready {
            return Ok(());
        }
        let key = IdentityKey::of(&state.view(&pod.namespace, &pod.name, pod.ip, Some(pod.slot)));
        // An identity another pod of this node has: its policies' entries are in place.
        let local = state.numbering.known(&key).filter(|id| state.written.pod_identities.values().any(|i| i == id));
        match local {
            // An identity already compiled: the pod's own entries are all it needs.
            Some(identity) => {
                let mut maps = self.maps.lock().unwrap();
                maps.pod_identities.set(pod.slot, identity, 0)?;
                maps.ip_identities.insert(ip_key(pod.ip), identity, 0)?;
                state.written.pod_identities.insert(pod.slot, identity);
                state.written.ip_identities.insert(ip_key(pod.ip), identity);
                next_generation(&mut maps)?;
                drop(maps);
                drop(state);
                // Anything else the pod changes (nothing, unless it is the first of its
                // kind somewhere) follows.
                self.mark_dirty();
            }
            None => {
                let compiled = state.compile();
                write(&mut self.maps.lock().unwrap(), &state.written, &compiled)?;
                state.written = compiled;
            }
        }
        Ok(())
    }

    /// A pod this node took out.
    pub fn remove_local_pod(&self, attachment: &str) {
        if self.state.lock().unwrap().local.remove(attachment).is_some() {
            self.mark_dirty();
        }
    }

    /// Replaces a whole collection (a mirror's resync).
    fn replace(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.state.lock().unwrap());
        self.mark_dirty();
    }

    pub(crate) fn set_namespaces(&self, all: impl IntoIterator<Item = (String, BTreeMap<String, String>)>) {
        self.replace(|s| s.namespaces = all.into_iter().map(|(name, labels)| named(name, labels)).collect());
    }

    pub(crate) fn upsert_namespace(&self, name: String, labels: BTreeMap<String, String>) {
        self.replace(|s| {
            let (name, labels) = named(name, labels);
            s.namespaces.insert(name, labels);
        });
    }

    pub(crate) fn remove_namespace(&self, name: &str) {
        self.replace(|s| {
            s.namespaces.remove(name);
        });
    }

    pub(crate) fn set_policies(&self, all: Vec<NetworkPolicyRecord>) {
        self.replace(|s| s.policies = all.into_iter().map(|p| ((p.namespace.clone(), p.name.clone()), p)).collect());
    }

    pub(crate) fn upsert_policy(&self, policy: NetworkPolicyRecord) {
        self.replace(|s| {
            s.policies.insert((policy.namespace.clone(), policy.name.clone()), policy);
        });
    }

    pub(crate) fn remove_policy(&self, namespace: String, name: String) {
        self.replace(|s| {
            s.policies.remove(&(namespace, name));
        });
    }

    pub(crate) fn set_pod_meta(&self, all: Vec<PodMeta>) {
        self.replace(|s| s.pod_meta = all.into_iter().map(|m| ((m.namespace.clone(), m.name.clone()), m)).collect());
    }

    pub(crate) fn upsert_pod_meta(&self, meta: PodMeta) {
        self.replace(|s| {
            s.pod_meta.insert((meta.namespace.clone(), meta.name.clone()), meta);
        });
    }

    pub(crate) fn remove_pod_meta(&self, namespace: String, name: String) {
        self.replace(|s| {
            s.pod_meta.remove(&(namespace, name));
        });
    }

    /// Other nodes' pods (this node's come from the agent itself).
    pub(crate) fn set_addresses(&self, all: Vec<PodAddress>) {
        let node = self.node.clone();
        self.replace(|s| s.remote = all.into_iter().filter(|a| a.node != node).map(|a| (a.key_name(), a)).collect());
    }

    pub(crate) fn upsert_address(&self, address: PodAddress) {
        if address.node != self.node {
            self.replace(|s| {
                s.remote.insert(address.key_name(), address);
            });
        }
    }

    pub(crate) fn remove_address(&self, key: &str) {
        self.replace(|s| {
            s.remote.remove(key);
        });
    }
}

/// A namespace's labels as selectors see them: Kubernetes labels every namespace with
/// its name.
fn named(name: String, mut labels: BTreeMap<String, String>) -> (String, BTreeMap<String, String>) {
    labels.insert(NAMESPACE_NAME_LABEL.to_owned(), name.clone());
    (name, labels)
}

/// What the maps hold, as a compilation: the engine's starting point, so its first
/// write removes what no longer applies.
fn read_back(maps: &NodeMaps) -> Result<Compiled> {
    let mut held = Compiled::default();
    for slot in 0..MAX_POD_SLOTS {
        let identity = maps.pod_identities.get(&slot, 0)?;
        if identity != 0 {
            held.pod_identities.insert(slot, identity);
        }
    }
    for entry in maps.ip_identities.iter() {
        let (ip, identity) = entry?;
        held.ip_identities.insert(ip, identity);
    }
    for identity in 1..MAX_IDENTITIES {
        let policy = maps.identities.get(&identity, 0)?;
        if policy != IdentityPolicy::default() {
            held.identities.insert(identity, policy);
        }
    }
    for entry in maps.policy_peers.iter() {
        let (key, set) = entry?;
        held.peers.insert((key.subject, key.peer, key.direction), ranges_of(&set));
    }
    for entry in maps.policy_cidrs.iter() {
        let (key, set) = entry?;
        let cidr = key.data();
        let prefix = key.prefix_len().saturating_sub(CIDR_KEY_FIXED_BITS) as u8;
        let block = Ipv4Network::new(maps::ip_from_key(cidr.ip), prefix)?;
        held.cidrs.insert((cidr.subject, cidr.direction, block), ranges_of(&set));
    }
    for entry in maps.policy_slots.iter() {
        let (slot, policy) = entry?;
        held.slots.insert(slot, policy);
    }
    Ok(held)
}

fn ranges_of(set: &PortSet) -> Vec<PortRange> {
    set.ranges.iter().take_while(|r| r.used != 0).copied().collect()
}

fn port_set(ranges: &[PortRange]) -> PortSet {
    let mut set = PortSet::default();
    for (slot, range) in set.ranges.iter_mut().zip(ranges.iter().take(PORT_SET_LEN)) {
        *slot = *range;
    }
    set
}

fn cidr_key((subject, direction, block): (u32, u32, Ipv4Network)) -> Key<PolicyCidr> {
    Key::new(
        CIDR_KEY_FIXED_BITS + u32::from(block.prefix()),
        PolicyCidr { subject, direction, ip: ip_key(block.network()) },
    )
}

/// Writes the difference between what the maps hold (`old`) and `new`: rules first,
/// then what they apply to, then what no longer applies, so a pod never meets its new
/// identity before that identity's rules.
pub fn write(maps: &mut NodeMaps, old: &Compiled, new: &Compiled) -> Result<()> {
    for (slot, policy) in &new.slots {
        if old.slots.get(slot) != Some(policy) {
            for rule in 0..POLICY_RULES {
                maps::reset(&mut maps.policy_stats, stats::policy_index(*slot, rule))?;
            }
            maps.policy_slots.insert(*slot, *policy, 0)?;
        }
    }
    for (key, ranges) in &new.peers {
        if old.peers.get(key) != Some(ranges) {
            maps.policy_peers.insert(Compiled::peer_key(*key), port_set(ranges), 0)?;
        }
    }
    for (key, ranges) in &new.cidrs {
        if old.cidrs.get(key) != Some(ranges) {
            maps.policy_cidrs.insert(&cidr_key(*key), port_set(ranges), 0)?;
        }
    }
    for (identity, policy) in &new.identities {
        if old.identities.get(identity) != Some(policy) {
            maps.identities.set(*identity, *policy, 0)?;
        }
    }
    for (ip, identity) in &new.ip_identities {
        if old.ip_identities.get(ip) != Some(identity) {
            maps.ip_identities.insert(*ip, *identity, 0)?;
        }
    }
    for (slot, identity) in &new.pod_identities {
        if old.pod_identities.get(slot) != Some(identity) {
            maps.pod_identities.set(*slot, *identity, 0)?;
        }
    }
    // What no longer applies.
    for slot in old.pod_identities.keys().filter(|s| !new.pod_identities.contains_key(s)) {
        maps.pod_identities.set(*slot, 0, 0)?;
    }
    for ip in old.ip_identities.keys().filter(|ip| !new.ip_identities.contains_key(ip)) {
        ignore_missing(maps.ip_identities.remove(ip))?;
    }
    for identity in old.identities.keys().filter(|i| !new.identities.contains_key(i)) {
        maps.identities.set(*identity, IdentityPolicy::default(), 0)?;
    }
    for key in old.peers.keys().filter(|k| !new.peers.contains_key(k)) {
        ignore_missing(maps.policy_peers.remove(&Compiled::peer_key(*key)))?;
    }
    for key in old.cidrs.keys().filter(|k| !new.cidrs.contains_key(k)) {
        ignore_missing(maps.policy_cidrs.remove(&cidr_key(*key)))?;
    }
    for slot in old.slots.keys().filter(|s| !new.slots.contains_key(s)) {
        ignore_missing(maps.policy_slots.remove(slot))?;
    }
    next_generation(maps)
}

/// Bumps `POLICY_GENERATION` after a write: the programs judge every connection again
/// under the maps as they are now (never 0, which no connection's verdict counts under).
fn next_generation(maps: &mut NodeMaps) -> Result<()> {
    let current = maps.policy_generation.get(&0, 0)?;
    maps.policy_generation.set(0, current.wrapping_add(1).max(1), 0)?;
    Ok(())
}
