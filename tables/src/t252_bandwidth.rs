//! "Table 252" (oxsdn's own; OpenShift put an OVS QoS on the pod's port): a pod's
//! bandwidth limit, applied to what it sends once the tables let it out. Pacing by
//! earliest departure time (`oxsdn_common::bandwidth`): the packet gets the time it may
//! leave, and the `fq` qdisc of the device it leaves by keeps it until then.

use oxsdn_common::bandwidth::{PodBandwidth, NS_PER_SEC};

use crate::{Env, Packet};

crate::rules! {
    table 252;
    /// A packet of a limited pod would leave beyond its horizon: the pod sends faster
    /// than its rate by more than its burst.
    node EGRESS_OVER_HORIZON = 106, priority 200, "ip,bandwidth=egress,departure=beyond_horizon" => "drop";
    node EGRESS_PACED = 105, priority 100, "ip,bandwidth=egress" => "set_departure_time";
}

/// `egress`'s answer when the packet leaves as it is (no limit, or not late).
pub const LEAVE_NOW: u64 = 0;
/// `egress`'s answer when the packet is dropped.
pub const DROP: u64 = u64::MAX;

/// The departure time of a packet of `wire_len` bytes that the local pod in `slot`
/// with address `src` sends: `LEAVE_NOW`, a time (`Env::now_ns` clock) or `DROP`. As
/// Cilium's `edt_sched_departure`: a packet leaves one transmission time after the
/// previous one at the earliest; when the pod has been idle, now.
#[inline(always)]
pub fn egress<E: Env>(p: &Packet<E>, slot: u32, src: u32, wire_len: u32) -> u64 {
    let Some(PodBandwidth { ip, egress_rate, egress_horizon, .. }) = p.env.pod_bandwidth(slot) else {
        return LEAVE_NOW;
    };
    if ip != src || egress_rate == 0 {
        return LEAVE_NOW;
    }
    let now = p.env.now_ns();
    let delay = u64::from(wire_len) * NS_PER_SEC / egress_rate;
    let next = p.env.last_departure(slot).saturating_add(delay);
    if next <= now {
        p.env.set_last_departure(slot, now);
        p.count(EGRESS_PACED);
        return LEAVE_NOW;
    }
    if next - now >= egress_horizon {
        p.count(EGRESS_OVER_HORIZON);
        return DROP;
    }
    p.env.set_last_departure(slot, next);
    p.count(EGRESS_PACED);
    next
}
