//! From desired state to map entries: pure functions that say what each map holds for
//! a node, a pod, a project, a remote node, a service or a tracked connection. The
//! agent's writers (the mirrors, the pod table), the differential test and the tests
//! that fill private maps all build their entries here, so there is one way from state to
//! map content.

use std::net::Ipv4Addr;

use aya::maps::lpm_trie::Key;
use ipnetwork::Ipv4Network;
use oxsdn_cni::runtime_config::Bandwidth;
use oxsdn_common::{
    addr::{ip_key, mask_key, pod_slot},
    bandwidth::{PodBandwidth, MAX_HORIZON_NS, NS_PER_SEC},
    EndpointKey, EndpointMember, FlowKey, FragmentKey, FragmentPorts, NodeConfig, PodEntry, ProjectEntry, RemoteNode,
    ServiceConnection, ServiceIp, ServiceKey, ServicePort, ServiceReply, StoreEndpoint, LAYOUT_VERSION,
};

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// The cluster's networks, as every node applies them.
#[derive(Clone, Copy, Debug)]
pub struct Networks {
    pub cluster: Ipv4Network,
    pub service: Ipv4Network,
    pub vxlan_port: u16,
}

/// A node's own addresses and devices.
#[derive(Clone, Copy, Debug)]
pub struct NodeAddresses {
    pub subnet: Ipv4Network,
    pub gateway: Ipv4Addr,
    pub node_ip: Ipv4Addr,
    pub tun0_ifindex: u32,
    pub vxlan_ifindex: u32,
    /// 0: no device holds `node_ip`, overlay traffic takes vxlan0 only.
    pub underlay_ifindex: u32,
}

/// What a node applies besides addresses: the network plugin and the tracking tables'
/// share per owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeSettings {
    /// `oxsdn_common::mode`.
    pub mode: u32,
    /// `NodeConfig.ct_quota`.
    pub ct_quota: u32,
    /// `NodeConfig.xdp_decap`.
    pub xdp_decap: u16,
}

impl Default for NodeSettings {
    fn default() -> Self {
        NodeSettings {
            mode: oxsdn_common::mode::MULTITENANT,
            ct_quota: oxsdn_common::conntrack::DEFAULT_QUOTA,
            xdp_decap: 0,
        }
    }
}

/// `CONFIG`'s entry.
pub fn node_config(net: &Networks, node: &NodeAddresses, settings: &NodeSettings) -> NodeConfig {
    NodeConfig {
        layout_version: LAYOUT_VERSION,
        gateway: ip_key(node.gateway),
        local_net: ip_key(node.subnet.network()),
        local_mask: mask_key(node.subnet.prefix()),
        cluster_net: ip_key(net.cluster.network()),
        cluster_mask: mask_key(net.cluster.prefix()),
        service_net: ip_key(net.service.network()),
        service_mask: mask_key(net.service.prefix()),
        node_ip: ip_key(node.node_ip),
        tun0_ifindex: node.tun0_ifindex,
        vxlan_ifindex: node.vxlan_ifindex,
        vxlan_port: net.vxlan_port,
        xdp_decap: settings.xdp_decap,
        underlay_ifindex: node.underlay_ifindex,
        mode: settings.mode,
        ct_quota: settings.ct_quota,
    }
}

