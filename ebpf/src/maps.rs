//! The maps, pinned by name in the node's bpffs directory so they outlive the agent.

use aya_ebpf::{
    macros::map,
    maps::{lpm_trie::LpmTrie, Array, HashMap, LruHashMap, PerCpuArray},
};
use oxsdn_common::{
    rules::MAX_RULES, BackendKey, BackendMember, Counter, FlowKey, FragmentKey, FragmentPorts, LocalPod,
    NodeConfig, PodPort, RemoteNode, ServiceConnection, ServiceIp, ServiceKey, ServicePort, ServiceReply,
    MAX_BACKENDS, MAX_CONNECTIONS, MAX_FRAGMENTED, MAX_LOCAL_PODS, MAX_NODES, MAX_POD_SLOTS, MAX_PROJECTS,
    MAX_SERVICE_SLOTS, NODE_RULES, POD_RULES,
};

/// Entry 0: the node's addresses and settings.
#[map]
pub static CONFIG: Array<NodeConfig> = Array::pinned(1, 0);

/// Pod IPv4 -> where it is plugged in and its project (tables 40 and 70).
#[map]
pub static PODS: HashMap<u32, LocalPod> = HashMap::pinned(MAX_LOCAL_PODS, 0);

/// Host-side veth ifindex -> the pod's IP and project (table 20).
#[map]
pub static POD_PORTS: HashMap<u32, PodPort> = HashMap::pinned(MAX_LOCAL_PODS, 0);

/// Project -> VNID. One entry per project, so renumbering a project is one update.
#[map]
pub static PROJECT_VNID: HashMap<u32, u32> = HashMap::pinned(MAX_PROJECTS, 0);

/// Subnet of a remote node (longest prefix) -> the node (tables 50 and 90).
#[map]
pub static REMOTE_SUBNETS: LpmTrie<u32, RemoteNode> = LpmTrie::pinned(MAX_NODES, 1);

/// Underlay IP of a remote node -> the node (table 10: VXLAN only from known nodes).
#[map]
pub static NODE_IPS: HashMap<u32, RemoteNode> = HashMap::pinned(MAX_NODES, 0);

/// Per-rule counters of the node-wide rules (`oxsdn_common::rules`).
#[map]
pub static RULE_STATS: PerCpuArray<Counter> = PerCpuArray::pinned(MAX_RULES, 0);

/// Per-pod rule counters (`oxsdn_common::pod_rule`).
#[map]
pub static POD_STATS: PerCpuArray<Counter> = PerCpuArray::pinned(MAX_POD_SLOTS * POD_RULES, 0);

/// Per-remote-node rule counters (`oxsdn_common::node_rule`).
#[map]
pub static NODE_STATS: PerCpuArray<Counter> = PerCpuArray::pinned(MAX_NODES * NODE_RULES, 0);

/// Declared service ports (table 60's per-port rules).
#[map]
pub static SERVICES: HashMap<ServiceKey, ServicePort> = HashMap::pinned(MAX_SERVICE_SLOTS, 0);

/// ClusterIPs (table 60's rules for fragments after the first).
#[map]
pub static SERVICE_IPS: HashMap<u32, ServiceIp> = HashMap::pinned(MAX_SERVICE_SLOTS, 0);

/// A service's endpoints by index, for picking one.
#[map]
pub static BACKENDS: HashMap<BackendKey, u32> = HashMap::pinned(MAX_BACKENDS, 0);

/// Whether an endpoint still belongs to a service.
#[map]
pub static BACKEND_SET: HashMap<BackendMember, u8> = HashMap::pinned(MAX_BACKENDS, 0);

/// Endpoints that left a service -> the end of their drain window (`bpf_ktime_get_ns`
/// time): until then, tracked TCP connections to them keep them.
#[map]
pub static DRAINING: HashMap<BackendMember, u64> = HashMap::pinned(MAX_BACKENDS, 0);

/// Client -> service connections and the endpoint each was given (stickiness).
#[map]
pub static CT_FORWARD: LruHashMap<FlowKey, ServiceConnection> = LruHashMap::pinned(MAX_CONNECTIONS, 0);

/// Endpoint -> client packets of those connections, and the addresses to restore.
#[map]
pub static CT_REVERSE: LruHashMap<FlowKey, ServiceReply> = LruHashMap::pinned(MAX_CONNECTIONS, 0);

/// The ports of fragmented datagrams, for their later fragments.
#[map]
pub static FRAGMENTS: LruHashMap<FragmentKey, FragmentPorts> = LruHashMap::pinned(MAX_FRAGMENTED, 0);

/// Per-service-port and per-ClusterIP rule counters (table 60).
#[map]
pub static SERVICE_STATS: PerCpuArray<Counter> = PerCpuArray::pinned(MAX_SERVICE_SLOTS, 0);
