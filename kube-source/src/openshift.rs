//! OpenShift's `network.openshift.io/v1` kinds as Kubernetes resources: NetNamespace,
//! HostSubnet, ClusterNetwork and EgressNetworkPolicy (the CRDs are deploy/05-crds.yaml;
//! on OpenShift the API serves its own), the annotations OpenShift's master and
//! `oc adm pod-network` set on them, and the writes that keep them equal to the store.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use oxsdn_controller::{egress::EgressNetworkPolicySpec, ClusterConfig};
use serde::{Deserialize, Serialize};

/// The annotation OpenShift's master puts on the HostSubnets it creates for Nodes: the
/// Node's UID. A HostSubnet with it is deleted with its Node (by the master, and by
/// oxsdn-kube); one without it and without a Node (F5, by hand) is left alone.
pub const NODE_UID_ANNOTATION: &str = "pod.network.openshift.io/node-uid";

/// The name of the one ClusterNetwork object OpenShift reads.
pub const CLUSTER_NETWORK_NAME: &str = "default";

pub use oxsdn_controller::netnamespaces::CHANGE_NETWORK_ANNOTATION;

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
        let (api_version, kind) = type_meta::<Self>();
        NetNamespace {
            api_version,
            kind,
            metadata: ObjectMeta { name: Some(name.to_owned()), ..ObjectMeta::default() },
            netname: name.to_owned(),
            netid,
            egress_ips: Vec::new(),
        }
    }
}

/// Makes `$kind` a `network.openshift.io/v1` resource kube's `Api` and watchers take.
macro_rules! openshift_resource {
    ($kind:ident, $plural:literal, $scope:ty) => {
        impl k8s_openapi::Resource for $kind {
            const API_VERSION: &'static str = "network.openshift.io/v1";
            const GROUP: &'static str = "network.openshift.io";
            const KIND: &'static str = stringify!($kind);
            const VERSION: &'static str = "v1";
            const URL_PATH_SEGMENT: &'static str = $plural;
            type Scope = $scope;
        }

        impl k8s_openapi::Metadata for $kind {
            type Ty = ObjectMeta;

            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

openshift_resource!(NetNamespace, "netnamespaces", k8s_openapi::ClusterResourceScope);
openshift_resource!(HostSubnet, "hostsubnets", k8s_openapi::ClusterResourceScope);
openshift_resource!(ClusterNetwork, "clusternetworks", k8s_openapi::ClusterResourceScope);
openshift_resource!(EgressNetworkPolicy, "egressnetworkpolicies", k8s_openapi::NamespaceResourceScope);

fn type_meta<K: k8s_openapi::Resource>() -> (String, String) {
    (K::API_VERSION.to_owned(), K::KIND.to_owned())
}

/// A node's subnet, as OpenShift's API serves it (`oc get hostsubnets`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostSubnet {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    pub metadata: ObjectMeta,
    /// The node's name (equal to the object's).
    #[serde(default)]
    pub host: String,
    /// The node's VTEP address.
    #[serde(default, rename = "hostIP")]
    pub host_ip: String,
    /// The node's pod subnet (CIDR).
    #[serde(default)]
    pub subnet: String,
    #[serde(default, rename = "egressIPs", skip_serializing_if = "Vec::is_empty")]
    pub egress_ips: Vec<String>,
    #[serde(default, rename = "egressCIDRs", skip_serializing_if = "Vec::is_empty")]
    pub egress_cidrs: Vec<String>,
}

impl HostSubnet {
    /// The object OpenShift's master creates for Node `name` (UID `node_uid`): the
    /// master accepts it as one of its own.
    pub fn new(name: &str, host_ip: Ipv4Addr, subnet: Ipv4Network, node_uid: Option<&str>) -> Self {
        let (api_version, kind) = type_meta::<Self>();
        let annotations = node_uid.map(|uid| [(NODE_UID_ANNOTATION.to_owned(), uid.to_owned())].into());
        HostSubnet {
            api_version,
            kind,
            metadata: ObjectMeta { name: Some(name.to_owned()), annotations, ..ObjectMeta::default() },
            host: name.to_owned(),
            host_ip: host_ip.to_string(),
            subnet: subnet.to_string(),
            egress_ips: Vec::new(),
            egress_cidrs: Vec::new(),
        }
    }

    /// Whether OpenShift's master (or oxsdn-kube) created it for a Node.
    pub fn is_for_a_node(&self) -> bool {
        self.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(NODE_UID_ANNOTATION))
    }
}

/// One of the cluster networks of a ClusterNetwork.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNetworkEntry {
    #[serde(rename = "CIDR")]
    pub cidr: String,
    #[serde(rename = "hostSubnetLength")]
    pub host_subnet_length: u32,
}

