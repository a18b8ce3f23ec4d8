//! The cluster store under stress: etcd going away and coming back while traffic
//! flows, a node cut off from etcd catching up, operators racing each other.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use oxsdn_tests::{
    cni::CniCall,
    inventory::Inventory,
    netns::Netns,
    probe::{ping, serve_echo, tcp_echo, Iperf3Client, Iperf3Server, ECHO_PORT},
    scenario::wait_applied_everywhere,
    TestCluster,
};

/// Waits up to `limit` for `cond`.
fn eventually(limit: Duration, what: &str, cond: impl Fn() -> bool) -> Result<()> {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > limit {
            bail!("{what}: not within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

#[test]
fn etcd_down_and_back_while_traffic_flows() -> Result<()> {
    let mut cluster = TestCluster::with_etcd(&[])?;
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let pods = vec![
        cluster.nodes[0].add_pod("red", "a")?,
        cluster.nodes[1].add_pod("red", "b")?,
        cluster.nodes[1].add_pod("blue", "c")?,
    ];
    let (a, b, c) = (&pods[0], &pods[1], &pods[2]);
    serve_echo(&c.netns, ECHO_PORT)?;
    let server = Iperf3Server::start(&b.netns)?;
    let client = Iperf3Client::start(&a.netns, b.ip, 8, None)?;

    cluster.etcd.as_mut().expect("etcd").kill();
    std::thread::sleep(Duration::from_secs(1));
    // The dataplanes keep forwarding and isolating with their last state.
    assert!(ping(&a.netns, b.ip), "forwarding stopped with etcd down");
    assert!(!ping(&a.netns, c.ip), "isolation lost with etcd down");
    // A pod cannot be added meanwhile: a clear, retryable CNI error, nothing left behind
    // (no veth, address, record or map entry on the node, the pod's namespace untouched).
    let ns = Netns::create(&format!("{}-late", cluster.prefix))?;
    let conf = cluster.nodes[0].network_config()?;
    let before = Inventory::take(&cluster.nodes[0])?;
    let out = cluster.nodes[0].cni(&CniCall::add(&conf, "late", &ns.path(), "green", "late"));
    assert_eq!(out.error_code()?, 11, "{}", out.stdout);
    let half_state = before.differences(&Inventory::take(&cluster.nodes[0])?);
    assert!(half_state.is_empty(), "a failed ADD left state behind: {half_state:#?}");
    assert_eq!(ns.ip(&["-o", "link"])?.lines().count(), 1, "the pod's namespace was changed");
    // A pod of a project the node knows is added from the node's cached state, with the
    // VNID its dataplane enforces.
    let known = Netns::create(&format!("{}-known", cluster.prefix))?;
    let result = cluster.nodes[0].cni(&CniCall::add(&conf, "known", &known.path(), "red", "known")).success()?;
    assert_eq!(result["ips"][0]["address"].as_str().map(|a| a.starts_with("10.")), Some(true), "{result}");
    assert!(ping(&known, b.ip), "a pod added with etcd down cannot reach its project");
    assert!(!ping(&known, c.ip), "a pod added with etcd down reaches an isolated project");

    cluster.etcd.as_mut().expect("etcd").restart()?;
    // The agents resync; a change made now reaches both.
    cluster.oxsdnctl(&["pod-network", "join-projects", "--to=red", "blue"])?;
    wait_applied_everywhere(&cluster, &pods, "blue")?;
    assert!(tcp_echo(&a.netns, c.ip, ECHO_PORT), "joined projects cannot talk after etcd came back");

    client.finish()?;
    server.wait();
    // And the node adds pods again (of a project the operator created: the node's own
    // credentials may not).
    cluster.oxsdnctl(&["create", "project", "green"])?;
    cluster.nodes[0].cni(&CniCall::add(&conf, "late", &ns.path(), "green", "late")).success()?;
    Ok(())
}

#[test]
fn a_node_cut_off_from_etcd_catches_up_without_restarting() -> Result<()> {
    let mut cluster = TestCluster::with_etcd(&[])?;
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let a = cluster.nodes[0].add_pod("red", "a")?;
    let c = cluster.nodes[1].add_pod("blue", "c")?;
    serve_echo(&c.netns, ECHO_PORT)?;
    // Both directions: a watch keeps receiving events even when only its ACKs are lost.
    let cut: [&[&str]; 2] = [
        &["OUTPUT", "-p", "tcp", "--dport", "2379", "-j", "DROP"],
        &["INPUT", "-p", "tcp", "--sport", "2379", "-j", "DROP"],
    ];
    let node2 = &cluster.nodes[1].netns;
    for rule in cut {
        oxsdn_tests::netns::run(node2.command("iptables").arg("-A").args(rule))?;
    }
    cluster.oxsdnctl(&["pod-network", "join-projects", "--to=red", "blue"])?;
    // node1 applied it; node2, cut off, still isolates c (the receiving side decides).
    std::thread::sleep(Duration::from_secs(1));
    assert!(!tcp_echo(&a.netns, c.ip, ECHO_PORT), "node2 applied a change it cannot have seen");
    for rule in cut {
        oxsdn_tests::netns::run(node2.command("iptables").arg("-D").args(rule))?;
    }
    eventually(Duration::from_secs(30), "node2 catching up", || tcp_echo(&a.netns, c.ip, ECHO_PORT))?;
    Ok(())
}

#[test]
fn operators_racing_on_the_same_projects_lose_nothing() -> Result<()> {
    let mut cluster = TestCluster::with_etcd(&[])?;
    cluster.add_node("node1")?;
    for p in ["red", "blue"] {
        cluster.oxsdnctl(&["create", "project", p])?;
    }
    let red = cluster.netid("red")?;
    let blue_pod = cluster.nodes[0].add_pod("blue", "b")?;
    // Two operators at once: one keeps joining blue to red and creating its projects,
    // the other keeps isolating blue and creating its own.
    std::thread::scope(|s| -> Result<()> {
        let one = s.spawn(|| -> Result<()> {
            for i in 0..10 {
                cluster.oxsdnctl(&["pod-network", "join-projects", "--to=red", "blue"])?;
                cluster.oxsdnctl(&["create", "project", &format!("one-{i}")])?;
            }
            Ok(())
        });
        let two = s.spawn(|| -> Result<()> {
            for i in 0..10 {
                cluster.oxsdnctl(&["pod-network", "isolate-projects", "blue"])?;
                cluster.oxsdnctl(&["create", "project", &format!("two-{i}")])?;
            }
            Ok(())
        });
        one.join().expect("operator one")?;
        two.join().expect("operator two")
    })?;
    let all = cluster.netids()?;
    assert_eq!(all.len(), 2 + 20, "a project was lost: {all:?}");
    let mut vnids: Vec<u32> = all.iter().filter(|(n, _)| n != "blue").map(|(_, v)| *v).collect();
    vnids.sort();
    vnids.dedup();
    assert_eq!(vnids.len(), 21, "two projects share a VNID nobody joined: {all:?}");
    assert_eq!(cluster.netid("red")?, red, "red's VNID changed, but no command was about red");
    let blue = cluster.netid("blue")?;
    assert!(blue == red || !vnids.contains(&blue), "blue is neither joined to red nor isolated: {blue}");
    // The node's dataplane ends in the store's final state.
    wait_applied_everywhere(&cluster, std::slice::from_ref(&blue_pod), "blue")?;
    Ok(())
}
