//! The contract between the eBPF programs (`oxsdn-ebpf`) and userspace: the pinned maps
//! (`maps`), their keys and values (`entries`), how they hold addresses (`addr`), where
//! counters live (`stats`), and what a trace records (`trace`). Everything is
//! `#[repr(C)]` plain data, so both sides agree on the layout byte for byte.
#![no_std]

pub mod addr;
pub mod bandwidth;
pub mod conntrack;
pub mod egress;
pub mod egress_ip;
pub mod entries;
pub mod maps;
pub mod mode;
pub mod monitor;
pub mod multicast;
pub mod policy;
pub mod stats;
pub mod trace;
pub mod wire;
pub mod xdp_decap;

pub use entries::*;
pub use maps::LAYOUT_VERSION;

/// Largest number of addresses in a node subnet the per-pod slots can index
/// (hostSubnetLength <= 12).
pub const MAX_HOST_SUBNET_BITS: u32 = 12;
pub const MAX_POD_SLOTS: u32 = 1 << MAX_HOST_SUBNET_BITS;
/// Projects a node can know at once (node-local slots; the controller's ids are not
/// reused, so they are not indexes).
pub const MAX_PROJECT_SLOTS: u32 = 65536;
/// Remote nodes a node can know (the size of the per-node counter slots).
pub const MAX_NODES: u32 = 4096;
/// Service ports plus service IPs a node can hold (their counter slots).
pub const MAX_SERVICE_SLOTS: u32 = 32768;
/// Endpoints of all services together.
pub const MAX_ENDPOINTS: u32 = 65536;
/// Service connections tracked at once (`conntrack`).
pub const MAX_CONNECTIONS: u32 = 131072;
/// IPv4 datagrams in fragments tracked at once (LRU).
pub const MAX_FRAGMENTED: u32 = 8192;
/// Addresses and ports of the cluster store pods may not reach.
pub const MAX_STORE_ENDPOINTS: u32 = 64;
/// Source networks the underlay prefilter's deny list holds at most.
pub const MAX_PREFILTER_DENY: u32 = 1024;
/// Size of `RULE_STATS`: room for the rules later tables add without resizing the map.
pub const MAX_RULES: u32 = 128;
/// Per-pod rules (ids in `oxsdn-tables`), counted per pod slot.
pub const POD_RULES: u32 = 4;
/// Per-remote-node rules, counted per node slot.
pub const NODE_RULES: u32 = 3;
