//! A frame as the tables see it: the fields they match on, parsed once at the entry
//! (the eBPF programs parse with direct packet access).

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
/// 802.1Q and 802.1ad tags.
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_SCTP: u8 = 132;
/// ICMP types: echo reply and request carry an identifier; the errors carry the header
/// of the packet they are about.
pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETER_PROBLEM: u8 = 12;

#[derive(Clone, Copy, Default)]
pub struct Arp {
    /// Sender and target protocol addresses.
    pub spa: u32,
    pub tpa: u32,
    /// Low four bytes of the sender hardware address: a pod's MAC is `0a:58:` + its IP.
    pub sha_low: u32,
}

#[derive(Clone, Copy, Default)]
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
    /// TCP/UDP/SCTP ports (host byte order); 0 when the packet has none (other
    /// protocols, later fragments, truncated headers).
    pub sport: u16,
    pub dport: u16,
    /// TCP's flags byte (FIN 0x01, SYN 0x02, RST 0x04, ...); 0 for other packets.
    pub tcp_flags: u8,
    /// ICMP: the type (0 for other packets), and an echo's identifier.
    pub icmp_type: u8,
    pub icmp_id: u16,
    /// ICMP errors: the packet they are about, as its header and ports say (its sender is
    /// the one this error goes to); `embedded.proto` 0 when there is none.
    pub embedded: Tuple,
}

/// A packet's addresses, protocol and ports.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Tuple {
    pub src: u32,
    pub dst: u32,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_RST: u8 = 0x04;

impl Ipv4 {
    /// An ICMP error (destination unreachable, time exceeded, parameter problem).
    #[inline(always)]
    pub fn is_icmp_error(&self) -> bool {
        self.proto == IPPROTO_ICMP
            && matches!(self.icmp_type, ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM)
    }

    /// The ports a connection of this packet is known by: TCP/UDP/SCTP's, an ICMP echo's
    /// identifier as both.
    #[inline(always)]
    pub fn flow_ports(&self) -> (u16, u16) {
        if self.proto == IPPROTO_ICMP {
            (self.icmp_id, self.icmp_id)
        } else {
            (self.sport, self.dport)
        }
    }

    /// A TCP FIN or RST: the connection is closing.
    #[inline(always)]
    pub fn closes(&self) -> bool {
        self.proto == IPPROTO_TCP && self.tcp_flags & (TCP_FIN | TCP_RST) != 0
    }
}

/// What the frame carries. A tag without payload: the fields of every kind are always
/// in `Frame` (zero when not this kind), because an enum's payload is undefined for the
/// other variants, and the compiler may then read it speculatively from whatever
/// register held something else, which the verifier refuses.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum L3 {
    /// Any 0x0806 frame; `Frame::arp`'s fields are zero when the body is not
    /// IPv4-over-Ethernet ARP, as OVS leaves them, so such frames match no per-pod rule.
    Arp,
    /// `Frame::ipv4` holds the header's fields.
    Ipv4,
    /// IPv6, LLDP, truncated frames, anything else: dropped by table 0.
    Other,
}

pub struct Frame {
    pub len: u32,
    /// The frame carries a VLAN tag: in its data, or (as the kernel moves a sender's tag
    /// there before TC runs) in the skb's metadata.
    pub vlan: bool,
    /// Destination MAC as read from the wire: first two bytes and last four.
    pub dst_mac_hi: u16,
    pub dst_mac_lo: u32,
    pub l3: L3,
    pub arp: Arp,
    pub ipv4: Ipv4,
}

/// First two bytes of every pod MAC (`0a:58:` + the pod's IPv4).
pub const POD_MAC_PREFIX: u16 = u16::from_ne_bytes([0x0a, 0x58]);

impl Frame {
    /// Whether the frame is addressed to the pod with address `ip`.
    #[inline(always)]
    pub fn is_for_pod(&self, ip: u32) -> bool {
        self.dst_mac_hi == POD_MAC_PREFIX && self.dst_mac_lo == ip
    }
}
