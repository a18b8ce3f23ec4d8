//! The flood figures (issue 17): a namespace on the underlay sends VXLAN from an address
//! that is no node's to node2 as fast as it can, while a pod on node1 sends TCP to a pod
//! on node2. Three two-node clusters side by side, whose agents differ only in the
//! prefilter: native XDP, generic XDP, none (`--prefilter off`: the TC programs drop the
//! flood at table 10). Per round and cluster: the pods' throughput without and during the
//! flood, and a fixed number of flood packets alone, with the rate node2 drops them at
//! and the CPU time each cost (src/cpu.rs).

use std::{
    net::Ipv4Addr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use oxsdn_tests::{
    cluster::UNDERLAY_PREFIX,
    flows::{packets, FlowLine},
    frames,
    netns::Netns,
    probe::{Iperf3Server, RawSocket},
    Node, Pod, TestCluster,
};
use serde_json::{json, Value};

use crate::{
    cpu::{Cost, Meter},
    measure::Stats,
    report,
};

/// The clusters compared, by the agents' `--prefilter`.
const VARIANTS: [(&str, &str); 3] = [("xdp-native", "native"), ("xdp-generic", "generic"), ("tc-only", "off")];
/// The flooding namespace's address on the underlay: no node's.
const FLOODER_HOST: u8 = 250;

/// How long each throughput sample runs and how many flood packets the drop figures send.
#[derive(Clone, Copy)]
pub struct Plan {
    pub rounds: usize,
    pub tcp_seconds: u32,
    pub flood_packets: u64,
    pub idle: Duration,
}

/// One cluster: the pods, the flooding namespace and its frame, and node2.
struct Setup {
    name: &'static str,
    flooder: Flooder,
    client: Pod,
    server: Pod,
    _flooder_ns: Netns,
    cluster: TestCluster,
}

impl Setup {
    fn new(name: &'static str, prefilter: &str) -> Result<Setup> {
        let mut cluster = TestCluster::new(&[])?;
        cluster.agent_args = vec!["--prefilter".into(), prefilter.into()];
        cluster.add_node("node1")?;
        cluster.add_node("node2")?;
        let client = cluster.nodes[0].add_pod("bench", "client")?;
        let server = cluster.nodes[1].add_pod("bench", "server")?;
        let ns = Netns::create(&format!("{}-flooder", cluster.prefix))?;
        cluster.underlay.ip(&["link", "add", "f0", "type", "veth", "peer", "name", "eth0", "netns", &ns.name])?;
        cluster.underlay.ip(&["link", "set", "f0", "master", "br0", "up"])?;
        let src: Ipv4Addr = format!("{UNDERLAY_PREFIX}.{FLOODER_HOST}").parse()?;
        ns.ip(&["addr", "add", &format!("{src}/24"), "dev", "eth0"])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        let node2 = &cluster.nodes[1];
        let inner = frames::udp(
            [2, 0, 0, 0, 0, 9],
            frames::pod_mac(server.ip),
            "10.129.0.99".parse()?,
            server.ip,
            9,
            b"oxsdn-bench-flood",
        );
        let mut frame = oxsdn_dataplane::tracer::vxlan_frame(src, node2.ip, 4789, cluster.netid("bench")?, &inner);
        frame[0..6].copy_from_slice(&node2.netns.mac("eth0")?);
        frame[6..12].copy_from_slice(&ns.mac("eth0")?);
        let flooder = Flooder::open(&ns, frame)?;
        Ok(Setup { name, flooder, client, server, _flooder_ns: ns, cluster })
    }

    fn node2(&self) -> &Node {
        &self.cluster.nodes[1]
    }

    /// Flood packets node2 has counted as dropped by table 10, at either hook.
    fn dropped(&self) -> Result<u64> {
        let node2 = self.node2();
        let flows: Vec<FlowLine> = node2.dump_flows()?;
        let xdp = format!("hook=xdp,in_port=eth0,udp,nw_dst={},tp_dst=4789", node2.ip);
        Ok(packets(&flows, 10, 0, "") + packets(&flows, 10, 0, &xdp))
    }

    /// TCP from the client pod to the server pod for `secs` seconds: Gbit/s received.
    fn tcp(&self, secs: u32) -> Result<f64> {
        let server = Iperf3Server::start(&self.server.netns)?;
        let out = self
            .client
            .netns
            .command("iperf3")
            .args(["-c", &self.server.ip.to_string(), "-J", "-A", "0,1", "-t", &secs.to_string()])
            .output()
            .context("running iperf3")?;
        server.wait();
        let v: Value = serde_json::from_slice(&out.stdout).context("iperf3 output")?;
        v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .map(|bps| bps / 1e9)
            .with_context(|| format!("no TCP receiver count from iperf3 in {}: {}", self.name, v["error"]))
    }
}

/// The flooding namespace's packet socket, which sends one frame again and again past
/// the qdisc.
struct Flooder {
    socket: Arc<RawSocket>,
    frame: Arc<Vec<u8>>,
}

impl Flooder {
    fn open(ns: &Netns, frame: Vec<u8>) -> Result<Flooder> {
        let socket = RawSocket::open(ns, "eth0")?;
        socket.bypass_qdisc()?;
        Ok(Flooder { socket: Arc::new(socket), frame: Arc::new(frame) })
    }

    /// `count` frames as fast as they go.
    fn burst(&self, count: u64) -> Result<()> {
        let sent = self.socket.send_repeatedly(&self.frame, count, &AtomicBool::new(false))?;
        if sent != count {
            bail!("sent {sent} of {count} flood frames");
        }
        Ok(())
    }

    /// Floods on a thread of its own until the returned handle stops it.
    fn start(&self) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let (socket, frame, flag) = (self.socket.clone(), self.frame.clone(), stop.clone());
        let started = Instant::now();
        let thread = std::thread::spawn(move || socket.send_repeatedly(&frame, u64::MAX, &flag));
        Flood { stop, started, thread }
    }
}

