//! Differential test: random node states and random frames (valid, truncated,
//! malformed, hostile) through the loaded eBPF programs (BPF_PROG_TEST_RUN) and through
//! the model of Profile A (`oxsdn-model`). In trace mode, verdict, output interface,
//! tunnel node and VNI, and the rewritten frame must agree; the programs as they run
//! attached (which show no decision, only their TC verdict and the frame) must agree on
//! those two. Every rule the trace says a frame matched must match it by its `dump-flows`
//! text, with no rule of higher priority in its table matching too (`rule_text`).
//!
//! `OXSDN_DIFF_CASES` (default 5000) sets how many frames run; `OXSDN_DIFF_SEED` the
//! first state's seed (default: random, printed). Each state's frames come from the
//! state's own seed, so a failure is replayed with the seed it prints.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ipnetwork::Ipv4Network;
use k8s_openapi::{
    api::networking::v1::{
        NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};
use oxsdn_common::{
    mode,
    policy::{connection_key, PolicyConnection, BOTH_WAYS, OPENED_FROM_DST},
    trace::MODE_TEST_INPUT,
    FlowKey, PodEntry, ProjectEntry, MAX_POD_SLOTS, MAX_PROJECT_SLOTS,
};
use oxsdn_controller::policy::{NamedPort, NetworkPolicyRecord, NAMESPACE_NAME_LABEL};
use oxsdn_dataplane::{
    entries::{self, Networks, NodeAddresses, NodeSettings, ProjectRef},
    flows::{self, Flow, RuleRef},
    loader::Programs,
    maps::{ip_key, monotonic_ns, NodeMaps},
    policy::{
        self as engine,
        compile::{compile, Compiled, Numbering, PodView},
    },
    test_run::TestRun,
    tracer::{self as trace, Output, Packet, Proto, TestPrograms, Trace, Tracer, TC_ACT_REDIRECT, TC_ACT_SHOT},
};
use oxsdn_model::generate::{self, Case, Ports};
use oxsdn_model::packet::{self, L3};
use oxsdn_model::policy::{NamedPort as ModelNamedPort, PodInfo, Policies, Policy, IPPROTO_SCTP};
use oxsdn_model::state::{
    Connection, Draining, Mode, Net, Pod, RemoteNode, Service, ServicePort as ModelServicePort, IPPROTO_TCP,
    IPPROTO_UDP,
};
use oxsdn_model::{pipeline, Delivery, Ingress, Out, State, Verdict};
use oxsdn_tests::{
    netns::Netns,
    rule_text::{self, RuleText},
};
use rand::{rngs::StdRng, SeedableRng};

const TUN0_IFINDEX: u32 = 2;
const VXLAN_IFINDEX: u32 = 3;
/// Pod ports (veths in the test's namespace) a state can use.
const POD_PORT_VETHS: usize = 8;
const CASES_PER_STATE: usize = 100;
/// Disagreements reported in full before the test gives up.
const MAX_REPORTED: usize = 20;

#[test]
fn ebpf_programs_agree_with_the_model() -> Result<()> {
    let cases: usize = match std::env::var("OXSDN_DIFF_CASES") {
        Ok(v) => v.parse().context("OXSDN_DIFF_CASES")?,
        Err(_) => 5000,
    };
    let seed: u64 = match std::env::var("OXSDN_DIFF_SEED") {
        Ok(v) => v.parse().context("OXSDN_DIFF_SEED")?,
        Err(_) => rand::random(),
    };
    println!("differential: {cases} cases from seed {seed}");
    let report = in_sandbox("diff", move |harness| harness.random(seed, cases))?;
    println!(
        "differential: {} cases run, {} disagreements ({} frames with a truncated IPv4/IPv6 header skipped: the test run refuses them)",
        report.cases,
        report.disagreements.len(),
        report.refused
    );
    println!("differential: model verdicts {:?}", report.outcomes);
    assert!(
        report.disagreements.is_empty(),
        "the eBPF programs and the model disagree:\n{}",
        report.disagreements.join("\n")
    );
    Ok(())
}

/// Cases the random test found, pinned: the programs must agree with the model on
/// each, and the model's verdict is fixed too. The first three the programs got wrong
/// (fixed since), and the last one.
#[test]
fn regressions() -> Result<()> {
    let disagreements = in_sandbox("diffreg", |harness| {
        let mut rng = StdRng::seed_from_u64(0);
        let port = harness.ports[0];
        let mut state = generate::state(&mut rng, &Ports { ifindexes: &harness.ports });
        state.mode = Mode::Multitenant;
        let (pod, gateway, service) = (state.node.local.nth(2), state.node.gateway(), state.node.service.nth(10));
        state.pods = vec![Pod { ip: pod, ifindex: port, project: 1 }];
        state.projects.insert(1, 10);
        state.services = vec![Service {
            cluster_ip: service,
            project: 1,
            ports: vec![ModelServicePort { port: 80, protocol: IPPROTO_TCP, target_port: 8080 }],
            endpoints: vec![pod],
            draining: vec![],
        }];
        // A client outside the cluster network (routed to the node) with a connection.
        let outside = Ipv4Addr::new(192, 0, 2, 10);
        state.connections = vec![Connection {
            protocol: IPPROTO_TCP,
            client: (outside, 40000),
            service: (service, 80),
            endpoint: (pod, 8080),
        }];
        harness.load(&state)?;
        let names = [("PPPPPPPP", pod), ("GGGGGGGG", gateway), ("SSSSSSSS", service), ("XXXXXXXX", outside)];
        let own = |frame: &str| Case { ingress: Ingress::Pod(port), frame: from_hex(frame, &names) };
        let cases = [
            // A pod's IPv4 to its own address: not sent back out of its port.
            (own("0a58PPPPPPPP 0a58PPPPPPPP 0800 4500001c 00000000 40110000 PPPPPPPP PPPPPPPP 1f900050 00080000"), false),
            // Its gratuitous ARP: the same.
            (own("ffffffffffff 0a58PPPPPPPP 0806 0001080006040001 0a58PPPPPPPP PPPPPPPP 000000000000 PPPPPPPP"), false),
            // IHL 15 in a frame that holds 28 bytes of IPv4: no addresses to route on.
            (own("0a58GGGGGGGG 0a58PPPPPPPP 0800 4f00001c 00000000 40110000 PPPPPPPP GGGGGGGG 1f900050 00080000"), false),
            // To a service port, with only the ports of the TCP header: no ports.
            (own("0a58SSSSSSSS 0a58PPPPPPPP 0800 45000018 00000000 40060000 PPPPPPPP SSSSSSSS 9c400050"), false),
            // The same with the whole header: translated (hairpin, the pod is its endpoint).
            (own("0a58SSSSSSSS 0a58PPPPPPPP 0800 4500002c 00000000 40060000 PPPPPPPP SSSSSSSS 9c400050 00000001 00000000 50020200 00000000"), true),
            // The endpoint's reply to the outside client: the service's address back on
            // it, and to tun0 (was dropped).
            (own("0a58GGGGGGGG 0a58PPPPPPPP 0800 45000028 00000000 40060000 PPPPPPPP XXXXXXXX 1f909c40 00000001 00000000 50120200 00000000"), true),
        ];
        let mut found = Vec::new();
        for (index, (case, delivered)) in cases.iter().enumerate() {
            let expected = pipeline(&state, case.ingress, &case.frame);
            assert_eq!(
                !matches!(expected, Verdict::Drop(_)),
                *delivered,
                "regression {index}: the model's verdict {expected:?}"
            );
            found.extend(harness.check(&state, case, &format!("regression {index}"))?);
        }
        Ok(found)
    })?;
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    Ok(())
}

/// NetworkPolicy and subnet cases the random test found, pinned, with Kubernetes'
/// verdicts: the programs got each wrong before their fix. Pods a and b (namespace x)
/// and c (namespace z) here, r (namespace y) on another node.
#[test]
fn policy_regressions() -> Result<()> {
    let disagreements = in_sandbox("diffpol", |harness| {
        let mut rng = StdRng::seed_from_u64(3);
        let mut state = generate::state(&mut rng, &Ports { ifindexes: &harness.ports });
        let (local, cluster) = (state.node.local, state.node.cluster);
        let remote_subnet =
            Net::new(cluster.nth(if local.addr == cluster.addr { local.size() } else { 0 }), local.prefix);
        state.remote_nodes = vec![RemoteNode { subnet: remote_subnet, node_ip: Ipv4Addr::new(192, 168, 101, 1) }];
        let (a, b, c, r) = (local.nth(2), local.nth(3), local.nth(4), remote_subnet.nth(2));
        let [port_a, port_b, port_c] = [harness.ports[0], harness.ports[1], harness.ports[2]];
        state.projects = BTreeMap::from([(1, 10), (2, 11)]);
        state.pods = vec![
            Pod { ip: a, ifindex: port_a, project: 1 },
            Pod { ip: b, ifindex: port_b, project: 1 },
            Pod { ip: c, ifindex: port_c, project: 2 },
        ];
        (state.services, state.connections, state.fragments) = (Vec::new(), Vec::new(), Vec::new());
        let labels = |app: &str| BTreeMap::from([("app".to_string(), app.to_string())]);
        let pod = |namespace: &str, app: &str, ports: Vec<ModelNamedPort>| PodInfo {
            namespace: namespace.into(),
            labels: labels(app),
            ports,
        };
        let serve = |port| vec![ModelNamedPort { name: "serve-81".into(), port, protocol: IPPROTO_TCP }];
        let selecting = |app: &str| Some(LabelSelector { match_labels: Some(labels(app)), ..Default::default() });
        state.policy = Policies {
            namespaces: ["x", "y", "z"]
                .map(|n| (n.to_string(), BTreeMap::from([(NAMESPACE_NAME_LABEL.to_string(), n.to_string())])))
                .into(),
            pods: BTreeMap::from([
                (a, pod("x", "a", Vec::new())),
                (b, pod("x", "b", serve(81))),
                (c, pod("z", "c", Vec::new())),
                (r, pod("y", "r", serve(8081))),
            ]),
            policies: vec![
                // a may send only to named ports "serve-81", to anyone.
                Policy {
                    namespace: "x".into(),
                    name: "egress-named".into(),
                    spec: NetworkPolicySpec {
                        pod_selector: selecting("a"),
                        policy_types: Some(vec!["Egress".into()]),
                        egress: Some(vec![NetworkPolicyEgressRule {
                            to: None,
                            ports: Some(vec![NetworkPolicyPort {
                                port: Some(IntOrString::String("serve-81".into())),
                                protocol: None,
                                end_port: None,
                            }]),
                        }]),
                        ingress: None,
                    },
                },
                // b accepts only a; `egress: []` without policyTypes isolates no egress.
                Policy {
                    namespace: "x".into(),
                    name: "ingress-from-a".into(),
                    spec: NetworkPolicySpec {
                        pod_selector: selecting("b"),
                        policy_types: None,
                        ingress: Some(vec![NetworkPolicyIngressRule {
                            from: Some(vec![NetworkPolicyPeer { pod_selector: selecting("a"), ..Default::default() }]),
                            ports: None,
                        }]),
                        egress: Some(Vec::new()),
                    },
                },
            ],
            connections: Vec::new(),
        };
        let (gateway, node_ip) = (state.node.gateway(), state.node.node_ip);
        let udp = |src, dst, dport| Packet::new(Proto::Udp, src, dst).ports(40000, dport).frame();
        let tcp = |src, dst, dport| Packet::new(Proto::Tcp, src, dst).ports(40000, dport).frame();
        let later_fragment = |src, dst| {
            let mut frame = udp(src, dst, 81);
            frame[packet::ETH_LEN + 6..packet::ETH_LEN + 8].copy_from_slice(&16u16.to_be_bytes());
            frame
        };
        let tunnel = Ingress::Tunnel { src: Ipv4Addr::new(192, 168, 101, 1), vni: 11 };
        let cases = [
            // A rule without peers allows a named port of any destination pod (was
            // dropped: the name was resolved against no pod).
            (Mode::NetworkPolicy, Ingress::Pod(port_a), tcp(a, b, 81), true),
            (Mode::NetworkPolicy, Ingress::Pod(port_a), tcp(a, r, 8081), true),
            (Mode::NetworkPolicy, Ingress::Pod(port_a), tcp(a, r, 81), false),
            (Mode::NetworkPolicy, Ingress::Pod(port_a), udp(a, r, 8081), false),
            (Mode::NetworkPolicy, Ingress::Pod(port_a), tcp(a, b, 80), false),
            // A pod always reaches its own node (was dropped by a's egress policy).
            (Mode::NetworkPolicy, Ingress::Pod(port_a), tcp(a, gateway, 22), true),
            (Mode::NetworkPolicy, Ingress::Pod(port_a), udp(a, node_ip, 53), true),
            // `egress: []` and no policyTypes: b's egress is open (was isolated).
            (Mode::NetworkPolicy, Ingress::Pod(port_b), tcp(b, r, 443), true),
            (Mode::NetworkPolicy, tunnel, tcp(r, b, 80), false),
            // A later fragment whose first was not seen, between pods no policy isolates
            // for it (was dropped).
            (Mode::NetworkPolicy, tunnel, later_fragment(r, c), true),
            (Mode::NetworkPolicy, tunnel, later_fragment(r, b), false),
            // Subnet mode delivers whatever VNI the tunnel carries (was isolated by it).
            (Mode::Subnet, tunnel, tcp(r, c, 80), true),
            (Mode::Subnet, Ingress::Tunnel { src: Ipv4Addr::new(192, 168, 101, 1), vni: 77 }, tcp(r, a, 80), true),
        ];
        let mut found = Vec::new();
        for (index, (mode, ingress, frame, delivered)) in cases.into_iter().enumerate() {
            if state.mode != mode {
                state.mode = mode;
                harness.load(&state)?;
            }
            let case = Case { ingress, frame };
            let expected = pipeline(&state, case.ingress, &case.frame);
            assert_eq!(
                !matches!(expected, Verdict::Drop(_)),
                delivered,
                "policy regression {index}: the model's verdict {expected:?}"
            );
            found.extend(harness.check(&state, &case, &format!("policy regression {index}"))?);
        }
        Ok(found)
    })?;
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    Ok(())
}

/// A tracked connection's packets pass on the verdict their first packet got (no rule
/// lookup) only while the policy maps are as they were: the programs running as
/// attached keep a connection b's policy allows, then drop its next packet once b's
/// policy changes to allow another peer, and deliver it again once it allows a again;
/// its replies pass all along (Kubernetes leaves established connections to the
/// implementation; oxsdn judges every packet), and the model agrees at each step.
#[test]
fn tracked_connections_are_judged_again_when_policies_change() -> Result<()> {
    let disagreements = in_sandbox("diffpolct", |harness| {
        let mut rng = StdRng::seed_from_u64(5);
        let mut state = generate::state(&mut rng, &Ports { ifindexes: &harness.ports });
        state.mode = Mode::NetworkPolicy;
        let local = state.node.local;
        let (a, b, c) = (local.nth(2), local.nth(3), local.nth(4));
        let [port_a, port_b, port_c] = [harness.ports[0], harness.ports[1], harness.ports[2]];
        state.projects = BTreeMap::from([(1, 10)]);
        state.pods = vec![
            Pod { ip: a, ifindex: port_a, project: 1 },
            Pod { ip: b, ifindex: port_b, project: 1 },
            Pod { ip: c, ifindex: port_c, project: 1 },
        ];
        (state.services, state.connections, state.fragments, state.remote_nodes) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let labels = |app: &str| BTreeMap::from([("app".to_string(), app.to_string())]);
        let selecting = |app: &str| Some(LabelSelector { match_labels: Some(labels(app)), ..Default::default() });
        // b is isolated both ways (its replies are judged: its connections are tracked)
        // and accepts `peer`.
        let accepting = |peer: &str| Policy {
            namespace: "x".into(),
            name: "b-accepts".into(),
            spec: NetworkPolicySpec {
                pod_selector: selecting("b"),
                policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: Some(vec![NetworkPolicyPeer { pod_selector: selecting(peer), ..Default::default() }]),
                    ports: None,
                }]),
                egress: None,
            },
        };
        state.policy = Policies {
            namespaces: BTreeMap::from([(
                "x".to_string(),
                BTreeMap::from([(NAMESPACE_NAME_LABEL.to_string(), "x".to_string())]),
            )]),
            pods: BTreeMap::from([a, b, c].map(|ip| {
                let app = if ip == a {
                    "a"
                } else if ip == b {
                    "b"
                } else {
                    "c"
                };
                (ip, PodInfo { namespace: "x".into(), labels: labels(app), ports: Vec::new() })
            })),
            policies: vec![accepting("a")],
            connections: Vec::new(),
        };
        harness.load(&state)?;
        let tcp = |src, dst, sport, dport| Packet::new(Proto::Tcp, src, dst).ports(sport, dport).frame();
        let (opening, reply) = (tcp(a, b, 40000, 80), tcp(b, a, 80, 40000));
        let mut found = Vec::new();
        let mut send = |harness: &mut Harness, state: &State, from: Ingress, frame: &[u8], step: &str| -> Result<()> {
            let expected = pipeline(state, from, frame);
            let live = harness.live.run(ingress(from), frame, 1)?;
            if let Err(why) = agree_live(&expected, &live) {
                found.push(format!("{step}: {why} (model {})", describe(&expected)));
            }
            Ok(())
        };
        // Opened and used: the second packet passes on the first one's verdict.
        send(harness, &state, Ingress::Pod(port_a), &opening, "a opens to b")?;
        send(harness, &state, Ingress::Pod(port_a), &opening, "a's next packet")?;
        state.policy.connections =
            vec![oxsdn_model::policy::Flow { protocol: IPPROTO_TCP, src: (a, 40000), dst: (b, 80) }];
        send(harness, &state, Ingress::Pod(port_b), &reply, "b's reply")?;
        // b now accepts c only: a's next packet is judged again, and dropped.
        state.policy.policies = vec![accepting("c")];
        harness.fill_policy(&state)?;
        send(harness, &state, Ingress::Pod(port_a), &opening, "a's packet after b's policy changed")?;
        send(harness, &state, Ingress::Pod(port_b), &reply, "b's reply after its policy changed")?;
        // And accepts a again: delivered.
        state.policy.policies = vec![accepting("a")];
        harness.fill_policy(&state)?;
        send(harness, &state, Ingress::Pod(port_a), &opening, "a's packet once b accepts it again")?;
        Ok(found)
    })?;
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    Ok(())
}

