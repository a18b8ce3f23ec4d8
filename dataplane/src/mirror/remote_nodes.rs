//! Keeps the overlay maps equal to the store's HostSubnets of the other nodes:
//! `REMOTE_SUBNETS` (tables 50 and 90: where a cluster address lives) and `NODE_IPS`
//! (table 10: who may send VXLAN). Each remote node holds a counter slot, kept in its
//! map entries so a restarted agent finds it again.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{mpsc::Receiver, Arc, Mutex},
};

use anyhow::{bail, Result};
use aya::maps::lpm_trie::Key;
use oxsdn_common::{stats, RemoteNode, MAX_NODES, NODE_RULES};
use oxsdn_controller::{cluster::HostSubnetEvent, HostSubnet};

use super::{Feed, Mirror};
use crate::{
    entries::{remote_node_entries, subnet_key},
    maps::{self, ignore_missing, ip_key, NodeMaps},
};

type Source = dyn Feed<HostSubnet, Event = HostSubnetEvent>;

pub struct RemoteNodes {
    own_name: String,
    source: Arc<Source>,
    maps: Arc<Mutex<NodeMaps>>,
    /// Remote nodes by name, as applied to the maps.
    known: Mutex<HashMap<String, (HostSubnet, u32)>>,
}

impl RemoteNodes {
    pub fn new(own_name: &str, source: Arc<Source>, maps: Arc<Mutex<NodeMaps>>) -> Self {
        RemoteNodes { own_name: own_name.to_string(), source, maps, known: Mutex::default() }
    }

    fn upsert(&self, hs: &HostSubnet) -> Result<()> {
        if hs.host == self.own_name {
            return Ok(());
        }
        let mut known = self.known.lock().unwrap();
        if known.get(&hs.host).is_some_and(|(old, _)| old == hs) {
            return Ok(());
        }
        let mut maps = self.maps.lock().unwrap();
        let slot = match known.remove(&hs.host) {
            Some((old, slot)) => {
                unmap(&mut maps, &old)?;
                slot
            }
            None => {
                let used: BTreeSet<u32> = known.values().map(|(_, s)| *s).collect();
                let slot = (0..MAX_NODES).find(|s| !used.contains(s));
                let Some(slot) = slot else { bail!("more than {MAX_NODES} remote nodes") };
                for rule in 0..NODE_RULES {
                    maps::reset(&mut maps.node_stats, stats::node_index(slot, rule))?;
                }
                slot
            }
        };
        map(&mut maps, hs, slot)?;
        tracing::info!(node = %hs.host, ip = %hs.host_ip, subnet = %hs.subnet, "remote node applied");
        known.insert(hs.host.clone(), (hs.clone(), slot));
        Ok(())
    }

    fn remove(&self, name: &str) -> Result<()> {
        if let Some((hs, _)) = self.known.lock().unwrap().remove(name) {
            unmap(&mut self.maps.lock().unwrap(), &hs)?;
            tracing::info!(node = %name, "remote node removed");
        }
        Ok(())
    }
}

/// Adds a node's entries: its IP first, so its replies are accepted before anything
/// is sent to its subnet.
fn map(maps: &mut NodeMaps, hs: &HostSubnet, slot: u32) -> Result<()> {
    let (subnet, node_ip, node) = remote_node_entries(hs.subnet, hs.host_ip, slot);
    maps.node_ips.insert(node_ip, node, 0)?;
    maps.remote_subnets.insert(&subnet, node, 0)?;
    Ok(())
}

fn unmap(maps: &mut NodeMaps, hs: &HostSubnet) -> Result<()> {
    ignore_missing(maps.remote_subnets.remove(&subnet_key(hs.subnet)))?;
    ignore_missing(maps.node_ips.remove(&ip_key(hs.host_ip)))
}

impl Mirror for RemoteNodes {
    type Event = HostSubnetEvent;
    const WHAT: &'static str = "node";

    fn resync(&self) -> Result<u64> {
        let (all, revision) = self.source.list()?;
        let remote: Vec<&HostSubnet> = all.iter().filter(|hs| hs.host != self.own_name).collect();
        {
            let mut known = self.known.lock().unwrap();
            let mut maps = self.maps.lock().unwrap();
            // Start from what the maps hold (a previous agent's entries keep their
            // counter slots), dropping every entry that is not a current node's.
            known.clear();
            let wanted_subnets: BTreeSet<(u32, u32)> =
                remote.iter().map(|hs| (hs.subnet.prefix() as u32, ip_key(hs.subnet.network()))).collect();
            let stale: Vec<Key<u32>> = maps
                .remote_subnets
                .keys()
                .filter_map(|k| k.ok())
                .filter(|k| !wanted_subnets.contains(&(k.prefix_len(), k.data())))
                .collect();
            for k in stale {
                ignore_missing(maps.remote_subnets.remove(&k))?;
            }
            let wanted_ips: BTreeSet<u32> = remote.iter().map(|hs| ip_key(hs.host_ip)).collect();
            let existing: Vec<(u32, RemoteNode)> = maps.node_ips.iter().filter_map(|e| e.ok()).collect();
            for (ip, node) in existing {
                if !wanted_ips.contains(&ip) {
                    ignore_missing(maps.node_ips.remove(&ip))?;
                    continue;
                }
                if let Some(hs) = remote.iter().find(|hs| ip_key(hs.host_ip) == ip) {
                    map(&mut maps, hs, node.slot)?;
                    known.insert(hs.host.clone(), ((*hs).clone(), node.slot));
                }
            }
        }
        for hs in remote {
            self.upsert(hs)?;
        }
        Ok(revision)
    }

    fn watch(&self, after_revision: u64) -> Result<Receiver<HostSubnetEvent>> {
        self.source.watch(after_revision)
    }

    fn apply(&self, event: HostSubnetEvent) -> Result<()> {
        match event {
            HostSubnetEvent::Upsert(hs) => self.upsert(&hs),
            HostSubnetEvent::Deleted(name) => self.remove(&name),
        }
    }
}
