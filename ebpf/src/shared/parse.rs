//! Frame parsing: the fields the tables match on (`oxsdn_tables::frame`), read with
//! direct packet access.

use aya_ebpf::programs::TcContext;
use oxsdn_tables::frame::{
    Arp, Frame, Ipv4, Tuple, ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, ETH_P_IP, ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST, IPPROTO_ICMP, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, L3,
};

const ARP_LEN: usize = 28;
pub const IPV4_MIN_LEN: usize = 20;
const TCP_MIN_LEN: usize = 20;
pub const UDP_LEN: usize = 8;
const SCTP_COMMON_LEN: usize = 12;
const ICMP_LEN: usize = 8;
/// Bytes the parser may read: an Ethernet header, the longest IPv4 header and the L4
/// header up to TCP's flags.
const PARSE_LEN: usize = ETH_HLEN + 60 + TCP_FLAGS_END;
/// TCP's flags are the 14th byte of its header.
const TCP_FLAGS_END: usize = 14;
/// UDP's ports are its first 4 bytes.
const PORTS_END: usize = 4;

#[inline(always)]
fn read_u32(p: usize) -> u32 {
    // SAFETY: callers bounds-check `p + 4 <= data_end`.
    unsafe { core::ptr::read_unaligned(p as *const u32) }
}

#[inline(always)]
fn read_u16_be(p: usize) -> u16 {
    // SAFETY: callers bounds-check `p + 2 <= data_end`.
    u16::from_be(unsafe { core::ptr::read_unaligned(p as *const u16) })
}

/// Parses the frame of `ctx` into `frame`, as the tables see it. The frame lives in a
/// per-CPU scratch map (`scratch`), not on the stack: BPF's stack is 512 bytes for a
/// program and the functions it calls together. Out of line for the same reason: the
/// parser's spills then leave the stack before the tables run.
#[inline(never)]
pub fn parse(ctx: &TcContext, frame: &mut Frame) {
    let len = ctx.len();
    // Headers of skbs from veths are linear; pull only if a sender made them not so.
    let want = PARSE_LEN.min(len as usize);
    if ctx.data() + want > ctx.data_end() {
        let _ = ctx.pull_data(want as u32);
    }
    // SAFETY: reading the skb's VLAN metadata.
    let tag_in_metadata = unsafe { (*ctx.skb.skb).vlan_present } != 0;
    parse_linear(ctx.data(), ctx.data_end(), len, tag_in_metadata, frame);
    if frame.l3 == L3::Ipv4 && frame.ipv4.is_icmp_error() {
        frame.ipv4.embedded = embedded(ctx, frame.ipv4.l4_offset as u32 + ICMP_LEN as u32);
    }
}

/// Parses the frame in `[start, end)`, `len` bytes long (more when the rest is not
/// linear), into `frame`, but for an ICMP error's quoted packet (`Tuple::default()`):
/// the TC programs read that with the skb helper (`parse`), the XDP program leaves such
/// errors to them.
#[inline(always)]
pub fn parse_linear(start: usize, end: usize, len: u32, tag_in_metadata: bool, frame: &mut Frame) {
    frame.len = len;
    frame.vlan = tag_in_metadata;
    frame.dst_mac_hi = 0;
    frame.dst_mac_lo = 0;
    frame.l3 = L3::Other;
    frame.arp = Arp::default();
    frame.ipv4 = Ipv4::default();
    if start + ETH_HLEN > end {
        return;
    }
    // SAFETY: bounds checked above.
    frame.dst_mac_hi = unsafe { core::ptr::read_unaligned(start as *const u16) };
    frame.dst_mac_lo = read_u32(start + 2);
    let ethertype = read_u16_be(start + 12);
    match ethertype {
        ETH_P_ARP => {
            frame.l3 = L3::Arp;
            frame.arp = parse_arp(start + ETH_HLEN, end);
        }
        ETH_P_IP => {
            if let Some(ip) = parse_ipv4(start + ETH_HLEN, end, len as usize) {
                frame.l3 = L3::Ipv4;
                frame.ipv4 = ip;
            }
        }
        _ => {}
    }
    frame.vlan = tag_in_metadata || ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD;
}

#[inline(always)]
fn parse_arp(p: usize, end: usize) -> Arp {
    let none = Arp { spa: 0, tpa: 0, sha_low: 0 };
    if p + ARP_LEN > end {
        return none;
    }
    // htype 1 (Ethernet), ptype 0x0800, hlen 6, plen 4.
    // SAFETY: bounds checked above.
    let (htype, ptype, hlen, plen) =
        unsafe { (read_u16_be(p), read_u16_be(p + 2), *((p + 4) as *const u8), *((p + 5) as *const u8)) };
    if htype != 1 || ptype != ETH_P_IP || hlen != 6 || plen != 4 {
        return none;
    }
    Arp { sha_low: read_u32(p + 10), spa: read_u32(p + 14), tpa: read_u32(p + 24) }
}

