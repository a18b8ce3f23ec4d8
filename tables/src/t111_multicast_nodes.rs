//! Table 111: a pod's multicast goes to every other node (head-end replication, VNI =
//! the source VNID), as OpenShift's single rewritten rule sends it, then to this node's
//! pods (table 120). The copies are made at the output (`Output::Multicast`), from
//! `MCAST_NODES`.

use crate::{t120_multicast_local, Env, Output, Packet};

crate::rules! {
    table 111;
    node REPLICATE = 101, priority 100, "" => "move:NXM_NX_REG0[]->NXM_NX_TUN_ID[0..31],output:vxlan0 (each other node),goto_table:120";
}

#[inline(always)]
pub fn table111<E: Env>(p: &mut Packet<E>) -> Output {
    p.count(REPLICATE);
    t120_multicast_local::table120(p, true)
}
