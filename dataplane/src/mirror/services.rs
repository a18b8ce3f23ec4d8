//! Keeps the service maps equal to the cluster's Services: `SERVICES` (a declared port:
//! the service, its project, endpoint count, target port), `SERVICE_IPS` (ClusterIPs,
//! for fragments), `ENDPOINTS` (endpoints by index), `ENDPOINT_SET` (endpoint
//! membership, so tracked connections to an endpoint that left are re-balanced),
//! `DRAINING` (endpoints that left, until their drain window ends), and `ENDPOINT_PODS`
//! (local pods that are endpoints: their packets may be replies to translate). This
//! mirror is the only writer of all of them.
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

use anyhow::{Context, Result};
use ipnetwork::Ipv4Network;
use oxsdn_common::{EndpointKey, EndpointMember, ServiceKey, MAX_SERVICE_SLOTS};
use oxsdn_controller::{cluster::ServiceEvent, Protocol, Service, ServicePort};

use super::{projects::Projects, Feed, Mirror};
use crate::{
    entries::{self, endpoint_key, endpoint_member, ProjectRef, IPPROTO_TCP, IPPROTO_UDP},
    maps::{self, ignore_missing, ip_key, monotonic_ns, NodeMaps},
};

/// How long tracked TCP connections keep an endpoint that left their service:
/// Kubernetes' default `terminationGracePeriodSeconds`, the time a terminating pod is
/// given to finish its connections (kube-proxy's conntrack keeps them meanwhile).
pub const ENDPOINT_DRAIN_WINDOW: Duration = Duration::from_secs(30);

/// How often drain records whose window ended are removed (the programs ignore them
/// from then on; the sweep frees their entries and the endpoints' reply flags).
pub const DRAIN_SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// A previous agent's endpoint entries of one service, found in the pinned maps.
#[derive(Default)]
struct PinnedEndpoints {
    /// Endpoints with an `ENDPOINT_SET` entry.
    members: Vec<Ipv4Addr>,
    /// One past the highest `ENDPOINTS` index.
    indexes: u32,
}

/// What this node applied for one service, to undo or change it later.
#[derive(Clone)]
struct Applied {
    service: Service,
    project: ProjectRef,
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
        self.draining
            .range((service, Ipv4Addr::UNSPECIFIED)..=(service, Ipv4Addr::BROADCAST))
            .map(|((_, ip), _)| *ip)
            .collect()
    }
}

type Source = dyn Feed<Service, Event = ServiceEvent>;

pub struct Services {
    source: Arc<Source>,
    maps: Arc<Mutex<NodeMaps>>,
    projects: Arc<Projects>,
    /// This node's subnet: endpoints in it are local pods.
    subnet: Ipv4Network,
    /// Locked after `maps` when both are needed.
    state: Mutex<State>,
}

fn service_key(svc: &Service, port: &ServicePort) -> ServiceKey {
    let proto = match port.protocol {
        Protocol::Tcp => IPPROTO_TCP,
        Protocol::Udp => IPPROTO_UDP,
    };
    entries::service_key(svc.cluster_ip, port.port, proto)
}

impl Services {
    pub fn new(source: Arc<Source>, maps: Arc<Mutex<NodeMaps>>, projects: Arc<Projects>, subnet: Ipv4Network) -> Self {
        let state = State {
            by_name: HashMap::new(),
            free_slots: (0..MAX_SERVICE_SLOTS).collect(),
            endpoints: HashMap::new(),
            draining: BTreeMap::new(),
            adoptable: BTreeSet::new(),
        };
        Services { source, maps, projects, subnet, state: Mutex::new(state) }
    }

