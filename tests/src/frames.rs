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

/// A UDP datagram from port 40000 carrying `payload`.
pub fn udp(src_mac: Mac, dst_mac: Mac, src: Ipv4Addr, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    udp_from(src_mac, dst_mac, (src, 40000), (dst, dport), payload)
}

/// A UDP datagram between two sockets carrying `payload`.
pub fn udp_from(src_mac: Mac, dst_mac: Mac, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(src_mac, dst_mac).ipv4(src.0.octets(), dst.0.octets(), 64).udp(src.1, dst.1);
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

/// `frame` with VLAN tags inserted after its MACs: `tags` are (TPID, VLAN id), outermost
/// first (0x8100 for 802.1Q, 0x88a8 for an 802.1ad outer tag).
pub fn vlan_tagged(frame: &[u8], tags: &[(u16, u16)]) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    for (tpid, vid) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&frame[12..]);
    f
}

/// Whether `frame` contains `marker` anywhere (tests tag their frames with one).
pub fn contains(frame: &[u8], marker: &[u8]) -> bool {
    frame.windows(marker.len()).any(|w| w == marker)
}

/// Where a fragment sits in its datagram: identification, offset in 8-byte units, and
/// whether more fragments follow.
pub struct FragmentOf {
    pub id: u16,
    pub offset: u16,
    pub more: bool,
}

/// An IPv4 fragment of protocol `proto` carrying `payload`. Fragments after the first
/// carry no L4 header.
pub fn ipv4_fragment(
    macs: (Mac, Mac),
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    frag: FragmentOf,
    payload: &[u8],
) -> Vec<u8> {
    let total = 20 + payload.len() as u16;
    let flags_offset = (if frag.more { 0x2000 } else { 0 }) | (frag.offset & 0x1fff);
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&frag.id.to_be_bytes());
    h.extend_from_slice(&flags_offset.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    let sum = h.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum::<u32>();
    let folded = (sum & 0xffff) + (sum >> 16);
    let checksum = !((folded & 0xffff) + (folded >> 16)) as u16;
    h[10..12].copy_from_slice(&checksum.to_be_bytes());
    raw(macs.0, macs.1, 0x0800, &[h.as_slice(), payload].concat())
}
