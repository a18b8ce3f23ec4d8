//! Observability end to end: Prometheus (Debian's server) scraping two agents, the
//! Grafana dashboard's queries, the metrics endpoint's bounds, `oxsdnctl monitor` and
//! `oxsdnctl status` on real nodes.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket},
    process::{Child, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use oxsdn_tests::{bins, cluster::UNDERLAY_HOST, netns::Netns, probe, Node, TestCluster};
use serde_json::Value;

const METRICS_PORT: u16 = 9101;
const PROMETHEUS_PORT: u16 = 9090;

/// One HTTP/1.0 exchange from inside `ns`: the status code and the body.
fn http(ns: &Netns, to: SocketAddr, request: String) -> Result<(u16, String)> {
    ns.enter(move || -> Result<(u16, String)> {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(15)))?;
        s.write_all(request.as_bytes())?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        let status = answer.split(' ').nth(1).and_then(|c| c.parse().ok()).context("no HTTP status")?;
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
        Ok((status, body))
    })?
}

fn get(ns: &Netns, to: SocketAddr, path: &str) -> Result<(u16, String)> {
    http(ns, to, format!("GET {path} HTTP/1.0\r\nHost: oxsdn\r\n\r\n"))
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Debian's Prometheus server in `ns`, scraping `targets` every second.
struct Prometheus {
    child: Child,
    netns_name: String,
    address: SocketAddr,
}

impl Prometheus {
    fn start(cluster: &TestCluster, targets: &[SocketAddr]) -> Result<Prometheus> {
        let dir = cluster.dir.join("prometheus");
        std::fs::create_dir_all(&dir)?;
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: oxsdn\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        std::fs::write(dir.join("prometheus.yml"), config)?;
        let address: SocketAddr = format!("{UNDERLAY_HOST}:{PROMETHEUS_PORT}").parse()?;
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let child = cluster
            .underlay
            .command("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={address}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting prometheus (scripts/setup.sh installs it)")?;
        let prometheus = Prometheus { child, netns_name: cluster.underlay.name.clone(), address };
        let start = Instant::now();
        while !matches!(get(&prometheus.netns(), address, "/-/ready"), Ok((200, _))) {
            if start.elapsed() > Duration::from_secs(30) {
                bail!("prometheus not ready: {}", std::fs::read_to_string(dir.join("prometheus.log"))?);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(prometheus)
    }

    fn netns(&self) -> Netns {
        Netns::borrowed(&self.netns_name)
    }

    /// An instant query: the result vector (empty if nothing matches); an error if
    /// Prometheus refuses the query.
    fn query(&self, promql: &str) -> Result<Vec<Value>> {
        let (status, body) = get(&self.netns(), self.address, &format!("/api/v1/query?query={}", url_encode(promql)))?;
        let answer: Value = serde_json::from_str(&body).with_context(|| format!("HTTP {status}: {body}"))?;
        if answer["status"] != "success" {
            bail!("query {promql} failed: {body}");
        }
        Ok(answer["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// The value of a query that returns one series.
    fn value(&self, promql: &str) -> Result<f64> {
        let result = self.query(promql)?;
        let [series] = result.as_slice() else { bail!("{promql} returned {} series: {result:?}", result.len()) };
        Ok(series["value"][1].as_str().context("no value")?.parse()?)
    }

    /// Waits until `promql`'s single value satisfies `ok` (scrapes come every second).
    fn wait_for(&self, promql: &str, ok: impl Fn(f64) -> bool) -> Result<f64> {
        let start = Instant::now();
        loop {
            match self.value(promql) {
                Ok(v) if ok(v) => return Ok(v),
                other if start.elapsed() > Duration::from_secs(20) => bail!("{promql}: {other:?}"),
                _ => std::thread::sleep(Duration::from_millis(300)),
            }
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `n` UDP datagrams from `from` to `to:port`, 1 ms apart.
fn send_udp(from: &Netns, to: Ipv4Addr, port: u16, n: usize) -> Result<()> {
    from.enter(move || -> Result<()> {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        for _ in 0..n {
            s.send_to(b"oxsdn", (to, port))?;
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    })?
}

fn metrics_target(node: &Node) -> SocketAddr {
    SocketAddr::from((node.ip, METRICS_PORT))
}

#[test]
fn prometheus_sees_a_known_number_of_drops_between_isolated_projects() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.agent_args = vec!["--metrics-address".into(), format!("{{NODE_IP}}:{METRICS_PORT}")];
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let (n1, n2) = (&cluster.nodes[0], &cluster.nodes[1]);
    let a = n1.add_pod("red", "a")?;
    let c = n1.add_pod("blue", "c")?;
    let e = n2.add_pod("blue", "e")?;
    // Neighbours first: ARP is not isolated, and must not be in the counts below.
    assert!(!probe::ping(&a.netns, c.ip) && !probe::ping(&a.netns, e.ip), "isolated projects reached each other");
    let prometheus = Prometheus::start(&cluster, &[metrics_target(n1), metrics_target(n2)])?;
    let on = |node: &Node| format!("instance=\"{}\"", metrics_target(node));
    for node in [n1, n2] {
        prometheus.wait_for(&format!("up{{{}}}", on(node)), |v| v == 1.0)?;
    }
    let isolated = |node: &Node| format!("oxsdn_drop_packets_total{{{},table=\"80\",rule=\"ISOLATED\"}}", on(node));
    let from_red = format!("oxsdn_drop_source_packets_total{{{},source=\"project\",project=\"red\"}}", on(n1));
    let from_tunnel = format!("oxsdn_drop_source_packets_total{{{},source=\"tunnel\"}}", on(n2));
    let before = [isolated(n1), isolated(n2), from_red.clone(), from_tunnel.clone()]
        .map(|q| prometheus.value(&q).with_context(|| format!("before: {q}")));
    let [b1, b2, b_red, b_tunnel] = before;
    let (b1, b2, b_red, b_tunnel) = (b1?, b2?, b_red?, b_tunnel?);

    // 37 datagrams red -> blue on node1 (dropped there by table 80), 23 to blue on node2
    // (dropped by node2's table 80, arriving from the tunnel).
    send_udp(&a.netns, c.ip, 9999, 37)?;
    send_udp(&a.netns, e.ip, 9999, 23)?;
    prometheus.wait_for(&isolated(n1), |v| v >= b1 + 37.0)?;
    prometheus.wait_for(&isolated(n2), |v| v >= b2 + 23.0)?;
    // Two more scrapes: nothing more arrives.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(prometheus.value(&isolated(n1))? - b1, 37.0);
    assert_eq!(prometheus.value(&isolated(n2))? - b2, 23.0);
    assert_eq!(prometheus.value(&from_red)? - b_red, 37.0, "drops by source project on node1");
    assert_eq!(prometheus.value(&from_tunnel)? - b_tunnel, 23.0, "drops from the tunnel on node2");

    // The rest of the families, on both agents.
    for node in [n1, n2] {
        let i = on(node);
        assert!(
            prometheus
                .value(&format!("oxsdn_cni_request_duration_seconds_count{{{i},command=\"ADD\",result=\"ok\"}}"))?
                >= 1.0
        );
        assert!(prometheus.value(&format!("oxsdn_map_entries{{{i},map=\"PODS\"}}"))? >= 1.0);
        assert_eq!(prometheus.value(&format!("oxsdn_map_capacity{{{i},map=\"PROJECTS\"}}"))?, 65536.0);
        assert_eq!(prometheus.value(&format!("oxsdn_agent_starts_total{{{i}}}"))?, 1.0);
        assert_eq!(prometheus.value(&format!("oxsdn_store_watching{{{i},kind=\"project\"}}"))?, 1.0);
        assert!(
            prometheus.value(&format!("oxsdn_program_loads_total{{{i},program=\"from_pod\",how=\"new\"}}"))? >= 1.0
        );
        assert!(prometheus.value(&format!("sum(oxsdn_rule_packets_total{{{i},table=\"0\"}})"))? >= 1.0);
    }
    // A VNID change reaches the dataplane, and its time is counted.
    cluster.oxsdnctl(&["pod-network", "join-projects", "--to", "red", "blue"])?;
    prometheus
        .wait_for(&format!("oxsdn_store_event_apply_seconds_count{{{},kind=\"project\"}}", on(n1)), |v| v >= 1.0)?;

    // Every query of the Grafana dashboard is valid PromQL over series the agents export.
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/oxsdn.json"
    ))?)?;
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().context("no panels")? {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().context("a target without expr")?;
            let expr = expr
                .replace("$__rate_interval", "10s")
                .replace("$__range", "1m")
                .replace("$instance", &format!("{}|{}", metrics_target(n1), metrics_target(n2)));
            let result = prometheus.query(&expr)?;
            assert!(!result.is_empty(), "panel {:?}: {expr} returns nothing", panel["title"]);
            queries += 1;
        }
    }
    assert!(queries >= 10, "{queries} queries");
    Ok(())
}

#[test]
fn the_metrics_endpoint_is_on_loopback_by_default_and_bounded() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let node = &cluster.nodes[0];
    let local: SocketAddr = format!("127.0.0.1:{METRICS_PORT}").parse()?;
    // Served on the node's loopback, not on its address.
    let (status, body) = get(&node.netns, local, "/metrics")?;
    assert_eq!(status, 200);
    assert!(body.contains("oxsdn_rule_packets_total{") && body.trim_end().ends_with("# EOF"), "{body}");
    assert!(get(&cluster.underlay, metrics_target(node), "/metrics").is_err(), "metrics reachable from the underlay");
    // Only GET /metrics; a request larger than 8 KiB is refused.
    assert_eq!(http(&node.netns, local, "POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n".into())?.0, 405);
    assert_eq!(get(&node.netns, local, "/other")?.0, 404);
    let huge = format!("GET /metrics HTTP/1.0\r\nX-Fill: {}\r\n\r\n", "a".repeat(20_000));
    assert!(http(&node.netns, local, huge).map(|(s, _)| s).unwrap_or(431) >= 400);
    // Idle connections take every slot; they are closed after the header timeout and a
    // scrape gets its answer.
    let idle = node.netns.enter(move || -> std::io::Result<Vec<TcpStream>> {
        (0..40).map(|_| TcpStream::connect_timeout(&local, Duration::from_secs(2))).collect()
    })??;
    let start = Instant::now();
    let (status, _) = get(&node.netns, local, "/metrics")?;
    assert_eq!(status, 200);
    assert!(start.elapsed() < Duration::from_secs(14), "a scrape waited {:?}", start.elapsed());
    drop(idle);
    Ok(())
}

/// `oxsdnctl monitor -o json` on a node, its lines delivered as they come.
struct Monitor {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Monitor {
    fn start(node: &Node, extra: &[&str]) -> Result<Monitor> {
        let mut child = node
            .netns
            .command(bins::oxsdnctl())
            .args(node.store.args())
            .arg("monitor")
            .args(node.node_args())
            .args(["-o", "json"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().context("no stdout")?;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        // Its lease is taken once MONITOR_CONFIG says so.
        let start = Instant::now();
        while monitor_flags(node)? == 0 {
            if start.elapsed() > Duration::from_secs(10) {
                bail!("the monitor did not start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Monitor { child, lines })
    }

    /// The next event matching `want` within `within`.
    fn find(&self, within: Duration, want: impl Fn(&Value) -> bool) -> Result<Value> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).context("no such event in time")?;
            let event: Value = serde_json::from_str(&line)?;
            if want(&event) {
                return Ok(event);
            }
        }
    }

    /// Stops it (SIGTERM) and returns what it printed since the last `find`.
    fn stop(mut self) -> Result<Vec<Value>> {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::Signal::SIGTERM)?;
        let status = self.child.wait()?;
        assert!(status.success(), "monitor exited {status}");
        let mut rest = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            rest.push(serde_json::from_str(&line)?);
        }
        Ok(rest)
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn monitor_flags(node: &Node) -> Result<u32> {
    let maps = oxsdn_common::maps::NodeMaps::open(&node.pin_dir())?;
    Ok(maps.monitor_config.get(&0, 0)?.flags)
}

#[test]
fn a_blocked_connection_shows_in_the_monitor_within_a_second_and_a_flood_is_rate_limited() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let node = &cluster.nodes[0];
    let a = node.add_pod("red", "a")?;
    let c = node.add_pod("blue", "c")?;
    let b = node.add_pod("red", "b")?;
    probe::serve_echo(&c.netns, probe::ECHO_PORT)?;
    let (red, blue) = (cluster.netid("red")?, cluster.netid("blue")?);
    assert!(probe::ping(&a.netns, b.ip));

    let monitor = Monitor::start(node, &[])?;
    // A trace of the same drop reports nothing (trace mode writes no map).
    let trace = node.oxsdnctl_output(&[
        "trace",
        "--node",
        &node.name,
        "--bpffs-dir",
        &node.pin_dir().parent().unwrap().display().to_string(),
        "--from",
        &format!("pod:{}", a.ip),
        "--to",
        &format!("{}:{}", c.ip, probe::ECHO_PORT),
        "--proto",
        "tcp",
        "--src-port",
        "41999",
    ])?;
    assert!(String::from_utf8_lossy(&trace.stdout).contains("Verdict: TC_ACT_SHOT"), "{trace:?}");
    let sent = Instant::now();
    assert!(!probe::tcp_echo(&a.netns, c.ip, probe::ECHO_PORT), "red reached blue");
    let event = monitor.find(Duration::from_secs(1), |e| e["dst"] == c.ip.to_string() && e["protocol"] == "tcp")?;
    assert!(sent.elapsed() < Duration::from_secs(1) + Duration::from_millis(700), "took {:?}", sent.elapsed());
    assert_ne!(event["sport"], 41999, "the trace's packet was reported: {event}");
    assert_eq!(event["verdict"], "DROPPED", "{event}");
    assert_eq!((event["table"].as_u64(), event["rule"].as_str()), (Some(80), Some("ISOLATED")), "{event}");
    assert_eq!(event["flow"], "table=80, n_packets=0, n_bytes=0, priority=0 actions=drop", "{event}");
    assert_eq!((event["reg0"].as_u64(), event["reg1"].as_u64()), (Some(red.into()), Some(blue.into())), "{event}");
    assert_eq!(event["src"], a.ip.to_string());
    assert_eq!(event["dport"], probe::ECHO_PORT);
    assert_eq!(event["source_project"], "red");
    assert!(event["ingress"].as_str().unwrap().starts_with("pod veth "), "{event}");
    // Forwards are not reported without --all.
    assert!(probe::ping(&a.netns, b.ip));
    let rest = monitor.stop()?;
    assert!(rest.iter().all(|e| e["verdict"] != "FORWARDED"), "{rest:?}");
    assert_eq!(monitor_flags(node)?, 0, "the lease outlived the monitor");

    // A flood: 3,000 datagrams in about a second against 20 events/s and a burst of 5
    // per CPU.
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)? as u64;
    let monitor = Monitor::start(node, &["--rate", "20", "--burst", "5"])?;
    let start = Instant::now();
    a.netns.enter({
        let to = c.ip;
        move || -> Result<()> {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            for _ in 0..3000 {
                s.send_to(b"flood", (to, 9999))?;
                std::thread::sleep(Duration::from_micros(300));
            }
            Ok(())
        }
    })??;
    std::thread::sleep(Duration::from_millis(1500));
    let elapsed = start.elapsed().as_secs_f64();
    let lines = monitor.stop()?;
    let events = lines.iter().filter(|e| e["verdict"] == "DROPPED").count() as f64;
    let summary = lines.last().context("no summary")?;
    let suppressed = summary["suppressed"].as_u64().context("no suppressed count")?;
    let bound = cpus as f64 * (5.0 + 20.0 * elapsed);
    assert!(events <= bound, "{events} events in {elapsed:.1} s, bound {bound}");
    assert!(suppressed >= 3000 - bound as u64, "suppressed {suppressed} of 3000");
    assert_eq!(summary["events"].as_u64(), Some(events as u64));
    Ok(())
}

#[test]
fn a_monitor_killed_loses_its_lease() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let node = &cluster.nodes[0];
    let mut monitor = Monitor::start(node, &["--all"])?;
    monitor.child.kill()?;
    monitor.child.wait()?;
    // The lease runs out after 5 s; the agent looks every 5 s.
    let start = Instant::now();
    while monitor_flags(node)? != 0 {
        assert!(start.elapsed() < Duration::from_secs(15), "the dead monitor's lease stays");
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn failed_checks(report: &Value) -> Vec<String> {
    report["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["ok"] == false)
        .map(|c| c["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn status_is_healthy_and_finds_a_dead_agent_and_a_removed_link_pin() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let a = cluster.nodes[0].add_pod("red", "a")?;
    let c = cluster.nodes[0].add_pod("blue", "c")?;
    cluster.oxsdnctl(&["create", "service", "web", "-n", "red", "--tcp", "80:8080"])?;
    assert!(!probe::ping(&a.netns, c.ip));
    let (ok, report) = cluster.nodes[0].status()?;
    assert!(ok, "{report:#}");
    let checks: Vec<&str> = report["checks"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(checks, ["agent", "cni socket", "store", "sync", "programs", "maps", "cni config", "drops"]);
    let drops = &report["checks"][7]["detail"];
    assert!(drops.as_str().unwrap().contains("table 80 ISOLATED"), "{drops}");

    // A link pin removed: its program is detached from tun0.
    let node = &mut cluster.nodes[0];
    std::fs::remove_file(node.pin_dir().join("links/tun0"))?;
    let (ok, report) = node.status()?;
    assert!(!ok);
    assert_eq!(failed_checks(&report), ["programs"], "{report:#}");
    // The next agent puts it back.
    node.stop_agent();
    node.start_agent()?;
    let (ok, report) = node.status()?;
    assert!(ok, "{report:#}");

    // The agent killed: no answer on its socket (the dataplane itself stays).
    node.kill_agent();
    let (ok, report) = node.status()?;
    assert!(!ok);
    assert_eq!(failed_checks(&report), ["agent", "cni socket"], "{report:#}");
    Ok(())
}

#[test]
fn status_finds_the_store_down() -> Result<()> {
    let mut cluster = TestCluster::with_etcd(&[])?;
    cluster.add_node("node1")?;
    let (ok, report) = cluster.nodes[0].status()?;
    assert!(ok, "{report:#}");
    cluster.etcd.as_mut().context("etcd")?.stop();
    let start = Instant::now();
    // The agent notices its watches broke; oxsdnctl cannot read the store either.
    loop {
        let (ok, report) = cluster.nodes[0].status()?;
        let failed = failed_checks(&report);
        if failed == ["store", "sync"] {
            assert!(!ok);
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{report:#}");
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}

/// The dashboard imports as is: Grafana's dashboard model (panels with unique ids on a
/// 24-column grid, Prometheus targets on the `datasource` variable, the `instance`
/// variable), and queries of oxsdn's metrics only. (Their PromQL and series are checked
/// against a real Prometheus in `prometheus_sees_a_known_number_of_drops…`.)
#[test]
fn the_grafana_dashboard_has_grafanas_structure() -> Result<()> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/grafana/oxsdn.json"))?;
    let d: Value = serde_json::from_str(&text)?;
    assert!(d["title"].is_string() && d["uid"].is_string() && d["schemaVersion"].as_u64() >= Some(30), "{d}");
    let variables: Vec<&str> =
        d["templating"]["list"].as_array().context("no variables")?.iter().filter_map(|v| v["name"].as_str()).collect();
    assert_eq!(variables, ["datasource", "instance"]);
    let mut ids = std::collections::HashSet::new();
    for panel in d["panels"].as_array().context("no panels")? {
        assert!(ids.insert(panel["id"].as_u64().context("panel id")?), "panel id twice: {panel}");
        assert!(["timeseries", "stat"].contains(&panel["type"].as_str().unwrap_or("")), "{panel}");
        assert!(panel["title"].is_string());
        let grid = &panel["gridPos"];
        let (x, w, h) = (grid["x"].as_u64(), grid["w"].as_u64(), grid["h"].as_u64());
        assert!(
            matches!((x, w, h), (Some(x), Some(w), Some(h)) if x + w <= 24 && h > 0 && grid["y"].is_u64()),
            "{grid}"
        );
        assert_eq!(panel["datasource"]["uid"], "${datasource}");
        let targets = panel["targets"].as_array().context("no targets")?;
        assert!(!targets.is_empty());
        for t in targets {
            let expr = t["expr"].as_str().context("no expr")?;
            assert!(t["refId"].is_string() && expr.contains("instance=~\"$instance\""), "{t}");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("oxsdn") {
                    assert!(word.starts_with("oxsdn_") && !word.ends_with('_'), "{word} in {expr}");
                }
            }
        }
    }
    assert!(ids.len() >= 10);
    Ok(())
}
