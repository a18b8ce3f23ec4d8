//! Turning the tables' `Output` into what the kernel does with the skb. The entry
//! programs differ only in what their attach point allows (see each program). Whatever
//! the kernel refuses here is dropped and counted (table 254).

use aya_ebpf::{
    bindings::{
        bpf_tunnel_key, BPF_F_DONT_FRAGMENT, BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, BPF_F_ZERO_CSUM_TX,
        TC_ACT_REDIRECT, TC_ACT_SHOT,
    },
    helpers::{bpf_redirect, bpf_redirect_peer, bpf_skb_set_tunnel_key},
    programs::TcContext,
};
use oxsdn_common::{trace::output_kind, NodeConfig};
use oxsdn_tables::{
    frame::{Ipv4, IPPROTO_TCP, IPPROTO_UDP, L3},
    t254_output::{NOT_SENT, TRANSLATION_FAILED},
    t80_isolation, Output, Packet, Translation,
};

use crate::shared::{
    csum::{csum_add, csum_change, csum_fold},
    encap::{encapsulate, NOT_ENCAPSULATED, TUNNEL_TTL},
    env::Maps,
    maps::EGRESS_IPS,
};

const BPF_F_INGRESS: u64 = 1;
const PACKET_HOST: u32 = 0;
const IP_DST_OFF: usize = 14 + 16;
const IP_CSUM_OFF: usize = 14 + 10;

type P<'a, const T: bool> = Packet<'a, Maps<T>>;

/// Where the tables sent a packet, as plain values (`oxsdn_common::trace::output_kind`
/// and its fields). The entry programs run the tables in a function of their own (a
/// BPF-to-BPF call) and act on this: the tables' locals then leave BPF's stack before
/// the policy and the output functions put theirs there (the 512 bytes are for the
/// whole chain of calls). An `Output` carried across the call would be copied with
/// undefined payload bytes, which the verifier refuses.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Decision {
    pub kind: u32,
    /// The output port: `POD`: the pod's host veth; `TUN0`: tun0; `TUNNEL`: vxlan0;
    /// `MULTICAST`: vxlan0 if copies go to the other nodes too, else 0.
    pub ifindex: u32,
    /// `POD`: its address; `TUNNEL`: the node's underlay address.
    pub ip: u32,
    /// `TUNNEL`: the VNI; `MULTICAST`: the VNID.
    pub vni: u32,
}

impl Decision {
    #[inline(always)]
    pub fn of(out: Output, cfg: &NodeConfig) -> Decision {
        match out {
            Output::Drop => Decision { kind: output_kind::DROP, ..Decision::default() },
            Output::Tun0 => Decision { kind: output_kind::TUN0, ifindex: cfg.tun0_ifindex, ..Decision::default() },
            Output::Pod { ifindex, ip } => Decision { kind: output_kind::POD, ifindex, ip, vni: 0 },
            Output::Tunnel { node_ip, vni } => {
                Decision { kind: output_kind::TUNNEL, ifindex: cfg.vxlan_ifindex, ip: node_ip, vni }
            }
            Output::Multicast { vnid, to_nodes } => Decision {
                kind: output_kind::MULTICAST,
                ifindex: if to_nodes { cfg.vxlan_ifindex } else { 0 },
                ip: 0,
                vni: vnid,
            },
        }
    }
}

/// Whether the packet the tables decided `d` for goes on to the output: not if they
/// dropped it, nor if table 80's policy refuses it (networkpolicy mode judges here,
/// once per program, after any translation; a refusal is counted by table 80). Either
/// way the verdict is recorded (trace mode) or reported (the monitor).
#[inline(always)]
pub fn judged<const T: bool>(p: &mut P<T>, d: &Decision) -> bool {
    let dst_slot = match d.kind {
        output_kind::DROP => {
            p.env.dropped(p);
            return false;
        }
        output_kind::POD => p.slot(d.ip),
        // Tables 110 to 120 never visit table 80 (as in OpenShift): no policy applies.
        output_kind::MULTICAST => {
            p.env.decision(d, p);
            return true;
        }
        _ => t80_isolation::NOT_LOCAL,
    };
    if !t80_isolation::at_output(p, dst_slot) {
        p.env.dropped(p);
        return false;
    }
    p.env.decision(d, p);
    true
}

/// Counts a drop at the output port (`rule` of table 254).
#[inline(always)]
pub fn drop_at_output<const T: bool>(p: &P<T>, rule: u32) -> i32 {
    count_output_drop(p, rule);
    TC_ACT_SHOT
}

