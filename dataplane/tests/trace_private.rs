//! The tracer on a private pin directory whose maps the test fills itself (no agent,
//! no interfaces): how a test drives the real programs table by table. Needs root and
//! bpffs at /sys/fs/bpf.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use ipnetwork::Ipv4Network;
use oxsdn_common::StoreEndpoint;
use oxsdn_dataplane::{
    entries::{self, Networks, NodeAddresses, NodeSettings, ProjectRef},
    flows::RuleRef,
    loader::{remove_pins, Programs},
    maps::{ip_key, total, NodeMaps},
    tracer::{Ingress, Output, Packet, Proto, Tracer, TC_ACT_REDIRECT, TC_ACT_SHOT},
};
use oxsdn_tables::{
    t0_classify, t100_egress, t10_vxlan_source, t20_antispoof, t30_route, t80_isolation, t90_to_remote_pod,
};

/// Removes the pins on drop, also when the test fails.
struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = remove_pins(&self.0);
    }
}

const TUN0: u32 = 100;
const VXLAN0: u32 = 101;
const PORT_A: u32 = 11;
const PORT_B: u32 = 12;
const PROJECT_A: ProjectRef = ProjectRef { slot: 0, id: 1 };
const PROJECT_B: ProjectRef = ProjectRef { slot: 1, id: 2 };

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn net(s: &str) -> Ipv4Network {
    s.parse().unwrap()
}

/// Node 10.128.0.0/23 of cluster 10.128.0.0/14; pods A (.2) and B (.3) in projects
/// with VNIDs 10 and 20; a remote node 192.168.0.2 with 10.128.2.0/23.
fn fill(dir: &Path) -> NodeMaps {
    let mut maps = NodeMaps::open(dir).unwrap();
    let networks = Networks { cluster: net("10.128.0.0/14"), service: net("172.30.0.0/16"), vxlan_port: 4789 };
    let node = NodeAddresses {
        subnet: net("10.128.0.0/23"),
        gateway: ip("10.128.0.1"),
        node_ip: ip("192.168.0.1"),
        tun0_ifindex: TUN0,
        vxlan_ifindex: VXLAN0,
        // Test runs have no underlay device: frames to other nodes take vxlan0.
        underlay_ifindex: 0,
    };
    maps.config.set(0, entries::node_config(&networks, &node, &NodeSettings::default()), 0).unwrap();
    for (addr, port, project) in [("10.128.0.2", PORT_A, PROJECT_A), ("10.128.0.3", PORT_B, PROJECT_B)] {
        let (slot, entry) = entries::pod_entry(node.subnet, ip(addr), port, project);
        maps.pods.set(slot, entry, 0).unwrap();
    }
    maps.projects.set(PROJECT_A.slot, entries::project_entry(PROJECT_A.id, 10), 0).unwrap();
    maps.projects.set(PROJECT_B.slot, entries::project_entry(PROJECT_B.id, 20), 0).unwrap();
    let (subnet, node_ip, remote) = entries::remote_node_entries(net("10.128.2.0/23"), ip("192.168.0.2"), 3);
    maps.remote_subnets.insert(&subnet, remote, 0).unwrap();
    maps.node_ips.insert(node_ip, remote, 0).unwrap();
    maps
}

