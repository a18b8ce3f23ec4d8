//! Keeps the dataplane's `PROJECT_VNID` map equal to the store's NetNamespaces. Pods
//! reference their project, not a VNID, so join/isolate/global changes every pod of a
//! project at once with a single map update.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Result;
use oxsdn_controller::{cluster::NetNamespaceEvent, Cluster, NetNamespace};

use crate::maps::NodeMaps;

/// The projects this node knows, by name.
#[derive(Default)]
pub struct Projects {
    known: Mutex<HashMap<String, NetNamespace>>,
}

impl Projects {
    pub fn get(&self, name: &str) -> Option<NetNamespace> {
        self.known.lock().unwrap().get(name).cloned()
    }

    /// Records a project and writes its VNID into the dataplane. `only_if_new` is for
    /// the CNI path, which may have read an older record than the watcher applied.
    fn apply(&self, maps: &Mutex<NodeMaps>, ns: &NetNamespace, only_if_new: bool) -> Result<()> {
        let mut known = self.known.lock().unwrap();
        if only_if_new && known.contains_key(&ns.name) {
            return Ok(());
        }
        if known.get(&ns.name) != Some(ns) {
            maps.lock().unwrap().project_vnid.insert(ns.id, ns.netid, 0)?;
            tracing::info!(project = %ns.name, vnid = ns.netid, "project VNID applied");
            known.insert(ns.name.clone(), ns.clone());
        }
        Ok(())
    }

    fn forget(&self, maps: &Mutex<NodeMaps>, name: &str) -> Result<()> {
        if let Some(ns) = self.known.lock().unwrap().remove(name) {
            let mut maps = maps.lock().unwrap();
            match maps.project_vnid.remove(&ns.id) {
                Err(aya::maps::MapError::KeyNotFound) | Ok(()) => {}
                Err(e) => return Err(e.into()),
            }
            tracing::info!(project = %name, "project removed");
        }
        Ok(())
    }

    /// Called on CNI ADD with the record just read from the store: a project created a
    /// moment ago may not have reached the watcher yet.
    pub fn learn(&self, maps: &Mutex<NodeMaps>, ns: &NetNamespace) -> Result<()> {
        self.apply(maps, ns, true)
    }

    /// Lists the store's projects into the dataplane (dropping those that are gone), then
    /// returns the revision to watch from.
    fn resync(&self, cluster: &Cluster, maps: &Mutex<NodeMaps>) -> Result<u64> {
        let (all, revision) = cluster.list_netnamespaces()?;
        let gone: Vec<String> = {
            let known = self.known.lock().unwrap();
            known.keys().filter(|k| !all.iter().any(|ns| &ns.name == *k)).cloned().collect()
        };
        for name in gone {
            self.forget(maps, &name)?;
        }
        for ns in &all {
            self.apply(maps, ns, false)?;
        }
        Ok(revision)
    }

    /// First full sync, done before the node reports ready.
    pub fn initial_sync(&self, cluster: &Cluster, maps: &Mutex<NodeMaps>) -> Result<u64> {
        self.resync(cluster, maps)
    }

    /// Follows the store forever from `revision`; on a broken watch, lists again.
    pub fn follow(self: Arc<Self>, cluster: Arc<Cluster>, maps: Arc<Mutex<NodeMaps>>, mut revision: u64) {
        loop {
            match cluster.watch_netnamespaces(revision) {
                Ok(events) => {
                    for event in events {
                        let result = match event {
                            NetNamespaceEvent::Upsert(ns) => self.apply(&maps, &ns, false),
                            NetNamespaceEvent::Deleted(name) => self.forget(&maps, &name),
                        };
                        if let Err(e) = result {
                            tracing::error!("applying a project change: {e:#}");
                        }
                    }
                    tracing::warn!("project watch ended; resyncing");
                }
                Err(e) => tracing::warn!("cannot watch projects: {e}"),
            }
            std::thread::sleep(Duration::from_millis(500));
            match self.resync(&cluster, &maps) {
                Ok(r) => revision = r,
                Err(e) => tracing::warn!("project resync failed: {e:#}"),
            }
        }
    }
}
