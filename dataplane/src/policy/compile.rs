//! From NetworkPolicies, namespaces' labels and pods to what the dataplane's policy maps
//! hold (`oxsdn_common::policy`). Pure: the agent, the differential test and the tests
//! that fill private maps all use it.
//!
//! Pods with the same namespace, labels and named ports share an identity. Each policy
//! selects subject identities in its namespace (those of this node's pods: a node judges
//! only its own pods' policies); each of its rules allows, per direction,
//! peer identities (pod and namespace selectors) and address blocks (ipBlocks; no peers
//! at all is 0.0.0.0/0), on a set of protocols and ports (named ports resolved against
//! the pod that owns them: the subject for ingress, the peer for egress). What a
//! subject may exchange with a peer identity is one `POLICY_PEERS` entry; with address
//! blocks, `POLICY_CIDRS` entries flattened so that the longest matching prefix holds
//! every rule whose block contains it and whose exceptions do not.

use std::collections::{BTreeMap, BTreeSet};

use ipnetwork::Ipv4Network;
use k8s_openapi::{
    api::networking::v1::{NetworkPolicyPeer, NetworkPolicyPort},
    apimachinery::pkg::util::intstr::IntOrString,
};
use oxsdn_common::{
    addr::ip_key,
    policy::{
        IdentityPolicy, PolicyKey, PolicySlot, PortRange, ANY_PROTO, EGRESS, INGRESS, MAX_IDENTITIES, MAX_POLICIES,
        PORT_SET_LEN,
    },
};
use oxsdn_controller::policy::{NamedPort, NetworkPolicyRecord};

use super::selector;

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_SCTP: u8 = 132;

/// A pod of the cluster with an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodView {
    pub namespace: String,
    pub ip: std::net::Ipv4Addr,
    /// Its slot in `PODS`, if it is a pod of this node.
    pub local_slot: Option<u32>,
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<NamedPort>,
}

/// What the pods of one identity share.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct IdentityKey {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    /// Sorted.
    pub ports: Vec<NamedPort>,
}

impl IdentityKey {
    pub fn of(pod: &PodView) -> IdentityKey {
        let mut ports = pod.ports.clone();
        ports.sort();
        IdentityKey { namespace: pod.namespace.clone(), labels: pod.labels.clone(), ports }
    }
}

/// Numbers that must stay the same from one compilation to the next (so the maps change
/// only where the policies do): identities by key, and policies' counter slots by id.
#[derive(Default)]
pub struct Numbering {
    identities: BTreeMap<IdentityKey, u32>,
    slots: BTreeMap<u32, u32>,
}

impl Numbering {
    /// The identity of the pods with `key`, if it is one already (a pod added with it
    /// needs no compilation, only its own entries).
    pub fn known(&self, key: &IdentityKey) -> Option<u32> {
        self.identities.get(key).copied()
    }

    /// Takes up numbers a previous agent gave (read back from the maps), where they do
    /// not collide: a restarted agent then rewrites only what changed meanwhile.
    pub fn seed(
        &mut self,
        identities: impl IntoIterator<Item = (IdentityKey, u32)>,
        slots: &BTreeMap<u32, PolicySlot>,
    ) {
        let mut used: BTreeSet<u32> = self.identities.values().copied().collect();
        for (key, id) in identities {
            if id != 0 && id < MAX_IDENTITIES && !self.identities.contains_key(&key) && used.insert(id) {
                self.identities.insert(key, id);
            }
        }
        let mut used: BTreeSet<u32> = self.slots.values().copied().collect();
        for (slot, policy) in slots {
            if !self.slots.contains_key(&policy.id) && used.insert(*slot) {
                self.slots.insert(policy.id, *slot);
            }
        }
    }

    fn identity(&mut self, key: &IdentityKey) -> Option<u32> {
        if let Some(id) = self.identities.get(key) {
            return Some(*id);
        }
        let used: BTreeSet<u32> = self.identities.values().copied().collect();
        let id = (1..MAX_IDENTITIES).find(|id| !used.contains(id))?;
        self.identities.insert(key.clone(), id);
        Some(id)
    }

    fn slot(&mut self, policy: u32) -> Option<u32> {
        if let Some(slot) = self.slots.get(&policy) {
            return Some(*slot);
        }
        let used: BTreeSet<u32> = self.slots.values().copied().collect();
        let slot = (0..MAX_POLICIES).find(|s| !used.contains(s))?;
        self.slots.insert(policy, slot);
        Some(slot)
    }

    /// Forgets numbers nothing uses any more.
    fn retain(&mut self, identities: &BTreeSet<IdentityKey>, policies: &BTreeSet<u32>) {
        self.identities.retain(|k, _| identities.contains(k));
        self.slots.retain(|p, _| policies.contains(p));
    }
}

