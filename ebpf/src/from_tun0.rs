//! Entry for frames the node's host stack sends into the pod network: TC egress of tun0.
//! Nothing here goes out of tun0's peer; every frame is redirected or dropped.

use aya_ebpf::{bindings::TC_ACT_SHOT, macros::classifier, programs::TcContext};
use oxsdn_common::{monitor::port, trace::output_kind};
use oxsdn_tables::{t0_classify, t254_output::TO_INGRESS_PORT, Env, Packet};

use crate::shared::{
    bandwidth::{pace, Pace},
    env::Maps,
    maps::CONFIG,
    output::{drop_at_output, judged, to_pod_veth, to_tunnel, Decision},
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
    let mut p = Packet::new(env, cfg, frame, port::TUN0, cfg.tun0_ifindex);
    let mut d = Decision::default();
    tables(&mut p, &mut d);
    if !judged(&mut p, &d) {
        return TC_ACT_SHOT;
    }
    // A pod's packets go through its host veth (and its qdisc) from here anyway.
    if let Pace::Drop = pace(&mut ctx, &p, &d, false) {
        return TC_ACT_SHOT;
    }
    output(&mut ctx, &p, &d)
}

/// The tables, from table 0 of tun0 (see `Decision`).
#[inline(never)]
fn tables<const T: bool>(p: &mut Packet<Maps<T>>, d: &mut Decision) {
    *d = Decision::of(t0_classify::from_tun0(p), p.cfg);
}

/// What the output port does with the packet the tables sent to `d`: a function of its
/// own, so its locals (and the encapsulation's) are not on the stack while the tables
/// run (the 512 bytes are for the deepest chain of calls).
#[inline(never)]
fn output<const T: bool>(ctx: &mut TcContext, p: &Packet<Maps<T>>, d: &Decision) -> i32 {
    match d.kind {
        // OpenFlow never sends a packet back out of its ingress port.
        output_kind::TUN0 => drop_at_output(p, TO_INGRESS_PORT),
        // redirect_peer works from TC ingress only; this is egress.
        output_kind::POD => to_pod_veth(ctx, p, d.ifindex),
        output_kind::TUNNEL => to_tunnel(ctx, p, d.ip, d.vni),
        _ => TC_ACT_SHOT,
    }
}
