//! Turning the pipeline's `Output` into what the kernel does with the skb. The entry
//! programs differ only in what their attach point allows (see each program).

use aya_ebpf::{
    bindings::{
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, bpf_tunnel_key, BPF_F_ADJ_ROOM_ENCAP_L2_ETH,
        BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L4_UDP, BPF_F_ADJ_ROOM_FIXED_GSO, BPF_F_DONT_FRAGMENT,
        BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, BPF_F_ZERO_CSUM_TX, TC_ACT_REDIRECT, TC_ACT_SHOT,
    },
    helpers::{bpf_check_mtu, bpf_get_hash_recalc, bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer, bpf_skb_set_tunnel_key},
    programs::TcContext,
};
use oxsdn_common::NodeConfig;

use crate::{
    packet::{Frame, Ipv4, ETH_HLEN, ETH_P_IP, IPPROTO_TCP, IPPROTO_UDP, IPV4_MIN_LEN, L3, VXLAN_I_FLAG},
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

/// VXLAN to another node, as OVS sends it by default: zero UDP checksum, don't-fragment
/// set. The program puts the outer headers on itself and hands the frame to the
/// underlay device's neighbour output, skipping vxlan0's transmit path (a route lookup,
/// netfilter's OUTPUT and POSTROUTING, the UDP tunnel socket); frames it cannot
/// encapsulate so (ARP, a frame too big for the underlay, an unknown underlay) take
/// vxlan0 with a tunnel key, which is the same wire format.
#[inline(always)]
pub fn to_tunnel<const T: bool>(ctx: &mut TcContext, cfg: &NodeConfig, frame: &Frame<T>, node_ip: u32, vni: u32, rewrite: &Rewrite) -> i32 {
    if !apply(ctx, frame, rewrite, true) {
        return TC_ACT_SHOT;
    }
    // A trace shows the decision (port vxlan0), not the outer headers.
    if !frame.tracing() {
        if let Some(verdict) = encapsulate(ctx, cfg, node_ip, vni) {
            return verdict;
        }
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

/// The headers of a natively encapsulated frame, written in one store over the
/// frame's Ethernet header and the room made after it: the outer Ethernet header
/// (MACs zero: the neighbour output fills them in, and refuses a multicast destination,
/// which the frame's own is when it is a broadcast to another node's pods), the outer
/// IPv4, UDP and VXLAN headers, and the frame's own Ethernet header. Multi-byte fields
/// in network byte order.
#[repr(C, packed)]
struct VxlanHeaders {
    outer_macs: [u8; 12],
    outer_ethertype: u16,
    version_ihl: u8,
    tos: u8,
    total_len: u16,
    id: u16,
    frag: u16,
    ttl: u8,
    proto: u8,
    csum: u16,
    src: u32,
    dst: u32,
    sport: u16,
    dport: u16,
    udp_len: u16,
    udp_csum: u16,
    vxlan_flags: u32,
    vxlan_vni: u32,
    inner_eth: [u8; ETH_HLEN],
}

/// What encapsulation adds to the frame.
const ENCAP_LEN: usize = core::mem::size_of::<VxlanHeaders>() - ETH_HLEN;
const IPV4_DF: u16 = 0x4000;
/// The kernel's default local port range, from which it picks VXLAN source ports by
/// flow hash (so the underlay can spread flows over paths).
const SPORT_MIN: u32 = 32768;
const SPORT_MAX: u32 = 61000;

/// Puts the VXLAN headers on the frame and sends it out of the underlay device: the
/// verdict, or None when the frame is left as it was for vxlan0 to carry.
#[inline(always)]
fn encapsulate(ctx: &mut TcContext, cfg: &NodeConfig, node_ip: u32, vni: u32) -> Option<i32> {
    if cfg.underlay_ifindex == 0 {
        return None;
    }
    // The outer packet must fit the underlay (for GSO frames, each segment) and its
    // 16-bit length fields.
    let mut mtu_len = 0u32;
    // SAFETY: plain helper call; mtu_len lives on the stack for it.
    let fits = unsafe { bpf_check_mtu(ctx.skb.skb as *mut _, cfg.underlay_ifindex, &mut mtu_len, ENCAP_LEN as i32, 0) } == 0;
    let outer_len = ctx.len() as usize + ENCAP_LEN - ETH_HLEN;
    if !fits || outer_len > u16::MAX as usize {
        return None;
    }
    let inner_eth: [u8; ETH_HLEN] = ctx.load(0).ok()?;
    let flags = (BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP | BPF_F_ADJ_ROOM_ENCAP_L2_ETH) as u64
        // The pod MTU already leaves room for the headers: segment sizes stay.
        | BPF_F_ADJ_ROOM_FIXED_GSO as u64
        | (ETH_HLEN as u64) << 56;
    // Only IPv4 frames can be grown so (ARP goes through vxlan0); a failure leaves the
    // frame as it was.
    ctx.adjust_room(ENCAP_LEN as i32, BPF_ADJ_ROOM_MAC, flags).ok()?;
    // SAFETY: plain helper call.
    let hash = unsafe { bpf_get_hash_recalc(ctx.skb.skb) };
    let sport = ((u64::from(hash) * u64::from(SPORT_MAX - SPORT_MIN)) >> 32) as u32 + SPORT_MIN;
    let mut headers = VxlanHeaders {
        outer_macs: [0; 12],
        outer_ethertype: ETH_P_IP.to_be(),
        version_ihl: 0x45,
        tos: 0,
        total_len: (outer_len as u16).to_be(),
        id: 0,
        frag: IPV4_DF.to_be(),
        ttl: TUNNEL_TTL,
        proto: IPPROTO_UDP,
        csum: 0,
        src: cfg.node_ip,
        dst: node_ip,
        sport: (sport as u16).to_be(),
        dport: cfg.vxlan_port.to_be(),
        udp_len: ((outer_len - IPV4_MIN_LEN) as u16).to_be(),
        udp_csum: 0,
        vxlan_flags: (u32::from(VXLAN_I_FLAG) << 24).to_be(),
        vxlan_vni: (vni << 8).to_be(),
        inner_eth,
    };
    headers.csum = ipv4_header_csum(&headers);
    // From here on the frame is changed: a failure drops it.
    if ctx.store(0, &headers, 0).is_err() {
        return Some(TC_ACT_SHOT);
    }
    // The kernel looks the outer destination up and fills in both MACs.
    // SAFETY: plain helper call; no parameters.
    Some(unsafe { bpf_redirect_neigh(cfg.underlay_ifindex, core::ptr::null_mut(), 0, 0) } as i32)
}

/// The outer IPv4 header's checksum: the one's complement sum of its 16-bit words as
/// they lie in memory (the sum is the same in either byte order), stored as it is.
#[inline(always)]
fn ipv4_header_csum(h: &VxlanHeaders) -> u16 {
    let words = [
        u16::from_ne_bytes([h.version_ihl, h.tos]),
        h.total_len,
        h.id,
        h.frag,
        u16::from_ne_bytes([h.ttl, h.proto]),
        h.src as u16,
        (h.src >> 16) as u16,
        h.dst as u16,
        (h.dst >> 16) as u16,
    ];
    let sum = words.iter().fold(0u32, |sum, w| sum + u32::from(*w));
    csum_fold(sum)
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
pub fn csum_fold(sum: u32) -> u16 {
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}
