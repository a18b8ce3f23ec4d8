//! Keeps the service maps equal to the store's Services: `SERVICES` (a declared port:
//! the service, its project, endpoint count, target port), `SERVICE_IPS` (ClusterIPs,
//! for fragments), `BACKENDS` (endpoints by index), `BACKEND_SET` (endpoint membership,
//! so tracked connections to an endpoint that left are re-balanced), `DRAINING`
//! (endpoints that left, until their drain window ends), and the `POD_IS_ENDPOINT` flag
//! of local pods (their packets may be replies to translate).
//!
//! Removing an endpoint works as with kube-proxy: new connections never pick it, tracked
//! TCP connections keep it for `ENDPOINT_DRAIN_WINDOW` (a terminating pod finishes its
//! connections), UDP flows choose again at once. An endpoint listed again serves again.
//!
//! Endpoint lists change in an order that never lets the dataplane pick an index that
//! is not there, nor lose a connection it should keep: memberships are written first,
//! then the endpoints by index, then the count; entries beyond the new count go after
//! it, and an endpoint's membership goes only once its drain record is there and no
//! index holds it.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::Ipv4Addr,
    sync::{mpsc::Receiver, Arc, Mutex},
    time::Duration,
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

/// How long tracked TCP connections keep an endpoint that left their service:
/// Kubernetes' default `terminationGracePeriodSeconds`, the time a terminating pod is
/// given to finish its connections (kube-proxy's conntrack keeps them meanwhile).
pub const ENDPOINT_DRAIN_WINDOW: Duration = Duration::from_secs(30);

/// How often drain records whose window ended are removed (the programs ignore them
/// from then on; the sweep frees their entries and the endpoints' reply flags).
pub const DRAIN_SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// CLOCK_MONOTONIC in nanoseconds: the clock of the programs' `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC is always readable");
    now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64
}

