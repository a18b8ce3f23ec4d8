use crate::{
    policy::{manifest::ManifestErrors, validation::FieldErrors},
    store::StoreError,
    NetworkPlugin,
};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("invalid cluster configuration: {0}")]
    InvalidConfig(String),
    #[error("cluster is not initialised (no configuration in the store)")]
    NotInitialised,
    #[error("invalid project name {0:?}: must be a DNS-1123 label (lowercase letters, digits and '-', at most 63 characters, starting and ending with a letter or digit)")]
    InvalidProjectName(String),
    #[error("invalid node name {0:?}")]
    InvalidNodeName(String),
    #[error("project {0:?} not found")]
    UnknownProject(String),
    /// A pod's project does not exist and the node's store credentials may not create
    /// projects (only operators may).
    #[error("project {project:?} does not exist and this node may not create it: an operator creates it with `oxsdnctl create project {project}` ({reason})")]
    ProjectCreationDenied { project: String, reason: StoreError },
    #[error("node {0:?} not found")]
    UnknownNode(String),
    #[error("the default project cannot be isolated")]
    IsolateDefault,
    #[error("no free VNID in [{min}, {max}]: every VNID is in use")]
    VnidsExhausted { min: u32, max: u32 },
    #[error("no free node subnet in {0}: every subnet is allocated")]
    SubnetsExhausted(String),
    #[error("node IP {ip} is inside the {network_kind} network {network}")]
    NodeIpInPodNetwork { ip: std::net::Ipv4Addr, network_kind: &'static str, network: String },
    #[error("project {project:?} still has {}: delete its services first", services_phrase(services))]
    ProjectHasServices {
        project: String,
        /// Their names.
        services: Vec<String>,
    },
    #[error("service {name:?} not found in project {project:?}")]
    UnknownService { project: String, name: String },
    #[error("service {name:?} already exists in project {project:?}")]
    ServiceExists { project: String, name: String },
    /// A malformed service: its name, ports or endpoints (the message says which).
    #[error("invalid service: {0}")]
    InvalidService(String),
    #[error("ClusterIP {ip} is already allocated to service {service}")]
    ClusterIpInUse {
        ip: std::net::Ipv4Addr,
        /// `project/name`.
        service: String,
    },
    #[error("ClusterIP {ip} {why} the service network {network}")]
    ClusterIpOutOfRange {
        ip: std::net::Ipv4Addr,
        /// "is outside", "is the network address of", "is the broadcast address of".
        why: &'static str,
        network: String,
    },
    #[error("no free ClusterIP in {0}: every address is allocated")]
    ServiceIpsExhausted(String),
    /// The selector (quoted) and what is wrong with it.
    #[error("invalid label selector {0}")]
    InvalidSelector(String),
    #[error("record {key} is not valid: {reason}")]
    BadRecord { key: String, reason: String },
    #[error("too many concurrent updates to {0}; gave up after retrying")]
    Contention(String),
    #[error("{0}")]
    Invalid(String),
    /// An object the API server would refuse, with every field error (kubectl's form).
    #[error("The {kind} {name:?} is invalid: {errors}")]
    InvalidObject { kind: &'static str, name: String, errors: FieldErrors },
    /// Manifests with invalid documents: each with its errors. Nothing of them applies.
    #[error(transparent)]
    InvalidManifests(#[from] ManifestErrors),
    /// `oc adm pod-network` works on VNIDs, which isolate projects only in multitenant mode.
    #[error("managing pod networks is only supported for the multitenant network plugin (the cluster runs {}): `oxsdnctl set network-plugin multitenant` switches to it", .0.openshift_name())]
    NotMultitenant(NetworkPlugin),
    #[error("networkpolicy {name:?} not found in namespace {namespace:?}")]
    UnknownNetworkPolicy { namespace: String, name: String },
    #[error("egressnetworkpolicy {name:?} not found in namespace {namespace:?}")]
    UnknownEgressPolicy { namespace: String, name: String },
    /// kubectl label's refusal to change a label without --overwrite.
    #[error("'{key}' already has a value ({value}), and --overwrite is false")]
    LabelExists { key: String, value: String },
}

/// "service \"a\"" or "3 services (\"a\", \"b\", \"c\")", naming at most a few.
fn services_phrase(names: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut list: Vec<String> = names.iter().take(SHOWN).map(|n| format!("{n:?}")).collect();
    if names.len() > SHOWN {
        list.push(format!("and {} more", names.len() - SHOWN));
    }
    match names {
        [one] => format!("service {one:?}"),
        _ => format!("{} services ({})", names.len(), list.join(", ")),
    }
}