/// A subject's or a peer's `(cidr, except)` rule for one direction, before flattening.
struct BlockRule {
    cidr: Ipv4Network,
    except: Vec<Ipv4Network>,
    ranges: Vec<PortRange>,
}

/// What the policy maps hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Compiled {
    /// `POD_IDENTITIES`: local pod slot -> identity.
    pub pod_identities: BTreeMap<u32, u32>,
    /// `IP_IDENTITIES`: pod address (map form) -> identity.
    pub ip_identities: BTreeMap<u32, u32>,
    /// `IDENTITIES`: identity -> what policies say of it (only isolated ones).
    pub identities: BTreeMap<u32, IdentityPolicy>,
    /// `POLICY_PEERS`: (subject, peer, direction) -> allowed ranges.
    pub peers: BTreeMap<(u32, u32, u32), Vec<PortRange>>,
    /// `POLICY_CIDRS`: (subject, direction, block) -> allowed ranges.
    pub cidrs: BTreeMap<(u32, u32, Ipv4Network), Vec<PortRange>>,
    /// `POLICY_SLOTS`: counter slot -> policy.
    pub slots: BTreeMap<u32, PolicySlot>,
    /// Problems that made something not compile as written (logged by the agent).
    pub warnings: Vec<String>,
}

impl Compiled {
    /// The `POLICY_PEERS` key of an entry.
    pub fn peer_key((subject, peer, direction): (u32, u32, u32)) -> PolicyKey {
        PolicyKey { subject, peer, direction }
    }
}

/// Compiles `policies` for `pods` (every pod of the cluster with an address) and
/// `namespaces` (name -> labels, `kubernetes.io/metadata.name` included).
pub fn compile(
    numbering: &mut Numbering,
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
    pods: &[PodView],
    policies: &[NetworkPolicyRecord],
) -> Compiled {
    let mut out = Compiled::default();
    // Identities, and which pods have them.
    let mut identities: BTreeMap<IdentityKey, u32> = BTreeMap::new();
    for pod in pods {
        let key = IdentityKey::of(pod);
        let id = match identities.get(&key) {
            Some(id) => *id,
            None => match numbering.identity(&key) {
                Some(id) => {
                    identities.insert(key, id);
                    id
                }
                None => {
                    out.warnings.push(format!("more than {MAX_IDENTITIES} identities: pod {} has none", pod.ip));
                    continue;
                }
            },
        };
        out.ip_identities.insert(ip_key(pod.ip), id);
        if let Some(slot) = pod.local_slot {
            out.pod_identities.insert(slot, id);
        }
    }
    // Each identity's key, for the named ports of egress peers (a search per peer made
    // 1,000 policies over 3,000 identities take minutes).
    let keys: BTreeMap<u32, &IdentityKey> = identities.iter().map(|(key, id)| (*id, key)).collect();
    let mut policies: Vec<&NetworkPolicyRecord> = policies.iter().collect();
    policies.sort_by_key(|p| p.id);
    let mut blocks: BTreeMap<(u32, u32), Vec<BlockRule>> = BTreeMap::new();
    for policy in &policies {
        let Some(slot) = numbering.slot(policy.id) else {
            out.warnings.push(format!(
                "more than {MAX_POLICIES} policies: {}/{} is not counted",
                policy.namespace, policy.name
            ));
            continue;
        };
        out.slots.insert(slot, PolicySlot::new(policy.id, &format!("{}/{}", policy.namespace, policy.name)));
        compile_policy(policy, slot as u16, namespaces, &identities, &keys, &mut out, &mut blocks);
    }
    for ((subject, direction), rules) in blocks {
        for (cidr, ranges) in flatten(&rules) {
            out.cidrs.insert((subject, direction, cidr), ranges);
        }
    }
    for ranges in out.peers.values_mut().chain(out.cidrs.values_mut()) {
        if let Some(warning) = merge(ranges) {
            out.warnings.push(warning);
        }
    }
    numbering.retain(&identities.keys().cloned().collect(), &policies.iter().map(|p| p.id).collect());
    out
}

/// Which directions a policy isolates (`policyTypes`, or, absent or empty, the API
/// server's default: Ingress, and Egress if it has an egress rule; `egress: []` has
/// none).
fn directions(policy: &NetworkPolicyRecord) -> u32 {
    match &policy.spec.policy_types {
        Some(types) if !types.is_empty() => types.iter().fold(0, |d, t| match t.as_str() {
            "Ingress" => d | INGRESS,
            "Egress" => d | EGRESS,
            _ => d,
        }),
        _ => INGRESS | if policy.spec.egress.as_ref().is_some_and(|rules| !rules.is_empty()) { EGRESS } else { 0 },
    }
}

