//! The upstream Kubernetes NetworkPolicy e2e model (kubernetes `test/e2e/network/netpol`):
//! namespaces x, y and z (label `ns`), each with pods a, b and c (label `pod`) serving TCP,
//! UDP and SCTP (raw, `probe::serve_sctp`) on ports 80 and 81 (named `serve-80-tcp` etc.), and a truth table over every
//! pod pair (`Reachability`), probed in parallel through the real dataplane.
//!
//! Each pod of the model runs twice, once on each of two nodes (`xa-node1` and `xa-node2` for x/a,
//! the same labels and ports), so every pair of the table is probed on one node and
//! across nodes, and a pod's twin is a peer like any other (a pod reaching its own
//! address never leaves its namespace, so upstream's loopback pairs are not probed).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::Ipv4Addr,
    path::PathBuf,
    sync::{
        atomic::{AtomicU32, Ordering},
        Condvar, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Result};

use crate::{
    cluster::{Pod, TestCluster},
    netns::Netns,
    probe::{answers, serve_identity, serve_sctp, L4},
};

pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
pub const POD_NAMES: [&str; 3] = ["a", "b", "c"];
pub const PORTS: [u16; 2] = [80, 81];
pub const NODES: [&str; 2] = ["node1", "node2"];
/// How long a probe waits for an answer (a refused one waits this long).
const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long `check` waits for the dataplanes to enforce what was applied.
const ENFORCE_TIMEOUT: Duration = Duration::from_secs(15);

/// A pod of the model: its namespace and its `pod` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodId {
    pub ns: &'static str,
    pub pod: &'static str,
}

impl std::fmt::Display for PodId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.ns, self.pod)
    }
}

/// Every pod of the model.
pub fn model_pods() -> Vec<PodId> {
    NAMESPACES.iter().flat_map(|ns| POD_NAMES.iter().map(move |pod| PodId { ns, pod })).collect()
}

/// Which pods of the model a `Reachability` rule is about: `None` is any.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    pub ns: Option<&'static str>,
    pub pod: Option<&'static str>,
}

pub const ANY: Peer = Peer { ns: None, pod: None };

pub fn ns(ns: &'static str) -> Peer {
    Peer { ns: Some(ns), pod: None }
}

pub fn pod(ns: &'static str, pod: &'static str) -> Peer {
    Peer { ns: Some(ns), pod: Some(pod) }
}

impl Peer {
    fn matches(&self, p: PodId) -> bool {
        self.ns.is_none_or(|n| n == p.ns) && self.pod.is_none_or(|n| n == p.pod)
    }
}

/// The truth table: whether each pod of the model may reach each other (upstream's
/// `Reachability`, without loopback).
#[derive(Clone, Debug)]
pub struct Reachability {
    expected: BTreeMap<(PodId, PodId), bool>,
}

impl Reachability {
    /// Every pair `allowed`.
    pub fn new(allowed: bool) -> Reachability {
        let pods = model_pods();
        let expected = pods.iter().flat_map(|a| pods.iter().map(move |b| ((*a, *b), allowed))).collect();
        Reachability { expected }
    }

    /// Sets every pair from a pod `from` selects to a pod `to` selects.
    pub fn expect(mut self, from: Peer, to: Peer, allowed: bool) -> Reachability {
        for ((a, b), v) in self.expected.iter_mut() {
            if from.matches(*a) && to.matches(*b) {
                *v = allowed;
            }
        }
        self
    }

    pub fn allowed(&self, from: PodId, to: PodId) -> bool {
        self.expected[&(from, to)]
    }
}

/// One probe of a check: protocol, port, and what it should find.
pub struct Probe {
    pub l4: L4,
    pub port: u16,
    pub expected: Reachability,
}

pub fn tcp(port: u16, expected: &Reachability) -> Probe {
    Probe { l4: L4::Tcp, port, expected: expected.clone() }
}

pub fn udp(port: u16, expected: &Reachability) -> Probe {
    Probe { l4: L4::Udp, port, expected: expected.clone() }
}

pub fn sctp(port: u16, expected: &Reachability) -> Probe {
    Probe { l4: L4::Sctp, port, expected: expected.clone() }
}

/// The model's pods on a two-node cluster in networkpolicy mode.
pub struct NetpolCluster {
    /// Every pod of the model on each node, in `model_pods()` order, node1's first.
    pub pods: Vec<(PodId, Pod)>,
    pub cluster: TestCluster,
    manifests: AtomicU32,
    /// Dropped after the cluster: the next one may start.
    _slot: Slot,
}

