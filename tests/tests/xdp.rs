//! The underlay device's XDP prefilter (`xdp_underlay`): VXLAN to the node's port from
//! no known node, VXLAN with outer headers the host would refuse, and the deny list's
//! sources are dropped before the kernel builds an skb, and counted as table 0's and
//! 10's `hook=xdp` rules; everything else passes to the host stack and the TC programs.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use oxsdn_tests::{
    flows::{packets, FlowLine},
    frames::{self, Mac},
    netns::Netns,
    probe::{ping, RawSocket},
    Node, Pod, TestCluster,
};

/// A second address on the underlay bridge: no node's, and none the cluster uses.
const STRANGER: &str = "172.22.122.250";
/// The deny-list test's network, which holds `STRANGER`.
const DENIED: &str = "172.22.122.240/28";
const CAPTURE: Duration = Duration::from_millis(300);

/// `hook=xdp` rule texts of a node whose underlay device is eth0.
fn unknown_node_rule(node: &Node) -> String {
    format!("hook=xdp,in_port=eth0,udp,nw_dst={},tp_dst=4789", node.ip)
}
fn malformed_rule(node: &Node) -> String {
    format!("hook=xdp,in_port=eth0,udp,nw_dst={},tp_dst=4789,outer=invalid", node.ip)
}
const DENIED_RULE: &str = "hook=xdp,in_port=eth0,ip,nw_src=deny_list";

fn unknown_node_drops(flows: &[FlowLine], node: &Node) -> u64 {
    packets(flows, 10, 0, &unknown_node_rule(node))
}
fn malformed_drops(flows: &[FlowLine], node: &Node) -> u64 {
    packets(flows, 0, 500, &malformed_rule(node))
}
fn denied_drops(flows: &[FlowLine]) -> u64 {
    packets(flows, 0, 500, DENIED_RULE)
}

/// What the kernel counted as dropped by an XDP program on a veth of `ns`.
fn veth_xdp_drops(ns: &Netns, ifname: &str) -> Result<u64> {
    let out = oxsdn_tests::netns::run(ns.command("ethtool").args(["-S", ifname]))?;
    let drops: Vec<u64> = out
        .lines()
        .filter_map(|l| l.trim().split_once(": "))
        .filter(|(name, _)| name.ends_with("xdp_drops"))
        .filter_map(|(_, v)| v.trim().parse().ok())
        .collect();
    if drops.is_empty() {
        bail!("no xdp_drops counter in `ethtool -S {ifname}`:\n{out}");
    }
    Ok(drops.iter().sum())
}

/// `ip link` of a device: the mode of its XDP program ("xdp" native, "xdpgeneric"), if any.
fn xdp_attachment(ns: &Netns, ifname: &str) -> Result<Option<String>> {
    let v: serde_json::Value = serde_json::from_str(&ns.ip(&["-d", "-j", "link", "show", ifname])?)?;
    Ok(match v[0]["xdp"]["mode"].as_u64() {
        None | Some(0) => None,
        Some(1) => Some("native".into()),
        Some(2) => Some("generic".into()),
        Some(other) => Some(format!("mode {other}")),
    })
}

/// Recomputes the outer IPv4 header checksum of an Ethernet frame.
fn fix_ip_checksum(f: &mut [u8]) {
    f[24..26].copy_from_slice(&[0, 0]);
    let sum: u32 = f[14..34].chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum();
    let folded = (sum & 0xffff) + (sum >> 16);
    let folded = (folded & 0xffff) + (folded >> 16);
    f[24..26].copy_from_slice(&(!(folded as u16)).to_be_bytes());
}

/// Two nodes, a pod on node1 (the victim) whose eth0 is watched, and a raw socket on
/// node1's port of the underlay bridge, which puts frames straight into node1's eth0
/// (past the bridge's own checks).
struct Setup {
    victim: Pod,
    red: u32,
    watch: RawSocket,
    tx: RawSocket,
    node1_mac: Mac,
    node2_mac: Mac,
    cluster: TestCluster,
}

