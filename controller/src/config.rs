//! Cluster-wide network configuration (OpenShift's ClusterNetwork object).

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

use crate::Error;

/// Smallest accepted hostSubnetLength: a node subnet needs room for the network
/// address, the gateway, at least one pod and the broadcast address.
pub const MIN_HOST_SUBNET_LENGTH: u8 = 2;
/// Largest accepted hostSubnetLength: the dataplane's per-pod counters are sized for it.
pub const MAX_HOST_SUBNET_LENGTH: u8 = oxsdn_common::MAX_HOST_SUBNET_BITS as u8;
pub const MIN_MTU: u32 = 576;
pub const MAX_MTU: u32 = 9000;

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
    /// Which OpenShift SDN plugin's isolation the cluster applies; the one setting that
    /// may change after `init` (`Cluster::set_network_plugin`).
    #[serde(default)]
    pub network_plugin: NetworkPlugin,
}

/// OpenShift SDN's three network plugins.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkPlugin {
    /// `redhat/openshift-ovs-multitenant`: projects isolated by VNID.
    #[default]
    Multitenant,
    /// `redhat/openshift-ovs-subnet`: flat, every pod reaches every pod.
    Subnet,
    /// `redhat/openshift-ovs-networkpolicy`: no isolation until NetworkPolicies select
    /// pods.
    #[serde(rename = "networkpolicy")]
    NetworkPolicy,
}

impl NetworkPlugin {
    pub const ALL: [NetworkPlugin; 3] =
        [NetworkPlugin::Multitenant, NetworkPlugin::Subnet, NetworkPlugin::NetworkPolicy];

    /// The short name (`multitenant`, `subnet`, `networkpolicy`).
    pub fn name(self) -> &'static str {
        match self {
            NetworkPlugin::Multitenant => "multitenant",
            NetworkPlugin::Subnet => "subnet",
            NetworkPlugin::NetworkPolicy => "networkpolicy",
        }
    }

    /// OpenShift's name (`redhat/openshift-ovs-multitenant`, ...).
    pub fn openshift_name(self) -> String {
        format!("redhat/openshift-ovs-{}", self.name())
    }
}

impl std::fmt::Display for NetworkPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for NetworkPlugin {
    type Err = String;

    /// The short names and OpenShift's.
    fn from_str(s: &str) -> Result<Self, String> {
        NetworkPlugin::ALL.into_iter().find(|p| s == p.name() || s == p.openshift_name()).ok_or_else(|| {
            format!("unknown network plugin {s:?}: one of multitenant, subnet, networkpolicy (or redhat/openshift-ovs-NAME)")
        })
    }
}

/// Builds a network from constants known to be valid.
fn constant_network(a: u8, b: u8, prefix: u8) -> Ipv4Network {
    Ipv4Network::new(Ipv4Addr::new(a, b, 0, 0), prefix).expect("prefix <= 32")
}

impl Default for ClusterConfig {
    /// OpenShift 3.x defaults (spec §9.1).
    fn default() -> Self {
        ClusterConfig {
            cluster_network: constant_network(10, 128, 14),
            host_subnet_length: 9,
            service_network: constant_network(172, 30, 16),
            vxlan_port: 4789,
            mtu: 1450,
            network_plugin: NetworkPlugin::Multitenant,
        }
    }
}

impl ClusterConfig {
    /// Checks sizes and overlaps; the message names the offending field and value.
    pub fn validate(&self) -> crate::Result<()> {
        let invalid = |msg: String| Err(Error::InvalidConfig(msg));
        for (field, net) in [("clusterNetwork", self.cluster_network), ("serviceNetwork", self.service_network)] {
            if net.ip() != net.network() {
                return invalid(format!(
                    "{field} {net} has host bits set; did you mean {}/{}?",
                    net.network(),
                    net.prefix()
                ));
            }
        }
        if self.cluster_network.overlaps(self.service_network) {
            return invalid(format!(
                "clusterNetwork {} overlaps serviceNetwork {}",
                self.cluster_network, self.service_network
            ));
        }
        let hsl = self.host_subnet_length;
        if !(MIN_HOST_SUBNET_LENGTH..=MAX_HOST_SUBNET_LENGTH).contains(&hsl) {
            return invalid(format!(
                "hostSubnetLength {hsl} is out of range [{MIN_HOST_SUBNET_LENGTH}, {MAX_HOST_SUBNET_LENGTH}]"
            ));
        }
        let prefix = self.cluster_network.prefix();
        if u32::from(prefix) + u32::from(hsl) > 32 {
            return invalid(format!(
                "hostSubnetLength {hsl} does not fit in clusterNetwork {} ({} host bits available)",
                self.cluster_network,
                32 - prefix
            ));
        }
        if !(MIN_MTU..=MAX_MTU).contains(&self.mtu) {
            return invalid(format!("mtu {} is out of range [{MIN_MTU}, {MAX_MTU}]", self.mtu));
        }
        if self.vxlan_port == 0 {
            return invalid("vxlanPort 0 is not a valid UDP port".to_string());
        }
        Ok(())
    }

