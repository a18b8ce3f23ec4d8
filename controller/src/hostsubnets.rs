//! HostSubnets: one per node, its slice of the cluster network.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostSubnet {
    /// Node name.
    pub host: String,
    /// Node underlay IP.
    pub host_ip: Ipv4Addr,
    pub subnet: Ipv4Network,
}

impl HostSubnet {
    /// First address of the subnet, held by the node's tun0.
    pub fn gateway(&self) -> Ipv4Addr {
        todo!()
    }
}