/// Tracked connections to an endpoint that left its service, each kind, with drain
/// windows on the kernel's clock: TCP keeps the endpoint while the window is open and
/// chooses again once it ended; UDP chooses again at once; new connections never pick
/// it; its replies get the service address back. The model says so, and the programs
/// agree.
#[test]
fn draining_endpoints() -> Result<()> {
    const SECOND: u64 = 1_000_000_000;
    let disagreements = in_sandbox("diffdrain", |harness| {
        let mut rng = StdRng::seed_from_u64(1);
        let mut state = generate::state(&mut rng, &Ports { ifindexes: &harness.ports });
        state.mode = Mode::Multitenant;
        let local = state.node.local;
        let (client, serving, leaving, service) =
            (local.nth(2), local.nth(3), local.nth(4), state.node.service.nth(10));
        let [client_port, serving_port, leaving_port] = [harness.ports[0], harness.ports[1], harness.ports[2]];
        state.pods = [(client, client_port), (serving, serving_port), (leaving, leaving_port)]
            .map(|(ip, ifindex)| Pod { ip, ifindex, project: 1 })
            .to_vec();
        state.projects.insert(1, 10);
        let ports =
            [IPPROTO_TCP, IPPROTO_UDP].map(|protocol| ModelServicePort { port: 80, protocol, target_port: 8080 });
        state.services = vec![Service {
            cluster_ip: service,
            project: 1,
            ports: ports.to_vec(),
            endpoints: vec![serving],
            draining: vec![],
        }];
        state.fragments.clear();
        let mut found = Vec::new();
        for (protocol, proto) in [(IPPROTO_TCP, Proto::Tcp), (IPPROTO_UDP, Proto::Udp)] {
            for (window, until) in [("open", state.now + 20 * SECOND), ("ended", state.now - SECOND)] {
                state.services[0].draining = vec![Draining { ip: leaving, until }];
                state.connections = vec![Connection {
                    protocol,
                    client: (client, 40000),
                    service: (service, 80),
                    endpoint: (leaving, 8080),
                }];
                harness.load(&state)?;
                let kept = protocol == IPPROTO_TCP && window == "open";
                let name = format!("{proto:?} connection, window {window}");
                let cases = [
                    (
                        Ingress::Pod(client_port),
                        Packet::new(proto, client, service).ports(40000, 80),
                        if kept { leaving_port } else { serving_port },
                    ),
                    (Ingress::Pod(client_port), Packet::new(proto, client, service).ports(40001, 80), serving_port),
                    (Ingress::Pod(leaving_port), Packet::new(proto, leaving, client).ports(8080, 40000), client_port),
                ];
                for (index, (ingress, packet, to)) in cases.into_iter().enumerate() {
                    let case = Case { ingress, frame: packet.frame() };
                    let expected = pipeline(&state, case.ingress, &case.frame);
                    assert!(
                        matches!(&expected, Verdict::Deliver(d) if d.out == Out::Pod(to)),
                        "{name}, packet {index}: the model's verdict {expected:?}"
                    );
                    found.extend(harness.check(&state, &case, &format!("{name}, packet {index}"))?);
                }
            }
        }
        Ok(found)
    })?;
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    Ok(())
}