/// `frame_len`: the whole frame's length (past `end` when the skb is not linear).
#[inline(always)]
fn parse_ipv4(p: usize, end: usize, frame_len: usize) -> Option<Ipv4> {
    if p + IPV4_MIN_LEN > end {
        return None;
    }
    // SAFETY: bounds checked above.
    let version_ihl = unsafe { *(p as *const u8) };
    let ihl = ((version_ihl & 0x0f) as usize) * 4;
    // As Open vSwitch's flow extraction: no addresses from a header the frame does not
    // hold (nor from another IP version).
    if version_ihl >> 4 != 4 || ihl < IPV4_MIN_LEN || ETH_HLEN + ihl > frame_len {
        return None;
    }
    // SAFETY: bounds checked above.
    let proto = unsafe { *((p + 9) as *const u8) };
    let frag = read_u16_be(p + 6);
    let later_fragment = frag & 0x1fff != 0;
    let l4 = p + ihl;
    // ... and ports only from a whole TCP, UDP or SCTP header.
    let l4_len = match proto {
        IPPROTO_TCP => TCP_MIN_LEN,
        IPPROTO_UDP => UDP_LEN,
        IPPROTO_SCTP => SCTP_COMMON_LEN,
        IPPROTO_ICMP => ICMP_LEN,
        _ => 0,
    };
    let (mut sport, mut dport, mut tcp_flags, mut icmp_type, mut icmp_id) = (0, 0, 0, 0, 0);
    let linear = match proto {
        IPPROTO_TCP => TCP_FLAGS_END,
        IPPROTO_ICMP => ICMP_LEN,
        _ => PORTS_END,
    };
    if !later_fragment && l4_len != 0 && ETH_HLEN + ihl + l4_len <= frame_len && l4 + linear <= end {
        if proto == IPPROTO_ICMP {
            // SAFETY: `l4 + ICMP_LEN <= end`, checked above for ICMP.
            icmp_type = unsafe { *(l4 as *const u8) };
            if icmp_type == ICMP_ECHO_REQUEST || icmp_type == ICMP_ECHO_REPLY {
                icmp_id = read_u16_be(l4 + 4);
            }
        } else {
            sport = read_u16_be(l4);
            dport = read_u16_be(l4 + 2);
        }
        if proto == IPPROTO_TCP {
            // SAFETY: `l4 + TCP_FLAGS_END <= end`, checked above for TCP.
            tcp_flags = unsafe { *((l4 + TCP_FLAGS_END - 1) as *const u8) };
        }
    }
    Some(Ipv4 {
        src: read_u32(p + 12),
        dst: read_u32(p + 16),
        proto,
        later_fragment,
        more_fragments: frag & 0x2000 != 0,
        id: read_u16_be(p + 4),
        l4_offset: (ETH_HLEN + ihl) as u16,
        sport,
        dport,
        tcp_flags,
        icmp_type,
        icmp_id,
        embedded: Tuple::default(),
    })
}

/// The header and ports of the packet an ICMP error at `offset` is about (read with the
/// skb helper: errors are rare, and their quoted packet may lie past the linear data).
#[inline(always)]
fn embedded(ctx: &TcContext, offset: u32) -> Tuple {
    let Ok(header) = ctx.load::<[u8; IPV4_MIN_LEN]>(offset as usize) else { return Tuple::default() };
    let ihl = ((header[0] & 0x0f) as usize) * 4;
    if header[0] >> 4 != 4 || ihl < IPV4_MIN_LEN {
        return Tuple::default();
    }
    let proto = header[9];
    let (sport, dport) = match proto {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP => match ctx.load::<[u8; 4]>(offset as usize + ihl) {
            Ok(p) => (u16::from_be_bytes([p[0], p[1]]), u16::from_be_bytes([p[2], p[3]])),
            Err(_) => return Tuple::default(),
        },
        IPPROTO_ICMP => match ctx.load::<[u8; ICMP_LEN]>(offset as usize + ihl) {
            // The quoted echo's identifier, as its connection is known by.
            Ok(h) => (u16::from_be_bytes([h[4], h[5]]), u16::from_be_bytes([h[4], h[5]])),
            Err(_) => return Tuple::default(),
        },
        _ => (0, 0),
    };
    Tuple {
        src: u32::from_ne_bytes([header[12], header[13], header[14], header[15]]),
        dst: u32::from_ne_bytes([header[16], header[17], header[18], header[19]]),
        proto,
        sport,
        dport,
    }
}
