//! Types shared by the eBPF programs (`oxsdn-ebpf`) and userspace (`oxsdn-dataplane`,
//! `oxsdnctl`): map keys and values, rule ids and limits. Everything is `#[repr(C)]` and
//! plain data, so both sides agree on the layout byte for byte.
//!
//! IPv4 addresses are kept in a `u32` holding the four address bytes in wire order
//! (`u32::from_ne_bytes(addr.octets())`), so the eBPF side compares them straight from
//! the packet without byte swapping.
#![no_std]

pub mod rules;
pub mod trace;

/// Bumped whenever a map's layout, a rule id or a program's meaning changes. The agent
/// refuses to reuse pinned state that carries another version (the table 253 note of
/// OpenShift SDN) and rebuilds it deliberately instead. A new map or a rule appended
/// with a new id changes nothing older pins hold: the agent creates the map beside them.
pub const LAYOUT_VERSION: u32 = 5;

/// Largest number of addresses in a node subnet the per-pod counters can index
/// (hostSubnetLength <= 12).
pub const MAX_HOST_SUBNET_BITS: u32 = 12;
pub const MAX_POD_SLOTS: u32 = 1 << MAX_HOST_SUBNET_BITS;
/// Upper bounds of the hash maps.
pub const MAX_LOCAL_PODS: u32 = MAX_POD_SLOTS;
pub const MAX_PROJECTS: u32 = 65536;
/// Remote nodes a node can know (the size of the per-node counter slots).
pub const MAX_NODES: u32 = 4096;
/// Service ports plus service IPs a node can hold (their counter slots).
pub const MAX_SERVICE_SLOTS: u32 = 32768;
/// Endpoints of all services together.
pub const MAX_BACKENDS: u32 = 65536;
/// Service connections tracked at once (LRU: the oldest go first).
pub const MAX_CONNECTIONS: u32 = 65536;
/// IPv4 datagrams in fragments tracked at once (LRU).
pub const MAX_FRAGMENTED: u32 = 8192;

/// Node-wide settings, the single entry of the `CONFIG` array map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeConfig {
    /// `LAYOUT_VERSION` of the agent that wrote it.
    pub layout_version: u32,
    /// Gateway address (first address of the node subnet), held by tun0.
    pub gateway: u32,
    /// This node's subnet `L`.
    pub local_net: u32,
    pub local_mask: u32,
    /// The cluster network `C`.
    pub cluster_net: u32,
    pub cluster_mask: u32,
    /// The service network `S`.
    pub service_net: u32,
    pub service_mask: u32,
    /// The node's underlay address.
    pub node_ip: u32,
    /// ifindex of tun0 (OpenShift's port 2).
    pub tun0_ifindex: u32,
    /// ifindex of vxlan0, the collect_md VXLAN device (OpenShift's port 1).
    pub vxlan_ifindex: u32,
    /// VXLAN UDP port, host byte order.
    pub vxlan_port: u16,
    pub _pad: u16,
    /// ifindex of the underlay device holding `node_ip`, on which the programs put VXLAN
    /// headers on and take them off themselves (0: unknown, everything goes through
    /// vxlan0).
    pub underlay_ifindex: u32,
}

/// Value of `PODS` (key: pod IPv4): what tables 40 and 70 need to deliver to a local pod.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalPod {
    /// ifindex of the pod's host-side veth (OpenShift's pod port `P`).
    pub ifindex: u32,
    /// The pod's project; its VNID is looked up in `PROJECT_VNID` on every packet, so a
    /// join/isolate/global is one map update for all pods of the project.
    pub project: u32,
}

/// `PodPort.flags`: the pod is an endpoint of some service, so its packets may be
/// replies that need the service's address put back.
pub const POD_IS_ENDPOINT: u32 = 1;

/// Value of `POD_PORTS` (key: ifindex of the host-side veth): what table 20 checks.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodPort {
    pub ip: u32,
    pub project: u32,
    /// `POD_IS_ENDPOINT` or 0.
    pub flags: u32,
}

/// A remote node: value of `REMOTE_SUBNETS` (key: the node's subnet) and of
/// `NODE_IPS` (key: the node's IP), what tables 10, 50 and 90 need.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemoteNode {
    /// The node's underlay IP, the VXLAN destination.
    pub node_ip: u32,
    /// Index of the node's counters in `NODE_STATS` (< `MAX_NODES`).
    pub slot: u32,
}

/// Key of `SERVICES`: a declared service port (table 60's per-port rules).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    pub ip: u32,
    /// Host byte order.
    pub port: u16,
    /// IPPROTO_TCP or IPPROTO_UDP.
    pub proto: u8,
    pub _pad: u8,
}