/// `STORE_ENDPOINTS`' keys: the store's endpoints, and for an endpoint on this node
/// (`on_this_node`: loopback or an address of the node's) its ports on the node's
/// gateway and address too, through which pods would reach it just as well.
pub fn store_endpoints(
    endpoints: &[(Ipv4Addr, u16)],
    node: &NodeAddresses,
    on_this_node: impl Fn(Ipv4Addr) -> bool,
) -> Vec<StoreEndpoint> {
    let mut keys = Vec::new();
    for &(ip, port) in endpoints {
        let mut ips = vec![ip];
        if ip.is_loopback() || on_this_node(ip) {
            ips.extend([node.gateway, node.node_ip]);
        }
        for ip in ips {
            let key = StoreEndpoint { ip: ip_key(ip), port, _pad: 0 };
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
    keys
}

/// Where a project's VNID lives on this node: its slot in `PROJECTS` and its id, which
/// the entry there must carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProjectRef {
    pub slot: u32,
    pub id: u32,
}

/// `PROJECTS`' entry of a project.
pub fn project_entry(id: u32, vnid: u32) -> ProjectEntry {
    ProjectEntry { id, vnid }
}

/// The slot in `PODS` of a local pod and its entry.
pub fn pod_entry(subnet: Ipv4Network, ip: Ipv4Addr, ifindex: u32, project: ProjectRef) -> (u32, PodEntry) {
    (
        local_pod_slot(subnet, ip),
        PodEntry { ifindex, ip: ip_key(ip), project_slot: project.slot, project_id: project.id },
    )
}

/// A local pod's `BANDWIDTH` entry: its rates in bytes per second (the CNI `bandwidth`
/// capability gives bits per second) and their horizons, the time a burst lasts at its
/// rate (`oxsdn_common::bandwidth`). All zero: no limit.
pub fn pod_bandwidth(ip: Ipv4Addr, bandwidth: Option<&Bandwidth>) -> PodBandwidth {
    let Some(b) = bandwidth.filter(|b| b.egress_rate != 0 || b.ingress_rate != 0) else {
        return PodBandwidth::default();
    };
    let (egress_rate, egress_horizon) = pacing(b.egress_rate, b.egress_burst);
    let (ingress_rate, ingress_horizon) = pacing(b.ingress_rate, b.ingress_burst);
    PodBandwidth { ip: ip_key(ip), _pad: 0, egress_rate, egress_horizon, ingress_rate, ingress_horizon }
}

/// A rate in bit/s and burst in bits as bytes per second and a horizon within bounds:
/// at least two of the largest packets (a GSO aggregate), so that none is dropped for
/// its size alone, and at most `MAX_HORIZON_NS` unless that minimum is more.
fn pacing(rate_bps: u64, burst_bits: u64) -> (u64, u64) {
    const LARGEST_PACKET_BITS: u128 = 65_536 * 8;
    if rate_bps == 0 {
        return (0, 0);
    }
    let ns_for = |bits: u128| bits * u128::from(NS_PER_SEC) / u128::from(rate_bps);
    let horizon = ns_for(u128::from(burst_bits)).min(u128::from(MAX_HORIZON_NS)).max(ns_for(2 * LARGEST_PACKET_BITS));
    ((rate_bps / 8).max(1), u64::try_from(horizon).unwrap_or(u64::MAX))
}

/// The slot of a local pod's address in `PODS` (and in every per-pod array).
pub fn local_pod_slot(subnet: Ipv4Network, ip: Ipv4Addr) -> u32 {
    pod_slot(ip_key(ip), mask_key(subnet.prefix()))
}

/// The slot in `ENDPOINT_PODS` of a local service endpoint, and its entry (the address).
pub fn endpoint_pod_entry(subnet: Ipv4Network, ip: Ipv4Addr) -> Option<(u32, u32)> {
    subnet.contains(ip).then(|| (pod_slot(ip_key(ip), mask_key(subnet.prefix())), ip_key(ip)))
}

/// `REMOTE_SUBNETS`' key and `NODE_IPS`' key, and their value, for a remote node.
pub fn remote_node_entries(subnet: Ipv4Network, node_ip: Ipv4Addr, slot: u32) -> (Key<u32>, u32, RemoteNode) {
    (subnet_key(subnet), ip_key(node_ip), RemoteNode { node_ip: ip_key(node_ip), slot })
}

/// An LPM trie key for a subnet.
pub fn subnet_key(net: Ipv4Network) -> Key<u32> {
    Key::new(u32::from(net.prefix()), ip_key(net.network()))
}

/// A declared service port: `SERVICES`' key.
pub fn service_key(cluster_ip: Ipv4Addr, port: u16, proto: u8) -> ServiceKey {
    ServiceKey { ip: ip_key(cluster_ip), port, proto, _pad: 0 }
}

/// `SERVICES`' value of a port of service `service` (with `endpoints` endpoints), counted
/// in `slot`.
pub fn service_port(service: u32, project: ProjectRef, endpoints: u32, slot: u32, target_port: u16) -> ServicePort {
    ServicePort { service, project_slot: project.slot, project_id: project.id, endpoints, slot, target_port, _pad: 0 }
}

/// `SERVICE_IPS`' value of a ClusterIP, counted in `slot`.
pub fn service_ip(project: ProjectRef, slot: u32) -> ServiceIp {
    ServiceIp { project_slot: project.slot, project_id: project.id, slot }
}

/// `ENDPOINTS`' key of a service's `index`th endpoint.
pub fn endpoint_key(service: u32, index: u32) -> EndpointKey {
    EndpointKey { service, index }
}

/// `ENDPOINT_SET`'s and `DRAINING`'s key.
pub fn endpoint_member(service: u32, ip: Ipv4Addr) -> EndpointMember {
    EndpointMember { service, ip: ip_key(ip) }
}

/// A tracked service connection, as table 61 records it.
#[derive(Clone, Copy, Debug)]
pub struct Connection {
    pub protocol: u8,
    pub client: (Ipv4Addr, u16),
    pub service: (Ipv4Addr, u16),
    pub endpoint: (Ipv4Addr, u16),
    /// The service's id.
    pub service_id: u32,
    /// Whose share it takes (`oxsdn_common::conntrack`).
    pub owner: u32,
    /// When it was last used (CLOCK_MONOTONIC ns).
    pub last_seen: u64,
}

/// `CT_FORWARD`'s and `CT_REVERSE`'s entries of a connection; `gateway`: the node's,
/// which stands in for a client that is its own endpoint (hairpin).
pub fn connection_entries(
    c: &Connection,
    gateway: Ipv4Addr,
) -> ((FlowKey, ServiceConnection), (FlowKey, ServiceReply)) {
    let flow = |src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)| FlowKey {
        src: ip_key(src.0),
        dst: ip_key(dst.0),
        sport: src.1,
        dport: dst.1,
        proto: c.protocol,
        _pad: [0; 3],
    };
    let connection = ServiceConnection {
        last_seen: c.last_seen,
        service: c.service_id,
        endpoint_ip: ip_key(c.endpoint.0),
        endpoint_port: c.endpoint.1,
        hairpin: u16::from(c.client.0 == c.endpoint.0),
        owner: c.owner,
        flags: 0,
        _pad: 0,
    };
    let reply = ServiceReply {
        last_seen: c.last_seen,
        service_ip: ip_key(c.service.0),
        client_ip: ip_key(c.client.0),
        service_port: c.service.1,
        client_port: c.client.1,
        flags: 0,
    };
    let forward = flow(c.client, c.service);
    let reverse = oxsdn_tables::t61_load_balance::reply_key(&forward, &connection, ip_key(gateway));
    ((forward, connection), (reverse, reply))
}

