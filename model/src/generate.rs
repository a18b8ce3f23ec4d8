//! Random node states and random frames for differential tests. Everything is drawn
//! from an `StdRng` seeded by the caller, so a failing case is replayed from its seed.
//!
//! Frames are biased towards what matters: addresses the state knows (pods, gateway,
//! services and their declared ports, remote subnets, tracked connections and
//! fragments), next to spoofed, truncated, malformed and hostile ones. Services have
//! draining endpoints (window open or ended) with tracked connections to them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::packet::{pod_mac, ETH_LEN};
use crate::pipeline::Ingress;
use crate::policy::{Flow, Labels, NamedPort, PodInfo, Policies, Policy, IPPROTO_SCTP};
use crate::state::*;

const SECOND: u64 = 1_000_000_000;
/// The drain window the agent gives (`ENDPOINT_DRAIN_WINDOW`).
const DRAIN_WINDOW: u64 = 30 * SECOND;

/// Interfaces a generated state may use as pod ports: the test creates them, since the
/// kernel needs a real ifindex for each. A state uses some of them for pods; the others
/// are ports with no pod.
pub struct Ports<'a> {
    pub ifindexes: &'a [u32],
}

/// A random node state. Projects, services and remote nodes are few, so frames often
/// hit them.
pub fn state(rng: &mut StdRng, ports: &Ports) -> State {
    let cluster = Net::new(Ipv4Addr::new(10, 128, 0, 0), 14);
    let subnet_bits: u8 = rng.gen_range(6..=9); // node subnets of 64..512 addresses
    let subnets = 1u32 << (32 - cluster.prefix - subnet_bits);
    let mut subnet_ids: Vec<u32> = (0..subnets).collect();
    subnet_ids.shuffle(rng);
    let subnet = |i: u32| Net::new(cluster.nth(i << subnet_bits), 32 - subnet_bits);
    let local = subnet(subnet_ids[0]);
    let node = Node {
        cluster,
        local,
        service: Net::new(Ipv4Addr::new(172, 30, 0, 0), 16),
        node_ip: Ipv4Addr::new(192, 168, 100, rng.gen_range(1..100)),
        vxlan_port: *[4789, 8472, 4790].choose(rng).unwrap(),
    };

    let project_count = rng.gen_range(1..=5u32);
    let projects: BTreeMap<u32, u32> = (1..=project_count)
        .map(|p| {
            let vnid = match rng.gen_range(0..5) {
                0 => 0,
                1 => 10,
                2 => 11,
                3 => rng.gen_range(10..1 << 24),
                _ => 9 + p,
            };
            (p, vnid)
        })
        .collect();
    let project = |rng: &mut StdRng| rng.gen_range(1..=project_count);

    let pod_count = rng.gen_range(0..=ports.ifindexes.len());
    let mut host_parts: Vec<u32> = (2..local.size() - 1).collect();
    host_parts.shuffle(rng);
    let mut pod_ports = ports.ifindexes.to_vec();
    pod_ports.shuffle(rng);
    let pods: Vec<Pod> = (0..pod_count)
        .map(|i| Pod { ip: local.nth(host_parts[i]), ifindex: pod_ports[i], project: project(rng) })
        .collect();

    let remote_nodes: Vec<RemoteNode> = (1..=rng.gen_range(0..=4usize))
        .map(|i| RemoteNode { subnet: subnet(subnet_ids[i]), node_ip: Ipv4Addr::new(192, 168, 101, i as u8) })
        .collect();

    let mut projects = projects;
    if rng.gen_bool(0.1) {
        // A project deleted while its pods or services are still known (a race).
        projects.remove(&project(rng));
    }
    let mut state = State {
        mode: Mode::Multitenant,
        policy: Policies::default(),
        node,
        pods,
        projects,
        remote_nodes,
        services: Vec::new(),
        connections: Vec::new(),
        fragments: Vec::new(),
        // Far enough from 0 that every window generated here ended after boot.
        now: rng.gen_range(1 << 40..1 << 50),
    };
    let mut cluster_ips: Vec<u32> = (1..200).collect();
    cluster_ips.shuffle(rng);
    // Namespaces, pods' labels and ports, policies: written in every mode (the agent
    // compiles them in every mode), judged in networkpolicy mode.
    state.mode = *[Mode::Multitenant, Mode::Multitenant, Mode::Subnet, Mode::NetworkPolicy, Mode::NetworkPolicy]
        .choose(rng)
        .unwrap();
    state.policy = policies(rng, &state);
    for cluster_ip in cluster_ips.iter().take(rng.gen_range(0..=4)) {
        let mut ports: Vec<ServicePort> = Vec::new();
        for _ in 0..rng.gen_range(1..=3) {
            let port = ServicePort {
                port: *[53, 80, 443, 8080, rng.gen()].choose(rng).unwrap(),
                protocol: *[IPPROTO_TCP, IPPROTO_UDP].choose(rng).unwrap(),
                target_port: *[80, 8080, 53, rng.gen()].choose(rng).unwrap(),
            };
            if !ports.iter().any(|p| p.port == port.port && p.protocol == port.protocol) {
                ports.push(port);
            }
        }
        let mut endpoints = Vec::new();
        for _ in 0..rng.gen_range(0..=3) {
            // Mostly pods; Endpoints written by hand may name any address.
            let endpoint = if rng.gen_bool(0.9) { pod_address(rng, &state) } else { address(rng, &state) };
            if !endpoints.contains(&endpoint) {
                endpoints.push(endpoint);
            }
        }
        let mut draining: Vec<Draining> = Vec::new();
        for _ in 0..rng.gen_range(0..=2) {
            let ip = pod_address(rng, &state);
            if !endpoints.contains(&ip) && !draining.iter().any(|d| d.ip == ip) {
                draining.push(Draining { ip, until: drain_end(rng, state.now) });
            }
        }
        state.services.push(Service {
            cluster_ip: state.node.service.nth(*cluster_ip),
            project: project(rng),
            ports,
            endpoints,
            draining,
        });
    }
    for _ in 0..rng.gen_range(0..=6) {
        if let Some(c) = connection(rng, &state) {
            if state.connection_from_client(c.protocol, c.client, c.service).is_none()
                && state.connection_from_endpoint(c.protocol, c.endpoint, seen_client(&state, &c)).is_none()
            {
                state.connections.push(c);
            }
        }
    }
    // Fragmented datagrams of tracked connections, both ways, and others.
    for c in state.connections.clone() {
        if rng.gen_bool(0.5) {
            continue;
        }
        let (from, to) = if rng.gen_bool(0.5) { (c.client, c.service) } else { (c.endpoint, seen_client(&state, &c)) };
        let f =
            Fragmented { src: from.0, dst: to.0, id: rng.gen_range(0..4), protocol: c.protocol, ports: (from.1, to.1) };
        if state.fragment_ports(f.src, f.dst, f.id, f.protocol).is_none() {
            state.fragments.push(f);
        }
    }
    for _ in 0..rng.gen_range(0..=3) {
        let f = Fragmented {
            src: address(rng, &state),
            dst: address(rng, &state),
            id: rng.gen_range(0..4),
            protocol: *[IPPROTO_TCP, IPPROTO_UDP].choose(rng).unwrap(),
            ports: (port(rng, &state), port(rng, &state)),
        };
        if state.fragment_ports(f.src, f.dst, f.id, f.protocol).is_none() {
            state.fragments.push(f);
        }
    }
    for _ in 0..rng.gen_range(0..=6) {
        let flow = policy_flow(rng, &state);
        if !state.policy.connections.contains(&flow) {
            state.policy.connections.push(flow);
        }
    }
    state
}

