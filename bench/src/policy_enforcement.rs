//! Time from `oxsdnctl apply` of a NetworkPolicy to its enforcement on every node of a
//! 3-node cluster (issue 13; goal 1 s), and from its `delete` to its lifting, seen as
//! traffic sees it. The cluster runs on etcd as a real one does (the agents watch the
//! store). Each node has a server pod, which a policy isolates (ingress from nobody),
//! and a client pod probing the next node's server with UDP, a new flow per probe,
//! back to back. A node enforces the policy from the first probe of the run of refused
//! probes that ends the measurement; the figure is the last node's.

use std::{
    net::{Ipv4Addr, UdpSocket},
    sync::Barrier,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use oxsdn_tests::{
    cluster::{Pod, TestCluster},
    netns::Netns,
    probe::serve_identity,
};
use serde_json::{json, Value};

use crate::measure::Stats;

/// The goal.
const GOAL_S: f64 = 1.0;
const NODES: usize = 3;
const PORT: u16 = 8080;
/// How long a probe waits for its answer, and how many refused probes in a row mean
/// the flow is refused for good.
const PROBE_WAIT: Duration = Duration::from_millis(20);
const REFUSED_IN_A_ROW: u32 = 25;
/// Give up on a change after this long.
const GIVE_UP: Duration = Duration::from_secs(15);
const POLICY: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
                      metadata: {name: isolate-servers, namespace: x}\n\
                      spec: {podSelector: {matchLabels: {role: server}}, policyTypes: [Ingress]}\n";

/// A client probing a server: each probe a new UDP flow (a new source port), so each
/// is judged as a new connection. (An established flow would stay open: once the
/// server answered after the change, the connection counts as the server's and the
/// client's packets as its replies, as conntrack-based implementations keep it.)
struct Flow<'a> {
    from: &'a Netns,
    to: Ipv4Addr,
}

impl Flow<'_> {
    /// Sends probe `seq` from a new socket; whether its answer came within `PROBE_WAIT`.
    fn probe(&self, seq: u64) -> bool {
        let to = self.to;
        let socket = self.from.enter(move || -> std::io::Result<UdpSocket> {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.connect((to, PORT))?;
            s.set_read_timeout(Some(PROBE_WAIT))?;
            Ok(s)
        });
        let Ok(Ok(socket)) = socket else { return false };
        if socket.send(&seq.to_be_bytes()).is_err() {
            return false;
        }
        let mut buf = [0u8; 256];
        // `name:` then the probe echoed back.
        matches!(socket.recv(&mut buf), Ok(n) if n >= 8 && buf[n - 8..n] == seq.to_be_bytes())
    }
}

/// Probes `flow` until it is answered (`answered`) or refused for good; when that
/// began.
fn turned(flow: &Flow, answered: bool, seq: &mut u64) -> Result<Instant> {
    let give_up = Instant::now() + GIVE_UP;
    let mut first_of_run: Option<Instant> = None;
    let mut run = 0;
    while Instant::now() < give_up {
        let sent = Instant::now();
        *seq += 1;
        if flow.probe(*seq) == answered {
            if answered {
                return Ok(sent);
            }
            let began = *first_of_run.get_or_insert(sent);
            run += 1;
            if run == REFUSED_IN_A_ROW {
                return Ok(began);
            }
        } else {
            (first_of_run, run) = (None, 0);
        }
    }
    bail!("the flow was not {} within {GIVE_UP:?}", if answered { "answered" } else { "refused" })
}

/// Runs `change` (an `oxsdnctl` call) while every flow is probed; how long after it
/// started each flow turned `answered`.
fn measure_change(flows: &[Flow<'_>], answered: bool, change: impl FnOnce() -> Result<String>) -> Result<Vec<f64>> {
    let ready = Barrier::new(flows.len() + 1);
    std::thread::scope(|scope| {
        let probers: Vec<_> = flows
            .iter()
            .map(|flow| {
                let ready = &ready;
                scope.spawn(move || -> Result<Instant> {
                    let mut seq = 0;
                    // Before the change: as it was.
                    let before = turned(flow, !answered, &mut seq);
                    ready.wait();
                    before.context("the flow was not as expected before the change")?;
                    turned(flow, answered, &mut seq)
                })
            })
            .collect();
        ready.wait();
        let start = Instant::now();
        let changed = change();
        let times: Vec<Result<Instant>> =
            probers.into_iter().map(|p| p.join().map_err(|_| anyhow::anyhow!("a prober panicked"))?).collect();
        changed?;
        times.into_iter().map(|t| Ok(t?.saturating_duration_since(start).as_secs_f64())).collect()
    })
}

pub fn measure(rounds: usize) -> Result<Value> {
    let mut cluster = TestCluster::with_etcd(&["--network-plugin", "networkpolicy"])?;
    for n in 1..=NODES {
        cluster.add_node(&format!("node{n}"))?;
    }
    let pods = |role: &str| -> Result<Vec<Pod>> {
        cluster.nodes.iter().map(|node| node.add_pod("x", &format!("{role}-{}", node.name))).collect()
    };
    let (servers, clients) = (pods("srv")?, pods("cli")?);
    let mut labels = String::new();
    for s in &servers {
        labels += &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {}, namespace: x, labels: {{role: server}}}}\n\
             spec: {{containers: [{{name: server, image: agnhost}}]}}\n---\n",
            s.name
        );
        serve_identity(&s.netns, PORT, &s.name)?;
    }
    let file = |name: &str, yaml: &str| -> Result<String> {
        let path = cluster.dir.join(name);
        std::fs::write(&path, yaml)?;
        Ok(path.display().to_string())
    };
    let (labels, policy) = (file("server-labels.yaml", &labels)?, file("isolate-servers.yaml", POLICY)?);
    cluster.oxsdnctl(&["apply", "-f", &labels])?;
    // Each node's client probes the next node's server: the server's node judges it.
    let flows: Vec<Flow> =
        (0..NODES).map(|i| Flow { from: &clients[i].netns, to: servers[(i + 1) % NODES].ip }).collect();
    let (mut enforced, mut lifted) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let times = measure_change(&flows, false, || cluster.oxsdnctl(&["apply", "-f", &policy]))?;
        enforced.push(times.iter().copied().fold(0.0, f64::max));
        let times = measure_change(&flows, true, || {
            cluster.oxsdnctl(&["delete", "networkpolicy", "isolate-servers", "-n", "x"])
        })?;
        lifted.push(times.iter().copied().fold(0.0, f64::max));
    }
    ensure!(!enforced.is_empty(), "no rounds");
    let median = Stats::of(&enforced).median;
    Ok(json!({
        "nodes": NODES,
        "apply_to_enforced_everywhere_s": median,
        "apply_to_enforced_per_round_s": enforced,
        "delete_to_lifted_everywhere_s": Stats::of(&lifted).median,
        "delete_to_lifted_per_round_s": lifted,
        "goal_s": GOAL_S,
        "met": median <= GOAL_S,
        "resolution_s": PROBE_WAIT.as_secs_f64(),
        "how": "from the start of `oxsdnctl apply -f` (a policy isolating each node's server pod) to the first of the refused probes (UDP, a new flow each, from the previous node's client), on every node (the last node's time); the same from `delete` to answered again; cluster on etcd",
    }))
}
