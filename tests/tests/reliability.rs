//! Reliability under operations: the agent stopped (crash or upgrade) and started again
//! while traffic flows, VNID changes hammered under traffic, pod and CLI churn without
//! leaks. Long variants: `OXSDN_HAMMER_SECS`, `OXSDN_SOAK_SECS` (`make soak`).

use std::{net::Ipv4Addr, time::Duration};

use anyhow::{ensure, Result};
use nix::sys::signal::Signal;
use oxsdn_tests::{
    cluster::EXTERNAL_HOST,
    flows::FlowLine,
    inventory::Inventory,
    probe::{ping, serve_echo, serve_whoami, tcp_echo, whoami_tcp, Iperf3Client, Iperf3Server},
    Node, TestCluster,
};

const WHOAMI_PORT: u16 = 7070;
const SERVICE_PORT: &str = "80:8080";

/// A rule without its counters: what must be the same before and after a restart.
fn rule_of(f: &FlowLine) -> (u8, u16, String, String) {
    (f.table, f.priority, f.matches.clone(), f.actions.clone())
}

/// Checks that `after` has exactly the rules of `before` and that no counter went back.
fn same_rules_counters_kept(before: &[FlowLine], after: &[FlowLine]) -> Result<()> {
    let rules = |flows: &[FlowLine]| flows.iter().map(rule_of).collect::<Vec<_>>();
    ensure!(rules(before) == rules(after), "rules changed:\nbefore {:#?}\nafter {:#?}", rules(before), rules(after));
    for (b, a) in before.iter().zip(after) {
        ensure!(a.n_packets >= b.n_packets, "counter reset: {b:?} -> {a:?}");
    }
    Ok(())
}

/// Stops node `index`'s agent with `signal` while iperf3 streams run same-node and
/// cross-node, checks the dataplane without agent, starts the agent again and checks
/// it took the dataplane over as it was.
fn restart_agent_and_compare(
    cluster: &mut TestCluster,
    index: usize,
    signal: Signal,
    check_alone: impl Fn(&Node) -> Result<()>,
) -> Result<()> {
    let node = &cluster.nodes[index];
    let (flows, inventory) = (node.dump_flows()?, Inventory::take(node)?);
    cluster.nodes[index].signal_agent(signal);
    check_alone(&cluster.nodes[index])?;
    cluster.nodes[index].start_agent()?;
    let node = &cluster.nodes[index];
    let after = Inventory::take(node)?;
    let diffs = inventory.differences(&after);
    ensure!(
        diffs.is_empty(),
        "{}: the restarted agent changed the dataplane ({signal}):\n{}",
        node.name,
        diffs.join("\n")
    );
    same_rules_counters_kept(&flows, &node.dump_flows()?)
}

