//! The scenarios, each two network endpoints in namespaces of this run.

use std::{net::Ipv4Addr, time::Duration};

use anyhow::{Context, Result};
use oxsdn_tests::{
    cluster::EXTERNAL_HOST,
    netns::{run, Netns},
    Pod, TestCluster,
};

use crate::ovs;

pub struct Scenario {
    /// The scenario's name; a copy set up for an A/A or A/B comparison adds its suffix
    /// (`oxsdn-same-node~aa`).
    pub name: String,
    pub client: Netns,
    pub server: Netns,
    pub server_ip: Ipv4Addr,
    /// Why ping cannot measure this path's round trip, if it cannot.
    pub no_ping: Option<&'static str>,
    /// Its packets cross a userspace datapath (OVS netdev), 10–30× slower than the kernel.
    pub userspace_datapath: bool,
    /// Processes that forward its packets (the userspace datapath's ovs-vswitchd): their
    /// CPU time is part of what its traffic costs.
    pub forwarders: Vec<u32>,
    /// What must live as long as the scenario (a cluster, a bridge namespace…).
    _keep: Vec<Box<dyn std::any::Any>>,
}

impl Scenario {
    fn new(
        name: &'static str,
        client: Netns,
        server: Netns,
        server_ip: Ipv4Addr,
        keep: Vec<Box<dyn std::any::Any>>,
    ) -> Scenario {
        Scenario {
            name: name.to_string(),
            client,
            server,
            server_ip,
            no_ping: None,
            userspace_datapath: false,
            forwarders: Vec::new(),
            _keep: keep,
        }
    }
}

/// Two namespaces on one veth pair: the physical limit on one node.
fn raw_veth(prefix: &str) -> Result<Scenario> {
    let (a, b) = (Netns::create(&format!("{prefix}-veth-a"))?, Netns::create(&format!("{prefix}-veth-b"))?);
    a.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &b.name])?;
    a.ip(&["addr", "add", "10.99.0.1/24", "dev", "eth0"])?;
    b.ip(&["addr", "add", "10.99.0.2/24", "dev", "eth0"])?;
    a.ip(&["link", "set", "eth0", "up"])?;
    b.ip(&["link", "set", "eth0", "up"])?;
    Ok(Scenario::new("raw-veth", a, b, "10.99.0.2".parse()?, vec![]))
}

