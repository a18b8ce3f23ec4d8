//! What the flow tables match on, read from a frame the way Open vSwitch's kernel
//! datapath (which OpenShift 3.11 ran on) extracts a flow key: an IPv4 header needs
//! IHL >= 5 and all IHL*4 bytes in the frame, else there are no addresses to match (so
//! every table drops it); the total length is not checked; TCP/UDP ports exist only in
//! a first fragment (or unfragmented packet) whose frame holds the whole transport
//! header (20 bytes for TCP, 8 for UDP). Two deliberate differences: an 0x0800 frame
//! whose version is not 4 is not IPv4 here (OVS would read it as IPv4; no IPv4 stack
//! accepts it), and TCP's data offset is not checked (OVS also wants it >= 5 and within
//! the frame; the ports are in the first four bytes either way).

use std::net::Ipv4Addr;

use etherparse::{ArpHardwareId, EtherType, Ethernet2HeaderSlice, Ipv4HeaderSlice};

use crate::state::{IPPROTO_TCP, IPPROTO_UDP};

pub const ETH_LEN: usize = 14;

#[derive(Clone, Copy, Debug)]
pub struct Arp {
    pub sender_mac: [u8; 6],
    pub sender_ip: Ipv4Addr,
    pub target_ip: Ipv4Addr,
}

#[derive(Clone, Copy, Debug)]
pub struct Ipv4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub id: u16,
    /// A fragment other than the first (offset > 0): no L4 header.
    pub later_fragment: bool,
    /// (source, destination) of TCP or UDP; `None` for other protocols, later
    /// fragments and transport headers cut short.
    pub ports: Option<(u16, u16)>,
    /// Offset of the L4 header in the frame.
    pub l4_offset: usize,
}

#[derive(Clone, Copy, Debug)]
pub enum L3 {
    Arp(Arp),
    Ipv4(Ipv4),
    /// IPv6, VLAN tags, LLDP, ARP for other protocols, IPv4 that fails the checks...
    Other,
}

pub fn parse(frame: &[u8]) -> L3 {
    let Ok(eth) = Ethernet2HeaderSlice::from_slice(frame) else { return L3::Other };
    let payload = &frame[ETH_LEN..];
    match eth.ether_type() {
        EtherType::ARP => parse_arp(payload).map_or(L3::Other, L3::Arp),
        EtherType::IPV4 => parse_ipv4(payload).map_or(L3::Other, L3::Ipv4),
        _ => L3::Other,
    }
}

/// Only Ethernet/IPv4 ARP has the addresses the tables match.
fn parse_arp(payload: &[u8]) -> Option<Arp> {
    let arp = etherparse::ArpPacketSlice::from_slice(payload).ok()?;
    if arp.hw_addr_type() != ArpHardwareId::ETHERNET
        || arp.proto_addr_type() != EtherType::IPV4
        || arp.hw_addr_size() != 6
        || arp.proto_addr_size() != 4
    {
        return None;
    }
    Some(Arp {
        sender_mac: arp.sender_hw_addr().try_into().ok()?,
        sender_ip: ip_at(arp.sender_protocol_addr()),
        target_ip: ip_at(arp.target_protocol_addr()),
    })
}

fn parse_ipv4(payload: &[u8]) -> Option<Ipv4> {
    let header = Ipv4HeaderSlice::from_slice(payload).ok()?;
    let header_len = usize::from(header.ihl()) * 4;
    let protocol = header.protocol().0;
    let later_fragment = header.fragments_offset().value() != 0;
    let l4 = &payload[header_len..];
    let whole_header = match protocol {
        IPPROTO_TCP => l4.len() >= 20,
        IPPROTO_UDP => l4.len() >= 8,
        _ => false,
    };
    let ports = (!later_fragment && whole_header)
        .then(|| (u16::from_be_bytes([l4[0], l4[1]]), u16::from_be_bytes([l4[2], l4[3]])));
    Some(Ipv4 {
        src: header.source_addr(),
        dst: header.destination_addr(),
        protocol,
        id: header.identification(),
        later_fragment,
        ports,
        l4_offset: ETH_LEN + header_len,
    })
}

fn ip_at(bytes: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])
}

/// The MAC the CNI plugin gives a pod: `0a:58:` + its IPv4 address.
pub fn pod_mac(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x0a, 0x58, o[0], o[1], o[2], o[3]]
}

/// A rewrite of the addresses and ports of an IPv4 packet (service translation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    pub src: (Ipv4Addr, u16),
    pub dst: (Ipv4Addr, u16),
}

