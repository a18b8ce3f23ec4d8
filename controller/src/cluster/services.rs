//! Services: creation with ClusterIP allocation, port and endpoint changes, deletion,
//! listing and watching; each change one transaction (see `Cluster::transact`).
//!
//! A service belongs to an existing project: creating one does not create its project
//! (`oxsdnctl create project` or a pod's first CNI ADD does), and a project with
//! services cannot be deleted (`Cluster::delete_netnamespace`).

use std::{net::Ipv4Addr, sync::mpsc::Receiver};

use super::{keys, Attempt, Cluster};
use crate::{
    netnamespaces::validate_project_name,
    services::{
        allocate_cluster_ip, check_cluster_ip, normalize_endpoints, validate_ports,
        validate_service_name, ServicePort,
    },
    Error, NetNamespace, Result, Service,
};

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
        validate_names(project, name)?;
        validate_ports(ports)?;
        self.transact("services", |a| {
            let config = a.config()?;
            if let Some(ip) = cluster_ip {
                check_cluster_ip(ip, config.service_network)?;
            }
            if a.record::<NetNamespace>(project)?.is_none() {
                return Err(Error::UnknownProject(project.to_owned()));
            }
            if a.record::<Service>(&service_key_name(project, name))?
                .is_some()
            {
                return Err(Error::ServiceExists {
                    project: project.to_owned(),
                    name: name.to_owned(),
                });
            }
            // Guarded: two creations at once cannot both take the same address.
            let all = a.records::<Service>("")?;
            let cluster_ip = match cluster_ip {
                Some(ip) => match all.iter().find(|s| s.cluster_ip == ip) {
                    Some(other) => {
                        return Err(Error::ClusterIpInUse {
                            ip,
                            service: service_key_name(&other.project, &other.name),
                        })
                    }
                    None => ip,
                },
                None => {
                    allocate_cluster_ip(config.service_network, all.iter().map(|s| s.cluster_ip))?
                }
            };
            let service = Service {
                project: project.to_owned(),
                name: name.to_owned(),
                cluster_ip,
                ports: ports.to_vec(),
                endpoints: Vec::new(),
                id: a.next_id(keys::SERVICE_ID_COUNTER, "service")?,
            };
            a.put_record(&service)?;
            Ok(service)
        })
    }

    /// Replaces the ports of a service; its ClusterIP and endpoints are kept.
    pub fn update_service_ports(
        &self,
        project: &str,
        name: &str,
        ports: &[ServicePort],
    ) -> Result<Service> {
        validate_ports(ports)?;
        self.modify_service(project, name, |_, service| {
            service.ports = ports.to_vec();
            Ok(())
        })
    }

    /// Replaces the endpoints of a service (empty: none). They must be in the cluster
    /// network; they are stored sorted, without repetitions.
    pub fn set_endpoints(
        &self,
        project: &str,
        name: &str,
        endpoints: &[Ipv4Addr],
    ) -> Result<Service> {
        self.modify_service(project, name, |a, service| {
            let cluster_network = a.config()?.cluster_network;
            service.endpoints = normalize_endpoints(endpoints.iter().copied(), cluster_network)?;
            Ok(())
        })
    }

    /// Adds `endpoints` to those of a service; any it has already are left as they are.
    pub fn add_endpoints(
        &self,
        project: &str,
        name: &str,
        endpoints: &[Ipv4Addr],
    ) -> Result<Service> {
        self.modify_service(project, name, |a, service| {
            let cluster_network = a.config()?.cluster_network;
            let all = service.endpoints.iter().chain(endpoints).copied();
            service.endpoints = normalize_endpoints(all, cluster_network)?;
            Ok(())
        })
    }

    /// Removes `endpoints` from those of a service. Removing one it does not have is not
    /// an error, so that a pod's removal can be retried.
    pub fn remove_endpoints(
        &self,
        project: &str,
        name: &str,
        endpoints: &[Ipv4Addr],
    ) -> Result<Service> {
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
            let current: Service =
                a.record(&service_key_name(project, name))?.ok_or_else(|| {
                    Error::UnknownService {
                        project: project.to_owned(),
                        name: name.to_owned(),
                    }
                })?;
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
                Err(Error::UnknownService {
                    project: project.to_owned(),
                    name: name.to_owned(),
                })
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
            Some(ServiceEvent::Deleted {
                project: project.to_owned(),
                name: name.to_owned(),
            })
        })
    }
}

#[cfg(test)]
mod tests;