/// A rule's peers: identities, or address blocks.
enum Peers {
    Identities(Vec<u32>),
    Block(Ipv4Network, Vec<Ipv4Network>),
}

fn compile_policy(
    policy: &NetworkPolicyRecord,
    slot: u16,
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
    identities: &BTreeMap<IdentityKey, u32>,
    keys: &BTreeMap<u32, &IdentityKey>,
    out: &mut Compiled,
    blocks: &mut BTreeMap<(u32, u32), Vec<BlockRule>>,
) {
    let spec = &policy.spec;
    // Only this node's pods are judged by their own policies here (a pod's egress where
    // it sends, its ingress where it receives): other identities need no subject entries.
    let local: BTreeSet<u32> = out.pod_identities.values().copied().collect();
    let subjects: Vec<(&IdentityKey, u32)> = identities
        .iter()
        .filter(|(key, id)| {
            local.contains(id)
                && key.namespace == policy.namespace
                && selector::matches(spec.pod_selector.as_ref(), &key.labels)
        })
        .map(|(key, id)| (key, *id))
        .collect();
    let directions = directions(policy);
    for (_, subject) in &subjects {
        let entry = out.identities.entry(*subject).or_default();
        for (direction, field) in [(INGRESS, &mut entry.ingress_slot), (EGRESS, &mut entry.egress_slot)] {
            if directions & direction != 0 && entry.isolated & direction == 0 {
                *field = u32::from(slot);
            }
        }
        entry.isolated |= directions;
    }
    // Each rule: its direction, index, peers (`None`: everyone) and ports.
    type Rule<'a> = (u32, usize, Option<&'a Vec<NetworkPolicyPeer>>, Option<&'a Vec<NetworkPolicyPort>>);
    let mut rules: Vec<Rule> = Vec::new();
    if directions & INGRESS != 0 {
        for (i, rule) in spec.ingress.iter().flatten().enumerate() {
            rules.push((INGRESS, i, rule.from.as_ref(), rule.ports.as_ref()));
        }
    }
    if directions & EGRESS != 0 {
        for (i, rule) in spec.egress.iter().flatten().enumerate() {
            rules.push((EGRESS, i, rule.to.as_ref(), rule.ports.as_ref()));
        }
    }
    for (direction, index, peers, ports) in rules {
        let peer_sets: Vec<Peers> = match peers.filter(|p| !p.is_empty()) {
            None => {
                let everyone = Peers::Block(Ipv4Network::new([0, 0, 0, 0].into(), 0).expect("/0"), Vec::new());
                // An egress rule's named ports are the destination's: with every pod a
                // peer, each identity gets the ports its own names resolve to (an address
                // block has no pod to resolve them against).
                if direction == EGRESS && has_named_port(ports) {
                    vec![everyone, Peers::Identities(identities.values().copied().collect())]
                } else {
                    vec![everyone]
                }
            }
            Some(peers) => {
                peers.iter().filter_map(|peer| peer_set(policy, peer, namespaces, identities, out)).collect()
            }
        };
        for (subject_key, subject) in &subjects {
            for peers in &peer_sets {
                match peers {
                    Peers::Identities(ids) => {
                        for peer in ids {
                            // Named ports are the destination's: the subject's for
                            // ingress, the peer's for egress.
                            let owner = if direction == INGRESS { Some(*subject_key) } else { keys.get(peer).copied() };
                            let ranges = port_ranges(ports, owner, slot, index as u32);
                            if !ranges.is_empty() {
                                out.peers.entry((*subject, *peer, direction)).or_default().extend(ranges);
                            }
                        }
                    }
                    Peers::Block(cidr, except) => {
                        let owner = if direction == INGRESS { Some(*subject_key) } else { None };
                        let ranges = port_ranges(ports, owner, slot, index as u32);
                        if !ranges.is_empty() {
                            blocks.entry((*subject, direction)).or_default().push(BlockRule {
                                cidr: *cidr,
                                except: except.clone(),
                                ranges,
                            });
                        }
                    }
                }
            }
        }
    }
}

fn has_named_port(ports: Option<&Vec<NetworkPolicyPort>>) -> bool {
    ports.iter().flat_map(|p| p.iter()).any(|p| matches!(p.port, Some(IntOrString::String(_))))
}

