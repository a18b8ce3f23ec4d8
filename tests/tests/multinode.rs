//! Several nodes joined by the VXLAN overlay: isolation across nodes, remote ARP, nodes
//! coming and going, hostile VXLAN, MTU.

use anyhow::{bail, Result};
use oxsdn_tests::{probe::ping, scenario::run_story, TestCluster};

#[test]
fn cross_node_isolation_matrix_follows_pod_network_commands() -> Result<()> {
    let mut cluster = TestCluster::with_etcd(&[])?;
    for n in ["node1", "node2", "node3"] {
        cluster.add_node(n)?;
    }
    run_story(&cluster)
}

#[test]
fn host_reaches_remote_pods_and_remote_arp_resolves() -> Result<()> {
    let mut cluster = TestCluster::with_etcd(&[])?;
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let a = cluster.nodes[0].add_pod("red", "a")?;
    let b = cluster.nodes[1].add_pod("blue", "b")?;
    // node1's host is global: it reaches node2's pod over the overlay (VNI 0).
    assert!(ping(&cluster.nodes[0].netns, b.ip), "node1 -> remote pod");
    // a resolved b's MAC by ARP across the tunnel even though they are isolated.
    assert!(!ping(&a.netns, b.ip));
    let neigh = a.netns.ip(&["neigh", "show", &b.ip.to_string()])?;
    assert!(neigh.contains(&b.mac), "ARP for the remote pod: {neigh}");
    Ok(())
}

fn t(cluster: &TestCluster, node: usize) -> Result<Vec<oxsdn_tests::flows::FlowLine>> {
    cluster.nodes[node].dump_flows()
}

fn has_rule(flows: &[oxsdn_tests::flows::FlowLine], table: u8, matches: &str) -> bool {
    flows.iter().any(|f| f.table == table && f.matches == matches)
}

/// Waits (up to 5 s) for `cond` on node `node`'s rules.
fn wait_rules(
    cluster: &TestCluster,
    node: usize,
    cond: impl Fn(&[oxsdn_tests::flows::FlowLine]) -> bool,
) -> Result<()> {
    let start = std::time::Instant::now();
    while !cond(&t(cluster, node)?) {
        if start.elapsed() > std::time::Duration::from_secs(5) {
            bail!("node {node}: rules never got there:\n{}", cluster.nodes[node].dump_flows_text()?);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(())
}

#[test]
fn nodes_added_later_are_routed_and_deleted_nodes_disappear() -> Result<()> {
    let mut cluster = TestCluster::with_etcd(&[])?;
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let a = cluster.nodes[0].add_pod("red", "a")?;
    cluster.add_node("node3")?;
    let c = cluster.nodes[2].add_pod("red", "c")?;
    let node3_ip = cluster.nodes[2].ip.to_string();
    for node in [0, 1] {
        wait_rules(&cluster, node, |f| {
            has_rule(f, 10, &format!("tun_src={node3_ip}")) && has_rule(f, 90, "ip,nw_dst=10.130.0.0/23")
        })?;
    }
    assert!(ping(&a.netns, c.ip), "node1 pod -> pod on the node added later");

    cluster.oxsdnctl(&["node", "delete", "node3"])?;
    for node in [0, 1] {
        wait_rules(&cluster, node, |f| {
            !has_rule(f, 10, &format!("tun_src={node3_ip}")) && !has_rule(f, 90, "ip,nw_dst=10.130.0.0/23")
        })?;
    }
    let before = oxsdn_tests::flows::packets(&t(&cluster, 0)?, 90, 0, "");
    assert!(!ping(&a.netns, c.ip));
    assert!(oxsdn_tests::flows::packets(&t(&cluster, 0)?, 90, 0, "") > before, "not counted as a table 90 drop");
    Ok(())
}

/// A VXLAN datagram's payload: the 8-byte header with VNI `vni`, then `inner`.
fn vxlan_payload(vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut p = vec![0x08, 0, 0, 0];
    p.extend_from_slice(&(vni << 8).to_be_bytes());
    p.extend_from_slice(inner);
    p
}

/// Sends one UDP datagram from namespace `from` to `to`:4789, with a UDP checksum or
/// with none (0, as the nodes send VXLAN: the receiving node's program decapsulates it
/// itself; a checksummed one goes through the kernel's vxlan0).
fn send_udp(from: &oxsdn_tests::netns::Netns, to: std::net::Ipv4Addr, payload: Vec<u8>, checksum: bool) -> Result<()> {
    use std::os::fd::AsRawFd;
    from.enter(move || -> Result<()> {
        let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
        if !checksum {
            let on: libc::c_int = 1;
            // SAFETY: setsockopt with a c_int option on a socket this closure owns.
            let rc = unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_NO_CHECK,
                    &on as *const _ as *const libc::c_void,
                    4,
                )
            };
            anyhow::ensure!(rc == 0, "SO_NO_CHECK: {}", std::io::Error::last_os_error());
        }
        s.send_to(&payload, (to, 4789))?;
        Ok(())
    })?
}