/// Label keys and values: few, so selectors often match.
const LABEL_KEYS: [&str; 3] = ["app", "tier", "team"];
const LABEL_VALUES: [&str; 3] = ["a", "b", "c"];
const PORT_NAMES: [&str; 4] = ["http", "dns", "metrics", "serve-81"];

fn labels(rng: &mut StdRng) -> Labels {
    let mut l = Labels::new();
    for key in LABEL_KEYS {
        if rng.gen_bool(0.5) {
            l.insert(key.to_string(), LABEL_VALUES.choose(rng).unwrap().to_string());
        }
    }
    l
}

fn protocol_name(rng: &mut StdRng) -> &'static str {
    ["TCP", "TCP", "UDP", "SCTP"].choose(rng).unwrap()
}

fn protocol_number(name: &str) -> u8 {
    match name {
        "UDP" => IPPROTO_UDP,
        "SCTP" => IPPROTO_SCTP,
        _ => IPPROTO_TCP,
    }
}

fn named_ports(rng: &mut StdRng, state: &State) -> Vec<NamedPort> {
    let mut ports: Vec<NamedPort> = Vec::new();
    for _ in 0..rng.gen_range(0..=3) {
        let name = PORT_NAMES.choose(rng).unwrap().to_string();
        let protocol = protocol_number(protocol_name(rng));
        // Kubernetes refuses two ports of one name.
        if !ports.iter().any(|p| p.name == name) {
            ports.push(NamedPort { name, port: port(rng, state), protocol });
        }
    }
    ports
}

fn namespace_name(project: u32) -> String {
    format!("ns{project}")
}

