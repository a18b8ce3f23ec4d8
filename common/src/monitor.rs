//! The drop and flow monitor (`oxsdnctl monitor`) and the per-source drop counters.
//!
//! While a monitor runs it sets `MONITOR_CONFIG` (what to report, its rate, a lease);
//! the live programs then write a `MonitorEvent` into the `MONITOR_EVENTS` ring buffer
//! for each drop (and, with `WATCH_ALL`, each forwarding decision), within a per-CPU
//! token bucket (`MONITOR_BUDGET`) that counts what it suppresses. With no monitor, the
//! flags are 0 and a program pays one array load and a branch where it would report.
//!
//! Drops are also counted by their source in `SOURCE_DROPS`: the sending pod's project
//! slot, the host, the tunnel, or a pod the tables could not identify (`drop_source`).

use crate::{
    conntrack::{HOST_OWNER, SHARES, TUNNEL_OWNER},
    wire, MAX_PROJECT_SLOTS,
};

/// `MonitorConfig.flags`: report drops.
pub const WATCH_DROPS: u32 = 1;
/// `MonitorConfig.flags`: report forwarding decisions too.
pub const WATCH_FORWARDS: u32 = 2;

/// Size of the `MONITOR_EVENTS` ring buffer in bytes (a power of two of pages): about
/// 9,000 events, several seconds of the default rate on every CPU at once.
pub const EVENTS_BYTES: u32 = 1 << 20;

/// Default rate of events per CPU (per second) and burst.
pub const DEFAULT_RATE: u32 = 1000;
pub const DEFAULT_BURST: u32 = 200;

/// `SOURCE_DROPS` index of drops of pod frames the tables did not identify (before or
/// at table 20: VLAN tags, non-IP, spoofed sources). Projects' slots, `HOST_OWNER` and
/// `TUNNEL_OWNER` come first.
pub const UNIDENTIFIED_POD: u32 = SHARES;
/// Size of `SOURCE_DROPS`.
pub const SOURCES: u32 = SHARES + 1;

/// `MonitorEvent.port` and `Packet::port` in the tables: where a frame came in.
pub mod port {
    /// A pod's host veth; `ingress` is its ifindex.
    pub const POD: u32 = 1;
    /// tun0 (the node's host); `ingress` is tun0's ifindex.
    pub const TUN0: u32 = 2;
    /// The overlay; `ingress` is the sending node's underlay address.
    pub const TUNNEL: u32 = 3;
}

/// `MonitorEvent.rule` of a forwarding decision: the tables count no single rule as the
/// decider of a forward, so the event says where the packet went instead.
pub const NO_RULE: u32 = u32::MAX;

/// `MonitorEvent.rule` of a drop by a NetworkPolicy's rule: this bit, the policy's
/// counter slot (`policy::MAX_POLICIES` fit in 23 bits) and the per-policy rule id.
pub const POLICY_RULE: u32 = 1 << 31;

#[inline(always)]
pub const fn policy_rule(slot: u32, rule: u32) -> u32 {
    POLICY_RULE | slot << 8 | rule
}

const _: () = assert!(crate::policy::MAX_POLICIES < 1 << 23 && crate::policy::POLICY_RULES <= 0xff);

/// The policy counter slot and per-policy rule of a `policy_rule`, if `rule` is one.
pub const fn policy_of(rule: u32) -> Option<(u32, u32)> {
    if rule != NO_RULE && rule & POLICY_RULE != 0 {
        Some(((rule & !POLICY_RULE) >> 8, rule & 0xff))
    } else {
        None
    }
}

/// `MonitorEvent.rule` of a drop by an egress firewall entry: this bit, the entry's
/// counter slot (`egress::MAX_EGRESS_ENTRIES` fit in 22 bits) and the rule id.
pub const EGRESS_RULE: u32 = 1 << 30;

#[inline(always)]
pub const fn egress_rule(slot: u32, rule: u32) -> u32 {
    EGRESS_RULE | slot << 8 | rule
}

const _: () = assert!(crate::egress::MAX_EGRESS_ENTRIES <= 1 << 22);

