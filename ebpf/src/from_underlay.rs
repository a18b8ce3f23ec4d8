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
//! other than IPv4 (ARP). Anything not VXLAN to this node goes on untouched. Which
//! frames are VXLAN to this node, and which of them are malformed, it reads as the XDP
//! prefilter before it does (`encap::outer_headers`).

use aya_ebpf::{
    bindings::{bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, BPF_CSUM_LEVEL_DEC, TC_ACT_UNSPEC},
    helpers::bpf_csum_level,
    macros::classifier,
    programs::TcContext,
};
use oxsdn_common::NodeConfig;
use oxsdn_tables::{frame::ETH_HLEN, t0_classify::Underlay, t254_output::NOT_SENT, Env};

use crate::{
    from_tunnel::deliver,
    shared::{
        encap::{outer_headers, OUTER_END, OUTER_LEN},
        env::Live,
        maps::CONFIG,
    },
};

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
    let len = ctx.len() as usize;
    if cfg.underlay_ifindex == 0 || gso != 0 || tagged != 0 || len < OUTER_END {
        return None;
    }
    if ctx.data() + OUTER_END > ctx.data_end() {
        ctx.pull_data(OUTER_END as u32).ok()?;
    }
    let (p, end) = (ctx.data(), ctx.data_end());
    // SAFETY: the skb's linear data and its length.
    let outer = unsafe { outer_headers(p, end, len, cfg) };
    // Anything odd goes to the host's IP and UDP layers and vxlan0, which drop or trim
    // it (or the XDP prefilter already dropped it).
    let Underlay::Vxlan { src } = outer.kind else { return None };
    if !outer.plain || p + OUTER_END > end {
        return None;
    }
    // SAFETY: within [p, p + OUTER_END), checked above.
    let inner_eth = unsafe { core::ptr::read_unaligned((p + OUTER_END - ETH_HLEN) as *const [u8; ETH_HLEN]) };
    Some((src, outer.vni, inner_eth))
}