fn agent_restart_under_traffic(signal: Signal) -> Result<()> {
    let mut cluster = TestCluster::with_etcd(&[])?;
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let a = cluster.nodes[0].add_pod("red", "a")?;
    let b = cluster.nodes[0].add_pod("red", "b")?;
    let c = cluster.nodes[1].add_pod("red", "c")?;
    let x = cluster.nodes[0].add_pod("blue", "x")?;
    let y = cluster.nodes[1].add_pod("blue", "y")?;
    // A service with an endpoint on each node, used before the restarts so its
    // counters are not zero.
    cluster.oxsdnctl(&["create", "service", "web", "-n", "red", "--tcp", SERVICE_PORT])?;
    cluster.oxsdnctl(&["set", "endpoints", "web", "-n", "red", &b.ip.to_string(), &c.ip.to_string()])?;
    let web = cluster.service_ip("red", "web")?;
    for pod in [&b, &c] {
        serve_echo(&pod.netns, 8080)?;
    }
    std::thread::sleep(Duration::from_secs(1));
    ensure!(tcp_echo(&a.netns, web, 80), "service not reachable before the restarts");
    serve_whoami(&cluster.external, WHOAMI_PORT)?;
    let external: Ipv4Addr = EXTERNAL_HOST.parse()?;

    const SECS: u32 = 10;
    let servers = [Iperf3Server::start(&b.netns)?, Iperf3Server::start(&c.netns)?];
    let clients = [Iperf3Client::start(&a.netns, b.ip, SECS, None)?, Iperf3Client::start(&a.netns, c.ip, SECS, None)?];
    std::thread::sleep(Duration::from_secs(1));
    for index in [0, 1] {
        let node_ip = cluster.nodes[index].ip.to_string();
        let from = if index == 0 { &a } else { &c };
        restart_agent_and_compare(&mut cluster, index, signal, |_| {
            // Without an agent: forwarding, isolation, services and egress (a new
            // connection, masqueraded) all work as before.
            ensure!(ping(&a.netns, b.ip) && ping(&a.netns, c.ip), "no forwarding without the agent");
            ensure!(!ping(&a.netns, x.ip) && !ping(&a.netns, y.ip), "no isolation without the agent");
            ensure!(tcp_echo(&a.netns, web, 80), "no service without the agent");
            ensure!(whoami_tcp(&from.netns, external, WHOAMI_PORT)? == node_ip, "no egress without the agent");
            Ok(())
        })?;
        // The restarted agent serves CNI again: a pod comes and goes on its node.
        let node = &cluster.nodes[index];
        let before = Inventory::take(node)?;
        let late = node.add_pod("red", "late")?;
        ensure!(ping(&late.netns, a.ip), "a pod added after the restart has no network");
        node.del_pod(&late)?;
        let diffs = before.differences(&Inventory::take(node)?);
        ensure!(diffs.is_empty(), "pod added and deleted after the restart left: {diffs:?}");
    }
    for client in clients {
        client.finish()?;
    }
    for server in servers {
        server.wait();
    }
    Ok(())
}

#[test]
fn agent_killed_and_restarted_under_traffic_takes_the_dataplane_over_as_it_was() -> Result<()> {
    agent_restart_under_traffic(Signal::SIGKILL)
}

#[test]
fn agent_stopped_for_an_upgrade_under_traffic_takes_the_dataplane_over_as_it_was() -> Result<()> {
    agent_restart_under_traffic(Signal::SIGTERM)
}

#[test]
fn teardown_removes_the_dataplane_and_a_new_agent_rebuilds_it() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let a = cluster.nodes[0].add_pod("red", "a")?;
    let b = cluster.nodes[0].add_pod("red", "b")?;
    cluster.nodes[0].stop_agent();
    let node = &cluster.nodes[0];
    ensure!(ping(&a.netns, b.ip), "a stopped agent took the dataplane with it");
    node.teardown()?;
    ensure!(!node.pin_dir().exists(), "pins left after teardown");
    for link in ["tun0", "vxlan0"] {
        ensure!(node.netns.ip(&["link", "show", link]).is_err(), "{link} left after teardown");
    }
    ensure!(
        node.netns.command("nft").args(["list", "table", "ip", "oxsdn"]).output()?.status.code() != Some(0),
        "nftables table left"
    );
    ensure!(!node.socket.exists() && !node.conf_dir.join("80-oxsdn.conflist").exists());
    ensure!(!ping(&a.netns, b.ip), "pods still connected without a dataplane");
    // The pods are still recorded: a new agent plugs them back in.
    cluster.nodes[0].start_agent()?;
    ensure!(ping(&a.netns, b.ip), "the new agent did not restore the pods");
    Ok(())
}

/// How long after `oxsdnctl` returns a VNID change may still be missing from a node's
/// dataplane: the README's bound ("reaches every node's dataplane within a second",
/// checked by the isolation story tests), which is the etcd watch delivering the event
/// plus one `PROJECTS` update on each node.
const PROPAGATION_BOUND: Duration = Duration::from_secs(1);
const PROBE_PORT: u16 = 9797;
/// One round of probes (every pod to every other) per period.
const PROBE_PERIOD: Duration = Duration::from_millis(25);

/// A project network state as committed: project -> VNID.
type NetState = std::collections::BTreeMap<String, u32>;

/// The committed states, in order: `states[0]` from the start; `states[j]` (j > 0) was
/// committed by a command that ran from `started[j]` to `returned[j]` (times since the
/// hammer's start).
struct History {
    states: Vec<NetState>,
    started: Vec<Duration>,
    returned: Vec<Duration>,
}

