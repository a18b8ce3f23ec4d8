//! What the networkpolicy plugin needs besides projects: NetworkPolicies
//! (`networking.k8s.io/v1`, stored as the API server holds their spec), the labels and
//! named container ports of pods (`PodMeta`, from manifests or the Kubernetes API), and
//! where each pod is (`PodAddress`, written by the agent that plugged it in: every node
//! must know every pod's address to apply selectors to traffic from other nodes).

pub mod manifest;
pub mod validation;

use std::{collections::BTreeMap, net::Ipv4Addr};

pub use k8s_openapi::api::networking::v1::NetworkPolicySpec;
use k8s_openapi::{
    api::{core::v1::Namespace, networking::v1::NetworkPolicy},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use serde::{Deserialize, Serialize};

use crate::{
    hostsubnets::validate_node_name,
    netnamespaces::{validate_labels, validate_project_name},
    Error, NetNamespace, Result,
};
use validation::{dns1123_subdomain_errors, port_name_errors, validate_network_policy_spec, FieldPath, PROTOCOLS};

/// A NetworkPolicy of a project.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicyRecord {
    pub namespace: String,
    pub name: String,
    /// Stable, never reused number of this policy (its counters in the dataplane).
    pub id: u32,
    pub spec: NetworkPolicySpec,
}

/// A pod's labels and named container ports, by namespace and name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodMeta {
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<NamedPort>,
}

/// A container port with a name (`spec.containers[].ports[]`): NetworkPolicies may name
/// it instead of giving its number.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamedPort {
    pub name: String,
    pub port: u16,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
}

/// Where a pod is: its node, its address, and its namespace and name (as the runtime
/// gave them to the CNI plugin), by attachment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodAddress {
    pub node: String,
    pub container_id: String,
    pub ifname: String,
    pub namespace: String,
    /// Empty when the runtime named no pod.
    #[serde(default)]
    pub name: String,
    pub ip: Ipv4Addr,
}

/// The label Kubernetes gives every namespace, with its name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Checks the name of a policy or pod: a DNS-1123 subdomain, as the API server requires.
pub(crate) fn validate_policy_name(name: &str) -> Result<()> {
    match dns1123_subdomain_errors(name).first() {
        None => Ok(()),
        Some(why) => Err(Error::Invalid(format!("invalid name {name:?}: {why}"))),
    }
}

/// Checks a policy's spec as the API server does (`validation`), naming the policy.
pub(crate) fn validate_policy_spec(name: &str, spec: &NetworkPolicySpec) -> Result<()> {
    let errors = validate_network_policy_spec(spec, &FieldPath::new("spec"));
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidObject { kind: "NetworkPolicy", name: name.to_owned(), errors })
    }
}

impl NetworkPolicyRecord {
    pub(crate) fn check(&self) -> Result<()> {
        validate_project_name(&self.namespace)?;
        validate_policy_name(&self.name)?;
        validate_policy_spec(&self.name, &self.spec)
    }

    /// The policy as the API serves it (networking.k8s.io/v1).
    pub fn to_object(&self) -> NetworkPolicy {
        NetworkPolicy {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(self.spec.clone()),
        }
    }
}

impl PodMeta {
    pub(crate) fn check(&self) -> Result<()> {
        validate_project_name(&self.namespace)?;
        validate_policy_name(&self.name)?;
        validate_labels(&self.labels)?;
        for port in &self.ports {
            if let Some(why) = port_name_errors(&port.name).first() {
                return Err(Error::Invalid(format!("invalid name {:?} of a container port: {why}", port.name)));
            }
            if port.port == 0 {
                return Err(Error::Invalid(format!("container port {:?} has number 0", port.name)));
            }
            if !PROTOCOLS.contains(&port.protocol.as_str()) {
                return Err(Error::Invalid(format!("invalid protocol {:?} of port {}", port.protocol, port.name)));
            }
        }
        Ok(())
    }
}

impl NetNamespace {
    /// The namespace as the API serves it (v1), with its effective labels.
    pub fn to_namespace(&self) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(self.effective_labels()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        }
    }
}

impl PodAddress {
    /// The key below the node's prefix: only that node's agent writes there.
    pub fn key_name(&self) -> String {
        format!("{}/{}/{}", self.node, self.container_id, self.ifname)
    }

    pub(crate) fn check(&self) -> Result<()> {
        validate_node_name(&self.node)?;
        validate_project_name(&self.namespace)?;
        let plain =
            |s: &str| !s.is_empty() && s.len() <= 256 && !s.contains('/') && s.chars().all(|c| c.is_ascii_graphic());
        if !plain(&self.container_id) || !plain(&self.ifname) {
            return Err(Error::Invalid(format!(
                "invalid attachment {:?}/{:?} of a pod address",
                self.container_id, self.ifname
            )));
        }
        Ok(())
    }
}
