//! Entry for frames the node's host stack sends into the pod network: TC egress of tun0.
//! Nothing here goes out of tun0's peer; every frame is redirected or dropped.

use aya_ebpf::{bindings::TC_ACT_SHOT, macros::classifier, programs::TcContext};
use oxsdn_common::{rules::*, trace::output_kind, NodeConfig};

use crate::{
    maps::CONFIG,
    output::{to_pod_veth, to_tunnel},
    packet::{Frame, L3},
    pipeline::{drop, in_cluster, is_multicast, table30_route, Output, Rewrite},
    stats::count,
    trace,
};

/// Everything the host injects is global: reg0 = 0.
const HOST_VNID: u32 = 0;

#[classifier]
#[inline(always)]
pub fn from_tun0(ctx: TcContext) -> i32 {
    trace::by_mode(ctx, run::<true>, run::<false>)
}

/// The program, once per mode (`trace::by_mode`).
#[inline(never)]
fn run<const T: bool>(mut ctx: TcContext) -> i32 {
    let Some(cfg) = CONFIG.get(0) else { return TC_ACT_SHOT };
    let frame = Frame::<T>::parse(&ctx);
    let mut nat = Rewrite::default();
    match table0_from_tun0(cfg, &frame, &mut nat) {
        Output::Drop => {
            trace::decision(&frame, output_kind::DROP, 0, 0, 0, &nat);
            TC_ACT_SHOT
        }
        // OpenFlow never sends a packet back out of its ingress port.
        Output::Tun0 => {
            trace::decision(&frame, output_kind::TUN0, cfg.tun0_ifindex, 0, 0, &nat);
            TC_ACT_SHOT
        }
        // redirect_peer works from TC ingress only; this is egress.
        Output::Pod { ifindex, ip } => {
            trace::decision(&frame, output_kind::POD, ifindex, ip, 0, &nat);
            to_pod_veth(&mut ctx, &frame, ifindex, &nat)
        }
        Output::Tunnel { node_ip, vni } => {
            trace::decision(&frame, output_kind::TUNNEL, cfg.vxlan_ifindex, node_ip, vni, &nat);
            to_tunnel(&mut ctx, cfg, &frame, node_ip, vni, &nat)
        }
    }
}

/// Table 0, port tun0: IPv4 except multicast, and the gateway's ARP into the cluster.
#[inline(always)]
fn table0_from_tun0<const T: bool>(cfg: &NodeConfig, frame: &Frame<T>, nat: &mut Rewrite) -> Output {
    match frame.l3 {
        L3::Ipv4(ip) if is_multicast(ip.dst) => return drop(T0_TUN0_IP_MCAST, frame),
        L3::Ipv4(_) => count(T0_TUN0_IP, frame),
        L3::Arp(arp) if arp.spa == cfg.gateway && in_cluster(cfg, arp.tpa) => {
            count(T0_TUN0_ARP, frame)
        }
        _ => return drop(T0_TUN0_OTHER, frame),
    }
    table30_route(cfg, frame, HOST_VNID, false, nat)
}
