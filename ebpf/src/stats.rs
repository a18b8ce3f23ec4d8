//! Rule counters: every rule a packet matches is counted, as OVS does, so `dump-flows`
//! shows where packets went and which table dropped them. In trace mode the rule is
//! recorded instead, and nothing is counted.

use oxsdn_common::{node_stat_index, pod_stat_index, trace::hop_kind, Counter, NodeConfig};

use crate::{
    maps::{NODE_STATS, POD_STATS, RULE_STATS, SERVICE_STATS},
    trace::{self, tracing},
};

#[inline(always)]
fn bump(counter: Option<*mut Counter>, len: u32) {
    if let Some(c) = counter {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len as u64;
        }
    }
}

/// Counts a node-wide rule.
#[inline(always)]
pub fn count(rule: u32, len: u32) {
    if tracing() {
        return trace::hop(hop_kind::NODE_WIDE, rule, 0);
    }
    bump(RULE_STATS.get_ptr_mut(rule), len);
}

/// Counts a per-pod rule of the pod with address `ip`.
#[inline(always)]
pub fn count_pod(cfg: &NodeConfig, ip: u32, rule: u32, len: u32) {
    if tracing() {
        return trace::hop(hop_kind::POD, rule, ip);
    }
    bump(POD_STATS.get_ptr_mut(pod_stat_index(ip, cfg.local_mask, rule)), len);
}

/// Counts a per-node rule of the remote node in counter slot `slot`.
#[inline(always)]
pub fn count_node(slot: u32, rule: u32, len: u32) {
    if tracing() {
        return trace::hop(hop_kind::REMOTE_NODE, rule, slot);
    }
    bump(NODE_STATS.get_ptr_mut(node_stat_index(slot, rule)), len);
}

/// Counts a service rule (a declared port, or a ClusterIP's fragment rule).
#[inline(always)]
pub fn count_service(slot: u32, len: u32) {
    if tracing() {
        return trace::hop(hop_kind::SERVICE, 0, slot);
    }
    bump(SERVICE_STATS.get_ptr_mut(slot), len);
}
