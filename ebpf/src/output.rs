//! Turning the pipeline's `Output` into what the kernel does with the skb. The entry
//! programs differ only in what their attach point allows (see each program).

use aya_ebpf::{
    bindings::{
        bpf_tunnel_key, BPF_F_DONT_FRAGMENT, BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, BPF_F_ZERO_CSUM_TX,
        TC_ACT_REDIRECT, TC_ACT_SHOT,
    },
    helpers::{bpf_redirect, bpf_redirect_peer, bpf_skb_set_tunnel_key},
    programs::TcContext,
};
use oxsdn_common::NodeConfig;

use crate::{
    packet::{Frame, Ipv4, IPPROTO_TCP, IPPROTO_UDP, L3},
    pipeline::Rewrite,
};

const BPF_F_INGRESS: u64 = 1;
const PACKET_HOST: u32 = 0;
const TUNNEL_TTL: u8 = 64;
const IP_DST_OFF: usize = 14 + 16;
const IP_CSUM_OFF: usize = 14 + 10;

/// Into the node's host stack, as if received on tun0 (a service's reply to a host
/// client is translated first; its frame is already addressed to tun0).
#[inline(always)]
pub fn to_tun0<const T: bool>(ctx: &mut TcContext, cfg: &NodeConfig, frame: &Frame<T>, rewrite: &Rewrite) -> i32 {
    if !apply(ctx, frame, rewrite, false) {
        return TC_ACT_SHOT;
    }
    // SAFETY: plain helper call.
    unsafe { bpf_redirect(cfg.tun0_ifindex, BPF_F_INGRESS) as i32 }
}

