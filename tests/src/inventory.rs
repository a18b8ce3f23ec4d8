//! What a node holds for its pods, projects, nodes and services, read from outside the
//! agent (pinned maps through bpftool, link pins, veths, the pod table): compared
//! before and after an agent restart, or at the start and end of a soak, it shows
//! stale, duplicated or leaked state.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::{netns::run, Node};

/// The hash and LPM maps whose entries follow pods, projects, nodes and services (the
/// per-CPU counter arrays have fixed sizes).
pub const ENTRY_MAPS: [&str; 9] =
    ["PODS", "POD_PORTS", "PROJECT_VNID", "SERVICES", "SERVICE_IPS", "BACKENDS", "BACKEND_SET", "REMOTE_SUBNETS", "NODE_IPS"];

/// The entries of a node's pinned map, as bpftool prints them (one JSON text each,
/// sorted).
pub fn pinned_entries(node: &Node, map: &str) -> Result<Vec<String>> {
    let path = node.pin_dir().join(map);
    let out = run(std::process::Command::new("bpftool").arg("-j").args(["map", "dump", "pinned"]).arg(&path))?;
    let entries: Vec<Value> = serde_json::from_str(&out).with_context(|| format!("bpftool output for {}", path.display()))?;
    let mut texts: Vec<String> = entries.iter().map(Value::to_string).collect();
    texts.sort();
    Ok(texts)
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

    /// Entry counts, for reports: `PODS=3 POD_PORTS=3 … pins=5 veths=3 records=3`.
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
                diffs.push(format!("{map}: {} -> {} entries; only before: {gone:?}; only after: {new:?}", entries.len(), theirs.len()));
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
