//! Entry for frames the node's host stack sends into the pod network: TC egress of tun0.
//! Nothing here goes out of tun0's peer; every frame is redirected or dropped.

use aya_ebpf::{bindings::TC_ACT_SHOT, macros::classifier, programs::TcContext};
use oxsdn_common::trace::output_kind;
use oxsdn_tables::{t0_classify, t254_output::TO_INGRESS_PORT, Env, Packet};

use crate::shared::{
    env::Maps,
    maps::CONFIG,
    output::{drop_at_output, refused_by_policy, to_pod_veth, to_tunnel, Decision},
    parse::parse,
    scratch, trace_mode,
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
    let Some(frame) = scratch::frame() else {
        env.count(t0_classify::UNCONFIGURED, ctx.len());
        return TC_ACT_SHOT;
    };
    parse(&ctx, frame);
    let mut p = Packet::new(env, cfg, frame);
    let mut d = Decision::default();
    tables(&mut p, &mut d);
    if refused_by_policy(&mut p, &d) {
        return TC_ACT_SHOT;
    }
    match d.kind {
        // OpenFlow never sends a packet back out of its ingress port.
        output_kind::TUN0 => {
            env.decision(output_kind::TUN0, cfg.tun0_ifindex, 0, 0, &p.xlate);
            drop_at_output(&p, TO_INGRESS_PORT)
        }
        // redirect_peer works from TC ingress only; this is egress.
        output_kind::POD => {
            env.decision(output_kind::POD, d.ifindex, d.ip, 0, &p.xlate);
            to_pod_veth(&mut ctx, &p, d.ifindex)
        }
        output_kind::TUNNEL => {
            env.decision(output_kind::TUNNEL, cfg.vxlan_ifindex, d.ip, d.vni, &p.xlate);
            to_tunnel(&mut ctx, &p, d.ip, d.vni)
        }
        _ => {
            env.dropped(&p.xlate);
            TC_ACT_SHOT
        }
    }
}

/// The tables, from table 0 of tun0 (see `Decision`).
#[inline(never)]
fn tables<const T: bool>(p: &mut Packet<Maps<T>>, d: &mut Decision) {
    *d = Decision::of(t0_classify::from_tun0(p));
}
