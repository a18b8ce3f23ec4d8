//! Entry for frames a pod sends: TC ingress of the pod's host-side veth (a pod port).

use aya_ebpf::{bindings::TC_ACT_SHOT, macros::classifier, programs::TcContext};
use oxsdn_common::{
    monitor::port,
    trace::{output_kind, CB_IN_PORT},
};
use oxsdn_tables::{t0_classify, t254_output::TO_INGRESS_PORT, Env, Packet};

use crate::shared::{
    bandwidth::{pace, Pace},
    env::Maps,
    maps::CONFIG,
    multicast::replicate,
    output::{drop_at_output, judged, to_pod_peer, to_pod_veth, to_tun0, to_tunnel, Decision},
    parse::parse,
    scratch, trace_mode,
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
    let Some(frame) = scratch::frame() else {
        env.count(t0_classify::UNCONFIGURED, ctx.len());
        return TC_ACT_SHOT;
    };
    parse(&ctx, frame);
    let in_port = if T {
        trace_mode::cb(&ctx, CB_IN_PORT)
    } else {
        // SAFETY: reading the ingress ifindex from the skb.
        unsafe { (*ctx.skb.skb).ifindex }
    };
    let mut p = Packet::new(env, cfg, frame, port::POD, in_port);
    let mut d = Decision::default();
    tables(&mut p, in_port, &mut d);
    if !judged(&mut p, &d) {
        return TC_ACT_SHOT;
    }
    let paced = match pace(&mut ctx, &p, &d, true) {
        Pace::Drop => return TC_ACT_SHOT,
        Pace::Now => false,
        Pace::Later => true,
    };
    output(&mut ctx, &p, &d, in_port, paced)
}

/// The tables, from table 0 of a pod port (see `Decision`).
#[inline(never)]
fn tables<const T: bool>(p: &mut Packet<Maps<T>>, in_port: u32, d: &mut Decision) {
    *d = Decision::of(t0_classify::from_pod(p, in_port), p.cfg);
}

/// What the output port does with the packet the tables sent to `d`: a function of its
/// own, so its locals (and the encapsulation's) are not on the stack while the tables
/// run (the 512 bytes are for the deepest chain of calls).
#[inline(never)]
fn output<const T: bool>(ctx: &mut TcContext, p: &Packet<Maps<T>>, d: &Decision, in_port: u32, paced: bool) -> i32 {
    match d.kind {
        output_kind::TUN0 => to_tun0(ctx, p),
        output_kind::POD => {
            // OpenFlow never sends a packet back out of its ingress port (a pod's packet
            // or ARP to its own address); a service hairpin, translated, goes back.
            if d.ifindex == in_port && p.xlate.active == 0 {
                return drop_at_output(p, TO_INGRESS_PORT);
            }
            // A paced packet waits in the fq qdisc of the pod's host veth: through
            // the veth, not straight into the pod.
            if paced {
                return to_pod_veth(ctx, p, d.ifindex);
            }
            to_pod_peer(ctx, p, d.ifindex, d.ip)
        }
        output_kind::TUNNEL => to_tunnel(ctx, p, d.ip, d.vni),
        output_kind::MULTICAST => replicate(ctx, p, d, in_port),
        _ => TC_ACT_SHOT,
    }
}
