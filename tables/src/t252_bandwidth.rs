//! "Table 252" (oxsdn's own; OpenShift put an OVS QoS on the pod's port): pods'
//! bandwidth limits, applied once the tables let a packet out: the sender's egress
//! limit (from a pod port) and the local receiver's ingress limit. Pacing by earliest
//! departure time (`oxsdn_common::bandwidth`): the packet gets the time it may leave,
//! and the `fq` qdisc of the device it leaves by keeps it until then.

use oxsdn_common::bandwidth::{PodBandwidth, EGRESS, INGRESS, NS_PER_SEC};

use crate::{Env, Packet};

crate::rules! {
    table 252;
    /// A packet of a limited pod would leave beyond its horizon: the pod sends faster
    /// than its rate by more than its burst.
    node EGRESS_OVER_HORIZON = 106, priority 200, "ip,bandwidth=egress,departure=beyond_horizon" => "drop";
    node EGRESS_PACED = 105, priority 100, "ip,bandwidth=egress" => "set_departure_time";
    /// The same for what a pod with an ingress limit receives.
    node INGRESS_OVER_HORIZON = 108, priority 200, "ip,bandwidth=ingress,departure=beyond_horizon" => "drop";
    node INGRESS_PACED = 107, priority 100, "ip,bandwidth=ingress" => "set_departure_time";
}

/// The answer when the packet leaves as it is (no limit, or not late).
pub const LEAVE_NOW: u64 = 0;
/// The answer when the packet is dropped (the latest of all times).
pub const DROP: u64 = u64::MAX;

/// The departure time of a packet of `wire_len` bytes that the local pod in `slot`
/// with address `src` sends: `LEAVE_NOW`, a time (`Env::now_ns` clock) or `DROP`.
#[inline(always)]
pub fn egress<E: Env>(p: &Packet<E>, slot: u32, src: u32, wire_len: u32) -> u64 {
    depart(p, slot, src, wire_len, EGRESS)
}

/// The same for a packet to the local pod in `slot` with address `dst`.
#[inline(always)]
pub fn ingress<E: Env>(p: &Packet<E>, slot: u32, dst: u32, wire_len: u32) -> u64 {
    depart(p, slot, dst, wire_len, INGRESS)
}

/// As Cilium's `edt_sched_departure`: a packet leaves one transmission time after the
/// previous one at the earliest; when the pod has been idle, now.
#[inline(always)]
fn depart<E: Env>(p: &Packet<E>, slot: u32, ip: u32, wire_len: u32, direction: u32) -> u64 {
    let Some(limit) = p.env.pod_bandwidth(slot) else { return LEAVE_NOW };
    let PodBandwidth { egress_rate, egress_horizon, ingress_rate, ingress_horizon, .. } = limit;
    let (rate, horizon, paced, over) = if direction == INGRESS {
        (ingress_rate, ingress_horizon, INGRESS_PACED, INGRESS_OVER_HORIZON)
    } else {
        (egress_rate, egress_horizon, EGRESS_PACED, EGRESS_OVER_HORIZON)
    };
    if limit.ip != ip || rate == 0 {
        return LEAVE_NOW;
    }
    let now = p.env.now_ns();
    let delay = u64::from(wire_len) * NS_PER_SEC / rate;
    let next = p.env.last_departure(slot, direction).saturating_add(delay);
    if next <= now {
        p.env.set_last_departure(slot, direction, now);
        p.count(paced);
        return LEAVE_NOW;
    }
    if next - now >= horizon {
        p.count(over);
        return DROP;
    }
    p.env.set_last_departure(slot, direction, next);
    p.count(paced);
    next
}