/// A previous agent's endpoint entries of one service, found in the pinned maps.
#[derive(Default)]
struct PinnedEndpoints {
    /// Endpoints with a `BACKEND_SET` entry.
    members: Vec<Ipv4Addr>,
    /// One past the highest `BACKENDS` index.
    indexes: u32,
}

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
    /// How many services list or drain each endpoint (its packets may be replies).
    endpoints: HashMap<Ipv4Addr, usize>,
    /// Drain records, as in `DRAINING`: (service id, endpoint) -> end of the window.
    draining: BTreeMap<(u32, Ipv4Addr), u64>,
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
            self.count_endpoint(*ip);
        }
        self.by_name.insert(key, applied);
    }

    /// Takes a service out, returning it; its slots are free again unless `keep`
    /// holds them.
    fn remove(&mut self, key: &(String, String), keep: &[u32]) -> Option<Applied> {
        let old = self.by_name.remove(key)?;
        for ip in &old.service.endpoints {
            self.uncount_endpoint(*ip);
        }
        for slot in old.port_slots.iter().chain([&old.ip_slot]).filter(|s| !keep.contains(s)) {
            self.free_slots.insert(*slot);
        }
        Some(old)
    }

    fn count_endpoint(&mut self, ip: Ipv4Addr) {
        *self.endpoints.entry(ip).or_default() += 1;
    }

    fn uncount_endpoint(&mut self, ip: Ipv4Addr) {
        if let Some(n) = self.endpoints.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.endpoints.remove(&ip);
            }
        }
    }

    /// Records a drain record the maps hold; one already known keeps its window.
    fn add_drain(&mut self, service: u32, ip: Ipv4Addr, until: u64) {
        if let std::collections::btree_map::Entry::Vacant(e) = self.draining.entry((service, ip)) {
            e.insert(until);
            self.count_endpoint(ip);
        }
    }

    /// Forgets a drain record; whether there was one.
    fn remove_drain(&mut self, service: u32, ip: Ipv4Addr) -> bool {
        let known = self.draining.remove(&(service, ip)).is_some();
        if known {
            self.uncount_endpoint(ip);
        }
        known
    }

    /// The endpoints a service drains.
    fn drained_by(&self, service: u32) -> Vec<Ipv4Addr> {
        self.draining.range((service, Ipv4Addr::UNSPECIFIED)..=(service, Ipv4Addr::BROADCAST)).map(|((_, ip), _)| *ip).collect()
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
            draining: BTreeMap::new(),
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

    /// Applies a service. `pinned`: a previous agent's endpoint entries of it, for a
    /// service this agent has not applied yet.
    fn upsert(&self, svc: &Service, pinned: Option<PinnedEndpoints>) -> Result<()> {
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
        // The endpoints the dataplane had for this service, to drain those that left.
        // Another id is another service: the old one's entries just go.
        let previous = match &old {
            Some(o) if o.service.id == svc.id => {
                PinnedEndpoints { members: o.service.endpoints.clone(), indexes: o.service.endpoints.len() as u32 }
            }
            Some(o) => {
                forget(&mut maps, &mut state, &o.service, o.service.endpoints.len() as u32)?;
                PinnedEndpoints::default()
            }
            None => pinned.unwrap_or_default(),
        };
        let count = svc.endpoints.len() as u32;
        for ip in &svc.endpoints {
            let member = BackendMember { service: svc.id, ip: ip_key(*ip) };
            maps.backend_set.insert(member, 1, 0)?;
            // Listed again: it serves, no drain.
            if state.remove_drain(svc.id, *ip) {
                ignore_missing(maps.draining.remove(&member))?;
            }
        }
        for (index, ip) in svc.endpoints.iter().enumerate() {
            maps.backends.insert(BackendKey { service: svc.id, index: index as u32 }, ip_key(*ip), 0)?;
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
        }
        for index in count..previous.indexes {
            ignore_missing(maps.backends.remove(&BackendKey { service: svc.id, index }))?;
        }
        let until = monotonic_ns() + ENDPOINT_DRAIN_WINDOW.as_nanos() as u64;
        for ip in previous.members.iter().filter(|ip| !svc.endpoints.contains(ip)) {
            drain(&mut maps, &mut state, svc.id, *ip, until)?;
        }
        state.insert(key, Applied { service: svc.clone(), port_slots, ip_slot });
        let touched = old.iter().flat_map(|o| o.service.endpoints.iter()).chain(&previous.members).chain(&svc.endpoints);
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
            forget(&mut maps, &mut state, &old.service, old.service.endpoints.len() as u32)?;
            tracing::info!(service = %name, project = %project, "service removed");
        }
        Ok(())
    }

    /// Removes the drain records whose window has ended.
    pub fn sweep_drained(&self) -> Result<()> {
        let now = monotonic_ns();
        let mut maps = self.maps.lock().unwrap();
        let mut state = self.state.lock().unwrap();
        let ended: Vec<(u32, Ipv4Addr)> = state.draining.iter().filter(|(_, until)| **until <= now).map(|(k, _)| *k).collect();
        for (service, ip) in &ended {
            ignore_missing(maps.draining.remove(&BackendMember { service: *service, ip: ip_key(*ip) }))?;
            state.remove_drain(*service, *ip);
        }
        flag_endpoints(&mut maps, &state, ended.iter().map(|(_, ip)| ip))
    }
}

/// Sweeps drain records every `DRAIN_SWEEP_INTERVAL`, on its own thread.
pub fn sweep_drained_periodically(services: Arc<Services>) {
    std::thread::spawn(move || loop {
        std::thread::sleep(DRAIN_SWEEP_INTERVAL);
        if let Err(e) = services.sweep_drained() {
            tracing::warn!("removing ended drain records: {e:#}");
        }
    });
}

/// Takes endpoint `ip` out of service `id`: a drain record first (if it cannot be
/// written, its connections choose again), then its membership.
fn drain(maps: &mut NodeMaps, state: &mut State, id: u32, ip: Ipv4Addr, until: u64) -> Result<()> {
    let member = BackendMember { service: id, ip: ip_key(ip) };
    let recorded = state.draining.contains_key(&(id, ip)) || match maps.draining.insert(member, until, 0) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(service = id, endpoint = %ip, "cannot record the endpoint as draining; its connections choose again: {e}");
            false
        }
    };
    if recorded {
        state.add_drain(id, ip, until);
    }
    ignore_missing(maps.backend_set.remove(&member))
}

