//! The pinned maps: each map's name, kind, key and value type, size and flags, declared
//! once in `for_each_map!`. The eBPF programs expand it into their map statics, userspace
//! into `NodeMaps` (feature `user`), and `SPECS` and `LAYOUT_VERSION` are derived from it
//! here, so the two sides and the version cannot drift apart.

use crate::wire::Wire;

/// The kinds of map the dataplane uses, with the kernel's `bpf_map_type` numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum MapKind {
    HashMap = 1,
    Array = 2,
    PerCpuArray = 6,
    LruHashMap = 9,
    LpmTrie = 11,
    RingBuf = 27,
}

/// `BPF_F_NO_PREALLOC`, which the kernel requires of LPM tries.
pub const NO_PREALLOC: u32 = 1;

/// One map of the contract.
#[derive(Clone, Copy, Debug)]
pub struct MapSpec {
    /// As pinned in the node's bpffs directory.
    pub name: &'static str,
    pub kind: MapKind,
    pub key_layout: &'static str,
    pub key_size: u32,
    pub value_layout: &'static str,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

/// Calls `$callback!` with every pinned map as `NAME field: Kind<Key, Value> [max_entries,
/// flags];` (doc comments first). Array keys are `u32` indexes; an LPM trie's key type is
/// that of the address in its `Key`. A ring buffer has no key (`()`), its value is the
/// record it carries (part of the layout version) and its size is in bytes.
#[macro_export]
macro_rules! for_each_map {
    ($callback:ident) => {
        $callback! {
            /// Entry 0: the node's addresses and settings.
            CONFIG config: Array<u32, $crate::NodeConfig> [1, 0];
            /// Local pods by slot (`addr::pod_slot`): tables 20, 40 and 70.
            PODS pods: Array<u32, $crate::PodEntry> [$crate::MAX_POD_SLOTS, 0];
            /// Local pods that are endpoints of a service, by slot: the pod's address, or
            /// 0. Their packets may be replies that need the service's address back.
            ENDPOINT_PODS endpoint_pods: Array<u32, u32> [$crate::MAX_POD_SLOTS, 0];
            /// Projects by node-local slot: the VNID of every pod of a project is one
            /// entry, so renumbering a project is one update.
            PROJECTS projects: Array<u32, $crate::ProjectEntry> [$crate::MAX_PROJECT_SLOTS, 0];
            /// Subnet of a remote node (longest prefix) -> the node (tables 50 and 90).
            REMOTE_SUBNETS remote_subnets: LpmTrie<u32, $crate::RemoteNode> [$crate::MAX_NODES, $crate::maps::NO_PREALLOC];
            /// Underlay IP of a remote node -> the node (table 10: VXLAN only from known
            /// nodes).
            NODE_IPS node_ips: HashMap<u32, $crate::RemoteNode> [$crate::MAX_NODES, 0];
            /// Declared service ports (table 60's per-port rules).
            SERVICES services: HashMap<$crate::ServiceKey, $crate::ServicePort> [$crate::MAX_SERVICE_SLOTS, 0];
            /// ClusterIPs (table 60's rules for fragments after the first).
            SERVICE_IPS service_ips: HashMap<u32, $crate::ServiceIp> [$crate::MAX_SERVICE_SLOTS, 0];
            /// A service's endpoints by index, for picking one.
            ENDPOINTS endpoints: HashMap<$crate::EndpointKey, u32> [$crate::MAX_ENDPOINTS, 0];
            /// Whether an endpoint still belongs to a service.
            ENDPOINT_SET endpoint_set: HashMap<$crate::EndpointMember, u8> [$crate::MAX_ENDPOINTS, 0];
            /// Endpoints that left a service -> the end of their drain window
            /// (`bpf_ktime_get_ns` time): until then, tracked TCP connections keep them.
            DRAINING draining: HashMap<$crate::EndpointMember, u64> [$crate::MAX_ENDPOINTS, 0];
            /// Client -> service connections and the endpoint each was given.
            CT_FORWARD ct_forward: HashMap<$crate::FlowKey, $crate::ServiceConnection> [$crate::MAX_CONNECTIONS, 0];
            /// Endpoint -> client packets of those connections, and the addresses to
            /// restore.
            CT_REVERSE ct_reverse: HashMap<$crate::FlowKey, $crate::ServiceReply> [$crate::MAX_CONNECTIONS, 0];
            /// Tracked connections per owner (`conntrack`).
            CT_SHARES ct_shares: Array<u32, u32> [$crate::conntrack::SHARES, $crate::conntrack::MMAPABLE];
            /// The ports of fragmented datagrams, for their later fragments.
            FRAGMENTS fragments: LruHashMap<$crate::FragmentKey, $crate::FragmentPorts> [$crate::MAX_FRAGMENTED, 0];
            /// The cluster store's client endpoints (and, for a store on this node, the
            /// node's gateway and address with its ports): pods may not connect to them.
            STORE_ENDPOINTS store_endpoints: HashMap<$crate::StoreEndpoint, u8> [$crate::MAX_STORE_ENDPOINTS, 0];
            /// Identities of the local pods, by slot (`policy`); 0: none yet.
            POD_IDENTITIES pod_identities: Array<u32, u32> [$crate::MAX_POD_SLOTS, 0];
            /// Identities of every pod of the cluster, by address.
            IP_IDENTITIES ip_identities: HashMap<u32, u32> [$crate::policy::MAX_CLUSTER_PODS, 0];
            /// What policies say of each identity.
            IDENTITIES identities: Array<u32, $crate::policy::IdentityPolicy> [$crate::policy::MAX_IDENTITIES, 0];
            /// What a subject identity may exchange with a peer identity, per direction.
            POLICY_PEERS policy_peers: HashMap<$crate::policy::PolicyKey, $crate::policy::PortSet> [$crate::policy::MAX_POLICY_PEERS, $crate::maps::NO_PREALLOC];
            /// What a subject identity may exchange with address blocks, per direction.
            POLICY_CIDRS policy_cidrs: LpmTrie<$crate::policy::PolicyCidr, $crate::policy::PortSet> [$crate::policy::MAX_POLICY_CIDRS, $crate::maps::NO_PREALLOC];
            /// Bumped by each write of the policy maps: a connection judged under an
            /// earlier one is judged again (`PolicyConnection.generation`).
            POLICY_GENERATION policy_generation: Array<u32, u32> [1, 0];
            /// Connections whose replies policies let through.
            POLICY_CT policy_ct: HashMap<$crate::FlowKey, $crate::policy::PolicyConnection> [$crate::policy::MAX_POLICY_CONNECTIONS, 0];
            /// The policy in each policy counter slot (absent: free).
            POLICY_SLOTS policy_slots: HashMap<u32, $crate::policy::PolicySlot> [$crate::policy::MAX_POLICIES, $crate::maps::NO_PREALLOC];
            /// Counters of the per-policy rules (`policy::POLICY_RULES` per slot).
            POLICY_STATS policy_stats: PerCpuArray<u32, $crate::Counter> [$crate::policy::MAX_POLICIES * $crate::policy::POLICY_RULES, 0];
            /// Egress firewall rules by VNID and destination prefix (table 101).
            EGRESS_CIDRS egress_cidrs: LpmTrie<$crate::egress::EgressCidr, $crate::egress::EgressVerdict> [$crate::egress::MAX_EGRESS_ENTRIES, $crate::maps::NO_PREALLOC];
            /// Counters of the egress firewall's entries, by `EgressVerdict.slot`.
            EGRESS_STATS egress_stats: PerCpuArray<u32, $crate::Counter> [$crate::egress::MAX_EGRESS_ENTRIES, 0];
            /// VNIDs whose multicast is enabled and that have local pods -> how many of
            /// them receive it (at most `multicast::MAX_MCAST_LOCAL_PODS`; tables 110, 120).
            MCAST_GROUPS mcast_groups: HashMap<u32, u32> [$crate::MAX_POD_SLOTS, 0];
            /// Those pods' host veths (ifindex), by VNID and index below the count.
            MCAST_PORTS mcast_ports: HashMap<$crate::multicast::McastPort, u32> [$crate::MAX_POD_SLOTS, 0];
            /// Entry 0: how many other nodes multicast is replicated to; entries 1..=that:
            /// their underlay addresses (table 111).
            MCAST_NODES mcast_nodes: Array<u32, u32> [$crate::multicast::MAX_MCAST_NODES + 1, 0];
            /// Egress IPs by VNID (table 100, `egress_ip`).
            EGRESS_IPS egress_ips: HashMap<u32, $crate::egress_ip::EgressIpEntry> [$crate::egress_ip::MAX_EGRESS_IP_PROJECTS, $crate::maps::NO_PREALLOC];
            /// Counters of the node-wide rules, by rule id.
            RULE_STATS rule_stats: PerCpuArray<u32, $crate::Counter> [$crate::MAX_RULES, 0];
            /// Counters of the per-pod rules (`stats::pod_index`).
            POD_STATS pod_stats: PerCpuArray<u32, $crate::Counter> [$crate::MAX_POD_SLOTS * $crate::POD_RULES, 0];
            /// Counters of the per-remote-node rules (`stats::node_index`).
            NODE_STATS node_stats: PerCpuArray<u32, $crate::Counter> [$crate::MAX_NODES * $crate::NODE_RULES, 0];
            /// Counters of the per-service-port and per-ClusterIP rules (table 60).
            SERVICE_STATS service_stats: PerCpuArray<u32, $crate::Counter> [$crate::MAX_SERVICE_SLOTS, 0];
            /// Dropped packets by their source (`monitor::drop_source`): a project slot,
            /// the host, the tunnel, or an unidentified pod.
            SOURCE_DROPS source_drops: PerCpuArray<u32, u64> [$crate::monitor::SOURCES, 0];
            /// Entry 0: what the running `oxsdnctl monitor` wants reported (none: 0).
            MONITOR_CONFIG monitor_config: Array<u32, $crate::monitor::MonitorConfig> [1, 0];
            /// Entry 0, per CPU: the monitor's token bucket and what it suppressed.
            MONITOR_BUDGET monitor_budget: PerCpuArray<u32, $crate::monitor::MonitorBudget> [1, 0];
            /// The monitor's events.
            MONITOR_EVENTS monitor_events: RingBuf<(), $crate::monitor::MonitorEvent> [$crate::monitor::EVENTS_BYTES, 0];
            /// Source networks the operator denies at the underlay device (the XDP
            /// prefilter, table 0): every IPv4 frame from them is dropped there. The value
            /// is unused (1).
            PREFILTER_DENY prefilter_deny: LpmTrie<u32, u8> [$crate::MAX_PREFILTER_DENY, $crate::maps::NO_PREALLOC];
            /// Pods' bandwidth limits by slot (table 252); the agent writes them.
            BANDWIDTH bandwidth: Array<u32, $crate::bandwidth::PodBandwidth> [$crate::MAX_POD_SLOTS, 0];
            /// Pods' last departure times by slot (table 252); the programs write them.
            PACING pacing: Array<u32, $crate::bandwidth::Pacing> [$crate::MAX_POD_SLOTS, 0];
        }
    };
}

macro_rules! specs {
    ($( $(#[$doc:meta])* $name:ident $field:ident : $kind:ident < $k:ty, $v:ty > [$max:expr, $flags:expr]; )*) => {
        /// Every pinned map, in declaration order.
        pub const SPECS: &[MapSpec] = &[$(MapSpec {
            name: stringify!($name),
            kind: MapKind::$kind,
            key_layout: <$k as Wire>::LAYOUT,
            key_size: core::mem::size_of::<$k>() as u32,
            value_layout: <$v as Wire>::LAYOUT,
            value_size: core::mem::size_of::<$v>() as u32,
            max_entries: $max,
            flags: $flags,
        }),*];
    };
}

for_each_map!(specs);

/// FNV-1a, step by step in a const context.
const fn fnv(mut hash: u32, bytes: &[u8]) -> u32 {
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u32;
        hash = hash.wrapping_mul(0x0100_0193);
        i += 1;
    }
    hash
}

/// A fingerprint of the maps' layout: names, kinds, key and value layouts (their field
/// lists as declared), sizes and flags. Never 0 (0 marks a `CONFIG` no agent wrote).
pub const fn fingerprint(specs: &[MapSpec]) -> u32 {
    let mut hash = 0x811c_9dc5;
    let mut i = 0;
    while i < specs.len() {
        let s = &specs[i];
        hash = fnv(hash, s.name.as_bytes());
        hash = fnv(hash, &(s.kind as u32).to_le_bytes());
        hash = fnv(hash, s.key_layout.as_bytes());
        hash = fnv(hash, &s.key_size.to_le_bytes());
        hash = fnv(hash, s.value_layout.as_bytes());
        hash = fnv(hash, &s.value_size.to_le_bytes());
        hash = fnv(hash, &s.max_entries.to_le_bytes());
        hash = fnv(hash, &s.flags.to_le_bytes());
        i += 1;
    }
    if hash == 0 {
        1
    } else {
        hash
    }
}

/// The layout of this build's pinned maps, stamped in `CONFIG`. An agent that finds pins
/// of another layout removes them and builds the dataplane afresh instead of mixing
/// layouts (the role of OpenShift SDN's table 253 note). Derived from `SPECS`: any change
/// to a map or to the fields of its key or value changes it.
pub const LAYOUT_VERSION: u32 = fingerprint(SPECS);

#[cfg(feature = "user")]
pub use user::NodeMaps;

#[cfg(feature = "user")]
mod user {
    extern crate std;

    use std::{format, path::Path};

    use anyhow::Context;
    use aya::maps::{Map, MapData};

    /// The userspace handle type of a map kind.
    macro_rules! handle {
        (Array, $k:ty, $v:ty) => { aya::maps::Array<MapData, $v> };
        (PerCpuArray, $k:ty, $v:ty) => { aya::maps::PerCpuArray<MapData, $v> };
        (HashMap, $k:ty, $v:ty) => { aya::maps::HashMap<MapData, $k, $v> };
        (LruHashMap, $k:ty, $v:ty) => { aya::maps::HashMap<MapData, $k, $v> };
        (LpmTrie, $k:ty, $v:ty) => { aya::maps::LpmTrie<MapData, $k, $v> };
        // Left as a `Map`: its one reader (`oxsdnctl monitor`) maps its pages itself.
        (RingBuf, $k:ty, $v:ty) => { Map };
    }

    /// The handle of a map kind from the pinned map.
    macro_rules! open {
        (RingBuf, $k:ty, $v:ty, $data:expr) => {
            Map::RingBuf($data)
        };
        ($kind:ident, $k:ty, $v:ty, $data:expr) => {
            <handle!($kind, $k, $v)>::try_from(Map::$kind($data))?
        };
    }

    macro_rules! node_maps {
        ($( $(#[$doc:meta])* $name:ident $field:ident : $kind:ident < $k:ty, $v:ty > [$max:expr, $flags:expr]; )*) => {
            /// Typed handles on a node's pinned maps. The agent writes them; `oxsdnctl`
            /// reads them. Both open the pins, so neither depends on the other being alive.
            pub struct NodeMaps {
                $( $(#[$doc])* pub $field: handle!($kind, $k, $v), )*
            }

            impl NodeMaps {
                /// Opens the maps pinned in a node's bpffs directory.
                pub fn open(dir: &Path) -> anyhow::Result<NodeMaps> {
                    Ok(NodeMaps {
                        $( $field: open!($kind, $k, $v, pinned(dir, stringify!($name))?), )*
                    })
                }
            }
        };
    }

    crate::for_each_map!(node_maps);

    fn pinned(dir: &Path, name: &str) -> anyhow::Result<MapData> {
        let path = dir.join(name);
        MapData::from_pin(&path).with_context(|| format!("opening pinned map {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_version_follows_every_field_of_the_specs() {
        let mut changed = [SPECS[0]];
        let base = fingerprint(&changed);
        for edit in [
            |s: &mut MapSpec| s.max_entries += 1,
            |s: &mut MapSpec| s.value_layout = "NodeConfig { other }",
            |s: &mut MapSpec| s.flags = 1,
            |s: &mut MapSpec| s.kind = MapKind::HashMap,
        ] {
            changed = [SPECS[0]];
            edit(&mut changed[0]);
            assert_ne!(fingerprint(&changed), base);
        }
        assert_eq!(LAYOUT_VERSION, fingerprint(SPECS));
        assert_ne!(LAYOUT_VERSION, 0);
    }

    #[test]
    fn map_names_are_unique() {
        for (i, a) in SPECS.iter().enumerate() {
            assert!(SPECS[i + 1..].iter().all(|b| b.name != a.name), "{} twice", a.name);
        }
    }
}