/// Namespaces (one per project, and one with pods on other nodes only), the labels and
/// named ports of local pods (most of them) and of pods on the remote nodes, and
/// policies over them.
fn policies(rng: &mut StdRng, state: &State) -> Policies {
    let mut p = Policies::default();
    let names: Vec<String> = state.projects.keys().map(|id| namespace_name(*id)).chain(["other".to_string()]).collect();
    for name in &names {
        let mut l = labels(rng);
        l.insert("kubernetes.io/metadata.name".into(), name.clone());
        p.namespaces.insert(name.clone(), l);
    }
    for pod in &state.pods {
        if rng.gen_bool(0.95) {
            let info =
                PodInfo { namespace: namespace_name(pod.project), labels: labels(rng), ports: named_ports(rng, state) };
            p.pods.insert(pod.ip, info);
        }
    }
    for node in &state.remote_nodes {
        for _ in 0..rng.gen_range(0..=4) {
            let ip = node.subnet.nth(rng.gen_range(2..node.subnet.size() - 1));
            let info = PodInfo {
                namespace: names.choose(rng).unwrap().clone(),
                labels: labels(rng),
                ports: named_ports(rng, state),
            };
            p.pods.insert(ip, info);
        }
    }
    for i in 0..rng.gen_range(0..=6) {
        let namespace = names.choose(rng).unwrap().clone();
        p.policies.push(Policy { namespace, name: format!("policy-{i}"), spec: policy_spec(rng, state, &p) });
    }
    p
}

fn selector(rng: &mut StdRng) -> LabelSelector {
    let mut s = LabelSelector::default();
    if rng.gen_bool(0.5) {
        s.match_labels = Some(labels(rng));
    }
    if rng.gen_bool(0.4) {
        let expressions = (0..rng.gen_range(1..=2))
            .map(|_| {
                let operator = *["In", "NotIn", "Exists", "DoesNotExist"].choose(rng).unwrap();
                let values = matches!(operator, "In" | "NotIn").then(|| {
                    let mut v: Vec<String> =
                        LABEL_VALUES.iter().filter(|_| rng.gen_bool(0.5)).map(|v| v.to_string()).collect();
                    if v.is_empty() {
                        v.push(LABEL_VALUES.choose(rng).unwrap().to_string());
                    }
                    v
                });
                LabelSelectorRequirement {
                    key: LABEL_KEYS.choose(rng).unwrap().to_string(),
                    operator: operator.into(),
                    values,
                }
            })
            .collect();
        s.match_expressions = Some(expressions);
    }
    s
}

/// An address block around addresses frames use, with exceptions inside it.
fn ip_block(rng: &mut StdRng, state: &State, policies: &Policies) -> IPBlock {
    let known: Vec<Ipv4Addr> = policies.pods.keys().copied().collect();
    let around = match known.choose(rng) {
        Some(ip) if rng.gen_bool(0.5) => *ip,
        _ => address(rng, state),
    };
    let prefix = *[0, 8, 14, 16, 24, 26, 28, 32, rng.gen_range(0..=32)].choose(rng).unwrap();
    let block = Net::new(around, prefix);
    let except = (0..rng.gen_range(0..=2))
        .filter_map(|_| {
            let inner = if block.prefix == 32 { return None } else { rng.gen_range(block.prefix + 1..=32) };
            let inside = match known.iter().filter(|ip| block.contains(**ip)).collect::<Vec<_>>().choose(rng) {
                Some(ip) if rng.gen_bool(0.6) => **ip,
                _ => block.nth(rng.gen_range(0..block.size().max(1))),
            };
            let e = Net::new(inside, inner);
            Some(format!("{}/{}", e.addr, e.prefix))
        })
        .collect::<Vec<_>>();
    IPBlock { cidr: format!("{}/{}", block.addr, block.prefix), except: (!except.is_empty()).then_some(except) }
}

fn peer(rng: &mut StdRng, state: &State, policies: &Policies) -> NetworkPolicyPeer {
    match rng.gen_range(0..4) {
        0 => NetworkPolicyPeer { pod_selector: Some(selector(rng)), ..Default::default() },
        1 => NetworkPolicyPeer { namespace_selector: Some(selector(rng)), ..Default::default() },
        2 => NetworkPolicyPeer {
            pod_selector: Some(selector(rng)),
            namespace_selector: Some(selector(rng)),
            ..Default::default()
        },
        _ => NetworkPolicyPeer { ip_block: Some(ip_block(rng, state, policies)), ..Default::default() },
    }
}

fn policy_port(rng: &mut StdRng, state: &State) -> NetworkPolicyPort {
    let protocol = rng.gen_bool(0.8).then(|| protocol_name(rng).to_string());
    let (port, end_port) = match rng.gen_range(0..10) {
        0 => (None, None),
        1..=3 => (Some(IntOrString::String(PORT_NAMES.choose(rng).unwrap().to_string())), None),
        4 | 5 => {
            let start = port(rng, state).max(1);
            (Some(IntOrString::Int(i32::from(start))), Some(i32::from(start.saturating_add(rng.gen_range(0..1000)))))
        }
        _ => (Some(IntOrString::Int(i32::from(port(rng, state).max(1)))), None),
    };
    NetworkPolicyPort { protocol, port, end_port }
}

/// A list of some length, sometimes absent, sometimes empty.
fn some_of<T>(rng: &mut StdRng, mut item: impl FnMut(&mut StdRng) -> T) -> Option<Vec<T>> {
    match rng.gen_range(0..10) {
        0 | 1 => None,
        2 => Some(Vec::new()),
        _ => Some((0..rng.gen_range(1..=3)).map(|_| item(rng)).collect()),
    }
}

