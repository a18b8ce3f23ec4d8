//! The cluster's source of truth (OpenShift SDN's master): cluster configuration,
//! NetNamespaces with their VNIDs, HostSubnets, Services, all kept in a `Store`.
//!
//! Every operation is a compare-and-swap transaction on the store, so the CLI, node
//! agents and any number of concurrent writers never lose an update.

mod allocator;
pub mod cluster;
pub mod config;
pub mod egress;
pub mod egress_ip;
pub mod error;
pub mod fuzzing;
pub mod hostsubnets;
pub mod netnamespaces;
pub mod policy;
pub mod service;
pub mod store;
pub mod subnets;
pub mod vnid;

pub use cluster::{
    Cluster, HostSubnetEvent, NetNamespaceEvent, NetworkPolicyEvent, NewService, PodAddressEvent, PodMetaEvent,
    ServiceEvent,
};
pub use config::{ClusterConfig, NetworkPlugin};
pub use error::{Error, Result};
pub use hostsubnets::HostSubnet;
pub use netnamespaces::NetNamespace;
pub use service::{Protocol, Service, ServicePort};
