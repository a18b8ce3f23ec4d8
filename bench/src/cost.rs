//! Per-packet cost of each pipeline path: the live programs run with BPF_PROG_TEST_RUN
//! against the maps of a two-node cluster in namespaces (a fresh load of the object
//! the agents run, sharing their pinned maps; its counters and connection tracking
//! move as the attached programs' would).
//!
//! The kernel runs every repetition of a test run on the same skb. Paths that leave the
//! frame as they found it are timed over one call of `repeat` repetitions. The service
//! path rewrites the frame (DNAT) and the path to a remote pod puts VXLAN headers on
//! it, so the next repetition would be another path: they are timed over `repeat` calls of one repetition, minus the extra cost of timing one
//! repetition at a time, measured on the same-node path both ways. That extra cost is
//! also measured on the shortest path: if the two agree, it does not grow with the
//! path's length and the subtraction leaves the service path's own cost.

use std::{net::Ipv4Addr, path::PathBuf};

use anyhow::{ensure, Context, Result};
use oxsdn_common::trace::MODE_TEST_INPUT;
use oxsdn_dataplane::{
    maps::{LocalPods, NodeMaps},
    tracer::{pod_mac, verdict_name, Ingress, Output, Packet, Proto, TestPrograms, Tracer},
};
use oxsdn_tests::{PathPods, Pod};
use serde_json::{json, Value};

use crate::measure::Stats;

/// The goal for the longest path without encapsulation (issue 5).
const GOAL_NS: f64 = 100.0;
const SERVICE_PORT: u16 = 80;
const TARGET_PORT: u16 = 8080;
/// The path that ends in table 0.
const SHORTEST: &str = "shortest_ipv6_dropped_at_table0";

/// How a path is timed (see the module documentation).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Timing {
    /// One test run of `repeat` repetitions.
    Repeated,
    /// `repeat` test runs of one repetition each.
    OneByOne,
}

/// Which kind of output the path must reach, checked with a trace before timing it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Expect {
    Pod,
    Tunnel,
    Tun0,
    Drop,
    Multicast,
}

struct Path {
    name: &'static str,
    ingress: Ingress,
    frame: Vec<u8>,
    expect: Expect,
    timing: Timing,
    /// Encapsulates (excluded from the goal).
    encap: bool,
}

fn tcp(from: &Pod, to: Ipv4Addr, dport: u16) -> Vec<u8> {
    Packet::new(Proto::Tcp, from.ip, to).ports(40000, dport).frame()
}

/// An IPv6 frame from `from` (a bare header): table 0 drops it at once, the shortest
/// path, which shows what every path costs before the tables (test run, parsing).
fn ipv6(from: &Pod) -> Vec<u8> {
    let mut frame = [pod_mac(from.ip), [0x33, 0x33, 0, 0, 0, 2]].concat();
    frame.extend_from_slice(&0x86ddu16.to_be_bytes());
    frame.extend_from_slice(&[0x60, 0, 0, 0, 0, 0, 59, 255]);
    frame.extend_from_slice(&[0; 32]);
    frame
}

