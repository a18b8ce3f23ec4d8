//! Entry for VXLAN from other nodes as it arrives: TC ingress of the node's underlay
//! device (the one holding its address). The program takes the outer headers off
//! itself and continues with the tunnel port's tables (`from_tunnel::deliver`), so
//! such frames skip the host stack's input path for the outer packet (netfilter's
//! PREROUTING and INPUT, routing, the UDP socket, vxlan0's receive queue).
//!
//! It leaves to vxlan0 (the same tables, after the kernel's decapsulation) whatever it
//! cannot take off correctly here: GSO aggregates (on this kernel a BPF decapsulation
//! leaves their UDP tunnel GSO state behind; `BPF_F_ADJ_ROOM_DECAP_L4_UDP` came later),
//! frames with a UDP checksum to verify, IPv4 options or fragments, and inner frames
//! other than IPv4 (ARP). Anything not VXLAN to this node goes on untouched.

use aya_ebpf::{
    bindings::{bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, BPF_CSUM_LEVEL_DEC, TC_ACT_UNSPEC},
    helpers::bpf_csum_level,
    macros::classifier,
    programs::TcContext,
};
use oxsdn_common::NodeConfig;
use oxsdn_tables::{
    frame::{ETH_HLEN, ETH_P_IP, IPPROTO_UDP},
    t254_output::NOT_SENT,
    Env,
};

use crate::{
    from_tunnel::deliver,
    shared::{
        encap::{ipv4_header_valid, OUTER_LEN, VXLAN_I_FLAG, VXLAN_LEN},
        env::Live,
        maps::CONFIG,
        parse::{IPV4_MIN_LEN, UDP_LEN},
    },
};
/// The frame up to the inner IPv4 header, read before deciding.
const READ_LEN: usize = ETH_HLEN + OUTER_LEN;

#[classifier]
pub fn from_underlay(ctx: TcContext) -> i32 {
    let Some(cfg) = CONFIG.get(0) else { return TC_ACT_UNSPEC };
    let Some((tun_src, vni, inner_eth)) = vxlan_to_this_node(&ctx, cfg) else {
        // Not ours to take: on to the host stack (or the next program).
        return TC_ACT_UNSPEC;
    };
    // A failure leaves the frame as it was, for vxlan0.
    if ctx.adjust_room(-(OUTER_LEN as i32), BPF_ADJ_ROOM_MAC, 0).is_err() {
        return TC_ACT_UNSPEC;
    }
    let mut ctx = ctx;
    if ctx.store(0, &inner_eth, 0).is_err() {
        Live::default().count(NOT_SENT, ctx.len());
        return aya_ebpf::bindings::TC_ACT_SHOT;
    }
    // A NIC that verified the inner checksum under the outer header counted one level
    // more than the frame now has (an error only means there was nothing to count).
    // SAFETY: plain helper call.
    let _ = unsafe { bpf_csum_level(ctx.skb.skb, BPF_CSUM_LEVEL_DEC as u64) };
    deliver::<false>(ctx, cfg, tun_src, vni)
}

/// The sending node's underlay address, the VNI and the inner Ethernet header of a
/// VXLAN frame to this node that this program can decapsulate.
#[inline(always)]
fn vxlan_to_this_node(ctx: &TcContext, cfg: &NodeConfig) -> Option<(u32, u32, [u8; ETH_HLEN])> {
    // No underlay in the config: the agent left all overlay traffic to vxlan0. A tag
    // left in the metadata (no VLAN device took it) would stay on the inner frame.
    // SAFETY: reading the skb's GSO size and VLAN metadata.
    let (gso, tagged) = unsafe { ((*ctx.skb.skb).gso_size, (*ctx.skb.skb).vlan_present) };
    if cfg.underlay_ifindex == 0 || gso != 0 || tagged != 0 || (ctx.len() as usize) < READ_LEN {
        return None;
    }
    if ctx.data() + READ_LEN > ctx.data_end() {
        ctx.pull_data(READ_LEN as u32).ok()?;
    }
    let (p, end) = (ctx.data(), ctx.data_end());
    if p + READ_LEN > end {
        return None;
    }
    let ip = p + ETH_HLEN;
    let udp = ip + IPV4_MIN_LEN;
    let vxlan = udp + UDP_LEN;
    let inner_eth = vxlan + VXLAN_LEN;
    // SAFETY: every read below lies within [p, p + READ_LEN), checked above.
    unsafe {
        let be16 = |at: usize| u16::from_be(core::ptr::read_unaligned(at as *const u16));
        // What the host's ip_rcv and udp_rcv would check before vxlan0 saw the frame:
        // the header checksum, and lengths that match the frame (anything odd goes to
        // them, which drop or trim it).
        let ip_len = ctx.len() as usize - ETH_HLEN;
        let ours = be16(p + 12) == ETH_P_IP
            && *(ip as *const u8) == 0x45
            && ipv4_header_valid(ip)
            && usize::from(be16(ip + 2)) == ip_len
            && usize::from(be16(udp + 4)) == ip_len - IPV4_MIN_LEN
            // Neither more fragments nor a fragment offset.
            && be16(ip + 6) & 0x3fff == 0
            && *((ip + 9) as *const u8) == IPPROTO_UDP
            && core::ptr::read_unaligned((ip + 16) as *const u32) == cfg.node_ip
            && be16(udp + 2) == cfg.vxlan_port
            && be16(udp + 6) == 0
            && *(vxlan as *const u8) == VXLAN_I_FLAG
            && be16(inner_eth + 12) == ETH_P_IP;
        if !ours {
            return None;
        }
        let tun_src = core::ptr::read_unaligned((ip + 12) as *const u32);
        let vni = u32::from_be(core::ptr::read_unaligned((vxlan + 4) as *const u32)) >> 8;
        Some((tun_src, vni, core::ptr::read_unaligned(inner_eth as *const [u8; ETH_HLEN])))
    }
}
