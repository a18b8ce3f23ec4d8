//! Table 110: multicast from pods (not enabled for any project).

use crate::{Env, Output, Packet};

crate::rules! {
    table 110;
    node NOT_ENABLED = 30, priority 0, "" => "drop";
}

#[inline(always)]
pub fn table110<E: Env>(p: &mut Packet<E>) -> Output {
    p.drop_by(NOT_ENABLED)
}
