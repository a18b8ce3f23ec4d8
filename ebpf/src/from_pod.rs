//! Entry for frames a pod sends: TC ingress of the pod's host-side veth.

use aya_ebpf::{bindings::TC_ACT_SHOT, macros::classifier, programs::TcContext};
use oxsdn_common::{rules::*, trace::{output_kind, CB_IN_PORT}, NodeConfig};

use crate::{
    maps::CONFIG,
    output::{to_pod_peer, to_tun0, to_tunnel},
    packet::{Frame, L3},
    pipeline::{drop, table20_antispoof, Output, Rewrite},
    stats::count,
    trace,
};

#[classifier]
#[inline(always)]
pub fn from_pod(ctx: TcContext) -> i32 {
    trace::by_mode(ctx, run::<true>, run::<false>)
}

/// The program, once per mode (`trace::by_mode`).
#[inline(never)]
fn run<const T: bool>(mut ctx: TcContext) -> i32 {
    let Some(cfg) = CONFIG.get(0) else { return TC_ACT_SHOT };
    let frame = Frame::<T>::parse(&ctx);
    let in_port = if frame.tracing() {
        trace::cb(&ctx, CB_IN_PORT)
    } else {
        // SAFETY: reading the ingress ifindex from the skb.
        unsafe { (*ctx.skb.skb).ifindex }
    };
    let mut nat = Rewrite::default();
    match table0_from_pod(cfg, &frame, in_port, &mut nat) {
        Output::Drop => {
            trace::decision(&frame, output_kind::DROP, 0, 0, 0, &nat);
            TC_ACT_SHOT
        }
        Output::Tun0 => {
            trace::decision(&frame, output_kind::TUN0, cfg.tun0_ifindex, 0, 0, &nat);
            to_tun0(&mut ctx, cfg, &frame, &nat)
        }
        Output::Pod { ifindex, ip } => {
            trace::decision(&frame, output_kind::POD, ifindex, ip, 0, &nat);
            // OpenFlow never sends a packet back out of its ingress port (a pod's packet
            // or ARP to its own address); a service hairpin, translated, goes back.
            if ifindex == in_port && nat.active == 0 {
                return TC_ACT_SHOT;
            }
            to_pod_peer(&mut ctx, &frame, ifindex, ip, &nat)
        }
        Output::Tunnel { node_ip, vni } => {
            trace::decision(&frame, output_kind::TUNNEL, cfg.vxlan_ifindex, node_ip, vni, &nat);
            to_tunnel(&mut ctx, cfg, &frame, node_ip, vni, &nat)
        }
    }
}

/// Table 0, pod ports: only ARP and IPv4 go on to anti-spoofing.
#[inline(always)]
fn table0_from_pod<const T: bool>(cfg: &NodeConfig, frame: &Frame<T>, in_port: u32, nat: &mut Rewrite) -> Output {
    match frame.l3 {
        L3::Arp(_) => count(T0_POD_ARP, frame),
        L3::Ipv4(_) => count(T0_POD_IP, frame),
        L3::Other => return drop(T0_OTHER, frame),
    }
    table20_antispoof(cfg, frame, in_port, nat)
}