/// vxlan0's packet counters in a node's namespace: (received, sent).
fn vxlan0_packets(node: &oxsdn_tests::netns::Netns) -> Result<(u64, u64)> {
    let v: serde_json::Value = serde_json::from_str(&node.ip(&["-s", "-j", "link", "show", "vxlan0"])?)?;
    let stats = &v[0]["stats64"];
    match (stats["rx"]["packets"].as_u64(), stats["tx"]["packets"].as_u64()) {
        (Some(rx), Some(tx)) => Ok((rx, tx)),
        _ => bail!("no vxlan0 counters in {v}"),
    }
}

/// The programs put the VXLAN headers on and take them off themselves, so pod traffic
/// between nodes does not pass vxlan0 (nor the host stack's tunnel path); ARP, which
/// they leave to vxlan0, still resolves across the tunnel.
#[test]
fn overlay_frames_skip_vxlan0_and_arp_still_takes_it() -> Result<()> {
    let mut cluster = TestCluster::with_etcd(&[])?;
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let a = cluster.nodes[0].add_pod("red", "a")?;
    let b = cluster.nodes[1].add_pod("red", "b")?;
    assert!(ping(&a.netns, b.ip), "warm-up (ARP over the tunnel)");
    let (n1, n2) = (&cluster.nodes[0].netns, &cluster.nodes[1].netns);
    let (before1, before2) = (vxlan0_packets(n1)?, vxlan0_packets(n2)?);
    let pings = a.netns.command("ping").args(["-c", "20", "-i", "0.01", "-W", "1", &b.ip.to_string()]).output()?;
    assert!(pings.status.success(), "20 pings across nodes: {}", String::from_utf8_lossy(&pings.stdout));
    assert_eq!(vxlan0_packets(n1)?, before1, "node1's vxlan0 carried some of the pings (received, sent)");
    assert_eq!(vxlan0_packets(n2)?, before2, "node2's vxlan0 carried some of the pings (received, sent)");

    a.netns.ip(&["neigh", "flush", "dev", "eth0"])?;
    assert!(ping(&a.netns, b.ip), "ping after forgetting b's MAC");
    assert!(a.netns.ip(&["neigh", "show", &b.ip.to_string()])?.contains(&b.mac), "b's MAC resolved again");
    assert!(vxlan0_packets(n1)?.1 > before1.1, "the ARP request did not take node1's vxlan0");
    assert!(vxlan0_packets(n2)?.0 > before2.0, "the ARP request did not arrive through node2's vxlan0");
    Ok(())
}

