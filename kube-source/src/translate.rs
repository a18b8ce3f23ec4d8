//! From the Kubernetes API's watch streams to the cluster store: a pure layer, fed the
//! `kube_runtime::watcher::Event`s of ten watchers, that keeps the store equal to what the
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
//! OpenShift's objects (network.openshift.io/v1) go both ways, as OpenShift's master and
//! nodes use them, so that a cluster can move from OpenShift SDN one node at a time:
//! - ClusterNetwork `default`: checked against oxsdn's configuration before anything is
//!   written (a mismatch writes nothing until it is resolved); published when absent.
//! - NetNamespace: a project takes its object's NETID, at creation and whenever it
//!   changes (OpenShift's master ran `oc adm pod-network`); the change-network annotation
//!   is applied and removed; objects are created for projects that have none. Projects
//!   are written only once the NetNamespaces are listed too, so a new project adopts its
//!   object's NETID whichever watch lists first. Its
//!   `egressIPs` and multicast annotation (`netnamespace.network.openshift.io/`) are the
//!   project's.
//! - HostSubnet: a node takes its object's subnet (checked: inside the cluster network,
//!   overlapping no other node's), at creation and whenever it changes; a node without
//!   one gets a subnet from oxsdn and an object OpenShift's master accepts as its own.
//!   Its `egressIPs` and `egressCIDRs` are the node's.
//! - EgressNetworkPolicy: into the store (one per project; more than one, or an invalid
//!   one, drops the project's egress, as OpenShift does).
//!
//! This layer only says which writes to the API that takes (`take_api_writes`); the
//! caller makes them.

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
use oxsdn_controller::egress::{
    EgressNetworkPolicyRecord, EgressNetworkPolicySpec, EgressPeer, EgressRule, EgressRuleType,
};
use oxsdn_controller::egress_ip::{NodeEgress, ProjectEgressIps};
use oxsdn_controller::netnamespaces::NETNAMESPACE_ANNOTATION_PREFIX;
use oxsdn_controller::{
    policy::manifest::{self, Object},
    Cluster, Error, NewService, Protocol, ServicePort,
};
use tracing::{error, info, warn};

use crate::openshift::{
    self, ApiWrite, ChangeNetwork, ClusterNetwork, HostSubnetWrite, NetNamespaceWrite, CLUSTER_NETWORK_NAME,
};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One event of one of the ten watch streams.
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
    /// OpenShift's objects (network.openshift.io/v1).
    NetNamespace(Event<openshift::NetNamespace>),
    HostSubnet(Event<openshift::HostSubnet>),
    ClusterNetwork(Event<ClusterNetwork>),
    EgressNetworkPolicy(Event<openshift::EgressNetworkPolicy>),
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
    hostsubnet_objects: Mirror<openshift::HostSubnet>,
    cluster_networks: Mirror<ClusterNetwork>,
    egress_policies: Mirror<openshift::EgressNetworkPolicy>,
    /// How the ClusterNetwork object differs from oxsdn's configuration: while it does,
    /// nothing is written.
    config_mismatch: Option<Vec<String>>,
    /// Whether the ClusterNetwork has been found to agree (or absent): until then,
    /// nothing is written.
    config_agreed: bool,
    /// Writes to the API that make OpenShift's objects equal to the store, for the
    /// caller to make (`take_api_writes`).
    api_writes: Vec<ApiWrite>,
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
    ClusterNetworkObject,
    /// Keyed by (namespace, ""): a project has at most one in the store.
    EgressPolicy,
}