impl Setup {
    fn new() -> Result<Setup> {
        let mut cluster = TestCluster::new(&[])?;
        // Native, as `auto` attaches it on a NIC with driver XDP (on a veth it attaches
        // none), so the veth's own XDP drop counter confirms the prefilter's.
        cluster.agent_args = vec!["--prefilter".into(), "native".into()];
        cluster.add_node("node1")?;
        cluster.add_node("node2")?;
        cluster.underlay.ip(&["addr", "add", &format!("{STRANGER}/24"), "dev", "br0"])?;
        let victim = cluster.nodes[0].add_pod("red", "victim")?;
        let red = cluster.netid("red")?;
        let watch = RawSocket::open(&victim.netns, "eth0")?;
        let tx = RawSocket::open(&cluster.underlay, "p1")?;
        let (node1_mac, node2_mac) = (cluster.nodes[0].netns.mac("eth0")?, cluster.nodes[1].netns.mac("eth0")?);
        Ok(Setup { victim, red, watch, tx, node1_mac, node2_mac, cluster })
    }

    fn node1(&self) -> &Node {
        &self.cluster.nodes[0]
    }

    /// A VXLAN frame from `src` to node1 with red's VNI, carrying a UDP datagram to the
    /// victim tagged `marker`, without a UDP checksum (as nodes send VXLAN).
    fn vxlan(&self, src: Ipv4Addr, marker: &[u8]) -> Vec<u8> {
        let inner = frames::udp(
            [2, 0, 0, 0, 0, 9],
            frames::pod_mac(self.victim.ip),
            "10.129.0.99".parse().unwrap(),
            self.victim.ip,
            9,
            marker,
        );
        self.vxlan_around(src, &inner)
    }

    fn vxlan_around(&self, src: Ipv4Addr, inner: &[u8]) -> Vec<u8> {
        let mut payload = vec![0x08, 0, 0, 0];
        payload.extend_from_slice(&(self.red << 8).to_be_bytes());
        payload.extend_from_slice(inner);
        let mut f = frames::udp(self.node2_mac, self.node1_mac, src, self.node1().ip, 4789, &payload);
        f[40..42].copy_from_slice(&[0, 0]);
        f
    }

    /// Sends `frame` into node1's eth0; whether the victim received it.
    fn delivered(&self, frame: &[u8], marker: &[u8]) -> Result<bool> {
        self.tx.send(frame)?;
        Ok(!self.watch.capture(CAPTURE, |f| frames::contains(f, marker)).is_empty())
    }

    /// `oxsdnctl trace` on node1 of UDP from `src` to the victim's port 9, arriving on the
    /// underlay as VXLAN from `outer_src` with red's VNI.
    fn trace_udp_from_underlay(&self, outer_src: &str, src: &str) -> Result<serde_json::Value> {
        let node1 = self.node1();
        let text = oxsdn_tests::netns::run(
            node1
                .netns
                .command(oxsdn_tests::bins::oxsdnctl())
                .args(["trace", "--node", &node1.name, "-o", "json", "--bpffs-dir"])
                .arg(node1.pin_dir().parent().context("pins in a bpffs directory")?)
                .args(["--from", &format!("underlay:{outer_src}:{}", self.red), "--src", src])
                .args(["--to", &format!("{}:9", self.victim.ip), "--proto", "udp"]),
        )?;
        Ok(serde_json::from_str(&text)?)
    }

