//! The single-node pipeline against real traffic: the host through tun0, spoofing and
//! foreign frames dropped and counted, destinations whose tables are still empty.

use std::{net::Ipv4Addr, time::Duration};

use anyhow::Result;
use oxsdn_tests::{
    flows::{packets, FlowLine},
    frames::{self, pod_mac, BROADCAST},
    probe::{ping, serve_echo, tcp_echo, RawSocket, ECHO_PORT},
    Node, Pod, TestCluster,
};

const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 1);
const CAPTURE: Duration = Duration::from_millis(300);

fn counter(node: &Node, table: u8, priority: u16, matches: &str) -> Result<u64> {
    let flows: Vec<FlowLine> = node.dump_flows()?;
    Ok(packets(&flows, table, priority, matches))
}

/// Sends `frame` from `from`'s eth0 and returns how many copies carrying `marker`
/// reached `watch`'s eth0.
fn send_and_watch(from: &Pod, watch: &Pod, frame: &[u8], marker: &'static [u8]) -> Result<usize> {
    let tx = RawSocket::open(&from.netns, "eth0")?;
    let rx = RawSocket::open(&watch.netns, "eth0")?;
    tx.send(frame)?;
    Ok(rx.capture(CAPTURE, |f| frames::contains(f, marker)).len())
}

#[test]
fn host_reaches_every_project_through_tun0_and_pods_reach_the_gateway() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let node = cluster.node("node1");
    let pods = [node.add_pod("red", "r1")?, node.add_pod("blue", "b1")?, node.add_pod("default", "d1")?];
    for pod in &pods {
        serve_echo(&pod.netns, ECHO_PORT)?;
        assert!(ping(&node.netns, pod.ip), "node -> {}", pod.name);
        assert!(tcp_echo(&node.netns, pod.ip, ECHO_PORT), "node -> {} tcp", pod.name);
        assert!(ping(&pod.netns, GATEWAY), "{} -> gateway", pod.name);
    }
    // The host's traffic is global: it came in from tun0 with the gateway as source.
    assert!(counter(node, 0, 200, "ip,in_port=tun0")? > 0);
    assert!(counter(node, 80, 300, "ip,nw_src=10.128.0.1")? >= 6);
    assert!(counter(node, 30, 300, "ip,nw_dst=10.128.0.1")? >= 3);
    Ok(())
}

#[test]
fn spoofed_ip_and_arp_from_a_pod_are_dropped_and_counted() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let node = cluster.node("node1");
    let attacker = node.add_pod("red", "attacker")?;
    let victim = node.add_pod("red", "victim")?;
    let other = node.add_pod("blue", "other")?;
    let (a_mac, v_mac) = (pod_mac(attacker.ip), pod_mac(victim.ip));

    // Control: the same frame with the attacker's own source is delivered.
    let honest = frames::udp(a_mac, v_mac, attacker.ip, victim.ip, 9, b"oxsdn-honest");
    assert_eq!(send_and_watch(&attacker, &victim, &honest, b"oxsdn-honest")?, 1, "control frame not delivered");

    let before = counter(node, 20, 0, "")?;
    let spoofed: [(&str, Vec<u8>, &Pod, &'static [u8]); 5] = [
        (
            "IP source of another pod",
            frames::udp(a_mac, v_mac, other.ip, victim.ip, 9, b"oxsdn-spoof-ip"),
            &victim,
            b"oxsdn-spoof-ip",
        ),
        (
            "IP source outside the subnet",
            frames::udp(a_mac, v_mac, Ipv4Addr::new(192, 0, 2, 1), victim.ip, 9, b"oxsdn-spoof-ext"),
            &victim,
            b"oxsdn-spoof-ext",
        ),
        (
            "gratuitous ARP for the gateway",
            frames::arp(a_mac, BROADCAST, 2, a_mac, GATEWAY, BROADCAST, GATEWAY),
            &other,
            &[0x0a, 0x80, 0x00, 0x01, 0xff],
        ),
        (
            "ARP reply to the gateway claiming the victim's IP",
            frames::arp(a_mac, BROADCAST, 2, a_mac, victim.ip, [0; 6], GATEWAY),
            &other,
            &[0x08, 0x06, 0, 1],
        ),
        (
            "ARP with own IP but a foreign MAC",
            frames::arp([2, 0, 0, 0, 0, 1], BROADCAST, 1, [2, 0, 0, 0, 0, 1], attacker.ip, [0; 6], victim.ip),
            &victim,
            &[2, 0, 0, 0, 0, 1],
        ),
    ];
    for (what, frame, watch, marker) in &spoofed {
        assert_eq!(send_and_watch(&attacker, watch, frame, marker)?, 0, "{what}: delivered");
    }
    let dropped = counter(node, 20, 0, "")? - before;
    assert!(dropped >= spoofed.len() as u64, "table 20 counted {dropped} drops for {} spoofed frames", spoofed.len());
    // The host's neighbour table did not learn the attacker's MAC for the victim.
    let attacker_mac = a_mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
    let neigh = node.netns.ip(&["neigh", "show", "dev", "tun0"])?;
    assert!(!neigh.lines().any(|l| l.starts_with(&format!("{} ", victim.ip)) && l.contains(&attacker_mac)), "{neigh}");
    Ok(())
}

