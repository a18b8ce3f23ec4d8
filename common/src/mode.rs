//! `NodeConfig.mode`: which OpenShift SDN network plugin's policy table 80 applies.

/// `ovs-multitenant`: projects are isolated by VNID; VNID 0 is global.
pub const MULTITENANT: u32 = 0;
