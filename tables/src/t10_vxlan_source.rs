//! Table 10: VXLAN is accepted only from the underlay IP of a known node; the VNI it
//! carries (already in reg0) is trusted.

use crate::{t30_route, Env, Output, Packet};

crate::rules! {
    table 10;
    remote_node FROM_NODE = 0, priority 100, "tun_src={NODE_IP}" => "goto_table:30";
    node UNKNOWN_NODE = 35, priority 0, "" => "drop";
}

#[inline(always)]
pub fn table10<E: Env>(p: &mut Packet<E>, tun_src: u32) -> Output {
    match p.env.remote_node_ip(tun_src) {
        Some(node) => {
            p.env.count_remote_node(node.slot, FROM_NODE, p.frame.len);
            // Replies of service endpoints on other nodes arrive here.
            t30_route::table30(p, true)
        }
        None => p.drop_by(UNKNOWN_NODE),
    }
}