struct Flood {
    stop: Arc<AtomicBool>,
    started: Instant,
    thread: std::thread::JoinHandle<Result<u64>>,
}

impl Flood {
    /// Stops it: frames sent per second.
    fn stop(self) -> Result<f64> {
        self.stop.store(true, Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64();
        let sent = self.thread.join().map_err(|_| anyhow::anyhow!("the flooding thread panicked"))??;
        Ok(sent as f64 / secs)
    }
}

/// The samples of one cluster, one per round.
#[derive(Default)]
struct Samples {
    tcp_without: Vec<f64>,
    tcp_during: Vec<f64>,
    sent_pps_during: Vec<f64>,
    dropped_pps_during: Vec<f64>,
    drop_pps: Vec<f64>,
    cpu_ns: Vec<f64>,
    cgroup_cpu_ns: Vec<f64>,
}

/// One round on one cluster.
fn round(s: &Setup, meter: &Meter, plan: &Plan, out: &mut Samples) -> Result<()> {
    out.tcp_without.push(s.tcp(plan.tcp_seconds)?);
    let before = s.dropped()?;
    let flood = s.flooder.start();
    let during = s.tcp(plan.tcp_seconds);
    let started = flood.started;
    let sent_pps = flood.stop()?;
    let secs = started.elapsed().as_secs_f64();
    out.tcp_during.push(during?);
    out.sent_pps_during.push(sent_pps);
    out.dropped_pps_during.push((s.dropped()? - before) as f64 / secs);

    // A fixed amount of flood alone, its cost counted as the other CPU figures are.
    let background = meter.background(plan.idle)?;
    let before = s.dropped()?;
    let usage = {
        let _inside = meter.inside()?;
        let start = meter.read()?;
        s.flooder.burst(plan.flood_packets)?;
        // What the node still has queued drains before the reading.
        std::thread::sleep(Duration::from_millis(20));
        start.until(&meter.read()?)
    };
    let dropped = (s.dropped()? - before) as f64;
    if dropped == 0.0 {
        bail!("{}: node2 counted none of {} flood packets", s.name, plan.flood_packets);
    }
    let cost = Cost::of(usage, background);
    out.drop_pps.push(dropped / usage.wall_s);
    out.cpu_ns.push(cost.machine_s * 1e9 / dropped);
    if let Some(c) = cost.cgroup_s {
        out.cgroup_cpu_ns.push(c * 1e9 / dropped);
    }
    eprintln!(
        "flood {:<12} TCP {:.2} → {:.2} Gbit/s during the flood ({:.0} sent, {:.0} dropped pkt/s); alone: {:.0} dropped pkt/s, {:.0} CPU-ns/packet",
        s.name,
        out.tcp_without.last().unwrap_or(&0.0),
        out.tcp_during.last().unwrap_or(&0.0),
        sent_pps,
        out.dropped_pps_during.last().unwrap_or(&0.0),
        out.drop_pps.last().unwrap_or(&0.0),
        out.cpu_ns.last().unwrap_or(&0.0),
    );
    Ok(())
}

/// Per-round ratios of two series.
fn ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).filter(|(_, b)| **b > 0.0).map(|(a, b)| a / b).collect()
}

