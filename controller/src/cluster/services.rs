//! Services: creation with ClusterIP allocation, port and endpoint changes, deletion,
//! listing and watching; each change one transaction (see `Cluster::transact`).
//!
//! A service belongs to an existing project: creating one does not create its project
//! (`oxsdnctl create project` or a pod's first CNI ADD does), and a project with
//! services cannot be deleted (`Cluster::delete_netnamespace`).

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
    sync::mpsc::Receiver,
};

use super::{keys, Attempt, Cluster};
use crate::{
    netnamespaces::validate_project_name,
    service::{
        check_cluster_ip, cluster_ip_allocator, normalize_endpoints, validate_ports, validate_service_name, ServicePort,
    },
    Error, NetNamespace, Result, Service,
};

/// A service to create (`Cluster::create_services`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewService {
    pub project: String,
    pub name: String,
    pub ports: Vec<ServicePort>,
    /// `None`: a free one is allocated.
    pub cluster_ip: Option<Ipv4Addr>,
    pub endpoints: Vec<Ipv4Addr>,
}

/// A change to a Service, seen through `Cluster::watch_services`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceEvent {
    Upsert(Service),
    Deleted { project: String, name: String },
}

fn validate_names(project: &str, name: &str) -> Result<()> {
    validate_project_name(project)?;
    validate_service_name(name)
}

fn service_key_name(project: &str, name: &str) -> String {
    format!("{project}/{name}")
}

impl Cluster {
    /// Creates service `name` in `project`, which must exist (`Error::UnknownProject`),
    /// with `ports` and no endpoints. Its ClusterIP is `cluster_ip` if given (refused if
    /// outside the service network, its network or broadcast address, or another
    /// service's), else a random free one. A service of that name already existing is an
    /// error (`Error::ServiceExists`), even an identical one: two creators of one name
    /// most likely mean two different services.
    pub fn create_service(
        &self,
        project: &str,
        name: &str,
        ports: &[ServicePort],
        cluster_ip: Option<Ipv4Addr>,
    ) -> Result<Service> {
        let new = NewService {
            project: project.to_owned(),
            name: name.to_owned(),
            ports: ports.to_vec(),
            cluster_ip,
            endpoints: Vec::new(),
        };
        Ok(self.create_services(std::slice::from_ref(&new))?.remove(0))
    }

    /// Creates the services `new` in one transaction, all or none, each as
    /// `create_service` does, with its endpoints set. Created one by one, each service
    /// lists every other to find a free ClusterIP, so loading thousands is quadratic; a
    /// batch lists once. A transaction compares one key per project and writes one per
    /// service: keep batches within etcd's `--max-txn-ops`.
    pub fn create_services(&self, new: &[NewService]) -> Result<Vec<Service>> {
        let mut names = HashSet::new();
        for s in new {
            validate_names(&s.project, &s.name)?;
            validate_ports(&s.ports)?;
            if !names.insert(service_key_name(&s.project, &s.name)) {
                return Err(Error::ServiceExists { project: s.project.clone(), name: s.name.clone() });
            }
        }
        self.transact("services", |a| {
            let config = a.config()?;
            // Guarded: two creations at once cannot both take the same address.
            let all = a.records::<Service>("")?;
            let mut taken: HashMap<Ipv4Addr, String> =
                all.iter().map(|s| (s.cluster_ip, service_key_name(&s.project, &s.name))).collect();
            let existing: HashSet<String> = taken.values().cloned().collect();
            let mut projects = HashSet::new();
            for s in new {
                if let Some(ip) = s.cluster_ip {
                    check_cluster_ip(ip, config.service_network)?;
                }
                if projects.insert(s.project.as_str()) && a.record::<NetNamespace>(&s.project)?.is_none() {
                    return Err(Error::UnknownProject(s.project.clone()));
                }
                let key_name = service_key_name(&s.project, &s.name);
                if existing.contains(&key_name) {
                    return Err(Error::ServiceExists { project: s.project.clone(), name: s.name.clone() });
                }
                if let Some(ip) = s.cluster_ip {
                    if let Some(other) = taken.insert(ip, key_name) {
                        return Err(Error::ClusterIpInUse { ip, service: other });
                    }
                }
            }
            let mut free_ips = cluster_ip_allocator(config.service_network, taken.keys().copied());
            let ids = a.next_ids(keys::SERVICE_ID_COUNTER, "service", new.len())?;
            let mut created = Vec::with_capacity(new.len());
            for (s, id) in new.iter().zip(ids) {
                let cluster_ip = match s.cluster_ip {
                    Some(ip) => ip,
                    None => free_ips.allocate()?,
                };
                let service = Service {
                    project: s.project.clone(),
                    name: s.name.clone(),
                    cluster_ip,
                    ports: s.ports.clone(),
                    endpoints: normalize_endpoints(s.endpoints.iter().copied(), config.cluster_network)?,
                    id,
                };
                a.put_record(&service)?;
                created.push(service);
            }
            Ok(created)
        })
    }

