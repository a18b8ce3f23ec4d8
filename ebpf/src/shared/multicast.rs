//! Tables 111 and 120 at the output: the copies of a multicast frame (head-end
//! replication with `bpf_clone_redirect`, as OVS's multi-output rules did). Functions of
//! their own, after the tables have returned, so their frames are never on the tables'
//! stack; each loop is bounded by the map's limit (`oxsdn_common::multicast`), which the
//! agent never exceeds. A copy the kernel refuses is counted (`NOT_SENT`); the frame
//! itself, copied, is consumed.

use aya_ebpf::{
    bindings::{bpf_tunnel_key, BPF_F_DONT_FRAGMENT, BPF_F_ZERO_CSUM_TX, TC_ACT_STOLEN},
    helpers::{bpf_clone_redirect, bpf_skb_set_tunnel_key},
    programs::TcContext,
};
use oxsdn_common::multicast::{McastPort, MAX_MCAST_LOCAL_PODS, MAX_MCAST_NODES};
use oxsdn_tables::{t254_output::NOT_SENT, Packet};

use crate::shared::{
    encap::TUNNEL_TTL,
    env::Maps,
    maps::{MCAST_GROUPS, MCAST_NODES, MCAST_PORTS},
    output::Decision,
};

/// Sends the copies the tables decided in `d` (`output_kind::MULTICAST`): to the local
/// pods of VNID `d.vni` but `in_port` (the sender's; 0 from the tunnel), then, if
/// `d.ifindex` is vxlan0's, to every other node with VNI `d.vni`. A trace records the
/// decision and sends nothing.
#[inline(never)]
pub fn replicate<const T: bool>(ctx: &TcContext, p: &Packet<Maps<T>>, d: &Decision, in_port: u32) -> i32 {
    if T {
        return TC_ACT_STOLEN;
    }
    to_local_pods(ctx, p, d.vni, in_port);
    // Last: the tunnel key stays on the frame, and local copies need none.
    if d.ifindex != 0 {
        to_nodes(ctx, p, d.vni, d.ifindex);
    }
    TC_ACT_STOLEN
}

#[inline(always)]
fn to_local_pods<const T: bool>(ctx: &TcContext, p: &Packet<Maps<T>>, vnid: u32, in_port: u32) {
    // SAFETY: read-only access to a map value.
    let Some(&pods) = (unsafe { MCAST_GROUPS.get(&vnid) }) else { return };
    for index in 0..MAX_MCAST_LOCAL_PODS {
        if index >= pods {
            break;
        }
        // SAFETY: read-only access to a map value.
        let Some(&ifindex) = (unsafe { MCAST_PORTS.get(&McastPort { vnid, index }) }) else { continue };
        // OpenFlow never outputs to the ingress port: the sender gets no copy.
        if ifindex == in_port {
            continue;
        }
        // Out of the pod's host veth, into the pod. SAFETY: plain helper call.
        if unsafe { bpf_clone_redirect(ctx.skb.skb, ifindex, 0) } != 0 {
            p.count(NOT_SENT);
        }
    }
}

#[inline(always)]
fn to_nodes<const T: bool>(ctx: &TcContext, p: &Packet<Maps<T>>, vni: u32, vxlan_ifindex: u32) {
    let Some(&nodes) = MCAST_NODES.get(0) else { return };
    // SAFETY: an all-zero bpf_tunnel_key is valid.
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    key.tunnel_id = vni;
    key.tunnel_ttl = TUNNEL_TTL;
    let flags = (BPF_F_ZERO_CSUM_TX | BPF_F_DONT_FRAGMENT) as u64;
    for i in 1..=MAX_MCAST_NODES {
        if i > nodes {
            break;
        }
        let Some(&node_ip) = MCAST_NODES.get(i) else { break };
        key.__bindgen_anon_1.remote_ipv4 = u32::from_be(node_ip);
        // SAFETY: the key lives on the stack for the call.
        let set = unsafe {
            bpf_skb_set_tunnel_key(ctx.skb.skb, &mut key, core::mem::size_of::<bpf_tunnel_key>() as u32, flags)
        };
        // vxlan0 (collect_md) encapsulates with the key as the clone passes through its
        // transmit, before the next key is set. SAFETY: plain helper call.
        if set != 0 || unsafe { bpf_clone_redirect(ctx.skb.skb, vxlan_ifindex, 0) } != 0 {
            p.count(NOT_SENT);
        }
    }
}
