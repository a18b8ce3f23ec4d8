//! OpenShift SDN's flow tables (Profile A, `ovs-multitenant`), one module per table: its
//! rules (`rules!`: ids, priorities, `dump-flows` text) and the function that applies
//! them, named after the table. A function counts the rule that matched and continues to
//! the next table, so a packet's walk through the functions is its walk through
//! `dump-flows`.
//!
//! The tables read the node's maps through `Env`, which the eBPF programs implement, so
//! this crate is plain `no_std` Rust: the programs compile it for the kernel and
//! userspace reads the rule lists from it.
//!
//! Table 80 is where the network plugin's policy decides (`t80_isolation`): the mode in
//! `NodeConfig` chooses, and a service's translated traffic asks it again with the
//! client's identity (`t80_isolation::after_translation`).
#![no_std]

pub mod env;
pub mod fragments;
pub mod frame;
pub mod rule;

pub mod t0_classify;
pub mod t100_egress;
pub mod t101_egress_policy;
pub mod t10_vxlan_source;
pub mod t110_multicast;
pub mod t111_multicast_nodes;
pub mod t120_multicast_local;
pub mod t20_antispoof;
pub mod t21_post_source;
pub mod t252_bandwidth;
pub mod t254_output;
pub mod t30_route;
pub mod t40_arp_to_local_pod;
pub mod t50_arp_to_remote_pod;
pub mod t60_service;
pub mod t61_load_balance;
pub mod t70_to_local_pod;
pub mod t80_isolation;
pub mod t90_to_remote_pod;

use core::cell::Cell;

use oxsdn_common::{addr, monitor, NodeConfig, PodEntry};

pub use env::Env;
use frame::Frame;
use rule::Rule;

/// Every table's rules, in table order.
pub const TABLES: &[&[Rule]] = &[
    t0_classify::RULES,
    t10_vxlan_source::RULES,
    t20_antispoof::RULES,
    t21_post_source::RULES,
    t30_route::RULES,
    t40_arp_to_local_pod::RULES,
    t50_arp_to_remote_pod::RULES,
    t60_service::RULES,
    t61_load_balance::RULES,
    t70_to_local_pod::RULES,
    t80_isolation::RULES,
    t90_to_remote_pod::RULES,
    t100_egress::RULES,
    t101_egress_policy::RULES,
    t110_multicast::RULES,
    t252_bandwidth::RULES,
    t111_multicast_nodes::RULES,
    t120_multicast_local::RULES,
    t254_output::RULES,
];

/// Every rule of every table.
pub fn rules() -> impl Iterator<Item = &'static Rule> {
    TABLES.iter().flat_map(|t| t.iter())
}

/// Where a packet goes when the pipeline is done with it.
pub enum Output {
    Drop,
    /// OpenShift's port 2: into the node's host stack.
    Tun0,
    /// A local pod: ifindex of its host-side veth (`reg2`), and the pod's IP, whose MAC
    /// (`0a:58:` + IP) the frame must be addressed to for the pod to accept it.
    Pod {
        ifindex: u32,
        ip: u32,
    },
    /// OpenShift's port 1: VXLAN to another node (`tun_dst`), VNI `tun_id`.
    Tunnel {
        node_ip: u32,
        vni: u32,
    },
    /// Tables 111 and 120: copies to the local pods of VNID `vnid` that receive its
    /// multicast (but the ingress port), and, if `to_nodes`, to every other node.
    Multicast {
        vnid: u32,
        to_nodes: bool,
    },
}

/// New addresses for a service connection's packet (what kube-proxy's DNAT and its
/// reverse did in OpenShift); the destination MAC becomes the new destination pod's.
/// A plain struct, every field always initialised, keeps the verifier from meeting
/// undefined enum payloads.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Translation {
    /// Non-zero when the packet is to be rewritten.
    pub active: u32,
    pub src: u32,
    pub dst: u32,
    /// Host byte order.
    pub sport: u16,
    pub dport: u16,
}

