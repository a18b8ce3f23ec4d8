//! Rules as `dump-flows` shows them. Each table module declares its rules with `rules!`
//! next to the code that applies them; the code counts a rule by the constant the macro
//! defines, and `dump-flows` prints the same declaration with its counter.
//!
//! `matches` is Open vSwitch's match syntax, and the code is held to it: the differential
//! test traces random frames through the programs and checks every rule a frame went
//! through against its text (`tests/src/rule_text.rs`): the frame matches it, it is the
//! only rule counted in its table, and no rule of higher priority in its table matches
//! too. A field that test cannot evaluate (connection tracking state and the like) must
//! be in its `NOT_CHECKED` list; any other field it does not know fails the test.
//!
//! Placeholders in `matches` / `actions`, filled in by userspace:
//! - every rule: `{GW}` gateway, `{L}` node subnet, `{C}` cluster network, `{S}` service
//!   network, `{NODEIP}` the node's address, `{VXP}` the VXLAN port, `{UNDERLAY}` the
//!   underlay device;
//! - per-pod rules: `{PORT}` the pod's host veth, `{IP}` its address, `{MAC}` the low
//!   four bytes of its MAC as an OVS masked match, `{VNID}` its VNID, `{IFINDEX}` its
//!   port number;
//! - per-node rules: `{NODE_IP}` the remote node's address, `{SUBNET}` its subnet;
//! - per-service rules: `{PROTO}`, `{IP}` the ClusterIP, `{PORT}` the port, `{VNID}` the
//!   service project's VNID;
//! - per-policy rules: `{POLICY}` the NetworkPolicy's `namespace/name`;
//! - egress firewall rules: `{VNID}` the project's VNID, `{CIDR}` the entry's prefix.
//!
//! Ids index the counters: node-wide rules `RULE_STATS`, the others their owner's block
//! (`oxsdn_common::stats`). An id is never reused nor renumbered (the test
//! `rule_ids_are_stable` holds the list), so counters survive upgrades.

/// Whose counter a rule has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// One counter on the node (`RULE_STATS[id]`).
    Node,
    /// One per local pod (`POD_STATS`).
    Pod,
    /// One per remote node (`NODE_STATS`).
    RemoteNode,
    /// One per service port or ClusterIP (`SERVICE_STATS`, by the entry's slot).
    Service,
    /// One per NetworkPolicy (`POLICY_STATS`, by the policy's counter slot).
    Policy,
    /// One per egress firewall entry (`EGRESS_STATS`, by the entry's counter slot); the
    /// flow's priority comes from the entry (`oxsdn_common::egress::EgressVerdict`).
    Egress,
}

#[derive(Clone, Copy, Debug)]
pub struct Rule {
    pub id: u32,
    pub scope: Scope,
    pub table: u8,
    pub priority: u16,
    /// The constant's name in its table module.
    pub name: &'static str,
    pub matches: &'static str,
    pub actions: &'static str,
}

/// Declares a table's rules: `rules! { table N; SCOPE NAME = ID, priority P, "match" =>
/// "actions"; ... }` with SCOPE one of `node`, `pod`, `remote_node`, `service`. Defines a
/// constant per rule (its id) and `RULES`.
#[macro_export]
macro_rules! rules {
    (table $table:literal; $( $(#[$doc:meta])* $scope:ident $name:ident = $id:literal, priority $prio:literal, $m:literal => $a:literal; )*) => {
        $( $(#[$doc])* pub const $name: u32 = $id; )*
        /// This table's rules, as `dump-flows` shows them.
        pub const RULES: &[$crate::rule::Rule] = &[
            $( $crate::rule::Rule {
                id: $id,
                scope: $crate::rules!(@scope $scope),
                table: $table,
                priority: $prio,
                name: stringify!($name),
                matches: $m,
                actions: $a,
            }, )*
        ];
    };
    (@scope node) => { $crate::rule::Scope::Node };
    (@scope pod) => { $crate::rule::Scope::Pod };
    (@scope remote_node) => { $crate::rule::Scope::RemoteNode };
    (@scope service) => { $crate::rule::Scope::Service };
    (@scope policy) => { $crate::rule::Scope::Policy };
    (@scope egress) => { $crate::rule::Scope::Egress };
}

/// Node-wide rules that drop (action `drop`), as bits by id: the tables report a drop
/// where they count it (`Packet::count`), and this tells which counts are drops. Built
/// at compile time from the rule lists, so a call with a constant id costs nothing.
const DROP_MASK: [u64; 2] = drop_mask(crate::TABLES);

const fn drop_mask(tables: &[&[Rule]]) -> [u64; 2] {
    let mut mask = [0u64; 2];
    let mut t = 0;
    while t < tables.len() {
        let mut r = 0;
        while r < tables[t].len() {
            let rule = &tables[t][r];
            if matches!(rule.scope, Scope::Node) && is_drop_action(rule.actions) {
                mask[(rule.id / 64) as usize] |= 1 << (rule.id % 64);
            }
            r += 1;
        }
        t += 1;
    }
    mask
}

const fn is_drop_action(actions: &str) -> bool {
    let a = actions.as_bytes();
    a.len() == 4 && a[0] == b'd' && a[1] == b'r' && a[2] == b'o' && a[3] == b'p'
}

/// Whether node-wide rule `id` drops.
#[inline(always)]
pub const fn is_drop(id: u32) -> bool {
    if id < 64 {
        DROP_MASK[0] >> id & 1 == 1
    } else if id < 128 {
        DROP_MASK[1] >> (id - 64) & 1 == 1
    } else {
        false
    }
}
