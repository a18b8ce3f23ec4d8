//! containerd (Debian's 1.6, with runc) inside a test node's network namespace, driven
//! through its CRI plugin the way kubelet drives it: RunPodSandbox with the pod's
//! namespace and name (which containerd hands the CNI plugin as `K8S_POD_NAMESPACE` and
//! `K8S_POD_NAME`), CreateContainer/StartContainer, StopPodSandbox (CNI DEL),
//! RemovePodSandbox.
//!
//! Everything containerd keeps is under the test's directory: its root and state, its
//! socket, runc's state, the pods' network namespaces (`netns_mounts_under_state_dir`),
//! its CNI plugin directory; its CNI config directory is the node agent's. The images
//! are built here and imported with `ctr`: no registry is used.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use hyper_util::rt::TokioIo;
pub use k8s_cri::v1::PortMapping;
use k8s_cri::v1::{
    runtime_service_client::RuntimeServiceClient, ContainerConfig, ContainerMetadata, CreateContainerRequest,
    ExecSyncRequest, ImageSpec, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, ListPodSandboxRequest,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StatusRequest, StopContainerRequest,
    StopPodSandboxRequest,
};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::{
    netns::run,
    runtime::{
        busybox_image_archive, cni_bin_dir, kill_processes_naming, remove_cgroup, remove_cni_cache_entries, stop_child,
        unmount_below, wait_until,
    },
    Node,
};

/// The image of every pod sandbox ("pause") and container, imported before the first pod.
pub const IMAGE: &str = "localhost/oxsdn-test/busybox:1";
/// The containerd namespace of the CRI plugin.
const CRI_NAMESPACE: &str = "k8s.io";
/// How long containerd may take to serve CRI with its network ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// A bound on every CRI call (RunPodSandbox includes CNI ADD, StopPodSandbox CNI DEL).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// What kubelet gives a container to stop before it is killed (seconds).
const STOP_TIMEOUT_SECS: i64 = 2;

/// A pod sandbox as containerd reports it.
#[derive(Clone, Debug)]
pub struct CriPod {
    pub id: String,
    pub namespace: String,
    pub name: String,
    /// The pod IP containerd got from the CNI result.
    pub ip: String,
}

pub struct Containerd {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    /// The pods' cgroup parent (kubelet's `/kubepods/…`), one per run.
    cgroup_parent: String,
    child: Option<Child>,
    tokio: tokio::runtime::Runtime,
    cri: RuntimeServiceClient<Channel>,
}

