//! Frame parsing: the fields the tables match on, read with direct packet access.

use aya_ebpf::programs::TcContext;

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const ARP_LEN: usize = 28;
pub const IPV4_MIN_LEN: usize = 20;
const TCP_MIN_LEN: usize = 20;
pub const UDP_LEN: usize = 8;
/// The VXLAN header (RFC 7348): a flags byte, reserved bytes, the VNI.
pub const VXLAN_LEN: usize = 8;
/// The I flag in the VXLAN flags byte: a valid VNI follows.
pub const VXLAN_I_FLAG: u8 = 0x08;
/// Bytes the parser may read: an Ethernet header, the longest IPv4 header and the L4
/// ports.
const PARSE_LEN: usize = ETH_HLEN + 60 + 4;

#[derive(Clone, Copy)]
pub struct Arp {
    /// Sender and target protocol addresses.
    pub spa: u32,
    pub tpa: u32,
    /// Low four bytes of the sender hardware address: a pod's MAC is `0a:58:` + its IP.
    pub sha_low: u32,
}

#[derive(Clone, Copy)]
pub struct Ipv4 {
    pub src: u32,
    pub dst: u32,
    pub proto: u8,
    /// A fragment other than the first: it carries no L4 header.
    pub later_fragment: bool,
    /// More fragments follow (set on all but the last fragment).
    pub more_fragments: bool,
    /// Identification (host byte order), which ties the fragments of a datagram.
    pub id: u16,
    /// Offset of the L4 header from the start of the frame.
    pub l4_offset: u16,
    /// TCP/UDP ports (host byte order); 0 when the packet has none (other protocols,
    /// later fragments, truncated headers).
    pub sport: u16,
    pub dport: u16,
}

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

#[derive(Clone, Copy)]
pub enum L3 {
    /// Any 0x0806 frame; fields are zero when the body is not IPv4-over-Ethernet ARP,
    /// as OVS leaves them, so such frames match no per-pod rule.
    Arp(Arp),
    Ipv4(Ipv4),
    /// IPv6, LLDP, truncated frames, anything else: dropped by table 0.
    Other,
}

/// A parsed frame. `TRACE`: whether the program runs in trace mode. It is a type
/// parameter, not a field, so that the live programs are compiled without any trace
/// code: the entry programs test the `MODE` global once and continue in one of two
/// copies of the pipeline; the verifier, which knows the frozen global, removes the
/// other copy.
pub struct Frame<const TRACE: bool> {
    pub len: u32,
    /// Destination MAC as read from the wire: first two bytes and last four.
    pub dst_mac_hi: u16,
    pub dst_mac_lo: u32,
    pub l3: L3,
}

/// First two bytes of every pod MAC (`0a:58:` + the pod's IPv4).
const POD_MAC_PREFIX: u16 = u16::from_ne_bytes([0x0a, 0x58]);

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

impl<const TRACE: bool> Frame<TRACE> {
    #[inline(always)]
    pub fn parse(ctx: &TcContext) -> Self {
        let len = ctx.len();
        // Headers of skbs from veths are linear; pull only if a sender made them not so.
        let want = PARSE_LEN.min(len as usize);
        if ctx.data() + want > ctx.data_end() {
            let _ = ctx.pull_data(want as u32);
        }
        let (start, end) = (ctx.data(), ctx.data_end());
        if start + ETH_HLEN > end {
            return Frame { len, dst_mac_hi: 0, dst_mac_lo: 0, l3: L3::Other };
        }
        // SAFETY: bounds checked above.
        let dst_mac_hi = unsafe { core::ptr::read_unaligned(start as *const u16) };
        let dst_mac_lo = read_u32(start + 2);
        let l3 = match read_u16_be(start + 12) {
            ETH_P_ARP => L3::Arp(parse_arp(start + ETH_HLEN, end)),
            ETH_P_IP => parse_ipv4(start + ETH_HLEN, end, len as usize),
            _ => L3::Other,
        };
        Frame { len, dst_mac_hi, dst_mac_lo, l3 }
    }

    /// Whether the program runs in trace mode (a constant of this copy).
    #[inline(always)]
    pub fn tracing(&self) -> bool {
        TRACE
    }

    /// Whether the frame is addressed to the pod with address `ip`.
    #[inline(always)]
    pub fn is_for_pod(&self, ip: u32) -> bool {
        self.dst_mac_hi == POD_MAC_PREFIX && self.dst_mac_lo == ip
    }
}

#[inline(always)]
fn parse_arp(p: usize, end: usize) -> Arp {
    let none = Arp { spa: 0, tpa: 0, sha_low: 0 };
    if p + ARP_LEN > end {
        return none;
    }
    // htype 1 (Ethernet), ptype 0x0800, hlen 6, plen 4.
    // SAFETY: bounds checked above.
    let (htype, ptype, hlen, plen) = unsafe {
        (read_u16_be(p), read_u16_be(p + 2), *((p + 4) as *const u8), *((p + 5) as *const u8))
    };
    if htype != 1 || ptype != ETH_P_IP || hlen != 6 || plen != 4 {
        return none;
    }
    Arp { sha_low: read_u32(p + 10), spa: read_u32(p + 14), tpa: read_u32(p + 24) }
}

/// `frame_len`: the whole frame's length (past `end` when the skb is not linear).
#[inline(always)]
fn parse_ipv4(p: usize, end: usize, frame_len: usize) -> L3 {
    if p + IPV4_MIN_LEN > end {
        return L3::Other;
    }
    // SAFETY: bounds checked above.
    let version_ihl = unsafe { *(p as *const u8) };
    let ihl = ((version_ihl & 0x0f) as usize) * 4;
    // As Open vSwitch's flow extraction: no addresses from a header the frame does not
    // hold (nor from another IP version).
    if version_ihl >> 4 != 4 || ihl < IPV4_MIN_LEN || ETH_HLEN + ihl > frame_len {
        return L3::Other;
    }
    // SAFETY: bounds checked above.
    let proto = unsafe { *((p + 9) as *const u8) };
    let frag = read_u16_be(p + 6);
    let later_fragment = frag & 0x1fff != 0;
    let l4 = p + ihl;
    // ... and ports only from a whole TCP or UDP header.
    let l4_len = match proto {
        IPPROTO_TCP => TCP_MIN_LEN,
        IPPROTO_UDP => UDP_LEN,
        _ => 0,
    };
    let (mut sport, mut dport) = (0, 0);
    if !later_fragment && l4_len != 0 && ETH_HLEN + ihl + l4_len <= frame_len && l4 + 4 <= end {
        sport = read_u16_be(l4);
        dport = read_u16_be(l4 + 2);
    }
    L3::Ipv4(Ipv4 {
        src: read_u32(p + 12),
        dst: read_u32(p + 16),
        proto,
        later_fragment,
        more_fragments: frag & 0x2000 != 0,
        id: read_u16_be(p + 4),
        l4_offset: (ETH_HLEN + ihl) as u16,
        sport,
        dport,
    })
}
