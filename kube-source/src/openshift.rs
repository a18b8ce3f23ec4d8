//! OpenShift's `network.openshift.io/v1` NetNamespace, as a Kubernetes resource (the
//! CRD is deploy/05-crds.yaml; on OpenShift the API serves its own), and the annotation
//! `oc adm pod-network` sets on it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// The annotation `oc adm pod-network` puts on a NetNamespace, and the master removes
/// once it has applied it.
pub const CHANGE_NETWORK_ANNOTATION: &str = "pod.network.openshift.io/multitenant.change-network";

/// A project's VNID, as OpenShift's API serves it (`oc get netnamespaces`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetNamespace {
    /// `network.openshift.io/v1` (sent on creation: the API server needs it).
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    pub metadata: ObjectMeta,
    /// The project's name (equal to the object's).
    #[serde(default)]
    pub netname: String,
    #[serde(default)]
    pub netid: u32,
    #[serde(default, rename = "egressIPs", skip_serializing_if = "Vec::is_empty")]
    pub egress_ips: Vec<String>,
}

impl NetNamespace {
    /// The object of project `name` with VNID `netid`, as OpenShift's master creates it.
    pub fn new(name: &str, netid: u32) -> Self {
        NetNamespace {
            api_version: <Self as k8s_openapi::Resource>::API_VERSION.to_owned(),
            kind: <Self as k8s_openapi::Resource>::KIND.to_owned(),
            metadata: ObjectMeta { name: Some(name.to_owned()), ..ObjectMeta::default() },
            netname: name.to_owned(),
            netid,
            egress_ips: Vec::new(),
        }
    }
}

impl k8s_openapi::Resource for NetNamespace {
    const API_VERSION: &'static str = "network.openshift.io/v1";
    const GROUP: &'static str = "network.openshift.io";
    const KIND: &'static str = "NetNamespace";
    const VERSION: &'static str = "v1";
    const URL_PATH_SEGMENT: &'static str = "netnamespaces";
    type Scope = k8s_openapi::ClusterResourceScope;
}

impl k8s_openapi::Metadata for NetNamespace {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// What the annotation asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeNetwork {
    /// `join:<project>`: take that project's VNID.
    Join(String),
    /// `isolate`: a VNID of its own.
    Isolate,
    /// `global`: VNID 0.
    Global,
}

impl ChangeNetwork {
    /// The request of `object`'s annotation, if it has one; `Err` with the value if it
    /// is not one `oc adm pod-network` writes.
    pub fn of(object: &NetNamespace) -> Option<Result<ChangeNetwork, String>> {
        let value = object.metadata.annotations.as_ref()?.get(CHANGE_NETWORK_ANNOTATION)?;
        Some(match value.as_str() {
            "isolate" => Ok(ChangeNetwork::Isolate),
            "global" => Ok(ChangeNetwork::Global),
            other => match other.strip_prefix("join:") {
                Some(project) if !project.is_empty() => Ok(ChangeNetwork::Join(project.to_owned())),
                _ => Err(other.to_owned()),
            },
        })
    }
}

/// A write to the API that keeps the NetNamespace objects equal to the store's projects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetNamespaceWrite {
    /// A project without its object.
    Create { name: String, netid: u32 },
    /// An object whose NETID is not the project's, or whose annotation was applied.
    Update { name: String, netid: u32, clear_change_network: bool },
    /// The object of a namespace that is gone.
    Delete { name: String },
}