impl History {
    /// The states a node's dataplane may hold at some moment of `sent` (a probe's send
    /// call): state j from the moment its command started (the transaction commits
    /// before the command returns, and an agent may apply it at once) until
    /// `PROPAGATION_BOUND` after the next command returned (the agent may not have
    /// applied that one yet).
    fn possible_during(&self, sent: &std::ops::Range<Duration>) -> Vec<&NetState> {
        (0..self.states.len())
            .filter(|&j| j == 0 || self.started[j] <= sent.end)
            .filter(|&j| j + 1 >= self.states.len() || sent.start < self.returned[j + 1] + PROPAGATION_BOUND)
            .map(|j| &self.states[j])
            .collect()
    }
}

/// Table 80's predicate on a committed state.
fn allowed(state: &NetState, from: &str, to: &str) -> bool {
    let (a, b) = (state[from], state[to]);
    a == 0 || b == 0 || a == b
}

/// A probe: sender and receiver (pod indexes), sequence number, and when its send
/// call ran (the thread may be descheduled around the actual send).
#[derive(Clone)]
struct Probe {
    from: usize,
    to: usize,
    seq: u64,
    sent: std::ops::Range<Duration>,
}

/// Room for many seconds of probes, so a receiving thread starved of CPU on a busy
/// machine does not drop any (the kernel would, and the oracle would count them).
const PROBE_RECEIVE_BUFFER: i32 = 16 << 20;

/// SO_RCVBUFFORCE (root: beyond net.core.rmem_max).
fn force_receive_buffer(socket: &std::net::UdpSocket, bytes: i32) -> Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt with an int on a socket we own.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&bytes as *const i32).cast(),
            std::mem::size_of::<i32>() as u32,
        )
    };
    ensure!(rc == 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
    Ok(())
}

fn encode(from: usize, seq: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&(from as u64).to_be_bytes());
    b[8..].copy_from_slice(&seq.to_be_bytes());
    b
}

