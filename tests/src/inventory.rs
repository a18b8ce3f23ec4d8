//! What a node holds for its pods, projects, nodes and services, read from outside the
//! agent (pinned maps, link pins, veths, the pod table): compared before and after an
//! agent restart, or at the start and end of a soak, it shows stale, duplicated or
//! leaked state.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use oxsdn_common::{maps::NodeMaps, MAX_POD_SLOTS, MAX_PROJECT_SLOTS};
use serde_json::Value;

use crate::Node;

/// The maps whose entries follow pods, projects, nodes and services (the per-CPU counter
/// arrays have fixed sizes; the tracking tables follow traffic).
pub const ENTRY_MAPS: [&str; 9] = [
    "PODS",
    "ENDPOINT_PODS",
    "PROJECTS",
    "SERVICES",
    "SERVICE_IPS",
    "ENDPOINTS",
    "ENDPOINT_SET",
    "REMOTE_SUBNETS",
    "NODE_IPS",
];

/// The entries of one of the `ENTRY_MAPS` (or `DRAINING`) of a node (array slots only
/// when in use), one text each, sorted.
pub fn pinned_entries(node: &Node, map: &str) -> Result<Vec<String>> {
    let maps = NodeMaps::open(&node.pin_dir())?;
    let mut texts: Vec<String> = match map {
        "PODS" => used_slots(&maps.pods, MAX_POD_SLOTS, |pod| pod.ifindex != 0)?,
        "ENDPOINT_PODS" => used_slots(&maps.endpoint_pods, MAX_POD_SLOTS, |ip| *ip != 0)?,
        "PROJECTS" => used_slots(&maps.projects, MAX_PROJECT_SLOTS, |p| p.id != 0)?,
        "SERVICES" => entries(maps.services.iter())?,
        "SERVICE_IPS" => entries(maps.service_ips.iter())?,
        "ENDPOINTS" => entries(maps.endpoints.iter())?,
        "ENDPOINT_SET" => entries(maps.endpoint_set.iter())?,
        "REMOTE_SUBNETS" => entries(
            maps.remote_subnets.iter().map(|e| e.map(|(k, v)| (format!("{}/{}", k.data(), k.prefix_len()), v))),
        )?,
        "NODE_IPS" => entries(maps.node_ips.iter())?,
        "DRAINING" => entries(maps.draining.iter())?,
        other => anyhow::bail!("no entries of {other} here"),
    };
    texts.sort();
    Ok(texts)
}

/// `slot=value` of an array map's slots that `used` says hold something.
fn used_slots<V: aya::Pod + std::fmt::Debug>(
    array: &aya::maps::Array<aya::maps::MapData, V>,
    slots: u32,
    used: impl Fn(&V) -> bool,
) -> Result<Vec<String>> {
    let mut texts = Vec::new();
    for slot in 0..slots {
        let value = array.get(&slot, 0)?;
        if used(&value) {
            texts.push(format!("{slot}={value:?}"));
        }
    }
    Ok(texts)
}

/// `key=value` of a hash map's entries.
fn entries<K: std::fmt::Debug, V: std::fmt::Debug>(
    iter: impl Iterator<Item = Result<(K, V), aya::maps::MapError>>,
) -> Result<Vec<String>> {
    iter.map(|e| Ok(e.map(|(k, v)| format!("{k:?}={v:?}"))?)).collect()
}

/// Host-side pod veths on the node (`ox…`).
pub fn pod_veths(node: &Node) -> Result<BTreeSet<String>> {
    let out = node.netns.ip(&["-o", "link", "show"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n.starts_with("ox"))
        .collect())
}

/// The pod records of the node's pod table.
pub fn pod_records(node: &Node) -> Result<Vec<Value>> {
    let path = node.state_dir.join("pods.json");
    let table: Value = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    Ok(table["pods"].as_array().cloned().unwrap_or_default())
}

#[derive(Debug, PartialEq, Eq)]
pub struct Inventory {
    pub maps: BTreeMap<&'static str, Vec<String>>,
    /// Link pins under `<pin dir>/links`.
    pub link_pins: BTreeSet<String>,
    pub pod_veths: BTreeSet<String>,
    pub pod_records: Vec<Value>,
}

impl Inventory {
    pub fn take(node: &Node) -> Result<Inventory> {
        let mut maps = BTreeMap::new();
        for map in ENTRY_MAPS {
            maps.insert(map, pinned_entries(node, map)?);
        }
        let link_pins = std::fs::read_dir(node.pin_dir().join("links"))?
            .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_>>()?;
        Ok(Inventory { maps, link_pins, pod_veths: pod_veths(node)?, pod_records: pod_records(node)? })
    }

    /// Entry counts, for reports: `PODS=3 PROJECTS=2 … pins=5 veths=3 records=3`.
    pub fn summary(&self) -> String {
        let maps = self.maps.iter().map(|(m, e)| format!("{m}={}", e.len()));
        let rest = [
            format!("pins={}", self.link_pins.len()),
            format!("veths={}", self.pod_veths.len()),
            format!("records={}", self.pod_records.len()),
        ];
        maps.chain(rest).collect::<Vec<_>>().join(" ")
    }

    /// What differs from `other`, one line per map or set (empty if nothing).
    pub fn differences(&self, other: &Inventory) -> Vec<String> {
        let mut diffs = Vec::new();
        for (map, entries) in &self.maps {
            let theirs = &other.maps[map];
            if entries != theirs {
                let gone: Vec<_> = entries.iter().filter(|e| !theirs.contains(e)).collect();
                let new: Vec<_> = theirs.iter().filter(|e| !entries.contains(e)).collect();
                diffs.push(format!(
                    "{map}: {} -> {} entries; only before: {gone:?}; only after: {new:?}",
                    entries.len(),
                    theirs.len()
                ));
            }
        }
        if self.link_pins != other.link_pins {
            diffs.push(format!("link pins: {:?} -> {:?}", self.link_pins, other.link_pins));
        }
        if self.pod_veths != other.pod_veths {
            diffs.push(format!("pod veths: {:?} -> {:?}", self.pod_veths, other.pod_veths));
        }
        if self.pod_records != other.pod_records {
            diffs.push(format!("pod records: {} -> {}", self.pod_records.len(), other.pod_records.len()));
        }
        diffs
    }
}
