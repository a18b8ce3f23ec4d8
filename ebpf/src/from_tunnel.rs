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
use oxsdn_tables::{t0_classify, t254_output::TO_INGRESS_PORT, Env, Output, Packet};

use crate::shared::{
    env::Maps,
    maps::CONFIG,
    output::{drop_at_output, to_pod_peer, to_tun0},
    parse::parse,
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
    // SAFETY: an all-zero bpf_tunnel_key is valid; the helper fills it.
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    // SAFETY: the key lives on the stack for the call.
    let got =
        unsafe { bpf_skb_get_tunnel_key(ctx.skb.skb, &mut key, core::mem::size_of::<bpf_tunnel_key>() as u32, 0) };
    let (tun_src, vni) = if got == 0 {
        // SAFETY: an IPv4 tunnel fills remote_ipv4 (host byte order).
        (unsafe { key.__bindgen_anon_1.remote_ipv4 }.to_be(), key.tunnel_id)
    } else if test_input() {
        // A test run's skb has no tunnel metadata: the caller put the key in cb[].
        (trace_mode::cb(&ctx, CB_TUN_SRC), trace_mode::cb(&ctx, CB_VNI))
    } else {
        env.count(t0_classify::TUNNEL_NO_KEY, ctx.len());
        return TC_ACT_SHOT;
    };
    deliver::<T>(ctx, cfg, tun_src, vni)
}

/// Table 0 of the tunnel port onwards, for a frame without its outer headers that
/// node `tun_src` sent with VNI `vni`.
#[inline(always)]
pub fn deliver<const T: bool>(mut ctx: TcContext, cfg: &NodeConfig, tun_src: u32, vni: u32) -> i32 {
    let env = Maps::<T>;
    let frame = parse(&ctx);
    let mut p = Packet::new(env, cfg, &frame).arriving(port::TUNNEL, tun_src);
    match t0_classify::from_tunnel(&mut p, tun_src, vni) {
        Output::Pod { ifindex, ip } => {
            env.decision(output_kind::POD, ifindex, ip, 0, &p);
            to_pod_peer(&mut ctx, &p, ifindex, ip)
        }
        Output::Tun0 => {
            env.decision(output_kind::TUN0, cfg.tun0_ifindex, 0, 0, &p);
            to_tun0(&mut ctx, &p)
        }
        Output::Drop => {
            env.dropped(&p.xlate);
            TC_ACT_SHOT
        }
        // OpenFlow never sends a packet back out of its ingress port.
        Output::Tunnel { node_ip, vni } => {
            env.decision(output_kind::TUNNEL, cfg.vxlan_ifindex, node_ip, vni, &p);
            drop_at_output(&p, TO_INGRESS_PORT)
        }
    }
}
