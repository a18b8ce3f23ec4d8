//! Egress IPs (OpenShift's NetNamespace.egressIPs with HostSubnet.egressIPs and
//! egressCIDRs): a project's pods leave the cluster with its egress IP from whichever
//! node they run on, other projects with their node's address; a project whose egress
//! IPs no node holds loses external traffic; automatic egress IPs move off a dead node.

use std::{
    net::{Ipv4Addr, UdpSocket},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use oxsdn_tests::{
    cluster::{EXTERNAL_HOST, UNDERLAY_PREFIX},
    flows::packets,
    frames,
    probe::{serve_whoami, whoami_tcp, whoami_udp, RawSocket},
    runtime::wait_until,
    TestCluster,
};

const WHOAMI_PORT: u16 = 7070;

fn external() -> Ipv4Addr {
    EXTERNAL_HOST.parse().expect("an address")
}

fn underlay_ip(host: u8) -> String {
    format!("{UNDERLAY_PREFIX}.{host}")
}

/// The source address the external host sees for a TCP connection of `pod`.
fn seen_as(pod: &oxsdn_tests::Pod) -> String {
    whoami_tcp(&pod.netns, external(), WHOAMI_PORT).unwrap_or_else(|e| format!("no answer: {e}"))
}

/// Whether the underlay device of `cluster`'s node `i` has `ip`.
fn holds(cluster: &TestCluster, i: usize, ip: &str) -> bool {
    let netns = oxsdn_tests::netns::Netns::borrowed(&cluster.nodes[i].netns.name);
    let addresses = netns.ip(&["-4", "-o", "addr", "show", "dev", "eth0"]).unwrap_or_default();
    addresses.contains(&format!(" {ip}/"))
}

/// What a `serve_whoami` server says about a 3,000-byte UDP datagram from `from` (in
/// fragments through a pod's 1,450-byte MTU), from a new source port.
fn whoami_udp_fragmented(from: &oxsdn_tests::netns::Netns, to: Ipv4Addr, port: u16) -> Result<String> {
    from.enter(move || -> Result<String> {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.send_to(&[0x5a; 3000], (to, port))?;
        let mut buf = [0u8; 64];
        let n = s.recv(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })?
}

#[test]
fn manual_egress_ips_from_the_holder_and_from_other_nodes() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    serve_whoami(&cluster.external, WHOAMI_PORT)?;
    for node in ["node1", "node2", "node3"] {
        cluster.add_node(node)?;
    }
    let red_on_holder = cluster.nodes[0].add_pod("red", "a")?;
    let red_elsewhere = cluster.nodes[1].add_pod("red", "b")?;
    let red_third = cluster.nodes[2].add_pod("red", "c")?;
    let blue = cluster.nodes[1].add_pod("blue", "d")?;
    let green = cluster.nodes[1].add_pod("green", "e")?;
    let egress_ip = underlay_ip(100);
    let unheld = underlay_ip(101);

    // green's egress IP lies in the nodes' network but no node holds it. Set before
    // red's: each agent applies the records in order, so once red's pods leave with
    // their egress IP, green's record is in place on every node too.
    cluster.oxsdnctl(&["set", "egress-ips", "green", &unheld])?;
    cluster.oxsdnctl(&["set", "hostsubnet-egress", "node1", "--ips", &egress_ip])?;
    cluster.oxsdnctl(&["set", "egress-ips", "red", &egress_ip])?;

    for pod in [&red_on_holder, &red_elsewhere, &red_third] {
        wait_until(Duration::from_secs(10), &format!("{} leaving with {egress_ip}", pod.ip), || {
            seen_as(pod) == egress_ip
        })?;
        assert_eq!(whoami_udp(&pod.netns, external(), WHOAMI_PORT)?, egress_ip, "UDP of {}", pod.ip);
    }
    // Another project on the same node keeps the node's address.
    assert_eq!(seen_as(&blue), cluster.nodes[1].ip.to_string());

    // The project whose egress IP nobody holds: nothing leaves, with any address.
    let watch = RawSocket::open(&cluster.external, "eth0")?;
    let green_netns = &green.netns;
    green_netns.enter(|| -> Result<()> {
        UdpSocket::bind("0.0.0.0:0")?.send_to(b"oxsdn-unheld-egress", (external(), WHOAMI_PORT))?;
        Ok(())
    })??;
    assert!(whoami_tcp(&green.netns, external(), WHOAMI_PORT).is_err(), "green got out");
    let leaked = watch.capture(Duration::from_millis(500), |f| frames::contains(f, b"oxsdn-unheld-egress"));
    assert!(leaked.is_empty(), "green's datagram reached the outside: {leaked:02x?}");

    // Counted where OpenShift's table 100 flows would count them.
    let holder = cluster.nodes[0].dump_flows()?;
    let other = cluster.nodes[1].dump_flows()?;
    assert!(packets(&holder, 100, 100, "ip,egress_ip=held_here") > 0, "local egress IP on the holder");
    assert!(packets(&holder, 100, 110, "ip,in_port=vxlan0,egress_ip=held_here") > 0, "SNAT for other nodes");
    assert!(packets(&other, 100, 100, "ip,egress_ip=held_elsewhere") > 0, "sent to the holder");
    assert!(packets(&other, 100, 100, "ip,egress_ip=unheld") > 0, "green's drop");

    // The holder answers ARP for the egress IP on the underlay and owns it.
    let addresses = cluster.nodes[0].netns.ip(&["-4", "-o", "addr", "show", "dev", "eth0"])?;
    assert!(addresses.contains(&format!(" {egress_ip}/24 ")), "{addresses}");

    // A host of the underlay cannot open connections to the egress IP (the holder lets
    // only replies in), while the node's own address still answers.
    serve_whoami(&cluster.nodes[0].netns, WHOAMI_PORT + 1)?;
    assert!(whoami_tcp(&cluster.underlay, cluster.nodes[0].ip, WHOAMI_PORT + 1).is_ok());
    assert!(
        whoami_tcp(&cluster.underlay, egress_ip.parse()?, WHOAMI_PORT + 1).is_err(),
        "a connection to the egress IP was accepted"
    );

    // Cleared: red leaves with its nodes' addresses again, and node1 lets the address go.
    cluster.oxsdnctl(&["set", "egress-ips", "red"])?;
    for (pod, node) in [(&red_elsewhere, 1), (&red_on_holder, 0)] {
        let node_ip = cluster.nodes[node].ip.to_string();
        wait_until(Duration::from_secs(10), &format!("{} leaving with {node_ip}", pod.ip), || seen_as(pod) == node_ip)?;
    }
    wait_until(Duration::from_secs(5), "node1 giving the egress IP up", || {
        let a = cluster.nodes[0].netns.ip(&["-4", "-o", "addr", "show", "dev", "eth0"]).unwrap_or_default();
        !a.contains(&format!(" {egress_ip}/"))
    })?;
    Ok(())
}

#[test]
fn egress_ips_are_validated_against_the_nodes() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    cluster.nodes[0].add_pod("red", "a")?;
    cluster.nodes[0].add_pod("blue", "b")?;
    let refused = |args: &[&str], why: &str| -> Result<()> {
        let err = cluster.oxsdnctl(args).expect_err("accepted");
        assert!(format!("{err:#}").contains(why), "{args:?}: {err:#}");
        Ok(())
    };
    // The node's network is what its agent reports: 172.22.122.0/24.
    refused(&["set", "egress-ips", "red", "192.0.2.1"], "outside every node's network")?;
    refused(&["set", "hostsubnet-egress", "node1", "--ips", "192.0.2.1"], "outside node \"node1\"'s network")?;
    refused(&["set", "egress-ips", "red", &underlay_ip(11)], "node \"node1\"'s own address")?;
    cluster.oxsdnctl(&["set", "egress-ips", "red", &underlay_ip(100)])?;
    refused(&["set", "egress-ips", "blue", &underlay_ip(100)], "two projects")?;
    refused(&["set", "egress-ips", "nosuch", &underlay_ip(102)], "nosuch")?;
    let table = cluster.oxsdnctl(&["get", "netnamespaces"])?;
    let blue = table.lines().find(|l| l.starts_with("blue ")).context("no blue")?;
    assert!(blue.ends_with(" []"), "{table}");
    cluster.oxsdnctl(&["pod-network", "make-projects-global", "blue"])?;
    refused(&["set", "egress-ips", "blue", &underlay_ip(102)], "global")?;
    Ok(())
}

