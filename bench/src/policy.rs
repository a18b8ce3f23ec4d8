//! NetworkPolicy figures (issue 13) on one node's maps: what 10,000 pods in 100
//! namespaces with 1,000 policies compile to (entries and bytes of the policy maps, the
//! time to compile and to write them), and what a packet on the same-node path costs
//! with those policies against none; and the time from `apply` to enforced on every
//! node of a 3-node cluster (`policy_enforcement`).
//!
//! The programs are loaded into a private bpffs directory inside a network namespace of
//! their own, with two pods (veths there, for the live programs' ingress device). The
//! policies go through the policy engine's own compilation and write
//! (`oxsdn_dataplane::policy`), as the agent applies a change; the packet is timed with
//! BPF_PROG_TEST_RUN as in `cost.rs`, the maps alternating between the two states round
//! by round so that drift hits both alike.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{ensure, Context, Result};
use ipnetwork::Ipv4Network;
use k8s_openapi::{
    api::networking::v1::{
        IPBlock, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
        NetworkPolicySpec,
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};
use oxsdn_common::{mode, trace::MODE_TEST_INPUT};
use oxsdn_controller::policy::{NamedPort, NetworkPolicyRecord, NAMESPACE_NAME_LABEL};
use oxsdn_dataplane::{
    entries::{self, Networks, NodeAddresses, NodeSettings, ProjectRef},
    loader::Programs,
    maps::NodeMaps,
    policy::{
        compile::{compile, Compiled, Numbering, PodView},
        write,
    },
    tracer::{verdict_name, Ingress, Output, Packet, Proto, TestPrograms, Tracer, TC_ACT_REDIRECT},
};
use oxsdn_tests::netns::Netns;
use serde_json::{json, Value};

use crate::measure::Stats;

/// What is loaded (options of the policy figures).
#[derive(Clone, Debug, clap::Args)]
pub struct PolicyLoad {
    #[arg(long = "policy-namespaces", id = "policy_namespaces", default_value_t = 100)]
    pub namespaces: usize,
    /// Pods of the cluster, spread evenly over the namespaces (two of them on this node).
    #[arg(long = "policy-pods", id = "policy_pods", default_value_t = 10_000)]
    pub pods: usize,
    /// NetworkPolicies, spread evenly over the namespaces.
    #[arg(long = "policy-policies", id = "policy_policies", default_value_t = 1_000)]
    pub policies: usize,
    /// Of the pods, this node's (the first ones: a node judges its own pods' policies).
    #[arg(long = "policy-local-pods", id = "policy_local_pods", default_value_t = 100)]
    pub local_pods: usize,
}

impl PolicyLoad {
    pub fn smoke() -> Self {
        PolicyLoad { namespaces: 4, pods: 40, policies: 8, local_pods: 4 }
    }
}

/// The goal for what 1,000 policies add to the same-node path.
const GOAL_EXTRA_NS: f64 = 60.0;
const APPS: usize = 10;
const TIERS: usize = 3;
const TEAMS: usize = 10;
const HTTP: u16 = 8080;

fn labels(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

fn selector(pairs: &[(&str, String)]) -> Option<LabelSelector> {
    Some(LabelSelector { match_labels: Some(labels(pairs)), ..Default::default() })
}

/// Namespaces' labels, pods, policies: what the policy compilation takes.
type PolicyInputs = (BTreeMap<String, BTreeMap<String, String>>, Vec<PodView>, Vec<NetworkPolicyRecord>);

/// A cluster's namespaces (labelled by team), pods (app and tier labels, a named port)
/// and policies: each selects one app of its namespace, accepts the next app of its
/// namespace and another app of its team's namespaces on port 80 and the named port,
/// and every other one also limits egress to DNS of one app of another team's
/// namespaces and an address block.
/// Pods 0 and 1 are this node's: pod 1 (app 0) is isolated (ingress and egress) and
/// accepts pod 0 (app 1, isolated for ingress).
fn cluster(load: &PolicyLoad, cluster: Ipv4Network, local: Ipv4Network) -> PolicyInputs {
    let namespace = |i: usize| format!("ns-{i}");
    let namespaces = (0..load.namespaces)
        .map(|i| {
            let mut l = labels(&[("team", format!("t{}", i % TEAMS))]);
            l.insert(NAMESPACE_NAME_LABEL.into(), namespace(i));
            (namespace(i), l)
        })
        .collect();
    let per_namespace = load.pods.div_ceil(load.namespaces);
    // This node's pods: 0 and 1 (the timed path), then one in every `stride`, spread
    // over the namespaces as a scheduler spreads them.
    let stride = (load.pods / load.local_pods.max(1)).max(1);
    let local_index = |i: usize| match i {
        0 | 1 => Some(i),
        _ if i.is_multiple_of(stride) && i / stride < load.local_pods => Some(1 + i / stride),
        _ => None,
    };
    let pods = (0..load.pods)
        .map(|i| {
            let (ns, j) = (i / per_namespace, i % per_namespace);
            // This node's pods in its subnet; the others past it.
            let ip = match local_index(i) {
                Some(n) => local.nth(2 + n as u32).unwrap(),
                None => cluster.nth(1024 + i as u32).unwrap(),
            };
            PodView {
                namespace: namespace(ns),
                ip,
                local_slot: local_index(i).map(|_| entries::local_pod_slot(local, ip)),
                labels: labels(&[
                    ("app", format!("a{}", (APPS + 1 - j % APPS) % APPS)),
                    ("tier", format!("{}", j % TIERS)),
                ]),
                ports: vec![NamedPort { name: "http".into(), port: HTTP, protocol: "TCP".into() }],
            }
        })
        .collect();
    let per_namespace = load.policies.div_ceil(load.namespaces);
    let policies = (0..load.policies)
        .map(|i| {
            let (ns, k) = (i / per_namespace, i % per_namespace);
            let tcp = |port| NetworkPolicyPort { protocol: Some("TCP".into()), port: Some(port), end_port: None };
            let ingress = NetworkPolicyIngressRule {
                from: Some(vec![
                    NetworkPolicyPeer {
                        pod_selector: selector(&[("app", format!("a{}", (k + 1) % APPS))]),
                        ..Default::default()
                    },
                    NetworkPolicyPeer {
                        namespace_selector: selector(&[("team", format!("t{}", k % TEAMS))]),
                        pod_selector: selector(&[("app", format!("a{}", (k + 2) % APPS))]),
                        ..Default::default()
                    },
                ]),
                ports: Some(vec![tcp(IntOrString::Int(80)), tcp(IntOrString::String("http".into()))]),
            };
            let egress = NetworkPolicyEgressRule {
                to: Some(vec![
                    NetworkPolicyPeer {
                        namespace_selector: selector(&[("team", format!("t{}", (k + 1) % TEAMS))]),
                        pod_selector: selector(&[("app", format!("a{}", (k + 3) % APPS))]),
                        ..Default::default()
                    },
                    NetworkPolicyPeer {
                        ip_block: Some(IPBlock {
                            cidr: "192.0.2.0/24".into(),
                            except: Some(vec!["192.0.2.128/25".into()]),
                        }),
                        ..Default::default()
                    },
                ]),
                ports: Some(vec![NetworkPolicyPort {
                    protocol: Some("UDP".into()),
                    port: Some(IntOrString::Int(53)),
                    end_port: None,
                }]),
            };
            let with_egress = k % 2 == 0;
            NetworkPolicyRecord {
                namespace: namespace(ns),
                name: format!("p{k}"),
                id: i as u32 + 1,
                spec: NetworkPolicySpec {
                    pod_selector: selector(&[("app", format!("a{}", k % APPS))]),
                    policy_types: Some(if with_egress {
                        vec!["Ingress".into(), "Egress".into()]
                    } else {
                        vec!["Ingress".into()]
                    }),
                    ingress: Some(vec![ingress]),
                    egress: with_egress.then(|| vec![egress]),
                },
            }
        })
        .collect();
    (namespaces, pods, policies)
}

pub fn measure(load: &PolicyLoad, repeat: u32, rounds: usize) -> Result<Value> {
    let prefix = format!("oxt{}-benchpol", std::process::id());
    let netns = Netns::create(&prefix)?;
    for port in ["pa", "pb"] {
        netns.ip(&["link", "add", port, "type", "veth", "peer", "name", &format!("{port}-peer")])?;
    }
    let pins = PinDir(PathBuf::from("/sys/fs/bpf").join(&prefix));
    let pin_dir = pins.0.clone();
    let load = load.clone();
    let mut figures = netns.enter(move || measure_in(&pin_dir, &load, repeat, rounds))??;
    figures["apply_to_enforced"] = crate::policy_enforcement::measure(rounds)?;
    Ok(figures)
}

/// Removes the bpffs directory, also on failure.
struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn measure_in(pin_dir: &Path, load: &PolicyLoad, repeat: u32, rounds: usize) -> Result<Value> {
    Programs::load(pin_dir)?;
    let mut maps = NodeMaps::open(pin_dir)?;
    let cluster_net: Ipv4Network = "10.128.0.0/14".parse()?;
    let local: Ipv4Network = "10.128.0.0/23".parse()?;
    let networks = Networks { cluster: cluster_net, service: "172.30.0.0/16".parse()?, vxlan_port: 4789 };
    let addresses = NodeAddresses {
        subnet: local,
        gateway: local.nth(1).context("gateway")?,
        node_ip: Ipv4Addr::new(192, 168, 100, 1),
        tun0_ifindex: 2,
        vxlan_ifindex: 3,
        underlay_ifindex: 0,
    };
    let settings = NodeSettings { mode: mode::NETWORKPOLICY, ..NodeSettings::default() };
    maps.config.set(0, entries::node_config(&networks, &addresses, &settings), 0)?;
    let project = ProjectRef { slot: 1, id: 1 };
    maps.projects.set(project.slot, entries::project_entry(project.id, 10), 0)?;
    let (namespaces, pods, policies) = cluster(load, cluster_net, local);
    let mut in_ports = Vec::new();
    for (pod, port) in pods.iter().take(2).zip(["pa", "pb"]) {
        let ifindex = nix::net::if_::if_nametoindex(port)?;
        let (slot, entry) = entries::pod_entry(local, pod.ip, ifindex, project);
        maps.pods.set(slot, entry, 0)?;
        in_ports.push(ifindex);
    }
    let (a, b) = (pods[0].ip, pods[1].ip);

    // The two states, each through the engine's compilation and write.
    let mut numbering = Numbering::default();
    let started = Instant::now();
    let with_policies = compile(&mut numbering, &namespaces, &pods, &policies);
    let compile_s = started.elapsed().as_secs_f64();
    ensure!(with_policies.warnings.is_empty(), "compiling: {:?}", with_policies.warnings);
    let without = compile(&mut Numbering::default(), &namespaces, &pods, &[]);
    let started = Instant::now();
    write(&mut maps, &Compiled::default(), &with_policies)?;
    let write_s = started.elapsed().as_secs_f64();
    let footprint = footprint(&with_policies, pin_dir)?;

    let frame = Packet::new(Proto::Tcp, a, b).ports(40000, HTTP).frame();
    let ingress = Ingress::Pod { in_port: in_ports[0] };
    let mut tracer = Tracer::load(pin_dir)?;
    let mut programs = TestPrograms::load(pin_dir, MODE_TEST_INPUT)?;
    let mut samples: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut current = &with_policies;
    for _ in 0..rounds {
        for (name, state) in [("none", &without), ("policies", &with_policies)] {
            write(&mut maps, current, state)?;
            current = state;
            let t = tracer.trace(ingress, &frame)?;
            ensure!(
                matches!(t.output, Some(Output::Pod { .. })) && (name == "none" || !t.policy_rules.is_empty()),
                "the same-node packet with {name}: {:?}, rules {:?}",
                t.output,
                t.policy_rules
            );
            let run = programs.run(ingress, &frame, repeat)?;
            ensure!(run.retval == TC_ACT_REDIRECT, "the same-node packet: {}", verdict_name(run.retval));
            samples.entry(name).or_default().push(f64::from(run.duration_ns));
        }
    }
    let none = Stats::of(&samples["none"]).median;
    let with = Stats::of(&samples["policies"]).median;
    let per_round: Vec<f64> = samples["policies"].iter().zip(&samples["none"]).map(|(w, n)| w - n).collect();
    let extra = Stats::of(&per_round).median;
    Ok(json!({
        "load": { "namespaces": load.namespaces, "pods": load.pods, "policies": load.policies, "local_pods": load.local_pods },
        "compile_s": compile_s,
        "write_s": write_s,
        "maps": footprint,
        "same_node_ns_per_packet": {
            "no_policies": none,
            "policies": with,
            "extra_ns": extra,
            "extra_per_round_ns": per_round,
            "goal_extra_ns": GOAL_EXTRA_NS,
            "met": extra <= GOAL_EXTRA_NS,
            "path": "pod 0 to pod 1 on this node, TCP to the named port: with the policies, pod 1 is isolated and a rule of its policy allows pod 0 (its connection tracked for the replies)",
            "repeat": repeat,
            "rounds": rounds,
        },
    }))
}

/// Entries the compilation put in each policy map, the bytes of their keys and values,
/// and the kernel memory the maps take (`bytes_memlock`: hash maps are preallocated to
/// their maximum).
fn footprint(c: &Compiled, pin_dir: &Path) -> Result<Value> {
    use oxsdn_common::policy::{IdentityPolicy, PolicyCidr, PolicyKey, PolicySlot, PortSet};
    use std::mem::size_of;
    let lpm_key = size_of::<u32>() + size_of::<PolicyCidr>();
    let maps = [
        ("POD_IDENTITIES", c.pod_identities.len(), 2 * size_of::<u32>()),
        ("IP_IDENTITIES", c.ip_identities.len(), 2 * size_of::<u32>()),
        ("IDENTITIES", c.identities.len(), size_of::<u32>() + size_of::<IdentityPolicy>()),
        ("POLICY_PEERS", c.peers.len(), size_of::<PolicyKey>() + size_of::<PortSet>()),
        ("POLICY_CIDRS", c.cidrs.len(), lpm_key + size_of::<PortSet>()),
        ("POLICY_SLOTS", c.slots.len(), size_of::<u32>() + size_of::<PolicySlot>()),
    ];
    let mut per_map = serde_json::Map::new();
    let (mut entries, mut bytes, mut memlock) = (0, 0, 0u64);
    for (name, n, entry_bytes) in maps {
        let info: Value = serde_json::from_str(&oxsdn_tests::netns::run(
            std::process::Command::new("bpftool").args(["-j", "map", "show", "pinned"]).arg(pin_dir.join(name)),
        )?)?;
        let locked = info["bytes_memlock"].as_u64().context("no bytes_memlock")?;
        per_map.insert(
            name.into(),
            json!({ "entries": n, "bytes": n * entry_bytes, "memlock_bytes": locked, "max_entries": info["max_entries"] }),
        );
        (entries, bytes, memlock) = (entries + n, bytes + n * entry_bytes, memlock + locked);
    }
    let identities: std::collections::BTreeSet<u32> = c.ip_identities.values().copied().collect();
    Ok(json!({
        "entries": entries,
        "bytes": bytes,
        "memlock_bytes": memlock,
        "identities": identities.len(),
        "per_map": per_map,
    }))
}
