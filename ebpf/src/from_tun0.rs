//! Entry for frames the node's host stack sends into the pod network: TC egress of tun0.
//! Nothing here goes out of tun0's peer; every frame is redirected or dropped.

use aya_ebpf::{bindings::TC_ACT_SHOT, macros::classifier, programs::TcContext};
use oxsdn_common::{monitor::port, trace::output_kind};
use oxsdn_tables::{t0_classify, t254_output::TO_INGRESS_PORT, Env, Output, Packet};

use crate::shared::{
    env::Maps,
    maps::CONFIG,
    output::{drop_at_output, to_pod_veth, to_tunnel},
    parse::parse,
    trace_mode,
};

#[classifier]
#[inline(always)]
pub fn from_tun0(ctx: TcContext) -> i32 {
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
    let mut p = Packet::new(env, cfg, &frame).arriving(port::TUN0, cfg.tun0_ifindex);
    match t0_classify::from_tun0(&mut p) {
        Output::Drop => {
            env.dropped(&p.xlate);
            TC_ACT_SHOT
        }
        // OpenFlow never sends a packet back out of its ingress port.
        Output::Tun0 => {
            env.decision(output_kind::TUN0, cfg.tun0_ifindex, 0, 0, &p);
            drop_at_output(&p, TO_INGRESS_PORT)
        }
        // redirect_peer works from TC ingress only; this is egress.
        Output::Pod { ifindex, ip } => {
            env.decision(output_kind::POD, ifindex, ip, 0, &p);
            to_pod_veth(&mut ctx, &p, ifindex)
        }
        Output::Tunnel { node_ip, vni } => {
            env.decision(output_kind::TUNNEL, cfg.vxlan_ifindex, node_ip, vni, &p);
            to_tunnel(&mut ctx, &p, node_ip, vni)
        }
    }
}
