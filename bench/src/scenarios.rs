//! The scenarios, each two network endpoints in namespaces of this run.

use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use oxsdn_tests::{
    cluster::EXTERNAL_HOST,
    netns::{run, Netns},
    Pod, TestCluster,
};

use crate::ovs;

pub struct Scenario {
    pub name: &'static str,
    pub client: Netns,
    pub server: Netns,
    pub server_ip: Ipv4Addr,
    /// Why ping cannot measure this path's round trip, if it cannot.
    pub no_ping: Option<&'static str>,
    /// What must live as long as the scenario (a cluster, a bridge namespace…).
    _keep: Vec<Box<dyn std::any::Any>>,
}

impl Scenario {
    fn new(name: &'static str, client: Netns, server: Netns, server_ip: Ipv4Addr, keep: Vec<Box<dyn std::any::Any>>) -> Scenario {
        Scenario { name, client, server, server_ip, no_ping: None, _keep: keep }
    }
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
    Ok(Scenario::new("raw-veth", a, b, "10.99.0.2".parse()?, vec![]))
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
    Ok(Scenario::new("linux-bridge", client, server, "10.98.0.2".parse()?, vec![Box::new(br)]))
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
    Ok(Scenario::new("underlay", n1, n2, "172.23.0.2".parse()?, vec![Box::new(u)]))
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
        // flannel's --ip-masq rule: it turns connection tracking on in the node's
        // namespace, as oxsdn's egress masquerade does (without it the baseline has no
        // netfilter at all and skips conntrack's per-packet cost, docs/design.md).
        for command in [
            "add table ip flannel",
            "add chain ip flannel postrouting { type nat hook postrouting priority 100 ; }",
            "add rule ip flannel postrouting ip saddr 10.97.0.0/16 ip daddr != 10.97.0.0/16 masquerade",
        ] {
            run(node.command("nft").arg(command))?;
        }
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
    Ok(Scenario::new("kernel-vxlan", client, server, "10.97.0.2".parse()?, vec![Box::new(n1), Box::new(n2), Box::new(u)]))
}

/// Two pods of one project on one oxsdn node.
fn oxsdn_same_node() -> Result<Scenario> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let node = cluster.node("node1");
    let Pod { netns: client, .. } = node.add_pod("bench", "client")?;
    let Pod { netns: server, ip: server_ip, .. } = node.add_pod("bench", "server")?;
    Ok(Scenario::new("oxsdn-same-node", client, server, server_ip, vec![Box::new(cluster)]))
}

/// Two pods of one project on two oxsdn nodes, across the VXLAN overlay.
fn oxsdn_cross_node() -> Result<Scenario> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let Pod { netns: client, .. } = cluster.nodes[0].add_pod("bench", "client")?;
    let Pod { netns: server, ip: server_ip, .. } = cluster.nodes[1].add_pod("bench", "server")?;
    Ok(Scenario::new("oxsdn-cross-node", client, server, server_ip, vec![Box::new(cluster)]))
}

/// A pod of node1 to a ClusterIP whose only endpoint is on node2 (iperf3's port).
fn oxsdn_service() -> Result<Scenario> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let Pod { netns: client, .. } = cluster.nodes[0].add_pod("bench", "client")?;
    let Pod { netns: server, ip: endpoint, .. } = cluster.nodes[1].add_pod("bench", "server")?;
    cluster.oxsdnctl(&["create", "service", "iperf", "-n", "bench", "--tcp", "5201", "--udp", "5201", "--cluster-ip", "172.30.0.10"])?;
    cluster.oxsdnctl(&["set", "endpoints", "iperf", "-n", "bench", &endpoint.to_string()])?;
    std::thread::sleep(std::time::Duration::from_secs(1));
    let mut scenario = Scenario::new("oxsdn-service", client, server, "172.30.0.10".parse()?, vec![Box::new(cluster)]);
    scenario.no_ping = Some("a ClusterIP answers only its declared ports (table 60 drops ICMP), as with kube-proxy");
    Ok(scenario)
}

