//! Keeps the service maps equal to the store's Services: `SERVICES` (a declared port:
//! the service, its project, endpoint count, target port), `SERVICE_IPS` (ClusterIPs,
//! for fragments), `BACKENDS` (endpoints by index), `BACKEND_SET` (endpoint membership,
//! so tracked connections to an endpoint that left are re-balanced), and the
//! `POD_IS_ENDPOINT` flag of local pods (their packets may be replies to translate).
//!
//! Endpoint lists change in an order that never lets the dataplane pick an index that
//! is not there: new endpoints are written before the count grows, the count shrinks
//! before old ones go.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::Ipv4Addr,
    sync::{mpsc::Receiver, Arc, Mutex},
};

use anyhow::{bail, Context, Result};
use aya::maps::MapError;
use oxsdn_common::{BackendKey, BackendMember, ServiceIp, ServiceKey, ServicePort, MAX_SERVICE_SLOTS, POD_IS_ENDPOINT};
use oxsdn_controller::{cluster::ServiceEvent, services::Protocol, Cluster, Service};

use crate::{
    maps::{self, ip_key, NodeMaps},
    projects::Projects,
    sync::Mirror,
};

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// What this node applied for one service, to undo or change it later.
#[derive(Clone)]
struct Applied {
    service: Service,
    /// Counter slot of each port, in `service.ports` order.
    port_slots: Vec<u32>,
    ip_slot: u32,
}

/// What the node applied, kept with the indexes that make changes cheap at scale.
struct State {
    /// By (project, name).
    by_name: HashMap<(String, String), Applied>,
    /// Counter slots no service holds.
    free_slots: BTreeSet<u32>,
    /// How many services list each endpoint.
    endpoints: HashMap<Ipv4Addr, usize>,
    /// Slots a previous agent's map entries hold (found by a resync), kept for those
    /// services with their counters.
    adoptable: BTreeSet<u32>,
}

impl State {
    fn take_slot(&mut self, maps: &mut NodeMaps) -> Result<u32> {
        let slot = self.free_slots.pop_first().context("no free service counter slot")?;
        maps::reset(&mut maps.service_stats, slot)?;
        Ok(slot)
    }

    /// The slot of a previous agent's map entry for a service this agent has not
    /// applied yet, if a resync set it aside.
    fn adopt(&mut self, slot: Option<u32>) -> Option<u32> {
        slot.filter(|s| self.adoptable.remove(s))
    }

    fn insert(&mut self, key: (String, String), applied: Applied) {
        for ip in &applied.service.endpoints {
            *self.endpoints.entry(*ip).or_default() += 1;
        }
        self.by_name.insert(key, applied);
    }

    /// Takes a service out, returning it; its slots are free again unless `keep`
    /// holds them.
    fn remove(&mut self, key: &(String, String), keep: &[u32]) -> Option<Applied> {
        let old = self.by_name.remove(key)?;
        for ip in &old.service.endpoints {
            if let Some(n) = self.endpoints.get_mut(ip) {
                *n -= 1;
                if *n == 0 {
                    self.endpoints.remove(ip);
                }
            }
        }
        for slot in old.port_slots.iter().chain([&old.ip_slot]).filter(|s| !keep.contains(s)) {
            self.free_slots.insert(*slot);
        }
        Some(old)
    }
}

pub struct Services {
    cluster: Arc<Cluster>,
    maps: Arc<Mutex<NodeMaps>>,
    projects: Arc<Projects>,
    /// Locked after `maps` when both are needed.
    state: Mutex<State>,
}

fn service_key(svc: &Service, port: &oxsdn_controller::services::ServicePort) -> ServiceKey {
    let proto = match port.protocol {
        Protocol::Tcp => IPPROTO_TCP,
        Protocol::Udp => IPPROTO_UDP,
    };
    ServiceKey { ip: ip_key(svc.cluster_ip), port: port.port, proto, _pad: 0 }
}