/// `FRAGMENTS`' entry of a datagram whose first fragment carried `ports`.
pub fn fragment_entry(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    id: u16,
    protocol: u8,
    ports: (u16, u16),
) -> (FragmentKey, FragmentPorts) {
    (
        FragmentKey { src: ip_key(src), dst: ip_key(dst), id, proto: protocol, _pad: 0 },
        FragmentPorts { sport: ports.0, dport: ports.1 },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_sit_in_the_slot_of_their_host_part() {
        let subnet: Ipv4Network = "10.128.2.0/23".parse().unwrap();
        let (slot, entry) = pod_entry(subnet, Ipv4Addr::new(10, 128, 3, 4), 7, ProjectRef { slot: 3, id: 9 });
        assert_eq!(slot, 260);
        assert_eq!(
            entry,
            PodEntry { ifindex: 7, ip: ip_key(Ipv4Addr::new(10, 128, 3, 4)), project_slot: 3, project_id: 9 }
        );
        assert_eq!(endpoint_pod_entry(subnet, Ipv4Addr::new(10, 128, 4, 1)), None);
    }

    #[test]
    fn a_store_on_the_node_is_closed_on_its_gateway_and_address_too() {
        let node = NodeAddresses {
            subnet: "10.128.0.0/23".parse().unwrap(),
            gateway: Ipv4Addr::new(10, 128, 0, 1),
            node_ip: Ipv4Addr::new(192, 0, 2, 11),
            tun0_ifindex: 2,
            vxlan_ifindex: 3,
            underlay_ifindex: 4,
        };
        let remote = (Ipv4Addr::new(192, 0, 2, 5), 2379);
        let keys = store_endpoints(&[remote, (Ipv4Addr::LOCALHOST, 2379), remote], &node, |_| false);
        let key = |ip: Ipv4Addr| StoreEndpoint { ip: ip_key(ip), port: 2379, _pad: 0 };
        assert_eq!(keys, vec![key(remote.0), key(Ipv4Addr::LOCALHOST), key(node.gateway), key(node.node_ip)]);
        assert_eq!(store_endpoints(&[remote], &node, |ip| ip == remote.0).len(), 3);
    }

    #[test]
    fn a_hairpin_connection_is_answered_to_the_gateway() {
        let (pod, svc, gw) = (Ipv4Addr::new(10, 128, 0, 2), Ipv4Addr::new(172, 30, 0, 1), Ipv4Addr::new(10, 128, 0, 1));
        let c = Connection {
            protocol: IPPROTO_TCP,
            client: (pod, 4000),
            service: (svc, 80),
            endpoint: (pod, 8080),
            service_id: 5,
            owner: 1,
            last_seen: 7,
        };
        let ((fwd, conn), (rev, reply)) = connection_entries(&c, gw);
        assert_eq!((fwd.src, fwd.dst, fwd.sport, fwd.dport), (ip_key(pod), ip_key(svc), 4000, 80));
        assert_eq!(conn.hairpin, 1);
        assert_eq!((rev.src, rev.dst, rev.sport, rev.dport), (ip_key(pod), ip_key(gw), 8080, 4000));
        assert_eq!(reply.client_ip, ip_key(pod));
    }
}
