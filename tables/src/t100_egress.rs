//! Table 100: traffic leaving the cluster network. Pods may not reach the cluster store
//! (whatever its own protection: it holds every project's VNID), nor send VXLAN out (it
//! could be taken for overlay traffic); DNS to the node itself always passes.

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
    p.count(EXTERNAL);
    t101_egress_policy::table101(p, ip)
}

/// Whether `ip` is a TCP or UDP packet to an endpoint of the cluster store.
#[inline(always)]
pub(crate) fn to_store<E: Env>(p: &Packet<E>, ip: &Ipv4) -> bool {
    (ip.proto == IPPROTO_TCP || ip.proto == IPPROTO_UDP) && !ip.later_fragment && p.env.store_endpoint(ip.dst, ip.dport)
}