    /// Applies a service. `pinned`: a previous agent's endpoint entries of it, for a
    /// service this agent has not applied yet.
    fn upsert(&self, svc: &Service, pinned: Option<PinnedEndpoints>) -> Result<()> {
        // The service may have come before its project reached this node's watcher.
        let project = self
            .projects
            .lookup(&svc.project)?
            .with_context(|| format!("service in unknown project {}", svc.project))?;
        let mut maps = self.maps.lock().unwrap();
        let mut state = self.state.lock().unwrap();
        let key = (svc.project.clone(), svc.name.clone());
        let old = state.by_name.get(&key).cloned();
        if old.as_ref().is_some_and(|o| &o.service == svc && o.project == project) {
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
                Some(o) => o
                    .service
                    .ports
                    .iter()
                    .position(|p| service_key(&o.service, p) == service_key(svc, port))
                    .map(|i| o.port_slots[i]),
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
        let mut forgotten = Vec::new();
        let previous = match &old {
            Some(o) if o.service.id == svc.id => {
                PinnedEndpoints { members: o.service.endpoints.clone(), indexes: o.service.endpoints.len() as u32 }
            }
            Some(o) => {
                forgotten = forget(&mut maps, &mut state, &o.service, o.service.endpoints.len() as u32)?;
                PinnedEndpoints::default()
            }
            None => pinned.unwrap_or_default(),
        };
        let count = svc.endpoints.len() as u32;
        for ip in &svc.endpoints {
            let member = endpoint_member(svc.id, *ip);
            maps.endpoint_set.insert(member, 1, 0)?;
            // Listed again: it serves, no drain.
            if state.remove_drain(svc.id, *ip) {
                ignore_missing(maps.draining.remove(&member))?;
            }
        }
        for (index, ip) in svc.endpoints.iter().enumerate() {
            maps.endpoints.insert(endpoint_key(svc.id, index as u32), ip_key(*ip), 0)?;
        }
        maps.service_ips.insert(ip_key(svc.cluster_ip), entries::service_ip(project, ip_slot), 0)?;
        for (port, slot) in svc.ports.iter().zip(&port_slots) {
            let value = entries::service_port(svc.id, project, count, *slot, port.target_port);
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
            ignore_missing(maps.endpoints.remove(&endpoint_key(svc.id, index)))?;
        }
        let until = monotonic_ns() + ENDPOINT_DRAIN_WINDOW.as_nanos() as u64;
        for ip in previous.members.iter().filter(|ip| !svc.endpoints.contains(ip)) {
            drain(&mut maps, &mut state, svc.id, *ip, until)?;
        }
        state.insert(key, Applied { service: svc.clone(), project, port_slots, ip_slot });
        let touched = forgotten.iter().chain(&previous.members).chain(&svc.endpoints);
        self.flag_endpoints(&mut maps, &state, touched)?;
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
            let touched = forget(&mut maps, &mut state, &old.service, old.service.endpoints.len() as u32)?;
            self.flag_endpoints(&mut maps, &state, touched.iter())?;
            tracing::info!(service = %name, project = %project, "service removed");
        }
        Ok(())
    }

    /// Removes the drain records whose window has ended.
    pub fn sweep_drained(&self) -> Result<()> {
        let now = monotonic_ns();
        let mut maps = self.maps.lock().unwrap();
        let mut state = self.state.lock().unwrap();
        let ended: Vec<(u32, Ipv4Addr)> =
            state.draining.iter().filter(|(_, until)| **until <= now).map(|(k, _)| *k).collect();
        for (service, ip) in &ended {
            ignore_missing(maps.draining.remove(&endpoint_member(*service, *ip)))?;
            state.remove_drain(*service, *ip);
        }
        self.flag_endpoints(&mut maps, &state, ended.iter().map(|(_, ip)| ip))
    }

    /// Writes `ENDPOINT_PODS` for the local pods among `ips` (endpoints a change
    /// touched), so each local address is marked iff some service lists or drains it.
    fn flag_endpoints<'a>(
        &self,
        maps: &mut NodeMaps,
        state: &State,
        ips: impl IntoIterator<Item = &'a Ipv4Addr>,
    ) -> Result<()> {
        for ip in ips {
            let Some((slot, flagged)) = entries::endpoint_pod_entry(self.subnet, *ip) else { continue };
            let value = if state.endpoints.contains_key(ip) { flagged } else { 0 };
            if maps.endpoint_pods.get(&slot, 0)? != value {
                maps.endpoint_pods.set(slot, value, 0)?;
            }
        }
        Ok(())
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
    let member = endpoint_member(id, ip);
    let recorded = state.draining.contains_key(&(id, ip))
        || match maps.draining.insert(member, until, 0) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(service = id, endpoint = %ip, "cannot record the endpoint as draining; its connections choose again: {e}");
                false
            }
        };
    if recorded {
        state.add_drain(id, ip, until);
    }
    ignore_missing(maps.endpoint_set.remove(&member))
}

