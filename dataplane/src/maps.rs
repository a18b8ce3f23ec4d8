//! Typed handles on a node's pinned maps. The agent writes them; `oxsdnctl dump-flows`
//! reads them. Both open the pins, so neither depends on the other being alive.

use std::path::Path;

use anyhow::{Context, Result};
use aya::maps::{lpm_trie::LpmTrie, Array, HashMap, Map, MapData, PerCpuArray};
use oxsdn_common::{
    BackendKey, BackendMember, Counter, LocalPod, NodeConfig, PodPort, RemoteNode, ServiceIp, ServiceKey, ServicePort,
};

/// Names of the maps, as the eBPF object declares them and as they are pinned.
pub mod names {
    pub const CONFIG: &str = "CONFIG";
    pub const PODS: &str = "PODS";
    pub const POD_PORTS: &str = "POD_PORTS";
    pub const PROJECT_VNID: &str = "PROJECT_VNID";
    pub const RULE_STATS: &str = "RULE_STATS";
    pub const POD_STATS: &str = "POD_STATS";
    pub const REMOTE_SUBNETS: &str = "REMOTE_SUBNETS";
    pub const NODE_IPS: &str = "NODE_IPS";
    pub const NODE_STATS: &str = "NODE_STATS";
    pub const SERVICES: &str = "SERVICES";
    pub const SERVICE_IPS: &str = "SERVICE_IPS";
    pub const BACKENDS: &str = "BACKENDS";
    pub const BACKEND_SET: &str = "BACKEND_SET";
    pub const DRAINING: &str = "DRAINING";
    pub const SERVICE_STATS: &str = "SERVICE_STATS";
}

pub struct NodeMaps {
    pub config: Array<MapData, NodeConfig>,
    pub pods: HashMap<MapData, u32, LocalPod>,
    pub pod_ports: HashMap<MapData, u32, PodPort>,
    pub project_vnid: HashMap<MapData, u32, u32>,
    pub rule_stats: PerCpuArray<MapData, Counter>,
    pub pod_stats: PerCpuArray<MapData, Counter>,
    pub remote_subnets: LpmTrie<MapData, u32, RemoteNode>,
    pub node_ips: HashMap<MapData, u32, RemoteNode>,
    pub node_stats: PerCpuArray<MapData, Counter>,
    pub services: HashMap<MapData, ServiceKey, ServicePort>,
    pub service_ips: HashMap<MapData, u32, ServiceIp>,
    pub backends: HashMap<MapData, BackendKey, u32>,
    pub backend_set: HashMap<MapData, BackendMember, u8>,
    /// Endpoints that left a service -> end of their drain window (CLOCK_MONOTONIC ns).
    pub draining: HashMap<MapData, BackendMember, u64>,
    pub service_stats: PerCpuArray<MapData, Counter>,
}

fn pinned(dir: &Path, name: &str) -> Result<MapData> {
    let path = dir.join(name);
    MapData::from_pin(&path).with_context(|| format!("opening pinned map {}", path.display()))
}

impl NodeMaps {
    /// Opens the maps pinned in a node's bpffs directory.
    pub fn open(dir: &Path) -> Result<Self> {
        Ok(NodeMaps {
            config: Array::try_from(Map::Array(pinned(dir, names::CONFIG)?))?,
            pods: HashMap::try_from(Map::HashMap(pinned(dir, names::PODS)?))?,
            pod_ports: HashMap::try_from(Map::HashMap(pinned(dir, names::POD_PORTS)?))?,
            project_vnid: HashMap::try_from(Map::HashMap(pinned(dir, names::PROJECT_VNID)?))?,
            rule_stats: PerCpuArray::try_from(Map::PerCpuArray(pinned(dir, names::RULE_STATS)?))?,
            pod_stats: PerCpuArray::try_from(Map::PerCpuArray(pinned(dir, names::POD_STATS)?))?,
            remote_subnets: LpmTrie::try_from(Map::LpmTrie(pinned(dir, names::REMOTE_SUBNETS)?))?,
            node_ips: HashMap::try_from(Map::HashMap(pinned(dir, names::NODE_IPS)?))?,
            node_stats: PerCpuArray::try_from(Map::PerCpuArray(pinned(dir, names::NODE_STATS)?))?,
            services: HashMap::try_from(Map::HashMap(pinned(dir, names::SERVICES)?))?,
            service_ips: HashMap::try_from(Map::HashMap(pinned(dir, names::SERVICE_IPS)?))?,
            backends: HashMap::try_from(Map::HashMap(pinned(dir, names::BACKENDS)?))?,
            backend_set: HashMap::try_from(Map::HashMap(pinned(dir, names::BACKEND_SET)?))?,
            draining: HashMap::try_from(Map::HashMap(pinned(dir, names::DRAINING)?))?,
            service_stats: PerCpuArray::try_from(Map::PerCpuArray(pinned(dir, names::SERVICE_STATS)?))?,
        })
    }

    pub fn node_config(&self) -> Result<NodeConfig> {
        Ok(self.config.get(&0, 0)?)
    }

    /// The node config alone, from the pins of any agent with this `NodeConfig` layout
    /// (one from before a map was added lacks that map).
    pub fn pinned_node_config(dir: &Path) -> Result<NodeConfig> {
        let config: Array<MapData, NodeConfig> = Array::try_from(Map::Array(pinned(dir, names::CONFIG)?))?;
        Ok(config.get(&0, 0)?)
    }

    /// The pod port (host veth ifindex, the key of `POD_PORTS`) of the local pod with
    /// address `ip`.
    pub fn pod_port(&self, ip: std::net::Ipv4Addr) -> Result<u32> {
        for entry in self.pod_ports.iter() {
            let (ifindex, port) = entry?;
            if port.ip == ip_key(ip) {
                return Ok(ifindex);
            }
        }
        anyhow::bail!("no pod with address {ip} on this node")
    }
}

/// Sum of a per-CPU counter over all CPUs.
pub fn total(stats: &PerCpuArray<MapData, Counter>, index: u32) -> Result<Counter> {
    let per_cpu = stats.get(&index, 0)?;
    Ok(per_cpu.iter().fold(Counter::default(), |acc, c| Counter {
        packets: acc.packets + c.packets,
        bytes: acc.bytes + c.bytes,
    }))
}

/// Sets a per-CPU counter to zero on every CPU (a slot handed to a new pod or node).
pub fn reset(stats: &mut PerCpuArray<MapData, Counter>, index: u32) -> Result<()> {
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    stats.set(index, aya::maps::PerCpuValues::try_from(vec![Counter::default(); cpus])?, 0)?;
    Ok(())
}

/// An IPv4 address as the maps hold it (wire byte order in a `u32`).
pub fn ip_key(ip: std::net::Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

pub fn ip_from_key(key: u32) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(key.to_ne_bytes())
}
