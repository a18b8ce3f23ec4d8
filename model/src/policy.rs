//! NetworkPolicy (`networking.k8s.io/v1`) as the Kubernetes API documents it, for the
//! model's networkpolicy mode. Written from the API reference and the NetworkPolicy
//! concept page, not from `dataplane/src/policy`:
//!
//! - A policy selects the pods of its namespace its `podSelector` matches; it isolates
//!   them for the directions of `policyTypes` (absent or empty: Ingress, plus Egress if
//!   it has an egress rule, as the API server defaults it). A pod no policy isolates for a direction is open in it.
//! - An isolated pod exchanges, in that direction, what some rule of some policy
//!   isolating it allows (policies add up): a rule allows a peer (any, if `from`/`to` is
//!   empty) on some of its ports (all of every protocol, if `ports` is empty).
//! - A peer: an `ipBlock` (the address in `cidr`, in none of `except`), or pods: those
//!   `podSelector` matches (all, if absent) in the namespaces `namespaceSelector` matches
//!   (the policy's own, if absent); both given, both must hold.
//! - A port: a protocol (TCP if absent) and a number, a range to `endPort`, any (no
//!   port), or a name: the destination pod's container port of that name and protocol.
//!   A name means nothing for an address block's destination (no pod to own it).
//! - Selectors: `matchLabels` and `matchExpressions` (In, NotIn, Exists, DoesNotExist),
//!   all of them; an unknown operator matches nothing.
//! - The replies of a connection policies let through, and ICMP errors about it, pass.
//! - Traffic from the node (the gateway, also as a service hairpin's source) and from a
//!   pod to its own node (gateway, node address) always passes.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::networking::v1::{NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::packet::Ipv4;
use crate::state::{Net, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

pub const IPPROTO_SCTP: u8 = 132;

pub type Labels = BTreeMap<String, String>;

/// A container port with a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedPort {
    pub name: String,
    pub port: u16,
    pub protocol: u8,
}

/// What policies know of a pod of the cluster (by its address).
#[derive(Clone, Debug)]
pub struct PodInfo {
    pub namespace: String,
    pub labels: Labels,
    pub ports: Vec<NamedPort>,
}

#[derive(Clone, Debug)]
pub struct Policy {
    pub namespace: String,
    pub name: String,
    pub spec: NetworkPolicySpec,
}

/// A packet's protocol, addresses and ports (ICMP echo: its identifier as both ports).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    pub protocol: u8,
    pub src: (Ipv4Addr, u16),
    pub dst: (Ipv4Addr, u16),
}

impl Flow {
    pub fn reversed(&self) -> Flow {
        Flow { protocol: self.protocol, src: self.dst, dst: self.src }
    }
}

/// The cluster's policy state as one node sees it.
#[derive(Clone, Debug, Default)]
pub struct Policies {
    /// Namespaces' labels, `kubernetes.io/metadata.name` included.
    pub namespaces: BTreeMap<String, Labels>,
    /// Every pod of the cluster with an address (this node's and others').
    pub pods: BTreeMap<Ipv4Addr, PodInfo>,
    pub policies: Vec<Policy>,
    /// Connections policies let through (their first packet's flow): their replies pass.
    pub connections: Vec<Flow>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Ingress,
    Egress,
}

/// Whether a label selector matches (`None`: everything).
pub fn selector_matches(selector: Option<&LabelSelector>, labels: &Labels) -> bool {
    let Some(selector) = selector else { return true };
    let labels_hold = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let expressions_hold = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        match (e.operator.as_str(), labels.get(&e.key)) {
            ("In", Some(v)) => values.contains(v),
            ("In", None) => false,
            ("NotIn", Some(v)) => !values.contains(v),
            ("NotIn", None) => true,
            ("Exists", found) => found.is_some(),
            ("DoesNotExist", found) => found.is_none(),
            _ => false,
        }
    });
    labels_hold && expressions_hold
}

fn protocol_number(name: Option<&str>) -> Option<u8> {
    match name.unwrap_or("TCP") {
        "TCP" => Some(IPPROTO_TCP),
        "UDP" => Some(IPPROTO_UDP),
        "SCTP" => Some(IPPROTO_SCTP),
        _ => None,
    }
}