/// One UDP flow from `pod` to the external whoami server, a datagram every 10 ms; the
/// times of the answers, with the address each names.
struct Traffic {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Traffic {
    fn start(pod: &oxsdn_tests::Pod) -> Result<Traffic> {
        let socket = pod.netns.enter(|| -> Result<UdpSocket> {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.connect((external(), WHOAMI_PORT))?;
            s.set_read_timeout(Some(Duration::from_millis(10)))?;
            Ok(s)
        })??;
        let traffic = Traffic { stop: Arc::new(AtomicBool::new(false)), answers: Arc::new(Mutex::new(Vec::new())) };
        let (stop, answers) = (traffic.stop.clone(), traffic.answers.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                let _ = socket.send(b"who am i");
                if let Ok(n) = socket.recv(&mut buf) {
                    answers.lock().unwrap().push((Instant::now(), String::from_utf8_lossy(&buf[..n]).into_owned()));
                }
            }
        });
        Ok(traffic)
    }

    fn first_answer_after(&self, at: Instant) -> Option<(Instant, String)> {
        self.answers.lock().unwrap().iter().find(|(t, _)| *t > at).cloned()
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn automatic_egress_ips_move_off_a_dead_node_under_traffic() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    serve_whoami(&cluster.external, WHOAMI_PORT)?;
    for node in ["node1", "node2", "node3"] {
        cluster.add_node(node)?;
    }
    let pod = cluster.nodes[0].add_pod("red", "a")?;
    let cidr = format!("{UNDERLAY_PREFIX}.96/28");
    for node in ["node2", "node3"] {
        cluster.oxsdnctl(&["set", "hostsubnet-egress", node, "--cidrs", &cidr])?;
    }
    // Two egress IPs, balanced: one on each of node2 and node3.
    let (first, second) = (underlay_ip(100), underlay_ip(101));
    cluster.oxsdnctl(&["set", "egress-ips", "red", &first, &second])?;
    wait_until(Duration::from_secs(10), "one egress IP on each of node2 and node3", || {
        (holds(&cluster, 1, &first) && holds(&cluster, 2, &second))
            || (holds(&cluster, 1, &second) && holds(&cluster, 2, &first))
    })?;
    let egress: [String; 2] = [first.clone(), second.clone()];
    wait_until(Duration::from_secs(10), "leaving with an egress IP", || egress.contains(&seen_as(&pod)))?;
    // Flows are balanced over both addresses.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        seen.insert(seen_as(&pod));
    }
    assert_eq!(seen, egress.iter().cloned().collect(), "per-flow balancing");
    // A datagram larger than the pod's MTU leaves in fragments, of which only the first
    // has ports: all of them must take the same egress IP, or no holder can reassemble it.
    for flow in 0..16 {
        let from = whoami_udp_fragmented(&pod.netns, external(), WHOAMI_PORT)
            .with_context(|| format!("fragmented datagram {flow}"))?;
        assert!(egress.contains(&from), "fragmented datagram {flow} left as {from}");
    }

    let traffic = Traffic::start(&pod)?;
    wait_until(Duration::from_secs(5), "answers to the flow", || {
        traffic.first_answer_after(Instant::now() - Duration::from_millis(200)).is_some()
    })?;
    let (_, before) = traffic.answers.lock().unwrap().last().cloned().context("no answer")?;
    let holder = if holds(&cluster, 1, &before) { 1 } else { 2 };
    let survivor = 3 - holder;
    // The holder dies: its agent and its link to the underlay.
    let killed = Instant::now();
    cluster.nodes[holder].kill_agent();
    cluster.underlay.ip(&["link", "set", &format!("p{}", holder + 1), "down"])?;
    let recovered = wait_until(Duration::from_secs(20), &format!("{before} moving to node{}", survivor + 1), || {
        traffic.first_answer_after(killed + Duration::from_millis(1)).is_some_and(|(_, from)| from == before)
            && holds(&cluster, survivor, &before)
    });
    let answers = traffic.answers.lock().unwrap().clone();
    let last_before = answers.iter().rev().find(|(t, _)| *t <= killed).map(|(t, _)| *t);
    let first_after = answers.iter().find(|(t, _)| *t > killed + Duration::from_millis(50));
    if let (Some(last), Some((first, from))) = (last_before, first_after) {
        println!(
            "egress IP failover: traffic stopped {:?} before the kill, resumed {:?} after it, from {from}",
            killed.duration_since(last),
            first.duration_since(killed)
        );
    }
    recovered
}

