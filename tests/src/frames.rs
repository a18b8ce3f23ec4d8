//! Hand-made Ethernet frames for hostile-traffic tests.

use std::net::Ipv4Addr;

use etherparse::PacketBuilder;

pub type Mac = [u8; 6];
pub const BROADCAST: Mac = [0xff; 6];

/// `0a:58:` + the IP, the MAC oxsdn gives a pod.
pub fn pod_mac(ip: Ipv4Addr) -> Mac {
    let o = ip.octets();
    [0x0a, 0x58, o[0], o[1], o[2], o[3]]
}

/// A UDP datagram carrying `payload`.
pub fn udp(src_mac: Mac, dst_mac: Mac, src: Ipv4Addr, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(src_mac, dst_mac).ipv4(src.octets(), dst.octets(), 64).udp(40000, dport);
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut frame, payload).expect("building a UDP frame");
    frame
}

/// An ARP packet (op 1 request, 2 reply) with the given sender and target.
pub fn arp(src_mac: Mac, dst_mac: Mac, op: u16, sha: Mac, spa: Ipv4Addr, tha: Mac, tpa: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&tha);
    f.extend_from_slice(&tpa.octets());
    f
}

/// A frame of any ethertype with `body` after the Ethernet header.
pub fn raw(src_mac: Mac, dst_mac: Mac, ethertype: u16, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + body.len());
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(body);
    f
}

/// Whether `frame` contains `marker` anywhere (tests tag their frames with one).
pub fn contains(frame: &[u8], marker: &[u8]) -> bool {
    frame.windows(marker.len()).any(|w| w == marker)
}