impl Policy {
    fn isolates(&self, direction: Direction) -> bool {
        match &self.spec.policy_types {
            Some(types) if !types.is_empty() => types.iter().any(|t| {
                t == match direction {
                    Direction::Ingress => "Ingress",
                    Direction::Egress => "Egress",
                }
            }),
            _ => match direction {
                Direction::Ingress => true,
                Direction::Egress => self.spec.egress.as_ref().is_some_and(|rules| !rules.is_empty()),
            },
        }
    }

    fn selects(&self, pod: &PodInfo) -> bool {
        pod.namespace == self.namespace && selector_matches(self.spec.pod_selector.as_ref(), &pod.labels)
    }

    /// Its rules for a direction: (peers, ports).
    fn rules(&self, direction: Direction) -> Vec<(&[NetworkPolicyPeer], &[NetworkPolicyPort])> {
        match direction {
            Direction::Ingress => self
                .spec
                .ingress
                .iter()
                .flatten()
                .map(|r| (r.from.as_deref().unwrap_or_default(), r.ports.as_deref().unwrap_or_default()))
                .collect(),
            Direction::Egress => self
                .spec
                .egress
                .iter()
                .flatten()
                .map(|r| (r.to.as_deref().unwrap_or_default(), r.ports.as_deref().unwrap_or_default()))
                .collect(),
        }
    }
}

impl Policies {
    /// Whether some policy isolates `pod` in `direction`.
    pub fn isolated(&self, pod: &PodInfo, direction: Direction) -> bool {
        self.policies.iter().any(|p| p.selects(pod) && p.isolates(direction))
    }

    /// Whether a rule of a policy isolating `subject` in `direction` allows `flow`, whose
    /// other end is `flow.dst` (egress) or `flow.src` (ingress). `ports`: `None` when
    /// the packet's ports are unknown (a later fragment whose first was not seen): only
    /// a rule allowing every port of every protocol allows it.
    pub fn allows(&self, subject: &PodInfo, direction: Direction, flow: &Flow, ports_known: bool) -> bool {
        let peer_ip = match direction {
            Direction::Ingress => flow.src.0,
            Direction::Egress => flow.dst.0,
        };
        let destination_pod = match direction {
            Direction::Ingress => Some(subject),
            Direction::Egress => self.pods.get(&flow.dst.0),
        };
        self.policies.iter().filter(|p| p.selects(subject) && p.isolates(direction)).any(|policy| {
            policy.rules(direction).into_iter().any(|(peers, ports)| {
                if peers.is_empty() {
                    return ports_allow(ports, flow, destination_pod, ports_known);
                }
                peers.iter().any(|peer| {
                    if let Some(block) = &peer.ip_block {
                        // A named port means nothing for an address: no pod owns it
                        // (except on ingress, where the destination is the subject).
                        let owner = if direction == Direction::Ingress { destination_pod } else { None };
                        in_block(&block.cidr, block.except.as_deref().unwrap_or_default(), peer_ip)
                            && ports_allow(ports, flow, owner, ports_known)
                    } else {
                        self.peer_pods_match(policy, peer, peer_ip)
                            && ports_allow(ports, flow, destination_pod, ports_known)
                    }
                })
            })
        })
    }

    fn peer_pods_match(&self, policy: &Policy, peer: &NetworkPolicyPeer, ip: Ipv4Addr) -> bool {
        let Some(pod) = self.pods.get(&ip) else { return false };
        let namespace_ok = match &peer.namespace_selector {
            None => pod.namespace == policy.namespace,
            Some(selector) => {
                self.namespaces.get(&pod.namespace).is_some_and(|labels| selector_matches(Some(selector), labels))
            }
        };
        namespace_ok && selector_matches(peer.pod_selector.as_ref(), &pod.labels)
    }

    pub fn tracked(&self, flow: &Flow) -> bool {
        self.connections.contains(flow)
    }
}

