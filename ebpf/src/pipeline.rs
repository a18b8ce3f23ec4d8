//! The Profile A tables shared by every ingress, one function per table (table 0 lives
//! in the entry programs because it is per ingress). A function counts the rule that
//! matched and continues to the next table, so a packet's walk through the functions
//! is its walk through `dump-flows`.

use aya_ebpf::maps::lpm_trie::Key;
use oxsdn_common::{
    node_rule, pod_rule,
    rules::*,
    trace::{REG0_SET, REG1_SET},
    NodeConfig, RemoteNode, POD_IS_ENDPOINT,
};

use crate::{
    maps::{NODE_IPS, PODS, POD_PORTS, PROJECT_VNID, REMOTE_SUBNETS},
    packet::{Arp, Frame, Ipv4, IPPROTO_TCP, IPPROTO_UDP, L3},
    services::{table30_service_reply, table60_to_service},
    stats::{count, count_node, count_pod},
    trace,
};

/// Where a packet goes when the pipeline is done with it.
pub enum Output {
    Drop,
    /// OpenShift's port 2: into the node's host stack.
    Tun0,
    /// A local pod: ifindex of its host-side veth (`reg2`), and the pod's IP, whose MAC
    /// (`0a:58:` + IP) the frame must be addressed to for the pod to accept it.
    Pod { ifindex: u32, ip: u32 },
    /// OpenShift's port 1: VXLAN to another node (`tun_dst`), VNI `tun_id` (= reg0).
    Tunnel { node_ip: u32, vni: u32 },
}

/// New addresses for a service connection's packet (what kube-proxy's DNAT and its
/// reverse did in OpenShift); the destination MAC becomes the new destination pod's.
/// The tables fill it in place of returning it: a plain struct, every field always
/// initialised, keeps the verifier from meeting undefined enum payloads.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Rewrite {
    /// Non-zero when the packet is to be rewritten.
    pub active: u32,
    pub src: u32,
    pub dst: u32,
    /// Host byte order.
    pub sport: u16,
    pub dport: u16,
}

const MCAST_NET: u32 = u32::from_ne_bytes([224, 0, 0, 0]);
const MCAST_MASK: u32 = u32::from_ne_bytes([240, 0, 0, 0]);

#[inline(always)]
fn in_net(addr: u32, net: u32, mask: u32) -> bool {
    addr & mask == net
}

#[inline(always)]
pub fn is_multicast(addr: u32) -> bool {
    in_net(addr, MCAST_NET, MCAST_MASK)
}

#[inline(always)]
pub fn in_cluster(cfg: &NodeConfig, addr: u32) -> bool {
    in_net(addr, cfg.cluster_net, cfg.cluster_mask)
}

/// A project's VNID. A project without one is not known to this node yet: its packets
/// are dropped, never treated as global.
#[inline(always)]
pub fn vnid_of(project: u32) -> Option<u32> {
    // SAFETY: read-only access to a map value.
    unsafe { PROJECT_VNID.get(&project) }.copied()
}

/// Table 20: a pod may only send ARP and IPv4 as itself; loads its VNID into reg0.
#[inline(always)]
pub fn table20_antispoof<const T: bool>(cfg: &NodeConfig, frame: &Frame<T>, in_port: u32, nat: &mut Rewrite) -> Output {
    // SAFETY: read-only access to a map value.
    let port = match unsafe { POD_PORTS.get(&in_port) } {
        Some(p) => *p,
        None => return drop(T20_SPOOFED, frame),
    };
    let rule = match frame.l3 {
        L3::Arp(a) if a.spa == port.ip && a.sha_low == port.ip => pod_rule::T20_ARP,
        L3::Ipv4(ip) if ip.src == port.ip => pod_rule::T20_IP,
        _ => return drop(T20_SPOOFED, frame),
    };
    let reg0 = match vnid_of(port.project) {
        Some(v) => v,
        None => return drop(T20_SPOOFED, frame),
    };
    count_pod(cfg, port.ip, rule, frame);
    table21_post_source(cfg, frame, reg0, port.flags & POD_IS_ENDPOINT != 0, nat)
}