impl Containerd {
    /// Starts containerd in `node`'s network namespace, with its state in `dir` and the
    /// node agent's CNI config directory, and imports the test image.
    pub fn start(node: &Node, dir: &Path) -> Result<Containerd> {
        fs::create_dir_all(dir)?;
        let bin_dir = cni_bin_dir(&dir.join("cni-bin"))?;
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        fs::write(&config, config_toml(dir, &socket, &bin_dir, &node.conf_dir))?;
        let log = dir.join("containerd.log");
        let child = node
            .netns
            .command("containerd")
            .arg("--config")
            .arg(&config)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log)?)
            .spawn()
            .context("starting containerd (installed by scripts/setup.sh)")?;
        let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        // Built before containerd serves, so that dropping it stops containerd whatever
        // happens next.
        let containerd = Containerd {
            cri: RuntimeServiceClient::new(lazy_channel(&tokio, &socket)),
            dir: dir.to_path_buf(),
            cgroup_parent: format!("/{}-pods", node.prefix()),
            socket,
            log,
            child: Some(child),
            tokio,
        };
        containerd.wait_network_ready()?;
        containerd.import_image()?;
        Ok(containerd)
    }

    /// Waits until containerd serves CRI and reports its network ready (it loaded the
    /// agent's conflist).
    pub fn wait_network_ready(&self) -> Result<()> {
        let mut last = String::new();
        let ready = wait_until(READY_TIMEOUT, "containerd's CRI network ready", || {
            match self.tokio.block_on(self.cri.clone().status(StatusRequest { verbose: false })) {
                Ok(status) => {
                    let conditions = status.into_inner().status.map(|s| s.conditions).unwrap_or_default();
                    last = format!("{conditions:?}");
                    conditions.iter().any(|c| c.r#type == "NetworkReady" && c.status)
                }
                Err(e) => {
                    last = e.to_string();
                    false
                }
            }
        });
        ready.with_context(|| format!("last status: {last}\n{}", self.log_tail()))
    }

    fn import_image(&self) -> Result<()> {
        let archive = busybox_image_archive(&self.dir.join("image"), IMAGE)?;
        run(Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", CRI_NAMESPACE, "images", "import"])
            .arg(&archive))
        .context("importing the test image")?;
        Ok(())
    }

    /// RunPodSandbox, as kubelet sends it for pod `namespace/name`, then its status.
    pub fn run_pod(&self, namespace: &str, name: &str) -> Result<CriPod> {
        self.run_pod_with(namespace, name, Vec::new(), HashMap::new())
    }

    /// RunPodSandbox of a pod with host ports (its containers' `hostPort`s, as kubelet
    /// gathers them) and annotations (`kubernetes.io/egress-bandwidth` and the like),
    /// which containerd hands the CNI plugin as the `portMappings` and `bandwidth`
    /// capabilities.
    pub fn run_pod_with(
        &self,
        namespace: &str,
        name: &str,
        port_mappings: Vec<PortMapping>,
        annotations: HashMap<String, String>,
    ) -> Result<CriPod> {
        let mut config = self.sandbox_config(namespace, name);
        config.port_mappings = port_mappings;
        config.annotations = annotations;
        let id = self
            .call(
                self.cri
                    .clone()
                    .run_pod_sandbox(RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() }),
            )
            .with_context(|| format!("RunPodSandbox {namespace}/{name}"))?
            .pod_sandbox_id;
        self.pod(&id)
    }

    /// The sandbox's metadata and IP, from PodSandboxStatus.
    pub fn pod(&self, id: &str) -> Result<CriPod> {
        let request = PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: false };
        let status = self
            .call(self.cri.clone().pod_sandbox_status(request))?
            .status
            .context("PodSandboxStatus without status")?;
        let metadata = status.metadata.context("sandbox without metadata")?;
        Ok(CriPod {
            id: id.into(),
            namespace: metadata.namespace,
            name: metadata.name,
            ip: status.network.map(|n| n.ip).unwrap_or_default(),
        })
    }

    /// CreateContainer and StartContainer of `command` (busybox applets) in `pod`, as
    /// kubelet does for each container of a pod; returns the container id.
    pub fn start_container(&self, pod: &CriPod, name: &str, command: &[&str]) -> Result<String> {
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata { name: name.into(), attempt: 0 }),
            image: Some(ImageSpec { image: IMAGE.into(), ..Default::default() }),
            command: command.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}/0.log"),
            ..Default::default()
        };
        let request = CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(config),
            sandbox_config: Some(self.sandbox_config(&pod.namespace, &pod.name)),
        };
        let id = self
            .call(self.cri.clone().create_container(request))
            .with_context(|| format!("CreateContainer {name}"))?
            .container_id;
        self.call(self.cri.clone().start_container(StartContainerRequest { container_id: id.clone() }))
            .with_context(|| format!("StartContainer {name}"))?;
        Ok(id)
    }

    /// ExecSync of `command` in a container: its exit code and output.
    pub fn exec(&self, container: &str, command: &[&str]) -> Result<(i32, String)> {
        let request = ExecSyncRequest {
            container_id: container.into(),
            cmd: command.iter().map(|s| s.to_string()).collect(),
            timeout: 10,
        };
        let out = self.call(self.cri.clone().exec_sync(request))?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        Ok((out.exit_code, text))
    }

    pub fn stop_container(&self, container: &str) -> Result<()> {
        self.call(
            self.cri
                .clone()
                .stop_container(StopContainerRequest { container_id: container.into(), timeout: STOP_TIMEOUT_SECS }),
        )
        .map(|_| ())
    }

    /// StopPodSandbox: stops the sandbox's containers and tears its network down (CNI
    /// DEL).
    pub fn stop_pod(&self, pod: &CriPod) -> Result<()> {
        self.call(self.cri.clone().stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod.id.clone() }))
            .with_context(|| format!("StopPodSandbox {}/{}", pod.namespace, pod.name))
            .map(|_| ())
    }

    /// RemovePodSandbox (kubelet's garbage collection of a stopped pod).
    pub fn remove_pod(&self, pod: &CriPod) -> Result<()> {
        self.call(self.cri.clone().remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod.id.clone() }))
            .with_context(|| format!("RemovePodSandbox {}/{}", pod.namespace, pod.name))
            .map(|_| ())
    }

    /// The ids of the sandboxes containerd knows.
    pub fn pod_ids(&self) -> Result<Vec<String>> {
        Ok(self
            .call(self.cri.clone().list_pod_sandbox(ListPodSandboxRequest { filter: None }))?
            .items
            .into_iter()
            .map(|s| s.id)
            .collect())
    }

    /// The last lines of containerd's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!("containerd log (tail):\n{}", lines[lines.len().saturating_sub(20)..].join("\n"))
    }

    /// What kubelet sends for pod `namespace/name`: metadata (the CNI plugin's project
    /// and pod name), labels, a log directory, and pod-level namespaces.
    fn sandbox_config(&self, namespace: &str, name: &str) -> PodSandboxConfig {
        let uid = format!("{namespace}-{name}-uid");
        let labels = HashMap::from([
            ("io.kubernetes.pod.name".to_string(), name.to_string()),
            ("io.kubernetes.pod.namespace".to_string(), namespace.to_string()),
            ("io.kubernetes.pod.uid".to_string(), uid.clone()),
        ]);
        let pod_namespaces = NamespaceOption {
            network: NamespaceMode::Pod.into(),
            pid: NamespaceMode::Container.into(),
            ipc: NamespaceMode::Pod.into(),
            ..Default::default()
        };
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: uid.clone(),
                namespace: namespace.into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: self.dir.join("pods").join(format!("{namespace}_{name}_{uid}")).display().to_string(),
            labels,
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.clone(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(pod_namespaces),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn call<T>(
        &self,
        request: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T> {
        // The timer must be made inside the runtime.
        match self.tokio.block_on(async { tokio::time::timeout(CALL_TIMEOUT, request).await }) {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => bail!("{:?}: {}", status.code(), status.message()),
            Err(_) => bail!("no answer within {CALL_TIMEOUT:?}\n{}", self.log_tail()),
        }
    }
}

impl Drop for Containerd {
    /// Stops and removes every sandbox through CRI (which runs CNI DEL while the agent
    /// still runs), stops containerd, then ends what outlives it: its shims and their
    /// containers (all started with this test's directory in their arguments), the
    /// mounts below its directory, its pods' cgroups and what a failed DEL left in the
    /// CNI cache.
    fn drop(&mut self) {
        let sandboxes = self.pod_ids().unwrap_or_default();
        for id in &sandboxes {
            let _ = self.call(self.cri.clone().stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id.clone() }));
            let _ =
                self.call(self.cri.clone().remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id.clone() }));
        }
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child);
        }
        let runc_root = self.dir.join("runc").join(CRI_NAMESPACE);
        if let Ok(entries) = fs::read_dir(&runc_root) {
            for container in entries.flatten() {
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(&runc_root)
                    .args(["delete", "--force"])
                    .arg(container.file_name())
                    .output();
            }
        }
        kill_processes_naming(&self.dir);
        unmount_below(&self.dir);
        remove_cgroup(&self.cgroup_parent);
        remove_cni_cache_entries(&sandboxes);
    }
}