#[test]
fn vxlan_from_unknown_sources_and_from_pods_cannot_inject_traffic() -> Result<()> {
    use oxsdn_tests::{flows::packets, frames, probe::RawSocket};
    let mut cluster = TestCluster::with_etcd(&[])?;
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let victim = cluster.nodes[0].add_pod("red", "victim")?;
    let attacker = cluster.nodes[1].add_pod("blue", "attacker")?;
    let red = cluster.netid("red")?;
    let inner = |marker: &[u8]| {
        frames::udp(
            [2, 0, 0, 0, 0, 9],
            frames::pod_mac(victim.ip),
            "10.129.0.99".parse().unwrap(),
            victim.ip,
            9,
            marker,
        )
    };
    let watch = RawSocket::open(&victim.netns, "eth0")?;
    let node1_ip = cluster.nodes[0].ip;

    // Both ways a frame can arrive: decapsulated by node1's program (no UDP checksum,
    // as nodes send VXLAN) and by vxlan0 (a checksum to verify).
    for (checksum, known, unknown) in
        [(false, b"oxsdn-known-node-a", b"oxsdn-unknown-src-a"), (true, b"oxsdn-known-node-b", b"oxsdn-unknown-src-b")]
    {
        // Control: VXLAN with red's VNI from a known node (node2's address) is delivered.
        send_udp(&cluster.nodes[1].netns, node1_ip, vxlan_payload(red, &inner(known)), checksum)?;
        assert_eq!(
            watch.capture(std::time::Duration::from_millis(300), |f| frames::contains(f, known)).len(),
            1,
            "checksum {checksum}"
        );

        // From an address that is no node's: dropped by table 10 and counted (at TC: the
        // test nodes' underlay devices are veths, where `--prefilter auto` attaches no
        // XDP prefilter; tests/tests/xdp.rs has the prefilter's drop).
        let before = packets(&t(&cluster, 0)?, 10, 0, "");
        send_udp(&cluster.underlay, node1_ip, vxlan_payload(red, &inner(unknown)), checksum)?;
        assert!(
            watch.capture(std::time::Duration::from_millis(300), |f| frames::contains(f, unknown)).is_empty(),
            "checksum {checksum}"
        );
        assert_eq!(packets(&t(&cluster, 0)?, 10, 0, "") - before, 1, "checksum {checksum}");
    }

    // From a pod of another project, aimed at node1's VXLAN port with red's VNI: pods
    // may not send VXLAN out of the cluster network (table 100).
    let before = packets(&t(&cluster, 1)?, 100, 300, "udp,tp_dst=4789");
    send_udp(&attacker.netns, node1_ip, vxlan_payload(red, &inner(b"oxsdn-pod-vxlan")), false)?;
    assert!(watch
        .capture(std::time::Duration::from_millis(300), |f| frames::contains(f, b"oxsdn-pod-vxlan"))
        .is_empty());
    assert!(packets(&t(&cluster, 1)?, 100, 300, "udp,tp_dst=4789") > before, "not counted on the attacker's node");
    Ok(())
}

/// Where the receiving node's program takes the outer headers off itself, it checks what
/// the host's IP layer would have: an outer IPv4 header with a bad checksum is not
/// delivered either way.
#[test]
fn vxlan_with_a_corrupt_outer_header_is_not_delivered() -> Result<()> {
    use oxsdn_tests::{frames, probe::RawSocket};
    let mut cluster = TestCluster::with_etcd(&[])?;
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let victim = cluster.nodes[0].add_pod("red", "victim")?;
    let red = cluster.netid("red")?;
    let (n1, n2) = (&cluster.nodes[0], &cluster.nodes[1]);
    let (n1_mac, n2_mac) = (n1.netns.mac("eth0")?, n2.netns.mac("eth0")?);
    let watch = RawSocket::open(&victim.netns, "eth0")?;
    // Sent out of node1's port on the underlay bridge, not through the bridge, whose
    // br_netfilter would drop a bad IPv4 header before node1 saw it.
    let tx = RawSocket::open(&cluster.underlay, "p1")?;
    let outer = |marker: &[u8], corrupt: bool| {
        let inner = frames::udp(
            [2, 0, 0, 0, 0, 9],
            frames::pod_mac(victim.ip),
            "10.129.0.99".parse().unwrap(),
            victim.ip,
            9,
            marker,
        );
        let mut f = frames::udp(n2_mac, n1_mac, n2.ip, n1.ip, 4789, &vxlan_payload(red, &inner));
        // No UDP checksum, as nodes send VXLAN (the receiving program's case).
        f[40..42].copy_from_slice(&[0, 0]);
        if corrupt {
            f[24] ^= 0x55;
        }
        f
    };
    let before = vxlan0_packets(&n1.netns)?;
    tx.send(&outer(b"oxsdn-sound-outer", false))?;
    assert_eq!(
        watch.capture(std::time::Duration::from_millis(300), |f| frames::contains(f, b"oxsdn-sound-outer")).len(),
        1,
        "control"
    );
    assert_eq!(vxlan0_packets(&n1.netns)?.0, before.0, "the control arrived through vxlan0, not the program");
    tx.send(&outer(b"oxsdn-corrupt-outer", true))?;
    assert!(watch
        .capture(std::time::Duration::from_millis(300), |f| frames::contains(f, b"oxsdn-corrupt-outer"))
        .is_empty());
    Ok(())
}