/// The Namespace and Pod manifests of the model: labels and named ports.
pub fn model_manifests() -> String {
    let mut out = String::new();
    for ns in NAMESPACES {
        let _ = write!(out, "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{ns: {ns}}}}}\n---\n");
    }
    for p in model_pods() {
        for node in NODES {
            let ports: Vec<String> = PORTS
                .iter()
                .flat_map(|port| {
                    ["TCP", "UDP", "SCTP"].map(|proto| {
                        let name = format!("serve-{port}-{}", proto.to_lowercase());
                        format!("{{name: {name}, containerPort: {port}, protocol: {proto}}}")
                    })
                })
                .collect();
            let _ = write!(
                out,
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {}, namespace: {}, labels: {{pod: {}}}}}\n\
                 spec: {{containers: [{{name: cont-{}, image: agnhost, ports: [{}]}}]}}\n---\n",
                instance_name(p, node),
                p.ns,
                p.pod,
                p.pod,
                ports.join(", ")
            );
        }
    }
    out
}

impl NetpolCluster {
    /// The cluster (`init` with `init_args`, networkpolicy mode unless they say
    /// otherwise), its two nodes, the model's namespaces and pods, each serving.
    pub fn new(init_args: &[&str]) -> Result<NetpolCluster> {
        let mut args = vec!["--network-plugin", "networkpolicy"];
        if init_args.contains(&"--network-plugin") {
            args.clear();
        }
        args.extend_from_slice(init_args);
        let slot = CLUSTERS.take();
        let mut cluster = TestCluster::new(&args)?;
        for node in NODES {
            cluster.add_node(node)?;
        }
        let mut np = NetpolCluster { pods: Vec::new(), cluster, manifests: AtomicU32::new(0), _slot: slot };
        np.apply(&model_manifests())?;
        for (n, node) in NODES.iter().enumerate() {
            for p in model_pods() {
                let pod = np.cluster.nodes[n].add_pod(p.ns, &instance_name(p, node))?;
                for port in PORTS {
                    serve_identity(&pod.netns, port, &pod.name)?;
                }
                serve_sctp(&pod.netns, &PORTS)?;
                np.pods.push((p, pod));
            }
        }
        Ok(np)
    }

    /// The pods of the model `id` (one per node).
    pub fn instances(&self, id: PodId) -> impl Iterator<Item = &Pod> {
        self.pods.iter().filter(move |(p, _)| *p == id).map(|(_, pod)| pod)
    }

    fn manifest_file(&self, yaml: &str) -> Result<PathBuf> {
        let path = self.cluster.dir.join(format!("manifest-{}.yaml", self.manifests.fetch_add(1, Ordering::SeqCst)));
        std::fs::write(&path, yaml)?;
        Ok(path)
    }

    /// `oxsdnctl apply -f` of `yaml`.
    pub fn apply(&self, yaml: &str) -> Result<String> {
        let path = self.manifest_file(yaml)?;
        self.cluster.oxsdnctl(&["apply", "-f", &path.display().to_string()])
    }

    /// `oxsdnctl delete -f` of `yaml`.
    pub fn delete(&self, yaml: &str) -> Result<String> {
        let path = self.manifest_file(yaml)?;
        self.cluster.oxsdnctl(&["delete", "-f", &path.display().to_string()])
    }

    /// Probes every ordered pair of distinct pods on `l4`/`port` in parallel; the pairs
    /// whose answer differs from `expected`, as text.
    pub fn mismatches(&self, probe: &Probe) -> Vec<String> {
        let pairs: Vec<(usize, usize)> = (0..self.pods.len())
            .flat_map(|i| (0..self.pods.len()).filter(move |j| *j != i).map(move |j| (i, j)))
            .collect();
        let mut reached = self.probe_pairs(probe, &pairs, PROBE_TIMEOUT);
        // A refusal where an answer is expected may be a busy machine: asked again, with
        // more time.
        let again: Vec<(usize, usize)> = reached
            .iter()
            .filter(|(i, j, got)| !got && probe.expected.allowed(self.pods[*i].0, self.pods[*j].0))
            .map(|(i, j, _)| (*i, *j))
            .collect();
        if !again.is_empty() {
            let second = self.probe_pairs(probe, &again, PROBE_TIMEOUT * 3);
            reached.retain(|(i, j, _)| !again.contains(&(*i, *j)));
            reached.extend(second);
        }
        let (l4, port) = (probe.l4, probe.port);
        reached
            .into_iter()
            .filter_map(|(i, j, got)| {
                let ((a, pa), (b, pb)) = (&self.pods[i], &self.pods[j]);
                let want = probe.expected.allowed(*a, *b);
                (got != want).then(|| {
                    format!(
                        "{l4:?}/{port} {a} ({}, {}) -> {b} ({}, {}): expected {}, got {}",
                        pa.node,
                        pa.ip,
                        pb.node,
                        pb.ip,
                        verdict(want),
                        verdict(got)
                    )
                })
            })
            .collect()
    }

    /// `mismatches` of every probe, all probed at once.
    fn all_mismatches(&self, probes: &[Probe]) -> Vec<String> {
        std::thread::scope(|s| {
            let handles: Vec<_> = probes.iter().map(|p| s.spawn(|| self.mismatches(p))).collect();
            handles.into_iter().flat_map(|h| h.join().expect("probe thread")).collect()
        })
    }