    /// Names the fields in which `other` differs from `self`, as "field: self -> other".
    pub fn differences(&self, other: &ClusterConfig) -> Vec<String> {
        let mut out = Vec::new();
        let mut cmp = |field: &str, a: String, b: String| {
            if a != b {
                out.push(format!("{field}: {a} -> {b}"));
            }
        };
        cmp("clusterNetwork", self.cluster_network.to_string(), other.cluster_network.to_string());
        cmp("hostSubnetLength", self.host_subnet_length.to_string(), other.host_subnet_length.to_string());
        cmp("serviceNetwork", self.service_network.to_string(), other.service_network.to_string());
        cmp("vxlanPort", self.vxlan_port.to_string(), other.vxlan_port.to_string());
        cmp("mtu", self.mtu.to_string(), other.mtu.to_string());
        cmp("networkPlugin", self.network_plugin.to_string(), other.network_plugin.to_string());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Network {
        s.parse().unwrap()
    }

    #[test]
    fn network_plugins_by_either_name() {
        for p in NetworkPlugin::ALL {
            assert_eq!(p.name().parse::<NetworkPlugin>(), Ok(p));
            assert_eq!(p.openshift_name().parse::<NetworkPlugin>(), Ok(p));
        }
        assert_eq!("redhat/openshift-ovs-networkpolicy".parse(), Ok(NetworkPlugin::NetworkPolicy));
        assert!("ovs-subnet".parse::<NetworkPlugin>().unwrap_err().contains("unknown network plugin"));
        // Records written before the field existed are multitenant.
        let old = r#"{"clusterNetwork":"10.128.0.0/14","hostSubnetLength":9,"serviceNetwork":"172.30.0.0/16","vxlanPort":4789,"mtu":1450}"#;
        assert_eq!(serde_json::from_str::<ClusterConfig>(old).unwrap().network_plugin, NetworkPlugin::Multitenant);
    }

    fn err_of(c: &ClusterConfig) -> String {
        match c.validate() {
            Err(Error::InvalidConfig(m)) => m,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_openshift_3x_and_valid() {
        let c = ClusterConfig::default();
        assert_eq!(c.cluster_network, net("10.128.0.0/14"));
        assert_eq!(c.host_subnet_length, 9);
        assert_eq!(c.service_network, net("172.30.0.0/16"));
        assert_eq!(c.vxlan_port, 4789);
        assert_eq!(c.mtu, 1450);
        c.validate().unwrap();
    }

    #[test]
    fn rejects_bad_values_naming_field_and_value() {
        let base = ClusterConfig::default();
        let c = ClusterConfig { service_network: net("10.130.0.0/16"), ..base.clone() };
        assert_eq!(err_of(&c), "clusterNetwork 10.128.0.0/14 overlaps serviceNetwork 10.130.0.0/16");

        let c = ClusterConfig { cluster_network: net("10.128.0.1/14"), ..base.clone() };
        assert_eq!(err_of(&c), "clusterNetwork 10.128.0.1/14 has host bits set; did you mean 10.128.0.0/14?");
        let c = ClusterConfig { service_network: net("172.30.1.0/16"), ..base.clone() };
        assert!(err_of(&c).starts_with("serviceNetwork 172.30.1.0/16 has host bits set"));

        for hsl in [0, 1, 13, 32] {
            let c = ClusterConfig { host_subnet_length: hsl, ..base.clone() };
            assert_eq!(err_of(&c), format!("hostSubnetLength {hsl} is out of range [2, 12]"));
        }
        let c = ClusterConfig { cluster_network: net("10.128.0.0/24"), host_subnet_length: 9, ..base.clone() };
        assert_eq!(
            err_of(&c),
            "hostSubnetLength 9 does not fit in clusterNetwork 10.128.0.0/24 (8 host bits available)"
        );
        for mtu in [575, 9001, 0] {
            let c = ClusterConfig { mtu, ..base.clone() };
            assert_eq!(err_of(&c), format!("mtu {mtu} is out of range [576, 9000]"));
        }
        let c = ClusterConfig { vxlan_port: 0, ..base.clone() };
        assert_eq!(err_of(&c), "vxlanPort 0 is not a valid UDP port");
    }

    #[test]
    fn accepts_edges() {
        let base = ClusterConfig::default();
        // One single subnet: prefix + host bits == 32.
        ClusterConfig { cluster_network: net("10.0.0.0/23"), ..base.clone() }.validate().unwrap();
        ClusterConfig { host_subnet_length: 2, ..base.clone() }.validate().unwrap();
        ClusterConfig { host_subnet_length: 12, ..base.clone() }.validate().unwrap();
        ClusterConfig { mtu: 576, ..base.clone() }.validate().unwrap();
        ClusterConfig { mtu: 9000, ..base.clone() }.validate().unwrap();
    }

    #[test]
    fn json_uses_camel_case_and_rejects_unknown_fields() {
        let c = ClusterConfig::default();
        let j = serde_json::to_value(&c).unwrap();
        assert_eq!(
            j,
            serde_json::json!({
                "clusterNetwork": "10.128.0.0/14", "hostSubnetLength": 9,
                "serviceNetwork": "172.30.0.0/16", "vxlanPort": 4789, "mtu": 1450,
                "networkPlugin": "multitenant"
            })
        );
        let mut j2 = j.clone();
        j2["extra"] = serde_json::json!(1);
        assert!(serde_json::from_value::<ClusterConfig>(j2).is_err());
    }

    #[test]
    fn differences_name_fields() {
        let a = ClusterConfig::default();
        let b = ClusterConfig { mtu: 1400, vxlan_port: 4790, ..a.clone() };
        assert_eq!(a.differences(&b), vec!["vxlanPort: 4789 -> 4790", "mtu: 1450 -> 1400"]);
        assert!(a.differences(&a).is_empty());
    }
}