#[test]
fn full_size_packets_and_bulk_tcp_cross_nodes_without_fragmentation() -> Result<()> {
    let mut cluster = TestCluster::with_etcd(&[])?;
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let a = cluster.nodes[0].add_pod("red", "a")?;
    let b = cluster.nodes[1].add_pod("red", "b")?;
    let df_ping = |size: usize| {
        a.netns
            .command("ping")
            .args(["-c", "1", "-W", "1", "-M", "do", "-s", &size.to_string(), &b.ip.to_string()])
            .output()
            .map(|o| o.status.success())
    };
    assert!(df_ping(1400)?, "1400-byte ping");
    assert!(df_ping(1422)?, "ping filling the pod MTU (1450) with DF set");
    assert!(!df_ping(1423)?, "a packet over the pod MTU must not leave");

    let server = oxsdn_tests::probe::Iperf3Server::start(&b.netns)?;
    let out = a.netns.command("iperf3").args(["-c", &b.ip.to_string(), "-n", "200M", "-J"]).output()?;
    server.wait();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    // The sender completed 200 MiB; the receiver's count stops at the test's end
    // message, so the last bytes in flight may be missing from it.
    let sent = report["end"]["sum_sent"]["bytes"].as_u64().unwrap_or(0);
    let received = report["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
    assert!(report["error"].is_null() && sent >= 200 << 20, "bulk transfer failed: {}", report["error"]);
    assert!(received * 10 >= sent * 9, "only {received} of {sent} bytes arrived");
    // The underlay never had to fragment: no fragments were reassembled on node2.
    let snmp = cluster.nodes[1].netns.command("cat").arg("/proc/net/snmp").output()?;
    let text = String::from_utf8_lossy(&snmp.stdout);
    let ip_lines: Vec<&str> = text.lines().filter(|l| l.starts_with("Ip:")).collect();
    let (names, values) = (ip_lines[0].split_whitespace(), ip_lines[1].split_whitespace());
    let reasm = names.zip(values).find(|(n, _)| *n == "ReasmReqds").map(|(_, v)| v.parse::<u64>().unwrap_or(0));
    assert_eq!(reasm, Some(0), "the underlay fragmented");
    Ok(())
}

/// What the overlay puts on the wire is RFC 7348 VXLAN as OpenShift's OVS sends it: UDP
/// to the cluster's VXLAN port, the I flag, VNI = the sender's VNID, the pod's Ethernet
/// frame unchanged inside, outer source = the sending node.
#[test]
fn overlay_packets_are_rfc7348_vxlan_with_the_source_vnid() -> Result<()> {
    use oxsdn_tests::{frames, probe::RawSocket};
    let mut cluster = TestCluster::with_etcd(&[])?;
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let a = cluster.nodes[0].add_pod("red", "a")?;
    let b = cluster.nodes[1].add_pod("red", "b")?;
    let red = cluster.netid("red")?;
    assert!(ping(&a.netns, b.ip), "warm-up (ARP over the tunnel)");
    let wire = RawSocket::open(&cluster.nodes[1].netns, "eth0")?;
    let marker = b"oxsdn-wire-format";
    let tx = RawSocket::open(&a.netns, "eth0")?;
    tx.send(&frames::udp(frames::pod_mac(a.ip), frames::pod_mac(b.ip), a.ip, b.ip, 9, marker))?;
    let seen = wire.capture(std::time::Duration::from_millis(500), |f| frames::contains(f, marker));
    assert_eq!(seen.len(), 1, "one VXLAN packet on node2's underlay");
    let f = &seen[0];
    // Outer Ethernet (14) + IPv4 (20, no options) + UDP (8) + VXLAN (8), then the frame.
    assert_eq!(&f[12..14], &[0x08, 0x00], "outer IPv4");
    assert_eq!(f[14], 0x45, "outer IPv4 header without options");
    assert_eq!(f[23], 17, "UDP");
    assert_eq!(&f[26..30], &cluster.nodes[0].ip.octets(), "outer source = node1");
    assert_eq!(&f[30..34], &cluster.nodes[1].ip.octets(), "outer destination = node2");
    assert_eq!(u16::from_be_bytes([f[36], f[37]]), 4789, "VXLAN port");
    let vxlan = &f[42..50];
    assert_eq!(vxlan[0], 0x08, "only the I flag");
    assert_eq!(u32::from_be_bytes([vxlan[4], vxlan[5], vxlan[6], vxlan[7]]) >> 8, red, "VNI = red's VNID");
    let inner = &f[50..];
    assert_eq!(&inner[0..6], &frames::pod_mac(b.ip), "inner destination MAC unchanged");
    assert_eq!(&inner[6..12], &frames::pod_mac(a.ip), "inner source MAC unchanged");
    Ok(())
}

/// A pod's VLAN-tagged IPv4 to a pod of its project on another node: dropped at table 0
/// on the sending node, so the tag never reaches the underlay as an outer tag (VLAN
/// hopping) nor the other pod.
#[test]
fn vlan_tagged_frames_do_not_cross_nodes() -> Result<()> {
    use oxsdn_tests::{frames, probe::RawSocket};
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let a = cluster.nodes[0].add_pod("red", "a")?;
    let b = cluster.nodes[1].add_pod("red", "b")?;
    assert!(ping(&a.netns, b.ip), "warm-up (ARP over the tunnel)");
    let marker = b"oxsdn-vlan-hop";
    let ipv4 = frames::udp(frames::pod_mac(a.ip), frames::pod_mac(b.ip), a.ip, b.ip, 9, marker);
    let before = vlan_drops(&cluster, 0)?;
    let wire = RawSocket::open(&cluster.nodes[1].netns, "eth0")?;
    let at_b = RawSocket::open(&b.netns, "eth0")?;
    let tx = RawSocket::open(&a.netns, "eth0")?;
    tx.send(&frames::vlan_tagged(&ipv4, &[(0x8100, 42)]))?;
    assert!(
        wire.capture(std::time::Duration::from_millis(300), |f| frames::contains(f, marker)).is_empty(),
        "tagged frame on node2's underlay"
    );
    assert!(
        at_b.capture(std::time::Duration::from_millis(100), |f| frames::contains(f, marker)).is_empty(),
        "tagged frame delivered to b"
    );
    assert_eq!(vlan_drops(&cluster, 0)? - before, 1, "node1's table 0 did not count it");
    // Untagged, the same frame crosses.
    tx.send(&ipv4)?;
    assert_eq!(at_b.capture(std::time::Duration::from_millis(300), |f| frames::contains(f, marker)).len(), 1);
    Ok(())
}

fn vlan_drops(cluster: &TestCluster, node: usize) -> Result<u64> {
    Ok(oxsdn_tests::flows::packets(&t(cluster, node)?, 0, 400, "vlan_tci=0x1000/0x1000"))
}

/// Frames without a socket hash (raw frames here; ICMP and forwarded traffic in
/// general) leave with an outer UDP source port from their inner flow, as OVS and
/// RFC 7348 do, so ECMP and receive-side scaling on the underlay can spread them: one
/// flow keeps one port, several flows use several.
#[test]
fn vxlan_source_ports_follow_the_inner_flow() -> Result<()> {
    use oxsdn_tests::{frames, probe::RawSocket};
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let a = cluster.nodes[0].add_pod("red", "a")?;
    let b = cluster.nodes[1].add_pod("red", "b")?;
    assert!(ping(&a.netns, b.ip), "warm-up (ARP over the tunnel)");
    let wire = RawSocket::open(&cluster.nodes[1].netns, "eth0")?;
    let tx = RawSocket::open(&a.netns, "eth0")?;
    let mut ports = std::collections::BTreeMap::new();
    for round in 0..2 {
        for dport in 1000..1008u16 {
            let marker = format!("oxsdn-entropy-{dport}-{round}");
            tx.send(&frames::udp(frames::pod_mac(a.ip), frames::pod_mac(b.ip), a.ip, b.ip, dport, marker.as_bytes()))?;
            let seen = wire.capture(std::time::Duration::from_millis(200), |f| frames::contains(f, marker.as_bytes()));
            assert_eq!(seen.len(), 1, "flow {dport}: one VXLAN packet on node2's underlay");
            let sport = u16::from_be_bytes([seen[0][34], seen[0][35]]);
            assert!((32768..61000).contains(&sport), "source port {sport} outside the local port range");
            ports.entry(dport).or_insert_with(Vec::new).push(sport);
        }
    }
    for (flow, sports) in &ports {
        assert!(sports.windows(2).all(|w| w[0] == w[1]), "flow {flow} changed its source port: {sports:?}");
    }
    let distinct: std::collections::BTreeSet<u16> = ports.values().map(|s| s[0]).collect();
    assert!(distinct.len() >= 4, "8 flows used only {} source ports: {ports:?}", distinct.len());
    Ok(())
}