    /// VXLAN from node2's address whose outer headers vxlan0 or the host's IP or UDP
    /// layer refuses, each with its marker.
    fn malformed(&self) -> Vec<(&'static str, Vec<u8>)> {
        let node2 = self.cluster.nodes[1].ip;
        let frame = |marker: &'static str, edit: &dyn Fn(&mut Vec<u8>)| {
            let mut f = self.vxlan(node2, marker.as_bytes());
            edit(&mut f);
            (marker, f)
        };
        let short_inner = |marker: &'static str| {
            // A UDP payload shorter than the VXLAN and inner Ethernet headers.
            let mut f = self.vxlan_around(node2, &marker.as_bytes()[..10]);
            f.truncate(14 + 20 + 8 + 8 + 10);
            (marker, f)
        };
        vec![
            frame("oxsdn-bad-ip-checksum", &|f| f[24] ^= 0x55),
            frame("oxsdn-ip-length-past-frame", &|f| {
                let len = u16::from_be_bytes([f[16], f[17]]) + 8;
                f[16..18].copy_from_slice(&len.to_be_bytes());
                fix_ip_checksum(f);
            }),
            frame("oxsdn-udp-length-past-ip", &|f| {
                let len = u16::from_be_bytes([f[38], f[39]]) + 8;
                f[38..40].copy_from_slice(&len.to_be_bytes());
            }),
            frame("oxsdn-vxlan-extra-flag", &|f| f[42] = 0x0c),
            frame("oxsdn-vxlan-reserved-bits", &|f| f[49] = 1),
            short_inner("oxsdn-short-vxlan"),
        ]
    }
}

/// VXLAN from an address that is no node's, and VXLAN from a node with outer headers the
/// host would refuse, are dropped at node1's XDP hook (the veth counts an XDP drop) and
/// counted by table 10's and table 0's `hook=xdp` rules; a sound frame from node2
/// passes and is delivered. With `--prefilter off` the same frames are not delivered
/// either: the prefilter drops only what the pipeline drops later anyway.
#[test]
fn unknown_and_malformed_vxlan_is_dropped_at_xdp_and_counted() -> Result<()> {
    let mut s = Setup::new()?;
    let (node1, node2) = (s.node1(), &s.cluster.nodes[1]);
    assert_eq!(xdp_attachment(&node1.netns, "eth0")?.as_deref(), Some("native"), "veth has native XDP");
    let header = node1.dump_flows_text()?;
    assert!(
        header
            .lines()
            .next()
            .unwrap_or_default()
            .contains("prefilter=xdp_underlay on eth0 (native XDP), deny_list=none"),
        "{header}"
    );

    let flows = node1.dump_flows()?;
    let (unknown, malformed) = (unknown_node_drops(&flows, node1), malformed_drops(&flows, node1));
    let tc_unknown = packets(&flows, 10, 0, "");
    let xdp_drops = veth_xdp_drops(&node1.netns, "eth0")?;

    assert!(!s.delivered(&s.vxlan(STRANGER.parse()?, b"oxsdn-unknown-source"), b"oxsdn-unknown-source")?);
    let cases = s.malformed();
    for (marker, frame) in &cases {
        assert!(!s.delivered(frame, marker.as_bytes())?, "{marker} was delivered");
    }
    let flows = node1.dump_flows()?;
    assert_eq!(unknown_node_drops(&flows, node1) - unknown, 1, "unknown source not counted at XDP");
    assert_eq!(malformed_drops(&flows, node1) - malformed, cases.len() as u64, "malformed frames counted at XDP");
    assert_eq!(packets(&flows, 10, 0, ""), tc_unknown, "an XDP drop reached table 10 at TC");
    assert_eq!(veth_xdp_drops(&node1.netns, "eth0")? - xdp_drops, 1 + cases.len() as u64, "the veth's XDP drops");

    // A sound frame from node2 passes XDP uncounted and is delivered by the TC pipeline.
    assert!(s.delivered(&s.vxlan(node2.ip, b"oxsdn-sound-frame"), b"oxsdn-sound-frame")?);
    let after = node1.dump_flows()?;
    assert_eq!(unknown_node_drops(&after, node1), unknown_node_drops(&flows, node1), "the sound frame was counted");
    assert_eq!(malformed_drops(&after, node1), malformed_drops(&flows, node1), "the sound frame was counted");

    // Without the prefilter, the pipeline drops the same frames.
    let node1 = &mut s.cluster.nodes[0];
    node1.agent_args = vec!["--prefilter".into(), "off".into()];
    node1.stop_agent();
    node1.start_agent()?;
    assert_eq!(xdp_attachment(&s.node1().netns, "eth0")?, None, "--prefilter off detaches it");
    assert!(s.node1().dump_flows_text()?.lines().next().unwrap_or_default().contains("prefilter=off"));
    let before = s.node1().dump_flows()?;
    assert!(!s.delivered(&s.vxlan(STRANGER.parse()?, b"oxsdn-unknown-source"), b"oxsdn-unknown-source")?);
    for (marker, frame) in &cases {
        assert!(!s.delivered(frame, marker.as_bytes())?, "{marker} was delivered without the prefilter");
    }
    assert!(s.delivered(&s.vxlan(s.cluster.nodes[1].ip, b"oxsdn-sound-frame"), b"oxsdn-sound-frame")?);
    let after = s.node1().dump_flows()?;
    assert_eq!(packets(&after, 10, 0, "") - packets(&before, 10, 0, ""), 1, "table 10 at TC drops the unknown source");
    assert_eq!(unknown_node_drops(&after, s.node1()), unknown_node_drops(&before, s.node1()));
    Ok(())
}

