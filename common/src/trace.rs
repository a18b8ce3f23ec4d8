//! Trace mode: what a copy of the programs loaded for `oxsdnctl trace` (or for measuring
//! them) is told through the `MODE` global, and what it records in its `TRACE` map.
//!
//! The agent loads the programs with `MODE` = 0. The loader freezes the global, so the
//! verifier knows its value and removes every branch that tests it: the live programs
//! run none of this.

/// `MODE` bit: record every rule a packet passes and the decision in `TRACE`, bump no
/// counter and write no other map (connection tracking and fragments included; lookups
/// still happen). The ingress port of `from_pod` is taken from `cb[CB_IN_PORT]`, so a
/// trace needs no interface of the node.
pub const MODE_TRACE: u32 = 1;
/// `MODE` bit: a frame run with BPF_PROG_TEST_RUN carries no tunnel metadata; when
/// `from_tunnel` finds none, it takes the tunnel source and VNI from `cb[CB_TUN_SRC]` and
/// `cb[CB_VNI]`. Otherwise the live code path, for measuring `from_tunnel`.
pub const MODE_TEST_INPUT: u32 = 2;

/// `__sk_buff.cb` slots of a test run's inputs.
pub const CB_IN_PORT: usize = 0;
/// The tunnel's source (a node's underlay IP, wire order as everywhere in the maps).
pub const CB_TUN_SRC: usize = 1;
pub const CB_VNI: usize = 2;

/// Rules a trace can hold; a packet passes far fewer (at most about ten).
pub const MAX_HOPS: usize = 32;

/// `TraceHop.kind`: which counter the rule has, hence what `TraceHop.key` is.
pub mod hop_kind {
    /// A node-wide rule, `rule` its id (`oxsdn_tables`, scope `node`); no key.
    pub const NODE_WIDE: u32 = 1;
    /// A per-pod rule (`Env::count_pod`); key: the pod's IP.
    pub const POD: u32 = 2;
    /// A per-remote-node rule (`Env::count_remote_node`); key: the node's counter slot.
    pub const REMOTE_NODE: u32 = 3;
    /// Table 60's rule of a service port or ClusterIP; key: its counter slot.
    pub const SERVICE: u32 = 4;
    /// A per-policy rule; key: the policy's counter slot in the low 16 bits, the index
    /// of the policy's rule that matched in the high 16.
    pub const POLICY: u32 = 5;
    /// An egress firewall entry (table 101); key: its counter slot.
    pub const EGRESS: u32 = 6;
}

/// `TraceRecord.output`: the kind of `Output` the pipeline chose.
pub mod output_kind {
    pub const DROP: u32 = 0;
    pub const TUN0: u32 = 1;
    pub const POD: u32 = 2;
    pub const TUNNEL: u32 = 3;
    /// Multicast of VNID `vni` to its local pods (but the sender's port), and to the
    /// other nodes when `ifindex` is vxlan0's (0: local pods only); tables 111 and 120.
    pub const MULTICAST: u32 = 4;
}

crate::wire! {
    /// One rule the packet matched, in the order it matched them.
    pub struct TraceHop {
        pub kind: u32,
        pub rule: u32,
        pub key: u32,
    }

    /// The single entry of the `TRACE` map after a trace-mode run (userspace zeroes it
    /// before each run).
    pub struct TraceRecord {
        /// Number of valid entries of `hop`.
        pub hops: u32,
        /// Non-zero once the pipeline chose an output (`output` and what follows are set).
        pub decided: u32,
        pub output: u32,
        /// `Pod`: the pod's host veth (reg2); `Tun0`: tun0's ifindex; `Tunnel`: vxlan0's.
        pub ifindex: u32,
        /// `Pod`: the pod's IP.
        pub pod_ip: u32,
        /// `Tunnel`: the remote node's underlay IP and the VNI.
        pub node_ip: u32,
        pub vni: u32,
        /// Bit 0: reg0 was set (source VNID); bit 1: reg1 was set (destination VNID).
        pub regs_set: u32,
        pub reg0: u32,
        pub reg1: u32,
        /// The service translation: non-zero `xlate_active` when there is one.
        pub xlate_active: u32,
        pub xlate_src: u32,
        pub xlate_dst: u32,
        pub xlate_sport: u16,
        pub xlate_dport: u16,
        pub hop: [TraceHop; MAX_HOPS],
    }
}

pub const REG0_SET: u32 = 1;
pub const REG1_SET: u32 = 2;