/// The connection tables never evict: full, they refuse a new connection (counted as
/// table 61's TABLE_FULL) and every connection they hold keeps both halves. (LRU tables
/// pushed an old entry out instead, one half of a connection at a time, and that
/// connection broke.)
#[test]
fn full_connection_tables_refuse_new_connections_and_keep_every_entry() -> Result<()> {
    let disagreements = in_sandbox("diffct", |harness| {
        let mut rng = StdRng::seed_from_u64(2);
        let mut state = generate::state(&mut rng, &Ports { ifindexes: &harness.ports });
        state.mode = Mode::Multitenant;
        let local = state.node.local;
        let (client, endpoint, service) = (local.nth(2), local.nth(3), state.node.service.nth(10));
        state.pods = vec![
            Pod { ip: client, ifindex: harness.ports[0], project: 1 },
            Pod { ip: endpoint, ifindex: harness.ports[1], project: 1 },
        ];
        state.projects.insert(1, 10);
        let port = ModelServicePort { port: 80, protocol: IPPROTO_TCP, target_port: 8080 };
        state.services = vec![Service {
            cluster_ip: service,
            project: 1,
            ports: vec![port],
            endpoints: vec![endpoint],
            draining: vec![],
        }];
        state.connections.clear();
        state.fragments.clear();
        harness.load(&state)?;
        // Fill both tables with connections of other clients (outside the cluster, as
        // routed to the node), then try a new one.
        let gateway = state.node.gateway();
        let mut held = Vec::new();
        for i in 0..oxsdn_common::MAX_CONNECTIONS {
            let other = Ipv4Addr::from(u32::from(Ipv4Addr::new(192, 0, 2, 0)) + (i >> 16));
            let c = entries::Connection {
                protocol: IPPROTO_TCP,
                client: (other, (i & 0xffff) as u16),
                service: (service, 80),
                endpoint: (endpoint, 8080),
                service_id: 1,
                owner: oxsdn_common::conntrack::TUNNEL_OWNER,
                last_seen: monotonic_ns(),
            };
            let ((flow, forward), (reverse, reply)) = entries::connection_entries(&c, gateway);
            harness.maps.ct_forward.insert(flow, forward, 0)?;
            harness.maps.ct_reverse.insert(reverse, reply, 0)?;
            if i % 4096 == 0 {
                held.push((flow, reverse));
            }
        }
        let frame = Packet::new(Proto::Tcp, client, service).ports(40000, 80).frame();
        let run = harness.live.run(ingress(Ingress::Pod(harness.ports[0])), &frame, 1)?;
        let mut found = Vec::new();
        if run.retval != TC_ACT_SHOT {
            found.push(format!(
                "a new connection into full tables was {}, not refused",
                trace::verdict_name(run.retval)
            ));
        }
        for (flow, reverse) in &held {
            if harness.maps.ct_forward.get(flow, 0).is_err() || harness.maps.ct_reverse.get(reverse, 0).is_err() {
                found.push(format!("connection {flow:?} lost a half"));
            }
        }
        let counted = harness.maps.ct_forward.keys().count() as u32;
        if counted != oxsdn_common::MAX_CONNECTIONS {
            found.push(format!("{counted} connections in the table, not {}", oxsdn_common::MAX_CONNECTIONS));
        }
        clear_tracking(&mut harness.maps)?;
        Ok(found)
    })?;
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    Ok(())
}

