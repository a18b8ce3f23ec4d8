//! The node's record of its pods, kept in a file so a restarted agent knows what it
//! plugged in (OpenShift kept this in OVSDB `external_ids`; losing it killed pods).

use std::{
    collections::BTreeMap,
    io::Write,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use oxsdn_cni::{
    env::{validate_container_id, validate_ifname},
    naming::host_veth_name,
    protocol::Attachment,
    runtime_config::{Bandwidth, PortMapping},
};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRecord {
    pub container_id: String,
    pub ifname: String,
    pub netns: String,
    pub project: String,
    /// The project's stable id (the dataplane's key for its VNID).
    pub project_id: u32,
    #[serde(default)]
    pub pod_name: String,
    pub host_veth: String,
    pub ifindex: u32,
    pub ip: Ipv4Addr,
    /// The runtime's `portMappings`: host ports to this pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
    /// The runtime's `bandwidth`: the pod's rate limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<Bandwidth>,
}

impl PodRecord {
    pub fn attachment(&self) -> Attachment {
        Attachment { container_id: self.container_id.clone(), ifname: self.ifname.clone() }
    }

    /// Whether this is a record the agent can have written: a valid attachment and,
    /// as its host veth, the one name the plugin gives that attachment's veth. Anything
    /// else (a hand-edited or corrupted file naming tun0, eth0 or a path) must never
    /// reach the links, pins and maps the agent derives from it.
    pub fn validate(&self) -> Result<(), String> {
        validate_container_id(&self.container_id).map_err(|e| e.msg)?;
        validate_ifname(&self.ifname).map_err(|e| e.msg)?;
        let veth = host_veth_name(&self.container_id, &self.ifname);
        if self.host_veth != veth {
            return Err(format!("its host veth is {:?}, not {veth}", self.host_veth));
        }
        Ok(())
    }
}

#[derive(Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodFile {
    /// The last address handed out, so allocation continues after it (host-local style).
    last_ip: Option<Ipv4Addr>,
    pods: Vec<PodRecord>,
}

/// Pod records keyed by attachment. Changes happen in memory and count up a generation;
/// `snapshot` then `Snapshot::save` put a generation on disk atomically (write, fsync,
/// rename), so one save can carry the changes of several requests.
pub struct PodTable {
    path: PathBuf,
    pods: BTreeMap<(String, String), PodRecord>,
    pub last_ip: Option<Ipv4Addr>,
    generation: u64,
}

/// The table's content at one generation, ready to be written.
pub struct Snapshot {
    path: PathBuf,
    bytes: Vec<u8>,
    pub generation: u64,
}

fn key(a: &Attachment) -> (String, String) {
    (a.container_id.clone(), a.ifname.clone())
}

impl PodTable {
    pub fn load(path: &Path) -> Result<Self> {
        let file: PodFile = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not a valid pod table", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => PodFile::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let recorded = file.pods.len();
        let pods: BTreeMap<_, _> = file
            .pods
            .into_iter()
            .filter(|p| match p.validate() {
                Ok(()) => true,
                Err(why) => {
                    tracing::error!(pod = %p.container_id, ifname = %p.ifname, "{}: ignoring an invalid pod record: {why}", path.display());
                    false
                }
            })
            .map(|p| (key(&p.attachment()), p))
            .collect();
        // Records left out make a generation to save: the file then holds what the agent does.
        let generation = u64::from(pods.len() != recorded);
        Ok(PodTable { path: path.to_path_buf(), pods, last_ip: file.last_ip, generation })
    }

    pub fn get(&self, a: &Attachment) -> Option<&PodRecord> {
        self.pods.get(&key(a))
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn iter(&self) -> impl Iterator<Item = &PodRecord> {
        self.pods.values()
    }

    /// Records a pod; returns the generation that holds it.
    pub fn insert(&mut self, record: PodRecord) -> u64 {
        self.pods.insert(key(&record.attachment()), record);
        self.changed()
    }

    /// Forgets a pod; returns the generation without it.
    pub fn remove(&mut self, a: &Attachment) -> u64 {
        if self.pods.remove(&key(a)).is_some() {
            self.changed();
        }
        self.generation
    }

    fn changed(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    pub fn snapshot(&self) -> Result<Snapshot> {
        let file = PodFile { last_ip: self.last_ip, pods: self.pods.values().cloned().collect() };
        Ok(Snapshot { path: self.path.clone(), bytes: serde_json::to_vec_pretty(&file)?, generation: self.generation })
    }
}

impl Snapshot {
    pub fn save(&self) -> Result<()> {
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(&self.bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path).with_context(|| format!("replacing {}", self.path.display()))?;
        Ok(())
    }
}
