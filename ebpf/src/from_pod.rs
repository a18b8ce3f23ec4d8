//! Entry for frames a pod sends: TC ingress of the pod's host-side veth.

use aya_ebpf::{
    bindings::{TC_ACT_REDIRECT, TC_ACT_SHOT},
    helpers::{bpf_redirect, bpf_redirect_peer},
    macros::classifier,
    programs::TcContext,
};
use oxsdn_common::{rules::*, NodeConfig};

use crate::{
    maps::CONFIG,
    packet::{Frame, L3},
    pipeline::{drop, table20_antispoof, Output},
    stats::count,
};

const BPF_F_INGRESS: u64 = 1;
const PACKET_HOST: u32 = 0;

#[classifier]
pub fn from_pod(ctx: TcContext) -> i32 {
    let Some(cfg) = CONFIG.get(0) else { return TC_ACT_SHOT };
    let frame = Frame::parse(&ctx);
    // SAFETY: reading the ingress ifindex from the skb.
    let in_port = unsafe { (*ctx.skb.skb).ifindex };
    match table0_from_pod(cfg, &frame, in_port) {
        Output::Drop => TC_ACT_SHOT,
        // SAFETY: plain helper calls.
        Output::Tun0 => unsafe { bpf_redirect(cfg.tun0_ifindex, BPF_F_INGRESS) as i32 },
        Output::Pod { ifindex, ip } => {
            // The frame skips the receiving veth's Ethernet processing, which would mark
            // frames addressed to the pod's own MAC as PACKET_HOST; do it here (the host
            // veth, whose MAC it is not, classified it as PACKET_OTHERHOST).
            if frame.is_for_pod(ip) {
                let _ = ctx.change_type(PACKET_HOST);
            }
            // SAFETY: plain helper call.
            match unsafe { bpf_redirect_peer(ifindex, 0) } as i32 {
                TC_ACT_REDIRECT => TC_ACT_REDIRECT,
                _ => TC_ACT_SHOT,
            }
        }
    }
}

/// Table 0, pod ports: only ARP and IPv4 go on to anti-spoofing.
#[inline(always)]
fn table0_from_pod(cfg: &NodeConfig, frame: &Frame, in_port: u32) -> Output {
    match frame.l3 {
        L3::Arp(_) => count(T0_POD_ARP, frame.len),
        L3::Ipv4(_) => count(T0_POD_IP, frame.len),
        L3::Other => return drop(T0_OTHER, frame),
    }
    table20_antispoof(cfg, frame, in_port)
}
