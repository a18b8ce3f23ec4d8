//! Table 30: routing on the destination. Its priority-400 rule is the reply direction of
//! the service translation: a packet of an endpoint answering a client of this node gets
//! the service's address back and goes to the client (table 80 was passed when the
//! connection was made).

use oxsdn_common::{monitor::port, trace::REG0_SET, FlowKey};

use crate::{
    fragments,
    frame::{Arp, Ipv4, L3},
    is_multicast, t100_egress, t110_multicast, t120_multicast_local, t40_arp_to_local_pod, t50_arp_to_remote_pod,
    t60_service, t61_load_balance, t70_to_local_pod, t90_to_remote_pod, Env, Output, Packet, Translation,
};

crate::rules! {
    table 30;
    node SERVICE_REPLY = 41, priority 400, "ip,ct_state=+rpl" => "ct(nat),goto_table:70";
    /// The cluster store on this node, through its gateway address.
    node GW_STORE = 54, priority 310, "ip,nw_dst={GW},tp_dst=cluster_store" => "drop";
    node ARP_GW = 9, priority 300, "arp,arp_tpa={GW}" => "output:tun0";
    node IP_GW = 10, priority 300, "ip,nw_dst={GW}" => "output:tun0";
    node ARP_LOCAL = 11, priority 200, "arp,arp_tpa={L}" => "goto_table:40";
    node IP_LOCAL = 12, priority 200, "ip,nw_dst={L}" => "goto_table:70";
    node ARP_CLUSTER = 13, priority 100, "arp,arp_tpa={C}" => "goto_table:50";
    node IP_SERVICE = 14, priority 100, "ip,nw_dst={S}" => "goto_table:60";
    node IP_CLUSTER = 15, priority 100, "ip,nw_dst={C}" => "goto_table:90";
    /// Multicast from another node: to this node's pods of the VNID only.
    node IP_MCAST_TUNNEL = 104, priority 50, "ip,in_port=vxlan0,nw_dst=224.0.0.0/4" => "goto_table:120";
    node IP_MCAST = 16, priority 25, "ip,nw_dst=224.0.0.0/4" => "goto_table:110";
    node IP_EXTERNAL = 17, priority 0, "ip" => "goto_table:100";
    node ARP_OTHER = 18, priority 0, "arp" => "drop";
}

/// `maybe_reply`: the sender may be a service endpoint answering a client of this node
/// (a local endpoint, or anything from the tunnel), so the reply translation is looked
/// up first.
#[inline(always)]
pub fn table30<E: Env>(p: &mut Packet<E>, maybe_reply: bool) -> Output {
    p.env.register(REG0_SET, p.reg0);
    match p.frame.l3 {
        L3::Arp => {
            let frame = p.frame;
            route_arp(p, &frame.arp)
        }
        L3::Ipv4 => {
            let frame = p.frame;
            let ip = &frame.ipv4;
            if maybe_reply {
                if let Some(out) = service_reply(p, ip) {
                    return out;
                }
            }
            route_ip(p, ip)
        }
        // Table 0 passes only ARP and IPv4 on.
        L3::Other => Output::Drop,
    }
}

#[inline(always)]
fn route_arp<E: Env>(p: &mut Packet<E>, arp: &Arp) -> Output {
    if arp.tpa == p.cfg.gateway {
        p.count(ARP_GW);
        Output::Tun0
    } else if p.in_local_subnet(arp.tpa) {
        p.count(ARP_LOCAL);
        t40_arp_to_local_pod::table40(p, arp.tpa)
    } else if p.in_cluster(arp.tpa) {
        p.count(ARP_CLUSTER);
        t50_arp_to_remote_pod::table50(p, arp.tpa)
    } else {
        p.drop_by(ARP_OTHER)
    }
}

#[inline(always)]
fn route_ip<E: Env>(p: &mut Packet<E>, ip: &Ipv4) -> Output {
    let cfg = p.cfg;
    if ip.dst == cfg.gateway {
        if t100_egress::to_store(p, ip) {
            return p.drop_by(GW_STORE);
        }
        p.count(IP_GW);
        Output::Tun0
    } else if p.in_local_subnet(ip.dst) {
        p.count(IP_LOCAL);
        t70_to_local_pod::table70(p, ip)
    } else if oxsdn_common::addr::in_net(ip.dst, cfg.service_net, cfg.service_mask) {
        p.count(IP_SERVICE);
        t60_service::table60(p, ip)
    } else if p.in_cluster(ip.dst) {
        p.count(IP_CLUSTER);
        t90_to_remote_pod::table90(p, ip.dst)
    } else if is_multicast(ip.dst) && p.port == port::TUNNEL {
        p.count(IP_MCAST_TUNNEL);
        t120_multicast_local::table120(p, false)
    } else if is_multicast(ip.dst) {
        p.count(IP_MCAST);
        t110_multicast::table110(p)
    } else {
        p.count(IP_EXTERNAL);
        t100_egress::table100(p, ip)
    }
}

/// The priority-400 rule: a tracked connection's reply, translated back.
#[inline(always)]
fn service_reply<E: Env>(p: &mut Packet<E>, ip: &Ipv4) -> Option<Output> {
    let (sport, dport) = fragments::ports(p, ip)?;
    let key = reply_key(ip, sport, dport);
    let reply = p.env.reply(&key)?;
    p.env.refresh_reply(&key, ip.closes());
    p.count(SERVICE_REPLY);
    p.service_reply = true;
    p.xlate = Translation {
        active: 1,
        src: reply.service_ip,
        sport: reply.service_port,
        dst: reply.client_ip,
        dport: reply.client_port,
    };
    Some(t61_load_balance::deliver_translated(p, reply.client_ip, true))
}

/// The connection a reply of `ip` (with ports `sport`, `dport`) is tracked under.
#[inline(always)]
fn reply_key(ip: &Ipv4, sport: u16, dport: u16) -> FlowKey {
    FlowKey { src: ip.src, dst: ip.dst, sport, dport, proto: ip.proto, _pad: [0; 3] }
}

/// Whether the priority-400 rule would translate `ip`, unfragmented, back (without
/// counting or refreshing anything).
#[inline(always)]
pub fn is_service_reply<E: Env>(p: &Packet<E>, ip: &Ipv4) -> bool {
    p.env.reply(&reply_key(ip, ip.sport, ip.dport)).is_some()
}
