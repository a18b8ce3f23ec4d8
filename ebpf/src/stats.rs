//! Rule counters: every rule a packet matches is counted, as OVS does, so `dump-flows`
//! shows where packets went and which table dropped them. In trace mode the rule is
//! recorded instead, and nothing is counted (`Frame::tracing`, a constant of each copy
//! of the pipeline).

use oxsdn_common::{node_stat_index, pod_stat_index, trace::hop_kind, Counter, NodeConfig};

use crate::{
    maps::{NODE_STATS, POD_STATS, RULE_STATS, SERVICE_STATS},
    packet::Frame,
    trace,
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
pub fn count<const T: bool>(rule: u32, frame: &Frame<T>) {
    if frame.tracing() {
        return trace::hop(hop_kind::NODE_WIDE, rule, 0);
    }
    bump(RULE_STATS.get_ptr_mut(rule), frame.len);
}

/// Counts a per-pod rule of the pod with address `ip`.
#[inline(always)]
pub fn count_pod<const T: bool>(cfg: &NodeConfig, ip: u32, rule: u32, frame: &Frame<T>) {
    if frame.tracing() {
        return trace::hop(hop_kind::POD, rule, ip);
    }
    bump(POD_STATS.get_ptr_mut(pod_stat_index(ip, cfg.local_mask, rule)), frame.len);
}

/// Counts a per-node rule of the remote node in counter slot `slot`.
#[inline(always)]
pub fn count_node<const T: bool>(slot: u32, rule: u32, frame: &Frame<T>) {
    if frame.tracing() {
        return trace::hop(hop_kind::REMOTE_NODE, rule, slot);
    }
    bump(NODE_STATS.get_ptr_mut(node_stat_index(slot, rule)), frame.len);
}

/// Counts a service rule (a declared port, or a ClusterIP's fragment rule).
#[inline(always)]
pub fn count_service<const T: bool>(slot: u32, frame: &Frame<T>) {
    if frame.tracing() {
        return trace::hop(hop_kind::SERVICE, 0, slot);
    }
    bump(SERVICE_STATS.get_ptr_mut(slot), frame.len);
}