/// Two pods on a Linux bridge, as the reference `bridge` CNI plugs them.
fn linux_bridge(prefix: &str) -> Result<Scenario> {
    let br = Netns::create(&format!("{prefix}-br"))?;
    br.ip(&["link", "add", "br0", "type", "bridge"])?;
    br.ip(&["link", "set", "br0", "up"])?;
    let mut pods = Vec::new();
    for (i, name) in ["a", "b"].iter().enumerate() {
        let ns = Netns::create(&format!("{prefix}-br-{name}"))?;
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
fn underlay_nodes(prefix: &str, tag: &str) -> Result<(Netns, Netns, Netns)> {
    let underlay = Netns::create(&format!("{prefix}-{tag}-u"))?;
    underlay.ip(&["link", "add", "br0", "type", "bridge"])?;
    underlay.ip(&["link", "set", "br0", "up"])?;
    let mut nodes = Vec::new();
    for n in 1..=2 {
        let ns = Netns::create(&format!("{prefix}-{tag}-n{n}"))?;
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
fn underlay(prefix: &str) -> Result<Scenario> {
    let (u, n1, n2) = underlay_nodes(prefix, "under")?;
    Ok(Scenario::new("underlay", n1, n2, "172.23.0.2".parse()?, vec![Box::new(u)]))
}

/// Pods on two nodes joined the way flannel's VXLAN backend or a plain L2 overlay does
/// it: per node a bridge with the pod's veth and a kernel VXLAN device whose FDB
/// floods to the other node.
fn kernel_vxlan(prefix: &str) -> Result<Scenario> {
    let (u, n1, n2) = underlay_nodes(prefix, "kvx")?;
    let mut pods = Vec::new();
    for (n, node, remote) in [(1, &n1, "172.23.0.2"), (2, &n2, "172.23.0.1")] {
        node.ip(&["link", "add", "cbr0", "type", "bridge"])?;
        node.ip(&["link", "set", "cbr0", "up"])?;
        node.ip(&[
            "link",
            "add",
            "vx0",
            "type",
            "vxlan",
            "id",
            "1",
            "dstport",
            "4789",
            "local",
            &format!("172.23.0.{n}"),
            "nolearning",
        ])?;
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
        let pod = Netns::create(&format!("{prefix}-kvx-pod{n}"))?;
        node.ip(&["link", "add", "veth0", "type", "veth", "peer", "name", "eth0", "netns", &pod.name])?;
        node.ip(&["link", "set", "veth0", "master", "cbr0", "up"])?;
        pod.ip(&["link", "set", "eth0", "mtu", "1450"])?;
        pod.ip(&["addr", "add", &format!("10.97.0.{n}/24"), "dev", "eth0"])?;
        pod.ip(&["link", "set", "eth0", "up"])?;
        pods.push(pod);
    }
    let server = pods.pop().expect("two pods");
    let client = pods.pop().expect("two pods");
    Ok(Scenario::new(
        "kernel-vxlan",
        client,
        server,
        "10.97.0.2".parse()?,
        vec![Box::new(n1), Box::new(n2), Box::new(u)],
    ))
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

/// Policies in the networkpolicy scenario's namespace besides the one that isolates the
/// server (each selects pods that do not exist).
const OTHER_POLICIES: usize = 99;

/// `oxsdn-same-node` in networkpolicy mode: the server isolated by a NetworkPolicy that
/// lets the client in, among `OTHER_POLICIES` more of its namespace, so every packet
/// takes the policy path (identities, the allowing rule, the connection kept for the
/// replies).
fn oxsdn_same_node_networkpolicy() -> Result<Scenario> {
    let mut cluster = TestCluster::new(&["--network-plugin", "networkpolicy"])?;
    cluster.add_node("node1")?;
    let node = cluster.node("node1");
    let Pod { netns: client, .. } = node.add_pod("bench", "client")?;
    let Pod { netns: server, ip: server_ip, .. } = node.add_pod("bench", "server")?;
    let policy = |name: &str, selected: &str, from: &str, ports: &str| {
        format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: bench}}\nspec:\n  podSelector: {{matchLabels: {{app: {selected}}}}}\n  ingress:\n  - from: [{{podSelector: {{matchLabels: {{app: {from}}}}}}}]\n{ports}"
        )
    };
    let mut manifest = String::new();
    for (name, app) in [("client", "client"), ("server", "server")] {
        manifest += &format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: bench, labels: {{app: {app}}}}}\nspec: {{containers: [{{name: iperf3, image: iperf3}}]}}\n"
        );
    }
    manifest += &policy("server", "server", "client", "");
    for i in 0..OTHER_POLICIES {
        manifest += &policy(&format!("other-{i}"), &format!("other-{i}"), "client", "    ports: [{port: 80}]\n");
    }
    let file = std::env::temp_dir().join(format!("oxt{}-bench-policies.yaml", std::process::id()));
    std::fs::write(&file, manifest)?;
    let applied = cluster.oxsdnctl(&["apply", "-f", &file.to_string_lossy()]);
    let _ = std::fs::remove_file(&file);
    applied?;
    // The node has compiled them once the server's identity is isolated.
    let maps = oxsdn_dataplane::maps::NodeMaps::open(&cluster.bpffs.join("node1"))?;
    let start = std::time::Instant::now();
    while maps.policy_slots.iter().count() <= OTHER_POLICIES {
        anyhow::ensure!(start.elapsed() < Duration::from_secs(10), "the policies never reached node1's maps");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Scenario::new("oxsdn-same-node-networkpolicy", client, server, server_ip, vec![Box::new(cluster)]))
}

/// Two pods of one project on two oxsdn nodes, across the VXLAN overlay, with the
/// agents started with `agent_args`.
fn oxsdn_cross_node(name: &'static str, agent_args: &[&str]) -> Result<Scenario> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.agent_args = agent_args.iter().map(|a| a.to_string()).collect();
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let Pod { netns: client, .. } = cluster.nodes[0].add_pod("bench", "client")?;
    let Pod { netns: server, ip: server_ip, .. } = cluster.nodes[1].add_pod("bench", "server")?;
    Ok(Scenario::new(name, client, server, server_ip, vec![Box::new(cluster)]))
}

