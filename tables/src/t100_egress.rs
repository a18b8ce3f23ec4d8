//! Table 100: traffic leaving the cluster network. Pods may not send VXLAN out (it could
//! be taken for overlay traffic); DNS to the node itself always passes.

use crate::{
    frame::{Ipv4, IPPROTO_TCP, IPPROTO_UDP},
    t101_egress_policy, Env, Output, Packet,
};

crate::rules! {
    table 100;
    node VXLAN = 36, priority 300, "udp,tp_dst={VXP}" => "drop";
    node DNS_TCP = 37, priority 200, "tcp,nw_dst={NODEIP},tp_dst=53" => "output:tun0";
    node DNS_UDP = 38, priority 200, "udp,nw_dst={NODEIP},tp_dst=53" => "output:tun0";
    node EXTERNAL = 29, priority 0, "" => "goto_table:101";
}

const DNS_PORT: u16 = 53;

#[inline(always)]
pub fn table100<E: Env>(p: &mut Packet<E>, ip: &Ipv4) -> Output {
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
    t101_egress_policy::table101(p)
}