/// A packet on its way through the tables: what every table may read, and what tables
/// leave for later ones (OVS's registers and the translation).
pub struct Packet<'a, E: Env> {
    pub env: E,
    pub cfg: &'a NodeConfig,
    pub frame: &'a Frame,
    /// reg0: the source VNID, from table 20 (pods), the VNI (tunnel), or 0 (tun0).
    pub reg0: u32,
    /// Whose share of the connection tables a new service connection takes: the
    /// sending pod's project slot, or `conntrack::HOST_OWNER` / `TUNNEL_OWNER`.
    pub owner: u32,
    /// networkpolicy mode: the sending local pod's identity (0: the sender is not a
    /// local pod, or another mode).
    pub src_identity: u32,
    /// Table 30 translated a service's reply back (its connection was judged).
    pub service_reply: bool,
    /// The service translation chosen by table 30's reply rule or table 61.
    pub xlate: Translation,
    /// reg1: the destination VNID, once table 80 has it (for the monitor).
    pub reg1: u32,
    /// The skb mark of the egress IP the packet leaves with (table 100; 0: none), set
    /// when it goes to tun0.
    pub egress_mark: u32,
    /// Where the frame came in (`oxsdn_common::monitor::port`), and the port's ifindex
    /// or, from the tunnel, the sending node's address: for drop accounting and the
    /// monitor (`arriving`).
    pub port: u32,
    pub ingress: u32,
    /// The last drop rule counted (`monitor::NO_RULE`: none; a NetworkPolicy's as
    /// `monitor::policy_rule`), for the monitor: the entry programs report a drop once,
    /// after the tables (reporting from inside them would put the monitor's stack on
    /// top of the tables' deepest call chain).
    pub dropped_by: Cell<u32>,
}

impl<'a, E: Env> Packet<'a, E> {
    #[inline(always)]
    /// A packet that came in on `port` (`monitor::port`), with `ingress` its ifindex or
    /// the sending node's address.
    pub fn new(env: E, cfg: &'a NodeConfig, frame: &'a Frame, port: u32, ingress: u32) -> Self {
        Packet {
            env,
            cfg,
            frame,
            reg0: 0,
            owner: oxsdn_common::conntrack::TUNNEL_OWNER,
            src_identity: 0,
            service_reply: false,
            xlate: Translation::default(),
            reg1: 0,
            egress_mark: 0,
            port,
            ingress,
            dropped_by: Cell::new(monitor::NO_RULE),
        }
    }

    /// Counts node-wide rule `rule`; a drop rule's count is also the drop's, by source,
    /// and the monitor's (`dropped_by`). (`rule` is a constant at nearly every call, so
    /// `is_drop` folds away.)
    #[inline(always)]
    pub fn count(&self, rule: u32) {
        self.env.count(rule, self.frame.len);
        if rule::is_drop(rule) {
            self.env.count_drop(monitor::drop_source(self.port, self.owner));
            self.dropped_by.set(rule);
        }
    }

    /// Counts per-policy drop rule `rule` of the NetworkPolicy in counter slot `slot`,
    /// as the drop's too (see `count`).
    #[inline(always)]
    pub fn count_policy_drop(&self, slot: u32, rule: u32) {
        self.env.count_policy(slot, rule, 0, self.frame.len);
        self.env.count_drop(monitor::drop_source(self.port, self.owner));
        self.dropped_by.set(monitor::policy_rule(slot, rule));
    }

    /// Counts egress firewall drop rule `rule` of the entry in counter slot `slot`, as
    /// the drop's too (see `count`).
    #[inline(always)]
    pub fn count_egress_drop(&self, slot: u32, rule: u32) {
        self.env.count_egress(slot, rule, self.frame.len);
        self.env.count_drop(monitor::drop_source(self.port, self.owner));
        self.dropped_by.set(monitor::egress_rule(slot, rule));
    }

    /// Counts `rule`, a drop rule, and drops.
    #[inline(always)]
    pub fn drop_by(&self, rule: u32) -> Output {
        self.count(rule);
        Output::Drop
    }

    #[inline(always)]
    pub fn in_local_subnet(&self, addr: u32) -> bool {
        addr::in_net(addr, self.cfg.local_net, self.cfg.local_mask)
    }

