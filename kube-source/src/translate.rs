//! From the Kubernetes API's watch streams to the cluster store: a pure layer, fed the
//! `kube_runtime::watcher::Event`s of seven watchers, that keeps the store equal to what the
//! API holds, with the existing `Cluster` operations.
//!
//! It is level-triggered: each event updates this layer's copy of the API (per kind), then
//! the store objects the event touched are made equal to what that copy says they should
//! be, whatever the store held before. So replaying an event changes nothing, a relist
//! (`Init`, `InitApply`..., `InitDone`, as after a `410 Gone`) removes from the store what
//! was deleted while the watch was away, and a store left by an earlier run (or written by
//! hand) is corrected on the first list.
//!
//! A kind is written only once it, and every kind it depends on, has been listed in full:
//! before that, this layer would take "not listed yet" for "deleted" and, at a restart,
//! empty services of their endpoints or delete pods' labels that the running dataplanes
//! use. Objects of a namespace follow the namespace: while it is absent from the API, its
//! pods, services and policies are absent from the store, whatever order the streams
//! deliver their deletions in.
//!
//! The one way back: OpenShift's NetNamespace objects follow the projects (their NETID,
//! the change-network annotation applied and removed); this layer only says which writes
//! that takes (`take_api_writes`), and the caller makes them.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use ipnetwork::Ipv4Network;
use k8s_openapi::{
    api::{
        core::v1::{Namespace, Node, Pod, Service as KubeService},
        discovery::v1::{EndpointConditions, EndpointSlice},
        networking::v1::NetworkPolicy,
    },
    apimachinery::pkg::util::intstr::IntOrString,
};
use kube::runtime::watcher::Event;
use kube::ResourceExt;
use oxsdn_controller::{
    policy::manifest::{self, Object},
    Cluster, Error, NewService, Protocol, ServicePort,
};
use tracing::{info, warn};

use crate::openshift::{self, ChangeNetwork, NetNamespaceWrite};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One event of one of the seven watch streams.
// Each change is moved once, into the translation thread: boxing the large variants
// would only add an allocation per event.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Change {
    Namespace(Event<Namespace>),
    Node(Event<Node>),
    Service(Event<KubeService>),
    EndpointSlice(Event<EndpointSlice>),
    Pod(Event<Pod>),
    NetworkPolicy(Event<NetworkPolicy>),
    /// OpenShift's NetNamespace objects (network.openshift.io/v1).
    NetNamespace(Event<openshift::NetNamespace>),
}

/// An object's place: (namespace, name); the namespace is empty for cluster-scoped kinds.
type Key = (String, String);

fn key_of<K: ResourceExt>(object: &K) -> Key {
    (object.namespace().unwrap_or_default(), object.name_any())
}

/// This layer's copy of one kind's objects, as the watch stream last listed and updated it.
struct Mirror<K> {
    objects: BTreeMap<Key, K>,
    /// The objects of a relist in progress, which replace `objects` at `InitDone`.
    relisting: Option<BTreeMap<Key, K>>,
    /// Whether a list has completed once: until then, absence means nothing.
    listed: bool,
}

/// What an event changed in a `Mirror`.
enum Touched<K> {
    /// These objects changed (the old versions, as far as they existed, come with them).
    Keys(Vec<(Key, Option<K>)>),
    /// A list completed: every object may have changed.
    All,
    Nothing,
}

impl<K: ResourceExt + Clone> Mirror<K> {
    fn new() -> Self {
        Mirror { objects: BTreeMap::new(), relisting: None, listed: false }
    }

    fn apply(&mut self, event: Event<K>) -> Touched<K> {
        match event {
            Event::Apply(object) => {
                let key = key_of(&object);
                let old = self.objects.insert(key.clone(), object);
                Touched::Keys(vec![(key, old)])
            }
            Event::Delete(object) => {
                let key = key_of(&object);
                let old = self.objects.remove(&key).or(Some(object));
                Touched::Keys(vec![(key, old)])
            }
            Event::Init => {
                self.relisting = Some(BTreeMap::new());
                Touched::Nothing
            }
            Event::InitApply(object) => {
                self.relisting.get_or_insert_with(BTreeMap::new).insert(key_of(&object), object);
                Touched::Nothing
            }
            Event::InitDone => {
                self.objects = self.relisting.take().unwrap_or_default();
                self.listed = true;
                Touched::All
            }
        }
    }