/// The egress entry's counter slot and rule id of an `egress_rule`, if `rule` is one.
pub const fn egress_of(rule: u32) -> Option<(u32, u32)> {
    if rule != NO_RULE && rule & POLICY_RULE == 0 && rule & EGRESS_RULE != 0 {
        Some(((rule & !EGRESS_RULE) >> 8, rule & 0xff))
    } else {
        None
    }
}

/// Where a dropped frame's source is counted in `SOURCE_DROPS`: its pod's project slot
/// once table 20 identified it (`owner`), the host or the tunnel, or `UNIDENTIFIED_POD`
/// for a pod frame dropped before that.
#[inline(always)]
pub const fn drop_source(port: u32, owner: u32) -> u32 {
    if port == port::POD && owner >= MAX_PROJECT_SLOTS {
        UNIDENTIFIED_POD
    } else if port == port::TUN0 {
        HOST_OWNER
    } else if port == port::TUNNEL {
        TUNNEL_OWNER
    } else {
        owner
    }
}

wire! {
    /// The single entry of `MONITOR_CONFIG`, written by the running monitor.
    pub struct MonitorConfig {
        /// `WATCH_DROPS`, `WATCH_FORWARDS`; 0: no monitor.
        pub flags: u32,
        /// The monitor's process id (another monitor refuses to start while it lives).
        pub holder: u32,
        /// Events stop at this `bpf_ktime_get_ns` time unless the monitor renews it: a
        /// monitor that died stops costing anything within seconds.
        pub lease_until: u64,
        /// What one event costs of a CPU's budget, in ns of credit (1e9 / rate).
        pub cost_ns: u64,
        /// Most credit a CPU may save up (burst × cost).
        pub max_credit_ns: u64,
    }

    /// Per CPU, the single entry of `MONITOR_BUDGET`: the token bucket, as credit that
    /// grows by the time elapsed.
    pub struct MonitorBudget {
        pub credit_ns: u64,
        pub last_ns: u64,
        /// Events this CPU reported, and those it suppressed for want of credit or ring
        /// space.
        pub emitted: u64,
        pub suppressed: u64,
    }

    /// One event in `MONITOR_EVENTS`.
    pub struct MonitorEvent {
        /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC).
        pub time_ns: u64,
        /// `trace::output_kind`: DROP, or where the packet was sent.
        pub output: u32,
        /// For a drop, the node-wide rule id (`oxsdn_tables`); `NO_RULE` otherwise.
        pub rule: u32,
        /// `port::*`, and the port's ifindex or the sending node's address.
        pub port: u32,
        pub ingress: u32,
        /// `CT_SHARES` owner: the source pod's project slot, or host or tunnel.
        pub owner: u32,
        /// Source VNID (set by table 0/20) and destination VNID (table 80), 0 if unset.
        pub reg0: u32,
        pub reg1: u32,
        /// IPv4 source and destination (ARP: sender and target), wire order.
        pub src: u32,
        pub dst: u32,
        /// Host order; 0 when the packet has none.
        pub sport: u16,
        pub dport: u16,
        /// IP protocol; `ARP` (0x0806's low byte is not a protocol number) for ARP, 0 for
        /// other frames.
        pub proto: u8,
        /// `L3_*`.
        pub l3: u8,
        pub _pad: u16,
        pub len: u32,
        /// Forwards: the pod's host veth, or tun0's or vxlan0's ifindex.
        pub out_ifindex: u32,
        /// Forwards: the pod's IP, or the remote node's; the VNI to it.
        pub out_ip: u32,
        pub vni: u32,
        /// The CPU that handled the packet.
        pub cpu: u32,
    }
}

/// `MonitorEvent.l3`.
pub const L3_OTHER: u8 = 0;
pub const L3_ARP: u8 = 1;
pub const L3_IPV4: u8 = 2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_counted_by_their_source() {
        assert_eq!(drop_source(port::POD, 7), 7);
        assert_eq!(drop_source(port::POD, TUNNEL_OWNER), UNIDENTIFIED_POD);
        assert_eq!(drop_source(port::TUN0, HOST_OWNER), HOST_OWNER);
        assert_eq!(drop_source(port::TUNNEL, TUNNEL_OWNER), TUNNEL_OWNER);
    }
}