fn policy_spec(rng: &mut StdRng, state: &State, policies: &Policies) -> NetworkPolicySpec {
    let ingress = some_of(rng, |rng| NetworkPolicyIngressRule {
        from: some_of(rng, |rng| peer(rng, state, policies)),
        ports: some_of(rng, |rng| policy_port(rng, state)),
    });
    let egress = some_of(rng, |rng| NetworkPolicyEgressRule {
        to: some_of(rng, |rng| peer(rng, state, policies)),
        ports: some_of(rng, |rng| policy_port(rng, state)),
    });
    let policy_types = match rng.gen_range(0..5) {
        0 => None,
        4 => Some(Vec::new()),
        1 => Some(vec!["Ingress".to_string()]),
        2 => Some(vec!["Egress".to_string()]),
        _ => Some(vec!["Ingress".to_string(), "Egress".to_string()]),
    };
    let pod_selector = if rng.gen_bool(0.3) { Some(LabelSelector::default()) } else { Some(selector(rng)) };
    NetworkPolicySpec { pod_selector, policy_types, ingress, egress }
}

/// A connection policies let through: between pods, the node and others, of any
/// protocol policies know (an ICMP echo by its identifier).
fn policy_flow(rng: &mut StdRng, state: &State) -> Flow {
    let known: Vec<Ipv4Addr> = state.policy.pods.keys().copied().collect();
    let end = |rng: &mut StdRng| match known.choose(rng) {
        Some(ip) if rng.gen_bool(0.7) => *ip,
        _ => address(rng, state),
    };
    let (src, dst) = (end(rng), end(rng));
    let protocol = *[IPPROTO_TCP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP, IPPROTO_ICMP].choose(rng).unwrap();
    let (sport, dport) = if protocol == IPPROTO_ICMP {
        let id = rng.gen_range(0..4);
        (id, id)
    } else {
        (rng.gen_range(32768..32800), port(rng, state))
    };
    Flow { protocol, src: (src, sport), dst: (dst, dport) }
}

/// When a drain window ends: mostly still open (at least 10 s ahead, so it stays open
/// while a test runs the state's frames), or ended (up to the window's length ago).
fn drain_end(rng: &mut StdRng, now: u64) -> u64 {
    if rng.gen_bool(0.6) {
        now + rng.gen_range(10 * SECOND..=DRAIN_WINDOW)
    } else {
        now - rng.gen_range(0..=DRAIN_WINDOW)
    }
}

/// The address an endpoint sees as the client's.
fn seen_client(state: &State, c: &Connection) -> (Ipv4Addr, u16) {
    if c.hairpin() {
        (state.node.gateway(), c.client.1)
    } else {
        c.client
    }
}

/// A tracked connection to a declared service port, usually to one of its endpoints or
/// to one that drains.
fn connection(rng: &mut StdRng, state: &State) -> Option<Connection> {
    let service = state.services.choose(rng)?;
    let port = service.ports.choose(rng)?;
    let endpoint = match rng.gen_range(0..10) {
        0..=5 if !service.endpoints.is_empty() => *service.endpoints.choose(rng).unwrap(),
        6..=8 if !service.draining.is_empty() => service.draining.choose(rng).unwrap().ip,
        _ => pod_address(rng, state),
    };
    let client = match rng.gen_range(0..8) {
        0 | 1 => state.node.gateway(),
        2 | 3 => endpoint,
        4 => address(rng, state),
        _ => pod_address(rng, state),
    };
    Some(Connection {
        protocol: port.protocol,
        client: (client, rng.gen_range(32768..32800)),
        service: (service.cluster_ip, port.port),
        endpoint: (endpoint, if rng.gen_bool(0.9) { port.target_port } else { rng.gen() }),
    })
}

/// A pod address: a local pod, a free local address, or an address in a remote
/// subnet (or in no node's subnet).
fn pod_address(rng: &mut StdRng, state: &State) -> Ipv4Addr {
    let local = state.node.local;
    if !state.policy.pods.is_empty() && rng.gen_bool(0.3) {
        return **state.policy.pods.keys().collect::<Vec<_>>().choose(rng).unwrap();
    }
    match rng.gen_range(0..5) {
        0 | 1 | 4 if !state.pods.is_empty() => state.pods.choose(rng).unwrap().ip,
        2 if !state.remote_nodes.is_empty() => {
            let n = state.remote_nodes.choose(rng).unwrap();
            n.subnet.nth(rng.gen_range(1..n.subnet.size()))
        }
        3 => state.node.cluster.nth(rng.gen_range(0..state.node.cluster.size())),
        _ => local.nth(rng.gen_range(2..local.size() - 1)),
    }
}

