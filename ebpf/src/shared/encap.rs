//! VXLAN as OVS sends it (RFC 7348: zero UDP checksum, don't-fragment set, source port
//! from the flow hash), put on by the programs themselves (`encapsulate`), and the
//! reading of a received frame's outer headers (`outer_headers`) that both the underlay
//! device's XDP prefilter and `from_underlay` make before dropping or taking them off.

use aya_ebpf::{
    bindings::{
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L2_ETH, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4,
        BPF_F_ADJ_ROOM_ENCAP_L4_UDP, BPF_F_ADJ_ROOM_FIXED_GSO, TC_ACT_SHOT,
    },
    helpers::{bpf_check_mtu, bpf_get_hash_recalc, bpf_redirect_neigh},
    programs::TcContext,
};
use oxsdn_common::NodeConfig;
use oxsdn_tables::{
    frame::{ETH_HLEN, ETH_P_IP, IPPROTO_UDP},
    t0_classify::Underlay,
};

use crate::shared::{
    csum::csum_fold,
    parse::{IPV4_MIN_LEN, UDP_LEN},
};

/// The VXLAN header (RFC 7348): a flags byte, reserved bytes, the VNI.
pub const VXLAN_LEN: usize = 8;
/// The I flag in the VXLAN flags byte: a valid VNI follows.
pub const VXLAN_I_FLAG: u8 = 0x08;
/// Outer IPv4, UDP and VXLAN headers and the inner Ethernet header: what decapsulation
/// takes off.
pub const OUTER_LEN: usize = IPV4_MIN_LEN + UDP_LEN + VXLAN_LEN + ETH_HLEN;
pub const TUNNEL_TTL: u8 = 64;
/// The VXLAN header's first word with only the I flag set: vxlan0 (no extensions
/// configured) refuses any other flag and reserved bit.
const VXLAN_FLAGS_WORD: u32 = (VXLAN_I_FLAG as u32) << 24;
/// The frame up to the end of the outer UDP header: what says whether it is VXLAN to
/// this node.
const UDP_END: usize = ETH_HLEN + IPV4_MIN_LEN + UDP_LEN;
/// The frame up to the inner IPv4 header: what decapsulation reads.
pub const OUTER_END: usize = ETH_HLEN + OUTER_LEN;

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

/// `encapsulate`'s answer when it left the frame as it was, for vxlan0 to carry.
pub const NOT_ENCAPSULATED: i32 = -1;

/// Puts the VXLAN headers on the frame and sends it out of the underlay device: the
/// verdict, or `NOT_ENCAPSULATED`. A function of its own in the programs (a BPF-to-BPF
/// call), so its headers are not on the stack of the program that calls it while it
/// calls the others (BPF's 512 bytes are for the whole chain of calls); it takes and
/// returns plain values for the same reason as `t80_isolation::networkpolicy`.
#[inline(never)]
pub fn encapsulate(ctx: &mut TcContext, cfg: &NodeConfig, node_ip: u32, vni: u32) -> i32 {
    encapsulated(ctx, cfg, node_ip, vni).unwrap_or(NOT_ENCAPSULATED)
}

