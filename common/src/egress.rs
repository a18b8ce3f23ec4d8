//! The egress firewall (OpenShift's EgressNetworkPolicy, table 101) in the dataplane.
//! A project's ordered Allow/Deny rules compile, per VNID, into `EGRESS_CIDRS`: an LPM
//! trie keyed by the VNID (matched whole) and the destination's prefix. First match
//! wins is kept by writing only the rules no earlier rule covers: CIDRs are nested or
//! disjoint, so among the rules matching an address the first is then the longest
//! written (see the agent's `egress_policy::compile`). Each entry has its own counter
//! slot in `EGRESS_STATS`, so `dump-flows` shows one flow per entry, as OpenShift showed
//! one OVS flow per CIDR and per resolved address of a `dnsName`.

/// Rules an EgressNetworkPolicy may have (OpenShift 3.x allowed 50; the issue asks 1,000).
pub const MAX_EGRESS_RULES: usize = 1000;
/// Entries and counter slots a node holds: every project's rules and resolved addresses.
pub const MAX_EGRESS_ENTRIES: u32 = 65536;

/// `EgressVerdict.action`.
pub const EGRESS_ALLOW: u32 = 1;
pub const EGRESS_DENY: u32 = 2;
/// The VNID's policy cannot apply (its VNID is shared by joined projects): all of its
/// external traffic is dropped, as OpenShift's priority-1 rule does.
pub const EGRESS_INVALID: u32 = 3;

/// Bits of `EgressCidr` before the address: the VNID, matched whole.
pub const EGRESS_KEY_FIXED_BITS: u32 = 32;

crate::wire! {
    /// Key data of `EGRESS_CIDRS` (an LPM trie: the prefix length covers `vnid` whole,
    /// then the address's prefix).
    pub struct EgressCidr {
        pub vnid: u32,
        pub ip: u32,
    }

    /// Value of `EGRESS_CIDRS`.
    pub struct EgressVerdict {
        /// `EGRESS_ALLOW`, `EGRESS_DENY` or `EGRESS_INVALID`.
        pub action: u32,
        /// The counter slot of this entry in `EGRESS_STATS`.
        pub slot: u32,
        /// Index of the rule in the policy's `egress` list (0 for `EGRESS_INVALID`).
        pub rule: u32,
        /// Number of rules of the policy: the flow's priority is `rules - rule`.
        pub rules: u32,
    }
}