/// Every IPv4 frame from a denied network is dropped at XDP and counted, whatever it
/// carries; host traffic from elsewhere, ARP (even from a denied address) and known
/// nodes' VXLAN pass. A deny list the agent cannot honour stops it with a clear error.
#[test]
fn denied_sources_are_dropped_while_host_traffic_arp_and_known_nodes_pass() -> Result<()> {
    let mut s = Setup::new()?;
    for (args, error) in [
        (vec!["--prefilter-deny", "172.22.122.250/28"], "has host bits set: did you mean 172.22.122.240/28?"),
        (vec!["--prefilter", "off", "--prefilter-deny", DENIED], "--prefilter-deny needs the prefilter"),
        (vec!["--prefilter-deny", DENIED], "which --prefilter auto does not attach to this underlay device"),
    ] {
        let node1 = &mut s.cluster.nodes[0];
        node1.agent_args = args.iter().map(|a| a.to_string()).collect();
        node1.stop_agent();
        let failed = node1.start_agent().expect_err("the agent started with a deny list it cannot honour");
        assert!(format!("{failed:#}").contains(error), "{failed:#}");
    }
    let node1 = &mut s.cluster.nodes[0];
    node1.agent_args = ["--prefilter", "native", "--prefilter-deny", DENIED].map(String::from).to_vec();
    node1.start_agent()?;
    let node1 = s.node1();
    let header = node1.dump_flows_text()?;
    assert!(header.lines().next().unwrap_or_default().contains(&format!("deny_list={DENIED}")), "{header}");

    let (flows, xdp_drops) = (node1.dump_flows()?, veth_xdp_drops(&node1.netns, "eth0")?);
    let (denied, unknown) = (denied_drops(&flows), unknown_node_drops(&flows, node1));
    let node_ip = node1.ip.to_string();
    let from = |src: &str| {
        s.cluster
            .underlay
            .command("ping")
            .args(["-c", "1", "-W", "1", "-I", src, &node_ip])
            .output()
            .map(|o| o.status.success())
    };
    assert!(!from(STRANGER)?, "a denied source reached the node");
    // VXLAN from the denied network counts as denied, before table 10 looks at it.
    assert!(!s.delivered(&s.vxlan(STRANGER.parse()?, b"oxsdn-denied-vxlan"), b"oxsdn-denied-vxlan")?);
    let flows = node1.dump_flows()?;
    assert_eq!(denied_drops(&flows) - denied, 2, "the ping and the VXLAN frame");
    assert_eq!(unknown_node_drops(&flows, node1), unknown);
    assert_eq!(veth_xdp_drops(&node1.netns, "eth0")? - xdp_drops, 2);
    // The stranger's ARP passed: node1 knows its MAC.
    assert!(node1.netns.ip(&["neigh", "show", STRANGER])?.contains("lladdr"), "the denied address's ARP did not pass");

    // Host traffic from elsewhere passes, with its ARP.
    node1.netns.ip(&["neigh", "flush", "dev", "eth0"])?;
    s.cluster.underlay.ip(&["neigh", "flush", "dev", "br0"])?;
    assert!(from(oxsdn_tests::cluster::UNDERLAY_HOST)?, "host traffic from an allowed source");
    // Known nodes' VXLAN passes.
    let b = s.cluster.nodes[1].add_pod("red", "b")?;
    assert!(ping(&b.netns, s.victim.ip), "a pod on node2 reaches the victim");
    let flows = s.node1().dump_flows()?;
    assert_eq!(denied_drops(&flows) - denied, 2, "allowed traffic was denied");
    Ok(())
}

