//! The networkpolicy plugin's records: NetworkPolicies, pods' labels and named ports,
//! pods' addresses; and the one setting that may change after `init`, the network
//! plugin. Each change one transaction (see `Cluster::transact`).

use std::{collections::BTreeMap, sync::mpsc::Receiver};

use super::{decode_config, keys, relay, Attempt, Cluster, Record};
use crate::{
    config::NetworkPlugin,
    netnamespaces::{validate_labels, validate_project_name},
    policy::{validate_policy_name, NetworkPolicyRecord, NetworkPolicySpec, PodAddress, PodMeta},
    store::WatchEvent,
    ClusterConfig, Error, NetNamespace, Result,
};

impl Record for NetworkPolicyRecord {
    const PREFIX: &'static str = keys::NETWORK_POLICIES;
    const GUARD: &'static str = keys::NETWORK_POLICIES_GUARD;
    const KIND: &'static str = "networkpolicy";
    fn key_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
    fn validate(&self) -> Result<()> {
        self.check()
    }
}

impl Record for PodMeta {
    const PREFIX: &'static str = keys::POD_META;
    const GUARD: &'static str = keys::POD_META_GUARD;
    const KIND: &'static str = "podmeta";
    fn key_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
    fn validate(&self) -> Result<()> {
        self.check()
    }
}

impl Record for PodAddress {
    const PREFIX: &'static str = keys::POD_ADDRESSES;
    const GUARD: &'static str = keys::POD_ADDRESSES_GUARD;
    const KIND: &'static str = "podaddress";
    fn key_name(&self) -> String {
        PodAddress::key_name(self)
    }
    fn validate(&self) -> Result<()> {
        self.check()
    }
}

/// A change to a NetworkPolicy, seen through `Cluster::watch_network_policies`.
#[derive(Clone, Debug, PartialEq)]
pub enum NetworkPolicyEvent {
    Upsert(NetworkPolicyRecord),
    Deleted { namespace: String, name: String },
}

/// A change to a pod's labels or ports, seen through `Cluster::watch_pod_meta`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodMetaEvent {
    Upsert(PodMeta),
    Deleted { namespace: String, name: String },
}

/// A change to a pod's address, seen through `Cluster::watch_pod_addresses`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodAddressEvent {
    Upsert(PodAddress),
    /// The key name: `node/container_id/ifname`.
    Deleted(String),
}

fn namespaced(key_name: &str) -> Option<(String, String)> {
    let (namespace, name) = key_name.split_once('/')?;
    Some((namespace.to_owned(), name.to_owned()))
}

impl Attempt<'_> {
    fn require_project(&mut self, namespace: &str) -> Result<()> {
        match self.record::<NetNamespace>(namespace)? {
            Some(_) => Ok(()),
            None => Err(Error::UnknownProject(namespace.to_owned())),
        }
    }
}

impl Cluster {
    // ---- the network plugin -----------------------------------------------------------

    /// Switches the cluster to another network plugin: every node's dataplane follows
    /// within a second (`watch_config`), atomically per node.
    pub fn set_network_plugin(&self, plugin: NetworkPlugin) -> Result<ClusterConfig> {
        self.transact(keys::CONFIG, |a| {
            let mut config = a.config()?;
            if config.network_plugin != plugin {
                config.network_plugin = plugin;
                a.put_json(keys::CONFIG.to_owned(), &config)?;
            }
            Ok(config)
        })
    }

    /// The configuration each time it changes after `after_revision`.
    pub fn watch_config(&self, after_revision: u64) -> Result<Receiver<ClusterConfig>> {
        let events = self.store.watch(keys::CONFIG, after_revision)?;
        relay(events, "config", |event| match event {
            WatchEvent::Put(kv) if kv.key == keys::CONFIG => decode_config(&kv),
            WatchEvent::Put(kv) => Err(Error::BadRecord { key: kv.key, reason: "not the configuration".into() }),
            WatchEvent::Delete { key, .. } => {
                Err(Error::BadRecord { key, reason: "the configuration was deleted".into() })
            }
        })
    }

    /// The configuration and the store revision it was read at (to watch from).
    pub fn config_at(&self) -> Result<(ClusterConfig, u64)> {
        let snapshot = self.store.list(keys::CONFIG)?;
        let kv = snapshot.kvs.iter().find(|kv| kv.key == keys::CONFIG).ok_or(Error::NotInitialised)?;
        Ok((decode_config(kv)?, snapshot.revision))
    }

    // ---- NetworkPolicies --------------------------------------------------------------

    /// Creates or replaces NetworkPolicy `name` of project `namespace`, which must exist.
    /// A replaced policy keeps its id (and its counters).
    pub fn apply_network_policy(
        &self,
        namespace: &str,
        name: &str,
        spec: &NetworkPolicySpec,
    ) -> Result<NetworkPolicyRecord> {
        validate_project_name(namespace)?;
        validate_policy_name(name)?;
        let key_name = format!("{namespace}/{name}");
        self.transact("networkpolicies", |a| {
            a.require_project(namespace)?;
            let id = match a.record::<NetworkPolicyRecord>(&key_name)? {
                Some(old) if &old.spec == spec => return Ok(old),
                Some(old) => old.id,
                None => a.next_ids(keys::POLICY_ID_COUNTER, "networkpolicy", 1)?.next().expect("one id"),
            };
            let record =
                NetworkPolicyRecord { namespace: namespace.to_owned(), name: name.to_owned(), id, spec: spec.clone() };
            a.put_record(&record)?;
            Ok(record)
        })
    }