/// The kinds written once the ClusterNetwork agrees, in the order a full pass takes them.
const STORE_KINDS: [Kind; 7] = [
    Kind::Namespace,
    Kind::NetNamespaceObject,
    Kind::Node,
    Kind::Service,
    Kind::Pod,
    Kind::NetworkPolicy,
    Kind::EgressPolicy,
];

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
            hostsubnet_objects: Mirror::new(),
            cluster_networks: Mirror::new(),
            egress_policies: Mirror::new(),
            config_mismatch: None,
            config_agreed: false,
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
            && self.hostsubnet_objects.listed
            && self.cluster_networks.listed
            && self.egress_policies.listed
    }

    /// The writes to OpenShift's objects in the API the changes so far call for.
    pub fn take_api_writes(&mut self) -> Vec<ApiWrite> {
        std::mem::take(&mut self.api_writes)
    }

    /// How the ClusterNetwork object differs from oxsdn's configuration, if it does (then
    /// nothing is written, to the store or the API).
    pub fn config_mismatch(&self) -> Option<&[String]> {
        self.config_mismatch.as_deref()
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
                Touched::All => self.reconcile_namespaces(),
                Touched::Nothing => {}
            },
            Change::Node(event) => self.follow(Kind::Node, |t| t.nodes.apply(event)),
            Change::Pod(event) => self.follow(Kind::Pod, |t| t.pods.apply(event)),
            Change::NetworkPolicy(event) => self.follow(Kind::NetworkPolicy, |t| t.policies.apply(event)),
            Change::Service(event) => self.follow(Kind::Service, |t| t.services.apply(event)),
            Change::NetNamespace(event) => match self.netnamespace_objects.apply(event) {
                Touched::Keys(keys) => keys.into_iter().for_each(|(key, _)| self.sync(Kind::NetNamespaceObject, &key)),
                // The projects wait for this list (their NETIDs), and their contents for them.
                Touched::All => self.reconcile_namespaces(),
                Touched::Nothing => {}
            },
            // A HostSubnet object is named after its node.
            Change::HostSubnet(event) => self.follow(Kind::Node, |t| t.hostsubnet_objects.apply(event)),
            Change::ClusterNetwork(event) => {
                if !matches!(self.cluster_networks.apply(event), Touched::Nothing) {
                    self.sync(Kind::ClusterNetworkObject, &(String::new(), CLUSTER_NETWORK_NAME.to_owned()));
                }
            }
            Change::EgressNetworkPolicy(event) => match self.egress_policies.apply(event) {
                Touched::Keys(keys) => keys
                    .into_iter()
                    .for_each(|((namespace, _), _)| self.sync(Kind::EgressPolicy, &(namespace, String::new()))),
                Touched::All => self.reconcile(Kind::EgressPolicy),
                Touched::Nothing => {}
            },
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

    /// Reconciles the projects and everything in them.
    fn reconcile_namespaces(&mut self) {
        self.reconcile(Kind::Namespace);
        self.reconcile(Kind::NetNamespaceObject);
        self.reconcile(Kind::Service);
        self.reconcile(Kind::Pod);
        self.reconcile(Kind::NetworkPolicy);
        self.reconcile(Kind::EgressPolicy);
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
            (Kind::EgressPolicy, vec![(namespace.to_owned(), String::new())]),
        ] {
            keys.iter().for_each(|key| self.sync(kind, key));
        }
    }

    /// Whether nothing may be written: the ClusterNetwork is not listed yet, or differs
    /// from oxsdn's configuration.
    fn blocked(&self) -> bool {
        !self.config_agreed
    }

    /// Whether `kind` may be written: it and what it depends on are listed, and the
    /// ClusterNetwork agrees.
    fn ready(&self, kind: Kind) -> bool {
        if kind == Kind::ClusterNetworkObject {
            return self.cluster_networks.listed;
        }
        // A project needs its NetNamespace listed too (a new project adopts its NETID, as
        // in a migration); what is in a project needs the project.
        let projects = self.namespaces.listed && self.netnamespace_objects.listed;
        !self.blocked()
            && match kind {
                Kind::Namespace | Kind::NetNamespaceObject => projects,
                Kind::Node => self.nodes.listed && self.hostsubnet_objects.listed,
                Kind::Pod => projects && self.pods.listed,
                Kind::NetworkPolicy => projects && self.policies.listed,
                Kind::Service => projects && self.services.listed && self.slices.listed,
                Kind::EgressPolicy => projects && self.egress_policies.listed,
                Kind::ClusterNetworkObject => unreachable!("handled above"),
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
            Kind::Node => self.nodes.objects.keys().chain(self.hostsubnet_objects.objects.keys()).cloned().collect(),
            Kind::Service => self.services.objects.keys().cloned().collect(),
            Kind::Pod => self.pods.objects.keys().cloned().collect(),
            Kind::NetworkPolicy => self.policies.objects.keys().cloned().collect(),
            Kind::NetNamespaceObject => self.netnamespace_objects.objects.keys().cloned().collect(),
            Kind::ClusterNetworkObject => BTreeSet::from([(String::new(), CLUSTER_NETWORK_NAME.to_owned())]),
            Kind::EgressPolicy => {
                self.egress_policies.objects.keys().map(|(ns, _)| (ns.clone(), String::new())).collect()
            }
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
            Kind::ClusterNetworkObject => BTreeSet::new(),
            Kind::EgressPolicy => {
                c.list_egress_policies(None)?.0.into_iter().map(|p| (p.namespace, String::new())).collect()
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
            Kind::ClusterNetworkObject => self.sync_cluster_network(),
            Kind::EgressPolicy => self.sync_egress_policy(&key.0),
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
        if let (Some(object), Some(project)) = (&object, &project) {
            self.sync_netnamespace_extras(object, project)?;
        }
        let update = |netid, clear_change_network| {
            Some(NetNamespaceWrite::Update { name: name.to_owned(), netid, clear_change_network })
        };
        let write = match (object, project) {
            (None, Some(project)) => Some(NetNamespaceWrite::Create { name: name.to_owned(), netid: project.netid }),
            (Some(_), Some(project)) if request.is_some() => update(project.netid, true),
            // OpenShift's master (or an administrator) changed the NETID: the project follows.
            (Some(object), Some(project)) if object.netid != project.netid => {
                match self.cluster.follow_netid(name, object.netid) {
                    Ok(_) => {
                        info!(
                            project = name,
                            from = project.netid,
                            to = object.netid,
                            "NETID of the NetNamespace followed"
                        );
                        None
                    }
                    Err(Error::Store(e)) => return Err(Error::Store(e)),
                    Err(e) => {
                        warn!(project = name, "NETID of the NetNamespace refused, object corrected: {e}");
                        update(project.netid, false)
                    }
                }
            }
            (Some(_), None) if !self.has_namespace(name) => Some(NetNamespaceWrite::Delete { name: name.to_owned() }),
            _ => None,
        };
        self.api_writes.extend(write.map(ApiWrite::NetNamespace));
        Ok(())
    }

    /// Makes project `project`'s egress IPs and OpenShift's NetNamespace annotations
    /// (`netnamespace.network.openshift.io/`: multicast) those of its object. What the
    /// store refuses (an egress IP no node can hold, a bad key) is logged and left as it
    /// was, as OpenShift's master logs it.
    fn sync_netnamespace_extras(
        &self,
        object: &openshift::NetNamespace,
        project: &oxsdn_controller::NetNamespace,
    ) -> oxsdn_controller::Result<()> {
        let name = &project.name;
        let egress = parse_all(&object.egress_ips, "egressIPs")
            .map(|egress_ips| ProjectEgressIps { project: name.clone(), egress_ips });
        logged(name, "egress IPs", egress.and_then(|record| self.cluster.set_project_egress_ips(&record)))?;
        let ours = |key: &String| key.starts_with(NETNAMESPACE_ANNOTATION_PREFIX);
        let mut annotations: BTreeMap<String, String> =
            project.annotations.iter().filter(|(k, _)| !ours(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
        let of_object = object.metadata.annotations.iter().flatten().filter(|(k, _)| ours(k));
        annotations.extend(of_object.map(|(k, v)| (k.clone(), v.clone())));
        logged(name, "annotations", self.cluster.set_netnamespace_annotations(name, &annotations))
    }

    /// Makes node `name`'s egress IPs and CIDRs those of its HostSubnet object (logged
    /// and left as they were if the store refuses them).
    fn sync_node_egress(&self, name: &str, object: &openshift::HostSubnet) -> oxsdn_controller::Result<()> {
        let record = parse_all(&object.egress_ips, "egressIPs").and_then(|egress_ips| {
            let egress_cidrs = parse_all(&object.egress_cidrs, "egressCIDRs")?;
            Ok(NodeEgress { node: name.to_owned(), egress_ips, egress_cidrs })
        });
        logged(name, "egress IPs and CIDRs", record.and_then(|record| self.cluster.set_node_egress(&record)))
    }

    /// Checks the ClusterNetwork object against oxsdn's configuration (or asks for it to
    /// be created); everything is written again once a mismatch is resolved.
    fn sync_cluster_network(&mut self) -> oxsdn_controller::Result<()> {
        let config = self.cluster.config()?;
        let was_blocked = self.blocked();
        self.config_mismatch = match self.cluster_networks.get("", CLUSTER_NETWORK_NAME) {
            None => {
                self.api_writes.push(ApiWrite::CreateClusterNetwork(Box::new(ClusterNetwork::of(&config))));
                None
            }
            Some(object) => Some(object.differences(&config)).filter(|d| !d.is_empty()),
        };
        self.config_agreed = self.config_mismatch.is_none();
        match &self.config_mismatch {
            Some(differences) => error!(
                "ClusterNetwork {CLUSTER_NETWORK_NAME:?} differs from oxsdn's configuration; nothing is written until \
                 they agree: {}",
                differences.join("; ")
            ),
            None if was_blocked => STORE_KINDS.into_iter().for_each(|kind| self.reconcile(kind)),
            None => {}
        }
        Ok(())
    }

    /// Makes project `namespace`'s egress firewall the one of its EgressNetworkPolicy
    /// object. As in OpenShift, a project with more than one, or with an invalid one,
    /// has all its egress dropped, rather than a firewall that is not the one asked for.
    fn sync_egress_policy(&self, namespace: &str) -> oxsdn_controller::Result<()> {
        let objects: Vec<&openshift::EgressNetworkPolicy> = match self.has_namespace(namespace) {
            true => self.egress_policies.in_namespace(namespace).map(|(_, p)| p).collect(),
            false => Vec::new(),
        };
        let record = |object: &openshift::EgressNetworkPolicy, spec| EgressNetworkPolicyRecord {
            namespace: namespace.to_owned(),
            name: object.name_any(),
            spec,
        };
        let wanted = match objects.as_slice() {
            [] => None,
            [one] => Some(record(one, one.spec.clone())).map(|policy| match policy.check() {
                Ok(()) => policy,
                Err(e) => {
                    warn!(namespace, "{e}: all egress of the project is dropped");
                    EgressNetworkPolicyRecord { spec: deny_all(), ..policy }
                }
            }),
            [first, ..] => {
                let names: Vec<String> = objects.iter().map(|p| p.name_any()).collect();
                warn!(namespace, ?names, "more than one EgressNetworkPolicy: all egress of the project is dropped");
                Some(record(first, deny_all()))
            }
        };
        if let Some(current) = self.cluster.get_egress_policy(namespace)? {
            if wanted.as_ref().is_none_or(|w| w.name != current.name) {
                ignore_absent(self.cluster.delete_egress_policy(namespace, &current.name))?;
            }
        }
        match wanted {
            Some(policy) => self.cluster.apply_egress_policy(&policy).map(drop),
            None => Ok(()),
        }
    }

    /// Makes node `name`'s HostSubnet what the API says: the subnet of its HostSubnet
    /// object if it has one (checked by the store), else one oxsdn allocates, for which it
    /// asks for an object as OpenShift's master writes it (with the Node's UID, so the
    /// master takes it for one of its own).
    fn sync_node(&mut self, name: &str) -> oxsdn_controller::Result<()> {
        let object = self.hostsubnet_objects.get("", name).cloned();
        let Some(node) = self.nodes.get("", name) else {
            ignore_absent(self.cluster.delete_node(name))?;
            // One without the annotation and without a Node (F5, by hand) is left alone.
            if object.is_some_and(|o| o.is_for_a_node()) {
                self.api_writes.push(ApiWrite::HostSubnet(HostSubnetWrite::Delete { name: name.to_owned() }));
            }
            return Ok(());
        };
        let Some(ip) = internal_ip(node) else {
            warn!(node = name, "node has no IPv4 InternalIP yet: not registered");
            return Ok(());
        };
        let node_uid = node.metadata.uid.clone();
        let write = match object {
            None => {
                let hs = self.cluster.register_node(name, ip)?;
                info!(node = name, %ip, subnet = %hs.subnet, "node registered");
                HostSubnetWrite::Create { name: name.to_owned(), host_ip: ip, subnet: hs.subnet, node_uid }
            }
            Some(object) => {
                let subnet = object.subnet.parse().map_err(|_| {
                    Error::Invalid(format!("HostSubnet {name:?}: subnet {:?} is not an IPv4 CIDR", object.subnet))
                })?;
                let before = self.cluster.get_hostsubnet(name)?;
                let hs = self.cluster.adopt_node_subnet(name, ip, subnet).map_err(|e| match e {
                    Error::Store(e) => Error::Store(e),
                    e => Error::Invalid(format!("subnet of HostSubnet {name:?} not adopted: {e}")),
                })?;
                if before.as_ref() != Some(&hs) {
                    info!(node = name, %ip, subnet = %hs.subnet, "node registered with the subnet of its HostSubnet");
                }
                self.sync_node_egress(name, &object)?;
                if object.host_ip == ip.to_string() {
                    return Ok(());
                }
                HostSubnetWrite::UpdateHostIp { name: name.to_owned(), host_ip: ip }
            }
        };
        self.api_writes.push(ApiWrite::HostSubnet(write));
        Ok(())
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

/// Every packet leaving the cluster dropped.
fn deny_all() -> EgressNetworkPolicySpec {
    EgressNetworkPolicySpec {
        egress: vec![EgressRule {
            kind: EgressRuleType::Deny,
            to: EgressPeer { cidr_selector: Some("0.0.0.0/0".to_owned()), dns_name: None },
        }],
    }
}

/// Deleting what is already gone is done.
/// Every address (or CIDR) of an object's `field`, or which one is not one.
fn parse_all<T: std::str::FromStr>(values: &[String], field: &str) -> oxsdn_controller::Result<Vec<T>> {
    values
        .iter()
        .map(|v| v.parse().map_err(|_| Error::Invalid(format!("{field}: {v:?} is not an IPv4 address or CIDR"))))
        .collect()
}

/// A write the store refused for what an object says is logged (the object stays wrong
/// until it is corrected, and nothing else waits for it); the store's failures are errors.
fn logged(name: &str, what: &str, result: oxsdn_controller::Result<bool>) -> oxsdn_controller::Result<()> {
    match result {
        Ok(true) => info!(object = name, "{what} followed"),
        Ok(false) => {}
        Err(Error::Store(e)) => return Err(Error::Store(e)),
        Err(e) => warn!(object = name, "{what} not followed: {e}"),
    }
    Ok(())
}

fn ignore_absent(result: oxsdn_controller::Result<()>) -> oxsdn_controller::Result<()> {
    match result {
        Err(
            Error::UnknownProject(_)
            | Error::UnknownNode(_)
            | Error::UnknownService { .. }
            | Error::UnknownNetworkPolicy { .. }
            | Error::UnknownEgressPolicy { .. },
        ) => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests;