fn hammer_secs() -> u64 {
    std::env::var("OXSDN_HAMMER_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(30)
}

#[test]
fn vnid_changes_hammered_under_traffic_never_deliver_what_the_committed_state_forbids() -> Result<()> {
    use rand::{seq::SliceRandom, Rng};
    use std::{
        collections::HashSet,
        net::UdpSocket,
        sync::{
            atomic::{AtomicBool, Ordering},
            Arc, Mutex,
        },
        time::Instant,
    };

    let mut cluster = TestCluster::with_etcd(&[])?;
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let projects = ["p1", "p2", "p3"];
    // Same-project pairs on one node and across nodes, for every project.
    let placement = [("p1", 0), ("p1", 0), ("p1", 1), ("p2", 0), ("p2", 1), ("p2", 1), ("p3", 0), ("p3", 1)];
    let mut pods = Vec::new();
    for (i, (project, node)) in placement.iter().enumerate() {
        pods.push(cluster.nodes[*node].add_pod(project, &format!("h{i}"))?);
    }
    let sockets: Vec<Arc<UdpSocket>> = pods
        .iter()
        .map(|p| -> Result<Arc<UdpSocket>> {
            let s = p.netns.enter(|| UdpSocket::bind(("0.0.0.0", PROBE_PORT)))??;
            s.set_read_timeout(Some(Duration::from_millis(200)))?;
            force_receive_buffer(&s, PROBE_RECEIVE_BUFFER)?;
            Ok(Arc::new(s))
        })
        .collect::<Result<_>>()?;
    let initial: NetState = cluster.netids()?.into_iter().filter(|(n, _)| projects.contains(&n.as_str())).collect();

    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let received: Arc<Mutex<HashSet<(usize, usize, u64)>>> = Arc::default();
    let receivers: Vec<_> = sockets
        .iter()
        .enumerate()
        .map(|(to, socket)| {
            let (socket, stop, received) = (socket.clone(), stop.clone(), received.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((16, _)) = socket.recv_from(&mut buf) {
                        let from = u64::from_be_bytes(buf[..8].try_into().unwrap()) as usize;
                        let seq = u64::from_be_bytes(buf[8..16].try_into().unwrap());
                        received.lock().unwrap().insert((from, to, seq));
                    }
                }
            })
        })
        .collect();
    let sender = {
        let (sockets, stop) = (sockets.clone(), stop.clone());
        let addrs: Vec<Ipv4Addr> = pods.iter().map(|p| p.ip).collect();
        std::thread::spawn(move || {
            let mut sent = Vec::new();
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let round = Instant::now();
                for (from, socket) in sockets.iter().enumerate() {
                    for to in (0..addrs.len()).filter(|&to| to != from) {
                        seq += 1;
                        let before = start.elapsed();
                        if socket.send_to(&encode(from, seq), (addrs[to], PROBE_PORT)).is_ok() {
                            sent.push(Probe { from, to, seq, sent: before..start.elapsed() });
                        }
                    }
                }
                std::thread::sleep(PROBE_PERIOD.saturating_sub(round.elapsed()));
            }
            sent
        })
    };

    // The operator: random join / isolate / global commands, each followed by the
    // committed state it produced.
    let mut history = History { states: vec![initial], started: vec![Duration::ZERO], returned: vec![Duration::ZERO] };
    let run_for = Duration::from_secs(hammer_secs());
    let mut rng = rand::thread_rng();
    std::thread::sleep(Duration::from_secs(1));
    while start.elapsed() < run_for {
        let target = *projects.choose(&mut rng).expect("projects");
        let other = *projects.iter().filter(|p| **p != target).collect::<Vec<_>>().choose(&mut rng).expect("projects");
        let command: Vec<String> = match rng.gen_range(0..3) {
            0 => vec!["join-projects".into(), format!("--to={target}"), other.to_string()],
            1 => vec!["isolate-projects".into(), target.to_string()],
            _ => vec!["make-projects-global".into(), target.to_string()],
        };
        let args: Vec<&str> = std::iter::once("pod-network").chain(command.iter().map(String::as_str)).collect();
        let started = start.elapsed();
        cluster.oxsdnctl(&args)?;
        let returned = start.elapsed();
        let state: NetState = cluster.netids()?.into_iter().filter(|(n, _)| projects.contains(&n.as_str())).collect();
        history.states.push(state);
        history.started.push(started);
        history.returned.push(returned);
        std::thread::sleep(Duration::from_millis(rng.gen_range(100..1500)));
    }
    let end = start.elapsed();
    // Probes of the last moments may still be in flight: let them land, then stop.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().expect("sender");
    for r in receivers {
        r.join().expect("receiver");
    }
    let received = received.lock().unwrap();

    let (mut forbidden, mut lost, mut must, mut delivered) = (Vec::new(), Vec::new(), 0usize, 0usize);
    for probe in sent.iter().filter(|p| p.sent.end < end) {
        let (from, to) = (&pods[probe.from], &pods[probe.to]);
        let possible = history.possible_during(&probe.sent);
        let arrived = received.contains(&(probe.from, probe.to, probe.seq));
        let describe = || {
            format!(
                "{} ({}) -> {} ({}) sent during {:?}, possible states {possible:?}",
                from.name, from.project, to.name, to.project, probe.sent
            )
        };
        if arrived {
            delivered += 1;
            if !possible.iter().any(|s| allowed(s, &from.project, &to.project)) {
                forbidden.push(describe());
            }
        }
        // Every state that may be in effect allows it: it must arrive. Across nodes only
        // with a single possible state (during propagation the two nodes may hold
        // different states, and a VNI from one with a VNID from the other is dropped).
        let all_allow = possible.iter().all(|s| allowed(s, &from.project, &to.project));
        if all_allow && (from.node == to.node || possible.len() == 1) && probe.sent.start > Duration::from_secs(1) {
            must += 1;
            if !arrived {
                lost.push(describe());
            }
        }
    }
    println!(
        "hammer: {:?}, {} commands, {} probes sent, {delivered} delivered, {must} required, {} forbidden delivered, {} required lost",
        end,
        history.states.len() - 1,
        sent.len(),
        forbidden.len(),
        lost.len()
    );
    ensure!(history.states.len() > 5, "too few commands ran: {}", history.states.len() - 1);
    ensure!(
        forbidden.is_empty(),
        "{} probes delivered against the committed state, e.g.:\n{}",
        forbidden.len(),
        forbidden[..forbidden.len().min(10)].join("\n")
    );
    ensure!(
        lost.is_empty(),
        "{} probes every possible state allows were dropped (mixed state), e.g.:\n{}",
        lost.len(),
        lost[..lost.len().min(10)].join("\n")
    );
    Ok(())
}

