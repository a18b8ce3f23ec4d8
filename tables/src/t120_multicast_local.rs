//! Table 120: multicast to this node's pods of the source VNID (but the sender: OpenFlow
//! never outputs to the ingress port), from a local pod (table 111) or from another
//! node (table 30's tunnel rule). Other projects' pods never get it; no IGMP snooping
//! (every pod of the VNID gets every group, as in OpenShift; the pod's kernel keeps
//! what its sockets joined).

use crate::{t110_multicast, Env, Output, Packet};

crate::rules! {
    table 120;
    node DELIVER = 102, priority 100, "reg0=multicast_enabled" => "output:local pods of reg0";
    /// From another node: multicast is not enabled for the VNID here, or it has no pods.
    node NO_MEMBERS = 103, priority 0, "" => "drop";
}

/// `to_nodes`: the packet comes from a local pod and also goes to the other nodes.
#[inline(always)]
pub fn table120<E: Env>(p: &mut Packet<E>, to_nodes: bool) -> Output {
    if !to_nodes && !t110_multicast::enabled(p) {
        return p.drop_by(NO_MEMBERS);
    }
    p.count(DELIVER);
    Output::Multicast { vnid: p.reg0, to_nodes }
}