/// Sends `frame` every 50 ms until the victim's receiving it is `wanted`; the time it
/// took, or an error after `limit`.
fn until_delivery_is(s: &Setup, frame: &[u8], marker: &[u8], wanted: bool, limit: Duration) -> Result<Duration> {
    let start = Instant::now();
    loop {
        s.tx.send(frame)?;
        let got = !s.watch.capture(Duration::from_millis(50), |f| frames::contains(f, marker)).is_empty();
        if got == wanted {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            bail!("delivery still not {wanted} after {limit:?}");
        }
    }
}

/// The prefilter judges by table 10's own map of known nodes, which the agent keeps
/// equal to the cluster's nodes: a node registered or deleted is let through or dropped
/// at XDP within a second.
#[test]
fn nodes_added_and_deleted_reach_the_prefilter_within_a_second() -> Result<()> {
    let s = Setup::new()?;
    let node1 = s.node1();
    let frame = s.vxlan(STRANGER.parse()?, b"oxsdn-new-node");
    assert!(!s.delivered(&frame, b"oxsdn-new-node")?);
    s.cluster.oxsdnctl(&["node", "add", "newcomer", "--ip", STRANGER])?;
    let added = until_delivery_is(&s, &frame, b"oxsdn-new-node", true, Duration::from_secs(1))
        .context("a registered node's VXLAN")?;
    let unknown = unknown_node_drops(&node1.dump_flows()?, node1);
    s.cluster.oxsdnctl(&["node", "delete", "newcomer"])?;
    let deleted = until_delivery_is(&s, &frame, b"oxsdn-new-node", false, Duration::from_secs(1))
        .context("a deleted node's VXLAN")?;
    assert_eq!(unknown_node_drops(&node1.dump_flows()?, node1) - unknown, 1, "dropped at XDP once deleted");
    eprintln!("node added: let through after {added:?}; deleted: dropped after {deleted:?}");
    Ok(())
}

/// The id of the BPF link pinned at `pin`.
fn pinned_link_id(pin: &std::path::Path) -> Result<u64> {
    let out = oxsdn_tests::netns::run(
        std::process::Command::new("bpftool").arg("-j").args(["link", "show", "pinned"]).arg(pin),
    )?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    v["id"].as_u64().with_context(|| format!("no link id in {out}"))
}

/// The `programs` check of `oxsdnctl status` on `node`: it passed, and its detail.
fn status_programs(node: &Node) -> Result<String> {
    let (ok, report) = node.status()?;
    let programs = report["checks"].as_array().into_iter().flatten().find(|c| c["name"] == "programs");
    let programs = programs.with_context(|| format!("no programs check: {report:#}"))?;
    if !ok || programs["ok"] != true {
        bail!("status is not healthy: {report:#}");
    }
    Ok(programs["detail"].as_str().unwrap_or_default().to_string())
}