    /// Deletes NetworkPolicy `name` of project `namespace`.
    pub fn delete_network_policy(&self, namespace: &str, name: &str) -> Result<()> {
        validate_project_name(namespace)?;
        validate_policy_name(name)?;
        self.transact("networkpolicies", |a| {
            if a.delete_record::<NetworkPolicyRecord>(&format!("{namespace}/{name}"))? {
                Ok(())
            } else {
                Err(Error::Invalid(format!("networkpolicy {namespace}/{name} not found")))
            }
        })
    }

    pub fn get_network_policy(&self, namespace: &str, name: &str) -> Result<Option<NetworkPolicyRecord>> {
        validate_project_name(namespace)?;
        validate_policy_name(name)?;
        self.get_record(&format!("{namespace}/{name}"))
    }

    /// Every NetworkPolicy (of project `namespace` if given), and the revision they were
    /// read at.
    pub fn list_network_policies(&self, namespace: Option<&str>) -> Result<(Vec<NetworkPolicyRecord>, u64)> {
        match namespace {
            Some(ns) => {
                validate_project_name(ns)?;
                self.list_records(&format!("{ns}/"))
            }
            None => self.list_records(""),
        }
    }

    pub fn watch_network_policies(&self, after_revision: u64) -> Result<Receiver<NetworkPolicyEvent>> {
        self.watch_records(after_revision, NetworkPolicyEvent::Upsert, |key_name| {
            namespaced(key_name).map(|(namespace, name)| NetworkPolicyEvent::Deleted { namespace, name })
        })
    }

    // ---- pods' labels and named ports -------------------------------------------------

    /// Sets a pod's labels and named ports (a `Pod` manifest, or the API's), before or
    /// after the pod is added.
    pub fn apply_pod_meta(&self, meta: &PodMeta) -> Result<PodMeta> {
        meta.check()?;
        self.transact("podmeta", |a| {
            let key_name = meta.key_name();
            if a.record::<PodMeta>(&key_name)?.as_ref() != Some(meta) {
                a.put_record(meta)?;
            }
            Ok(meta.clone())
        })
    }

    /// Sets `set` and removes `remove` from the labels of pod `namespace/name` (a pod
    /// without labels yet gets a record).
    pub fn label_pod(
        &self,
        namespace: &str,
        name: &str,
        set: &BTreeMap<String, String>,
        remove: &[String],
    ) -> Result<PodMeta> {
        validate_project_name(namespace)?;
        validate_policy_name(name)?;
        validate_labels(set)?;
        self.transact("podmeta", |a| {
            let key_name = format!("{namespace}/{name}");
            let old = a.record::<PodMeta>(&key_name)?;
            let mut meta = old.clone().unwrap_or_else(|| PodMeta {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                ..PodMeta::default()
            });
            meta.labels.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
            meta.labels.retain(|k, _| !remove.contains(k));
            if old.as_ref() != Some(&meta) {
                a.put_record(&meta)?;
            }
            Ok(meta)
        })
    }

    pub fn delete_pod_meta(&self, namespace: &str, name: &str) -> Result<bool> {
        validate_project_name(namespace)?;
        validate_policy_name(name)?;
        self.transact("podmeta", |a| a.delete_record::<PodMeta>(&format!("{namespace}/{name}")))
    }

    pub fn get_pod_meta(&self, namespace: &str, name: &str) -> Result<Option<PodMeta>> {
        validate_project_name(namespace)?;
        validate_policy_name(name)?;
        self.get_record(&format!("{namespace}/{name}"))
    }

    pub fn list_pod_meta(&self) -> Result<(Vec<PodMeta>, u64)> {
        self.list_records("")
    }

    pub fn watch_pod_meta(&self, after_revision: u64) -> Result<Receiver<PodMetaEvent>> {
        self.watch_records(after_revision, PodMetaEvent::Upsert, |key_name| {
            namespaced(key_name).map(|(namespace, name)| PodMetaEvent::Deleted { namespace, name })
        })
    }

    // ---- pods' addresses --------------------------------------------------------------

    /// Records where a pod is (its node's agent, on ADD).
    pub fn put_pod_address(&self, address: &PodAddress) -> Result<()> {
        address.check()?;
        self.transact("podaddresses", |a| {
            if a.record::<PodAddress>(&address.key_name())?.as_ref() != Some(address) {
                a.put_record(address)?;
            }
            Ok(())
        })
    }

    /// Forgets a pod's address (its node's agent, on DEL); false if there was none.
    pub fn delete_pod_address(&self, node: &str, container_id: &str, ifname: &str) -> Result<bool> {
        self.transact("podaddresses", |a| a.delete_record::<PodAddress>(&format!("{node}/{container_id}/{ifname}")))
    }

    /// Every pod's address (of node `node` if given), and the revision they were read at.
    pub fn list_pod_addresses(&self, node: Option<&str>) -> Result<(Vec<PodAddress>, u64)> {
        match node {
            Some(node) => self.list_records(&format!("{node}/")),
            None => self.list_records(""),
        }
    }

    pub fn watch_pod_addresses(&self, after_revision: u64) -> Result<Receiver<PodAddressEvent>> {
        self.watch_records(after_revision, PodAddressEvent::Upsert, |key_name| {
            Some(PodAddressEvent::Deleted(key_name.to_owned()))
        })
    }
}