/// Any address worth sending to or from.
pub fn address(rng: &mut StdRng, state: &State) -> Ipv4Addr {
    let node = &state.node;
    match rng.gen_range(0..18) {
        0..=4 | 15 | 16 => pod_address(rng, state),
        5 | 6 => node.gateway(),
        7 | 8 if !state.services.is_empty() => state.services.choose(rng).unwrap().cluster_ip,
        9 => node.service.nth(rng.gen_range(0..node.service.size())),
        10 => node.node_ip,
        11 => *[Ipv4Addr::BROADCAST, Ipv4Addr::new(224, 0, 0, 1), Ipv4Addr::new(239, 1, 2, 3)].choose(rng).unwrap(),
        12 => node.local.nth(node.local.size() - 1),
        13 => node.local.addr,
        14 if !state.remote_nodes.is_empty() => state.remote_nodes.choose(rng).unwrap().node_ip,
        _ => Ipv4Addr::from(rng.gen::<u32>()),
    }
}

/// A port worth sending to: declared service ports and target ports, pods' named
/// ports, DNS, VXLAN.
fn port(rng: &mut StdRng, state: &State) -> u16 {
    let declared: Vec<u16> =
        state.services.iter().flat_map(|s| s.ports.iter().flat_map(|p| [p.port, p.target_port])).collect();
    let named: Vec<u16> = state.policy.pods.values().flat_map(|p| p.ports.iter().map(|n| n.port)).collect();
    if !named.is_empty() && rng.gen_bool(0.2) {
        return *named.choose(rng).unwrap();
    }
    match rng.gen_range(0..6) {
        0 | 1 if !declared.is_empty() => *declared.choose(rng).unwrap(),
        2 => 53,
        3 => state.node.vxlan_port,
        _ => rng.gen(),
    }
}

/// One test case: where a frame comes in, and the frame.
#[derive(Clone, Debug)]
pub struct Case {
    pub ingress: Ingress,
    pub frame: Vec<u8>,
}

/// A random frame at a random ingress.
pub fn case(rng: &mut StdRng, state: &State, ports: &Ports) -> Case {
    let mut ingress = ingress(rng, state, ports);
    let mut frame = match rng.gen_range(0..25) {
        0..=3 => arp(rng, state, ingress),
        4..=14 => ipv4(rng, state, ingress),
        18 => vxlan_inside(rng, state, ingress),
        19 => other_ethertype(rng),
        kind => {
            let tracked = match kind {
                15 | 16 => reply(rng, state),
                17 => later_fragment(rng, state),
                22..=24 => policy_reply(rng, state),
                _ => client_packet(rng, state),
            };
            match tracked {
                Some((src, frame)) => {
                    if rng.gen_bool(0.8) {
                        ingress = arrives_on(rng, state, src).unwrap_or(ingress);
                    }
                    frame
                }
                None => ipv4(rng, state, ingress),
            }
        }
    };
    mangle(rng, &mut frame);
    Case { ingress, frame }
}

/// Where a packet from `src` honestly comes in: its pod's port, tun0 for the gateway,
/// the tunnel from the node whose subnet holds it.
fn arrives_on(rng: &mut StdRng, state: &State, src: Ipv4Addr) -> Option<Ingress> {
    if let Some(pod) = state.pod_by_ip(src) {
        return Some(Ingress::Pod(pod.ifindex));
    }
    if src == state.node.gateway() {
        return Some(Ingress::Tun0);
    }
    let node = state.remote_node_for(src)?;
    let vni = *state.projects.values().collect::<Vec<_>>().choose(rng)?;
    Some(Ingress::Tunnel { src: node.node_ip, vni: *vni })
}

fn ingress(rng: &mut StdRng, state: &State, ports: &Ports) -> Ingress {
    match rng.gen_range(0..10) {
        0..=4 if !state.pods.is_empty() => Ingress::Pod(state.pods.choose(rng).unwrap().ifindex),
        5 => Ingress::Pod(*ports.ifindexes.choose(rng).unwrap()),
        6 | 7 => Ingress::Tun0,
        _ => {
            let src = match state.remote_nodes.choose(rng) {
                Some(n) if rng.gen_bool(0.8) => n.node_ip,
                _ => address(rng, state),
            };
            let vnids: Vec<u32> = state.projects.values().copied().collect();
            let vni = match vnids.choose(rng) {
                Some(vnid) if rng.gen_bool(0.8) => *vnid,
                _ => rng.gen_range(0..1 << 24),
            };
            Ingress::Tunnel { src, vni }
        }
    }
}

/// The address a frame from this ingress honestly carries as its source.
fn honest_source(rng: &mut StdRng, state: &State, ingress: Ingress) -> Ipv4Addr {
    match ingress {
        Ingress::Pod(port) => state.pod_by_port(port).map(|p| p.ip).unwrap_or_else(|| address(rng, state)),
        Ingress::Tun0 => state.node.gateway(),
        Ingress::Tunnel { .. } => pod_address(rng, state),
    }
}