/// Counts a drop at the output port by `rule` of table 254 and tells the monitor.
#[inline(always)]
pub fn count_output_drop<const T: bool>(p: &P<T>, rule: u32) {
    p.count(rule);
    p.env.dropped_at_output(p, rule);
}

/// A redirect helper's verdict; a refusal is a counted drop.
#[inline(always)]
fn sent<const T: bool>(p: &P<T>, verdict: i64) -> i32 {
    if verdict as i32 == TC_ACT_REDIRECT {
        TC_ACT_REDIRECT
    } else {
        drop_at_output(p, NOT_SENT)
    }
}

/// Into the node's host stack, as if received on tun0 (a service's reply to a host
/// client is translated first; its frame is already addressed to tun0).
#[inline(always)]
pub fn to_tun0<const T: bool>(ctx: &mut TcContext, p: &P<T>) -> i32 {
    if !apply(ctx, p, false) {
        return drop_at_output(p, TRANSLATION_FAILED);
    }
    // The host's SNAT rule of the egress IP matches the mark (redirects within the
    // namespace keep it).
    if p.egress_mark != 0 && !egress_ip_to_host(ctx, p) {
        return drop_at_output(p, NOT_SENT);
    }
    // SAFETY: plain helper call.
    sent(p, unsafe { bpf_redirect(p.cfg.tun0_ifindex, BPF_F_INGRESS) })
}

/// Marks a packet leaving with an egress IP of this node, addressed to tun0.
#[inline(never)]
fn egress_ip_to_host<const T: bool>(ctx: &mut TcContext, p: &P<T>) -> bool {
    // SAFETY: read-only access to a map value, which only userspace changes.
    let Some(entry) = (unsafe { EGRESS_IPS.get(&p.reg0) }) else { return false };
    let mac = entry.tun0_mac;
    ctx.set_mark(p.egress_mark);
    ctx.store(0, &[mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]], 0).is_ok()
}

/// Straight into a local pod's `eth0` (from TC ingress only). The frame skips the
/// receiving veth's Ethernet processing, which would mark frames addressed to the
/// pod's own MAC as PACKET_HOST; do it here (the veth it came in on, whose MAC it is
/// not, classified it PACKET_OTHERHOST).
#[inline(always)]
pub fn to_pod_peer<const T: bool>(ctx: &mut TcContext, p: &P<T>, ifindex: u32, ip: u32) -> i32 {
    if !apply(ctx, p, true) {
        return drop_at_output(p, TRANSLATION_FAILED);
    }
    if p.xlate.active != 0 || p.frame.is_for_pod(ip) {
        let _ = ctx.change_type(PACKET_HOST);
    }
    // SAFETY: plain helper call.
    sent(p, unsafe { bpf_redirect_peer(ifindex, 0) })
}

/// Out of a local pod's host veth, towards the pod (works from any TC hook).
#[inline(always)]
pub fn to_pod_veth<const T: bool>(ctx: &mut TcContext, p: &P<T>, ifindex: u32) -> i32 {
    if !apply(ctx, p, true) {
        return drop_at_output(p, TRANSLATION_FAILED);
    }
    // SAFETY: plain helper call.
    sent(p, unsafe { bpf_redirect(ifindex, 0) })
}

/// VXLAN to another node, as OVS sends it by default: zero UDP checksum, don't-fragment
/// set. The program puts the outer headers on itself and hands the frame to the
/// underlay device's neighbour output, skipping vxlan0's transmit path (a route lookup,
/// netfilter's OUTPUT and POSTROUTING, the UDP tunnel socket); frames it cannot
/// encapsulate so (ARP, a frame too big for the underlay, an unknown underlay) take
/// vxlan0 with a tunnel key, which is the same wire format.
#[inline(always)]
pub fn to_tunnel<const T: bool>(ctx: &mut TcContext, p: &P<T>, node_ip: u32, vni: u32) -> i32 {
    if !apply(ctx, p, true) {
        return drop_at_output(p, TRANSLATION_FAILED);
    }
    // A trace shows the decision (port vxlan0), not the outer headers.
    if !T {
        let verdict = encapsulate(ctx, p.cfg, node_ip, vni);
        if verdict != NOT_ENCAPSULATED {
            return sent(p, verdict as i64);
        }
    }
    // SAFETY: an all-zero bpf_tunnel_key is valid.
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    key.tunnel_id = vni;
    key.__bindgen_anon_1.remote_ipv4 = u32::from_be(node_ip);
    key.tunnel_ttl = TUNNEL_TTL;
    let flags = (BPF_F_ZERO_CSUM_TX | BPF_F_DONT_FRAGMENT) as u64;
    // SAFETY: the key lives on the stack for the call.
    let set =
        unsafe { bpf_skb_set_tunnel_key(ctx.skb.skb, &mut key, core::mem::size_of::<bpf_tunnel_key>() as u32, flags) };
    if set != 0 {
        return drop_at_output(p, NOT_SENT);
    }
    // SAFETY: plain helper call.
    sent(p, unsafe { bpf_redirect(p.cfg.vxlan_ifindex, 0) })
}

