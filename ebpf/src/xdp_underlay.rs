//! Entry for everything the node's underlay device receives, at its XDP hook: before
//! the kernel builds an skb, the prefilter (table 0's and 10's rules at this hook,
//! `t0_classify::prefilter`) drops what the pipeline would drop later anyway, VXLAN to
//! the node's port that is malformed or from no known node, and IPv4 from the
//! operator's denied source networks. Everything else passes untouched to the host
//! stack, where `from_underlay` (TC) takes the overlay's frames on.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    macros::xdp,
    programs::XdpContext,
};
use oxsdn_tables::t0_classify;

use crate::shared::{encap::outer_headers, env::Maps, maps::CONFIG, trace_mode};

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
    if t0_classify::prefilter(env, outer.kind, (end - p) as u32) {
        return XDP_PASS;
    }
    env.dropped_at_prefilter();
    XDP_DROP
}