fn source(rng: &mut StdRng, state: &State, ingress: Ingress) -> Ipv4Addr {
    if rng.gen_bool(0.8) {
        honest_source(rng, state, ingress)
    } else {
        address(rng, state)
    }
}

fn ethernet(dst: [u8; 6], src: [u8; 6], ether_type: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(128);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ether_type.to_be_bytes());
    f
}

fn mac(rng: &mut StdRng, ip: Ipv4Addr) -> [u8; 6] {
    match rng.gen_range(0..8) {
        0 => [0xff; 6],
        1 => [0x01, 0x00, 0x5e, 0, 0, 1],
        2 => rng.gen(),
        _ => pod_mac(ip),
    }
}

fn arp(rng: &mut StdRng, state: &State, ingress: Ingress) -> Vec<u8> {
    let sender = source(rng, state, ingress);
    let target = address(rng, state);
    let other = address(rng, state);
    let sender_mac = if rng.gen_bool(0.8) { pod_mac(sender) } else { mac(rng, other) };
    let request = rng.gen_bool(0.7);
    let mut f = ethernet(if request { [0xff; 6] } else { pod_mac(target) }, sender_mac, 0x0806);
    let (hw, proto, hlen, plen): (u16, u16, u8, u8) =
        if rng.gen_bool(0.95) { (1, 0x0800, 6, 4) } else { (6, 0x86dd, 6, 4) };
    f.extend_from_slice(&hw.to_be_bytes());
    f.extend_from_slice(&proto.to_be_bytes());
    f.extend_from_slice(&[hlen, plen, 0, if request { 1 } else { 2 }]);
    f.extend_from_slice(&sender_mac);
    f.extend_from_slice(&sender.octets());
    f.extend_from_slice(&if request { [0; 6] } else { pod_mac(target) });
    f.extend_from_slice(&target.octets());
    f
}

/// Header fields of a generated IPv4 packet.
struct Ip {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    id: u16,
    more_fragments: bool,
    offset_units: u16,
    options: usize,
}

