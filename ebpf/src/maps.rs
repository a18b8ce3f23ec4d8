//! The maps, pinned by name in the node's bpffs directory so they outlive the agent.

use aya_ebpf::{
    macros::map,
    maps::{lpm_trie::LpmTrie, Array, HashMap, PerCpuArray},
};
use oxsdn_common::{
    rules::MAX_RULES, Counter, LocalPod, NodeConfig, PodPort, RemoteNode, MAX_LOCAL_PODS, MAX_NODES,
    MAX_POD_SLOTS, MAX_PROJECTS, NODE_RULES, POD_RULES,
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