/// A pod of node1 to a ClusterIP whose only endpoint is on node2 (iperf3's port).
fn oxsdn_service() -> Result<Scenario> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let Pod { netns: client, .. } = cluster.nodes[0].add_pod("bench", "client")?;
    let Pod { netns: server, ip: endpoint, .. } = cluster.nodes[1].add_pod("bench", "server")?;
    cluster.oxsdnctl(&[
        "create",
        "service",
        "iperf",
        "-n",
        "bench",
        "--tcp",
        "5201",
        "--udp",
        "5201",
        "--cluster-ip",
        "172.30.0.10",
    ])?;
    cluster.oxsdnctl(&["set", "endpoints", "iperf", "-n", "bench", &endpoint.to_string()])?;
    std::thread::sleep(Duration::from_secs(1));
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

/// A pod of node1 to the external host through its project's egress IP, which node2
/// holds: over VXLAN to node2, SNAT there (the path of every pod not on the holder).
fn oxsdn_egress_ip() -> Result<Scenario> {
    oxsdn_egress_ip_held_by("oxsdn-egress-ip", 1)
}

/// The same with node1 holding the egress IP: SNAT on the pod's own node (the path of
/// the holder's pods), against plain egress the cost of table 100 and the SNAT rule.
fn oxsdn_egress_ip_local() -> Result<Scenario> {
    oxsdn_egress_ip_held_by("oxsdn-egress-ip-local", 0)
}

/// Two nodes, a pod on node1 whose project's egress IP node `holder` (an index) holds.
fn oxsdn_egress_ip_held_by(name: &'static str, holder: usize) -> Result<Scenario> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let Pod { netns: client, .. } = cluster.nodes[0].add_pod("bench", "client")?;
    let egress_ip = format!("{}.100", oxsdn_tests::cluster::UNDERLAY_PREFIX);
    let holder_name = cluster.nodes[holder].name.clone();
    cluster.oxsdnctl(&["set", "hostsubnet-egress", &holder_name, "--ips", &egress_ip])?;
    cluster.oxsdnctl(&["set", "egress-ips", "bench", &egress_ip])?;
    let holder = Netns::borrowed(&cluster.nodes[holder].netns.name);
    let start = std::time::Instant::now();
    while !holder.ip(&["-4", "-o", "addr", "show", "dev", "eth0"])?.contains(&format!(" {egress_ip}/")) {
        anyhow::ensure!(start.elapsed() < Duration::from_secs(10), "{holder_name} never took the egress IP");
        std::thread::sleep(Duration::from_millis(100));
    }
    let server = Netns::borrowed(&cluster.external.name);
    Ok(Scenario::new(name, client, server, EXTERNAL_HOST.parse()?, vec![Box::new(cluster)]))
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
fn ovs_dir(prefix: &str, node: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("{prefix}-ovs-{node}"))
}

/// Two pods of one project on one Open vSwitch node with the userspace datapath and
/// OpenShift SDN's flows.
fn ovs_same_node(prefix: &str) -> Result<Scenario> {
    let node = Netns::create(&format!("{prefix}-ovs1"))?;
    let mut ovs = ovs::node(&node, &format!("{prefix}-ovs1p"), &ovs_dir(prefix, "same"), 1, 2, None)?;
    let server = ovs.pods.pop().expect("two pods");
    let client = ovs.pods.pop().expect("two pods");
    let forwarders = ovs.datapath_pid().into_iter().collect();
    // The switch stops before its node namespace goes.
    let scenario = Scenario::new(
        "ovs-userspace-same-node",
        client.netns,
        server.netns,
        server.ip,
        vec![Box::new(ovs), Box::new(node)],
    );
    Ok(Scenario { userspace_datapath: true, forwarders, ..scenario })
}