/// Removes every endpoint entry of a service that is gone (`indexes`: how many
/// `BACKENDS` entries it has), its drain records included, and fixes the endpoints'
/// reply flags.
fn forget(maps: &mut NodeMaps, state: &mut State, old: &Service, indexes: u32) -> Result<()> {
    for index in 0..indexes {
        ignore_missing(maps.backends.remove(&BackendKey { service: old.id, index }))?;
    }
    for ip in &old.endpoints {
        ignore_missing(maps.backend_set.remove(&BackendMember { service: old.id, ip: ip_key(*ip) }))?;
    }
    let drained = state.drained_by(old.id);
    for ip in &drained {
        ignore_missing(maps.draining.remove(&BackendMember { service: old.id, ip: ip_key(*ip) }))?;
        state.remove_drain(old.id, *ip);
    }
    flag_endpoints(maps, state, old.endpoints.iter().chain(&drained))
}

/// Sets or clears `POD_IS_ENDPOINT` on the local pods among `ips` (endpoints a change
/// touched), so each pod's flag says whether some service lists or drains it.
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
        let mut pinned: HashMap<u32, PinnedEndpoints> = HashMap::new();
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
            let stale_drains: Vec<BackendMember> = maps.draining.keys().filter_map(|k| k.ok()).filter(|k| !ids.contains(&k.service)).collect();
            for k in stale_drains {
                ignore_missing(maps.draining.remove(&k))?;
            }
            let mut state = self.state.lock().unwrap();
            // A previous agent's drain records go on; its endpoint entries of services
            // not applied yet tell which endpoints left while no agent ran.
            for entry in maps.draining.iter() {
                let (member, until) = entry?;
                state.add_drain(member.service, maps::ip_from_key(member.ip), until);
            }
            let applied: HashSet<u32> = state.by_name.values().map(|a| a.service.id).collect();
            for entry in maps.backend_set.keys() {
                let member = entry?;
                if !applied.contains(&member.service) {
                    pinned.entry(member.service).or_default().members.push(maps::ip_from_key(member.ip));
                }
            }
            for entry in maps.backends.keys() {
                let key = entry?;
                if !applied.contains(&key.service) {
                    let found = pinned.entry(key.service).or_default();
                    found.indexes = found.indexes.max(key.index + 1);
                }
            }
            // The remaining entries' slots that no applied service holds are a previous
            // agent's: set aside for their services, not handed to others.
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
            self.upsert(svc, pinned.remove(&svc.id))?;
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
            ServiceEvent::Upsert(svc) => self.upsert(&svc, None),
            ServiceEvent::Deleted { project, name } => self.remove(&project, &name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State {
            by_name: HashMap::new(),
            free_slots: BTreeSet::new(),
            endpoints: HashMap::new(),
            draining: BTreeMap::new(),
            adoptable: BTreeSet::new(),
        }
    }

    #[test]
    fn a_draining_endpoint_counts_until_its_last_record_goes() {
        let (a, b) = (Ipv4Addr::new(10, 128, 0, 2), Ipv4Addr::new(10, 128, 0, 3));
        let mut s = state();
        s.add_drain(1, a, 100);
        s.add_drain(2, a, 200);
        s.add_drain(1, b, 300);
        // Known already: the first window stays, the endpoint is not counted twice.
        s.add_drain(1, a, 999);
        assert_eq!(s.draining[&(1, a)], 100);
        assert_eq!(s.drained_by(1), vec![a, b]);
        assert_eq!(s.drained_by(2), vec![a]);
        assert_eq!(s.drained_by(3), Vec::<Ipv4Addr>::new());
        assert!(s.remove_drain(1, a));
        assert!(!s.remove_drain(1, a));
        assert!(s.endpoints.contains_key(&a), "service 2 still drains it");
        assert!(s.remove_drain(2, a));
        assert!(!s.endpoints.contains_key(&a));
        assert_eq!(s.endpoints[&b], 1);
    }
}
