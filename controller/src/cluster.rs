//! `Cluster`: the controller's operations, each one store transaction.

use std::{collections::BTreeMap, net::Ipv4Addr, sync::mpsc::Receiver, sync::Arc};

use crate::{store::Store, ClusterConfig, HostSubnet, NetNamespace, Result};

/// Key layout in the store.
pub mod keys {
    pub const CONFIG: &str = "/oxsdn/config";
    pub const NETNAMESPACES: &str = "/oxsdn/netnamespaces/";
    pub const HOSTSUBNETS: &str = "/oxsdn/hostsubnets/";
    pub const PROJECT_ID_COUNTER: &str = "/oxsdn/counters/project-id";
}

/// A change to a NetNamespace, seen through `Cluster::watch_netnamespaces`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetNamespaceEvent {
    Upsert(NetNamespace),
    Deleted(String),
}

pub struct Cluster {
    store: Arc<dyn Store>,
}

impl Cluster {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Cluster { store }
    }
}
