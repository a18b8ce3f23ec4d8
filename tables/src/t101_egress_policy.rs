//! Table 101: EgressNetworkPolicy (none yet): everything goes to the host, which routes
//! it out with the node's address.

use crate::{Env, Output, Packet};

crate::rules! {
    table 101;
    node ALLOW = 39, priority 0, "" => "output:tun0";
}

#[inline(always)]
pub fn table101<E: Env>(p: &mut Packet<E>) -> Output {
    p.count(ALLOW);
    Output::Tun0
}