fn ipv4(rng: &mut StdRng, state: &State, ingress: Ingress) -> Vec<u8> {
    let src = source(rng, state, ingress);
    let dst = match state.services.choose(rng) {
        Some(service) if rng.gen_bool(0.25) => service.cluster_ip,
        _ => address(rng, state),
    };
    let any_protocol =
        *[IPPROTO_TCP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDP, IPPROTO_ICMP, IPPROTO_SCTP, 47].choose(rng).unwrap();
    let (protocol, dport) = match state.services.iter().find(|s| s.cluster_ip == dst) {
        Some(s) if rng.gen_bool(0.8) => {
            let declared = s.ports.choose(rng).unwrap();
            (if rng.gen_bool(0.9) { declared.protocol } else { any_protocol }, declared.port)
        }
        _ => (any_protocol, port(rng, state)),
    };
    let sport = if rng.gen_bool(0.5) { rng.gen_range(32768..32800) } else { port(rng, state) };
    let first_fragment = rng.gen_bool(0.1);
    let ip = Ip {
        src,
        dst,
        protocol,
        id: rng.gen_range(0..4),
        more_fragments: first_fragment,
        offset_units: 0,
        options: if rng.gen_bool(0.1) { 4 * rng.gen_range(1..=10) } else { 0 },
    };
    let payload: Vec<u8> = (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect();
    let l4 = transport(rng, &ip, sport, dport, &payload);
    ip_frame(rng, &ip, &l4)
}

/// A TCP, UDP or ICMP header and payload with a valid checksum (mostly).
fn transport(rng: &mut StdRng, ip: &Ip, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut l4 = Vec::new();
    let checksum_at = match ip.protocol {
        IPPROTO_TCP => {
            l4.extend_from_slice(&sport.to_be_bytes());
            l4.extend_from_slice(&dport.to_be_bytes());
            l4.extend_from_slice(&rng.gen::<[u8; 8]>());
            l4.extend_from_slice(&[0x50, *[0x02, 0x10, 0x18, 0x11, 0x04].choose(rng).unwrap(), 0xff, 0xff, 0, 0, 0, 0]);
            Some(16)
        }
        IPPROTO_UDP => {
            l4.extend_from_slice(&sport.to_be_bytes());
            l4.extend_from_slice(&dport.to_be_bytes());
            l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            l4.extend_from_slice(&[0, 0]);
            Some(6)
        }
        IPPROTO_ICMP => {
            l4.extend_from_slice(&[*[8, 0, 8, 3].choose(rng).unwrap(), 0, 0, 0]);
            // Identifiers the tracked echoes use, mostly.
            l4.extend_from_slice(&rng.gen_range(0u16..6).to_be_bytes());
            l4.extend_from_slice(&rng.gen::<[u8; 2]>());
            None
        }
        IPPROTO_SCTP => {
            l4.extend_from_slice(&sport.to_be_bytes());
            l4.extend_from_slice(&dport.to_be_bytes());
            // Verification tag and CRC32c: nothing here checks them.
            l4.extend_from_slice(&rng.gen::<[u8; 8]>());
            None
        }
        _ => None,
    };
    l4.extend_from_slice(payload);
    if let Some(at) = checksum_at {
        let no_checksum = ip.protocol == IPPROTO_UDP && rng.gen_bool(0.2);
        if !no_checksum {
            let mut pseudo = Vec::new();
            pseudo.extend_from_slice(&ip.src.octets());
            pseudo.extend_from_slice(&ip.dst.octets());
            pseudo.extend_from_slice(&[0, ip.protocol]);
            pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            pseudo.extend_from_slice(&l4);
            let mut sum = checksum(&pseudo);
            if ip.protocol == IPPROTO_UDP && sum == 0 {
                sum = 0xffff;
            }
            if rng.gen_bool(0.05) {
                sum = rng.gen();
            }
            l4[at..at + 2].copy_from_slice(&sum.to_be_bytes());
        }
    } else if ip.protocol == IPPROTO_ICMP {
        let sum = checksum(&l4);
        l4[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    l4
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ip_frame(rng: &mut StdRng, ip: &Ip, l4: &[u8]) -> Vec<u8> {
    let src_mac = if rng.gen_bool(0.9) { pod_mac(ip.src) } else { rng.gen() };
    let mut f = ethernet(mac(rng, ip.dst), src_mac, 0x0800);
    let header_len = 20 + ip.options;
    let flags_offset = (u16::from(ip.more_fragments) << 13) | ip.offset_units;
    f.push(0x40 | (header_len / 4) as u8);
    f.push(0);
    f.extend_from_slice(&((header_len + l4.len()) as u16).to_be_bytes());
    f.extend_from_slice(&ip.id.to_be_bytes());
    f.extend_from_slice(&flags_offset.to_be_bytes());
    f.extend_from_slice(&[rng.gen_range(1..=64), ip.protocol, 0, 0]);
    f.extend_from_slice(&ip.src.octets());
    f.extend_from_slice(&ip.dst.octets());
    f.extend(std::iter::repeat_n(1u8, ip.options)); // NOPs
    let sum = checksum(&f[ETH_LEN..ETH_LEN + header_len]);
    f[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(l4);
    if rng.gen_bool(0.05) {
        f.extend(std::iter::repeat_n(0u8, rng.gen_range(1..20))); // Ethernet padding
    }
    f
}

/// A client's packet in a tracked connection (or a near miss), and its source.
fn client_packet(rng: &mut StdRng, state: &State) -> Option<(Ipv4Addr, Vec<u8>)> {
    let c = state.connections.choose(rng)?;
    let ip = Ip {
        src: c.client.0,
        dst: c.service.0,
        protocol: c.protocol,
        id: rng.gen_range(0..4),
        more_fragments: rng.gen_bool(0.1),
        offset_units: 0,
        options: 0,
    };
    let sport = if rng.gen_bool(0.9) { c.client.1 } else { rng.gen() };
    let l4 = transport(rng, &ip, sport, c.service.1, b"request");
    Some((ip.src, ip_frame(rng, &ip, &l4)))
}

/// An endpoint's reply in a tracked connection (or a near miss), and its source.
fn reply(rng: &mut StdRng, state: &State) -> Option<(Ipv4Addr, Vec<u8>)> {
    let c = state.connections.choose(rng)?;
    let (to, to_port) = seen_client(state, c);
    let ip = Ip {
        src: c.endpoint.0,
        dst: to,
        protocol: c.protocol,
        id: rng.gen_range(0..4),
        more_fragments: rng.gen_bool(0.1),
        offset_units: 0,
        options: 0,
    };
    let sport = if rng.gen_bool(0.9) { c.endpoint.1 } else { rng.gen() };
    let l4 = transport(rng, &ip, sport, to_port, b"reply");
    Some((ip.src, ip_frame(rng, &ip, &l4)))
}

/// A packet of a connection policies let through: its reply (or a near miss), or an
/// ICMP error about it from its destination; and its source.
fn policy_reply(rng: &mut StdRng, state: &State) -> Option<(Ipv4Addr, Vec<u8>)> {
    let flow = *state.policy.connections.choose(rng)?;
    let reply = flow.reversed();
    if rng.gen_bool(0.7) {
        let ip = Ip {
            src: reply.src.0,
            dst: reply.dst.0,
            protocol: reply.protocol,
            id: rng.gen_range(0..4),
            more_fragments: false,
            offset_units: 0,
            options: 0,
        };
        let (sport, dport) = if rng.gen_bool(0.9) { (reply.src.1, reply.dst.1) } else { (rng.gen(), reply.dst.1) };
        let l4 = if ip.protocol == IPPROTO_ICMP {
            let mut echo = vec![0, 0, 0, 0];
            echo.extend_from_slice(&sport.to_be_bytes());
            echo.extend_from_slice(&[0, 1]);
            let sum = checksum(&echo);
            echo[2..4].copy_from_slice(&sum.to_be_bytes());
            echo
        } else {
            transport(rng, &ip, sport, dport, b"reply")
        };
        return Some((ip.src, ip_frame(rng, &ip, &l4)));
    }
    // Destination unreachable from the flow's destination, quoting its first packet.
    let quoted_ip = Ip {
        src: flow.src.0,
        dst: flow.dst.0,
        protocol: flow.protocol,
        id: 0,
        more_fragments: false,
        offset_units: 0,
        options: 0,
    };
    let quoted_l4 = if flow.protocol == IPPROTO_ICMP {
        let mut echo = vec![8, 0, 0, 0];
        echo.extend_from_slice(&flow.src.1.to_be_bytes());
        echo.extend_from_slice(&[0, 1]);
        echo
    } else {
        transport(rng, &quoted_ip, flow.src.1, flow.dst.1, b"")
    };
    let quoted = ip_frame(rng, &quoted_ip, &quoted_l4);
    let mut icmp = vec![3, *[1, 3, 13].choose(rng).unwrap(), 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&quoted[ETH_LEN..(ETH_LEN + 28).min(quoted.len())]);
    let sum = checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let ip = Ip {
        src: if rng.gen_bool(0.8) { flow.dst.0 } else { state.node.gateway() },
        dst: flow.src.0,
        protocol: IPPROTO_ICMP,
        id: 0,
        more_fragments: false,
        offset_units: 0,
        options: 0,
    };
    Some((ip.src, ip_frame(rng, &ip, &icmp)))
}

/// A fragment after the first, of a datagram whose first fragment was tracked (mostly),
/// and its source.
fn later_fragment(rng: &mut StdRng, state: &State) -> Option<(Ipv4Addr, Vec<u8>)> {
    let f = state.fragments.choose(rng)?;
    let ip = Ip {
        src: f.src,
        dst: if rng.gen_bool(0.9) { f.dst } else { address(rng, state) },
        protocol: f.protocol,
        id: if rng.gen_bool(0.9) { f.id } else { rng.gen() },
        more_fragments: rng.gen_bool(0.5),
        offset_units: rng.gen_range(1..200),
        options: 0,
    };
    let payload: Vec<u8> = (0..rng.gen_range(8..64)).map(|_| rng.gen()).collect();
    Some((ip.src, ip_frame(rng, &ip, &payload)))
}

/// UDP to the VXLAN port carrying a whole frame for another project.
fn vxlan_inside(rng: &mut StdRng, state: &State, ingress: Ingress) -> Vec<u8> {
    let inner = ipv4(rng, state, ingress);
    let mut vxlan = vec![0x08, 0, 0, 0];
    vxlan.extend_from_slice(&(rng.gen_range(0u32..1 << 24) << 8).to_be_bytes());
    vxlan.extend_from_slice(&inner);
    let ip = Ip {
        src: source(rng, state, ingress),
        dst: address(rng, state),
        protocol: IPPROTO_UDP,
        id: 0,
        more_fragments: false,
        offset_units: 0,
        options: 0,
    };
    let sport = rng.gen();
    let l4 = transport(rng, &ip, sport, state.node.vxlan_port, &vxlan);
    ip_frame(rng, &ip, &l4)
}

/// IPv6, VLAN-tagged IPv4, LLDP, or a made-up EtherType.
fn other_ethertype(rng: &mut StdRng) -> Vec<u8> {
    let ether_type = *[0x86dd, 0x8100, 0x88cc, 0x88a8, rng.gen()].choose(rng).unwrap();
    let mut f = ethernet(rng.gen(), rng.gen(), ether_type);
    f.extend((0..rng.gen_range(1..80)).map(|_| rng.gen::<u8>()));
    f
}

/// Sometimes cuts the frame short or breaks a header field. Frames keep at least one
/// byte after the Ethernet header: BPF_PROG_TEST_RUN refuses anything shorter.
fn mangle(rng: &mut StdRng, frame: &mut Vec<u8>) {
    match rng.gen_range(0..20) {
        0 => frame.truncate(rng.gen_range(ETH_LEN + 1..=frame.len())),
        1 if frame.len() > ETH_LEN => {
            // version and IHL
            frame[ETH_LEN] = rng.gen();
        }
        2 if frame.len() > ETH_LEN + 4 => {
            // total length
            let len: u16 = rng.gen_range(0..(frame.len() as u16 + 40));
            frame[ETH_LEN + 2..ETH_LEN + 4].copy_from_slice(&len.to_be_bytes());
        }
        3 if frame.len() > ETH_LEN + 8 => {
            // fragment flags and offset
            frame[ETH_LEN + 6] = rng.gen();
            frame[ETH_LEN + 7] = rng.gen();
        }
        4 => {
            let at = rng.gen_range(0..frame.len());
            frame[at] = rng.gen();
        }
        _ => {}
    }
}