fn soak_secs() -> u64 {
    std::env::var("OXSDN_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60)
}

/// An agent's resident memory (KiB), open file descriptors and threads.
#[derive(Clone, Copy, Debug)]
struct Usage {
    rss_kib: u64,
    fds: usize,
    threads: u64,
}

fn usage(node: &Node) -> Result<Usage> {
    let pid = node.agent_pid().ok_or_else(|| anyhow::anyhow!("{}: no agent", node.name))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Ok(Usage {
        rss_kib: field("VmRSS:"),
        fds: std::fs::read_dir(format!("/proc/{pid}/fd"))?.count(),
        threads: field("Threads:"),
    })
}

/// Network namespaces of this cluster's run.
fn netns_count(cluster: &TestCluster) -> Result<usize> {
    let list = oxsdn_tests::netns::run(std::process::Command::new("ip").args(["netns", "list"]))?;
    Ok(list.lines().filter(|l| l.starts_with(&format!("{}-", cluster.prefix))).count())
}

/// Pod addresses of a /27 node subnet (`--host-subnet-length 5`): all but the network,
/// gateway and broadcast addresses. Small, so that a leaked address shows.
const POD_ADDRESSES: usize = 29;
/// Agent memory growth over a soak that counts as a leak.
const RSS_GROWTH_LIMIT_KIB: u64 = 64 * 1024;

#[test]
fn pod_and_cli_churn_under_traffic_leaks_nothing() -> Result<()> {
    use rand::{seq::SliceRandom, Rng};
    use std::collections::BTreeMap;

    let mut cluster = TestCluster::with_etcd(&["--host-subnet-length", "5"])?;
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let pool = ["c1", "c2", "c3"];
    for p in pool {
        cluster.oxsdnctl(&["create", "project", p])?;
    }
    // Steady state that churn must not disturb: a pod on each node, a stream between
    // them, a service.
    let s1 = cluster.nodes[0].add_pod("c1", "steady1")?;
    let s2 = cluster.nodes[1].add_pod("c1", "steady2")?;
    serve_echo(&s2.netns, 8080)?;
    cluster.oxsdnctl(&["create", "service", "steady", "-n", "c1", "--tcp", SERVICE_PORT])?;
    cluster.oxsdnctl(&["set", "endpoints", "steady", "-n", "c1", &s2.ip.to_string()])?;
    let steady = cluster.service_ip("c1", "steady")?;
    std::thread::sleep(Duration::from_secs(1));
    ensure!(tcp_echo(&s1.netns, steady, 80), "steady service not reachable");

    let secs = soak_secs();
    let baseline: Vec<Inventory> = cluster.nodes.iter().map(Inventory::take).collect::<Result<_>>()?;
    let baseline_usage: Vec<Usage> = cluster.nodes.iter().map(usage).collect::<Result<_>>()?;
    let baseline_netns = netns_count(&cluster)?;
    let server = Iperf3Server::start(&s2.netns)?;
    let stream = Iperf3Client::start(&s1.netns, s2.ip, secs as u32, Some("200M"))?;

    let start = std::time::Instant::now();
    let mut rng = rand::thread_rng();
    let mut live: Vec<oxsdn_tests::Pod> = Vec::new();
    let mut tmp_projects: Vec<String> = Vec::new();
    let mut services: Vec<(String, String)> = Vec::new();
    let mut ops: BTreeMap<&str, usize> = BTreeMap::new();
    let mut peak_rss = baseline_usage.iter().map(|u| u.rss_kib).collect::<Vec<_>>();
    let mut n = 0usize;
    while start.elapsed() < Duration::from_secs(secs) {
        n += 1;
        let op = match rng.gen_range(0..10) {
            0..=2 if live.len() < 16 => {
                let node = &cluster.nodes[rng.gen_range(0..2)];
                let pod = node.add_pod(pool.choose(&mut rng).expect("pool"), &format!("k{n}"))?;
                let gateway: Ipv4Addr = pod.result["ips"][0]["gateway"].as_str().unwrap_or_default().parse()?;
                ensure!(ping(&pod.netns, gateway), "churn pod {} ({}) has no network", pod.name, pod.ip);
                live.push(pod);
                "pod add"
            }
            0..=4 if !live.is_empty() => {
                let pod = live.swap_remove(rng.gen_range(0..live.len()));
                cluster.node(&pod.node).del_pod(&pod)?;
                "pod delete"
            }
            5 => {
                let name = format!("t{n}");
                cluster.oxsdnctl(&["create", "project", &name])?;
                tmp_projects.push(name);
                "project create"
            }
            6 if !tmp_projects.is_empty() => {
                let name = tmp_projects.swap_remove(rng.gen_range(0..tmp_projects.len()));
                cluster.oxsdnctl(&["delete", "project", &name])?;
                "project delete"
            }
            7 => {
                let all: Vec<&str> = pool.iter().copied().chain(tmp_projects.iter().map(String::as_str)).collect();
                let (a, b) = (*all.choose(&mut rng).expect("projects"), *all.choose(&mut rng).expect("projects"));
                match rng.gen_range(0..3) {
                    0 if a != b => cluster.oxsdnctl(&["pod-network", "join-projects", &format!("--to={a}"), b])?,
                    1 => cluster.oxsdnctl(&["pod-network", "make-projects-global", a])?,
                    _ => cluster.oxsdnctl(&["pod-network", "isolate-projects", a])?,
                };
                "pod-network"
            }
            8 if services.len() < 4 => {
                let project = pool.choose(&mut rng).expect("pool").to_string();
                let name = format!("svc{n}");
                cluster.oxsdnctl(&[
                    "create",
                    "service",
                    &name,
                    "-n",
                    &project,
                    "--tcp",
                    SERVICE_PORT,
                    "--udp",
                    "53",
                ])?;
                services.push((project, name));
                "service create"
            }
            8 | 9 if !services.is_empty() => {
                let i = rng.gen_range(0..services.len());
                if rng.gen_bool(0.3) {
                    let (project, name) = services.swap_remove(i);
                    cluster.oxsdnctl(&["delete", "service", &name, "-n", &project])?;
                    "service delete"
                } else {
                    let (project, name) = &services[i];
                    let mut ips: Vec<String> = live.iter().map(|p| p.ip.to_string()).collect();
                    ips.shuffle(&mut rng);
                    ips.truncate(rng.gen_range(0..4));
                    let endpoints: Vec<&str> =
                        if ips.is_empty() { vec!["--none"] } else { ips.iter().map(String::as_str).collect() };
                    cluster.oxsdnctl(
                        &[&["set", "endpoints", name.as_str(), "-n", project.as_str()], endpoints.as_slice()].concat(),
                    )?;
                    "endpoints set"
                }
            }
            _ => continue,
        };
        *ops.entry(op).or_default() += 1;
        for (i, node) in cluster.nodes.iter().enumerate() {
            peak_rss[i] = peak_rss[i].max(usage(node)?.rss_kib);
        }
    }
    stream.finish()?;
    server.wait();
    // Undo the churn: the node must be back where it started.
    for pod in live.drain(..) {
        cluster.node(&pod.node).del_pod(&pod)?;
    }
    for (project, name) in services.drain(..) {
        cluster.oxsdnctl(&["delete", "service", &name, "-n", &project])?;
    }
    for name in tmp_projects.drain(..) {
        cluster.oxsdnctl(&["delete", "project", &name])?;
    }
    ensure!(tcp_echo(&s1.netns, steady, 80), "steady service lost during the churn");

    for (i, node) in cluster.nodes.iter().enumerate() {
        // The agents apply deletions from the store's watch: wait for them.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let diffs = loop {
            let now = Inventory::take(node)?;
            // VNIDs changed on purpose; the projects (entries) are the same.
            let mut diffs = baseline[i].differences(&now);
            diffs.retain(|d| !d.starts_with("PROJECTS:"));
            if baseline[i].maps["PROJECTS"].len() != now.maps["PROJECTS"].len() {
                diffs.push(format!(
                    "PROJECTS: {} -> {} entries",
                    baseline[i].maps["PROJECTS"].len(),
                    now.maps["PROJECTS"].len()
                ));
            }
            if diffs.is_empty() || std::time::Instant::now() > deadline {
                break diffs;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        ensure!(diffs.is_empty(), "{} leaked after the churn:\n{}", node.name, diffs.join("\n"));
    }
    ensure!(netns_count(&cluster)? == baseline_netns, "network namespaces leaked");

    // No address leaked: every address but the steady pod's can be handed out again.
    for node in &cluster.nodes {
        let mut filled = Vec::new();
        let error = loop {
            match node.add_pod("c2", &format!("fill{}", filled.len())) {
                Ok(pod) => filled.push(pod),
                Err(e) => break e,
            }
            ensure!(filled.len() < POD_ADDRESSES, "{}: more addresses than the subnet has", node.name);
        };
        ensure!(
            filled.len() == POD_ADDRESSES - 1,
            "{}: only {} of {} free addresses left after the churn: {error:#}",
            node.name,
            filled.len(),
            POD_ADDRESSES - 1
        );
        for pod in &filled {
            node.del_pod(pod)?;
        }
    }

    let end_usage: Vec<Usage> = cluster.nodes.iter().map(usage).collect::<Result<_>>()?;
    println!("soak: {secs} s, {} operations {ops:?}", ops.values().sum::<usize>());
    for (i, node) in cluster.nodes.iter().enumerate() {
        let (b, e) = (baseline_usage[i], end_usage[i]);
        let peak = peak_rss[i].max(e.rss_kib);
        println!(
            "soak: {} agent RSS {} KiB -> {} KiB (peak {} KiB, growth {:+} KiB), fds {} -> {}, threads {} -> {}; {}",
            node.name,
            b.rss_kib,
            e.rss_kib,
            peak,
            e.rss_kib as i64 - b.rss_kib as i64,
            b.fds,
            e.fds,
            b.threads,
            e.threads,
            Inventory::take(node)?.summary()
        );
        // Not a measurement: a bound far above the allocator's noise (a few hundred KiB
        // per minute here) that a per-operation leak would cross.
        ensure!(
            e.rss_kib < b.rss_kib + RSS_GROWTH_LIMIT_KIB,
            "{}: agent RSS grew from {} to {} KiB",
            node.name,
            b.rss_kib,
            e.rss_kib
        );
        ensure!(e.fds <= b.fds + 4, "{}: file descriptors grew from {} to {}", node.name, b.fds, e.fds);
        ensure!(e.threads <= b.threads + 2, "{}: threads grew from {} to {}", node.name, b.threads, e.threads);
    }
    Ok(())
}

#[test]
fn an_agent_refuses_to_start_on_a_corrupted_pod_table_or_store_and_changes_neither() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let a = cluster.nodes[0].add_pod("red", "a")?;
    let b = cluster.nodes[0].add_pod("red", "b")?;
    cluster.nodes[0].stop_agent();
    let pods = cluster.nodes[0].state_dir.join("pods.json");
    let store = cluster.dir.join("store").join("state");
    let (good_pods, good_store) = (std::fs::read(&pods)?, std::fs::read(&store)?);
    let truncated = |bytes: &[u8]| bytes[..bytes.len() / 2].to_vec();
    for (file, bad, message) in
        [(&pods, truncated(&good_pods), "is not a valid pod table"), (&store, truncated(&good_store), "is corrupted")]
    {
        std::fs::write(file, &bad)?;
        let err = match cluster.nodes[0].start_agent() {
            Ok(()) => anyhow::bail!("the agent started on a corrupted {}", file.display()),
            Err(e) => format!("{e:#}"),
        };
        ensure!(err.contains(message), "{}: {err}", file.display());
        ensure!(std::fs::read(file)? == bad, "the agent rewrote {}", file.display());
        // The dataplane it refused to take over still forwards.
        ensure!(ping(&a.netns, b.ip), "pods lost their network");
        std::fs::write(file, if file == &pods { &good_pods } else { &good_store })?;
    }
    cluster.nodes[0].start_agent()?;
    ensure!(ping(&a.netns, b.ip));
    Ok(())
}
