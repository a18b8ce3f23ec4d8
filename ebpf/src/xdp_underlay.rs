//! Entry for everything the node's underlay device receives, at its XDP hook: before
//! the kernel builds an skb, the prefilter (table 0's and 10's rules at this hook,
//! `t0_classify::prefilter`) drops what the pipeline would drop later anyway, VXLAN to
//! the node's port that is malformed or from no known node, and IPv4 from the
//! operator's denied source networks. Everything else passes untouched to the host
//! stack, where `from_underlay` (TC) takes the overlay's frames on, except, with
//! `--xdp-decap` (`NodeConfig.xdp_decap`), VXLAN from a known node to a local pod:
//! this program takes its outer headers off, runs the tunnel port's tables on the
//! inner frame (`from_tunnel::tables`, as `from_underlay` does) and redirects it to the
//! pod's veth (`decap`).

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    helpers::{bpf_check_mtu, bpf_redirect, bpf_xdp_adjust_head},
    macros::xdp,
    programs::XdpContext,
};
use oxsdn_common::{monitor::port, trace::output_kind, NodeConfig};
use oxsdn_tables::{
    frame::Frame,
    t0_classify::{self, Underlay},
    t254_output::{NOT_SENT, XDP_NOT_POD},
    Packet,
};

use crate::{
    from_tunnel,
    shared::{
        encap::{outer_headers, OUTER_LEN},
        env::Maps,
        maps::CONFIG,
        output::{count_output_drop, judged, Decision},
        parse::parse_linear,
        scratch, trace_mode,
    },
};

#[xdp]
pub fn xdp_underlay(ctx: XdpContext) -> u32 {
    trace_mode::by_mode(ctx, run::<true>, run::<false>)
}

/// The program, once per mode (`trace_mode::by_mode`).
#[inline(never)]
fn run<const T: bool>(ctx: XdpContext) -> u32 {
    let env = Maps::<T>;
    // Without a configuration there is nothing to judge by: the TC programs decide.
    let Some(cfg) = CONFIG.get(0) else { return XDP_PASS };
    let (p, end) = (ctx.data(), ctx.data_end());
    // SAFETY: the frame's bytes; without multi-buffer support they are all linear.
    let outer = unsafe { outer_headers(p, end, end - p, cfg) };
    if !t0_classify::prefilter(env, outer.kind, (end - p) as u32) {
        env.dropped_at_prefilter();
        return XDP_DROP;
    }
    match outer.kind {
        // `plain`: what `from_underlay` could take off too (lengths exact, no UDP
        // checksum, IPv4 inside).
        Underlay::Vxlan { src } if cfg.xdp_decap != 0 && outer.plain => decap::<T>(&ctx, cfg, src, outer.vni),
        _ => XDP_PASS,
    }
}

/// VXLAN from known node `tun_src` with VNI `vni`: if `t0_classify::decap_at_xdp` takes
/// its inner frame, the outer headers come off and the tunnel port's tables decide, as
/// at TC; a local pod's frame is redirected out of the pod's host veth, towards the
/// pod. Otherwise the frame passes on untouched. A function of its own, off the
/// prefilter's path, with few locals: the tables' deepest chain is below it.
#[inline(never)]
fn decap<const T: bool>(ctx: &XdpContext, cfg: &NodeConfig, tun_src: u32, vni: u32) -> u32 {
    let Some(frame) = scratch::frame() else { return XDP_PASS };
    if !one_frame(ctx) {
        return XDP_PASS;
    }
    parse_inner(ctx, frame);
    let mut p = Packet::new(Maps::<T>, cfg, frame, port::TUNNEL, tun_src);
    if !t0_classify::decap_at_xdp(&p) {
        return XDP_PASS;
    }
    // SAFETY: plain helper call; nothing reads the frame's bytes after it.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, OUTER_LEN as i32) } != 0 {
        return dropped_at_output(&p, NOT_SENT);
    }
    let mut d = Decision::default();
    from_tunnel::tables(&mut p, tun_src, vni, &mut d);
    if !judged(&mut p, &d) {
        return XDP_DROP;
    }
    if d.kind != output_kind::POD || p.xlate.active != 0 {
        return dropped_at_output(&p, XDP_NOT_POD);
    }
    // Out of the pod's host veth: the pod's eth0 receives it. A trace run (a test run)
    // returns the action without redirecting anything.
    // SAFETY: plain helper call.
    unsafe { bpf_redirect(d.ifindex, 0) as u32 }
}

/// Whether the frame is one the wire carried: not longer than the underlay device's
/// MTU. Generic XDP also runs on the GSO aggregates a veth receives (TCP from another
/// node's pods, up to 64 KiB), and its redirect drops any frame over the target's MTU:
/// those stay with `from_underlay`, whose `redirect_peer` carries them whole.
#[inline(never)]
fn one_frame(ctx: &XdpContext) -> bool {
    let mut mtu_len = 0u32;
    // SAFETY: plain helper call (ifindex 0: the receiving device); mtu_len lives on the
    // stack for it.
    unsafe { bpf_check_mtu(ctx.ctx as *mut _, 0, &mut mtu_len, 0, 0) == 0 }
}

/// Parses the inner frame, after the outer headers, into `frame`.
#[inline(never)]
fn parse_inner(ctx: &XdpContext, frame: &mut Frame) {
    // Volatile: loaded here, the context's 32-bit fields become packet pointers; the
    // compiler would otherwise load them in the caller and pass them widened, which the
    // verifier refuses (pointer arithmetic by shifts).
    // SAFETY: reading the program's context.
    let (p, end) = unsafe {
        (core::ptr::read_volatile(&(*ctx.ctx).data) as usize, core::ptr::read_volatile(&(*ctx.ctx).data_end) as usize)
    };
    // The caller's `outer.plain` says the frame holds the outer headers and more.
    let len = (end - p).saturating_sub(OUTER_LEN) as u32;
    parse_linear(p + OUTER_LEN, end, len, false, frame);
}

/// A counted drop at the output by table 254's `rule`.
#[inline(always)]
fn dropped_at_output<const T: bool>(p: &Packet<Maps<T>>, rule: u32) -> u32 {
    count_output_drop(p, rule);
    XDP_DROP
}