/// Applies a translation to a copy of the frame, updating the IPv4 header checksum and
/// the TCP/UDP checksum incrementally (RFC 1624), so a checksum that was wrong stays
/// exactly as wrong; a UDP checksum of zero ("none", RFC 768) stays zero and a computed
/// zero is sent as 0xffff. Later fragments have no ports and no L4 checksum to update.
/// `to_pod` also sets the destination MAC to the new destination pod's.
pub fn translate(frame: &[u8], ip: &Ipv4, to: Translation, to_pod: bool) -> Vec<u8> {
    let mut out = frame.to_vec();
    let l4 = ip.l4_offset;
    let l4_checksum = match (ip.ports.is_some(), ip.protocol) {
        (true, IPPROTO_TCP) => Some(l4 + 16),
        (true, IPPROTO_UDP) => Some(l4 + 6),
        _ => None,
    };
    let mut replace = |offset: usize, new: &[u8], in_pseudo_header: bool| {
        let old = out[offset..offset + new.len()].to_vec();
        if old == new {
            return;
        }
        if in_pseudo_header {
            let sum = u16::from_be_bytes([out[ETH_LEN + 10], out[ETH_LEN + 11]]);
            out[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&checksum_replace(sum, &old, new).to_be_bytes());
        }
        if let Some(at) = l4_checksum {
            let sum = u16::from_be_bytes([out[at], out[at + 1]]);
            let udp = ip.protocol == IPPROTO_UDP;
            if !(udp && sum == 0) {
                let mut new_sum = checksum_replace(sum, &old, new);
                if udp && new_sum == 0 {
                    new_sum = 0xffff;
                }
                out[at..at + 2].copy_from_slice(&new_sum.to_be_bytes());
            }
        }
        out[offset..offset + new.len()].copy_from_slice(new);
    };
    replace(ETH_LEN + 16, &to.dst.0.octets(), true);
    replace(ETH_LEN + 12, &to.src.0.octets(), true);
    if ip.ports.is_some() {
        replace(l4 + 2, &to.dst.1.to_be_bytes(), false);
        replace(l4, &to.src.1.to_be_bytes(), false);
    }
    if to_pod {
        out[..6].copy_from_slice(&pod_mac(to.dst.0));
    }
    out
}

/// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), over 16-bit words.
fn checksum_replace(checksum: u16, old: &[u8], new: &[u8]) -> u16 {
    let words = |b: &[u8]| b.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).collect::<Vec<_>>();
    let mut sum = u32::from(!checksum);
    sum += words(old).iter().map(|w| !*w & 0xffff).sum::<u32>();
    sum += words(new).iter().sum::<u32>();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incremental_checksum_matches_a_full_recomputation() {
        let builder = etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([10, 128, 0, 2], [172, 30, 0, 10], 64)
            .tcp(40000, 80, 1, 1000);
        let mut frame = Vec::new();
        builder.write(&mut frame, b"hello").unwrap();
        let L3::Ipv4(ip) = parse(&frame) else { panic!("not IPv4") };
        let to = Translation { src: (Ipv4Addr::new(10, 128, 0, 1), 40000), dst: (Ipv4Addr::new(10, 129, 2, 7), 8080) };
        let out = translate(&frame, &ip, to, true);
        let expected = {
            let builder = etherparse::PacketBuilder::ethernet2([2; 6], pod_mac(to.dst.0))
                .ipv4([10, 128, 0, 1], [10, 129, 2, 7], 64)
                .tcp(40000, 8080, 1, 1000);
            let mut f = Vec::new();
            builder.write(&mut f, b"hello").unwrap();
            f
        };
        assert_eq!(out, expected);
    }

    #[test]
    fn truncated_and_bad_headers_leave_nothing_to_match() {
        let builder =
            etherparse::PacketBuilder::ethernet2([2; 6], [4; 6]).ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).udp(1, 2);
        let mut frame = Vec::new();
        builder.write(&mut frame, b"x").unwrap();
        assert!(matches!(parse(&frame), L3::Ipv4(Ipv4 { ports: Some((1, 2)), .. })));
        // IHL 4
        let mut bad = frame.clone();
        bad[ETH_LEN] = 0x44;
        assert!(matches!(parse(&bad), L3::Other));
        // the total length is not checked (OVS does not)
        let mut long = frame.clone();
        long[ETH_LEN + 2..ETH_LEN + 4].copy_from_slice(&200u16.to_be_bytes());
        assert!(matches!(parse(&long), L3::Ipv4(Ipv4 { ports: Some((1, 2)), .. })));
        // options announced past the end of the frame
        let mut options = frame.clone();
        options[ETH_LEN] = 0x4f;
        assert!(matches!(parse(&options), L3::Other));
        // the UDP header cut short: an IPv4 packet without ports
        assert!(matches!(parse(&frame[..ETH_LEN + 20 + 7]), L3::Ipv4(Ipv4 { ports: None, .. })));
    }
}
