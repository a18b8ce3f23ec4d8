//! Table 100: traffic leaving the cluster network. Pods may not reach the cluster store
//! (whatever its own protection: it holds every project's VNID), nor send VXLAN out (it
//! could be taken for overlay traffic); DNS to the node itself always passes. A project
//! with egress IPs leaves with one of them (`oxsdn_common::egress_ip`), from the node
//! that holds it.

use oxsdn_common::{egress_ip, monitor};

use crate::{
    frame::{Ipv4, IPPROTO_TCP, IPPROTO_UDP},
    t101_egress_policy, Env, Output, Packet,
};

crate::rules! {
    table 100;
    node STORE = 53, priority 350, "ip,nw_dst:tp_dst=cluster_store" => "drop";
    node VXLAN = 36, priority 300, "udp,tp_dst={VXP}" => "drop";
    node DNS_TCP = 37, priority 200, "tcp,nw_dst={NODEIP},tp_dst=53" => "output:tun0";
    node DNS_UDP = 38, priority 200, "udp,nw_dst={NODEIP},tp_dst=53" => "output:tun0";
    node EXTERNAL = 29, priority 0, "" => "goto_table:101";
    /// The project's egress IP the flow takes is this node's: its mark, for the host's SNAT.
    node EGRESS_IP_LOCAL = 93, priority 100, "ip,egress_ip=held_here" => "set_field:egress_ip_mark->pkt_mark,goto_table:101";
    /// It is another node's: there over VXLAN, VNI = the VNID.
    node EGRESS_IP_REMOTE = 94, priority 100, "ip,egress_ip=held_elsewhere" => "move:NXM_NX_REG0[]->NXM_NX_TUN_ID[0..31],set_field:egress_ip_holder->tun_dst,output:vxlan0";
    /// No live node holds any of the project's egress IPs: never out with the node's address.
    node EGRESS_IP_UNHELD = 95, priority 100, "ip,egress_ip=unheld" => "drop";
    /// Another node sent the project's traffic here for an egress IP this node holds.
    node EGRESS_IP_FOR_PEER = 96, priority 110, "ip,in_port=vxlan0,egress_ip=held_here" => "set_field:egress_ip_mark->pkt_mark,goto_table:101";
    /// ... for an egress IP this node does not hold (placements briefly disagree).
    node EGRESS_IP_NOT_HERE = 97, priority 110, "ip,in_port=vxlan0,egress_ip=held_elsewhere" => "drop";
}

const DNS_PORT: u16 = 53;

#[inline(always)]
pub fn table100<E: Env>(p: &mut Packet<E>, ip: &Ipv4) -> Output {
    if to_store(p, ip) {
        return p.drop_by(STORE);
    }
    if ip.proto == IPPROTO_UDP && ip.dport == p.cfg.vxlan_port {
        return p.drop_by(VXLAN);
    }
    if ip.dst == p.cfg.node_ip && ip.dport == DNS_PORT {
        if ip.proto == IPPROTO_TCP {
            p.count(DNS_TCP);
            return Output::Tun0;
        }
        if ip.proto == IPPROTO_UDP {
            p.count(DNS_UDP);
            return Output::Tun0;
        }
    }
    if p.reg0 != 0 {
        let choice = egress_ip_choice(p.env, p.reg0, ip, p.port == monitor::port::TUNNEL, p.cfg.node_ip);
        match choice.rule {
            NO_EGRESS_IP => {}
            EGRESS_IP_REMOTE => {
                p.count(EGRESS_IP_REMOTE);
                return Output::Tunnel { node_ip: choice.value, vni: p.reg0 };
            }
            EGRESS_IP_LOCAL | EGRESS_IP_FOR_PEER => {
                p.count(choice.rule);
                p.egress_mark = choice.value;
                return t101_egress_policy::table101(p, ip);
            }
            rule => return p.drop_by(rule),
        }
    }
    p.count(EXTERNAL);
    t101_egress_policy::table101(p, ip)
}

const NO_EGRESS_IP: u32 = u32::MAX;

/// Which egress IP rule applies, and its mark (local) or holder (remote).
#[derive(Clone, Copy)]
struct EgressIpChoice {
    rule: u32,
    value: u32,
}

/// The egress IP of VNID `vnid` that the flow of `ip` takes. Kept out of line, with
/// plain values in and out: the table functions are on the deepest call chain.
/// From the tunnel, the sender chose this node: the same hash over the same candidates
/// names the address; if placements disagree and it is not ours, one of ours, else
/// nothing (never back to another node, which could loop).
#[inline(never)]
fn egress_ip_choice<E: Env>(env: E, vnid: u32, ip: &Ipv4, from_tunnel: bool, node_ip: u32) -> EgressIpChoice {
    let Some(entry) = env.egress_ips(vnid) else {
        return EgressIpChoice { rule: NO_EGRESS_IP, value: 0 };
    };
    let count = entry.count;
    if count == 0 || count > egress_ip::MAX_EGRESS_IPS {
        let rule = if from_tunnel { EGRESS_IP_NOT_HERE } else { EGRESS_IP_UNHELD };
        return EgressIpChoice { rule, value: 0 };
    }
    // The fragments of a datagram take one egress IP: only the first carries ports.
    let fragment = ip.later_fragment || ip.more_fragments;
    let ports = if fragment { 0 } else { (u32::from(ip.sport) << 16) | u32::from(ip.dport) };
    let i = egress_ip::pick(ip.src, ip.dst, ports, ip.proto, count) as usize;
    let (holder, mark) = match (entry.holders.get(i), entry.marks.get(i)) {
        (Some(h), Some(m)) => (*h, *m),
        _ => (0, 0),
    };
    if holder == node_ip && mark != 0 {
        let rule = if from_tunnel { EGRESS_IP_FOR_PEER } else { EGRESS_IP_LOCAL };
        return EgressIpChoice { rule, value: mark };
    }
    if !from_tunnel {
        return EgressIpChoice { rule: EGRESS_IP_REMOTE, value: holder };
    }
    for mark in entry.marks {
        if mark != 0 {
            return EgressIpChoice { rule: EGRESS_IP_FOR_PEER, value: mark };
        }
    }
    EgressIpChoice { rule: EGRESS_IP_NOT_HERE, value: 0 }
}

/// Whether `ip` is a TCP or UDP packet to an endpoint of the cluster store.
#[inline(always)]
pub(crate) fn to_store<E: Env>(p: &Packet<E>, ip: &Ipv4) -> bool {
    (ip.proto == IPPROTO_TCP || ip.proto == IPPROTO_UDP) && !ip.later_fragment && p.env.store_endpoint(ip.dst, ip.dport)
}