#[test]
fn non_ipv4_frames_are_dropped_at_table_0() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let node = cluster.node("node1");
    let a = node.add_pod("red", "a")?;
    let b = node.add_pod("red", "b")?;
    let (a_mac, b_mac) = (pod_mac(a.ip), pod_mac(b.ip));
    let before = counter(node, 0, 0, "")?;
    let foreign: [(&str, Vec<u8>); 3] = [
        ("IPv6", frames::raw(a_mac, b_mac, 0x86dd, b"\x60\0\0\0\0\x08\x11\x40oxsdn-ipv6-frame")),
        ("LLDP", frames::raw(a_mac, [0x01, 0x80, 0xc2, 0, 0, 0x0e], 0x88cc, b"oxsdn-lldp-frame")),
        ("802.1Q", frames::raw(a_mac, b_mac, 0x8100, b"\x00\x05\x08\x00oxsdn-vlan-frame")),
    ];
    for (what, frame) in &foreign {
        assert_eq!(send_and_watch(&a, &b, frame, b"-frame")?, 0, "{what} delivered");
    }
    let dropped = counter(node, 0, 0, "")? - before;
    assert!(dropped >= 3, "table 0 counted {dropped} drops");
    Ok(())
}

/// A tagged frame whose payload is valid IPv4 to a pod of the same project: the kernel
/// moves the tag into the skb's metadata before TC runs, so only table 0's VLAN rule
/// stops it (without it, it was delivered still tagged).
#[test]
fn vlan_tagged_ipv4_is_dropped_at_table_0() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let node = cluster.node("node1");
    let a = node.add_pod("red", "a")?;
    let b = node.add_pod("red", "b")?;
    let (a_mac, b_mac) = (pod_mac(a.ip), pod_mac(b.ip));
    let vlan_rule = |node| counter(node, 0, 400, "vlan_tci=0x1000/0x1000");
    let before = vlan_rule(node)?;
    let ipv4 = frames::udp(a_mac, b_mac, a.ip, b.ip, 9, b"oxsdn-tagged-ipv4");
    // The same untagged frame is delivered: the tag alone is what stops it.
    assert_eq!(send_and_watch(&a, &b, &ipv4, b"oxsdn-tagged-ipv4")?, 1, "untagged frame not delivered");
    for (what, tags) in [("802.1Q", vec![(0x8100, 5)]), ("802.1ad", vec![(0x88a8, 7), (0x8100, 5)])] {
        let tagged = frames::vlan_tagged(&ipv4, &tags);
        assert_eq!(send_and_watch(&a, &b, &tagged, b"oxsdn-tagged-ipv4")?, 0, "{what}-tagged IPv4 delivered");
    }
    assert_eq!(vlan_rule(node)? - before, 2, "table 0's VLAN rule did not count both");
    Ok(())
}

#[test]
fn destinations_of_empty_tables_are_counted_drops() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let node = cluster.node("node1");
    let a = node.add_pod("red", "a")?;
    let gw_mac = [0x02, 0, 0, 0, 0, 0x01];
    let cases = [
        (Ipv4Addr::new(10, 130, 0, 5), 90u8), // cluster network, no node owns it
        (Ipv4Addr::new(172, 30, 0, 10), 60),  // service network, no service
        (Ipv4Addr::new(224, 1, 2, 3), 110),   // multicast
    ];
    let tx = RawSocket::open(&a.netns, "eth0")?;
    for (dst, table) in cases {
        let before = counter(node, table, 0, "")?;
        tx.send(&frames::udp(pod_mac(a.ip), gw_mac, a.ip, dst, 9, b"oxsdn"))?;
        let after = counter(node, table, 0, "")?;
        assert_eq!(after - before, 1, "{dst} not counted in table {table}");
    }
    // ARP for a cluster address no node owns ends in table 50.
    let before = counter(node, 50, 0, "")?;
    tx.send(&frames::arp(pod_mac(a.ip), BROADCAST, 1, pod_mac(a.ip), a.ip, [0; 6], Ipv4Addr::new(10, 130, 0, 5)))?;
    assert_eq!(counter(node, 50, 0, "")? - before, 1);
    Ok(())
}

#[test]
fn pods_keep_their_network_while_the_agent_restarts() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let a = cluster.node("node1").add_pod("red", "a")?;
    let b = cluster.node("node1").add_pod("red", "b")?;
    let c = cluster.node("node1").add_pod("blue", "c")?;
    assert!(ping(&a.netns, b.ip));
    let before = counter(cluster.node("node1"), 80, 100, "reg0=reg1")?;

    // Crash: the pinned programs and maps keep forwarding and isolating.
    cluster.nodes[0].kill_agent();
    assert!(ping(&a.netns, b.ip), "no forwarding without the agent");
    assert!(!ping(&a.netns, c.ip), "no isolation without the agent");

    cluster.nodes[0].start_agent()?;
    let node = cluster.node("node1");
    assert!(ping(&a.netns, b.ip) && !ping(&a.netns, c.ip));
    assert!(counter(node, 80, 100, "reg0=reg1")? >= before + 4, "counters were reset");
    // The restarted agent knows its pods: new ones get other addresses, old ones go cleanly.
    let d = node.add_pod("red", "d")?;
    assert!(![a.ip, b.ip, c.ip].contains(&d.ip));
    assert!(ping(&d.netns, a.ip));
    node.del_pod(&a)?;
    assert!(!ping(&b.netns, a.ip));
    Ok(())
}
