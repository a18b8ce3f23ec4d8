//! HostSubnets: one per node, its slice of the cluster network.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

use crate::{netnamespaces::is_dns1123_label, Error, Result};

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
        // A node subnet has at least 2 host bits, so network + 1 stays inside it.
        Ipv4Addr::from(u32::from(self.subnet.network()).wrapping_add(1))
    }
}

/// Checks a node name, which becomes part of a store key: a DNS-1123 subdomain (dot-
/// separated DNS-1123 labels, at most 253 characters), as Kubernetes requires.
pub fn validate_node_name(name: &str) -> Result<()> {
    if name.len() <= 253 && name.split('.').all(is_dns1123_label) {
        Ok(())
    } else {
        Err(Error::InvalidNodeName(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_is_first_address() {
        let hs = HostSubnet {
            host: "n1".into(),
            host_ip: Ipv4Addr::new(192, 168, 1, 10),
            subnet: "10.128.2.0/23".parse().unwrap(),
        };
        assert_eq!(hs.gateway(), Ipv4Addr::new(10, 128, 2, 1));
    }

    #[test]
    fn json_shape() {
        let hs = HostSubnet {
            host: "n1".into(),
            host_ip: Ipv4Addr::new(192, 168, 1, 10),
            subnet: "10.128.2.0/23".parse().unwrap(),
        };
        assert_eq!(
            serde_json::to_value(&hs).unwrap(),
            serde_json::json!({"host": "n1", "hostIp": "192.168.1.10", "subnet": "10.128.2.0/23"})
        );
    }

    #[test]
    fn node_names() {
        for ok in ["node1", "ip-10-0-1-2.ec2.internal", "a", &format!("{}.{}", "a".repeat(63), "b".repeat(63))] {
            validate_node_name(ok).unwrap();
        }
        let too_long = vec!["a".repeat(63); 4].join("."); // 255 characters
        for bad in ["", "Node1", "a..b", ".a", "a.", "a/b", "-a", "a_b", too_long.as_str()] {
            assert!(matches!(validate_node_name(bad), Err(Error::InvalidNodeName(_))), "{bad}");
        }
    }
}