fn median_of(samples: &[f64]) -> Value {
    if samples.is_empty() {
        return Value::Null;
    }
    json!(Stats::of(samples).median)
}

/// The flood figures (see the module documentation), as JSON.
pub fn measure(meter: &Meter, plan: &Plan) -> Result<Value> {
    let mut setups = Vec::new();
    for (name, prefilter) in VARIANTS {
        eprintln!("setting up flood/{name}");
        setups.push(Setup::new(name, prefilter)?);
    }
    let mut samples: Vec<Samples> = setups.iter().map(|_| Samples::default()).collect();
    for r in 0..plan.rounds {
        let mut order: Vec<usize> = (0..setups.len()).collect();
        if r % 2 == 1 {
            order.reverse();
        }
        for i in order {
            round(&setups[i], meter, plan, &mut samples[i])?;
        }
    }
    let mut variants = serde_json::Map::new();
    for (s, x) in setups.iter().zip(&samples) {
        variants.insert(
            s.name.to_string(),
            json!({
                "tcp_gbps_without_flood": report::figure(&x.tcp_without),
                "tcp_gbps_during_flood": report::figure(&x.tcp_during),
                "during_vs_without": median_of(&ratios(&x.tcp_during, &x.tcp_without)),
                "flood_sent_pps_during_tcp": report::figure(&x.sent_pps_during),
                "flood_dropped_pps_during_tcp": report::figure(&x.dropped_pps_during),
                "flood_alone_dropped_pps": report::figure(&x.drop_pps),
                "flood_alone_cpu_ns_per_packet": report::figure(&x.cpu_ns),
                "flood_alone_cgroup_cpu_ns_per_packet": (!x.cgroup_cpu_ns.is_empty()).then(|| report::figure(&x.cgroup_cpu_ns)),
            }),
        );
    }
    let tc = &samples[2];
    let vs_tc_only = |xdp: &Samples| {
        json!({
            "during_vs_without": median_of(&ratios(
                &ratios(&xdp.tcp_during, &xdp.tcp_without),
                &ratios(&tc.tcp_during, &tc.tcp_without),
            )),
            "tcp_gbps_during_flood": median_of(&ratios(&xdp.tcp_during, &tc.tcp_during)),
            "flood_alone_dropped_pps": median_of(&ratios(&xdp.drop_pps, &tc.drop_pps)),
            "flood_alone_cpu_ns_per_packet": median_of(&ratios(&xdp.cpu_ns, &tc.cpu_ns)),
        })
    };
    Ok(json!({
        "what": "VXLAN from an unknown source flooding node2 while a pod on node1 sends TCP (1 stream) to a pod on node2; per cluster (agents' --prefilter), and each XDP mode against TC only, medians of per-round ratios",
        "plan": { "rounds": plan.rounds, "tcp_seconds": plan.tcp_seconds, "flood_packets": plan.flood_packets },
        "variants": Value::Object(variants),
        "xdp_native_vs_tc_only": vs_tc_only(&samples[0]),
        "xdp_generic_vs_tc_only": vs_tc_only(&samples[1]),
    }))
}