fn parse_net(cidr: &str) -> Option<Net> {
    let (addr, prefix) = cidr.split_once('/')?;
    let prefix: u8 = prefix.parse().ok()?;
    (prefix <= 32).then_some(Net::new(addr.parse().ok()?, prefix))
}

fn in_block(cidr: &str, except: &[String], ip: Ipv4Addr) -> bool {
    parse_net(cidr).is_some_and(|n| n.contains(ip))
        && !except.iter().any(|e| parse_net(e).is_some_and(|n| n.contains(ip)))
}

fn ports_allow(ports: &[NetworkPolicyPort], flow: &Flow, owner: Option<&PodInfo>, ports_known: bool) -> bool {
    if ports.is_empty() {
        return true;
    }
    if !ports_known {
        return false;
    }
    let dport = flow.dst.1;
    ports.iter().any(|p| {
        let Some(protocol) = protocol_number(p.protocol.as_deref()) else { return false };
        protocol == flow.protocol
            && match &p.port {
                None => true,
                Some(IntOrString::Int(n)) => {
                    let end = p.end_port.unwrap_or(*n);
                    i64::from(*n) <= i64::from(dport) && i64::from(dport) <= i64::from(end)
                }
                Some(IntOrString::String(name)) => owner.is_some_and(|o| {
                    o.ports.iter().any(|np| &np.name == name && np.protocol == protocol && np.port == dport)
                }),
            }
    })
}

/// The ports policies read from a first fragment (or whole packet): TCP, UDP and SCTP's
/// from a whole header (20, 8, 12 bytes), an ICMP echo's identifier as both from a
/// whole ICMP header (8 bytes); (0, 0) otherwise.
pub fn first_fragment_ports(frame: &[u8], ip: &Ipv4) -> (u16, u16) {
    let l4 = &frame[ip.l4_offset.min(frame.len())..];
    let u16_at = |at: usize| u16::from_be_bytes([l4[at], l4[at + 1]]);
    match ip.protocol {
        IPPROTO_TCP if l4.len() >= 20 => (u16_at(0), u16_at(2)),
        IPPROTO_UDP if l4.len() >= 8 => (u16_at(0), u16_at(2)),
        IPPROTO_SCTP if l4.len() >= 12 => (u16_at(0), u16_at(2)),
        IPPROTO_ICMP if l4.len() >= 8 && matches!(l4[0], 0 | 8) => (u16_at(4), u16_at(4)),
        _ => (0, 0),
    }
}

/// An ICMP error (destination unreachable, time exceeded, parameter problem) with a
/// whole ICMP header.
pub fn is_icmp_error(frame: &[u8], ip: &Ipv4) -> bool {
    let l4 = frame.get(ip.l4_offset..).unwrap_or_default();
    ip.protocol == IPPROTO_ICMP && !ip.later_fragment && l4.len() >= 8 && matches!(l4[0], 3 | 11 | 12)
}

/// For an ICMP error (destination unreachable, time exceeded, parameter problem) with a
/// whole ICMP header: the flow of the packet it quotes, if the quote holds its
/// addresses and, for TCP, UDP, SCTP and ICMP, its ports.
pub fn icmp_error_about(frame: &[u8], ip: &Ipv4) -> Option<Flow> {
    if !is_icmp_error(frame, ip) {
        return None;
    }
    let quoted = &frame[ip.l4_offset + 8..];
    let header = quoted.get(..20)?;
    let ihl = usize::from(header[0] & 0x0f) * 4;
    if header[0] >> 4 != 4 || ihl < 20 {
        return None;
    }
    let protocol = header[9];
    let at = |from: usize| quoted.get(ihl + from..ihl + from + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let (sport, dport) = match protocol {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP => {
            quoted.get(ihl..ihl + 4)?;
            (at(0)?, at(2)?)
        }
        IPPROTO_ICMP => {
            quoted.get(ihl..ihl + 8)?;
            (at(4)?, at(4)?)
        }
        _ => (0, 0),
    };
    let addr = |from: usize| Ipv4Addr::new(header[from], header[from + 1], header[from + 2], header[from + 3]);
    (protocol != 0).then_some(Flow { protocol, src: (addr(12), sport), dst: (addr(16), dport) })
}
