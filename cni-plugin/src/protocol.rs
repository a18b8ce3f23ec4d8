//! What the CNI plugin and the node agent say to each other over the agent's root-only
//! Unix socket: one JSON `Request` per connection (the plugin shuts its write side down
//! after sending), answered by one JSON `Response`.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::error::CniError;
use crate::runtime_config::{Bandwidth, PortMapping};

/// Default path of the agent's socket; a network config may name another (`agentSocket`).
pub const DEFAULT_AGENT_SOCKET: &str = "/run/oxsdn/cni.sock";
/// Largest request or response either side accepts.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    /// `oxsdnctl status`: the agent's own view of its health (`AgentHealth`).
    Health,
}

/// A pod interface, as CNI identifies an attachment.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub command: Command,
    /// The attachment (ADD, DEL, CHECK).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<Attachment>,
    /// CNI_NETNS (ADD, CHECK).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// `K8S_POD_NAMESPACE`: the pod's project (ADD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    /// `K8S_POD_NAME` (ADD; informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// Name of the host-side veth the plugin created in the node's network namespace (ADD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_veth: Option<String>,
    /// GC: the attachments that must be kept; every other one is released.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub valid_attachments: Vec<Attachment>,
    /// `runtimeConfig.portMappings`, validated (ADD).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
    /// `runtimeConfig.bandwidth`, validated (ADD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<Bandwidth>,
}

impl Request {
    /// A request of `command` alone, without pod fields (STATUS, HEALTH, and the start of
    /// every other).
    pub fn of(command: Command) -> Request {
        Request {
            command,
            attachment: None,
            netns: None,
            pod_namespace: None,
            pod_name: None,
            host_veth: None,
            valid_attachments: Vec::new(),
            port_mappings: Vec::new(),
            bandwidth: None,
        }
    }
}

/// What a pod's interface must look like: the agent's answer to ADD and CHECK.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodNetwork {
    pub ip: Ipv4Addr,
    /// Prefix length of the node subnet.
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    /// `0a:58:` + the IP's bytes.
    pub mac: String,
    pub mtu: u32,
    /// Cluster network, routed on-link in the pod (pods ARP for each other directly).
    pub cluster_network: String,
    pub project: String,
    pub vnid: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// ADD and CHECK: the pod's network.
    Pod(PodNetwork),
    /// DEL, GC, STATUS.
    Done,
    Error(CniError),
    /// HEALTH.
    Health(AgentHealth),
}

/// What a running agent says of itself (`Command::Health`, for `oxsdnctl status`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentHealth {
    pub node: String,
    pub pid: u32,
    pub version: String,
    /// When this agent started, Unix time in ms.
    pub started_unix_ms: u64,
    /// Each mirror of the store (projects, nodes, services).
    pub mirrors: Vec<MirrorHealth>,
    /// Where the agent serves its metrics, if it does.
    pub metrics_address: Option<String>,
    /// Packets dropped over the last `drops_window_secs`, by rule (table, rule name).
    pub recent_drops: Vec<RecentDrops>,
    pub drops_window_secs: u64,
}

/// One mirror of the store, as the agent sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorHealth {
    pub kind: String,
    /// Its watch is open.
    pub watching: bool,
    /// When the dataplane last became equal to the store (a list, or an event applied),
    /// Unix time in ms; 0: never.
    pub last_sync_unix_ms: u64,
    /// Watches that broke and were listed again.
    pub restarts: u64,
    /// The last failure since the last success.
    pub last_error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentDrops {
    pub table: u8,
    pub rule: String,
    pub packets: u64,
}

/// `0a:58:` followed by the four bytes of `ip`, as OpenShift SDN assigns pod MACs.
pub fn pod_mac(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x0a, 0x58, o[0], o[1], o[2], o[3]]
}

pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}
