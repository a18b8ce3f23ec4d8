//! Table 0: classification by ingress port. Pods' ports pass ARP and IPv4 to
//! anti-spoofing; tun0 passes IPv4 (not multicast) and the gateway's ARP into the
//! cluster, as global traffic; vxlan0 passes what is to or from the cluster network, with
//! the VNI as the source VNID, to table 10. VLAN-tagged frames pass nowhere: a pod's tag
//! would reach other pods, and the underlay as the outer tag (VLAN hopping).

use oxsdn_common::{conntrack, monitor, xdp_decap};

use crate::{
    frame::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, L3},
    is_multicast, t10_vxlan_source, t20_antispoof, t30_route, Env, Output, Packet,
};

crate::rules! {
    table 0;
    /// A tagged frame on any port (OVS would match `vlan_tci`; the kernel moves a
    /// sender's tag into the skb's metadata before TC runs, so the frame itself looks
    /// untagged).
    node VLAN = 52, priority 400, "vlan_tci=0x1000/0x1000" => "drop";
    node TUN0_IP_MCAST = 0, priority 250, "ip,in_port=tun0,nw_dst=224.0.0.0/4" => "drop";
    node TUN0_ARP = 1, priority 200, "arp,in_port=tun0,arp_spa={GW},arp_tpa={C}" => "goto_table:30";
    node TUN0_IP = 2, priority 200, "ip,in_port=tun0" => "goto_table:30";
    node TUN0_OTHER = 3, priority 150, "in_port=tun0" => "drop";
    node POD_ARP = 4, priority 100, "arp" => "goto_table:20";
    node POD_IP = 5, priority 100, "ip" => "goto_table:20";
    node OTHER = 6, priority 0, "" => "drop";
    node TUNNEL_ARP = 31, priority 200, "arp,in_port=vxlan0,arp_spa={C},arp_tpa={L}" => "move:NXM_NX_TUN_ID[0..31]->NXM_NX_REG0[],goto_table:10";
    node TUNNEL_IP_SRC = 32, priority 200, "ip,in_port=vxlan0,nw_src={C}" => "move:NXM_NX_TUN_ID[0..31]->NXM_NX_REG0[],goto_table:10";
    node TUNNEL_IP_DST = 33, priority 200, "ip,in_port=vxlan0,nw_dst={C}" => "move:NXM_NX_TUN_ID[0..31]->NXM_NX_REG0[],goto_table:10";
    node TUNNEL_OTHER = 34, priority 150, "in_port=vxlan0" => "drop";
    /// A frame on vxlan0's ingress that carries no tunnel metadata (no sender, no VNI).
    node TUNNEL_NO_KEY = 47, priority 300, "in_port=vxlan0,tun_src=0" => "drop";
    /// The node's configuration is missing (never, once an agent has started).
    node UNCONFIGURED = 51, priority 300, "config=none" => "drop";
    /// The underlay device's XDP hook (`prefilter`), before the kernel builds an skb:
    /// IPv4 from a source network on the operator's deny list (`PREFILTER_DENY`).
    node XDP_DENIED = 80, priority 500, "hook=xdp,in_port={UNDERLAY},ip,nw_src=deny_list" => "drop";
    /// The same hook: VXLAN to the node's port with outer headers that the host's IP or
    /// UDP layer or vxlan0 would refuse.
    node XDP_MALFORMED = 81, priority 500, "hook=xdp,in_port={UNDERLAY},udp,nw_dst={NODEIP},tp_dst={VXP},outer=invalid" => "drop";
    /// The same hook, with `--xdp-decap`: VXLAN from a known node that the XDP program
    /// takes off itself (`decap_at_xdp`), then the tunnel port's tables as at TC, and a
    /// redirect to the pod's veth.
    node XDP_DECAP = 83, priority 400, "hook=xdp,in_port={UNDERLAY},udp,nw_dst={NODEIP},tp_dst={VXP},inner=xdp_decap" => "strip_vxlan,move:NXM_NX_TUN_ID[0..31]->NXM_NX_REG0[],goto_table:10";
}

/// A frame on the underlay device as the XDP hook reads its outer headers (`oxsdn-ebpf`'s
/// `encap::outer_headers`, which `from_underlay` shares).
#[derive(Clone, Copy)]
pub enum Underlay {
    /// Not IPv4 (ARP, IPv6, ...).
    NotIpv4,
    /// IPv4 from `src` that is not VXLAN to the node's port, or cannot be told from the
    /// first fragment's or an options header's bytes: the host's IP layer decides.
    Ipv4 { src: u32 },
    /// VXLAN to the node's port from `src` that the host's IP or UDP layer or vxlan0
    /// refuses (a bad header checksum, lengths beyond the frame, reserved VXLAN bits).
    Malformed { src: u32 },
    /// VXLAN to the node's port from `src` with valid outer headers.
    Vxlan { src: u32 },
}

/// Everything the host injects is global: reg0 = 0.
const HOST_VNID: u32 = 0;

