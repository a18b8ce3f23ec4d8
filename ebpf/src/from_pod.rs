//! Entry for frames a pod sends: TC ingress of the pod's host-side veth (a pod port).

use aya_ebpf::{bindings::TC_ACT_SHOT, macros::classifier, programs::TcContext};
use oxsdn_common::{
    monitor::port,
    trace::{output_kind, CB_IN_PORT},
};
use oxsdn_tables::{t0_classify, t254_output::TO_INGRESS_PORT, Env, Output, Packet};

use crate::shared::{
    env::Maps,
    maps::CONFIG,
    output::{drop_at_output, to_pod_peer, to_tun0, to_tunnel},
    parse::parse,
    trace_mode,
};

#[classifier]
#[inline(always)]
pub fn from_pod(ctx: TcContext) -> i32 {
    trace_mode::by_mode(ctx, run::<true>, run::<false>)
}

/// The program, once per mode (`trace_mode::by_mode`).
#[inline(never)]
fn run<const T: bool>(mut ctx: TcContext) -> i32 {
    let env = Maps::<T>;
    let Some(cfg) = CONFIG.get(0) else {
        env.count(t0_classify::UNCONFIGURED, ctx.len());
        return TC_ACT_SHOT;
    };
    let frame = parse(&ctx);
    let in_port = if T {
        trace_mode::cb(&ctx, CB_IN_PORT)
    } else {
        // SAFETY: reading the ingress ifindex from the skb.
        unsafe { (*ctx.skb.skb).ifindex }
    };
    let mut p = Packet::new(env, cfg, &frame).arriving(port::POD, in_port);
    match t0_classify::from_pod(&mut p, in_port) {
        Output::Drop => {
            env.dropped(&p.xlate);
            TC_ACT_SHOT
        }
        Output::Tun0 => {
            env.decision(output_kind::TUN0, cfg.tun0_ifindex, 0, 0, &p);
            to_tun0(&mut ctx, &p)
        }
        Output::Pod { ifindex, ip } => {
            env.decision(output_kind::POD, ifindex, ip, 0, &p);
            // OpenFlow never sends a packet back out of its ingress port (a pod's packet
            // or ARP to its own address); a service hairpin, translated, goes back.
            if ifindex == in_port && p.xlate.active == 0 {
                return drop_at_output(&p, TO_INGRESS_PORT);
            }
            to_pod_peer(&mut ctx, &p, ifindex, ip)
        }
        Output::Tunnel { node_ip, vni } => {
            env.decision(output_kind::TUNNEL, cfg.vxlan_ifindex, node_ip, vni, &p);
            to_tunnel(&mut ctx, &p, node_ip, vni)
        }
    }
}
