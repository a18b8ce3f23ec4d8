//! Where a rule's counter lives in the per-CPU counter arrays. Node-wide rules are
//! counted in `RULE_STATS[rule id]`; per-pod, per-remote-node and per-policy rules in a
//! block of their owner's slot.

use crate::{
    policy::{MAX_POLICIES, POLICY_RULES},
    MAX_NODES, MAX_POD_SLOTS, NODE_RULES, POD_RULES,
};

/// Index in `POD_STATS` of per-pod rule `rule` of the pod in `slot`.
#[inline(always)]
pub const fn pod_index(slot: u32, rule: u32) -> u32 {
    (slot & (MAX_POD_SLOTS - 1)) * POD_RULES + rule
}

/// Index in `NODE_STATS` of per-node rule `rule` of the remote node in `slot`.
#[inline(always)]
pub const fn node_index(slot: u32, rule: u32) -> u32 {
    (slot & (MAX_NODES - 1)) * NODE_RULES + rule
}

/// Index in `POLICY_STATS` of per-policy rule `rule` of the policy in counter slot `slot`.
#[inline(always)]
pub const fn policy_index(slot: u32, rule: u32) -> u32 {
    (slot & (MAX_POLICIES - 1)) * POLICY_RULES + rule
}
