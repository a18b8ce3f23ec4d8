//! The maps, pinned by name in the node's bpffs directory so they outlive the agent.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use oxsdn_common::{
    rules::MAX_RULES, Counter, LocalPod, NodeConfig, PodPort, MAX_LOCAL_PODS, MAX_POD_SLOTS,
    MAX_PROJECTS, POD_RULES,
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

/// Per-rule counters of the node-wide rules (`oxsdn_common::rules`).
#[map]
pub static RULE_STATS: PerCpuArray<Counter> = PerCpuArray::pinned(MAX_RULES, 0);

/// Per-pod rule counters (`oxsdn_common::pod_rule`).
#[map]
pub static POD_STATS: PerCpuArray<Counter> = PerCpuArray::pinned(MAX_POD_SLOTS * POD_RULES, 0);
