//! The scenarios, each two network endpoints in namespaces of this run.

use std::net::Ipv4Addr;

use anyhow::Result;
use oxsdn_tests::{netns::Netns, Pod, TestCluster};

pub struct Scenario {
    pub name: &'static str,
    pub client: Netns,
    pub server: Netns,
    pub server_ip: Ipv4Addr,
    /// What must live as long as the scenario (a cluster, a bridge namespace…).
    _keep: Vec<Box<dyn std::any::Any>>,
}

fn prefix() -> String {
    format!("oxt{}-bench", std::process::id())
}

/// Two namespaces on one veth pair: the physical limit on one node.
fn raw_veth() -> Result<Scenario> {
    let (a, b) = (Netns::create(&format!("{}-veth-a", prefix()))?, Netns::create(&format!("{}-veth-b", prefix()))?);
    a.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &b.name])?;
    a.ip(&["addr", "add", "10.99.0.1/24", "dev", "eth0"])?;
    b.ip(&["addr", "add", "10.99.0.2/24", "dev", "eth0"])?;
    a.ip(&["link", "set", "eth0", "up"])?;
    b.ip(&["link", "set", "eth0", "up"])?;
    Ok(Scenario { name: "raw-veth", client: a, server: b, server_ip: "10.99.0.2".parse()?, _keep: vec![] })
}

/// Two pods on a Linux bridge, as the reference `bridge` CNI plugs them.
fn linux_bridge() -> Result<Scenario> {
    let br = Netns::create(&format!("{}-br", prefix()))?;
    br.ip(&["link", "add", "br0", "type", "bridge"])?;
    br.ip(&["link", "set", "br0", "up"])?;
    let mut pods = Vec::new();
    for (i, name) in ["a", "b"].iter().enumerate() {
        let ns = Netns::create(&format!("{}-br-{name}", prefix()))?;
        let port = format!("p{name}");
        br.ip(&["link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns.name])?;
        br.ip(&["link", "set", &port, "master", "br0", "up"])?;
        ns.ip(&["addr", "add", &format!("10.98.0.{}/24", i + 1), "dev", "eth0"])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        pods.push(ns);
    }
    let server = pods.pop().expect("two pods");
    let client = pods.pop().expect("two pods");
    Ok(Scenario { name: "linux-bridge", client, server, server_ip: "10.98.0.2".parse()?, _keep: vec![Box::new(br)] })
}

/// Two pods of one project on one oxsdn node.
fn oxsdn_same_node() -> Result<Scenario> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let node = cluster.node("node1");
    let Pod { netns: client, .. } = node.add_pod("bench", "client")?;
    let Pod { netns: server, ip: server_ip, .. } = node.add_pod("bench", "server")?;
    Ok(Scenario { name: "oxsdn-same-node", client, server, server_ip, _keep: vec![Box::new(cluster)] })
}

pub fn all() -> Result<Vec<Scenario>> {
    Ok(vec![raw_veth()?, linux_bridge()?, oxsdn_same_node()?])
}
