//! What the policy engine follows: namespaces' labels (from the NetNamespaces),
//! NetworkPolicies, pods' labels and named ports, and other nodes' pods' addresses. One
//! generic mirror per kind: a resync replaces the engine's collection, an event changes
//! one entry; the engine compiles after either.

use std::sync::{mpsc::Receiver, Arc};

use anyhow::Result;
use oxsdn_controller::{
    cluster::{NetNamespaceEvent, NetworkPolicyEvent, PodAddressEvent, PodMetaEvent},
    policy::{NetworkPolicyRecord, PodAddress, PodMeta},
    NetNamespace,
};

use super::PolicyEngine;
use crate::mirror::{Feed, Mirror};

/// A kind of record an engine (the policy engine, the egress firewall) holds.
pub trait PolicyInput<E = PolicyEngine>: Sized + Send + Sync + 'static {
    type Event: Send + 'static;
    const WHAT: &'static str;
    fn replace_all(engine: &E, all: Vec<Self>);
    fn apply(engine: &E, event: Self::Event);
}

impl PolicyInput for NetNamespace {
    type Event = NetNamespaceEvent;
    const WHAT: &'static str = "namespace labels";
    fn replace_all(engine: &PolicyEngine, all: Vec<Self>) {
        engine.set_namespaces(all.into_iter().map(|ns| (ns.name, ns.labels)));
    }
    fn apply(engine: &PolicyEngine, event: NetNamespaceEvent) {
        match event {
            NetNamespaceEvent::Upsert(ns) => engine.upsert_namespace(ns.name, ns.labels),
            NetNamespaceEvent::Deleted(name) => engine.remove_namespace(&name),
        }
    }
}

impl PolicyInput for NetworkPolicyRecord {
    type Event = NetworkPolicyEvent;
    const WHAT: &'static str = "network policy";
    fn replace_all(engine: &PolicyEngine, all: Vec<Self>) {
        engine.set_policies(all);
    }
    fn apply(engine: &PolicyEngine, event: NetworkPolicyEvent) {
        match event {
            NetworkPolicyEvent::Upsert(policy) => engine.upsert_policy(policy),
            NetworkPolicyEvent::Deleted { namespace, name } => engine.remove_policy(namespace, name),
        }
    }
}

impl PolicyInput for PodMeta {
    type Event = PodMetaEvent;
    const WHAT: &'static str = "pod labels";
    fn replace_all(engine: &PolicyEngine, all: Vec<Self>) {
        engine.set_pod_meta(all);
    }
    fn apply(engine: &PolicyEngine, event: PodMetaEvent) {
        match event {
            PodMetaEvent::Upsert(meta) => engine.upsert_pod_meta(meta),
            PodMetaEvent::Deleted { namespace, name } => engine.remove_pod_meta(namespace, name),
        }
    }
}

impl PolicyInput for PodAddress {
    type Event = PodAddressEvent;
    const WHAT: &'static str = "pod address";
    fn replace_all(engine: &PolicyEngine, all: Vec<Self>) {
        engine.set_addresses(all);
    }
    fn apply(engine: &PolicyEngine, event: PodAddressEvent) {
        match event {
            PodAddressEvent::Upsert(address) => engine.upsert_address(address),
            PodAddressEvent::Deleted(key) => engine.remove_address(&key),
        }
    }
}

/// Keeps the engine's collection of `R` equal to a feed's.
pub struct Follow<R: PolicyInput<E>, E = PolicyEngine> {
    source: Arc<dyn Feed<R, Event = R::Event>>,
    engine: Arc<E>,
}

impl<R: PolicyInput<E>, E> Follow<R, E> {
    pub fn new(source: Arc<dyn Feed<R, Event = R::Event>>, engine: Arc<E>) -> Self {
        Follow { source, engine }
    }
}

impl<R: PolicyInput<E>, E: Send + Sync + 'static> Mirror for Follow<R, E> {
    type Event = R::Event;
    const WHAT: &'static str = R::WHAT;

    fn resync(&self) -> Result<u64> {
        let (all, revision) = self.source.list()?;
        R::replace_all(&self.engine, all);
        Ok(revision)
    }

    fn watch(&self, after_revision: u64) -> Result<Receiver<R::Event>> {
        self.source.watch(after_revision)
    }

    fn apply(&self, event: R::Event) -> Result<()> {
        R::apply(&self.engine, event);
        Ok(())
    }
}
