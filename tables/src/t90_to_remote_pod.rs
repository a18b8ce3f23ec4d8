//! Table 90: IPv4 to a pod on another node, with the source VNID as VNI. No isolation
//! check here: the receiving node's table 80 decides (networkpolicy mode judges the
//! source's egress policy at the output first).

use crate::{Env, Output, Packet};

crate::rules! {
    table 90;
    remote_node IP = 2, priority 100, "ip,nw_dst={SUBNET}" => "move:NXM_NX_REG0[]->NXM_NX_TUN_ID[0..31],set_field:{NODE_IP}->tun_dst,output:vxlan0";
    node NO_NODE = 28, priority 0, "" => "drop";
}

#[inline(always)]
pub fn table90<E: Env>(p: &mut Packet<E>, dst: u32) -> Output {
    to_node_of(p, dst, IP, NO_NODE)
}

/// Over the tunnel to the node whose subnet holds `addr`, with reg0 as VNI, counting
/// that node's `rule`; `no_node` when no node has it (tables 50 and 90).
#[inline(always)]
pub(crate) fn to_node_of<E: Env>(p: &mut Packet<E>, addr: u32, rule: u32, no_node: u32) -> Output {
    match p.env.remote_subnet(addr) {
        Some(node) => {
            p.env.count_remote_node(node.slot, rule, p.frame.len);
            Output::Tunnel { node_ip: node.node_ip, vni: p.reg0 }
        }
        None => p.drop_by(no_node),
    }
}
