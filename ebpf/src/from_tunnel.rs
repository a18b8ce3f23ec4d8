//! Entry for frames other nodes send: TC ingress of vxlan0, the collect_md VXLAN device
//! that has already taken the outer headers off (their source IP and the VNI are in the
//! skb's tunnel metadata). `from_underlay` takes most of them off itself and continues
//! with the same tables (`deliver`).

use aya_ebpf::{
    bindings::{bpf_tunnel_key, TC_ACT_SHOT},
    helpers::bpf_skb_get_tunnel_key,
    macros::classifier,
    programs::TcContext,
};
use oxsdn_common::{
    monitor::port,
    trace::{output_kind, CB_TUN_SRC, CB_VNI},
    NodeConfig,
};
use oxsdn_tables::{t0_classify, t254_output::TO_INGRESS_PORT, Env, Packet};

use crate::shared::{
    bandwidth::{pace, Pace},
    env::Maps,
    maps::CONFIG,
    multicast::replicate,
    output::{drop_at_output, judged, to_pod_peer, to_pod_veth, to_tun0, Decision},
    parse::parse,
    scratch,
    trace_mode::{self, test_input},
};

#[classifier]
#[inline(always)]
pub fn from_tunnel(ctx: TcContext) -> i32 {
    trace_mode::by_mode(ctx, run::<true>, run::<false>)
}

/// The program, once per mode (`trace_mode::by_mode`).
#[inline(never)]
fn run<const T: bool>(ctx: TcContext) -> i32 {
    let env = Maps::<T>;
    let Some(cfg) = CONFIG.get(0) else {
        env.count(t0_classify::UNCONFIGURED, ctx.len());
        return TC_ACT_SHOT;
    };
    let key = tunnel_key(&ctx);
    let (tun_src, vni) = if key != NO_TUNNEL_KEY {
        (key as u32, (key >> 32) as u32)
    } else if test_input() {
        // A test run's skb has no tunnel metadata: the caller put the key in cb[].
        (trace_mode::cb(&ctx, CB_TUN_SRC), trace_mode::cb(&ctx, CB_VNI))
    } else {
        env.count(t0_classify::TUNNEL_NO_KEY, ctx.len());
        return TC_ACT_SHOT;
    };
    deliver::<T>(ctx, cfg, tun_src, vni)
}

/// `tunnel_key`'s answer for a frame without tunnel metadata.
const NO_TUNNEL_KEY: u64 = u64::MAX;

/// The sending node's address (low 32 bits, as the maps hold addresses) and the VNI
/// (high 32 bits) of the frame's tunnel metadata, or `NO_TUNNEL_KEY`. A function of its
/// own, so the key's buffer is off the program's stack while the tables run.
#[inline(never)]
fn tunnel_key(ctx: &TcContext) -> u64 {
    // SAFETY: an all-zero bpf_tunnel_key is valid; the helper fills it.
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    // SAFETY: the key lives on the stack for the call.
    let got =
        unsafe { bpf_skb_get_tunnel_key(ctx.skb.skb, &mut key, core::mem::size_of::<bpf_tunnel_key>() as u32, 0) };
    if got != 0 {
        return NO_TUNNEL_KEY;
    }
    // SAFETY: an IPv4 tunnel fills remote_ipv4 (host byte order).
    let src = unsafe { key.__bindgen_anon_1.remote_ipv4 }.to_be();
    u64::from(src) | u64::from(key.tunnel_id) << 32
}

/// Table 0 of the tunnel port onwards, for a frame without its outer headers that
/// node `tun_src` sent with VNI `vni`.
#[inline(always)]
pub fn deliver<const T: bool>(mut ctx: TcContext, cfg: &NodeConfig, tun_src: u32, vni: u32) -> i32 {
    let env = Maps::<T>;
    let Some(frame) = scratch::frame() else {
        env.count(t0_classify::UNCONFIGURED, ctx.len());
        return TC_ACT_SHOT;
    };
    parse(&ctx, frame);
    let mut p = Packet::new(env, cfg, frame, port::TUNNEL, tun_src);
    let mut d = Decision::default();
    tables(&mut p, tun_src, vni, &mut d);
    if !judged(&mut p, &d) {
        return TC_ACT_SHOT;
    }
    let paced = match pace(&mut ctx, &p, &d, false) {
        Pace::Drop => return TC_ACT_SHOT,
        Pace::Now => false,
        Pace::Later => true,
    };
    output(&mut ctx, &p, &d, paced)
}

/// The tables, from table 0 of the tunnel port (see `Decision`).
#[inline(never)]
pub(crate) fn tables<const T: bool>(p: &mut Packet<Maps<T>>, tun_src: u32, vni: u32, d: &mut Decision) {
    *d = Decision::of(t0_classify::from_tunnel(p, tun_src, vni), p.cfg);
}

/// What the output port does with the packet the tables sent to `d`: a function of its
/// own, so its locals (and the encapsulation's) are not on the stack while the tables
/// run (the 512 bytes are for the deepest chain of calls).
#[inline(never)]
fn output<const T: bool>(ctx: &mut TcContext, p: &Packet<Maps<T>>, d: &Decision, paced: bool) -> i32 {
    match d.kind {
        // A paced packet waits in the fq qdisc of the pod's host veth.
        output_kind::POD if paced => to_pod_veth(ctx, p, d.ifindex),
        output_kind::POD => to_pod_peer(ctx, p, d.ifindex, d.ip),
        output_kind::TUN0 => to_tun0(ctx, p),
        // OpenFlow never sends a packet back out of its ingress port.
        output_kind::TUNNEL => drop_at_output(p, TO_INGRESS_PORT),
        // Local pods only (table 120 never sends a tunnel's multicast on).
        output_kind::MULTICAST => replicate(ctx, p, d, 0),
        _ => TC_ACT_SHOT,
    }
}
