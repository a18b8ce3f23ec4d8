//! Turning the pipeline's `Output` into what the kernel does with the skb. The entry
//! programs differ only in what their attach point allows (see each program).

use aya_ebpf::{
    bindings::{bpf_tunnel_key, BPF_F_DONT_FRAGMENT, BPF_F_ZERO_CSUM_TX, TC_ACT_REDIRECT, TC_ACT_SHOT},
    helpers::{bpf_redirect, bpf_redirect_peer, bpf_skb_set_tunnel_key},
    programs::TcContext,
};
use oxsdn_common::NodeConfig;

use crate::packet::Frame;

const BPF_F_INGRESS: u64 = 1;
const PACKET_HOST: u32 = 0;
const TUNNEL_TTL: u8 = 64;

/// Into the node's host stack, as if received on tun0.
#[inline(always)]
pub fn to_tun0(cfg: &NodeConfig) -> i32 {
    // SAFETY: plain helper call.
    unsafe { bpf_redirect(cfg.tun0_ifindex, BPF_F_INGRESS) as i32 }
}

/// Straight into a local pod's `eth0` (from TC ingress only). The frame skips the
/// receiving veth's Ethernet processing, which would mark frames addressed to the
/// pod's own MAC as PACKET_HOST; do it here (the veth it came in on, whose MAC it is
/// not, classified it PACKET_OTHERHOST).
#[inline(always)]
pub fn to_pod_peer(ctx: &TcContext, frame: &Frame, ifindex: u32, ip: u32) -> i32 {
    if frame.is_for_pod(ip) {
        let _ = ctx.change_type(PACKET_HOST);
    }
    // SAFETY: plain helper call.
    match unsafe { bpf_redirect_peer(ifindex, 0) } as i32 {
        TC_ACT_REDIRECT => TC_ACT_REDIRECT,
        _ => TC_ACT_SHOT,
    }
}

/// Out of a local pod's host veth, towards the pod (works from any TC hook).
#[inline(always)]
pub fn to_pod_veth(ifindex: u32) -> i32 {
    // SAFETY: plain helper call.
    unsafe { bpf_redirect(ifindex, 0) as i32 }
}

/// VXLAN to another node: the tunnel key for vxlan0 (a collect_md device, which adds
/// the outer headers), then out of vxlan0. As OVS does by default: zero UDP checksum,
/// don't-fragment set.
#[inline(always)]
pub fn to_tunnel(ctx: &TcContext, cfg: &NodeConfig, node_ip: u32, vni: u32) -> i32 {
    // SAFETY: an all-zero bpf_tunnel_key is valid.
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    key.tunnel_id = vni;
    key.__bindgen_anon_1.remote_ipv4 = u32::from_be(node_ip);
    key.tunnel_ttl = TUNNEL_TTL;
    let flags = (BPF_F_ZERO_CSUM_TX | BPF_F_DONT_FRAGMENT) as u64;
    // SAFETY: the key lives on the stack for the call.
    let set = unsafe {
        bpf_skb_set_tunnel_key(ctx.skb.skb, &mut key, core::mem::size_of::<bpf_tunnel_key>() as u32, flags)
    };
    if set != 0 {
        return TC_ACT_SHOT;
    }
    // SAFETY: plain helper call.
    unsafe { bpf_redirect(cfg.vxlan_ifindex, 0) as i32 }
}