/// The prefilter's link is pinned: it keeps dropping while no agent runs, a restarted
/// agent swaps its program in place (the same link), and `--teardown` removes it.
/// `oxsdnctl status` names the mode it runs in (native, generic, none); `auto`, the
/// default, attaches none on a veth.
#[test]
fn the_prefilter_stays_attached_while_no_agent_runs_and_teardown_removes_it() -> Result<()> {
    let mut s = Setup::new()?;
    let pin = s.node1().pin_dir().join("links/underlay-xdp");
    let link = pinned_link_id(&pin)?;
    let programs = status_programs(s.node1())?;
    assert!(programs.ends_with("; native XDP prefilter"), "{programs}");
    s.cluster.nodes[0].kill_agent();
    let node1 = s.node1();
    assert_eq!(xdp_attachment(&node1.netns, "eth0")?.as_deref(), Some("native"), "detached with the agent");
    let unknown = unknown_node_drops(&node1.dump_flows()?, node1);
    assert!(!s.delivered(&s.vxlan(STRANGER.parse()?, b"oxsdn-no-agent"), b"oxsdn-no-agent")?);
    assert_eq!(unknown_node_drops(&node1.dump_flows()?, node1) - unknown, 1, "not dropped at XDP without an agent");

    s.cluster.nodes[0].start_agent()?;
    assert_eq!(pinned_link_id(&pin)?, link, "the restarted agent attached a new link instead of updating it");
    let node1 = s.node1();
    assert_eq!(xdp_attachment(&node1.netns, "eth0")?.as_deref(), Some("native"));
    assert!(s.delivered(&s.vxlan(s.cluster.nodes[1].ip, b"oxsdn-after-restart"), b"oxsdn-after-restart")?);

    // Generic XDP where asked for, said as such; off, none.
    for (mode, attached, said) in [
        ("auto", None, "; no XDP prefilter"),
        ("generic", Some("generic"), "; generic XDP prefilter"),
        ("off", None, "; no XDP prefilter"),
    ] {
        let node1 = &mut s.cluster.nodes[0];
        node1.agent_args = vec!["--prefilter".into(), mode.into()];
        node1.stop_agent();
        node1.start_agent()?;
        assert_eq!(xdp_attachment(&s.node1().netns, "eth0")?.as_deref(), attached, "--prefilter {mode}");
        let programs = status_programs(s.node1())?;
        assert!(programs.ends_with(said), "--prefilter {mode}: {programs}");
    }
    let unknown = unknown_node_drops(&s.node1().dump_flows()?, s.node1());
    let node1 = &mut s.cluster.nodes[0];
    node1.agent_args = vec!["--prefilter".into(), "generic".into()];
    node1.stop_agent();
    node1.start_agent()?;
    assert!(!s.delivered(&s.vxlan(STRANGER.parse()?, b"oxsdn-generic"), b"oxsdn-generic")?);
    assert_eq!(unknown_node_drops(&s.node1().dump_flows()?, s.node1()) - unknown, 1, "generic XDP drops it");

    s.cluster.nodes[0].stop_agent();
    s.cluster.nodes[0].teardown()?;
    assert_eq!(xdp_attachment(&s.node1().netns, "eth0")?, None, "--teardown left the prefilter attached");
    assert!(!pin.exists());
    Ok(())
}

/// `oxsdnctl trace --from underlay:...` runs the prefilter (trace mode, with
/// BPF_PROG_TEST_RUN) on the frame with its outer headers and, if it passes, the tunnel
/// port's tables on the inner frame; it counts nothing.
#[test]
fn trace_from_the_underlay_shows_the_prefilter() -> Result<()> {
    let s = Setup::new()?;
    let (node1, node2) = (s.node1(), &s.cluster.nodes[1]);
    let trace = |outer_src: &str| s.trace_udp_from_underlay(outer_src, "10.129.0.99");
    // Pods send IPv6 on their own, which table 0's catch-all rule counts meanwhile.
    let counters = || -> Result<Vec<FlowLine>> {
        Ok(node1.dump_flows()?.into_iter().filter(|f| !(f.table == 0 && f.priority == 0)).collect())
    };
    let before = counters()?;

    let t = trace(STRANGER)?;
    assert_eq!((t["prefilter"].as_str(), t["verdict"].as_str()), (Some("XDP_DROP"), Some("XDP_DROP")), "{t:#}");
    assert_eq!(t["output"]["to"], "drop", "{t:#}");
    let rules = t["rules"].as_array().context("rules")?;
    assert_eq!(rules.len(), 1, "{t:#}");
    assert_eq!(
        (rules[0]["table"].as_u64(), rules[0]["matches"].as_str()),
        (Some(10), Some(unknown_node_rule(node1).as_str()))
    );

    let t = trace(&node2.ip.to_string())?;
    assert_eq!((t["prefilter"].as_str(), t["verdict"].as_str()), (Some("XDP_PASS"), Some("TC_ACT_REDIRECT")), "{t:#}");
    assert_eq!(t["output"]["ip"], s.victim.ip.to_string(), "{t:#}");
    let passed_table10 = t["rules"]
        .as_array()
        .context("rules")?
        .iter()
        .any(|r| r["table"] == 10 && r["matches"] == format!("tun_src={}", node2.ip));
    assert!(passed_table10, "{t:#}");

    assert!(counters()? == before, "tracing changed counters");
    Ok(())
}