/// Value of `SERVICES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServicePort {
    /// The service's stable id: its backends are `BACKENDS[(service, 0..backends)]`.
    pub service: u32,
    /// The service's project: isolation is keyed on it (its VNID is `reg1`).
    pub project: u32,
    pub backends: u32,
    /// Index of this port's counter in `SERVICE_STATS`.
    pub slot: u32,
    /// Host byte order.
    pub target_port: u16,
    pub _pad: u16,
}

/// Value of `SERVICE_IPS` (key: a ClusterIP): for fragments after the first, which are
/// matched on the address alone.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceIp {
    pub project: u32,
    pub slot: u32,
}

/// Key of `BACKENDS` (value: the endpoint's IPv4).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BackendKey {
    pub service: u32,
    pub index: u32,
}

/// Key of `BACKEND_SET` (value: 1): whether an endpoint still serves a service, checked
/// before a tracked connection is sent on to it; and of `DRAINING` (value: the end of
/// the drain window of an endpoint that left, `bpf_ktime_get_ns` time).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BackendMember {
    pub service: u32,
    pub ip: u32,
}

/// A connection's addresses as one direction of it carries them (`CT_FORWARD` key: the
/// client's packets to the service; `CT_REVERSE` key: the endpoint's packets back).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: u32,
    pub dst: u32,
    /// Host byte order.
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// Value of `CT_FORWARD`: where a client's connection to a service was sent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceConnection {
    pub service: u32,
    pub backend_ip: u32,
    /// Host byte order.
    pub backend_port: u16,
    /// The client is its own endpoint (hairpin): its source becomes the gateway.
    pub hairpin: u16,
}

/// Value of `CT_REVERSE`: the addresses an endpoint's reply must carry to the client.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceReply {
    pub service_ip: u32,
    pub client_ip: u32,
    /// Host byte order.
    pub service_port: u16,
    pub client_port: u16,
}

/// Key of `FRAGMENTS`: one fragmented IPv4 datagram.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragmentKey {
    pub src: u32,
    pub dst: u32,
    pub id: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// Value of `FRAGMENTS`: the L4 ports the first fragment carried (host byte order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragmentPorts {
    pub sport: u16,
    pub dport: u16,
}

/// A rule's counter (one per CPU in the per-CPU arrays; userspace sums them).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// Per-pod rules, counted in `POD_STATS` at index `slot * POD_RULES + rule`, where
/// `slot` is the host part of the pod's IP in the node subnet.
pub mod pod_rule {
    /// Table 20: ARP from the pod with its own sender IP and MAC.
    pub const T20_ARP: u32 = 0;
    /// Table 20: IPv4 from the pod with its own source IP.
    pub const T20_IP: u32 = 1;
    /// Table 40: ARP whose target is the pod.
    pub const T40_ARP: u32 = 2;
    /// Table 70: IPv4 to the pod.
    pub const T70_IP: u32 = 3;
}
pub const POD_RULES: u32 = 4;

/// Per-remote-node rules, counted in `NODE_STATS` at `slot * NODE_RULES + rule`.
pub mod node_rule {
    /// Table 10: VXLAN from the node's IP.
    pub const T10_FROM_NODE: u32 = 0;
    /// Table 50: ARP for an address in the node's subnet, sent to it.
    pub const T50_ARP: u32 = 1;
    /// Table 90: IPv4 to the node's subnet, sent to it.
    pub const T90_IP: u32 = 2;
}
pub const NODE_RULES: u32 = 3;

#[inline(always)]
pub fn node_stat_index(slot: u32, rule: u32) -> u32 {
    (slot & (MAX_NODES - 1)) * NODE_RULES + rule
}

/// Index of a pod's counter in `POD_STATS`.
#[inline(always)]
pub fn pod_stat_index(ip: u32, local_mask: u32, rule: u32) -> u32 {
    let slot = u32::from_be(ip & !local_mask) & (MAX_POD_SLOTS - 1);
    slot * POD_RULES + rule
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` data without padding holes that matter to the kernel.
    unsafe impl aya::Pod for super::NodeConfig {}
    unsafe impl aya::Pod for super::LocalPod {}
    unsafe impl aya::Pod for super::PodPort {}
    unsafe impl aya::Pod for super::Counter {}
    unsafe impl aya::Pod for super::RemoteNode {}
    unsafe impl aya::Pod for super::ServiceKey {}
    unsafe impl aya::Pod for super::ServicePort {}
    unsafe impl aya::Pod for super::ServiceIp {}
    unsafe impl aya::Pod for super::BackendKey {}
    unsafe impl aya::Pod for super::BackendMember {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::ServiceConnection {}
    unsafe impl aya::Pod for super::ServiceReply {}
    unsafe impl aya::Pod for super::FragmentKey {}
    unsafe impl aya::Pod for super::FragmentPorts {}
    unsafe impl aya::Pod for super::trace::TraceRecord {}
}
