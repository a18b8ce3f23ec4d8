//! Several nodes joined by the VXLAN overlay: isolation across nodes, remote ARP, nodes
//! coming and going, hostile VXLAN, MTU.

use anyhow::{bail, Result};
use oxsdn_tests::{
    matrix,
    probe::{ping, serve_echo, ECHO_PORT},
    scenario::{allowed, wait_applied, STEPS},
    Pod, TestCluster,
};

fn check(stage: usize, pods: &[Pod]) -> Result<()> {
    let m = matrix::measure(pods);
    let bad = matrix::mismatches(pods, &m, |a, b| allowed(stage, a, b));
    if !bad.is_empty() {
        bail!("after {stage} steps:\n{}\n{}", matrix::format(pods, &m), bad.join("\n"));
    }
    Ok(())
}

#[test]
fn cross_node_isolation_matrix_follows_pod_network_commands() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    for n in ["node1", "node2", "node3"] {
        cluster.add_node(n)?;
    }
    let mut pods = Vec::new();
    let placement = [("default", "d1", 0), ("red", "r1", 0), ("red", "r2", 1), ("blue", "b1", 1), ("blue", "b2", 2), ("red", "r3", 2)];
    for (project, name, node) in placement {
        let pod = cluster.nodes[node].add_pod(project, name)?;
        serve_echo(&pod.netns, ECHO_PORT)?;
        pods.push(pod);
    }
    check(0, &pods)?;
    for (i, step) in STEPS.iter().enumerate() {
        cluster.oxsdnctl(step.command)?;
        for node in &cluster.nodes {
            wait_applied(&cluster, node, &pods, step.changed)?;
        }
        check(i + 1, &pods)?;
    }
    Ok(())
}

#[test]
fn host_reaches_remote_pods_and_remote_arp_resolves() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
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
