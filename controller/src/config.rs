//! Cluster-wide network configuration (OpenShift's ClusterNetwork object).

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterConfig {
    /// Pod addresses of the whole cluster (default 10.128.0.0/14).
    pub cluster_network: Ipv4Network,
    /// Host bits of each node subnet (default 9, a /23 per node).
    pub host_subnet_length: u8,
    /// ClusterIP range (default 172.30.0.0/16).
    pub service_network: Ipv4Network,
    /// VXLAN UDP port (default 4789).
    pub vxlan_port: u16,
    /// MTU of pod interfaces and tun0 (default 1450).
    pub mtu: u32,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        todo!("10.128.0.0/14, 9, 172.30.0.0/16, 4789, 1450")
    }
}

impl ClusterConfig {
    /// Checks sizes and overlaps; the message names the offending field and value.
    pub fn validate(&self) -> crate::Result<()> {
        todo!()
    }
}