    fn get(&self, namespace: &str, name: &str) -> Option<&K> {
        self.objects.get(&(namespace.to_owned(), name.to_owned()))
    }

    fn in_namespace<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = (&'a Key, &'a K)> + 'a {
        self.objects.iter().filter(move |((ns, _), _)| ns == namespace)
    }
}

/// Keeps a `Cluster` equal to the Kubernetes API it is shown, one `Change` at a time.
pub struct Translator {
    cluster: Cluster,
    cluster_network: Ipv4Network,
    namespaces: Mirror<Namespace>,
    nodes: Mirror<Node>,
    services: Mirror<KubeService>,
    slices: Mirror<EndpointSlice>,
    pods: Mirror<Pod>,
    policies: Mirror<NetworkPolicy>,
    netnamespace_objects: Mirror<openshift::NetNamespace>,
    /// Writes to the API that make the NetNamespace objects equal to the store's
    /// projects, for the caller to make (`take_api_writes`).
    api_writes: Vec<NetNamespaceWrite>,
    /// Objects whose store write failed on the store (unreachable, contention), to retry.
    failed: BTreeSet<(Kind, Key)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Namespace,
    Node,
    Service,
    Pod,
    NetworkPolicy,
    NetNamespaceObject,
}

impl Translator {
    /// Reads the cluster's configuration (the cluster network, which endpoints must be in).
    pub fn new(cluster: Cluster) -> oxsdn_controller::Result<Self> {
        let cluster_network = cluster.config()?.cluster_network;
        Ok(Translator {
            cluster,
            cluster_network,
            namespaces: Mirror::new(),
            nodes: Mirror::new(),
            services: Mirror::new(),
            slices: Mirror::new(),
            pods: Mirror::new(),
            policies: Mirror::new(),
            netnamespace_objects: Mirror::new(),
            api_writes: Vec::new(),
            failed: BTreeSet::new(),
        })
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Whether every kind has been listed once (the store then equals the API).
    pub fn synced(&self) -> bool {
        self.namespaces.listed
            && self.nodes.listed
            && self.services.listed
            && self.slices.listed
            && self.pods.listed
            && self.policies.listed
            && self.netnamespace_objects.listed
    }

    /// The writes to the API the changes so far call for (NetNamespace objects).
    pub fn take_api_writes(&mut self) -> Vec<NetNamespaceWrite> {
        std::mem::take(&mut self.api_writes)
    }

    /// Objects whose last write failed on the store and waits for `retry_failed`.
    pub fn pending(&self) -> usize {
        self.failed.len()
    }

    /// Updates the copy of the API with `change` and brings the store objects it touched
    /// in line.
    pub fn handle(&mut self, change: Change) {
        match change {
            Change::Namespace(event) => match self.namespaces.apply(event) {
                Touched::Keys(keys) => {
                    for ((_, name), old) in keys {
                        let key = (String::new(), name.clone());
                        self.sync(Kind::Namespace, &key);
                        self.sync(Kind::NetNamespaceObject, &key);
                        // A namespace that appears or goes takes its objects with it.
                        if old.is_none() || self.namespaces.get("", &name).is_none() {
                            self.sync_namespace_contents(&name);
                        }
                    }
                }
                Touched::All => {
                    self.reconcile(Kind::Namespace);
                    self.reconcile(Kind::NetNamespaceObject);
                    self.reconcile(Kind::Service);
                    self.reconcile(Kind::Pod);
                    self.reconcile(Kind::NetworkPolicy);
                }
                Touched::Nothing => {}
            },
            Change::Node(event) => self.follow(Kind::Node, |t| t.nodes.apply(event)),
            Change::Pod(event) => self.follow(Kind::Pod, |t| t.pods.apply(event)),
            Change::NetworkPolicy(event) => self.follow(Kind::NetworkPolicy, |t| t.policies.apply(event)),
            Change::Service(event) => self.follow(Kind::Service, |t| t.services.apply(event)),
            Change::NetNamespace(event) => {
                self.follow(Kind::NetNamespaceObject, |t| t.netnamespace_objects.apply(event))
            }
            Change::EndpointSlice(event) => match self.slices.apply(event) {
                Touched::Keys(keys) => {
                    let mut services = BTreeSet::new();
                    for (key, old) in keys {
                        services.extend(old.as_ref().and_then(service_of_slice));
                        services.extend(self.slices.objects.get(&key).and_then(service_of_slice));
                    }
                    for key in services {
                        self.sync(Kind::Service, &key);
                    }
                }
                Touched::All => self.reconcile(Kind::Service),
                Touched::Nothing => {}
            },
        }
    }

    /// Tries again the writes that failed on the store.
    pub fn retry_failed(&mut self) {
        for (kind, key) in std::mem::take(&mut self.failed) {
            self.sync(kind, &key);
        }
    }

    fn follow<K>(&mut self, kind: Kind, apply: impl FnOnce(&mut Self) -> Touched<K>) {
        match apply(self) {
            Touched::Keys(keys) => keys.into_iter().for_each(|(key, _)| self.sync(kind, &key)),
            Touched::All => self.reconcile(kind),
            Touched::Nothing => {}
        }
    }

    fn sync_namespace_contents(&mut self, namespace: &str) {
        fn keys<K>(mirror: &Mirror<K>, namespace: &str) -> Vec<Key> {
            mirror.objects.keys().filter(|(ns, _)| ns == namespace).cloned().collect()
        }
        for (kind, keys) in [
            (Kind::Service, keys(&self.services, namespace)),
            (Kind::Pod, keys(&self.pods, namespace)),
            (Kind::NetworkPolicy, keys(&self.policies, namespace)),
        ] {
            keys.iter().for_each(|key| self.sync(kind, key));
        }
    }

    /// Whether `kind` may be written: it and what it depends on are listed.
    fn ready(&self, kind: Kind) -> bool {
        match kind {
            Kind::Namespace => self.namespaces.listed,
            Kind::Node => self.nodes.listed,
            Kind::Pod => self.namespaces.listed && self.pods.listed,
            Kind::NetworkPolicy => self.namespaces.listed && self.policies.listed,
            Kind::Service => self.namespaces.listed && self.services.listed && self.slices.listed,
            Kind::NetNamespaceObject => self.namespaces.listed && self.netnamespace_objects.listed,
        }
    }

    /// Makes every store object of `kind` equal to the API: those of the API and those of
    /// the store that the API no longer has.
    fn reconcile(&mut self, kind: Kind) {
        if !self.ready(kind) {
            return;
        }
        let stored = match self.stored_keys(kind) {
            Ok(keys) => keys,
            Err(e) => {
                warn!(?kind, "listing the store failed, retrying later: {e}");
                // Retried as a whole through its first key of the API, or at the next list.
                self.failed.extend(self.api_keys(kind).into_iter().map(|k| (kind, k)));
                return;
            }
        };
        let mut keys = self.api_keys(kind);
        keys.extend(stored);
        for key in keys {
            self.sync(kind, &key);
        }
    }

    fn api_keys(&self, kind: Kind) -> BTreeSet<Key> {
        match kind {
            Kind::Namespace => self.namespaces.objects.keys().cloned().collect(),
            Kind::Node => self.nodes.objects.keys().cloned().collect(),
            Kind::Service => self.services.objects.keys().cloned().collect(),
            Kind::Pod => self.pods.objects.keys().cloned().collect(),
            Kind::NetworkPolicy => self.policies.objects.keys().cloned().collect(),
            Kind::NetNamespaceObject => self.netnamespace_objects.objects.keys().cloned().collect(),
        }
    }

    fn stored_keys(&self, kind: Kind) -> oxsdn_controller::Result<BTreeSet<Key>> {
        let c = &self.cluster;
        Ok(match kind {
            Kind::Namespace | Kind::NetNamespaceObject => {
                c.list_netnamespaces()?.0.into_iter().map(|n| (String::new(), n.name)).collect()
            }
            Kind::Node => c.list_hostsubnets()?.0.into_iter().map(|h| (String::new(), h.host)).collect(),
            Kind::Service => c.list_services()?.0.into_iter().map(|s| (s.project, s.name)).collect(),
            Kind::Pod => c.list_pod_meta()?.0.into_iter().map(|p| (p.namespace, p.name)).collect(),
            Kind::NetworkPolicy => {
                c.list_network_policies(None)?.0.into_iter().map(|p| (p.namespace, p.name)).collect()
            }
        })
    }

    /// Makes the store's object `key` of `kind` what the API says it should be. Store
    /// failures are kept for `retry_failed`; objects the store refuses (a ClusterIP outside
    /// the service network, ...) are logged and left out.
    fn sync(&mut self, kind: Kind, key: &Key) {
        if !self.ready(kind) {
            return;
        }
        let result = match kind {
            Kind::Namespace => self.sync_netnamespace(&key.1),
            Kind::Node => self.sync_node(&key.1),
            Kind::Service => self.sync_service(&key.0, &key.1),
            Kind::Pod => self.sync_pod(&key.0, &key.1),
            Kind::NetworkPolicy => self.sync_policy(&key.0, &key.1),
            Kind::NetNamespaceObject => self.sync_netnamespace_object(&key.1),
        };
        match result {
            Ok(()) => {
                self.failed.remove(&(kind, key.clone()));
            }
            Err(Error::Store(e)) => {
                warn!(?kind, namespace = key.0, name = key.1, "store write failed, retrying later: {e}");
                self.failed.insert((kind, key.clone()));
            }
            Err(e) => warn!(?kind, namespace = key.0, name = key.1, "not written to the store: {e}"),
        }
    }

    /// Whether namespace `name` exists in the API (a terminating one too: its objects stay
    /// until the API deletes them).
    fn has_namespace(&self, name: &str) -> bool {
        self.namespaces.get("", name).is_some()
    }

    fn sync_netnamespace(&self, name: &str) -> oxsdn_controller::Result<()> {
        match self.namespaces.get("", name) {
            Some(namespace) => {
                let object = manifest::namespace_object(namespace.clone()).map_err(Error::Invalid)?;
                self.adopt_netid(name)?;
                self.cluster.apply_objects(&[object])?;
                Ok(())
            }
            None => {
                // Kubernetes deletes a namespace's contents first; the streams may report
                // them later, and the store refuses to delete a project with services.
                let (services, _) = self.cluster.list_project_services(name)?;
                for service in services {
                    ignore_absent(self.cluster.delete_service(&service.project, &service.name))?;
                }
                ignore_absent(self.cluster.delete_netnamespace(name))
            }
        }
    }

    /// A new project takes the NETID of its NetNamespace object if there is one (one
    /// OpenShift's master assigned: a node-by-node migration keeps every VNID).
    fn adopt_netid(&self, name: &str) -> oxsdn_controller::Result<()> {
        let Some(object) = self.netnamespace_objects.get("", name) else { return Ok(()) };
        if self.cluster.get_netnamespace(name)?.is_some() {
            return Ok(());
        }
        match self.cluster.import_netnamespace(name, object.netid) {
            Ok(ns) => {
                info!(project = name, netid = ns.netid, "NETID adopted from its NetNamespace");
                Ok(())
            }
            Err(Error::Store(e)) => Err(Error::Store(e)),
            Err(e) => {
                warn!(project = name, "NETID of its NetNamespace not adopted, allocating one: {e}");
                Ok(())
            }
        }
    }

    /// Applies the change-network annotation of NetNamespace `name`, then asks for the
    /// object to be made equal to the project (its NETID; the annotation removed, as
    /// `oc adm pod-network` waits for), created if missing, deleted with its namespace.
    fn sync_netnamespace_object(&mut self, name: &str) -> oxsdn_controller::Result<()> {
        let object = self.netnamespace_objects.get("", name).cloned();
        let request = object.as_ref().and_then(ChangeNetwork::of);
        if let (Some(request), true) = (&request, self.has_namespace(name)) {
            let projects = [name.to_owned()];
            let applied = match request {
                Ok(ChangeNetwork::Join(to)) => self.cluster.join_projects(to, &projects).map(drop),
                Ok(ChangeNetwork::Isolate) => self.cluster.isolate_projects(&projects).map(drop),
                Ok(ChangeNetwork::Global) => self.cluster.make_projects_global(&projects).map(drop),
                Err(value) => Err(Error::Invalid(format!("unknown change-network request {value:?}"))),
            };
            match applied {
                Err(Error::Store(e)) => return Err(Error::Store(e)),
                // Removed all the same: the request cannot succeed as it is (oc would wait forever).
                Err(e) => warn!(project = name, "change-network request refused: {e}"),
                Ok(()) => info!(project = name, ?request, "change-network request applied"),
            }
        }
        let project = self.cluster.get_netnamespace(name)?;
        let write = match (object, project) {
            (None, Some(project)) => Some(NetNamespaceWrite::Create { name: name.to_owned(), netid: project.netid }),
            (Some(object), Some(project)) if object.netid != project.netid || request.is_some() => {
                Some(NetNamespaceWrite::Update {
                    name: name.to_owned(),
                    netid: project.netid,
                    clear_change_network: request.is_some(),
                })
            }
            (Some(_), None) if !self.has_namespace(name) => Some(NetNamespaceWrite::Delete { name: name.to_owned() }),
            _ => None,
        };
        self.api_writes.extend(write);
        Ok(())
    }

    fn sync_node(&self, name: &str) -> oxsdn_controller::Result<()> {
        match self.nodes.get("", name).map(|node| (node, internal_ip(node))) {
            Some((_, Some(ip))) => self.cluster.register_node(name, ip).map(|hs| {
                info!(node = name, %ip, subnet = %hs.subnet, "node registered");
            }),
            Some((_, None)) => {
                warn!(node = name, "node has no IPv4 InternalIP yet: not registered");
                Ok(())
            }
            None => ignore_absent(self.cluster.delete_node(name)),
        }
    }

    fn sync_pod(&self, namespace: &str, name: &str) -> oxsdn_controller::Result<()> {
        match self.pods.get(namespace, name).filter(|_| self.has_namespace(namespace)) {
            Some(pod) => match manifest::pod(pod.clone(), None).map_err(Error::Invalid)? {
                Object::Pod(meta) => self.cluster.apply_pod_meta(&meta).map(drop),
                other => unreachable!("a Pod converts to a Pod, not {other:?}"),
            },
            None => self.cluster.delete_pod_meta(namespace, name).map(drop),
        }
    }

    fn sync_policy(&self, namespace: &str, name: &str) -> oxsdn_controller::Result<()> {
        match self.policies.get(namespace, name).filter(|_| self.has_namespace(namespace)) {
            Some(policy) => match manifest::network_policy(policy.clone(), None).map_err(Error::Invalid)? {
                Object::NetworkPolicy { namespace, name, spec } => {
                    self.cluster.apply_network_policy(&namespace, &name, &spec).map(drop)
                }
                other => unreachable!("a NetworkPolicy converts to a NetworkPolicy, not {other:?}"),
            },
            None => ignore_absent(self.cluster.delete_network_policy(namespace, name)),
        }
    }

    fn sync_service(&self, namespace: &str, name: &str) -> oxsdn_controller::Result<()> {
        let wanted = self
            .services
            .get(namespace, name)
            .filter(|_| self.has_namespace(namespace))
            .and_then(|service| self.store_service(service));
        let current = self.cluster.get_service(namespace, name)?;
        match (wanted, current) {
            (None, None) => Ok(()),
            (None, Some(_)) => ignore_absent(self.cluster.delete_service(namespace, name)),
            (Some(wanted), None) => self.cluster.create_services(&[wanted]).map(drop),
            (Some(wanted), Some(current)) if wanted.cluster_ip != Some(current.cluster_ip) => {
                // Deleted and created again while the watch was away: a new ClusterIP.
                ignore_absent(self.cluster.delete_service(namespace, name))?;
                self.cluster.create_services(&[wanted]).map(drop)
            }
            (Some(wanted), Some(current)) => {
                if wanted.ports != current.ports {
                    self.cluster.update_service_ports(namespace, name, &wanted.ports)?;
                }
                if wanted.endpoints != current.endpoints {
                    self.cluster.set_endpoints(namespace, name, &wanted.endpoints)?;
                }
                Ok(())
            }
        }
    }

    /// The store's form of a Service, with its EndpointSlices' endpoints; `None` for the
    /// services oxsdn does not carry: headless, ExternalName, IPv6, or without a TCP or
    /// UDP port.
    fn store_service(&self, service: &KubeService) -> Option<NewService> {
        let spec = service.spec.as_ref()?;
        if spec.type_.as_deref() == Some("ExternalName") {
            return None;
        }
        let cluster_ip: Ipv4Addr = spec.cluster_ip.as_deref()?.parse().ok()?;
        let (namespace, name) = key_of(service);
        let slices: Vec<&EndpointSlice> = self
            .slices
            .in_namespace(&namespace)
            .map(|(_, slice)| slice)
            .filter(|slice| service_of_slice(slice).is_some_and(|(_, service)| service == name))
            .filter(|slice| slice.address_type == "IPv4")
            .collect();
        let ports: Vec<ServicePort> =
            spec.ports.iter().flatten().filter_map(|port| service_port(port, &slices)).collect();
        if ports.is_empty() {
            return None;
        }
        let endpoints = endpoints(&slices).into_iter().filter(|ip| self.cluster_network.contains(*ip)).collect();
        Some(NewService { project: namespace, name, ports, cluster_ip: Some(cluster_ip), endpoints })
    }
}

/// The Service an EndpointSlice belongs to.
fn service_of_slice(slice: &EndpointSlice) -> Option<Key> {
    let service = slice.labels().get(SERVICE_NAME_LABEL)?;
    Some((slice.namespace().unwrap_or_default(), service.clone()))
}

/// A Service's port in the store's form. The target port is the one the EndpointSlices
/// give for the port's name (they resolve named target ports), else the spec's number.
fn service_port(port: &k8s_openapi::api::core::v1::ServicePort, slices: &[&EndpointSlice]) -> Option<ServicePort> {
    let protocol_name = port.protocol.as_deref().unwrap_or("TCP");
    let protocol = match protocol_name {
        "TCP" => Protocol::Tcp,
        "UDP" => Protocol::Udp,
        _ => return None,
    };
    let number = u16::try_from(port.port).ok()?;
    let from_slices = slices
        .iter()
        .flat_map(|slice| slice.ports.iter().flatten())
        .find(|p| {
            p.name.as_deref().unwrap_or_default() == port.name.as_deref().unwrap_or_default()
                && p.protocol.as_deref().unwrap_or("TCP") == protocol_name
        })
        .and_then(|p| p.port);
    let target = match (from_slices, port.target_port.clone()) {
        (Some(n), _) | (None, Some(IntOrString::Int(n))) => u16::try_from(n).ok()?,
        // Unresolved name (no endpoints yet) or none given: Kubernetes' default.
        (None, _) => number,
    };
    Some(ServicePort { name: port.name.clone().filter(|n| !n.is_empty()), protocol, port: number, target_port: target })
}

/// The endpoints traffic goes to, as kube-proxy picks them: the ready ones; when none is
/// ready, the terminating ones that still serve (so connections drain during a rollout).
fn endpoints(slices: &[&EndpointSlice]) -> Vec<Ipv4Addr> {
    let all: Vec<(EndpointConditions, &Vec<String>)> = slices
        .iter()
        .flat_map(|slice| slice.endpoints.iter())
        .map(|e| (e.conditions.clone().unwrap_or_default(), &e.addresses))
        .collect();
    let addresses = |pick: fn(&EndpointConditions) -> bool| -> Vec<Ipv4Addr> {
        all.iter()
            .filter(|(conditions, _)| pick(conditions))
            .flat_map(|(_, addresses)| addresses.iter().filter_map(|a| a.parse().ok()))
            .collect()
    };
    // An unset `ready` means ready (the API's rule for consumers).
    let ready = addresses(|c| c.ready.unwrap_or(true));
    if !ready.is_empty() {
        return ready;
    }
    addresses(|c| c.serving.unwrap_or(false) && c.terminating.unwrap_or(false))
}

fn internal_ip(node: &Node) -> Option<Ipv4Addr> {
    node.status
        .as_ref()?
        .addresses
        .iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse().ok())
}

/// Deleting what is already gone is done.
fn ignore_absent(result: oxsdn_controller::Result<()>) -> oxsdn_controller::Result<()> {
    match result {
        Err(
            Error::UnknownProject(_)
            | Error::UnknownNode(_)
            | Error::UnknownService { .. }
            | Error::UnknownNetworkPolicy { .. },
        ) => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests;
