//! Table 21: the hook after the source is identified. OpenShift's networkpolicy plugin
//! commits to conntrack here; in multitenant mode it continues to routing.

use crate::{t30_route, Env, Output, Packet};

crate::rules! {
    table 21;
    node CONTINUE = 8, priority 0, "" => "goto_table:30";
}

/// `maybe_reply`: the sender is a service endpoint, so its packets may be replies.
#[inline(always)]
pub fn table21<E: Env>(p: &mut Packet<E>, maybe_reply: bool) -> Output {
    p.count(CONTINUE);
    t30_route::table30(p, maybe_reply)
}
