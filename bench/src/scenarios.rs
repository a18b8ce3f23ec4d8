//! The scenarios, each two network endpoints in namespaces of this run.

use std::net::Ipv4Addr;

use anyhow::{bail, Result};
use oxsdn_tests::{
    cluster::EXTERNAL_HOST,
    netns::{run, Netns},
    Pod, TestCluster,
};

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

/// Two "node" namespaces on an underlay bridge (in a namespace of its own), each with
/// `eth0` at 172.23.0.<n>/24: the base of the cross-node scenarios.
fn underlay_nodes(tag: &str) -> Result<(Netns, Netns, Netns)> {
    let underlay = Netns::create(&format!("{}-{tag}-u", prefix()))?;
    underlay.ip(&["link", "add", "br0", "type", "bridge"])?;
    underlay.ip(&["link", "set", "br0", "up"])?;
    let mut nodes = Vec::new();
    for n in 1..=2 {
        let ns = Netns::create(&format!("{}-{tag}-n{n}", prefix()))?;
        let port = format!("p{n}");
        underlay.ip(&["link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns.name])?;
        underlay.ip(&["link", "set", &port, "master", "br0", "up"])?;
        ns.ip(&["addr", "add", &format!("172.23.0.{n}/24"), "dev", "eth0"])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        nodes.push(ns);
    }
    let n2 = nodes.pop().expect("two nodes");
    let n1 = nodes.pop().expect("two nodes");
    Ok((underlay, n1, n2))
}

/// Node to node on the underlay, no encapsulation: the limit across nodes.
fn underlay() -> Result<Scenario> {
    let (u, n1, n2) = underlay_nodes("under")?;
    Ok(Scenario { name: "underlay", client: n1, server: n2, server_ip: "172.23.0.2".parse()?, _keep: vec![Box::new(u)] })
}

/// Pods on two nodes joined the way flannel's VXLAN backend or a plain L2 overlay does
/// it: per node a bridge with the pod's veth and a kernel VXLAN device whose FDB
/// floods to the other node.
fn kernel_vxlan() -> Result<Scenario> {
    let (u, n1, n2) = underlay_nodes("kvx")?;
    let mut pods = Vec::new();
    for (n, node, remote) in [(1, &n1, "172.23.0.2"), (2, &n2, "172.23.0.1")] {
        node.ip(&["link", "add", "cbr0", "type", "bridge"])?;
        node.ip(&["link", "set", "cbr0", "up"])?;
        node.ip(&["link", "add", "vx0", "type", "vxlan", "id", "1", "dstport", "4789", "local", &format!("172.23.0.{n}"), "nolearning"])?;
        node.ip(&["link", "set", "vx0", "master", "cbr0", "up"])?;
        run(node.command("bridge").args(["fdb", "append", "00:00:00:00:00:00", "dev", "vx0", "dst", remote]))?;
        let pod = Netns::create(&format!("{}-kvx-pod{n}", prefix()))?;
        node.ip(&["link", "add", "veth0", "type", "veth", "peer", "name", "eth0", "netns", &pod.name])?;
        node.ip(&["link", "set", "veth0", "master", "cbr0", "up"])?;
        pod.ip(&["link", "set", "eth0", "mtu", "1450"])?;
        pod.ip(&["addr", "add", &format!("10.97.0.{n}/24"), "dev", "eth0"])?;
        pod.ip(&["link", "set", "eth0", "up"])?;
        pods.push(pod);
    }
    let server = pods.pop().expect("two pods");
    let client = pods.pop().expect("two pods");
    Ok(Scenario { name: "kernel-vxlan", client, server, server_ip: "10.97.0.2".parse()?, _keep: vec![Box::new(n1), Box::new(n2), Box::new(u)] })
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

/// Two pods of one project on two oxsdn nodes, across the VXLAN overlay.
fn oxsdn_cross_node() -> Result<Scenario> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let Pod { netns: client, .. } = cluster.nodes[0].add_pod("bench", "client")?;
    let Pod { netns: server, ip: server_ip, .. } = cluster.nodes[1].add_pod("bench", "server")?;
    Ok(Scenario { name: "oxsdn-cross-node", client, server, server_ip, _keep: vec![Box::new(cluster)] })
}

/// A pod of node1 to a ClusterIP whose only endpoint is on node2 (iperf3's port).
fn oxsdn_service() -> Result<Scenario> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let Pod { netns: client, .. } = cluster.nodes[0].add_pod("bench", "client")?;
    let Pod { netns: server, ip: endpoint, .. } = cluster.nodes[1].add_pod("bench", "server")?;
    cluster.oxsdnctl(&["create", "service", "iperf", "-n", "bench", "--tcp", "5201", "--cluster-ip", "172.30.0.10"])?;
    cluster.oxsdnctl(&["set", "endpoints", "iperf", "-n", "bench", &endpoint.to_string()])?;
    std::thread::sleep(std::time::Duration::from_secs(1));
    Ok(Scenario { name: "oxsdn-service", client, server, server_ip: "172.30.0.10".parse()?, _keep: vec![Box::new(cluster)] })
}

/// A pod to the external host, out through tun0 with the node's address.
fn oxsdn_egress() -> Result<Scenario> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let Pod { netns: client, .. } = cluster.nodes[0].add_pod("bench", "client")?;
    let server = Netns::borrowed(&cluster.external.name);
    Ok(Scenario { name: "oxsdn-egress", client, server, server_ip: EXTERNAL_HOST.parse()?, _keep: vec![Box::new(cluster)] })
}

/// The node itself to the same external host: the limit for egress.
fn node_egress() -> Result<Scenario> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let client = Netns::borrowed(&cluster.nodes[0].netns.name);
    let server = Netns::borrowed(&cluster.external.name);
    Ok(Scenario { name: "node-egress", client, server, server_ip: EXTERNAL_HOST.parse()?, _keep: vec![Box::new(cluster)] })
}

type Setup = fn() -> Result<Scenario>;

const ALL: [(&str, Setup); 9] = [
    ("raw-veth", raw_veth),
    ("linux-bridge", linux_bridge),
    ("oxsdn-same-node", oxsdn_same_node),
    ("underlay", underlay),
    ("kernel-vxlan", kernel_vxlan),
    ("oxsdn-cross-node", oxsdn_cross_node),
    ("oxsdn-service", oxsdn_service),
    ("oxsdn-egress", oxsdn_egress),
    ("node-egress", node_egress),
];

/// Sets up the scenarios named in `only` (all of them if it is empty).
pub fn all(only: &[String]) -> Result<Vec<Scenario>> {
    if let Some(unknown) = only.iter().find(|n| !ALL.iter().any(|(name, _)| name == n)) {
        bail!("unknown scenario {unknown}; known: {}", ALL.map(|(name, _)| name).join(", "));
    }
    ALL.iter().filter(|(name, _)| only.is_empty() || only.iter().any(|n| n == name)).map(|(_, setup)| setup()).collect()
}
