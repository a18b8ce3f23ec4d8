//! The networkpolicy plugin's records: NetworkPolicies, pods' labels and named ports,
//! pods' addresses; and the one setting that may change after `init`, the network
//! plugin. Each change one transaction (see `Cluster::transact`).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
    sync::mpsc::Receiver,
};

use super::{decode_config, keys, record_key, relay, Attempt, Cluster, Record};
use crate::{
    config::NetworkPlugin,
    egress::EgressNetworkPolicyRecord,
    netnamespaces::{validate_labels, validate_project_name},
    policy::{
        manifest::Object, validate_policy_name, validate_policy_spec, validation::default_network_policy_spec,
        NetworkPolicyRecord, NetworkPolicySpec, PodAddress, PodMeta, NAMESPACE_NAME_LABEL,
    },
    store::WatchEvent,
    ClusterConfig, Error, NetNamespace, Result, Service,
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

/// What `Cluster::apply_objects` did to an object, in kubectl's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyOutcome {
    Created,
    Configured,
    Unchanged,
}

impl fmt::Display for ApplyOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ApplyOutcome::Created => "created",
            ApplyOutcome::Configured => "configured",
            ApplyOutcome::Unchanged => "unchanged",
        })
    }
}

/// What `Cluster::label` labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelTarget<'a> {
    Namespace(&'a str),
    Pod { namespace: &'a str, name: &'a str },
}

/// What `Cluster::label` did, in kubectl's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelOutcome {
    Labeled,
    Unlabeled,
    NotLabeled,
}

impl fmt::Display for LabelOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LabelOutcome::Labeled => "labeled",
            LabelOutcome::Unlabeled => "unlabeled",
            LabelOutcome::NotLabeled => "not labeled",
        })
    }
}

/// The result of `Cluster::label`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Labeled {
    pub outcome: LabelOutcome,
    /// Labels asked to be removed that were not there (kubectl warns of them).
    pub not_found: Vec<String>,
}

/// kubectl's refusal of keys both set and removed in one command (`what`: "label").
pub(super) fn refuse_set_and_removed(set: &BTreeMap<String, String>, remove: &[String], what: &str) -> Result<()> {
    let both: Vec<&str> = remove.iter().filter(|k| set.contains_key(*k)).map(String::as_str).collect();
    if both.is_empty() {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "can not both modify and remove the following {what}(s) in the same command: {}",
        both.join(", ")
    )))
}

/// `labels` changed as `kubectl label` changes them: `set` is refused for a key that has
/// another value unless `overwrite`; a removed key that is absent is reported.
pub(super) fn relabeled(
    labels: &BTreeMap<String, String>,
    set: &BTreeMap<String, String>,
    remove: &[String],
    overwrite: bool,
) -> Result<(BTreeMap<String, String>, Vec<String>)> {
    if !overwrite {
        if let Some((key, value)) = set.keys().find_map(|k| labels.get_key_value(k).filter(|(_, v)| *v != &set[k])) {
            return Err(Error::LabelExists { key: key.clone(), value: value.clone() });
        }
    }
    let mut new = labels.clone();
    new.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
    let not_found = remove.iter().filter(|k| new.remove(*k).is_none()).cloned().collect();
    Ok((new, not_found))
}

