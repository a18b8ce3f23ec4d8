//! Leaving the pod network: pods reach the outside through tun0 with the node's address,
//! replies find their way back, and what must not leave does not.

use std::{net::Ipv4Addr, time::Duration};

use anyhow::Result;
use oxsdn_tests::{
    bins,
    cluster::EXTERNAL_HOST,
    dns::DnsServer,
    flows::packets,
    frames,
    netns::run,
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

/// Whether a TCP connection from `pod` to `to` gets through, as the external host sees it
/// (its whoami server answers with the source it saw: the node's address).
fn reaches(pod: &oxsdn_tests::Pod, to: Ipv4Addr) -> bool {
    whoami_tcp(&pod.netns, to, WHOAMI_PORT).is_ok()
}

/// Polls `what` until it holds, for at most `within`.
fn eventually(within: Duration, mut what: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    loop {
        if what() {
            return true;
        }
        if start.elapsed() > within {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

const EGRESS_POLICY: &str = "apiVersion: network.openshift.io/v1
kind: EgressNetworkPolicy
metadata:
  name: default
  namespace: red
spec:
  egress:
  - type: Allow
    to:
      dnsName: www.egress.test
  - type: Allow
    to:
      cidrSelector: 198.51.100.10/32
  - type: Deny
    to:
      cidrSelector: 0.0.0.0/0
";

#[test]
fn the_egress_firewall_applies_first_match_and_follows_dns() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    let external: Ipv4Addr = EXTERNAL_HOST.parse()?;
    let (first, second): (Ipv4Addr, Ipv4Addr) = ("198.51.100.20".parse()?, "198.51.100.30".parse()?);
    for extra in [first, second] {
        cluster.external.ip(&["addr", "add", &format!("{extra}/24"), "dev", "eth0"])?;
    }
    serve_whoami(&cluster.external, WHOAMI_PORT)?;
    let dns = DnsServer::start(&cluster.external, external, 1, &cluster.dir)?;
    dns.set("www.egress.test", &[first])?;
    cluster.agent_args = vec!["--dns-server".into(), format!("{external}:53")];
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let red = cluster.nodes[0].add_pod("red", "a")?;
    let red_remote = cluster.nodes[1].add_pod("red", "b")?;
    let blue = cluster.nodes[0].add_pod("blue", "c")?;
    serve_echo(&red_remote.netns, ECHO_PORT)?;
    for to in [external, first, second] {
        assert!(reaches(&red, to), "before the policy: {to}");
    }

    let manifest = cluster.dir.join("egress.yaml");
    std::fs::write(&manifest, EGRESS_POLICY)?;
    let applied = cluster.oxsdnctl(&["apply", "-f", manifest.to_str().unwrap()])?;
    assert_eq!(applied, "egressnetworkpolicy.network.openshift.io/default created\n");
    // Rule 2 denies everything else; rule 0 follows the name; rule 1 allows by CIDR.
    assert!(eventually(Duration::from_secs(5), || !reaches(&red, second)), "rule 2 did not deny {second}");
    assert!(eventually(Duration::from_secs(5), || reaches(&red, first)), "rule 0 did not allow {first}");
    assert!(reaches(&red, external), "rule 1");
    assert!(reaches(&red_remote, external) && !reaches(&red_remote, second), "the project's pods on node2");
    assert!(reaches(&blue, second), "another project is not affected");
    assert!(tcp_echo(&red.netns, red_remote.ip, ECHO_PORT), "the cluster network is not affected");

    // What was denied never reached the external host.
    let watch = RawSocket::open(&cluster.external, "eth0")?;
    assert!(!reaches(&red, second));
    let second_octets = second.octets();
    assert!(
        watch.capture(Duration::from_millis(300), |f| f.len() > 34 && f[30..34] == second_octets).is_empty(),
        "a denied packet reached {second}"
    );

    // dump-flows: one flow per entry, OpenShift's priorities (n - i), counted.
    let vnid = cluster.netid("red")?;
    let flows = cluster.nodes[0].dump_flows()?;
    let entry = |priority: u16, cidr: &str| packets(&flows, 101, priority, &format!("ip,reg0={vnid:#x},nw_dst={cidr}"));
    assert!(entry(3, &format!("{first}/32")) > 0, "rule 0's resolved address");
    assert!(entry(2, "198.51.100.10/32") > 0, "rule 1");
    assert!(entry(1, "0.0.0.0/0") > 0, "rule 2");

    // A killed agent leaves the entries and their counters in place, and the agent that
    // starts after it keeps them (no window in which the project's traffic is open).
    let table101 = |flows: Vec<oxsdn_tests::flows::FlowLine>| -> Vec<(u16, String, u64)> {
        flows
            .into_iter()
            .filter(|f| f.table == 101 && f.priority > 0)
            .map(|f| (f.priority, f.matches, f.n_packets))
            .collect()
    };
    let before = table101(cluster.nodes[0].dump_flows()?);
    cluster.nodes[0].kill_agent();
    assert!(!reaches(&red, second), "open while the agent is down");
    cluster.nodes[0].start_agent()?;
    assert!(!reaches(&red, second), "open after the restart");
    let after = table101(cluster.nodes[0].dump_flows()?);
    assert_eq!(after.len(), before.len(), "{before:?} -> {after:?}");
    for ((p0, m0, n0), (p1, m1, n1)) in before.iter().zip(&after) {
        assert!(p0 == p1 && m0 == m1 && n1 >= n0, "{before:?} -> {after:?}");
    }

    // The name's answer changes: within its TTL (1 s) and a resolution, the firewall
    // follows it.
    dns.set("www.egress.test", &[second])?;
    assert!(eventually(Duration::from_secs(5), || reaches(&red, second)), "the new address is not allowed");
    assert!(!reaches(&red, first), "the old address is still allowed");

    // A trace shows the rule that decides.
    let text = run(cluster.nodes[0]
        .netns
        .command(bins::oxsdnctl())
        .args(["trace", "--node", "node1", "--bpffs-dir", cluster.bpffs.to_str().unwrap()])
        .args(["--from", &format!("pod:{}", red.ip), "--to", &format!("{first}:{WHOAMI_PORT}"), "--proto", "tcp"]))?;
    assert!(text.contains("101. ip,reg0=") && text.contains("nw_dst=0.0.0.0/0"), "{text}");

    // Deleted: everything passes again.
    cluster.oxsdnctl(&["delete", "egressnetworkpolicy", "default", "-n", "red"])?;
    assert!(eventually(Duration::from_secs(5), || reaches(&red, first)), "still denied after the delete");
    let flows = cluster.nodes[0].dump_flows()?;
    assert!(flows.iter().all(|f| f.table != 101 || f.priority == 0), "entries left: {flows:?}");
    Ok(())
}
