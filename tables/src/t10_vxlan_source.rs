//! Table 10: VXLAN is accepted only from the underlay IP of a known node; the VNI it
//! carries (already in reg0) is trusted.

use crate::{t0_classify, t30_route, Env, Output, Packet};

crate::rules! {
    table 10;
    remote_node FROM_NODE = 0, priority 100, "tun_src={NODE_IP}" => "goto_table:30";
    node UNKNOWN_NODE = 35, priority 0, "" => "drop";
    /// The same drop at the underlay device's XDP hook (`t0_classify::prefilter`), for
    /// VXLAN to the node's port from an address that is no known node.
    node XDP_UNKNOWN_NODE = 82, priority 0, "hook=xdp,in_port={UNDERLAY},udp,nw_dst={NODEIP},tp_dst={VXP}" => "drop";
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

/// Table 10 at the underlay device's XDP hook: whether VXLAN from `tun_src` may go on (a
/// known node's); the node's own rule counts it later, in the tunnel port's pipeline.
#[inline(always)]
pub fn known_node_at_prefilter<E: Env>(env: E, tun_src: u32, len: u32) -> bool {
    if env.remote_node_ip(tun_src).is_some() {
        return true;
    }
    t0_classify::prefilter_drop(env, XDP_UNKNOWN_NODE, len)
}