/// Straight into a local pod's `eth0` (from TC ingress only). The frame skips the
/// receiving veth's Ethernet processing, which would mark frames addressed to the
/// pod's own MAC as PACKET_HOST; do it here (the veth it came in on, whose MAC it is
/// not, classified it PACKET_OTHERHOST).
#[inline(always)]
pub fn to_pod_peer<const T: bool>(ctx: &mut TcContext, frame: &Frame<T>, ifindex: u32, ip: u32, rewrite: &Rewrite) -> i32 {
    if !apply(ctx, frame, rewrite, true) {
        return TC_ACT_SHOT;
    }
    if rewrite.active != 0 || frame.is_for_pod(ip) {
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
pub fn to_pod_veth<const T: bool>(ctx: &mut TcContext, frame: &Frame<T>, ifindex: u32, rewrite: &Rewrite) -> i32 {
    if !apply(ctx, frame, rewrite, true) {
        return TC_ACT_SHOT;
    }
    // SAFETY: plain helper call.
    unsafe { bpf_redirect(ifindex, 0) as i32 }
}

/// VXLAN to another node: the tunnel key for vxlan0 (a collect_md device, which adds
/// the outer headers), then out of vxlan0. As OVS does by default: zero UDP checksum,
/// don't-fragment set.
#[inline(always)]
pub fn to_tunnel<const T: bool>(ctx: &mut TcContext, cfg: &NodeConfig, frame: &Frame<T>, node_ip: u32, vni: u32, rewrite: &Rewrite) -> i32 {
    if !apply(ctx, frame, rewrite, true) {
        return TC_ACT_SHOT;
    }
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

/// Writes a service translation into the packet: addresses and ports with their
/// checksums (the L4 checksum covers the addresses through the pseudo-header; later
/// fragments have neither ports nor L4 checksum), and, when it goes to a pod, that
/// pod's MAC. Helper calls are most of what a translation costs, so there are few: the
/// L4 checksum takes the addresses' change and the ports' change as one difference each
/// (the kernel must apply them, as only it knows the skb's checksum state), and the IP
/// header's checksum, computed here, is stored with the addresses.
#[inline(always)]
fn apply<const T: bool>(ctx: &mut TcContext, frame: &Frame<T>, rewrite: &Rewrite, to_pod: bool) -> bool {
    let L3::Ipv4(ip) = frame.l3 else { return true };
    if rewrite.active == 0 {
        return true;
    }
    let l4 = ip.l4_offset as usize;
    // Size 0 in the flags: the helper is given a checksum difference.
    let l4_csum = match (ip.later_fragment, ip.proto) {
        (false, IPPROTO_TCP) => Some((l4 + 16, 0)),
        // A zero UDP checksum means none: it must stay zero.
        (false, IPPROTO_UDP) => Some((l4 + 6, BPF_F_MARK_MANGLED_0 as u64)),
        _ => None,
    };
    let o = rewrite.dst.to_ne_bytes();
    rewrite_addrs(ctx, &ip, rewrite, l4_csum)
        && (ip.later_fragment || rewrite_ports(ctx, &ip, rewrite, l4_csum))
        && (!to_pod || ctx.store(0, &[0x0a, 0x58, o[0], o[1], o[2], o[3]], 0).is_ok())
}

/// The IP header from its checksum to the destination address.
#[repr(C, packed)]
struct AddrsWithChecksum {
    csum: u16,
    src: u32,
    dst: u32,
}

#[inline(always)]
fn rewrite_addrs(ctx: &mut TcContext, ip: &Ipv4, rw: &Rewrite, l4_csum: Option<(usize, u64)>) -> bool {
    if ip.src == rw.src && ip.dst == rw.dst {
        return true;
    }
    let diff = csum_add(csum_change(ip.src, rw.src), csum_change(ip.dst, rw.dst));
    if let Some((csum_off, flags)) = l4_csum {
        if ctx.l4_csum_replace(csum_off, 0, diff as u64, flags | BPF_F_PSEUDO_HDR as u64).is_err() {
            return false;
        }
    }
    // Parsing an IPv4 packet made its header linear.
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + IP_DST_OFF + 4 > end {
        return false;
    }
    // SAFETY: bounds checked above.
    let old_csum = unsafe { core::ptr::read_unaligned((start + IP_CSUM_OFF) as *const u16) };
    // As the kernel's csum_replace_by_diff.
    let csum = csum_fold(csum_add(diff, !u32::from(old_csum)));
    ctx.store(IP_CSUM_OFF, &AddrsWithChecksum { csum, src: rw.src, dst: rw.dst }, 0).is_ok()
}

/// Source and destination port as on the wire.
#[repr(C)]
struct Ports {
    sport: u16,
    dport: u16,
}

#[inline(always)]
fn rewrite_ports(ctx: &mut TcContext, ip: &Ipv4, rw: &Rewrite, l4_csum: Option<(usize, u64)>) -> bool {
    if ip.sport == rw.sport && ip.dport == rw.dport {
        return true;
    }
    let new = Ports { sport: rw.sport.to_be(), dport: rw.dport.to_be() };
    let diff = csum_add(
        csum_change(u32::from(ip.sport.to_be()), u32::from(new.sport)),
        csum_change(u32::from(ip.dport.to_be()), u32::from(new.dport)),
    );
    if let Some((csum_off, flags)) = l4_csum {
        if ctx.l4_csum_replace(csum_off, 0, diff as u64, flags).is_err() {
            return false;
        }
    }
    ctx.store(ip.l4_offset as usize, &new, 0).is_ok()
}

/// One's complement addition (the kernel's csum_add).
#[inline(always)]
fn csum_add(a: u32, b: u32) -> u32 {
    let (sum, carry) = a.overflowing_add(b);
    sum + carry as u32
}

/// The checksum difference of replacing `old` by `new` (values as in memory).
#[inline(always)]
fn csum_change(old: u32, new: u32) -> u32 {
    csum_add(!old, new)
}

/// Folds a 32-bit sum into a 16-bit checksum (the kernel's csum_fold).
#[inline(always)]
fn csum_fold(sum: u32) -> u16 {
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}