/// A frame written in hex with spaces, with placeholders for addresses.
fn from_hex(frame: &str, names: &[(&str, Ipv4Addr)]) -> Vec<u8> {
    let text = names.iter().fold(frame.replace(' ', ""), |text, (name, ip)| text.replace(name, &hex(&ip.octets())));
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
}

/// Runs `f` with the programs loaded in a private pin directory, on a thread inside a
/// network namespace of its own with veths for pod ports (a test run's skb lives on a
/// device there: loopback, or the pod port the live `from_pod` reads); both go away
/// afterwards.
fn in_sandbox<T: Send + 'static>(name: &str, f: impl FnOnce(&mut Harness) -> Result<T> + Send + 'static) -> Result<T> {
    let prefix = format!("oxt{}-{name}", std::process::id());
    let netns = Netns::create(&prefix)?;
    let names: Vec<String> = (0..POD_PORT_VETHS).map(|i| format!("port{i}")).collect();
    for name in &names {
        netns.ip(&["link", "add", name, "type", "veth", "peer", "name", &format!("{name}-peer")])?;
    }
    let pins = PinDir(PathBuf::from("/sys/fs/bpf").join(&prefix));
    let pin_dir = pins.0.clone();
    netns.enter(move || {
        let ports =
            names.iter().map(|n| Ok(nix::net::if_::if_nametoindex(n.as_str())?)).collect::<Result<Vec<u32>>>()?;
        f(&mut Harness::load_programs(&pin_dir, ports)?)
    })?
}