/// Table 10: VXLAN is accepted only from the underlay IP of a known node; the VNI it
/// carries (already in reg0) is trusted.
#[inline(always)]
pub fn table10_vxlan_source<const T: bool>(cfg: &NodeConfig, frame: &Frame<T>, tun_src: u32, reg0: u32, nat: &mut Rewrite) -> Output {
    // SAFETY: read-only access to a map value.
    match unsafe { NODE_IPS.get(&tun_src) } {
        Some(node) => {
            count_node(node.slot, node_rule::T10_FROM_NODE, frame);
            // Replies of service endpoints on other nodes arrive here.
            table30_route(cfg, frame, reg0, true, nat)
        }
        None => drop(T10_UNKNOWN_NODE, frame),
    }
}

/// Table 21: the hook after source identification (NetworkPolicy mode commits to
/// conntrack here); in multitenant mode it continues to routing.
#[inline(always)]
pub fn table21_post_source<const T: bool>(cfg: &NodeConfig, frame: &Frame<T>, reg0: u32, maybe_reply: bool, nat: &mut Rewrite) -> Output {
    count(T21_CONTINUE, frame);
    table30_route(cfg, frame, reg0, maybe_reply, nat)
}

/// Table 30: routing on the destination. `maybe_reply`: the sender may be a service
/// endpoint answering a client of this node (a local endpoint, or anything from the
/// tunnel), so the reply translation is looked up first.
#[inline(always)]
pub fn table30_route<const T: bool>(cfg: &NodeConfig, frame: &Frame<T>, reg0: u32, maybe_reply: bool, nat: &mut Rewrite) -> Output {
    trace::register(frame, REG0_SET, reg0);
    match frame.l3 {
        L3::Arp(arp) => table30_route_arp(cfg, frame, &arp, reg0),
        L3::Ipv4(ip) => {
            if maybe_reply {
                if let Some(out) = table30_service_reply(cfg, frame, &ip, nat) {
                    return out;
                }
            }
            table30_route_ip(cfg, frame, &ip, reg0, nat)
        }
        // Table 0 passes only ARP and IPv4 on.
        L3::Other => Output::Drop,
    }
}

#[inline(always)]
fn table30_route_arp<const T: bool>(cfg: &NodeConfig, frame: &Frame<T>, arp: &Arp, reg0: u32) -> Output {
    if arp.tpa == cfg.gateway {
        count(T30_ARP_GW, frame);
        Output::Tun0
    } else if in_net(arp.tpa, cfg.local_net, cfg.local_mask) {
        count(T30_ARP_LOCAL, frame);
        table40_arp_to_local_pod(cfg, frame, arp.tpa)
    } else if in_cluster(cfg, arp.tpa) {
        count(T30_ARP_CLUSTER, frame);
        table50_arp_to_remote_pod(frame, arp.tpa, reg0)
    } else {
        drop(T30_ARP_OTHER, frame)
    }
}

#[inline(always)]
fn table30_route_ip<const T: bool>(cfg: &NodeConfig, frame: &Frame<T>, ip: &Ipv4, reg0: u32, nat: &mut Rewrite) -> Output {
    if ip.dst == cfg.gateway {
        count(T30_IP_GW, frame);
        Output::Tun0
    } else if in_net(ip.dst, cfg.local_net, cfg.local_mask) {
        count(T30_IP_LOCAL, frame);
        table70_to_local_pod(cfg, frame, ip, reg0)
    } else if in_net(ip.dst, cfg.service_net, cfg.service_mask) {
        count(T30_IP_SERVICE, frame);
        table60_to_service(cfg, frame, ip, reg0, nat)
    } else if in_cluster(cfg, ip.dst) {
        count(T30_IP_CLUSTER, frame);
        table90_to_remote_pod(frame, ip.dst, reg0)
    } else if is_multicast(ip.dst) {
        count(T30_IP_MCAST, frame);
        table110_multicast(frame)
    } else {
        count(T30_IP_EXTERNAL, frame);
        table100_egress(cfg, frame, ip)
    }
}

/// Table 40: ARP to a local pod. ARP is never VNID-isolated.
#[inline(always)]
fn table40_arp_to_local_pod<const T: bool>(cfg: &NodeConfig, frame: &Frame<T>, tpa: u32) -> Output {
    // SAFETY: read-only access to a map value.
    match unsafe { PODS.get(&tpa) } {
        Some(pod) => {
            count_pod(cfg, tpa, pod_rule::T40_ARP, frame);
            Output::Pod { ifindex: pod.ifindex, ip: tpa }
        }
        None => drop(T40_NO_POD, frame),
    }
}

/// The node whose subnet holds `addr`.
#[inline(always)]
pub fn remote_node(addr: u32) -> Option<RemoteNode> {
    REMOTE_SUBNETS.get(&Key::new(32, addr)).copied()
}

