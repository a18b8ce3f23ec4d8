//! Keeps the dataplane's `PROJECT_VNID` map equal to the store's NetNamespaces. Pods
//! reference their project, not a VNID, so join/isolate/global changes every pod of a
//! project at once with a single map update.

use std::{
    collections::{HashMap, HashSet},
    sync::{mpsc::Receiver, Arc, Mutex},
};

use anyhow::Result;
use oxsdn_controller::{cluster::NetNamespaceEvent, Cluster, NetNamespace};

use crate::{maps::NodeMaps, sync::Mirror};

pub struct Projects {
    cluster: Arc<Cluster>,
    maps: Arc<Mutex<NodeMaps>>,
    /// The projects this node knows, by name.
    known: Mutex<HashMap<String, NetNamespace>>,
}

impl Projects {
    pub fn new(cluster: Arc<Cluster>, maps: Arc<Mutex<NodeMaps>>) -> Self {
        Projects { cluster, maps, known: Mutex::default() }
    }

    pub fn get(&self, name: &str) -> Option<NetNamespace> {
        self.known.lock().unwrap().get(name).cloned()
    }

    /// Records a project and writes its VNID into the dataplane. `only_if_new` is for
    /// the CNI path, which may have read an older record than the watcher applied.
    fn upsert(&self, ns: &NetNamespace, only_if_new: bool) -> Result<()> {
        let mut known = self.known.lock().unwrap();
        if only_if_new && known.contains_key(&ns.name) {
            return Ok(());
        }
        if known.get(&ns.name) != Some(ns) {
            self.maps.lock().unwrap().project_vnid.insert(ns.id, ns.netid, 0)?;
            tracing::info!(project = %ns.name, vnid = ns.netid, "project VNID applied");
            known.insert(ns.name.clone(), ns.clone());
        }
        Ok(())
    }

    fn remove(&self, name: &str) -> Result<()> {
        if let Some(ns) = self.known.lock().unwrap().remove(name) {
            remove_vnid(&mut self.maps.lock().unwrap(), ns.id)?;
            tracing::info!(project = %name, "project removed");
        }
        Ok(())
    }

    /// Called on CNI ADD with the record just read from the store: a project created a
    /// moment ago may not have reached the watcher yet.
    pub fn learn(&self, ns: &NetNamespace) -> Result<()> {
        self.upsert(ns, true)
    }
}

fn remove_vnid(maps: &mut NodeMaps, id: u32) -> Result<()> {
    match maps.project_vnid.remove(&id) {
        Err(aya::maps::MapError::KeyNotFound) | Ok(()) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

impl Mirror for Projects {
    type Event = NetNamespaceEvent;
    const WHAT: &'static str = "project";

    fn resync(&self) -> Result<u64> {
        let (all, revision) = self.cluster.list_netnamespaces()?;
        let names: HashSet<&str> = all.iter().map(|ns| ns.name.as_str()).collect();
        let gone: Vec<String> = self.known.lock().unwrap().keys().filter(|k| !names.contains(k.as_str())).cloned().collect();
        for name in gone {
            self.remove(&name)?;
        }
        for ns in &all {
            self.upsert(ns, false)?;
        }
        // Entries a previous agent left for projects deleted while no agent ran.
        let ids: HashSet<u32> = all.iter().map(|ns| ns.id).collect();
        let mut maps = self.maps.lock().unwrap();
        let stale: Vec<u32> = maps.project_vnid.keys().filter_map(|k| k.ok()).filter(|k| !ids.contains(k)).collect();
        for id in stale {
            remove_vnid(&mut maps, id)?;
        }
        Ok(revision)
    }

    fn watch(&self, after_revision: u64) -> Result<Receiver<NetNamespaceEvent>> {
        Ok(self.cluster.watch_netnamespaces(after_revision)?)
    }

    fn apply(&self, event: NetNamespaceEvent) -> Result<()> {
        match event {
            NetNamespaceEvent::Upsert(ns) => self.upsert(&ns, false),
            NetNamespaceEvent::Deleted(name) => self.remove(&name),
        }
    }
}