/// Table 0's `hook=xdp` rule that counts VXLAN decapsulated at XDP (`--xdp-decap`).
fn decap_rule(node: &Node) -> String {
    format!("hook=xdp,in_port=eth0,udp,nw_dst={},tp_dst=4789,inner=xdp_decap", node.ip)
}
fn decapsulated(node: &Node) -> Result<u64> {
    Ok(packets(&node.dump_flows()?, 0, 400, &decap_rule(node)))
}

/// Sends `len` bytes through the TCP echo server at `to:port` and reads them back: a
/// bulk transfer, whose segments the sending node aggregates (GSO).
fn tcp_bulk_echo(from: &Netns, to: Ipv4Addr, port: u16, len: usize) -> Result<()> {
    use std::io::{Read, Write};
    from.enter(move || -> Result<()> {
        let mut s = std::net::TcpStream::connect_timeout(&(to, port).into(), Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut writer = s.try_clone()?;
        let sent = data.clone();
        let sender = std::thread::spawn(move || writer.write_all(&sent));
        let mut back = vec![0u8; len];
        s.read_exact(&mut back)?;
        sender.join().map_err(|_| anyhow::anyhow!("the sender panicked"))??;
        if back != data {
            bail!("the echo differs from what was sent");
        }
        Ok(())
    })?
}

/// With `--xdp-decap all` (generic XDP): ping, UDP and TCP (bulk, as GSO aggregates)
/// from a pod on node2 reach a pod on node1, decapsulated at XDP (counted by table 0's
/// `hook=xdp` decap rule), through the same tables (table 10 counts node2); another
/// project's pod is still isolated (dropped by table 80 after XDP decap, and counted);
/// an unknown source is still dropped at XDP; a restarted agent keeps it. The agent
/// refuses it where it cannot deliver, before writing anything: native XDP (a redirect
/// into a veth without NAPI on the pod's end) or no prefilter.
#[test]
fn vxlan_decapsulated_at_xdp_reaches_local_pods_with_isolation_kept() -> Result<()> {
    let mut s = Setup::new()?;
    let b = s.cluster.nodes[1].add_pod("red", "b")?;
    let other = s.cluster.nodes[1].add_pod("blue", "other")?;
    oxsdn_tests::probe::serve_echo(&s.victim.netns, 7000)?;
    oxsdn_tests::probe::serve_whoami(&s.victim.netns, 7001)?;
    let mode = "generic";
    let node1 = &mut s.cluster.nodes[0];
    node1.agent_args = ["--prefilter", mode, "--xdp-decap", "all"].map(String::from).to_vec();
    node1.stop_agent();
    node1.start_agent()?;
    let node1 = s.node1();
    assert_eq!(xdp_attachment(&node1.netns, "eth0")?.as_deref(), Some(mode));
    let header = node1.dump_flows_text()?;
    assert!(header.lines().next().unwrap_or_default().contains(", xdp_decap=all)"), "{header}");
    let from_node2 =
        || -> Result<u64> { Ok(packets(&node1.dump_flows()?, 10, 100, &format!("tun_src={}", s.cluster.nodes[1].ip))) };
    let (decap, tc_table10) = (decapsulated(node1)?, from_node2()?);
    assert!(ping(&b.netns, s.victim.ip), "{mode}: ping");
    assert_eq!(oxsdn_tests::probe::whoami_udp(&b.netns, s.victim.ip, 7001)?, b.ip.to_string(), "{mode}: UDP");
    assert!(oxsdn_tests::probe::tcp_echo(&b.netns, s.victim.ip, 7000), "{mode}: TCP");
    tcp_bulk_echo(&b.netns, s.victim.ip, 7000, 4 << 20).with_context(|| format!("{mode}: bulk TCP"))?;
    let (decap_after, table10_after) = (decapsulated(node1)?, from_node2()?);
    // The echo request, the datagram, two handshakes' and the streams' segments.
    assert!(decap_after - decap >= 10, "{mode}: {} frames decapsulated at XDP", decap_after - decap);
    assert!(table10_after - tc_table10 >= decap_after - decap, "{mode}: table 10 did not count them");

    // Isolation: blue's VNI to a red pod is decapsulated, then dropped by table 80.
    let isolated = || -> Result<u64> { Ok(packets(&node1.dump_flows()?, 80, 0, "")) };
    let (decap, dropped) = (decapsulated(node1)?, isolated()?);
    assert!(!ping(&other.netns, s.victim.ip), "{mode}: another project reached the pod");
    assert!(decapsulated(node1)? > decap, "{mode}: blue's frame was not taken at XDP");
    assert!(isolated()? > dropped, "{mode}: the isolation drop was not counted");

    // A trace from the underlay runs the tables at XDP and redirects, counting nothing.
    let decap = decapsulated(node1)?;
    let t = s.trace_udp_from_underlay(&s.cluster.nodes[1].ip.to_string(), &b.ip.to_string())?;
    assert_eq!(t["verdict"].as_str(), Some("XDP_REDIRECT"), "{t:#}");
    assert_eq!(t["output"]["ip"], s.victim.ip.to_string(), "{t:#}");
    let rules = t["rules"].as_array().context("rules")?;
    assert_eq!(rules[0]["matches"].as_str(), Some(decap_rule(node1).as_str()), "{t:#}");
    assert!(rules.iter().any(|r| r["table"] == 10 && r["priority"] == 100), "{t:#}");
    assert_eq!(decapsulated(node1)?, decap, "tracing counted");

    // An unknown source is still dropped by the prefilter.
    let unknown = unknown_node_drops(&node1.dump_flows()?, node1);
    assert!(!s.delivered(&s.vxlan(STRANGER.parse()?, b"oxsdn-decap-unknown"), b"oxsdn-decap-unknown")?);
    assert_eq!(unknown_node_drops(&node1.dump_flows()?, node1) - unknown, 1, "{mode}: unknown source");

    // A restarted agent keeps decapsulating at XDP (the pinned link, the same setting).
    s.cluster.nodes[0].stop_agent();
    s.cluster.nodes[0].start_agent()?;
    let decap = decapsulated(s.node1())?;
    assert!(ping(&b.netns, s.victim.ip), "after the restart");
    assert!(decapsulated(s.node1())? > decap, "not decapsulated at XDP after the restart");

    for (prefilter, error) in
        [("off", "--xdp-decap needs --prefilter generic"), ("native", "--xdp-decap needs --prefilter generic")]
    {
        let node1 = &mut s.cluster.nodes[0];
        node1.agent_args = ["--prefilter", prefilter, "--xdp-decap", "all"].map(String::from).to_vec();
        node1.stop_agent();
        let failed = node1.start_agent().expect_err("the agent started with --xdp-decap it cannot honour");
        assert!(format!("{failed:#}").contains(error), "--prefilter {prefilter}: {failed:#}");
    }
    Ok(())
}
