//! Keeps `PROJECTS` equal to the cluster's NetNamespaces. Each project this node knows
//! holds a node-local slot there; pods (and services) reference the slot, not a VNID, so
//! a join/isolate/global changes every pod of a project at once with one map update.
//! Slots are found again in the pinned map after a restart (the entry carries the
//! project's id), so running pods keep theirs.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::{Arc, Mutex},
};

use anyhow::{bail, Result};
use oxsdn_common::{ProjectEntry, MAX_PROJECT_SLOTS};
use oxsdn_controller::{cluster::NetNamespaceEvent, NetNamespace};

use super::{Feed, Mirror};
use crate::{
    entries::{project_entry, ProjectRef},
    maps::NodeMaps,
};

type Source = dyn Feed<NetNamespace, Event = NetNamespaceEvent>;

pub struct Projects {
    source: Arc<Source>,
    maps: Arc<Mutex<NodeMaps>>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The projects this node knows, by name, with their slots.
    known: HashMap<String, (NetNamespace, u32)>,
    /// Slots no project holds.
    free: BTreeSet<u32>,
}

impl State {
    fn slot_of_id(&self, id: u32) -> Option<u32> {
        self.known.values().find(|(ns, _)| ns.id == id).map(|(_, slot)| *slot)
    }
}

fn take_slot(state: &mut State) -> Result<u32> {
    match state.free.pop_first() {
        Some(slot) => Ok(slot),
        None => bail!("more than {MAX_PROJECT_SLOTS} projects on this node"),
    }
}

impl Projects {
    pub fn new(source: Arc<Source>, maps: Arc<Mutex<NodeMaps>>) -> Self {
        let state = State { known: HashMap::new(), free: (0..MAX_PROJECT_SLOTS).collect() };
        Projects { source, maps, state: Mutex::new(state) }
    }

    /// A project this node knows, and where its VNID lives.
    pub fn get(&self, name: &str) -> Option<(NetNamespace, ProjectRef)> {
        let state = self.state.lock().unwrap();
        state.known.get(name).map(|(ns, slot)| (ns.clone(), ProjectRef { slot: *slot, id: ns.id }))
    }

    /// The name of the project in each slot this node holds.
    pub fn names_by_slot(&self) -> HashMap<u32, String> {
        self.state.lock().unwrap().known.iter().map(|(name, (_, slot))| (*slot, name.clone())).collect()
    }

    /// Where the VNID of the project with id `id` lives, if this node knows it.
    pub fn by_id(&self, id: u32) -> Option<ProjectRef> {
        self.state.lock().unwrap().slot_of_id(id).map(|slot| ProjectRef { slot, id })
    }

    /// Records a project and writes its VNID into the dataplane. `only_if_new` is for
    /// the CNI path, which may have read an older record than the watcher applied.
    fn upsert(&self, ns: &NetNamespace, only_if_new: bool) -> Result<ProjectRef> {
        let mut state = self.state.lock().unwrap();
        let mut maps = self.maps.lock().unwrap();
        let slot = match state.known.get(&ns.name).cloned() {
            Some((known, slot)) if known.id == ns.id => {
                if only_if_new || known == *ns {
                    return Ok(ProjectRef { slot, id: ns.id });
                }
                slot
            }
            // The same name with another id is another project (deleted and created
            // again while the watch was down). Its pods' entries carry the old id, so
            // they never get the new project's VNID, whichever slot it takes.
            Some((_, old_slot)) => {
                state.known.remove(&ns.name);
                maps.projects.set(old_slot, ProjectEntry::default(), 0)?;
                state.free.insert(old_slot);
                take_slot(&mut state)?
            }
            None => take_slot(&mut state)?,
        };
        if let Err(e) = maps.projects.set(slot, project_entry(ns.id, ns.netid), 0) {
            if !state.known.contains_key(&ns.name) {
                state.free.insert(slot);
            }
            return Err(e.into());
        }
        tracing::info!(project = %ns.name, vnid = ns.netid, slot, "project VNID applied");
        state.known.insert(ns.name.clone(), (ns.clone(), slot));
        Ok(ProjectRef { slot, id: ns.id })
    }

    fn remove(&self, name: &str) -> Result<()> {
        let mut state = self.state.lock().unwrap();
        if let Some((_, slot)) = state.known.remove(name) {
            self.maps.lock().unwrap().projects.set(slot, ProjectEntry::default(), 0)?;
            state.free.insert(slot);
            tracing::info!(project = %name, "project removed");
        }
        Ok(())
    }

    /// Called on CNI ADD with the record just read from the store: a project created a
    /// moment ago may not have reached the watcher yet.
    pub fn learn(&self, ns: &NetNamespace) -> Result<ProjectRef> {
        self.upsert(ns, true)
    }

    /// Where the VNID of project `name` lives, read from the source if the watch has not
    /// brought it yet (a service may arrive before its project).
    pub fn lookup(&self, name: &str) -> Result<Option<ProjectRef>> {
        if let Some((_, project)) = self.get(name) {
            return Ok(Some(project));
        }
        self.source.get(name)?.map(|ns| self.learn(&ns)).transpose()
    }
}

impl Mirror for Projects {
    type Event = NetNamespaceEvent;
    const WHAT: &'static str = "project";

    fn resync(&self) -> Result<u64> {
        let (all, revision) = self.source.list()?;
        let wanted: HashMap<u32, &NetNamespace> = all.iter().map(|ns| (ns.id, ns)).collect();
        {
            // Start from the slots the map holds (a previous agent's pods reference
            // them), clearing those of projects that are gone.
            let mut state = self.state.lock().unwrap();
            let mut maps = self.maps.lock().unwrap();
            state.known.clear();
            state.free = (0..MAX_PROJECT_SLOTS).collect();
            let mut seen = HashSet::new();
            for slot in 0..MAX_PROJECT_SLOTS {
                let entry = maps.projects.get(&slot, 0)?;
                if entry.id == 0 {
                    continue;
                }
                match wanted.get(&entry.id) {
                    Some(ns) if seen.insert(entry.id) => {
                        state.free.remove(&slot);
                        // The VNID is written below if it changed.
                        let as_applied = NetNamespace { netid: entry.vnid, ..(*ns).clone() };
                        state.known.insert(ns.name.clone(), (as_applied, slot));
                    }
                    _ => maps.projects.set(slot, ProjectEntry::default(), 0)?,
                }
            }
        }
        for ns in &all {
            self.upsert(ns, false)?;
        }
        let names: HashSet<&str> = all.iter().map(|ns| ns.name.as_str()).collect();
        let gone: Vec<String> =
            self.state.lock().unwrap().known.keys().filter(|k| !names.contains(k.as_str())).cloned().collect();
        for name in gone {
            self.remove(&name)?;
        }
        Ok(revision)
    }

    fn watch(&self, after_revision: u64) -> Result<std::sync::mpsc::Receiver<NetNamespaceEvent>> {
        self.source.watch(after_revision)
    }

    fn apply(&self, event: NetNamespaceEvent) -> Result<()> {
        match event {
            NetNamespaceEvent::Upsert(ns) => self.upsert(&ns, false).map(drop),
            NetNamespaceEvent::Deleted(name) => self.remove(&name),
        }
    }
}
