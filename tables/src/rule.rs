//! Rules as `dump-flows` shows them. Each table module declares its rules with `rules!`
//! next to the code that applies them; the code counts a rule by the constant the macro
//! defines, and `dump-flows` prints the same declaration with its counter.
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
//!   service project's VNID.
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
}