/// Table 50: ARP for a pod on another node travels to that node (pods resolve remote
/// pods directly; ARP is not isolated).
#[inline(always)]
fn table50_arp_to_remote_pod<const T: bool>(frame: &Frame<T>, tpa: u32, reg0: u32) -> Output {
    match remote_node(tpa) {
        Some(node) => {
            count_node(node.slot, node_rule::T50_ARP, frame);
            Output::Tunnel { node_ip: node.node_ip, vni: reg0 }
        }
        None => drop(T50_NO_NODE, frame),
    }
}

/// Table 70: IPv4 to a local pod: reg1 = its VNID, reg2 = its port.
#[inline(always)]
fn table70_to_local_pod<const T: bool>(cfg: &NodeConfig, frame: &Frame<T>, ip: &Ipv4, reg0: u32) -> Output {
    // SAFETY: read-only access to a map value.
    let pod = match unsafe { PODS.get(&ip.dst) } {
        Some(p) => *p,
        None => return drop(T70_NO_POD, frame),
    };
    let reg1 = match vnid_of(pod.project) {
        Some(v) => v,
        None => return drop(T70_NO_POD, frame),
    };
    count_pod(cfg, ip.dst, pod_rule::T70_IP, frame);
    if table80_isolation(cfg, frame, ip, reg0, reg1) {
        Output::Pod { ifindex: pod.ifindex, ip: ip.dst }
    } else {
        Output::Drop
    }
}

/// Table 80: the multitenant isolation predicate: deliver (to `reg2`) iff the source
/// is the gateway, either side is global (VNID 0), or both VNIDs are equal.
#[inline(always)]
pub fn table80_isolation<const T: bool>(cfg: &NodeConfig, frame: &Frame<T>, ip: &Ipv4, reg0: u32, reg1: u32) -> bool {
    trace::register(frame, REG1_SET, reg1);
    let rule = if ip.src == cfg.gateway {
        T80_FROM_GW
    } else if reg0 == 0 {
        T80_SRC_GLOBAL
    } else if reg1 == 0 {
        T80_DST_GLOBAL
    } else if reg0 == reg1 {
        T80_SAME_VNID
    } else {
        count(T80_ISOLATED, frame);
        return false;
    };
    count(rule, frame);
    true
}

/// Table 90: IPv4 to a pod on another node, with the source VNID as VNI. No isolation
/// check here: the receiving node's table 80 decides.
#[inline(always)]
fn table90_to_remote_pod<const T: bool>(frame: &Frame<T>, dst: u32, reg0: u32) -> Output {
    match remote_node(dst) {
        Some(node) => {
            count_node(node.slot, node_rule::T90_IP, frame);
            Output::Tunnel { node_ip: node.node_ip, vni: reg0 }
        }
        None => drop(T90_NO_NODE, frame),
    }
}

const DNS_PORT: u16 = 53;

/// Table 100: traffic leaving the cluster network. Pods may not send VXLAN out (it
/// could be taken for overlay traffic); DNS to the node itself always passes.
#[inline(always)]
fn table100_egress<const T: bool>(cfg: &NodeConfig, frame: &Frame<T>, ip: &Ipv4) -> Output {
    if ip.proto == IPPROTO_UDP && ip.dport == cfg.vxlan_port {
        return drop(T100_VXLAN, frame);
    }
    if ip.dst == cfg.node_ip && ip.dport == DNS_PORT {
        if ip.proto == IPPROTO_TCP {
            count(T100_DNS_TCP, frame);
            return Output::Tun0;
        }
        if ip.proto == IPPROTO_UDP {
            count(T100_DNS_UDP, frame);
            return Output::Tun0;
        }
    }
    count(T100_EXTERNAL, frame);
    table101_egress_policy(frame)
}

/// Table 101: EgressNetworkPolicy (none yet): everything goes to the host, which
/// routes it out with the node's address.
#[inline(always)]
fn table101_egress_policy<const T: bool>(frame: &Frame<T>) -> Output {
    count(T101_ALLOW, frame);
    Output::Tun0
}

/// Table 110: multicast from pods (not enabled for any project).
#[inline(always)]
fn table110_multicast<const T: bool>(frame: &Frame<T>) -> Output {
    drop(T110_MCAST, frame)
}

/// Counts `rule`, a drop rule, and drops.
#[inline(always)]
pub fn drop<const T: bool>(rule: u32, frame: &Frame<T>) -> Output {
    count(rule, frame);
    Output::Drop
}