#[inline(always)]
fn encapsulated(ctx: &mut TcContext, cfg: &NodeConfig, node_ip: u32, vni: u32) -> Option<i32> {
    if cfg.underlay_ifindex == 0 {
        return None;
    }
    // The outer packet must fit the underlay (for GSO frames, each segment) and its
    // 16-bit length fields.
    let mut mtu_len = 0u32;
    // SAFETY: plain helper call; mtu_len lives on the stack for it.
    let fits =
        unsafe { bpf_check_mtu(ctx.skb.skb as *mut _, cfg.underlay_ifindex, &mut mtu_len, ENCAP_LEN as i32, 0) } == 0;
    let outer_len = ctx.len() as usize + ENCAP_LEN - ETH_HLEN;
    if !fits || outer_len > u16::MAX as usize {
        return None;
    }
    let inner_eth: [u8; ETH_HLEN] = ctx.load(0).ok()?;
    // The flow hash of the inner frame, taken while the frame is still only that: after
    // adjust_room the kernel would dissect the outer headers, not yet written, and every
    // frame without a socket hash (ICMP, forwarded traffic) would get one source port.
    // SAFETY: plain helper call.
    let hash = unsafe { bpf_get_hash_recalc(ctx.skb.skb) };
    let flags = (BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP | BPF_F_ADJ_ROOM_ENCAP_L2_ETH) as u64
        // The pod MTU already leaves room for the headers: segment sizes stay.
        | BPF_F_ADJ_ROOM_FIXED_GSO as u64
        | (ETH_HLEN as u64) << 56;
    // Only IPv4 frames can be grown so (ARP goes through vxlan0); a failure leaves the
    // frame as it was.
    ctx.adjust_room(ENCAP_LEN as i32, BPF_ADJ_ROOM_MAC, flags).ok()?;
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

/// Whether the 20-byte IPv4 header at `ip` has a valid checksum: its 16-bit words,
/// checksum included, fold to zero.
///
/// # Safety
/// `ip + 20` must lie within the packet, checked by the caller.
#[inline(always)]
unsafe fn ipv4_header_valid(ip: usize) -> bool {
    let mut sum = 0u32;
    for i in 0..IPV4_MIN_LEN / 2 {
        sum += u32::from(core::ptr::read_unaligned((ip + 2 * i) as *const u16));
    }
    csum_fold(sum) == 0
}

/// A frame on the underlay device as its outer headers say.
#[derive(Clone, Copy)]
pub struct Outer {
    /// What the prefilter judges (table 0 at the XDP hook).
    pub kind: Underlay,
    /// VXLAN that `from_underlay` can take off itself: IP and UDP lengths exactly the
    /// frame's (nothing for the host to trim), no UDP checksum to verify, IPv4 inside.
    pub plain: bool,
    pub vni: u32,
}

/// Reads the outer headers of the frame at `p`, `len` bytes long, against this node's
/// address and VXLAN port. A frame is VXLAN to this node when it is IPv4 without options
/// and unfragmented (the host's IP layer decides those), UDP, to the node's address and
/// VXLAN port. Such a frame is `Malformed` when the host's `ip_rcv` (header checksum,
/// a total length beyond the frame or short of the headers), `udp_rcv` (a UDP length
/// beyond the IP payload) or vxlan0 (a payload short of the VXLAN and inner Ethernet
/// headers, flags other than I, reserved bits) would drop it.
///
/// # Safety
/// `[p, end)` must be the frame's readable bytes (the context's `data`, `data_end`),
/// and `len` its whole length (more than `end - p` for an skb's paged data).
#[inline(always)]
pub unsafe fn outer_headers(p: usize, end: usize, len: usize, cfg: &NodeConfig) -> Outer {
    let mut outer = Outer { kind: Underlay::NotIpv4, plain: false, vni: 0 };
    let ip = p + ETH_HLEN;
    let udp = ip + IPV4_MIN_LEN;
    let vxlan = udp + UDP_LEN;
    let inner_eth = vxlan + VXLAN_LEN;
    if udp > end {
        return outer;
    }
    let be16 = |at: usize| u16::from_be(core::ptr::read_unaligned(at as *const u16));
    let be32 = |at: usize| u32::from_be(core::ptr::read_unaligned(at as *const u32));
    if be16(p + 12) != ETH_P_IP {
        return outer;
    }
    let src = core::ptr::read_unaligned((ip + 12) as *const u32);
    outer.kind = Underlay::Ipv4 { src };
    let to_our_port = p + UDP_END <= end
        && *(ip as *const u8) == 0x45
        // Neither more fragments nor a fragment offset.
        && be16(ip + 6) & 0x3fff == 0
        && *((ip + 9) as *const u8) == IPPROTO_UDP
        && core::ptr::read_unaligned((ip + 16) as *const u32) == cfg.node_ip
        && be16(udp + 2) == cfg.vxlan_port;
    if !to_our_port {
        return outer;
    }
    // A frame longer than its IP length is trimmed by the host (Ethernet padding), one
    // shorter dropped; so is a UDP length beyond the IP payload.
    let ip_len = usize::from(be16(ip + 2));
    let udp_len = usize::from(be16(udp + 4));
    let valid = ipv4_header_valid(ip)
        && ip_len <= len - ETH_HLEN
        && ip_len >= IPV4_MIN_LEN + UDP_LEN
        && udp_len <= ip_len - IPV4_MIN_LEN
        && udp_len >= UDP_LEN + VXLAN_LEN + ETH_HLEN;
    if !valid {
        outer.kind = Underlay::Malformed { src };
        return outer;
    }
    // Present whenever the lengths are valid (the caller pulled an skb's headers in).
    if p + OUTER_END > end {
        return outer;
    }
    if be32(vxlan) != VXLAN_FLAGS_WORD || *((vxlan + 7) as *const u8) != 0 {
        outer.kind = Underlay::Malformed { src };
        return outer;
    }
    outer.kind = Underlay::Vxlan { src };
    outer.vni = be32(vxlan + 4) >> 8;
    outer.plain = ip_len == len - ETH_HLEN
        && udp_len == ip_len - IPV4_MIN_LEN
        && be16(udp + 6) == 0
        && be16(inner_eth + 12) == ETH_P_IP;
    outer
}
