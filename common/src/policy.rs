//! NetworkPolicy in the dataplane (mode `NETWORKPOLICY`). Pods are grouped into
//! node-local identities (same namespace, labels and named ports); a policy compiles into
//! what each subject identity may exchange, per direction, with peer identities
//! (`POLICY_PEERS`) and with address blocks (`POLICY_CIDRS`), each a `PortSet`. State
//! thus grows with policies and distinct label sets, not with pods x peers.
//!
//! A pod's identity: `POD_IDENTITIES[slot]` for local pods, `IP_IDENTITIES[ip]` for every
//! pod of the cluster. `IDENTITIES[identity]` says whether policies isolate it per
//! direction. Replies of allowed connections (and ICMP errors about them) pass by
//! `POLICY_CT`, which records a connection when its reply would otherwise be judged by
//! an isolating policy.

/// Node-local identities (0: none, not a pod of the cluster).
pub const MAX_IDENTITIES: u32 = 65536;
/// Subject/peer pairs and address blocks the compiled policies may hold (allocated as
/// they are used: only userspace writes them).
pub const MAX_POLICY_PEERS: u32 = 262144;
pub const MAX_POLICY_CIDRS: u32 = 65536;
/// Pods of the whole cluster whose identity a node knows.
pub const MAX_CLUSTER_PODS: u32 = 65536;
/// Policies a node counts (their counter slots).
pub const MAX_POLICIES: u32 = 4096;
/// Connections whose replies policies let through, tracked at once.
pub const MAX_POLICY_CONNECTIONS: u32 = 65536;
/// Entries of a `PortSet`.
pub const PORT_SET_LEN: usize = 16;

/// `PolicyKey.direction` and `IdentityPolicy` bits.
pub const INGRESS: u32 = 1;
pub const EGRESS: u32 = 2;

/// `PortRange.proto` matching any protocol and port.
pub const ANY_PROTO: u8 = 0;

/// Per-policy rules, counted in `POLICY_STATS` at `slot * POLICY_RULES + rule`.
pub const POLICY_RULES: u32 = 4;

crate::wire! {
    /// What policies say of one identity (`IDENTITIES[identity]`).
    pub struct IdentityPolicy {
        /// `INGRESS` | `EGRESS`: policies select it for that direction (it is isolated).
        pub isolated: u32,
        /// Counter slots of the policy a drop is counted for, per direction (the first,
        /// by id, of those selecting it).
        pub ingress_slot: u32,
        pub egress_slot: u32,
    }

    /// Key of `POLICY_PEERS`.
    pub struct PolicyKey {
        pub subject: u32,
        pub peer: u32,
        pub direction: u32,
    }

    /// A protocol and a port range a rule allows.
    pub struct PortRange {
        /// IPPROTO_TCP, _UDP, _SCTP, or `ANY_PROTO` (every protocol, every port).
        pub proto: u8,
        /// Non-zero in the used entries of a `PortSet`.
        pub used: u8,
        pub start: u16,
        pub end: u16,
        /// Counter slot of the policy whose rule this is, and the rule's index there.
        pub slot: u16,
        pub rule: u32,
    }

    /// Value of `POLICY_PEERS` and `POLICY_CIDRS`: what is allowed, first match wins for
    /// counting (all of them allow).
    pub struct PortSet {
        pub ranges: [PortRange; PORT_SET_LEN],
    }

    /// Key data of `POLICY_CIDRS` (an LPM trie: the prefix length covers `subject` and
    /// `direction` whole, then the address's prefix).
    pub struct PolicyCidr {
        pub subject: u32,
        pub direction: u32,
        pub ip: u32,
    }

    /// Value of `POLICY_CT`, keyed by `connection_key` of a connection's first packet's
    /// `FlowKey` (ICMP echo: the identifier as both ports): one entry, found by one
    /// lookup from either direction.
    pub struct PolicyConnection {
        pub last_seen: u64,
        /// Whose share of the tables it uses (`conntrack`).
        pub owner: u32,
        /// `conntrack::CLOSING` once a FIN or RST passed; `OPENED_FROM_DST`, `BOTH_WAYS`.
        pub flags: u32,
        /// The `POLICY_GENERATION` under which the opening direction's packets were
        /// judged allowed (0: none): while it is current, they pass with the counts
        /// below without a rule lookup.
        pub generation: u32,
        /// What the allowed opening packet counted, per side (`Verdict`).
        pub egress_count: u32,
        pub ingress_count: u32,
        pub _pad: u32,
    }
}

crate::wire! {
    /// Value of `POLICY_SLOTS` (read by userspace only: counters and traces name the
    /// policy from it, without the cluster store).
    pub struct PolicySlot {
        pub id: u32,
        /// `namespace/name`, UTF-8, zero-padded (chunks of 32: long arrays have no
        /// `Default`).
        pub name: [[u8; 32]; 10],
    }
}

#[cfg(feature = "user")]
extern crate std;

#[cfg(feature = "user")]
impl PolicySlot {
    /// Policy `id` named `name` (cut at 320 bytes; object names are at most 317).
    pub fn new(id: u32, name: &str) -> PolicySlot {
        let mut slot = PolicySlot { id, ..PolicySlot::default() };
        for (i, byte) in name.bytes().take(320).enumerate() {
            slot.name[i / 32][i % 32] = byte;
        }
        slot
    }

    /// `namespace/name`.
    pub fn name(&self) -> std::string::String {
        let bytes: std::vec::Vec<u8> = self.name.iter().flatten().copied().take_while(|b| *b != 0).collect();
        std::string::String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Bits of `PolicyCidr` before the address: matched whole.
pub const CIDR_KEY_FIXED_BITS: u32 = 64;

/// `PolicyConnection.flags`: the connection was opened from the key's `dst` side (the
/// key is its first packet's `FlowKey` swapped).
pub const OPENED_FROM_DST: u32 = 2;
/// `PolicyConnection.flags`: a connection was opened from each side with the same
/// addresses and ports (the replies of both pass).
pub const BOTH_WAYS: u32 = 4;

/// The `POLICY_CT` key of a packet's `flow` (its lower address and port first), and
/// `OPENED_FROM_DST` if `flow` is the key swapped (else 0).
#[inline(always)]
pub fn connection_key(flow: &crate::FlowKey) -> (crate::FlowKey, u32) {
    if (flow.src, flow.sport) <= (flow.dst, flow.dport) {
        (*flow, 0)
    } else {
        let swapped = crate::FlowKey { src: flow.dst, dst: flow.src, sport: flow.dport, dport: flow.sport, ..*flow };
        (swapped, OPENED_FROM_DST)
    }
}

impl PolicyConnection {
    /// Whether it tracks a connection opened by a packet of `direction` (a
    /// `connection_key` flag): that packet's replies pass.
    #[inline(always)]
    pub fn opened(&self, direction: u32) -> bool {
        self.flags & BOTH_WAYS != 0 || self.flags & OPENED_FROM_DST == direction
    }
}

/// `PolicyConnection.egress_count`/`ingress_count`: a node-wide rule's id, a policy
/// rule's (`POLICY_COUNT` | matched rule index << 16 | counter slot), or `NO_COUNT`.
pub const POLICY_COUNT: u32 = 1 << 31;
pub const NO_COUNT: u32 = POLICY_COUNT - 1;
/// Matched rule indexes a count can hold (a larger one is not cached).
pub const MAX_COUNTED_RULE: u32 = 0x7fff;