/// Removes the test's bpffs directory, also when it fails.
struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Report {
    cases: usize,
    /// What the model said of the cases run: how many of each kind (`outcome`).
    outcomes: BTreeMap<String, usize>,
    /// Frames BPF_PROG_TEST_RUN does not take (not run, not counted in `cases`).
    refused: usize,
    disagreements: Vec<String>,
}

/// The programs twice: in trace mode, which reports its decision, and as they run
/// attached (only the tunnel key comes from the context), which report their verdict
/// and frame and write the connection and fragment tables as they go.
struct Harness {
    maps: NodeMaps,
    tracer: Tracer,
    live: TestPrograms,
    /// ifindexes of the namespace's pod-port veths: the live `from_pod` reads its
    /// ingress port from the skb's device.
    ports: Vec<u32>,
    /// The state's rules as `dump-flows` shows them.
    flows: Flows,
    /// What the policy engine's compilation wrote into the maps, and its numbering: each
    /// state's policies are written as the difference from the previous state's, as the
    /// agent writes a change.
    policy_written: Compiled,
    numbering: Numbering,
}

impl Harness {
    fn load_programs(pin_dir: &Path, ports: Vec<u32>) -> Result<Self> {
        Programs::load(pin_dir).context("loading the programs")?;
        Ok(Harness {
            maps: NodeMaps::open(pin_dir)?,
            tracer: Tracer::load(pin_dir).context("loading the programs in trace mode")?,
            live: TestPrograms::load(pin_dir, MODE_TEST_INPUT).context("loading the programs for test runs")?,
            ports,
            flows: Flows::default(),
            policy_written: Compiled::default(),
            numbering: Numbering::default(),
        })
    }

    /// Replaces what the maps hold with `state`.
    fn load(&mut self, state: &State) -> Result<()> {
        clear(&mut self.maps)?;
        fill(&mut self.maps, state)?;
        self.fill_policy(state)?;
        self.flows = Flows::of(&self.maps)?;
        Ok(())
    }

    /// The state's namespaces, pods and NetworkPolicies through the policy engine's
    /// compilation, written as the engine writes a change.
    fn fill_policy(&mut self, state: &State) -> Result<()> {
        let (namespaces, pods, policies) = policy_inputs(state);
        let compiled = compile(&mut self.numbering, &namespaces, &pods, &policies);
        engine::write(&mut self.maps, &self.policy_written, &compiled)?;
        self.policy_written = compiled;
        Ok(())
    }

    /// Puts the connection and fragment tables back as `state` has them, after a live
    /// run that may have added to them.
    fn reset_tracking(&mut self, state: &State) -> Result<()> {
        clear_tracking(&mut self.maps)?;
        fill_tracking(&mut self.maps, state)
    }

    /// `cases` random frames, `CASES_PER_STATE` per random state.
    fn random(&mut self, seed: u64, cases: usize) -> Result<Report> {
        let pod_ports = self.ports.clone();
        let ports = Ports { ifindexes: &pod_ports };
        let mut report = Report { cases: 0, outcomes: Default::default(), refused: 0, disagreements: Vec::new() };
        let mut state_seed = seed;
        while report.cases < cases && report.disagreements.len() < MAX_REPORTED {
            let mut rng = StdRng::seed_from_u64(state_seed);
            let state = generate::state(&mut rng, &ports);
            self.load(&state)?;
            for index in 0..CASES_PER_STATE.min(cases - report.cases) {
                let case = generate::case(&mut rng, &state, &ports);
                if refused_by_test_run(&case.frame) {
                    report.refused += 1;
                    continue;
                }
                report.cases += 1;
                *report
                    .outcomes
                    .entry(format!(
                        "{:?}: {}",
                        state.mode,
                        outcome(&pipeline(&state, case.ingress, &case.frame), &case.frame)
                    ))
                    .or_default() += 1;
                report.disagreements.extend(self.check(&state, &case, &format!("seed {state_seed} case {index}"))?);
            }
            state_seed = state_seed.wrapping_add(1);
        }
        Ok(report)
    }

    /// One frame through the model and the programs: descriptions of how they
    /// disagree, if they do.
    fn check(&mut self, state: &State, case: &Case, name: &str) -> Result<Vec<String>> {
        let expected = pipeline(state, case.ingress, &case.frame);
        let context =
            format!("  ingress {:?}\n  frame {}\n  model {}", case.ingress, hex(&case.frame), describe(&expected));
        let actual = match self.tracer.trace(ingress(case.ingress), &case.frame) {
            Ok(actual) => actual,
            Err(e) => return Ok(vec![format!("{name}: the test run failed: {e:#}\n{context}")]),
        };
        if let Err(why) = agree(&expected, &actual) {
            return Ok(vec![format!(
                "{name}: {why}\n{context}\n  ebpf {} {:?} hops {:?}\n  state {state:?}",
                trace::verdict_name(actual.verdict),
                actual.output,
                actual.hops,
            )]);
        }
        let mut found = Vec::new();
        if let Err(why) = self.flows.check(case, &actual, state.mode) {
            found.push(format!(
                "{name}: dump-flows: {why}\n{context}\n  ebpf hops {:?} reg0 {:?} reg1 {:?}\n  state {state:?}",
                actual.hops, actual.reg0, actual.reg1,
            ));
        }
        let live = self.live.run(ingress(case.ingress), &case.frame, 1);
        if may_track(state, &case.frame) || state.mode == Mode::NetworkPolicy {
            self.reset_tracking(state)?;
        }
        let live = match live {
            Ok(live) => live,
            Err(e) => {
                found.push(format!("{name}: the live test run failed: {e:#}\n{context}"));
                return Ok(found);
            }
        };
        found.extend(agree_live(&expected, &live).err().map(|why| {
            format!(
                "{name}: live programs: {why}\n{context}\n  ebpf {} {}\n  state {state:?}",
                trace::verdict_name(live.retval),
                hex(&live.frame),
            )
        }));
        Ok(found)
    }
}

