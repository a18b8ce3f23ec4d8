//! Table 110: multicast from pods passes when every project sharing its VNID enabled
//! multicast (the NetNamespace annotation `netnamespace.network.openshift.io/
//! multicast-enabled: "true"`), which the agent says by the VNID's `MCAST_GROUPS` entry.
//! Not in subnet mode (OpenShift's ovs-subnet installs no table 110 rule either).

use oxsdn_common::mode;

use crate::{t111_multicast_nodes, Env, Output, Packet};

crate::rules! {
    table 110;
    node NOT_ENABLED = 30, priority 0, "" => "drop";
    node ENABLED = 100, priority 100, "reg0=multicast_enabled" => "goto_table:111";
}

#[inline(always)]
pub fn table110<E: Env>(p: &mut Packet<E>) -> Output {
    if !enabled(p) {
        return p.drop_by(NOT_ENABLED);
    }
    p.count(ENABLED);
    t111_multicast_nodes::table111(p)
}

/// Whether multicast of the packet's source VNID is enabled on this node.
#[inline(always)]
pub fn enabled<E: Env>(p: &Packet<E>) -> bool {
    p.cfg.mode != mode::SUBNET && p.env.multicast_group(p.reg0)
}
