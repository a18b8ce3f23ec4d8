//! Pods' bandwidth limits (CNI `bandwidth`, passed by the runtime as `runtimeConfig`
//! because the agent's conflist declares the capability), enforced by the dataplane's
//! earliest-departure-time pacing: iperf3 from a limited pod to a pod of its node, a
//! pod of another node and a host outside, against the limit. The figures are printed;
//! the assertion is a wide band (the rate is limited, and not starved), never a timing.

use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use oxsdn_cni::code;
use oxsdn_tests::{
    cluster::EXTERNAL_HOST,
    cni::CniCall,
    flows::packets,
    netns::Netns,
    probe::{Iperf3Client, Iperf3Server},
    TestCluster,
};
use serde_json::json;

const SECS: u32 = 3;
const MBIT: u64 = 1_000_000;

/// The rate iperf3 reaches from `from` to `to` (bits per second).
fn rate(from: &Netns, server: &Netns, to: Ipv4Addr) -> Result<f64> {
    let _server = Iperf3Server::start(server)?;
    Iperf3Client::start(from, to, SECS, None)?.received_bits_per_second()
}

/// Prints the rate `got` against the limit `bps`, and checks it is limited and not
/// starved: within 0.5-2x (a band, not a timing).
fn assert_limited(what: &str, got: f64, bps: u64) {
    let ratio = got / bps as f64;
    println!("{what}: {:.1} Mbit/s ({ratio:.2} x)", got / MBIT as f64);
    assert!((0.5..2.0).contains(&ratio), "{what}: {ratio:.2} x the limit");
}

fn limit(egress_bps: u64) -> serde_json::Value {
    json!({"bandwidth": {"egressRate": egress_bps, "egressBurst": egress_bps}})
}

#[test]
fn egress_limits_pace_the_pod() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let (n1, n2) = (&cluster.nodes[0], &cluster.nodes[1]);
    let local = n1.add_pod("red", "local")?;
    let remote = n2.add_pod("red", "remote")?;
    let external: Ipv4Addr = EXTERNAL_HOST.parse()?;
    let free = n1.add_pod("red", "free")?;
    let unlimited = rate(&free.netns, &remote.netns, remote.ip)?;
    println!("unlimited pod -> pod of another node: {:.1} Mbit/s", unlimited / MBIT as f64);
    for limit_mbit in [10u64, 50, 100] {
        let bps = limit_mbit * MBIT;
        let pod = n1.add_pod_with("red", &format!("limited{limit_mbit}"), Some(limit(bps)))?;
        for (path, server, to) in [
            ("a pod of its node", &local.netns, local.ip),
            ("a pod of another node", &remote.netns, remote.ip),
            ("a host outside", &cluster.external, external),
        ] {
            let got = rate(&pod.netns, server, to).with_context(|| format!("iperf3 to {path}"))?;
            assert_limited(&format!("egress limit {limit_mbit} Mbit/s, to {path}"), got, bps);
        }
    }
    let flows = n1.dump_flows()?;
    assert!(packets(&flows, 252, 100, "ip,bandwidth=egress") > 0, "table 252 did not count the paced packets");
    Ok(())
}

#[test]
fn ingress_limits_hold_on_every_path_to_the_pod() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let (n1, n2) = (&cluster.nodes[0], &cluster.nodes[1]);
    let local = n1.add_pod("red", "local")?;
    let remote = n2.add_pod("red", "remote")?;
    let limit_mbit = 50u64;
    let bps = limit_mbit * MBIT;
    let rc = json!({"bandwidth": {"ingressRate": bps, "ingressBurst": bps}});
    let limited = n1.add_pod_with("red", "limited", Some(rc))?;
    for (path, client) in
        [("a pod of its node", &local.netns), ("a pod of another node", &remote.netns), ("the node", &n1.netns)]
    {
        let got = rate(client, &limited.netns, limited.ip).with_context(|| format!("iperf3 from {path}"))?;
        assert_limited(&format!("ingress limit {limit_mbit} Mbit/s, from {path}"), got, bps);
    }
    let flows = n1.dump_flows()?;
    assert!(packets(&flows, 252, 100, "ip,bandwidth=ingress") > 0, "table 252 did not count the paced packets");
    Ok(())
}

#[test]
fn bad_bandwidth_is_refused_before_anything_is_made() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let node = &cluster.nodes[0];
    let netns = Netns::create(&format!("{}-bad", cluster.prefix))?;
    let mut config = node.network_config()?;
    // A rate without a burst (the bandwidth plugin's rule), and a negative rate: code 7.
    for bad in [json!({"egressRate": 10_000_000}), json!({"ingressRate": -1, "ingressBurst": 1})] {
        config["runtimeConfig"] = json!({ "bandwidth": bad });
        let out = node.cni(&CniCall::add(&config, &format!("{}-bad", cluster.prefix), &netns.path(), "red", "bad"));
        assert_eq!(out.error_code()?, u64::from(code::INVALID_NETWORK_CONFIG), "{}", out.stdout);
        assert!(!netns.ip(&["link"])?.contains("eth0"), "the refused pod kept an interface");
    }
    Ok(())
}
