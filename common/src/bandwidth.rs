//! Pods' bandwidth limits (CNI `bandwidth`) in the dataplane: earliest-departure-time
//! pacing, as Cilium's bandwidth manager. The programs stamp each packet from (or to)
//! a limited pod with the time it may leave (`skb->tstamp`), one packet's
//! transmission time at the pod's rate after the previous one; the `fq` qdisc of the
//! device it leaves by holds it until then. A packet that would leave further ahead
//! than the pod's horizon is dropped instead (TCP then backs off), so a pod cannot
//! queue without bound. The horizon is the pod's burst at its rate, at most
//! `MAX_HORIZON_NS`: on a kernel without `fq` (nothing holds the packet) the same
//! arithmetic is a token bucket of the pod's burst, so the limit holds either way.

/// `Pacing` and `PodBandwidth` directions: from the pod, to the pod.
pub const EGRESS: u32 = 0;
pub const INGRESS: u32 = 1;

/// How far ahead a departure may be set (Cilium's horizon).
pub const MAX_HORIZON_NS: u64 = 2_000_000_000;
pub const NS_PER_SEC: u64 = 1_000_000_000;

crate::wire! {
    /// Value of `BANDWIDTH` (by pod slot): the pod's limits, written by the agent.
    pub struct PodBandwidth {
        /// The pod's address: a slot whose address differs is another pod's (a stale
        /// entry limits nobody).
        pub ip: u32,
        pub _pad: u32,
        /// Bytes per second the pod may send; 0: no limit.
        pub egress_rate: u64,
        /// The pod's egress horizon in ns (see the module's comment).
        pub egress_horizon: u64,
        /// Bytes per second the pod may receive; 0: no limit.
        pub ingress_rate: u64,
        pub ingress_horizon: u64,
    }

    /// Value of `PACING` (by pod slot): the departure time last given to a packet
    /// from and to the pod (`bpf_ktime_get_ns` time), written by the programs.
    pub struct Pacing {
        pub egress_last: u64,
        pub ingress_last: u64,
    }
}
