//! Leaving the pod network: pods reach the outside through tun0 with the node's address,
//! replies find their way back, and what must not leave does not.

use std::{net::Ipv4Addr, time::Duration};

use anyhow::Result;
use oxsdn_tests::{
    cluster::EXTERNAL_HOST,
    flows::packets,
    frames,
    probe::{serve_echo, serve_whoami, tcp_echo, whoami_tcp, whoami_udp, RawSocket, ECHO_PORT},
    TestCluster,
};

const WHOAMI_PORT: u16 = 7070;

#[test]
fn pods_reach_the_outside_with_the_node_address() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let external: Ipv4Addr = EXTERNAL_HOST.parse()?;
    serve_whoami(&cluster.external, WHOAMI_PORT)?;
    for (i, project) in [(0, "red"), (1, "blue")] {
        let pod = cluster.nodes[i].add_pod(project, "p")?;
        let node_ip = cluster.nodes[i].ip.to_string();
        assert_eq!(whoami_tcp(&pod.netns, external, WHOAMI_PORT)?, node_ip, "TCP source seen outside");
        assert_eq!(whoami_udp(&pod.netns, external, WHOAMI_PORT)?, node_ip, "UDP source seen outside");
    }
    let flows = cluster.nodes[0].dump_flows()?;
    assert!(packets(&flows, 101, 0, "") > 0, "table 101 did not count the egress");
    Ok(())
}

#[test]
fn vxlan_from_pods_to_the_outside_is_dropped_and_counted() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let pod = cluster.nodes[0].add_pod("red", "p")?;
    let external: Ipv4Addr = EXTERNAL_HOST.parse()?;
    let watch = RawSocket::open(&cluster.external, "eth0")?;
    let before = packets(&cluster.nodes[0].dump_flows()?, 100, 300, "udp,tp_dst=4789");
    pod.netns.enter(move || -> Result<()> {
        std::net::UdpSocket::bind("0.0.0.0:0")?.send_to(b"\x08\0\0\0\0\0\x0a\0oxsdn-vxlan-out", (external, 4789))?;
        Ok(())
    })??;
    assert!(watch.capture(Duration::from_millis(500), |f| frames::contains(f, b"oxsdn-vxlan-out")).is_empty());
    let after = packets(&cluster.nodes[0].dump_flows()?, 100, 300, "udp,tp_dst=4789");
    assert!(after > before, "not counted by table 100's VXLAN rule");
    Ok(())
}

#[test]
fn dns_to_the_node_and_traffic_between_node_and_pods() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let node = &cluster.nodes[0];
    let pod = node.add_pod("red", "p")?;
    // A DNS-port server and an echo server on the node itself (its own namespace).
    serve_whoami(&node.netns, 53)?;
    serve_echo(&node.netns, ECHO_PORT)?;
    serve_echo(&pod.netns, ECHO_PORT)?;
    assert_eq!(whoami_udp(&pod.netns, node.ip, 53)?, pod.ip.to_string(), "UDP DNS to the node");
    assert_eq!(whoami_tcp(&pod.netns, node.ip, 53)?, pod.ip.to_string(), "TCP DNS to the node");
    let flows = node.dump_flows()?;
    let node_ip = node.ip;
    assert!(packets(&flows, 100, 200, &format!("udp,nw_dst={node_ip},tp_dst=53")) > 0);
    assert!(packets(&flows, 100, 200, &format!("tcp,nw_dst={node_ip},tp_dst=53")) > 0);
    assert!(tcp_echo(&pod.netns, node.ip, ECHO_PORT), "pod -> node IP");
    assert!(tcp_echo(&node.netns, pod.ip, ECHO_PORT), "node -> pod");
    Ok(())
}