    /// Replaces the ports of a service; its ClusterIP and endpoints are kept.
    pub fn update_service_ports(&self, project: &str, name: &str, ports: &[ServicePort]) -> Result<Service> {
        validate_ports(ports)?;
        self.modify_service(project, name, |_, service| {
            service.ports = ports.to_vec();
            Ok(())
        })
    }

    /// Replaces the endpoints of a service (empty: none). They must be in the cluster
    /// network; they are stored sorted, without repetitions.
    pub fn set_endpoints(&self, project: &str, name: &str, endpoints: &[Ipv4Addr]) -> Result<Service> {
        self.modify_service(project, name, |a, service| {
            let cluster_network = a.config()?.cluster_network;
            service.endpoints = normalize_endpoints(endpoints.iter().copied(), cluster_network)?;
            Ok(())
        })
    }

    /// Adds `endpoints` to those of a service; any it has already are left as they are.
    pub fn add_endpoints(&self, project: &str, name: &str, endpoints: &[Ipv4Addr]) -> Result<Service> {
        self.modify_service(project, name, |a, service| {
            let cluster_network = a.config()?.cluster_network;
            let all = service.endpoints.iter().chain(endpoints).copied();
            service.endpoints = normalize_endpoints(all, cluster_network)?;
            Ok(())
        })
    }

    /// Removes `endpoints` from those of a service. Removing one it does not have is not
    /// an error, so that a pod's removal can be retried.
    pub fn remove_endpoints(&self, project: &str, name: &str, endpoints: &[Ipv4Addr]) -> Result<Service> {
        self.modify_service(project, name, |_, service| {
            service.endpoints.retain(|ip| !endpoints.contains(ip));
            Ok(())
        })
    }

    /// Reads service `project/name`, lets `change` edit it, and writes it back if it
    /// changed (so a no-op makes no store revision and no watch event).
    fn modify_service(
        &self,
        project: &str,
        name: &str,
        mut change: impl FnMut(&mut Attempt, &mut Service) -> Result<()>,
    ) -> Result<Service> {
        validate_names(project, name)?;
        self.transact("services", |a| {
            let current: Service = a
                .record(&service_key_name(project, name))?
                .ok_or_else(|| Error::UnknownService { project: project.to_owned(), name: name.to_owned() })?;
            let mut service = current.clone();
            change(a, &mut service)?;
            if service != current {
                a.put_record(&service)?;
            }
            Ok(service)
        })
    }

    /// Deletes a service, freeing its ClusterIP; its id is never reused.
    pub fn delete_service(&self, project: &str, name: &str) -> Result<()> {
        validate_names(project, name)?;
        self.transact("services", |a| {
            if a.delete_record::<Service>(&service_key_name(project, name))? {
                Ok(())
            } else {
                Err(Error::UnknownService { project: project.to_owned(), name: name.to_owned() })
            }
        })
    }

    pub fn get_service(&self, project: &str, name: &str) -> Result<Option<Service>> {
        validate_names(project, name)?;
        self.get_record(&service_key_name(project, name))
    }

    /// All services sorted by (project, name), and the store revision they were read at
    /// (to watch from).
    pub fn list_services(&self) -> Result<(Vec<Service>, u64)> {
        let (mut all, revision) = self.list_records::<Service>("")?;
        // Key order is not (project, name) order: "a-b/x" sorts before "a/x" since '-'
        // comes before '/'.
        all.sort_by(|x, y| (&x.project, &x.name).cmp(&(&y.project, &y.name)));
        Ok((all, revision))
    }

    /// The services of `project` sorted by name, and the store revision they were read
    /// at. A project that does not exist has none.
    pub fn list_project_services(&self, project: &str) -> Result<(Vec<Service>, u64)> {
        validate_project_name(project)?;
        // Project names have no '/', so this prefix holds exactly the project's services.
        self.list_records(&format!("{project}/"))
    }

    /// Service changes after `after_revision` (from `list_services`).
    pub fn watch_services(&self, after_revision: u64) -> Result<Receiver<ServiceEvent>> {
        self.watch_records(after_revision, ServiceEvent::Upsert, |key_name| {
            let (project, name) = key_name.split_once('/')?;
            Some(ServiceEvent::Deleted { project: project.to_owned(), name: name.to_owned() })
        })
    }
}

#[cfg(test)]
mod tests;
