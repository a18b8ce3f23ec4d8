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

pub struct Services {
    cluster: Arc<Cluster>,
    maps: Arc<Mutex<NodeMaps>>,
    projects: Arc<Projects>,
    /// By (project, name). Locked after `maps` when both are needed.
    applied: Mutex<HashMap<(String, String), Applied>>,
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
        Services { cluster, maps, projects, applied: Mutex::default() }
    }

    /// Whether `ip` is an endpoint of some service (checked with the maps locked).
    pub fn is_endpoint(&self, ip: Ipv4Addr) -> bool {
        self.applied.lock().unwrap().values().any(|a| a.service.endpoints.contains(&ip))
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
        let mut applied = self.applied.lock().unwrap();
        let key = (svc.project.clone(), svc.name.clone());
        let old = applied.remove(&key);
        if old.as_ref().is_some_and(|o| &o.service == svc) {
            applied.insert(key, old.expect("checked"));
            return Ok(());
        }
        let mut free = free_slots(&applied);
        let mut take_slot = |maps: &mut NodeMaps| -> Result<u32> {
            let slot = free.pop_first().context("no free service counter slot")?;
            maps::reset(&mut maps.service_stats, slot)?;
            Ok(slot)
        };
        // Ports and the ClusterIP keep their counters across changes.
        let ip_slot = match &old {
            Some(o) if o.service.cluster_ip == svc.cluster_ip => o.ip_slot,
            _ => take_slot(&mut maps)?,
        };
        let mut port_slots = Vec::with_capacity(svc.ports.len());
        for port in &svc.ports {
            let kept = old.as_ref().and_then(|o| {
                o.service.ports.iter().position(|p| service_key(&o.service, p) == service_key(svc, port)).map(|i| o.port_slots[i])
            });
            port_slots.push(match kept {
                Some(slot) => slot,
                None => take_slot(&mut maps)?,
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
        applied.insert(key, Applied { service: svc.clone(), port_slots, ip_slot });
        flag_endpoints(&mut maps, &applied)?;
        tracing::info!(service = %svc.name, project = %svc.project, ip = %svc.cluster_ip, endpoints = count, "service applied");
        Ok(())
    }

    fn remove(&self, project: &str, name: &str) -> Result<()> {
        let mut maps = self.maps.lock().unwrap();
        let mut applied = self.applied.lock().unwrap();
        if let Some(old) = applied.remove(&(project.to_string(), name.to_string())) {
            for port in &old.service.ports {
                ignore_missing(maps.services.remove(&service_key(&old.service, port)))?;
            }
            ignore_missing(maps.service_ips.remove(&ip_key(old.service.cluster_ip)))?;
            remove_backends(&mut maps, &old.service, 0, &[])?;
            flag_endpoints(&mut maps, &applied)?;
            tracing::info!(service = %name, project = %project, "service removed");
        }
        Ok(())
    }
}

/// Counter slots no applied service holds.
fn free_slots(applied: &HashMap<(String, String), Applied>) -> BTreeSet<u32> {
    let used: HashSet<u32> = applied.values().flat_map(|a| a.port_slots.iter().copied().chain([a.ip_slot])).collect();
    (0..MAX_SERVICE_SLOTS).filter(|s| !used.contains(s)).collect()
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

/// Sets `POD_IS_ENDPOINT` on exactly the local pods that are some service's endpoint.
fn flag_endpoints(maps: &mut NodeMaps, applied: &HashMap<(String, String), Applied>) -> Result<()> {
    let endpoints: HashSet<u32> = applied.values().flat_map(|a| a.service.endpoints.iter().map(|ip| ip_key(*ip))).collect();
    let ports: Vec<_> = maps.pod_ports.iter().filter_map(|e| e.ok()).collect();
    for (ifindex, mut port) in ports {
        let flags = if endpoints.contains(&port.ip) { POD_IS_ENDPOINT } else { 0 };
        if port.flags != flags {
            port.flags = flags;
            maps.pod_ports.insert(ifindex, port, 0)?;
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
        let gone: Vec<(String, String)> = self.applied.lock().unwrap().keys().filter(|k| !wanted.contains(*k)).cloned().collect();
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
        }
        for svc in &all {
            self.upsert(svc)?;
        }
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