fn peer_set(
    policy: &NetworkPolicyRecord,
    peer: &NetworkPolicyPeer,
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
    identities: &BTreeMap<IdentityKey, u32>,
    out: &mut Compiled,
) -> Option<Peers> {
    if let Some(block) = &peer.ip_block {
        let Ok(cidr) = block.cidr.parse::<Ipv4Network>() else {
            out.warnings
                .push(format!("{}/{}: ipBlock {} is not an IPv4 CIDR", policy.namespace, policy.name, block.cidr));
            return None;
        };
        let except = block.except.iter().flatten().filter_map(|e| e.parse().ok()).collect();
        return Some(Peers::Block(Ipv4Network::new(cidr.network(), cidr.prefix()).ok()?, except));
    }
    let in_namespace = |ns: &str| match &peer.namespace_selector {
        None => ns == policy.namespace,
        Some(selector) => namespaces.get(ns).is_some_and(|labels| self::selector::matches(Some(selector), labels)),
    };
    let ids = identities
        .iter()
        .filter(|(key, _)| in_namespace(&key.namespace) && selector::matches(peer.pod_selector.as_ref(), &key.labels))
        .map(|(_, id)| *id)
        .collect();
    Some(Peers::Identities(ids))
}

fn protocol(name: Option<&str>) -> Option<u8> {
    match name.unwrap_or("TCP") {
        "TCP" => Some(IPPROTO_TCP),
        "UDP" => Some(IPPROTO_UDP),
        "SCTP" => Some(IPPROTO_SCTP),
        _ => None,
    }
}

/// The ranges a rule's `ports` allow (none given: everything), named ports resolved
/// against `owner`'s (none known: a named port matches nothing).
fn port_ranges(
    ports: Option<&Vec<NetworkPolicyPort>>,
    owner: Option<&IdentityKey>,
    slot: u16,
    rule: u32,
) -> Vec<PortRange> {
    let range = |proto: u8, start: u16, end: u16| PortRange { proto, used: 1, start, end, slot, rule };
    let Some(ports) = ports.filter(|p| !p.is_empty()) else {
        return vec![range(ANY_PROTO, 0, u16::MAX)];
    };
    let mut out = Vec::new();
    for port in ports {
        let Some(proto) = protocol(port.protocol.as_deref()) else { continue };
        match &port.port {
            None => out.push(range(proto, 0, u16::MAX)),
            Some(IntOrString::Int(n)) => {
                let Ok(start) = u16::try_from(*n) else { continue };
                let end = port.end_port.and_then(|e| u16::try_from(e).ok()).unwrap_or(start);
                out.push(range(proto, start, end.max(start)));
            }
            Some(IntOrString::String(name)) => {
                let named = owner.iter().flat_map(|o| o.ports.iter()).filter(|p| &p.name == name);
                for p in named.filter(|p| protocol(Some(&p.protocol)) == Some(proto)) {
                    out.push(range(proto, p.port, p.port));
                }
            }
        }
    }
    out
}

/// Address-block rules flattened for a longest-prefix match: every block and exception
/// gets the ranges of every rule whose block contains it and none of whose exceptions
/// does.
fn flatten(rules: &[BlockRule]) -> Vec<(Ipv4Network, Vec<PortRange>)> {
    let prefixes: BTreeSet<Ipv4Network> =
        rules.iter().flat_map(|r| std::iter::once(r.cidr).chain(r.except.iter().copied())).collect();
    prefixes
        .into_iter()
        .map(|prefix| {
            let ranges = rules
                .iter()
                .filter(|r| contains(r.cidr, prefix) && !r.except.iter().any(|e| contains(*e, prefix)))
                .flat_map(|r| r.ranges.iter().copied())
                .collect();
            (prefix, ranges)
        })
        .collect()
}

fn contains(outer: Ipv4Network, inner: Ipv4Network) -> bool {
    outer.prefix() <= inner.prefix() && outer.contains(inner.network())
}

/// Drops ranges another of the same protocol covers and keeps the set within
/// `PORT_SET_LEN`; a warning if it had to cut.
fn merge(ranges: &mut Vec<PortRange>) -> Option<String> {
    let mut kept: Vec<PortRange> = Vec::new();
    for r in ranges.iter() {
        let covered =
            kept.iter().any(|k| (k.proto == ANY_PROTO || k.proto == r.proto) && k.start <= r.start && r.end <= k.end);
        if !covered {
            kept.retain(|k| !((r.proto == ANY_PROTO || r.proto == k.proto) && r.start <= k.start && k.end <= r.end));
            kept.push(*r);
        }
    }
    let cut = kept.len() > PORT_SET_LEN;
    kept.truncate(PORT_SET_LEN);
    *ranges = kept;
    cut.then(|| format!("more than {PORT_SET_LEN} port ranges for one peer: the rest are not applied"))
}