/// Table 0, pod ports: only ARP and IPv4 go on to anti-spoofing.
#[inline(always)]
pub fn from_pod<E: Env>(p: &mut Packet<E>, in_port: u32) -> Output {
    if p.frame.vlan {
        return p.drop_by(VLAN);
    }
    match p.frame.l3 {
        L3::Arp => p.count(POD_ARP),
        L3::Ipv4 => p.count(POD_IP),
        L3::Other => return p.drop_by(OTHER),
    }
    t20_antispoof::table20(p, in_port)
}

/// Table 0, port tun0: IPv4 except multicast, and the gateway's ARP into the cluster.
#[inline(always)]
pub fn from_tun0<E: Env>(p: &mut Packet<E>) -> Output {
    if p.frame.vlan {
        return p.drop_by(VLAN);
    }
    let (arp, ip) = (&p.frame.arp, &p.frame.ipv4);
    match p.frame.l3 {
        L3::Ipv4 if is_multicast(ip.dst) => return p.drop_by(TUN0_IP_MCAST),
        L3::Ipv4 => p.count(TUN0_IP),
        L3::Arp if arp.spa == p.cfg.gateway && p.in_cluster(arp.tpa) => p.count(TUN0_ARP),
        _ => return p.drop_by(TUN0_OTHER),
    }
    p.reg0 = HOST_VNID;
    p.owner = conntrack::HOST_OWNER;
    t30_route::table30(p, false)
}

/// Table 0, port vxlan0: ARP from a cluster address to this node's subnet, IPv4 from or
/// to a cluster address, sent by `tun_src` with VNI `vni`, which becomes reg0.
#[inline(always)]
pub fn from_tunnel<E: Env>(p: &mut Packet<E>, tun_src: u32, vni: u32) -> Output {
    if p.frame.vlan {
        return p.drop_by(VLAN);
    }
    let (a, ip) = (&p.frame.arp, &p.frame.ipv4);
    match p.frame.l3 {
        L3::Arp if p.in_cluster(a.spa) && p.in_local_subnet(a.tpa) => p.count(TUNNEL_ARP),
        L3::Ipv4 if p.in_cluster(ip.src) => p.count(TUNNEL_IP_SRC),
        L3::Ipv4 if p.in_cluster(ip.dst) => p.count(TUNNEL_IP_DST),
        _ => return p.drop_by(TUNNEL_OTHER),
    }
    p.reg0 = vni;
    t10_vxlan_source::table10(p, tun_src)
}

/// Table 0 at the underlay device's XDP hook (the prefilter), before the kernel builds an
/// skb: drops the deny list's sources, and VXLAN to the node's port that the pipeline
/// would drop later anyway (malformed, or from no known node: table 10). Whether the
/// frame goes on, untouched, to the host stack and `from_underlay`.
#[inline(always)]
pub fn prefilter<E: Env>(env: E, frame: Underlay, len: u32) -> bool {
    let src = match frame {
        Underlay::NotIpv4 => return true,
        Underlay::Ipv4 { src } | Underlay::Malformed { src } | Underlay::Vxlan { src } => src,
    };
    if env.prefilter_denied(src) {
        return prefilter_drop(env, XDP_DENIED, len);
    }
    match frame {
        Underlay::Malformed { .. } => prefilter_drop(env, XDP_MALFORMED, len),
        Underlay::Vxlan { src } => t10_vxlan_source::known_node_at_prefilter(env, src, len),
        Underlay::NotIpv4 | Underlay::Ipv4 { .. } => true,
    }
}

/// Counts the prefilter's drop rule `rule`, and the drop as the tunnel's (the underlay
/// device is the overlay's way in): `false`, the frame does not go on.
#[inline(always)]
pub fn prefilter_drop<E: Env>(env: E, rule: u32, len: u32) -> bool {
    env.count(rule, len);
    env.count_drop(monitor::drop_source(monitor::port::TUNNEL, 0));
    false
}

/// Table 0 at the XDP hook, for VXLAN from a known node that the prefilter passed, with
/// `p` its inner frame: whether the XDP program takes the outer headers off and runs
/// `from_tunnel` itself (counted), as `NodeConfig.xdp_decap` asks for the protocol. Only
/// what ends at a local pod's veth or in a drop there, untranslated: unfragmented IPv4
/// to the node's subnet but not its gateway, UDP or ICMP but errors (`NON_TCP`) or TCP
/// (`TCP`), and no service's reply (table 30's translation is written with the skb's
/// checksum helpers, which XDP has not). Everything else goes on to `from_underlay`.
#[inline(always)]
pub fn decap_at_xdp<E: Env>(p: &Packet<E>) -> bool {
    let ip = &p.frame.ipv4;
    let wanted = match ip.proto {
        IPPROTO_TCP => xdp_decap::TCP,
        IPPROTO_UDP => xdp_decap::NON_TCP,
        // An error's quoted packet is read with the skb's helper (TC).
        IPPROTO_ICMP if !ip.is_icmp_error() => xdp_decap::NON_TCP,
        _ => 0,
    };
    let takes = p.frame.l3 == L3::Ipv4
        && !p.frame.vlan
        && p.cfg.xdp_decap & wanted != 0
        && !ip.later_fragment
        && !ip.more_fragments
        && p.in_local_subnet(ip.dst)
        && ip.dst != p.cfg.gateway
        && !t30_route::is_service_reply(p, ip);
    if takes {
        p.count(XDP_DECAP);
    }
    takes
}