/// A pod to the external host, out through tun0 with the node's address.
fn oxsdn_egress() -> Result<Scenario> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let Pod { netns: client, .. } = cluster.nodes[0].add_pod("bench", "client")?;
    let server = Netns::borrowed(&cluster.external.name);
    Ok(Scenario::new("oxsdn-egress", client, server, EXTERNAL_HOST.parse()?, vec![Box::new(cluster)]))
}

/// The node itself to the same external host: the limit for egress.
fn node_egress() -> Result<Scenario> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let client = Netns::borrowed(&cluster.nodes[0].netns.name);
    let server = Netns::borrowed(&cluster.external.name);
    Ok(Scenario::new("node-egress", client, server, EXTERNAL_HOST.parse()?, vec![Box::new(cluster)]))
}

/// The OVS switches' private directories live under the run's temporary directory.
fn ovs_dir(node: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("{}-ovs-{node}", prefix()))
}

/// Two pods of one project on one Open vSwitch node with the userspace datapath and
/// OpenShift SDN's flows.
fn ovs_same_node() -> Result<Scenario> {
    let node = Netns::create(&format!("{}-ovs1", prefix()))?;
    let mut ovs = ovs::node(&node, &format!("{}-ovs1p", prefix()), &ovs_dir("same"), 1, 2, None)?;
    let server = ovs.pods.pop().expect("two pods");
    let client = ovs.pods.pop().expect("two pods");
    // The switch stops before its node namespace goes.
    Ok(Scenario::new("ovs-userspace-same-node", client.netns, server.netns, server.ip, vec![Box::new(ovs), Box::new(node)]))
}

/// Pods on two Open vSwitch nodes (userspace datapath) joined by VXLAN with the VNID as
/// the key, as OpenShift SDN does.
fn ovs_cross_node() -> Result<Scenario> {
    let (u, n1, n2) = underlay_nodes("ovsx")?;
    let ip = |n: u8| Ipv4Addr::new(172, 23, 0, n);
    let mut one = ovs::node(&n1, &format!("{}-ovsxp", prefix()), &ovs_dir("n1"), 1, 1, Some((ip(1), ovs::Peer { ip: ip(2), index: 2 })))?;
    let mut two = ovs::node(&n2, &format!("{}-ovsxp", prefix()), &ovs_dir("n2"), 2, 1, Some((ip(2), ovs::Peer { ip: ip(1), index: 1 })))?;
    let client = one.pods.pop().context("a pod on node 1")?;
    let server = two.pods.pop().context("a pod on node 2")?;
    Ok(Scenario::new(
        "ovs-userspace-cross-node",
        client.netns,
        server.netns,
        server.ip,
        vec![Box::new(one), Box::new(two), Box::new(n1), Box::new(n2), Box::new(u)],
    ))
}

/// Every scenario's name, in the order they are measured.
pub const NAMES: [&str; 11] = [
    "raw-veth",
    "linux-bridge",
    "oxsdn-same-node",
    "ovs-userspace-same-node",
    "underlay",
    "kernel-vxlan",
    "oxsdn-cross-node",
    "ovs-userspace-cross-node",
    "oxsdn-service",
    "oxsdn-egress",
    "node-egress",
];

/// Sets up the scenario called `name`.
pub fn setup(name: &str) -> Result<Scenario> {
    match name {
        "raw-veth" => raw_veth(),
        "linux-bridge" => linux_bridge(),
        "oxsdn-same-node" => oxsdn_same_node(),
        "ovs-userspace-same-node" => ovs_same_node(),
        "underlay" => underlay(),
        "kernel-vxlan" => kernel_vxlan(),
        "oxsdn-cross-node" => oxsdn_cross_node(),
        "ovs-userspace-cross-node" => ovs_cross_node(),
        "oxsdn-service" => oxsdn_service(),
        "oxsdn-egress" => oxsdn_egress(),
        "node-egress" => node_egress(),
        other => anyhow::bail!("no scenario {other}"),
    }
}