#[test]
fn traces_the_real_programs_on_maps_a_test_fills() {
    let dir = PinDir(PathBuf::from(format!("/sys/fs/bpf/oxsdn-trace-test-{}", std::process::id())));
    // Creates and pins the maps (the live programs are loaded, never attached).
    let _programs = Programs::load(&dir.0).unwrap();
    let mut maps = fill(&dir.0);
    let mut tracer = Tracer::load(&dir.0).unwrap();
    let (a, b) = (ip("10.128.0.2"), ip("10.128.0.3"));

    let isolated = tracer
        .trace(Ingress::Pod { in_port: PORT_A }, &Packet::new(Proto::Tcp, a, b).ports(40000, 80).frame())
        .unwrap();
    assert_eq!(isolated.output, Some(Output::Drop));
    assert_eq!(isolated.verdict, TC_ACT_SHOT);
    assert_eq!((isolated.reg0, isolated.reg1), (Some(10), Some(20)));
    assert_eq!(isolated.hops.last(), Some(&RuleRef::NodeWide { rule: t80_isolation::ISOLATED }));
    assert_eq!(
        isolated.hops[..2],
        [RuleRef::NodeWide { rule: t0_classify::POD_IP }, RuleRef::Pod { ip: ip_key(a), rule: t20_antispoof::IP }]
    );

    maps.projects.set(PROJECT_B.slot, entries::project_entry(PROJECT_B.id, 10), 0).unwrap();
    let joined = tracer
        .trace(Ingress::Pod { in_port: PORT_A }, &Packet::new(Proto::Udp, a, b).ports(40000, 53).frame())
        .unwrap();
    assert_eq!(joined.output, Some(Output::Pod { ifindex: PORT_B, ip: b }));
    assert_eq!(joined.verdict, TC_ACT_REDIRECT);
    assert_eq!(joined.hops.last(), Some(&RuleRef::NodeWide { rule: t80_isolation::SAME_VNID }));

    let remote =
        tracer.trace(Ingress::Pod { in_port: PORT_A }, &Packet::new(Proto::Icmp, a, ip("10.128.2.5")).frame()).unwrap();
    assert_eq!(remote.output, Some(Output::Tunnel { ifindex: VXLAN0, node_ip: ip("192.168.0.2"), vni: 10 }));
    assert!(remote.hops.contains(&RuleRef::RemoteNode { slot: 3, rule: t90_to_remote_pod::IP }));

    let spoofed =
        tracer.trace(Ingress::Pod { in_port: PORT_A }, &Packet::new(Proto::Udp, ip("10.128.0.9"), b).frame()).unwrap();
    assert_eq!(spoofed.output, Some(Output::Drop));
    assert_eq!(spoofed.hops.last(), Some(&RuleRef::NodeWide { rule: t20_antispoof::SPOOFED }));

    let tunneled = Ingress::Tunnel { src: ip("192.168.0.2"), vni: 10 };
    let from_tunnel =
        tracer.trace(tunneled, &Packet::new(Proto::Tcp, ip("10.128.2.5"), b).ports(1, 2).frame()).unwrap();
    assert_eq!(from_tunnel.output, Some(Output::Pod { ifindex: PORT_B, ip: b }));
    assert_eq!(from_tunnel.reg0, Some(10));

    let unknown_node = Ingress::Tunnel { src: ip("192.168.0.9"), vni: 10 };
    let refused = tracer.trace(unknown_node, &Packet::new(Proto::Tcp, ip("10.128.2.5"), b).frame()).unwrap();
    assert_eq!(refused.hops.last(), Some(&RuleRef::NodeWide { rule: t10_vxlan_source::UNKNOWN_NODE }));

    // No counter moved.
    for rule in oxsdn_tables::rules().filter(|r| r.scope == oxsdn_tables::rule::Scope::Node) {
        assert_eq!(total(&maps.rule_stats, rule.id).unwrap().packets, 0, "rule {} counted", rule.id);
    }
}

/// Pods' connections to the cluster store end in table 100 (an endpoint anywhere) or 30
/// (a store on this node, through its gateway); other ports of the same addresses pass.
#[test]
fn connections_to_the_store_are_dropped_by_tables_30_and_100() {
    let dir = PinDir(PathBuf::from(format!("/sys/fs/bpf/oxsdn-trace-store-test-{}", std::process::id())));
    let _programs = Programs::load(&dir.0).unwrap();
    let mut maps = fill(&dir.0);
    let (store, gateway) = (ip("192.0.2.5"), ip("10.128.0.1"));
    for addr in [store, gateway] {
        maps.store_endpoints.insert(StoreEndpoint { ip: ip_key(addr), port: 2379, _pad: 0 }, 1, 0).unwrap();
    }
    let mut tracer = Tracer::load(&dir.0).unwrap();
    let a = ip("10.128.0.2");
    let syn = |dst, port| Packet::new(Proto::Tcp, a, dst).ports(40000, port).frame();
    let to_store = tracer.trace(Ingress::Pod { in_port: PORT_A }, &syn(store, 2379)).unwrap();
    assert_eq!((to_store.output, to_store.verdict), (Some(Output::Drop), TC_ACT_SHOT));
    assert_eq!(to_store.hops.last(), Some(&RuleRef::NodeWide { rule: t100_egress::STORE }));
    let via_gateway = tracer.trace(Ingress::Pod { in_port: PORT_A }, &syn(gateway, 2379)).unwrap();
    assert_eq!(via_gateway.hops.last(), Some(&RuleRef::NodeWide { rule: t30_route::GW_STORE }));
    for (dst, port) in [(store, 2380), (gateway, 53), (ip("192.0.2.6"), 2379)] {
        let other = tracer.trace(Ingress::Pod { in_port: PORT_A }, &syn(dst, port)).unwrap();
        assert_eq!(other.output, Some(Output::Tun0 { ifindex: TUN0 }), "{dst}:{port}");
    }
}