/// A node's rules as `dump-flows` shows them (placeholders filled in from the maps), with
/// their match texts parsed.
#[derive(Default)]
struct Flows {
    flows: Vec<ParsedFlow>,
    by_id: HashMap<RuleRef, usize>,
}

struct ParsedFlow {
    flow: Flow,
    text: RuleText,
    /// False for a pod's or service's rule whose project has no VNID: `dump-flows` shows
    /// it with `actions=drop`, and the programs take its packets as matching no rule of
    /// that pod or service (the table's priority-0 drop counts them).
    in_effect: bool,
}

impl Flows {
    fn of(maps: &NodeMaps) -> Result<Self> {
        let mut flows = Flows::default();
        // Pod ports by ifindex: the rule texts say `in_port=<ifindex>` for them.
        for flow in flows::collect(maps, |ifindex| ifindex.to_string())? {
            let text = RuleText::parse(&flow.matches).map_err(anyhow::Error::msg)?;
            let in_effect = !(flow.id.declaration().actions.contains("{VNID}") && flow.actions == "drop");
            flows.by_id.insert(flow.id, flows.flows.len());
            flows.flows.push(ParsedFlow { flow, text, in_effect });
        }
        Ok(flows)
    }

    /// Whether the rules a trace went through are the ones their texts select, as OVS
    /// would: each matches the frame (in what its text evaluates), it is the only one
    /// counted in its table, and no rule of higher priority in the table whose text is
    /// fully evaluated matches.
    fn check(&self, case: &Case, trace: &Trace, mode: Mode) -> Result<(), String> {
        let in_port = match case.ingress {
            Ingress::Pod(ifindex) => ifindex.to_string(),
            Ingress::Tun0 => "tun0".into(),
            Ingress::Tunnel { .. } => "vxlan0".into(),
        };
        let tun_src = match case.ingress {
            Ingress::Tunnel { src, .. } => src,
            _ => Ipv4Addr::UNSPECIFIED,
        };
        // The programs traced are the TC ones: a prefilter's (`hook=xdp`) rule never matches.
        let mode = match mode {
            Mode::Multitenant => "multitenant",
            Mode::Subnet => "subnet",
            Mode::NetworkPolicy => "networkpolicy",
        };
        let context = rule_text::Context {
            in_port: &in_port,
            tun_src,
            reg0: trace.reg0,
            reg1: trace.reg1,
            configured: true,
            xdp: false,
            mode,
        };
        let packet = rule_text::Packet::new(&case.frame, context);
        // The tables after the translation (table 61's, or a reply's `ct(nat)`) see a
        // service's packet as translated, as OVS's tables after ct(nat) do.
        let translated_frame = trace.translation.map(|t| translated(&case.frame, &t));
        let translated = translated_frame.as_deref().map(|frame| rule_text::Packet::new(frame, context));
        // Tables passed, and whether the rule counted there resubmits to it (table 80's
        // egress rules go on to the ingress rules, as OVS's `resubmit`).
        let mut tables: HashMap<u8, bool> = HashMap::new();
        let mut nat_done = false;
        for hop in &trace.hops {
            let hopped = &self.flows[*self.by_id.get(hop).ok_or_else(|| format!("{hop:?}: no such rule"))?];
            let (table, priority) = (hopped.flow.table, hopped.flow.priority);
            let packet = match &translated {
                Some(translated) if nat_done => translated,
                _ => &packet,
            };
            nat_done |= table == 61 || hopped.flow.actions.contains("ct(nat)");
            if !hopped.in_effect {
                return Err(format!("{} counted: its project has no VNID", describe_flow(&hopped.flow)));
            }
            if tables.insert(table, hopped.flow.actions.contains("resubmit")) == Some(false) {
                return Err(format!("{} counted after another rule of table {table}", describe_flow(&hopped.flow)));
            }
            if !hopped.text.matches(packet)? {
                return Err(format!("{} counted, but its text does not match", describe_flow(&hopped.flow)));
            }
            let above = self.flows.iter().filter(|f| {
                f.flow.table == table && f.flow.priority > priority && f.in_effect && f.text.fully_checked()
            });
            for f in above {
                if f.text.matches(packet)? {
                    return Err(format!(
                        "{} counted, but {} matches too",
                        describe_flow(&hopped.flow),
                        describe_flow(&f.flow)
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A frame with a service translation's addresses and ports (checksums left as they
/// are: the rule texts do not read them).
fn translated(frame: &[u8], t: &trace::Translation) -> Vec<u8> {
    let mut out = frame.to_vec();
    if let L3::Ipv4(ip) = packet::parse(frame) {
        out[packet::ETH_LEN + 12..packet::ETH_LEN + 16].copy_from_slice(&t.src.octets());
        out[packet::ETH_LEN + 16..packet::ETH_LEN + 20].copy_from_slice(&t.dst.octets());
        if ip.ports.is_some() {
            out[ip.l4_offset..ip.l4_offset + 2].copy_from_slice(&t.sport.to_be_bytes());
            out[ip.l4_offset + 2..ip.l4_offset + 4].copy_from_slice(&t.dport.to_be_bytes());
        }
    }
    out
}

fn describe_flow(flow: &Flow) -> String {
    format!("table={} priority={} {:?} ({:?})", flow.table, flow.priority, flow.matches, flow.id)
}

/// BPF_PROG_TEST_RUN refuses (EINVAL) an IPv4 or IPv6 frame too short for the network
/// header its EtherType announces.
fn refused_by_test_run(frame: &[u8]) -> bool {
    let network_header = match u16::from_be_bytes([frame[12], frame[13]]) {
        0x0800 => 20,
        0x86dd => 40,
        _ => 0,
    };
    frame.len() < 14 + network_header
}

fn ingress(ingress: Ingress) -> trace::Ingress {
    match ingress {
        Ingress::Pod(in_port) => trace::Ingress::Pod { in_port },
        Ingress::Tun0 => trace::Ingress::Tun0,
        Ingress::Tunnel { src, vni } => trace::Ingress::Tunnel { src, vni },
    }
}

/// Whether what the programs did is what the model says (one of, for a new service
/// connection).
fn agree(expected: &Verdict, actual: &Trace) -> Result<(), String> {
    match expected {
        Verdict::AnyOf(choices) => {
            if choices.iter().any(|c| agree(c, actual).is_ok()) {
                Ok(())
            } else {
                Err("none of the model's endpoint choices".into())
            }
        }
        Verdict::Drop(_) if actual.verdict == TC_ACT_SHOT => Ok(()),
        Verdict::Drop(why) => Err(format!("model drops ({why}), eBPF does not")),
        Verdict::Deliver(d) => {
            if actual.verdict != TC_ACT_REDIRECT {
                return Err(format!("model delivers, eBPF returns {}", trace::verdict_name(actual.verdict)));
            }
            let out = match actual.output {
                Some(Output::Pod { ifindex, .. }) => Out::Pod(ifindex),
                Some(Output::Tun0 { ifindex }) if ifindex == TUN0_IFINDEX => Out::Tun0,
                Some(Output::Tunnel { ifindex, node_ip, vni }) if ifindex == VXLAN_IFINDEX => {
                    Out::Tunnel { node_ip, vni }
                }
                other => return Err(format!("eBPF redirects with output {other:?}")),
            };
            if out != d.out {
                return Err(format!("output: model {:?}, eBPF {out:?}", d.out));
            }
            if actual.frame != d.frame {
                return Err(format!("frames differ: eBPF {}", hex(&actual.frame)));
            }
            Ok(())
        }
    }
}

/// The kind of a verdict, for the run's summary.
fn outcome(v: &Verdict, frame: &[u8]) -> &'static str {
    match v {
        Verdict::Drop(why) if why.starts_with("T80 ") && *why != "T80 isolated" => "dropped by policies",
        Verdict::Drop(_) => "dropped",
        Verdict::AnyOf(_) => "new service connection",
        Verdict::Deliver(d) if d.frame != frame => "translated",
        Verdict::Deliver(d) => match d.out {
            Out::Pod(_) => "to a pod",
            Out::Tun0 => "to tun0",
            Out::Tunnel { .. } => "to the tunnel",
        },
    }
}

/// Whether the live programs may have recorded something for this frame: a new
/// service connection, or the ports of a first fragment. (Emptying the tables after
/// every frame would cost a walk over all their buckets.)
fn may_track(state: &State, frame: &[u8]) -> bool {
    const MORE_FRAGMENTS: u8 = 0x20;
    match packet::parse(frame) {
        L3::Ipv4(ip) => state.node.service.contains(ip.dst) || frame[packet::ETH_LEN + 6] & MORE_FRAGMENTS != 0,
        _ => false,
    }
}

/// The same for the live programs, which show only their verdict and the frame.
fn agree_live(expected: &Verdict, actual: &TestRun) -> Result<(), String> {
    match expected {
        Verdict::AnyOf(choices) if choices.iter().any(|c| agree_live(c, actual).is_ok()) => Ok(()),
        Verdict::AnyOf(_) => Err("none of the model's endpoint choices".into()),
        Verdict::Drop(_) if actual.retval == TC_ACT_SHOT => Ok(()),
        Verdict::Drop(why) => Err(format!("model drops ({why}), eBPF does not")),
        Verdict::Deliver(d) if actual.retval != TC_ACT_REDIRECT => Err(format!("model delivers to {:?}", d.out)),
        Verdict::Deliver(d) if actual.frame != d.frame => Err(format!("frames differ (model: {:?})", d.out)),
        Verdict::Deliver(_) => Ok(()),
    }
}

fn describe(v: &Verdict) -> String {
    match v {
        Verdict::Drop(why) => format!("drop ({why})"),
        Verdict::Deliver(Delivery { out, frame }) => format!("{out:?} {}", hex(frame)),
        Verdict::AnyOf(choices) => format!("any of [{}]", choices.iter().map(describe).collect::<Vec<_>>().join(", ")),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Removes every entry of each hash map given.
macro_rules! empty {
    ($($map:expr),*) => {$(
        let keys = $map.keys().collect::<Result<Vec<_>, _>>()?;
        for key in keys {
            $map.remove(&key)?;
        }
    )*};
}

/// Empties every map a state fills.
fn clear(maps: &mut NodeMaps) -> Result<()> {
    for slot in 0..MAX_POD_SLOTS {
        maps.pods.set(slot, PodEntry::default(), 0)?;
        maps.endpoint_pods.set(slot, 0, 0)?;
    }
    for slot in 0..PROJECT_SLOTS_USED {
        maps.projects.set(slot, ProjectEntry::default(), 0)?;
    }
    empty!(maps.node_ips, maps.services, maps.service_ips, maps.endpoints, maps.endpoint_set, maps.draining);
    let subnets = maps.remote_subnets.keys().collect::<Result<Vec<_>, _>>()?;
    for key in subnets {
        maps.remote_subnets.remove(&key)?;
    }
    clear_tracking(maps)
}

fn clear_tracking(maps: &mut NodeMaps) -> Result<()> {
    empty!(maps.ct_forward, maps.ct_reverse, maps.fragments, maps.policy_ct);
    Ok(())
}

/// Namespaces' labels, pods, policies: what the policy compilation takes.
type PolicyInputs = (BTreeMap<String, BTreeMap<String, String>>, Vec<PodView>, Vec<NetworkPolicyRecord>);

/// What the agent's policy engine holds for a state: namespaces' labels, every pod of
/// the cluster with its labels and named ports (this node's with their slot), and the
/// NetworkPolicies (numbered in order).
fn policy_inputs(state: &State) -> PolicyInputs {
    let subnet = network(state.node.local);
    let pods = state
        .policy
        .pods
        .iter()
        .map(|(ip, info)| PodView {
            namespace: info.namespace.clone(),
            ip: *ip,
            local_slot: state.pod_by_ip(*ip).map(|_| entries::local_pod_slot(subnet, *ip)),
            labels: info.labels.clone(),
            ports: info
                .ports
                .iter()
                .map(|p| NamedPort {
                    name: p.name.clone(),
                    port: p.port,
                    protocol: match p.protocol {
                        IPPROTO_UDP => "UDP",
                        IPPROTO_SCTP => "SCTP",
                        _ => "TCP",
                    }
                    .into(),
                })
                .collect(),
        })
        .collect();
    let policies = state
        .policy
        .policies
        .iter()
        .enumerate()
        .map(|(i, p)| NetworkPolicyRecord {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            id: i as u32 + 1,
            spec: p.spec.clone(),
        })
        .collect();
    (state.policy.namespaces.clone(), pods, policies)
}

/// Project slots the states use: a project's slot is its id (ids are small here).
const PROJECT_SLOTS_USED: u32 = 16;

fn project_ref(id: u32) -> ProjectRef {
    assert!(id < PROJECT_SLOTS_USED && PROJECT_SLOTS_USED <= MAX_PROJECT_SLOTS, "project id {id}");
    ProjectRef { slot: id, id }
}

fn network(net: oxsdn_model::state::Net) -> Ipv4Network {
    Ipv4Network::new(net.addr, net.prefix).expect("a model network is valid")
}

/// Writes a model state into the maps, with the entries the agent writes
/// (`oxsdn_dataplane::entries`). Drain windows end as long after the kernel's clock now
/// as the model's end after `state.now`.
fn fill(maps: &mut NodeMaps, state: &State) -> Result<()> {
    let node = &state.node;
    let clock_now = monotonic_ns();
    let networks =
        Networks { cluster: network(node.cluster), service: network(node.service), vxlan_port: node.vxlan_port };
    let addresses = NodeAddresses {
        subnet: network(node.local),
        gateway: node.gateway(),
        node_ip: node.node_ip,
        tun0_ifindex: TUN0_IFINDEX,
        vxlan_ifindex: VXLAN_IFINDEX,
        // Test runs have no underlay device: frames to other nodes take vxlan0.
        underlay_ifindex: 0,
    };
    let settings = NodeSettings {
        mode: match state.mode {
            Mode::Multitenant => mode::MULTITENANT,
            Mode::Subnet => mode::SUBNET,
            Mode::NetworkPolicy => mode::NETWORKPOLICY,
        },
        ..NodeSettings::default()
    };
    maps.config.set(0, entries::node_config(&networks, &addresses, &settings), 0)?;
    for (project, vnid) in &state.projects {
        maps.projects.set(project_ref(*project).slot, entries::project_entry(*project, *vnid), 0)?;
    }
    for pod in &state.pods {
        let (slot, entry) = entries::pod_entry(addresses.subnet, pod.ip, pod.ifindex, project_ref(pod.project));
        maps.pods.set(slot, entry, 0)?;
        if state.is_endpoint(pod.ip) {
            if let Some((slot, value)) = entries::endpoint_pod_entry(addresses.subnet, pod.ip) {
                maps.endpoint_pods.set(slot, value, 0)?;
            }
        }
    }
    for (slot, remote) in state.remote_nodes.iter().enumerate() {
        let (subnet, node_ip, value) =
            entries::remote_node_entries(network(remote.subnet), remote.node_ip, slot as u32);
        maps.node_ips.insert(node_ip, value, 0)?;
        maps.remote_subnets.insert(&subnet, value, 0)?;
    }
    let mut slot = 0;
    for (index, service) in state.services.iter().enumerate() {
        let id = index as u32 + 1;
        let project = project_ref(service.project);
        maps.service_ips.insert(ip_key(service.cluster_ip), entries::service_ip(project, slot), 0)?;
        slot += 1;
        for port in &service.ports {
            let key = entries::service_key(service.cluster_ip, port.port, port.protocol);
            let value = entries::service_port(id, project, service.endpoints.len() as u32, slot, port.target_port);
            maps.services.insert(key, value, 0)?;
            slot += 1;
        }
        for (i, endpoint) in service.endpoints.iter().enumerate() {
            maps.endpoints.insert(entries::endpoint_key(id, i as u32), ip_key(*endpoint), 0)?;
            maps.endpoint_set.insert(entries::endpoint_member(id, *endpoint), 1, 0)?;
        }
        for d in &service.draining {
            let until = (clock_now + d.until).saturating_sub(state.now);
            maps.draining.insert(entries::endpoint_member(id, d.ip), until, 0)?;
        }
    }
    fill_tracking(maps, state)
}

/// The tracked connections and fragments of a state.
fn fill_tracking(maps: &mut NodeMaps, state: &State) -> Result<()> {
    for c in &state.connections {
        let service =
            state.services.iter().position(|s| s.cluster_ip == c.service.0).context("connection to no service")?;
        let connection = entries::Connection {
            protocol: c.protocol,
            client: c.client,
            service: c.service,
            endpoint: c.endpoint,
            service_id: service as u32 + 1,
            owner: oxsdn_common::conntrack::HOST_OWNER,
            last_seen: monotonic_ns(),
        };
        let ((flow, forward), (reverse, reply)) = entries::connection_entries(&connection, state.node.gateway());
        maps.ct_forward.insert(flow, forward, 0)?;
        maps.ct_reverse.insert(reverse, reply, 0)?;
    }
    for f in &state.fragments {
        let (key, ports) = entries::fragment_entry(f.src, f.dst, f.id, f.protocol, f.ports);
        maps.fragments.insert(key, ports, 0)?;
    }
    for flow in &state.policy.connections {
        let key = FlowKey {
            src: ip_key(flow.src.0),
            dst: ip_key(flow.dst.0),
            sport: flow.src.1,
            dport: flow.dst.1,
            proto: flow.protocol,
            _pad: [0; 3],
        };
        let (key, opened) = connection_key(&key);
        let connection = match maps.policy_ct.get(&key, 0) {
            // The same connection opened from its other end too.
            Ok(c) if c.flags & OPENED_FROM_DST != opened => PolicyConnection { flags: c.flags | BOTH_WAYS, ..c },
            _ => PolicyConnection {
                last_seen: monotonic_ns(),
                owner: oxsdn_common::conntrack::HOST_OWNER,
                flags: opened,
                ..PolicyConnection::default()
            },
        };
        maps.policy_ct.insert(key, connection, 0)?;
    }
    Ok(())
}