/// The objects without repetitions, each at its first place with its last content (a
/// later document replaces an earlier one, as `kubectl apply` applies them in turn).
fn last_of_each(objects: &[Object]) -> Vec<&Object> {
    let mut place = HashMap::new();
    let mut out: Vec<&Object> = Vec::new();
    for object in objects {
        match place.get(&object.identity()) {
            Some(&i) => out[i] = object,
            None => {
                place.insert(object.identity(), out.len());
                out.push(object);
            }
        }
    }
    out
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

    /// Refuses pod-network changes outside multitenant mode. Read in the transaction, so
    /// that a concurrent switch of plugin makes it start over.
    pub(super) fn require_multitenant(&mut self) -> Result<()> {
        let plugin = match self.get(keys::CONFIG)? {
            Some(kv) => decode_config(&kv)?.network_plugin,
            // Not initialised: no other plugin was chosen.
            None => NetworkPlugin::default(),
        };
        match plugin {
            NetworkPlugin::Multitenant => Ok(()),
            other => Err(Error::NotMultitenant(other)),
        }
    }

    /// Deletes the NetworkPolicies, pods' labels and EgressNetworkPolicy of `namespace` (with it), but for the
    /// keys in `deleted`, which the attempt deletes already.
    pub(super) fn delete_namespace_contents(&mut self, namespace: &str, deleted: &HashSet<String>) -> Result<()> {
        let below = format!("{namespace}/");
        for policy in self.records::<NetworkPolicyRecord>(&below)? {
            if !deleted.contains(&record_key::<NetworkPolicyRecord>(&policy.key_name())) {
                self.delete_record::<NetworkPolicyRecord>(&policy.key_name())?;
            }
        }
        for pod in self.records::<PodMeta>(&below)? {
            if !deleted.contains(&record_key::<PodMeta>(&pod.key_name())) {
                self.delete_record::<PodMeta>(&pod.key_name())?;
            }
        }
        if !deleted.contains(&record_key::<EgressNetworkPolicyRecord>(namespace)) {
            self.delete_record::<EgressNetworkPolicyRecord>(namespace)?;
        }
        if !deleted.contains(&record_key::<crate::egress_ip::ProjectEgressIps>(namespace)) {
            self.delete_record::<crate::egress_ip::ProjectEgressIps>(namespace)?;
        }
        Ok(())
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
    /// The spec gets the API server's defaults and must pass its validation
    /// (`Error::InvalidObject`). A replaced policy keeps its id (and its counters).
    pub fn apply_network_policy(
        &self,
        namespace: &str,
        name: &str,
        spec: &NetworkPolicySpec,
    ) -> Result<NetworkPolicyRecord> {
        validate_project_name(namespace)?;
        validate_policy_name(name)?;
        let mut spec = spec.clone();
        default_network_policy_spec(&mut spec);
        validate_policy_spec(name, &spec)?;
        let spec = &spec;
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
                Err(Error::UnknownNetworkPolicy { namespace: namespace.to_owned(), name: name.to_owned() })
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

    // ---- manifests and labels -----------------------------------------------------------

    /// Applies manifests' objects (`policy::manifest::parse`) in one transaction: all or
    /// nothing. A Namespace is created if missing and its labels become the manifest's
    /// (replaced, not merged: see README); NetworkPolicies and Pods need their namespace,
    /// in the store or among the objects. An object given twice counts once, with its
    /// later content. Returns each object's reference and what was done to it.
    ///
    /// The transaction writes one key per changed object (and a few guards and counters):
    /// keep files within etcd's `--max-txn-ops`.
    pub fn apply_objects(&self, objects: &[Object]) -> Result<Vec<(String, ApplyOutcome)>> {
        let objects = last_of_each(objects);
        objects.iter().try_for_each(|o| o.check())?;
        self.transact("apply", |a| {
            let mut outcomes = vec![ApplyOutcome::Unchanged; objects.len()];
            let mut all = a.netnamespaces()?;
            let mut new_namespaces = Vec::new();
            for (i, object) in objects.iter().enumerate() {
                let Object::Namespace { name, labels } = object else { continue };
                match all.get_mut(name) {
                    Some(ns) if ns.labels == *labels => {}
                    Some(ns) => {
                        ns.labels = labels.clone();
                        a.put_record(&*ns)?;
                        outcomes[i] = ApplyOutcome::Configured;
                    }
                    None => {
                        new_namespaces.push((name.as_str(), labels.clone()));
                        outcomes[i] = ApplyOutcome::Created;
                    }
                }
            }
            // Only if any: allocating no id still rewrites the counter.
            if !new_namespaces.is_empty() {
                for ns in self.create_netnamespaces_in(a, &all, new_namespaces)? {
                    all.insert(ns.name.clone(), ns);
                }
            }
            let require = |namespace: &str| match all.contains_key(namespace) {
                true => Ok(()),
                false => Err(Error::UnknownProject(namespace.to_owned())),
            };
            let policies: HashMap<String, NetworkPolicyRecord> =
                a.records::<NetworkPolicyRecord>("")?.into_iter().map(|p| (p.key_name(), p)).collect();
            let pods: HashMap<String, PodMeta> =
                a.records::<PodMeta>("")?.into_iter().map(|p| (p.key_name(), p)).collect();
            let mut new_policies = Vec::new();
            for (i, object) in objects.iter().enumerate() {
                match object {
                    Object::Namespace { .. } => {}
                    Object::NetworkPolicy { namespace, name, spec } => {
                        require(namespace)?;
                        let record = |id| NetworkPolicyRecord {
                            namespace: namespace.clone(),
                            name: name.clone(),
                            id,
                            spec: spec.clone(),
                        };
                        match policies.get(&format!("{namespace}/{name}")) {
                            Some(old) if old.spec == *spec => {}
                            Some(old) => {
                                a.put_record(&record(old.id))?;
                                outcomes[i] = ApplyOutcome::Configured;
                            }
                            None => {
                                new_policies.push(record(0));
                                outcomes[i] = ApplyOutcome::Created;
                            }
                        }
                    }
                    Object::EgressNetworkPolicy(policy) => {
                        outcomes[i] = a.put_egress_policy(policy, all.get(&policy.namespace))?;
                    }
                    Object::Pod(meta) => {
                        require(&meta.namespace)?;
                        let old = pods.get(&meta.key_name());
                        if old != Some(meta) {
                            a.put_record(meta)?;
                            outcomes[i] = if old.is_some() { ApplyOutcome::Configured } else { ApplyOutcome::Created };
                        }
                    }
                    Object::NetNamespaceEgress(_) | Object::HostSubnetEgress(_) => {}
                }
            }
            a.apply_egress_objects(&objects, &all, &mut outcomes)?;
            if !new_policies.is_empty() {
                let ids: Vec<u32> = a.next_ids(keys::POLICY_ID_COUNTER, "networkpolicy", new_policies.len())?.collect();
                for (mut policy, id) in new_policies.into_iter().zip(ids) {
                    policy.id = id;
                    a.put_record(&policy)?;
                }
            }
            Ok(objects.iter().zip(outcomes).map(|(o, outcome)| (o.reference(), outcome)).collect())
        })
    }

    /// Deletes manifests' objects in one transaction: a Namespace with its NetworkPolicies
    /// and pods' labels (refused while it has services, as `delete_netnamespace`). Returns
    /// each object's reference and whether it existed.
    pub fn delete_objects(&self, objects: &[Object]) -> Result<Vec<(String, bool)>> {
        let objects = last_of_each(objects);
        objects.iter().try_for_each(|o| o.check())?;
        self.transact("delete", |a| {
            let mut found = vec![false; objects.len()];
            let mut deleted = HashSet::new();
            for (i, object) in objects.iter().enumerate() {
                match object {
                    Object::Namespace { .. } => {}
                    Object::NetworkPolicy { namespace, name, .. } => {
                        let key_name = format!("{namespace}/{name}");
                        found[i] = a.delete_record::<NetworkPolicyRecord>(&key_name)?;
                        deleted.insert(record_key::<NetworkPolicyRecord>(&key_name));
                    }
                    Object::EgressNetworkPolicy(policy) => {
                        found[i] = a.delete_egress_policy(&policy.namespace, &policy.name)?;
                        if found[i] {
                            deleted.insert(record_key::<EgressNetworkPolicyRecord>(&policy.namespace));
                        }
                    }
                    Object::Pod(meta) => {
                        found[i] = a.delete_record::<PodMeta>(&meta.key_name())?;
                        deleted.insert(record_key::<PodMeta>(&meta.key_name()));
                    }
                    Object::NetNamespaceEgress(_) | Object::HostSubnetEgress(_) => {
                        return Err(Error::Invalid(format!(
                            "{}: NetNamespaces and HostSubnets follow projects and nodes: delete those (or apply \
                             the object without egressIPs)",
                            object.reference()
                        )));
                    }
                }
            }
            // Namespaces last: they take whatever of theirs the objects did not name.
            for (i, object) in objects.iter().enumerate() {
                let Object::Namespace { name, .. } = object else { continue };
                let services = a.records::<Service>(&format!("{name}/"))?;
                if !services.is_empty() {
                    return Err(Error::ProjectHasServices {
                        project: name.clone(),
                        services: services.into_iter().map(|s| s.name).collect(),
                    });
                }
                found[i] = a.delete_record::<NetNamespace>(name)?;
                if found[i] {
                    a.delete_namespace_contents(name, &deleted)?;
                }
            }
            Ok(objects.iter().zip(found).map(|(o, found)| (o.reference(), found)).collect())
        })
    }

    /// `kubectl label`: sets `set` and removes `remove` from the labels of a namespace
    /// (which must exist) or a pod (whose namespace must exist; the pod may not be added
    /// yet). A key both set and removed is refused, and so is a new value for an existing
    /// key unless `overwrite` (`Error::LabelExists`). A namespace's
    /// `kubernetes.io/metadata.name` is its name: it cannot be changed or removed.
    pub fn label(
        &self,
        target: LabelTarget,
        set: &BTreeMap<String, String>,
        remove: &[String],
        overwrite: bool,
    ) -> Result<Labeled> {
        validate_labels(set)?;
        refuse_set_and_removed(set, remove, "label")?;
        let outcome = |changed: bool| match (changed, set.is_empty()) {
            (false, _) => LabelOutcome::NotLabeled,
            (true, true) => LabelOutcome::Unlabeled,
            (true, false) => LabelOutcome::Labeled,
        };
        match target {
            LabelTarget::Namespace(name) => {
                validate_project_name(name)?;
                if set.get(NAMESPACE_NAME_LABEL).is_some_and(|v| v != name)
                    || remove.iter().any(|k| k == NAMESPACE_NAME_LABEL)
                {
                    return Err(Error::Invalid(format!(
                        "label {NAMESPACE_NAME_LABEL} is the namespace's name, which Kubernetes sets: it cannot be \
                         changed or removed"
                    )));
                }
                self.transact("netnamespaces", |a| {
                    let mut ns =
                        a.record::<NetNamespace>(name)?.ok_or_else(|| Error::UnknownProject(name.to_owned()))?;
                    let (mut labels, not_found) = relabeled(&ns.effective_labels(), set, remove, overwrite)?;
                    // Implied, not stored (`NetNamespace::effective_labels`).
                    labels.remove(NAMESPACE_NAME_LABEL);
                    let changed = labels != ns.labels;
                    if changed {
                        ns.labels = labels;
                        a.put_record(&ns)?;
                    }
                    Ok(Labeled { outcome: outcome(changed), not_found })
                })
            }
            LabelTarget::Pod { namespace, name } => {
                validate_project_name(namespace)?;
                validate_policy_name(name)?;
                self.transact("podmeta", |a| {
                    a.require_project(namespace)?;
                    let key_name = format!("{namespace}/{name}");
                    let mut meta = a.record::<PodMeta>(&key_name)?.unwrap_or_else(|| PodMeta {
                        namespace: namespace.to_owned(),
                        name: name.to_owned(),
                        ..PodMeta::default()
                    });
                    let (labels, not_found) = relabeled(&meta.labels, set, remove, overwrite)?;
                    let changed = labels != meta.labels;
                    if changed {
                        meta.labels = labels;
                        a.put_record(&meta)?;
                    }
                    Ok(Labeled { outcome: outcome(changed), not_found })
                })
            }
        }
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

#[cfg(test)]
mod tests;