/// A channel to containerd's socket that connects on first use (and again after a
/// failure).
fn lazy_channel(tokio: &tokio::runtime::Runtime, socket: &Path) -> Channel {
    let socket = socket.to_path_buf();
    let connector = tower::service_fn(move |_: Uri| {
        let socket = socket.clone();
        async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(socket).await?)) }
    });
    // The channel's worker task needs the runtime; the URI is unused: the connector
    // dials the socket.
    let _runtime = tokio.enter();
    Endpoint::from_static("http://containerd.invalid").timeout(CALL_TIMEOUT).connect_with_connector_lazy(connector)
}

/// containerd's configuration: every path in `dir`, no snapshotter or plugin that
/// touches the host beyond it, the CRI plugin with the agent's CNI config directory and
/// a plugin directory of `oxsdn` and `loopback`, the local image as sandbox image.
fn config_toml(dir: &Path, socket: &Path, cni_bin_dir: &Path, cni_conf_dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  netns_mounts_under_state_dir = true
  # Sandboxes ask for oom_score_adj -998, below what this process may set: clamp.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bin}"
    conf_dir = "{conf}"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{d}/runc"
"#,
        socket = socket.display(),
        bin = cni_bin_dir.display(),
        conf = cni_conf_dir.display(),
    )
}
