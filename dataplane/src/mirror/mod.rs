//! Mirroring the cluster's records into the dataplane: list everything, reconcile, then
//! follow the watch; when the watch breaks (store restarted, connection lost), list and
//! reconcile again, so a node that lost the store catches up without a restart.
//!
//! Where the records come from is a seam (`Feed`): the cluster store today; anything
//! that can list and watch a kind of record (the Kubernetes API) can feed the mirrors.
//!
//! - `projects`: NetNamespaces -> `PROJECTS` (VNIDs by node-local project slot);
//! - `remote_nodes`: the other nodes' HostSubnets -> `REMOTE_SUBNETS`, `NODE_IPS`;
//! - `services`: Services -> the service maps and `ENDPOINT_PODS`;
//! - `mode`: the cluster's network plugin -> `CONFIG.mode`;
//! - `crate::policy::mirrors`: namespaces' labels, NetworkPolicies, pods' labels and
//!   addresses -> the policy engine;
//! - `crate::egress_firewall`: NetNamespaces' VNIDs and EgressNetworkPolicies -> the
//!   egress firewall.

pub mod mode;
pub mod projects;
pub mod remote_nodes;
pub mod services;

use std::{sync::mpsc::Receiver, sync::Arc, time::Duration};

use anyhow::Result;
use oxsdn_controller::{
    cluster::{
        EgressPolicyEvent, HostSubnetEvent, NetNamespaceEvent, NetworkPolicyEvent, PodAddressEvent, PodMetaEvent,
        ServiceEvent,
    },
    egress::EgressNetworkPolicyRecord,
    policy::{NetworkPolicyRecord, PodAddress, PodMeta},
    Cluster, ClusterConfig, HostSubnet, NetNamespace, Service,
};

/// A source of one kind of record: a list at a revision, then the changes after it.
pub trait Feed<R>: Send + Sync + 'static {
    type Event: Send + 'static;
    /// Every record, and the revision they were read at.
    fn list(&self) -> Result<(Vec<R>, u64)>;
    /// Changes after `after_revision`, in order; the channel closes when the watch
    /// breaks.
    fn watch(&self, after_revision: u64) -> Result<Receiver<Self::Event>>;
    /// One record by its key (a name; `project/name` for services), read now.
    fn get(&self, key: &str) -> Result<Option<R>>;
}

impl Feed<NetNamespace> for Cluster {
    type Event = NetNamespaceEvent;
    fn list(&self) -> Result<(Vec<NetNamespace>, u64)> {
        Ok(self.list_netnamespaces()?)
    }
    fn watch(&self, after_revision: u64) -> Result<Receiver<NetNamespaceEvent>> {
        Ok(self.watch_netnamespaces(after_revision)?)
    }
    fn get(&self, name: &str) -> Result<Option<NetNamespace>> {
        Ok(self.get_netnamespace(name)?)
    }
}

impl Feed<HostSubnet> for Cluster {
    type Event = HostSubnetEvent;
    fn list(&self) -> Result<(Vec<HostSubnet>, u64)> {
        Ok(self.list_hostsubnets()?)
    }
    fn watch(&self, after_revision: u64) -> Result<Receiver<HostSubnetEvent>> {
        Ok(self.watch_hostsubnets(after_revision)?)
    }
    fn get(&self, name: &str) -> Result<Option<HostSubnet>> {
        Ok(self.get_hostsubnet(name)?)
    }
}

impl Feed<Service> for Cluster {
    type Event = ServiceEvent;
    fn list(&self) -> Result<(Vec<Service>, u64)> {
        Ok(self.list_services()?)
    }
    fn watch(&self, after_revision: u64) -> Result<Receiver<ServiceEvent>> {
        Ok(self.watch_services(after_revision)?)
    }
    fn get(&self, key: &str) -> Result<Option<Service>> {
        let Some((project, name)) = key.split_once('/') else { return Ok(None) };
        Ok(self.get_service(project, name)?)
    }
}

impl Feed<NetworkPolicyRecord> for Cluster {
    type Event = NetworkPolicyEvent;
    fn list(&self) -> Result<(Vec<NetworkPolicyRecord>, u64)> {
        Ok(self.list_network_policies(None)?)
    }
    fn watch(&self, after_revision: u64) -> Result<Receiver<NetworkPolicyEvent>> {
        Ok(self.watch_network_policies(after_revision)?)
    }
    fn get(&self, key: &str) -> Result<Option<NetworkPolicyRecord>> {
        let Some((namespace, name)) = key.split_once('/') else { return Ok(None) };
        Ok(self.get_network_policy(namespace, name)?)
    }
}