/// An agent stopping cleanly (an upgrade) hands its automatic egress IPs over at once
/// instead of holding them until the others see its lease expire (then both would
/// hold them); its manual ones stay, and an uninstall takes them off too.
#[test]
fn a_stopping_agent_hands_its_automatic_egress_ips_over_and_an_uninstall_takes_its_addresses_off() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    serve_whoami(&cluster.external, WHOAMI_PORT)?;
    for node in ["node1", "node2", "node3"] {
        cluster.add_node(node)?;
    }
    let pod = cluster.nodes[0].add_pod("red", "a")?;
    cluster.nodes[0].add_pod("blue", "b")?;
    let cidr = format!("{UNDERLAY_PREFIX}.96/28");
    let (automatic, manual) = (underlay_ip(100), underlay_ip(110));
    cluster.oxsdnctl(&["set", "hostsubnet-egress", "node2", "--cidrs", &cidr])?;
    cluster.oxsdnctl(&["set", "hostsubnet-egress", "node3", "--cidrs", &cidr])?;
    cluster.oxsdnctl(&["set", "hostsubnet-egress", "node1", "--ips", &manual])?;
    cluster.oxsdnctl(&["set", "egress-ips", "red", &automatic])?;
    cluster.oxsdnctl(&["set", "egress-ips", "blue", &manual])?;
    wait_until(Duration::from_secs(10), "the automatic egress IP on node2 or node3", || {
        holds(&cluster, 1, &automatic) != holds(&cluster, 2, &automatic)
    })?;
    wait_until(Duration::from_secs(10), "the manual egress IP on node1", || holds(&cluster, 0, &manual))?;
    wait_until(Duration::from_secs(10), "leaving with the egress IP", || seen_as(&pod) == automatic)?;
    let holder = if holds(&cluster, 1, &automatic) { 1 } else { 2 };
    let other = 3 - holder;

    let stopped = Instant::now();
    cluster.nodes[holder].stop_agent();
    assert!(!holds(&cluster, holder, &automatic), "the stopped agent left its automatic egress IP on its device");
    // Well before a lease would expire by itself (1 s) plus the watch's reaction.
    wait_until(Duration::from_secs(5), "the other node taking the egress IP", || holds(&cluster, other, &automatic))?;
    println!("egress IP handed over {:?} after the stop began", stopped.elapsed());
    wait_until(Duration::from_secs(10), "leaving with the egress IP again", || seen_as(&pod) == automatic)?;
    cluster.nodes[holder].start_agent()?;
    wait_until(Duration::from_secs(10), "exactly one holder after the restart", || {
        holds(&cluster, 1, &automatic) != holds(&cluster, 2, &automatic)
    })?;

    // node1's own (manual) address stays through a clean stop, and goes with an uninstall.
    cluster.nodes[0].stop_agent();
    assert!(holds(&cluster, 0, &manual), "a clean stop took the manual egress IP off");
    cluster.nodes[0].teardown()?;
    assert!(!holds(&cluster, 0, &manual), "the uninstall left the egress IP on the device");
    Ok(())
}