/// Writes a service translation into the packet: addresses and ports with their
/// checksums (the L4 checksum covers the addresses through the pseudo-header; later
/// fragments have neither ports nor L4 checksum), and, when it goes to a pod, that
/// pod's MAC. Helper calls are most of what a translation costs, so there are few: the
/// L4 checksum takes the addresses' change and the ports' change as one difference each
/// (the kernel must apply them, as only it knows the skb's checksum state), and the IP
/// header's checksum, computed here, is stored with the addresses.
#[inline(always)]
fn apply<const T: bool>(ctx: &mut TcContext, p: &P<T>, to_pod: bool) -> bool {
    if p.frame.l3 != L3::Ipv4 {
        return true;
    }
    let ip = &p.frame.ipv4;
    let rewrite = &p.xlate;
    if rewrite.active == 0 {
        return true;
    }
    let l4 = ip.l4_offset as usize;
    // Size 0 in the flags: the helper is given a checksum difference.
    let l4_csum = match (ip.later_fragment, ip.proto) {
        (false, IPPROTO_TCP) => Some((l4 + 16, 0)),
        // A zero UDP checksum means none: it must stay zero.
        (false, IPPROTO_UDP) => Some((l4 + 6, BPF_F_MARK_MANGLED_0 as u64)),
        _ => None,
    };
    let o = rewrite.dst.to_ne_bytes();
    rewrite_addrs(ctx, ip, rewrite, l4_csum)
        && (ip.later_fragment || rewrite_ports(ctx, ip, rewrite, l4_csum))
        && (!to_pod || ctx.store(0, &[0x0a, 0x58, o[0], o[1], o[2], o[3]], 0).is_ok())
}

/// The IP header from its checksum to the destination address.
#[repr(C, packed)]
struct AddrsWithChecksum {
    csum: u16,
    src: u32,
    dst: u32,
}

#[inline(always)]
fn rewrite_addrs(ctx: &mut TcContext, ip: &Ipv4, rw: &Translation, l4_csum: Option<(usize, u64)>) -> bool {
    if ip.src == rw.src && ip.dst == rw.dst {
        return true;
    }
    let diff = csum_add(csum_change(ip.src, rw.src), csum_change(ip.dst, rw.dst));
    if let Some((csum_off, flags)) = l4_csum {
        if ctx.l4_csum_replace(csum_off, 0, diff as u64, flags | BPF_F_PSEUDO_HDR as u64).is_err() {
            return false;
        }
    }
    // Parsing an IPv4 packet made its header linear.
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + IP_DST_OFF + 4 > end {
        return false;
    }
    // SAFETY: bounds checked above.
    let old_csum = unsafe { core::ptr::read_unaligned((start + IP_CSUM_OFF) as *const u16) };
    // As the kernel's csum_replace_by_diff.
    let csum = csum_fold(csum_add(diff, !u32::from(old_csum)));
    ctx.store(IP_CSUM_OFF, &AddrsWithChecksum { csum, src: rw.src, dst: rw.dst }, 0).is_ok()
}

/// Source and destination port as on the wire.
#[repr(C)]
struct Ports {
    sport: u16,
    dport: u16,
}

#[inline(always)]
fn rewrite_ports(ctx: &mut TcContext, ip: &Ipv4, rw: &Translation, l4_csum: Option<(usize, u64)>) -> bool {
    if ip.sport == rw.sport && ip.dport == rw.dport {
        return true;
    }
    let new = Ports { sport: rw.sport.to_be(), dport: rw.dport.to_be() };
    let diff = csum_add(
        csum_change(u32::from(ip.sport.to_be()), u32::from(new.sport)),
        csum_change(u32::from(ip.dport.to_be()), u32::from(new.dport)),
    );
    if let Some((csum_off, flags)) = l4_csum {
        if ctx.l4_csum_replace(csum_off, 0, diff as u64, flags).is_err() {
            return false;
        }
    }
    ctx.store(ip.l4_offset as usize, &new, 0).is_ok()
}
