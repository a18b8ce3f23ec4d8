//! The node's pinned maps from userspace: the typed handles of the contract
//! (`oxsdn_common::maps::NodeMaps`), and what the agent, `dump-flows` and the tests do
//! with them beyond single entries.

use std::{net::Ipv4Addr, path::Path};

use anyhow::{Context, Result};
use aya::maps::{Array, Map, MapData, MapError, PerCpuArray};
use oxsdn_common::{addr::pod_slot, Counter, NodeConfig, PodEntry};
pub use oxsdn_common::{
    addr::{ip_from_key, ip_key},
    maps::NodeMaps,
};

/// The name the contract gives the node's `CONFIG` map (and its pin).
pub const CONFIG: &str = "CONFIG";

/// The node config alone, from the pins of any agent with this `NodeConfig` layout (one
/// of another layout may lack other maps).
pub fn pinned_node_config(dir: &Path) -> Result<NodeConfig> {
    let path = dir.join(CONFIG);
    let data = MapData::from_pin(&path).with_context(|| format!("opening pinned map {}", path.display()))?;
    let config: Array<MapData, NodeConfig> = Array::try_from(Map::Array(data))?;
    Ok(config.get(&0, 0)?)
}

/// Sum of a per-CPU counter over all CPUs.
pub fn total(stats: &PerCpuArray<MapData, Counter>, index: u32) -> Result<Counter> {
    let per_cpu = stats.get(&index, 0)?;
    Ok(per_cpu
        .iter()
        .fold(Counter::default(), |acc, c| Counter { packets: acc.packets + c.packets, bytes: acc.bytes + c.bytes }))
}

/// Sets a per-CPU counter to zero on every CPU (a slot handed to a new pod or node).
pub fn reset(stats: &mut PerCpuArray<MapData, Counter>, index: u32) -> Result<()> {
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    stats.set(index, aya::maps::PerCpuValues::try_from(vec![Counter::default(); cpus])?, 0)?;
    Ok(())
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of the programs' `bpf_ktime_get_ns`, in
/// which the maps' timestamps are.
pub fn monotonic_ns() -> u64 {
    let now =
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC is always readable");
    now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64
}

/// A removal that finds the entry gone already is done.
pub fn ignore_missing(r: Result<(), MapError>) -> Result<()> {
    match r {
        Err(MapError::KeyNotFound) | Ok(()) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Reading the local pods of `PODS`.
pub trait LocalPods {
    /// Every occupied slot with its pod.
    fn local_pods(&self) -> Result<Vec<(u32, PodEntry)>>;
    /// The local pod with address `ip`.
    fn local_pod(&self, ip: Ipv4Addr) -> Result<Option<PodEntry>>;
    /// The pod port (host veth ifindex) of the local pod with address `ip`.
    fn pod_port(&self, ip: Ipv4Addr) -> Result<u32>;
}

impl LocalPods for NodeMaps {
    fn local_pods(&self) -> Result<Vec<(u32, PodEntry)>> {
        let mut pods = Vec::new();
        for slot in 0..oxsdn_common::MAX_POD_SLOTS {
            let pod = self.pods.get(&slot, 0)?;
            if pod.ifindex != 0 {
                pods.push((slot, pod));
            }
        }
        Ok(pods)
    }

    fn local_pod(&self, ip: Ipv4Addr) -> Result<Option<PodEntry>> {
        let mask = self.config.get(&0, 0)?.local_mask;
        let pod = self.pods.get(&pod_slot(ip_key(ip), mask), 0)?;
        Ok(Some(pod).filter(|p| p.ifindex != 0 && p.ip == ip_key(ip)))
    }

    fn pod_port(&self, ip: Ipv4Addr) -> Result<u32> {
        self.local_pod(ip)?.map(|p| p.ifindex).with_context(|| format!("no pod with address {ip} on this node"))
    }
}