fn ignore_missing(r: Result<(), MapError>) -> Result<()> {
    match r {
        Err(MapError::KeyNotFound) | Ok(()) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

impl Services {
    pub fn new(cluster: Arc<Cluster>, maps: Arc<Mutex<NodeMaps>>, projects: Arc<Projects>) -> Self {
        let state = State {
            by_name: HashMap::new(),
            free_slots: (0..MAX_SERVICE_SLOTS).collect(),
            endpoints: HashMap::new(),
            adoptable: BTreeSet::new(),
        };
        Services { cluster, maps, projects, state: Mutex::new(state) }
    }

    /// Whether `ip` is an endpoint of some service (checked with the maps locked).
    pub fn is_endpoint(&self, ip: Ipv4Addr) -> bool {
        self.state.lock().unwrap().endpoints.contains_key(&ip)
    }

    fn project_id(&self, project: &str) -> Result<u32> {
        if let Some(ns) = self.projects.get(project) {
            return Ok(ns.id);
        }
        // The service may have come before its project reached this node's watcher.
        match self.cluster.get_netnamespace(project)? {
            Some(ns) => Ok(ns.id),
            None => bail!("service in unknown project {project}"),
        }
    }

    fn upsert(&self, svc: &Service) -> Result<()> {
        let project = self.project_id(&svc.project)?;
        let mut maps = self.maps.lock().unwrap();
        let mut state = self.state.lock().unwrap();
        let key = (svc.project.clone(), svc.name.clone());
        let old = state.by_name.get(&key).cloned();
        if old.as_ref().is_some_and(|o| &o.service == svc) {
            return Ok(());
        }
        // Ports and the ClusterIP keep their counters across changes, and across agent
        // restarts (a previous agent's entries).
        let kept_ip_slot = match &old {
            Some(o) => Some(o.ip_slot).filter(|_| o.service.cluster_ip == svc.cluster_ip),
            None => state.adopt(maps.service_ips.get(&ip_key(svc.cluster_ip), 0).ok().map(|v| v.slot)),
        };
        let kept_port_slots: Vec<Option<u32>> = svc
            .ports
            .iter()
            .map(|port| match &old {
                Some(o) => o.service.ports.iter().position(|p| service_key(&o.service, p) == service_key(svc, port)).map(|i| o.port_slots[i]),
                None => {
                    let entry = maps.services.get(&service_key(svc, port), 0).ok().filter(|v| v.service == svc.id);
                    state.adopt(entry.map(|v| v.slot))
                }
            })
            .collect();
        let keep: Vec<u32> = kept_port_slots.iter().flatten().copied().chain(kept_ip_slot).collect();
        state.remove(&key, &keep);
        let ip_slot = match kept_ip_slot {
            Some(slot) => slot,
            None => state.take_slot(&mut maps)?,
        };
        let mut port_slots = Vec::with_capacity(svc.ports.len());
        for kept in kept_port_slots {
            port_slots.push(match kept {
                Some(slot) => slot,
                None => state.take_slot(&mut maps)?,
            });
        }
        let count = svc.endpoints.len() as u32;
        for (index, ip) in svc.endpoints.iter().enumerate() {
            maps.backends.insert(BackendKey { service: svc.id, index: index as u32 }, ip_key(*ip), 0)?;
            maps.backend_set.insert(BackendMember { service: svc.id, ip: ip_key(*ip) }, 1, 0)?;
        }
        maps.service_ips.insert(ip_key(svc.cluster_ip), ServiceIp { project, slot: ip_slot }, 0)?;
        for (port, slot) in svc.ports.iter().zip(&port_slots) {
            let value = ServicePort { service: svc.id, project, backends: count, slot: *slot, target_port: port.target_port, _pad: 0 };
            maps.services.insert(service_key(svc, port), value, 0)?;
        }
        if let Some(old) = &old {
            let now: HashSet<ServiceKey> = svc.ports.iter().map(|p| service_key(svc, p)).collect();
            for port in old.service.ports.iter().filter(|p| !now.contains(&service_key(&old.service, p))) {
                ignore_missing(maps.services.remove(&service_key(&old.service, port)))?;
            }
            if old.service.cluster_ip != svc.cluster_ip {
                ignore_missing(maps.service_ips.remove(&ip_key(old.service.cluster_ip)))?;
            }
            remove_backends(&mut maps, &old.service, count, &svc.endpoints)?;
        }
        state.insert(key, Applied { service: svc.clone(), port_slots, ip_slot });
        let touched = old.iter().flat_map(|o| o.service.endpoints.iter()).chain(&svc.endpoints);
        flag_endpoints(&mut maps, &state, touched)?;
        tracing::info!(service = %svc.name, project = %svc.project, ip = %svc.cluster_ip, endpoints = count, "service applied");
        Ok(())
    }

    fn remove(&self, project: &str, name: &str) -> Result<()> {
        let mut maps = self.maps.lock().unwrap();
        let mut state = self.state.lock().unwrap();
        if let Some(old) = state.remove(&(project.to_string(), name.to_string()), &[]) {
            for port in &old.service.ports {
                ignore_missing(maps.services.remove(&service_key(&old.service, port)))?;
            }
            ignore_missing(maps.service_ips.remove(&ip_key(old.service.cluster_ip)))?;
            remove_backends(&mut maps, &old.service, 0, &[])?;
            flag_endpoints(&mut maps, &state, &old.service.endpoints)?;
            tracing::info!(service = %name, project = %project, "service removed");
        }
        Ok(())
    }
}

/// Removes the endpoint entries of `old` beyond index `keep` and the memberships of
/// endpoints not in `still`.
fn remove_backends(maps: &mut NodeMaps, old: &Service, keep: u32, still: &[Ipv4Addr]) -> Result<()> {
    for index in keep..old.endpoints.len() as u32 {
        ignore_missing(maps.backends.remove(&BackendKey { service: old.id, index }))?;
    }
    for ip in old.endpoints.iter().filter(|ip| !still.contains(ip)) {
        ignore_missing(maps.backend_set.remove(&BackendMember { service: old.id, ip: ip_key(*ip) }))?;
    }
    Ok(())
}

/// Sets or clears `POD_IS_ENDPOINT` on the local pods among `ips` (endpoints a change
/// touched), so each pod's flag says whether some service lists it.
fn flag_endpoints<'a>(maps: &mut NodeMaps, state: &State, ips: impl IntoIterator<Item = &'a Ipv4Addr>) -> Result<()> {
    for ip in ips {
        let Ok(pod) = maps.pods.get(&ip_key(*ip), 0) else { continue };
        let Ok(mut port) = maps.pod_ports.get(&pod.ifindex, 0) else { continue };
        let flags = if state.endpoints.contains_key(ip) { POD_IS_ENDPOINT } else { 0 };
        if port.flags != flags {
            port.flags = flags;
            maps.pod_ports.insert(pod.ifindex, port, 0)?;
        }
    }
    Ok(())
}

impl Mirror for Services {
    type Event = ServiceEvent;
    const WHAT: &'static str = "service";

    fn resync(&self) -> Result<u64> {
        let (all, revision) = self.cluster.list_services()?;
        let wanted: HashSet<(String, String)> = all.iter().map(|s| (s.project.clone(), s.name.clone())).collect();
        let gone: Vec<(String, String)> = self.state.lock().unwrap().by_name.keys().filter(|k| !wanted.contains(*k)).cloned().collect();
        for (project, name) in gone {
            self.remove(&project, &name)?;
        }
        {
            // Entries of a previous agent that no current service explains.
            let mut maps = self.maps.lock().unwrap();
            let ports: HashSet<ServiceKey> = all.iter().flat_map(|s| s.ports.iter().map(move |p| service_key(s, p))).collect();
            let ips: HashSet<u32> = all.iter().map(|s| ip_key(s.cluster_ip)).collect();
            let ids: HashSet<u32> = all.iter().map(|s| s.id).collect();
            let stale_ports: Vec<ServiceKey> = maps.services.keys().filter_map(|k| k.ok()).filter(|k| !ports.contains(k)).collect();
            for k in stale_ports {
                ignore_missing(maps.services.remove(&k))?;
            }
            let stale_ips: Vec<u32> = maps.service_ips.keys().filter_map(|k| k.ok()).filter(|k| !ips.contains(k)).collect();
            for k in stale_ips {
                ignore_missing(maps.service_ips.remove(&k))?;
            }
            let stale_backends: Vec<BackendKey> = maps.backends.keys().filter_map(|k| k.ok()).filter(|k| !ids.contains(&k.service)).collect();
            for k in stale_backends {
                ignore_missing(maps.backends.remove(&k))?;
            }
            let stale_members: Vec<BackendMember> = maps.backend_set.keys().filter_map(|k| k.ok()).filter(|k| !ids.contains(&k.service)).collect();
            for k in stale_members {
                ignore_missing(maps.backend_set.remove(&k))?;
            }
            // The remaining entries' slots that no applied service holds are a previous
            // agent's: set aside for their services, not handed to others.
            let mut state = self.state.lock().unwrap();
            let in_maps: Vec<u32> = maps
                .services
                .iter()
                .filter_map(|e| e.ok().map(|(_, v)| v.slot))
                .chain(maps.service_ips.iter().filter_map(|e| e.ok().map(|(_, v)| v.slot)))
                .collect();
            for slot in in_maps {
                if state.free_slots.remove(&slot) {
                    state.adoptable.insert(slot);
                }
            }
        }
        for svc in &all {
            self.upsert(svc)?;
        }
        // Slots no service took back are free.
        let mut state = self.state.lock().unwrap();
        let unclaimed = std::mem::take(&mut state.adoptable);
        state.free_slots.extend(unclaimed);
        Ok(revision)
    }

    fn watch(&self, after_revision: u64) -> Result<Receiver<ServiceEvent>> {
        Ok(self.cluster.watch_services(after_revision)?)
    }

    fn apply(&self, event: ServiceEvent) -> Result<()> {
        match event {
            ServiceEvent::Upsert(svc) => self.upsert(&svc),
            ServiceEvent::Deleted { project, name } => self.remove(&project, &name),
        }
    }
}