/// Pods on two Open vSwitch nodes (userspace datapath) joined by VXLAN with the VNID as
/// the key, as OpenShift SDN does.
fn ovs_cross_node(prefix: &str) -> Result<Scenario> {
    let (u, n1, n2) = underlay_nodes(prefix, "ovsx")?;
    let ip = |n: u8| Ipv4Addr::new(172, 23, 0, n);
    let mut one = ovs::node(
        &n1,
        &format!("{prefix}-ovsxp"),
        &ovs_dir(prefix, "n1"),
        1,
        1,
        Some((ip(1), ovs::Peer { ip: ip(2), index: 2 })),
    )?;
    let mut two = ovs::node(
        &n2,
        &format!("{prefix}-ovsxp"),
        &ovs_dir(prefix, "n2"),
        2,
        1,
        Some((ip(2), ovs::Peer { ip: ip(1), index: 1 })),
    )?;
    let client = one.pods.pop().context("a pod on node 1")?;
    let server = two.pods.pop().context("a pod on node 2")?;
    let forwarders = one.datapath_pid().into_iter().chain(two.datapath_pid()).collect();
    let scenario = Scenario::new(
        "ovs-userspace-cross-node",
        client.netns,
        server.netns,
        server.ip,
        vec![Box::new(one), Box::new(two), Box::new(n1), Box::new(n2), Box::new(u)],
    );
    Ok(Scenario { userspace_datapath: true, forwarders, ..scenario })
}

/// Every scenario's name, in the order they are measured.
pub const NAMES: [&str; 16] = [
    "raw-veth",
    "linux-bridge",
    "oxsdn-same-node",
    "oxsdn-same-node-networkpolicy",
    "ovs-userspace-same-node",
    "underlay",
    "kernel-vxlan",
    "oxsdn-cross-node",
    "oxsdn-cross-node-xdp-generic",
    "oxsdn-cross-node-xdp-decap",
    "ovs-userspace-cross-node",
    "oxsdn-service",
    "oxsdn-egress",
    "oxsdn-egress-ip",
    "oxsdn-egress-ip-local",
    "node-egress",
];

/// Sets up the scenario called `name`; `copy` names a second copy of it (for an A/A or
/// A/B comparison: its name gets `~<copy>`, its namespaces their own prefix), empty for
/// the first.
pub fn setup(name: &str, copy: &str) -> Result<Scenario> {
    let prefix = format!("oxt{}-bench{copy}", std::process::id());
    let prefix = prefix.as_str();
    let mut scenario = match name {
        "raw-veth" => raw_veth(prefix),
        "linux-bridge" => linux_bridge(prefix),
        "oxsdn-same-node" => oxsdn_same_node(),
        "oxsdn-same-node-networkpolicy" => oxsdn_same_node_networkpolicy(),
        "ovs-userspace-same-node" => ovs_same_node(prefix),
        "underlay" => underlay(prefix),
        "kernel-vxlan" => kernel_vxlan(prefix),
        "oxsdn-cross-node" => oxsdn_cross_node("oxsdn-cross-node", &[]),
        "oxsdn-cross-node-xdp-generic" => oxsdn_cross_node("oxsdn-cross-node-xdp-generic", &["--prefilter", "generic"]),
        "oxsdn-cross-node-xdp-decap" => {
            oxsdn_cross_node("oxsdn-cross-node-xdp-decap", &["--prefilter", "generic", "--xdp-decap", "all"])
        }
        "ovs-userspace-cross-node" => ovs_cross_node(prefix),
        "oxsdn-service" => oxsdn_service(),
        "oxsdn-egress" => oxsdn_egress(),
        "oxsdn-egress-ip" => oxsdn_egress_ip(),
        "oxsdn-egress-ip-local" => oxsdn_egress_ip_local(),
        "node-egress" => node_egress(),
        other => anyhow::bail!("no scenario {other}"),
    }?;
    if !copy.is_empty() {
        scenario.name = copy_name(name, copy);
    }
    Ok(scenario)
}

/// The name of scenario `name`'s copy `copy`.
pub fn copy_name(name: &str, copy: &str) -> String {
    format!("{name}{COPY_SEPARATOR}{copy}")
}

/// Separates a scenario's name from its copy's suffix.
pub const COPY_SEPARATOR: char = '~';
