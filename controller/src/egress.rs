//! OpenShift's EgressNetworkPolicy (`network.openshift.io/v1`): a project's egress
//! firewall, an ordered list of Allow/Deny rules to a `cidrSelector` or a `dnsName`,
//! first match wins, for traffic leaving the cluster. One per project (the store keys it
//! by project); refused for `default` and global projects, as OpenShift refuses them.

use ipnetwork::Ipv4Network;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use oxsdn_common::egress::MAX_EGRESS_RULES;
use serde::{Deserialize, Serialize};

use crate::{
    netnamespaces::{validate_project_name, DEFAULT_PROJECT},
    policy::{validate_policy_name, validation::dns1123_subdomain_errors},
    Error, NetNamespace, Result,
};

pub const API_VERSION: &str = "network.openshift.io/v1";
pub const KIND: &str = "EgressNetworkPolicy";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EgressRuleType {
    Allow,
    Deny,
}

/// Where a rule applies: exactly one of the two.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressPeer {
    /// An IPv4 CIDR (`1.2.3.0/24`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr_selector: Option<String>,
    /// A DNS name whose A records the rule follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressRule {
    #[serde(rename = "type")]
    pub kind: EgressRuleType,
    pub to: EgressPeer,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressNetworkPolicySpec {
    #[serde(default)]
    pub egress: Vec<EgressRule>,
}

/// An EgressNetworkPolicy as a manifest holds it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressNetworkPolicy {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: EgressNetworkPolicySpec,
}

/// The egress firewall of project `namespace`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressNetworkPolicyRecord {
    pub namespace: String,
    pub name: String,
    pub spec: EgressNetworkPolicySpec,
}

/// What a rule's `to` names, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EgressTarget {
    Cidr(Ipv4Network),
    DnsName(String),
}

impl EgressRule {
    /// The rule's target, or why it has none.
    pub fn target(&self) -> std::result::Result<EgressTarget, String> {
        match (&self.to.cidr_selector, &self.to.dns_name) {
            (Some(cidr), None) => parse_cidr(cidr).map(EgressTarget::Cidr),
            (None, Some(name)) => match dns1123_subdomain_errors(name).first() {
                None => Ok(EgressTarget::DnsName(name.clone())),
                Some(why) => Err(format!("to.dnsName: Invalid value: {name:?}: {why}")),
            },
            _ => Err("to: Invalid value: must specify exactly one of cidrSelector and dnsName".into()),
        }
    }
}

/// An IPv4 CIDR as OpenShift takes it (`net.ParseCIDR`: the address's host bits may be
/// set; they are ignored).
fn parse_cidr(text: &str) -> std::result::Result<Ipv4Network, String> {
    let bad = || format!("to.cidrSelector: Invalid value: {text:?}: must be an IPv4 CIDR such as 10.0.0.0/8");
    let (addr, prefix) = text.split_once('/').ok_or_else(bad)?;
    let addr: std::net::Ipv4Addr = addr.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    let net = Ipv4Network::new(addr, prefix).map_err(|_| bad())?;
    Ipv4Network::new(net.network(), prefix).map_err(|_| bad())
}

fn not_allowed(project: &str) -> Error {
    Error::Invalid(format!(
        "project {project:?} is global (VNID 0): EgressNetworkPolicy is not allowed in the default or a global project"
    ))
}

impl EgressNetworkPolicyRecord {
    /// Checks names and rules as OpenShift's validation does, with the limit of
    /// `MAX_EGRESS_RULES` rules; every error of the spec at once.
    pub fn check(&self) -> Result<()> {
        validate_project_name(&self.namespace)?;
        validate_policy_name(&self.name)?;
        if self.namespace == DEFAULT_PROJECT {
            return Err(not_allowed(&self.namespace));
        }
        let mut errors = Vec::new();
        if self.spec.egress.len() > MAX_EGRESS_RULES {
            errors.push(format!(
                "spec.egress: Too many: {}: must have at most {MAX_EGRESS_RULES} items",
                self.spec.egress.len()
            ));
        } else {
            for (i, rule) in self.spec.egress.iter().enumerate() {
                if let Err(why) = rule.target() {
                    errors.push(format!("spec.egress[{i}].{why}"));
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid(format!("The EgressNetworkPolicy {:?} is invalid: {}", self.name, errors.join(", "))))
        }
    }

    /// Refuses a policy its project cannot have (OpenShift: none in a global project,
    /// whose traffic every project may see; `check` refuses `default`).
    pub(crate) fn check_project(&self, project: &NetNamespace) -> Result<()> {
        if project.netid == 0 {
            return Err(not_allowed(&project.name));
        }
        Ok(())
    }

    /// The policy as a manifest holds it.
    pub fn to_object(&self) -> EgressNetworkPolicy {
        EgressNetworkPolicy {
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: self.spec.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(kind: EgressRuleType, cidr: Option<&str>, dns: Option<&str>) -> EgressRule {
        EgressRule { kind, to: EgressPeer { cidr_selector: cidr.map(str::to_owned), dns_name: dns.map(str::to_owned) } }
    }

    fn policy(egress: Vec<EgressRule>) -> EgressNetworkPolicyRecord {
        EgressNetworkPolicyRecord {
            namespace: "p".into(),
            name: "default".into(),
            spec: EgressNetworkPolicySpec { egress },
        }
    }

    #[test]
    fn targets() {
        let allow = EgressRuleType::Allow;
        assert_eq!(
            rule(allow, Some("10.1.2.3/16"), None).target(),
            Ok(EgressTarget::Cidr("10.1.0.0/16".parse().unwrap()))
        );
        assert_eq!(rule(allow, None, Some("example.com")).target(), Ok(EgressTarget::DnsName("example.com".into())));
        for bad in [
            rule(allow, None, None),
            rule(allow, Some("1.2.3.0/24"), Some("a.com")),
            rule(allow, Some("1.2.3.0"), None),
            rule(allow, Some("1.2.3.0/33"), None),
            rule(allow, Some("::/0"), None),
            rule(allow, Some("1.2.3.0/ 8"), None),
            rule(allow, None, Some("Bad_Name")),
            rule(allow, None, Some("")),
        ] {
            assert!(bad.target().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn at_most_1000_rules_and_every_error_named() {
        let deny = || rule(EgressRuleType::Deny, Some("0.0.0.0/0"), None);
        policy(vec![deny(); MAX_EGRESS_RULES]).check().unwrap();
        let err = policy(vec![deny(); MAX_EGRESS_RULES + 1]).check().unwrap_err().to_string();
        assert!(err.contains("Too many: 1001: must have at most 1000 items"), "{err}");
        let err =
            policy(vec![rule(EgressRuleType::Allow, Some("x"), None), deny(), rule(EgressRuleType::Deny, None, None)])
                .check()
                .unwrap_err()
                .to_string();
        assert!(err.contains("spec.egress[0].to.cidrSelector") && err.contains("spec.egress[2].to:"), "{err}");
    }
}
