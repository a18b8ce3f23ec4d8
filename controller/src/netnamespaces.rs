//! NetNamespaces: one per project, carrying its VNID (NETID).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetNamespace {
    /// The project (Kubernetes namespace) name, a DNS-1123 label.
    pub name: String,
    /// The VNID: 0 for global projects, otherwise in [10, 2^24-1].
    pub netid: u32,
    /// Stable, never reused number of this project, assigned at creation. Nodes key
    /// their dataplane state by it, so a VNID change is one update per project.
    pub id: u32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}