/// The cluster's network configuration as OpenShift's master publishes it (object
/// `default`), which its nodes check theirs against.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetwork {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    pub metadata: ObjectMeta,
    /// The first cluster network's CIDR (the pre-3.7 field, still written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Its hostSubnetLength (the pre-3.7 field: lower case, as OpenShift spells it).
    #[serde(default, rename = "hostsubnetlength", skip_serializing_if = "Option::is_none")]
    pub host_subnet_length: Option<u32>,
    #[serde(default)]
    pub cluster_networks: Vec<ClusterNetworkEntry>,
    #[serde(default)]
    pub service_network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_name: Option<String>,
    #[serde(default, rename = "vxlanPort", skip_serializing_if = "Option::is_none")]
    pub vxlan_port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

impl ClusterNetwork {
    /// The object OpenShift's master would write for `config`.
    pub fn of(config: &ClusterConfig) -> Self {
        let (api_version, kind) = type_meta::<Self>();
        let network = config.cluster_network.to_string();
        let host_subnet_length = u32::from(config.host_subnet_length);
        ClusterNetwork {
            api_version,
            kind,
            metadata: ObjectMeta { name: Some(CLUSTER_NETWORK_NAME.to_owned()), ..ObjectMeta::default() },
            network: Some(network.clone()),
            host_subnet_length: Some(host_subnet_length),
            cluster_networks: vec![ClusterNetworkEntry { cidr: network, host_subnet_length }],
            service_network: config.service_network.to_string(),
            plugin_name: Some(config.network_plugin.openshift_name()),
            vxlan_port: Some(u32::from(config.vxlan_port)),
            mtu: Some(config.mtu),
        }
    }

    /// How this object differs from `config`, field by field ("field: object's value,
    /// oxsdn's value"); empty if they agree. Fields the object leaves out (vxlanPort and
    /// mtu, optional in OpenShift) are not compared; oxsdn carries one cluster network.
    pub fn differences(&self, config: &ClusterConfig) -> Vec<String> {
        let ours = Self::of(config);
        let mut out = Vec::new();
        let mut compare = |field: &str, theirs: String, ours: String| {
            if theirs != ours {
                out.push(format!("{field}: {theirs} in the ClusterNetwork, {ours} in oxsdn's configuration"));
            }
        };
        let show = |entries: &[ClusterNetworkEntry]| {
            let all: Vec<String> = entries.iter().map(|e| format!("{}+{}", e.cidr, e.host_subnet_length)).collect();
            format!("[{}]", all.join(", "))
        };
        // OpenShift fills the old fields from the first entry; an object may have either.
        let theirs = match (&self.cluster_networks[..], &self.network, self.host_subnet_length) {
            ([], Some(cidr), Some(length)) => {
                vec![ClusterNetworkEntry { cidr: cidr.clone(), host_subnet_length: length }]
            }
            (entries, _, _) => entries.to_vec(),
        };
        compare("clusterNetworks", show(&theirs), show(&ours.cluster_networks));
        compare("serviceNetwork", self.service_network.clone(), ours.service_network);
        compare("pluginName", format!("{:?}", self.plugin_name), format!("{:?}", ours.plugin_name));
        for (field, theirs, ours) in [("vxlanPort", self.vxlan_port, ours.vxlan_port), ("mtu", self.mtu, ours.mtu)] {
            if let (Some(theirs), Some(ours)) = (theirs, ours) {
                compare(field, theirs.to_string(), ours.to_string());
            }
        }
        out
    }
}

/// A project's egress firewall, as OpenShift's API serves it; the spec is the store's.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressNetworkPolicy {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: EgressNetworkPolicySpec,
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

/// A write to the API that keeps a node's HostSubnet object equal to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostSubnetWrite {
    /// A node oxsdn allocated the subnet of, without its object.
    Create { name: String, host_ip: Ipv4Addr, subnet: Ipv4Network, node_uid: Option<String> },
    /// The node's address changed (as OpenShift's master updates it, subnet kept).
    UpdateHostIp { name: String, host_ip: Ipv4Addr },
    /// The object of a Node that is gone.
    Delete { name: String },
}

/// A write to OpenShift's objects in the API, for the caller to make.
#[derive(Clone, Debug, PartialEq)]
pub enum ApiWrite {
    NetNamespace(NetNamespaceWrite),
    HostSubnet(HostSubnetWrite),
    /// No ClusterNetwork `default`: publish oxsdn's configuration, as OpenShift's master does.
    CreateClusterNetwork(Box<ClusterNetwork>),
}