impl Feed<PodMeta> for Cluster {
    type Event = PodMetaEvent;
    fn list(&self) -> Result<(Vec<PodMeta>, u64)> {
        Ok(self.list_pod_meta()?)
    }
    fn watch(&self, after_revision: u64) -> Result<Receiver<PodMetaEvent>> {
        Ok(self.watch_pod_meta(after_revision)?)
    }
    fn get(&self, key: &str) -> Result<Option<PodMeta>> {
        let Some((namespace, name)) = key.split_once('/') else { return Ok(None) };
        Ok(self.get_pod_meta(namespace, name)?)
    }
}

impl Feed<PodAddress> for Cluster {
    type Event = PodAddressEvent;
    fn list(&self) -> Result<(Vec<PodAddress>, u64)> {
        Ok(self.list_pod_addresses(None)?)
    }
    fn watch(&self, after_revision: u64) -> Result<Receiver<PodAddressEvent>> {
        Ok(self.watch_pod_addresses(after_revision)?)
    }
    /// `key`: `node/container_id/ifname`.
    fn get(&self, key: &str) -> Result<Option<PodAddress>> {
        let Some((node, _)) = key.split_once('/') else { return Ok(None) };
        Ok(self.list_pod_addresses(Some(node))?.0.into_iter().find(|a| a.key_name() == key))
    }
}

impl Feed<EgressNetworkPolicyRecord> for Cluster {
    type Event = EgressPolicyEvent;
    fn list(&self) -> Result<(Vec<EgressNetworkPolicyRecord>, u64)> {
        Ok(self.list_egress_policies(None)?)
    }
    fn watch(&self, after_revision: u64) -> Result<Receiver<EgressPolicyEvent>> {
        Ok(self.watch_egress_policies(after_revision)?)
    }
    /// `key`: the project.
    fn get(&self, key: &str) -> Result<Option<EgressNetworkPolicyRecord>> {
        Ok(self.get_egress_policy(key)?)
    }
}

/// The configuration is one record; its watch reports it whole at each change.
impl Feed<ClusterConfig> for Cluster {
    type Event = ClusterConfig;
    fn list(&self) -> Result<(Vec<ClusterConfig>, u64)> {
        let (config, revision) = self.config_at()?;
        Ok((vec![config], revision))
    }
    fn watch(&self, after_revision: u64) -> Result<Receiver<ClusterConfig>> {
        Ok(self.watch_config(after_revision)?)
    }
    fn get(&self, _key: &str) -> Result<Option<ClusterConfig>> {
        Ok(Some(self.config()?))
    }
}

/// Something kept equal to a set of store records.
pub trait Mirror: Send + Sync + 'static {
    type Event: Send;
    const WHAT: &'static str;
    /// Lists the records, makes the dataplane match them exactly, and returns the store
    /// revision they were read at.
    fn resync(&self) -> Result<u64>;
    fn watch(&self, after_revision: u64) -> Result<Receiver<Self::Event>>;
    fn apply(&self, event: Self::Event) -> Result<()>;
}

const RETRY: Duration = Duration::from_millis(500);

/// Follows the store from `revision` (that of a resync just done) forever, on its own
/// thread. Each step is counted (`metrics`): events and the time from an event's arrival
/// to the dataplane holding it, broken watches, resyncs. The first watch is opened before
/// returning, so an agent that has started all its mirrors reports them watching.
pub fn follow<M: Mirror>(mirror: Arc<M>, revision: u64) {
    let metrics = crate::metrics::global();
    metrics.resynced(M::WHAT, &Ok(revision));
    let mut watch = mirror.watch(revision);
    std::thread::spawn(move || loop {
        match watch {
            Ok(events) => {
                metrics.watching(M::WHAT, Ok(()));
                for event in events {
                    let received = std::time::Instant::now();
                    let applied = mirror.apply(event);
                    if let Err(e) = &applied {
                        tracing::error!("applying a {} change: {e:#}", M::WHAT);
                    }
                    metrics.mirror_event(M::WHAT, received, &applied);
                }
                tracing::warn!("{} watch ended; resyncing", M::WHAT);
                metrics.watch_ended(M::WHAT);
            }
            Err(e) => {
                tracing::warn!("cannot watch {}: {e:#}", M::WHAT);
                metrics.watching(M::WHAT, Err(format!("cannot watch: {e:#}")));
            }
        }
        let revision = loop {
            std::thread::sleep(RETRY);
            let resynced = mirror.resync();
            metrics.resynced(M::WHAT, &resynced);
            match resynced {
                Ok(r) => break r,
                Err(e) => tracing::warn!("{} resync failed: {e:#}", M::WHAT),
            }
        };
        watch = mirror.watch(revision);
    });
}