/// Removes every endpoint entry of a service that is gone (`indexes`: how many
/// `ENDPOINTS` entries it has), its drain records included; returns the endpoints whose
/// flags may have changed.
fn forget(maps: &mut NodeMaps, state: &mut State, old: &Service, indexes: u32) -> Result<Vec<Ipv4Addr>> {
    for index in 0..indexes {
        ignore_missing(maps.endpoints.remove(&endpoint_key(old.id, index)))?;
    }
    for ip in &old.endpoints {
        ignore_missing(maps.endpoint_set.remove(&endpoint_member(old.id, *ip)))?;
    }
    let drained = state.drained_by(old.id);
    for ip in &drained {
        ignore_missing(maps.draining.remove(&endpoint_member(old.id, *ip)))?;
        state.remove_drain(old.id, *ip);
    }
    Ok(old.endpoints.iter().chain(&drained).copied().collect())
}

impl Mirror for Services {
    type Event = ServiceEvent;
    const WHAT: &'static str = "service";

    fn resync(&self) -> Result<u64> {
        let (all, revision) = self.source.list()?;
        let wanted: HashSet<(String, String)> = all.iter().map(|s| (s.project.clone(), s.name.clone())).collect();
        let gone: Vec<(String, String)> =
            self.state.lock().unwrap().by_name.keys().filter(|k| !wanted.contains(*k)).cloned().collect();
        for (project, name) in gone {
            self.remove(&project, &name)?;
        }
        let mut pinned: HashMap<u32, PinnedEndpoints> = HashMap::new();
        {
            // Entries of a previous agent that no current service explains.
            let mut maps = self.maps.lock().unwrap();
            let ports: HashSet<ServiceKey> =
                all.iter().flat_map(|s| s.ports.iter().map(move |p| service_key(s, p))).collect();
            let ips: HashSet<u32> = all.iter().map(|s| ip_key(s.cluster_ip)).collect();
            let ids: HashSet<u32> = all.iter().map(|s| s.id).collect();
            let stale_ports: Vec<ServiceKey> =
                maps.services.keys().filter_map(|k| k.ok()).filter(|k| !ports.contains(k)).collect();
            for k in stale_ports {
                ignore_missing(maps.services.remove(&k))?;
            }
            let stale_ips: Vec<u32> =
                maps.service_ips.keys().filter_map(|k| k.ok()).filter(|k| !ips.contains(k)).collect();
            for k in stale_ips {
                ignore_missing(maps.service_ips.remove(&k))?;
            }
            let stale_endpoints: Vec<EndpointKey> =
                maps.endpoints.keys().filter_map(|k| k.ok()).filter(|k| !ids.contains(&k.service)).collect();
            for k in stale_endpoints {
                ignore_missing(maps.endpoints.remove(&k))?;
            }
            let stale_members: Vec<EndpointMember> =
                maps.endpoint_set.keys().filter_map(|k| k.ok()).filter(|k| !ids.contains(&k.service)).collect();
            for k in stale_members {
                ignore_missing(maps.endpoint_set.remove(&k))?;
            }
            let stale_drains: Vec<EndpointMember> =
                maps.draining.keys().filter_map(|k| k.ok()).filter(|k| !ids.contains(&k.service)).collect();
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
            for entry in maps.endpoint_set.keys() {
                let member = entry?;
                if !applied.contains(&member.service) {
                    pinned.entry(member.service).or_default().members.push(maps::ip_from_key(member.ip));
                }
            }
            for entry in maps.endpoints.keys() {
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
        self.source.watch(after_revision)
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