/// Measures every path `rounds` times (interleaved), each time over `repeat` packets.
/// `object`: another build of the eBPF object to time alongside this one, e.g. an
/// earlier build (live mode; without `from_tunnel`, whose tunnel key an earlier build
/// cannot take from a test run).
pub fn measure(repeat: u32, rounds: usize, object: Option<PathBuf>) -> Result<Value> {
    let pods = PathPods::new()?;
    let (cluster, a, b, c, d) = (&pods.cluster, &pods.a, &pods.b, &pods.c, &pods.d);
    let (n1, n2) = (&cluster.nodes[0], &cluster.nodes[1]);
    let ports = format!("{SERVICE_PORT}:{TARGET_PORT}");
    cluster.oxsdnctl(&["create", "service", "web", "-n", "red", "--tcp", &ports])?;
    cluster.oxsdnctl(&["set", "endpoints", "web", "-n", "red", &b.ip.to_string()])?;
    let service = cluster.service_ip("red", "web")?;
    let pin_dir = cluster.bpffs.join(&n1.name);
    wait_for_service(&pin_dir, service)?;
    let in_port = NodeMaps::open(&pin_dir)?.pod_port(a.ip)?;
    let from_pod = Ingress::Pod { in_port };
    let from_blue = Ingress::Pod { in_port: NodeMaps::open(&pin_dir)?.pod_port(c.ip)? };
    egress_policy_of_1000_rules(cluster, &pin_dir)?;
    multicast_in_red(cluster, &pin_dir)?;
    let paths = vec![
        Path {
            name: "same_node",
            ingress: from_pod,
            frame: tcp(a, b.ip, TARGET_PORT),
            expect: Expect::Pod,
            timing: Timing::Repeated,
            encap: false,
        },
        Path {
            name: "to_remote_pod",
            ingress: from_pod,
            frame: tcp(a, d.ip, TARGET_PORT),
            expect: Expect::Tunnel,
            timing: Timing::OneByOne,
            encap: true,
        },
        Path {
            name: "from_tunnel",
            ingress: Ingress::Tunnel { src: n2.ip, vni: cluster.netid("red")? },
            frame: tcp(d, a.ip, TARGET_PORT),
            expect: Expect::Pod,
            timing: Timing::Repeated,
            encap: false,
        },
        Path {
            name: "to_service",
            ingress: from_pod,
            frame: tcp(a, service, SERVICE_PORT),
            expect: Expect::Pod,
            timing: Timing::OneByOne,
            encap: false,
        },
        Path {
            name: "dropped_cross_project",
            ingress: from_pod,
            frame: tcp(a, c.ip, TARGET_PORT),
            expect: Expect::Drop,
            timing: Timing::Repeated,
            encap: false,
        },
        Path {
            name: "to_external",
            ingress: from_pod,
            frame: tcp(a, EGRESS_TARGET, TARGET_PORT),
            expect: Expect::Tun0,
            timing: Timing::Repeated,
            encap: false,
        },
        Path {
            name: "to_external_1000_egress_rules",
            ingress: from_blue,
            frame: tcp(c, EGRESS_TARGET, TARGET_PORT),
            expect: Expect::Tun0,
            timing: Timing::Repeated,
            encap: false,
        },
        Path {
            // One copy to b (a's other local pod of red), one to node2 (VXLAN by vxlan0).
            name: "multicast_to_a_pod_and_a_node",
            ingress: from_pod,
            frame: Packet::new(Proto::Udp, a.ip, MULTICAST_GROUP).ports(40000, 5353).frame(),
            expect: Expect::Multicast,
            timing: Timing::Repeated,
            encap: true,
        },
        Path {
            name: SHORTEST,
            ingress: from_pod,
            frame: ipv6(a),
            expect: Expect::Drop,
            timing: Timing::Repeated,
            encap: false,
        },
    ];
    let other = match &object {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    // The test-run skb of a pod's frame is on the pod's veth: run in node1's namespace.
    let mut result = n1.netns.enter(move || time_paths(&pin_dir, other, &paths, repeat, rounds))??;
    result["cluster"] = json!({
        "nodes": 2,
        "pods": ["a red node1", "b red node1 (the service's endpoint)", "c blue node1", "d red node2"],
        "egress_firewall": "blue: 999 Deny /32 rules in 10.200.0.0/22, then Allow 0.0.0.0/0; red: none",
        "multicast": "enabled in red (copies from a: to b, and to node2)",
    });
    if let (Some(p), Some(compared)) = (object, result.get_mut("compared")) {
        compared["object"] = json!(p);
    }
    Ok(result)
}

const MULTICAST_GROUP: Ipv4Addr = Ipv4Addr::new(239, 1, 2, 3);

/// Enables multicast for project red and waits until node1's maps have its group.
fn multicast_in_red(cluster: &oxsdn_tests::TestCluster, pin_dir: &std::path::Path) -> Result<()> {
    cluster.oxsdnctl(&[
        "annotate",
        "netnamespace",
        "red",
        "netnamespace.network.openshift.io/multicast-enabled=true",
    ])?;
    let vnid = cluster.netid("red")?;
    let start = std::time::Instant::now();
    while NodeMaps::open(pin_dir)?.mcast_groups.get(&vnid, 0).is_err() {
        ensure!(start.elapsed().as_secs() < 5, "red's multicast never reached node1's maps");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(())
}

/// An external destination next to the 999 denied addresses of blue's policy, so that
/// its LPM lookup walks the trie as deep as it goes, and matches only the last rule.
const EGRESS_TARGET: Ipv4Addr = Ipv4Addr::new(10, 200, 3, 232);

/// Gives project blue an EgressNetworkPolicy of 1,000 rules (the most allowed) and waits
/// until node1's table 101 has them.
fn egress_policy_of_1000_rules(cluster: &oxsdn_tests::TestCluster, pin_dir: &std::path::Path) -> Result<()> {
    let mut manifest = String::from(
        "apiVersion: network.openshift.io/v1\nkind: EgressNetworkPolicy\nmetadata: {name: default, namespace: blue}\n\
         spec:\n  egress:\n",
    );
    for i in 0..999u32 {
        manifest.push_str(&format!("  - {{type: Deny, to: {{cidrSelector: 10.200.{}.{}/32}}}}\n", i / 256, i % 256));
    }
    manifest.push_str("  - {type: Allow, to: {cidrSelector: 0.0.0.0/0}}\n");
    let file = cluster.dir.join("egress-1000.yaml");
    std::fs::write(&file, manifest)?;
    cluster.oxsdnctl(&["apply", "-f", &file.display().to_string()])?;
    let start = std::time::Instant::now();
    while NodeMaps::open(pin_dir)?.egress_cidrs.keys().count() < 1000 {
        ensure!(start.elapsed().as_secs() < 10, "the egress policy never reached node1's maps");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(())
}

/// Waits until node1's maps have the service's port (the agent applies it within a
/// second).
fn wait_for_service(pin_dir: &std::path::Path, service: Ipv4Addr) -> Result<()> {
    let start = std::time::Instant::now();
    let key =
        oxsdn_common::ServiceKey { ip: oxsdn_dataplane::maps::ip_key(service), port: SERVICE_PORT, proto: 6, _pad: 0 };
    while NodeMaps::open(pin_dir)?.services.get(&key, 0).is_err() {
        ensure!(start.elapsed().as_secs() < 5, "service {service} never reached node1's maps");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(())
}

/// One build of the programs being timed, with what was measured of it.
struct Subject<'p> {
    programs: TestPrograms,
    paths: Vec<&'p Path>,
    samples: Vec<Vec<f64>>,
    verdicts: Vec<i32>,
    one_by_one_overhead: Vec<f64>,
    one_by_one_overhead_shortest: Vec<f64>,
}

impl<'p> Subject<'p> {
    fn new(programs: TestPrograms, paths: Vec<&'p Path>) -> Self {
        let n = paths.len();
        Subject {
            programs,
            paths,
            samples: vec![Vec::new(); n],
            verdicts: vec![0; n],
            one_by_one_overhead: Vec::new(),
            one_by_one_overhead_shortest: Vec::new(),
        }
    }

    /// One round: every path, then the same-node path and the shortest one timed both
    /// ways.
    fn round(&mut self, repeat: u32) -> Result<()> {
        for (i, p) in self.paths.iter().enumerate() {
            let (ns, verdict) = time(&mut self.programs, p.ingress, &p.frame, p.timing, repeat)?;
            self.samples[i].push(ns);
            self.verdicts[i] = verdict;
        }
        let overhead = self.one_by_one_overhead(self.paths[0], repeat)?;
        self.one_by_one_overhead.push(overhead);
        let shortest = self.paths.iter().find(|p| p.name == SHORTEST).context("no shortest path")?;
        let overhead = self.one_by_one_overhead(shortest, repeat)?;
        self.one_by_one_overhead_shortest.push(overhead);
        Ok(())
    }

    /// What timing `path` one repetition at a time adds per packet.
    fn one_by_one_overhead(&mut self, path: &Path, repeat: u32) -> Result<f64> {
        let repeated = time(&mut self.programs, path.ingress, &path.frame, Timing::Repeated, repeat)?.0;
        let one_by_one = time(&mut self.programs, path.ingress, &path.frame, Timing::OneByOne, repeat)?.0;
        Ok(one_by_one - repeated)
    }

    fn summary(&mut self) -> Result<Value> {
        let overhead = Stats::of(&self.one_by_one_overhead).median;
        let mut results = serde_json::Map::new();
        let mut longest: Option<(&str, f64)> = None;
        for (i, p) in self.paths.iter().enumerate() {
            let raw = Stats::of(&self.samples[i]);
            let ns = if p.timing == Timing::OneByOne { raw.median - overhead } else { raw.median };
            if !p.encap && longest.is_none_or(|(_, l)| ns > l) {
                longest = Some((p.name, ns));
            }
            results.insert(
                p.name.into(),
                json!({
                    "ns_per_packet": ns,
                    "timed": if p.timing == Timing::Repeated { "one test run of `repeat` repetitions" } else { "`repeat` test runs of one repetition, minus one_by_one_overhead_ns" },
                    "raw_ns": crate::report::figure(&self.samples[i]),
                    "verdict": verdict_name(self.verdicts[i]),
                    "encapsulates": p.encap,
                }),
            );
        }
        let (path, ns) = longest.context("no path without encapsulation")?;
        Ok(json!({
            "paths": results,
            "one_by_one_overhead_ns": overhead,
            "one_by_one_overhead_shortest_path_ns": Stats::of(&self.one_by_one_overhead_shortest).median,
            "program_sizes": self.programs.sizes()?,
            "longest_without_encapsulation": { "path": path, "ns_per_packet": ns, "goal_ns": GOAL_NS, "met": ns <= GOAL_NS },
        }))
    }
}

/// Checks each path's decision with a trace, then times this build's programs and, if
/// given, `other`'s (live mode, without `from_tunnel`), interleaved round by round so
/// that drift hits both alike.
fn time_paths(
    pin_dir: &std::path::Path,
    other: Option<Vec<u8>>,
    paths: &[Path],
    repeat: u32,
    rounds: usize,
) -> Result<Value> {
    let mut tracer = Tracer::load(pin_dir)?;
    for p in paths {
        let t = tracer.trace(p.ingress, &p.frame)?;
        let reached = match t.output {
            Some(Output::Pod { .. }) => Some(Expect::Pod),
            Some(Output::Tunnel { .. }) => Some(Expect::Tunnel),
            Some(Output::Tun0 { .. }) => Some(Expect::Tun0),
            Some(Output::Drop) => Some(Expect::Drop),
            Some(Output::Multicast { to_nodes: true, .. }) => Some(Expect::Multicast),
            _ => None,
        };
        ensure!(reached == Some(p.expect), "path {} goes to {:?}, not {:?}", p.name, t.output, p.expect);
    }
    let mut subjects = vec![Subject::new(TestPrograms::load(pin_dir, MODE_TEST_INPUT)?, paths.iter().collect())];
    if let Some(object) = &other {
        let live_paths = paths.iter().filter(|p| !matches!(p.ingress, Ingress::Tunnel { .. })).collect();
        subjects.push(Subject::new(TestPrograms::load_object(object, pin_dir, 0)?, live_paths));
    }
    for _ in 0..rounds {
        for s in &mut subjects {
            s.round(repeat)?;
        }
    }
    let mut result = subjects[0].summary()?;
    result["repeat"] = json!(repeat);
    result["rounds"] = json!(rounds);
    if let Some(compared) = subjects.get_mut(1) {
        result["compared"] = compared.summary()?;
    }
    Ok(result)
}

/// Average ns per packet and the last verdict.
fn time(
    programs: &mut TestPrograms,
    ingress: Ingress,
    frame: &[u8],
    timing: Timing,
    repeat: u32,
) -> Result<(f64, i32)> {
    match timing {
        Timing::Repeated => {
            let run = programs.run(ingress, frame, repeat)?;
            Ok((f64::from(run.duration_ns), run.retval))
        }
        Timing::OneByOne => {
            let mut total = 0u64;
            let mut verdict = 0;
            for _ in 0..repeat {
                let run = programs.run(ingress, frame, 1)?;
                total += u64::from(run.duration_ns);
                verdict = run.retval;
            }
            Ok((total as f64 / f64::from(repeat), verdict))
        }
    }
}