    /// Probes `pairs` (indexes in `pods`) on the probe's protocol and port, at most
    /// `PROBES_AT_ONCE` at a time in the process.
    fn probe_pairs(&self, probe: &Probe, pairs: &[(usize, usize)], timeout: Duration) -> Vec<(usize, usize, bool)> {
        let (l4, port) = (probe.l4, probe.port);
        std::thread::scope(|s| {
            let handles: Vec<_> = pairs
                .iter()
                .map(|&(i, j)| {
                    let src = Netns::borrowed(&self.pods[i].1.netns.name);
                    let dst = self.pods[j].1.ip;
                    s.spawn(move || {
                        let _slot = PROBES.take();
                        (i, j, answers(&src, l4, dst, port, timeout))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("probe thread")).collect()
        })
    }

    /// Waits until every probe finds what it expects (the dataplanes enforce what was
    /// applied), probing all of them again each round; how long that took.
    pub fn check(&self, what: &str, probes: &[Probe]) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let bad = self.all_mismatches(probes);
            if bad.is_empty() {
                return Ok(start.elapsed());
            }
            if start.elapsed() > ENFORCE_TIMEOUT {
                bail!(
                    "{what}: {} pairs differ after {ENFORCE_TIMEOUT:?}:\n{}\n{}",
                    bad.len(),
                    bad.join("\n"),
                    self.drops()
                );
            }
        }
    }

    /// Each node's rules that dropped something, with their counters (what a failed
    /// check reports).
    fn drops(&self) -> String {
        let mut out = String::new();
        for node in &self.cluster.nodes {
            let text = node.dump_flows_text().unwrap_or_else(|e| format!("dump-flows failed: {e:#}"));
            let _ = writeln!(out, "{}'s drops:", node.name);
            for line in text.lines().filter(|l| l.ends_with("drop") && !l.contains("n_packets=0,")) {
                let _ = writeln!(out, "{line}");
            }
        }
        // Peers a pod could not resolve never reach the dataplane.
        for (id, pod) in &self.pods {
            for state in ["failed", "incomplete"] {
                let neigh = pod.netns.ip(&["neigh", "show", "nud", state]).unwrap_or_else(|e| format!("{e:#}"));
                if !neigh.trim().is_empty() {
                    let _ =
                        writeln!(out, "{id} on {}: neighbours {state}: {}", pod.node, neigh.trim().replace('\n', "; "));
                }
            }
        }
        out
    }

    /// Probes once, without waiting: every probe must find what it expects now.
    pub fn check_now(&self, what: &str, probes: &[Probe]) -> Result<()> {
        let bad = self.all_mismatches(probes);
        if !bad.is_empty() {
            bail!("{what}: {} pairs differ:\n{}", bad.len(), bad.join("\n"));
        }
        Ok(())
    }

    /// A `/32` ipBlock entry for each instance of `id`.
    pub fn cidrs(&self, id: PodId) -> Vec<String> {
        self.instances(id).map(|p| format!("{}/32", p.ip)).collect()
    }

    /// The address of the instance of `id` on `node`.
    pub fn ip(&self, id: PodId, node: &str) -> Ipv4Addr {
        self.instances(id).find(|p| p.node == node).expect("an instance on every node").ip
    }
}

/// The name of the pod of the model `id` on `node`: unique in the cluster, as the
/// harness names pods' network namespaces by node and name.
pub fn instance_name(id: PodId, node: &str) -> String {
    format!("{}{}-{node}", id.ns, id.pod)
}

/// At most `max` holders at once in the test process.
struct Slots {
    max: usize,
    held: Mutex<usize>,
    freed: Condvar,
}

impl Slots {
    const fn new(max: usize) -> Slots {
        Slots { max, held: Mutex::new(0), freed: Condvar::new() }
    }

    fn take(&'static self) -> Slot {
        let mut held = self.held.lock().unwrap();
        while *held >= self.max {
            held = self.freed.wait(held).unwrap();
        }
        *held += 1;
        Slot(self)
    }
}

/// One of a `Slots`' places, given back on drop.
struct Slot(&'static Slots);

impl Drop for Slot {
    fn drop(&mut self) {
        *self.0.held.lock().unwrap() -= 1;
        self.0.freed.notify_one();
    }
}

/// Probes running at once in the test process (several clusters probe in parallel on
/// a small machine: unbounded, servers miss their answers' deadlines).
static PROBES: Slots = Slots::new(256);
/// Model clusters alive at once in the test process: with more, on two cores, probes
/// of allowed pairs went unanswered for seconds (no drop counted anywhere).
static CLUSTERS: Slots = Slots::new(2);

fn verdict(reached: bool) -> &'static str {
    if reached {
        "reached"
    } else {
        "refused"
    }
}
