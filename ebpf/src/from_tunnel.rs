//! Entry for frames other nodes send: TC ingress of vxlan0, the collect_md VXLAN device
//! that has already taken the outer headers off (their source IP and the VNI are in the
//! skb's tunnel metadata). `from_underlay` takes most of them off itself and continues
//! with the same tables (`deliver`).

use aya_ebpf::{
    bindings::{bpf_tunnel_key, TC_ACT_SHOT},
    helpers::bpf_skb_get_tunnel_key,
    macros::classifier,
    programs::TcContext,
};
use oxsdn_common::{
    rules::*,
    trace::{output_kind, CB_TUN_SRC, CB_VNI},
    NodeConfig,
};

use crate::{
    maps::CONFIG,
    output::{to_pod_peer, to_tun0},
    packet::{Frame, L3},
    pipeline::{drop, in_cluster, table10_vxlan_source, Output, Rewrite},
    stats::count,
    trace::{self, test_input},
};

#[classifier]
#[inline(always)]
pub fn from_tunnel(ctx: TcContext) -> i32 {
    trace::by_mode(ctx, run::<true>, run::<false>)
}

/// The program, once per mode (`trace::by_mode`).
#[inline(never)]
fn run<const T: bool>(mut ctx: TcContext) -> i32 {
    let Some(cfg) = CONFIG.get(0) else { return TC_ACT_SHOT };
    // SAFETY: an all-zero bpf_tunnel_key is valid; the helper fills it.
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    // SAFETY: the key lives on the stack for the call.
    let got = unsafe { bpf_skb_get_tunnel_key(ctx.skb.skb, &mut key, core::mem::size_of::<bpf_tunnel_key>() as u32, 0) };
    let (tun_src, vni) = if got == 0 {
        // SAFETY: an IPv4 tunnel fills remote_ipv4 (host byte order).
        (unsafe { key.__bindgen_anon_1.remote_ipv4 }.to_be(), key.tunnel_id)
    } else if test_input() {
        // A test run's skb has no tunnel metadata: the caller put the key in cb[].
        (trace::cb(&ctx, CB_TUN_SRC), trace::cb(&ctx, CB_VNI))
    } else {
        return TC_ACT_SHOT;
    };
    deliver::<T>(ctx, cfg, tun_src, vni)
}

/// Table 0 of the tunnel port onwards, for a frame without its outer headers that
/// node `tun_src` sent with VNI `vni`.
#[inline(always)]
pub fn deliver<const T: bool>(mut ctx: TcContext, cfg: &NodeConfig, tun_src: u32, vni: u32) -> i32 {
    let frame = Frame::<T>::parse(&ctx);
    let mut nat = Rewrite::default();
    match table0_from_tunnel(cfg, &frame, tun_src, vni, &mut nat) {
        Output::Pod { ifindex, ip } => {
            trace::decision(&frame, output_kind::POD, ifindex, ip, 0, &nat);
            to_pod_peer(&mut ctx, &frame, ifindex, ip, &nat)
        }
        Output::Tun0 => {
            trace::decision(&frame, output_kind::TUN0, cfg.tun0_ifindex, 0, 0, &nat);
            to_tun0(&mut ctx, cfg, &frame, &nat)
        }
        Output::Drop => {
            trace::decision(&frame, output_kind::DROP, 0, 0, 0, &nat);
            TC_ACT_SHOT
        }
        // OpenFlow never sends a packet back out of its ingress port.
        Output::Tunnel { node_ip, vni } => {
            trace::decision(&frame, output_kind::TUNNEL, cfg.vxlan_ifindex, node_ip, vni, &nat);
            TC_ACT_SHOT
        }
    }
}

/// Table 0, port vxlan0: ARP from a cluster address to this node's subnet, IPv4 from or
/// to a cluster address; the VNI becomes reg0.
#[inline(always)]
fn table0_from_tunnel<const T: bool>(cfg: &NodeConfig, frame: &Frame<T>, tun_src: u32, vni: u32, nat: &mut Rewrite) -> Output {
    match frame.l3 {
        L3::Arp(a) if in_cluster(cfg, a.spa) && a.tpa & cfg.local_mask == cfg.local_net => {
            count(T0_TUNNEL_ARP, frame)
        }
        L3::Ipv4(ip) if in_cluster(cfg, ip.src) => count(T0_TUNNEL_IP_SRC, frame),
        L3::Ipv4(ip) if in_cluster(cfg, ip.dst) => count(T0_TUNNEL_IP_DST, frame),
        _ => return drop(T0_TUNNEL_OTHER, frame),
    }
    table10_vxlan_source(cfg, frame, tun_src, vni, nat)
}
