//! `NodeConfig.mode`: which OpenShift SDN network plugin's policy table 80 applies.

/// `ovs-multitenant`: projects are isolated by VNID; VNID 0 is global.
pub const MULTITENANT: u32 = 0;
/// `ovs-subnet`: flat, every pod reaches every pod and service; VNI 0 on the wire.
pub const SUBNET: u32 = 1;
/// `ovs-networkpolicy`: VNIDs per project on the wire, isolation by NetworkPolicies
/// (`crate::policy`).
pub const NETWORKPOLICY: u32 = 2;