    #[inline(always)]
    pub fn in_cluster(&self, addr: u32) -> bool {
        addr::in_net(addr, self.cfg.cluster_net, self.cfg.cluster_mask)
    }

    #[inline(always)]
    pub fn slot(&self, addr: u32) -> u32 {
        addr::pod_slot(addr, self.cfg.local_mask)
    }

    /// The local pod with address `addr`.
    #[inline(always)]
    pub fn local_pod(&self, addr: u32) -> Option<PodEntry> {
        if !self.in_local_subnet(addr) {
            return None;
        }
        self.env.pod(self.slot(addr)).filter(|p| p.ifindex != 0 && p.ip == addr)
    }

    /// The VNID of the project in `slot`, which must be project `id`. A project this
    /// node does not know (yet) has none: its packets are dropped, never treated as
    /// global.
    #[inline(always)]
    pub fn vnid(&self, slot: u32, id: u32) -> Option<u32> {
        self.env.project(slot).filter(|p| p.id == id && id != 0).map(|p| p.vnid)
    }
}

const MCAST_NET: u32 = u32::from_ne_bytes([224, 0, 0, 0]);
const MCAST_MASK: u32 = u32::from_ne_bytes([240, 0, 0, 0]);

#[inline(always)]
pub fn is_multicast(addr: u32) -> bool {
    addr::in_net(addr, MCAST_NET, MCAST_MASK)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{collections::HashSet, vec::Vec};

    use super::{rule::Scope, *};

    #[test]
    fn drop_rules_are_the_node_wide_rules_that_drop() {
        for rule in rules() {
            let drops = rule.scope == Scope::Node && rule.actions == "drop";
            assert_eq!(rule::is_drop(rule.id) && rule.scope == Scope::Node, drops, "{} {}", rule.table, rule.name);
        }
        assert!(rule::is_drop(t80_isolation::ISOLATED));
        assert!(!rule::is_drop(t80_isolation::SAME_VNID));
        assert!(!rule::is_drop(oxsdn_common::MAX_RULES));
    }

    #[test]
    fn rule_ids_are_unique_and_fit_their_counters() {
        let mut seen = HashSet::new();
        for rule in rules() {
            assert!(seen.insert((rule.scope, rule.id)), "{:?} id {} twice", rule.scope, rule.id);
            let limit = match rule.scope {
                Scope::Node => oxsdn_common::MAX_RULES,
                Scope::Pod => oxsdn_common::POD_RULES,
                Scope::RemoteNode => oxsdn_common::NODE_RULES,
                Scope::Service => 2,
                Scope::Policy => oxsdn_common::policy::POLICY_RULES,
                // Not counter indexes (each entry has its slot): ids from the node-wide
                // range that node-wide rules do not use, below `monitor::egress_rule`'s 8 bits.
                Scope::Egress => oxsdn_common::MAX_RULES,
            };
            assert!(rule.id < limit, "{} id {} >= {limit}", rule.name, rule.id);
        }
    }

    /// Counters are kept across upgrades by id: an id keeps its rule for good. Append
    /// new rules with new ids; never change a line here.
    #[test]
    fn rule_ids_are_stable() {
        let expected = [
            (0, 0, "TUN0_IP_MCAST"),
            (0, 1, "TUN0_ARP"),
            (0, 2, "TUN0_IP"),
            (0, 3, "TUN0_OTHER"),
            (0, 4, "POD_ARP"),
            (0, 5, "POD_IP"),
            (0, 6, "OTHER"),
            (20, 7, "SPOOFED"),
            (21, 8, "CONTINUE"),
            (30, 9, "ARP_GW"),
            (30, 10, "IP_GW"),
            (30, 11, "ARP_LOCAL"),
            (30, 12, "IP_LOCAL"),
            (30, 13, "ARP_CLUSTER"),
            (30, 14, "IP_SERVICE"),
            (30, 15, "IP_CLUSTER"),
            (30, 16, "IP_MCAST"),
            (30, 17, "IP_EXTERNAL"),
            (30, 18, "ARP_OTHER"),
            (40, 19, "NO_POD"),
            (50, 20, "NO_NODE"),
            (60, 21, "NO_SERVICE"),
            (70, 22, "NO_POD"),
            (80, 23, "FROM_GW"),
            (80, 24, "SRC_GLOBAL"),
            (80, 25, "DST_GLOBAL"),
            (80, 26, "SAME_VNID"),
            (80, 27, "ISOLATED"),
            (90, 28, "NO_NODE"),
            (100, 29, "EXTERNAL"),
            (110, 30, "NOT_ENABLED"),
            (0, 31, "TUNNEL_ARP"),
            (0, 32, "TUNNEL_IP_SRC"),
            (0, 33, "TUNNEL_IP_DST"),
            (0, 34, "TUNNEL_OTHER"),
            (10, 35, "UNKNOWN_NODE"),
            (100, 36, "VXLAN"),
            (100, 37, "DNS_TCP"),
            (100, 38, "DNS_UDP"),
            (101, 39, "ALLOW"),
            (60, 40, "SRC_GLOBAL"),
            (30, 41, "SERVICE_REPLY"),
            (61, 42, "ESTABLISHED"),
            (61, 43, "NEW"),
            (61, 44, "UNKNOWN_FRAGMENT"),
            (61, 45, "NO_ENDPOINT"),
            (61, 46, "DRAINING"),
            (0, 47, "TUNNEL_NO_KEY"),
            (254, 48, "TO_INGRESS_PORT"),
            (254, 49, "TRANSLATION_FAILED"),
            (254, 50, "NOT_SENT"),
            (0, 51, "UNCONFIGURED"),
            (0, 52, "VLAN"),
            (100, 53, "STORE"),
            (30, 54, "GW_STORE"),
            (61, 55, "OVER_QUOTA"),
            (61, 56, "TABLE_FULL"),
            (80, 57, "POLICY_REPLY"),
            (80, 58, "EGRESS_OPEN"),
            (80, 59, "INGRESS_OPEN"),
            (80, 60, "NO_IDENTITY"),
            (80, 61, "TRACKING_FULL"),
            (60, 62, "NO_ISOLATION"),
            (0, 80, "XDP_DENIED"),
            (0, 81, "XDP_MALFORMED"),
            (10, 82, "XDP_UNKNOWN_NODE"),
            (80, 63, "TO_GW"),
            (80, 64, "TO_NODE_IP"),
            (80, 65, "SUBNET"),
            // Table 101's per-entry rules (scope egress): ids kept apart from node-wide ones.
            (101, 90, "INVALID"),
            (101, 91, "ALLOW_CIDR"),
            (101, 92, "DENY_CIDR"),
            // XDP decapsulation (--xdp-decap).
            (0, 83, "XDP_DECAP"),
            (254, 84, "XDP_NOT_POD"),
            (252, 105, "EGRESS_PACED"),
            (252, 106, "EGRESS_OVER_HORIZON"),
            (252, 107, "INGRESS_PACED"),
            (252, 108, "INGRESS_OVER_HORIZON"),
            (110, 100, "ENABLED"),
            (111, 101, "REPLICATE"),
            (120, 102, "DELIVER"),
            (120, 103, "NO_MEMBERS"),
            (30, 104, "IP_MCAST_TUNNEL"),
            // Egress IPs (table 100).
            (100, 93, "EGRESS_IP_LOCAL"),
            (100, 94, "EGRESS_IP_REMOTE"),
            (100, 95, "EGRESS_IP_UNHELD"),
            (100, 96, "EGRESS_IP_FOR_PEER"),
            (100, 97, "EGRESS_IP_NOT_HERE"),
        ];
        let node_wide: Vec<(u8, u32, &str)> = rules()
            .filter(|r| matches!(r.scope, Scope::Node | Scope::Egress))
            .map(|r| (r.table, r.id, r.name))
            .collect();
        for rule in &node_wide {
            assert!(expected.contains(rule), "rule {rule:?} is not in the list of ids: append it");
        }
        for rule in &expected {
            assert!(node_wide.contains(rule), "rule {rule:?} is gone or renumbered");
        }
    }
}
