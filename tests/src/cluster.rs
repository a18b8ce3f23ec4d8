//! `TestCluster`: an underlay bridge namespace, node namespaces with their agents, and
//! pods plugged in through the CNI binary.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{
    bins,
    cni::{CniCall, CniOutput},
    etcd::{EtcdServer, Ports, Transport},
    netns::{self, run, Netns},
    pki::ClientCert,
};

/// The underlay network between nodes (a documentation-style private range that no
/// test traffic ever leaves: it exists only inside the run's namespaces).
pub const UNDERLAY_PREFIX: &str = "172.22.122";
/// The underlay bridge's own address (where cluster services such as etcd listen), and
/// the nodes' default gateway: the underlay namespace routes to the "external" host.
pub const UNDERLAY_HOST: &str = "172.22.122.1";
/// A host outside the cluster (documentation range TEST-NET-2), reachable only through
/// the underlay namespace of the run.
pub const EXTERNAL_HOST: &str = "198.51.100.10";
const EXTERNAL_GATEWAY: &str = "198.51.100.1";
/// Loading and verifying the programs takes seconds, many more on a loaded machine
/// (several clusters of the e2e tests starting at once on two cores).
const AGENT_READY_TIMEOUT: Duration = Duration::from_secs(60);

static NEXT_CLUSTER: AtomicU32 = AtomicU32::new(0);

pub struct TestCluster {
    /// Prefix of everything this cluster creates: `oxt<pid>-<n>`.
    pub prefix: String,
    pub dir: PathBuf,
    /// How oxsdnctl reaches the store, as the operator.
    pub store: StoreArgs,
    pub bpffs: PathBuf,
    pub nodes: Vec<Node>,
    /// The cluster's etcd, if it runs on etcd (listening on the underlay bridge).
    pub etcd: Option<EtcdServer>,
    /// A host outside the cluster, at `EXTERNAL_HOST`.
    pub external: Netns,
    /// Dropped last: the namespace etcd lives in.
    pub underlay: Netns,
    /// Extra arguments of every agent started from now on; `{NODE_IP}` is replaced by
    /// the node's address.
    pub agent_args: Vec<String>,
}

/// Store options of `oxsdn-agent` and `oxsdnctl`: a file store directory, or etcd and,
/// if it serves TLS, the certificate of the etcd user to be.
#[derive(Clone, Debug)]
pub enum StoreArgs {
    File(PathBuf),
    Etcd { endpoint: String, cert: Option<ClientCert> },
}

impl StoreArgs {
    pub fn args(&self) -> Vec<std::ffi::OsString> {
        match self {
            StoreArgs::File(dir) => vec!["--store".into(), dir.into()],
            StoreArgs::Etcd { endpoint, cert } => {
                let mut args = vec!["--etcd-endpoints".into(), endpoint.into()];
                args.extend(cert.iter().flat_map(ClientCert::args));
                args
            }
        }
    }
}

/// The etcd users of the operator and of each node's agent (`oxsdnctl store setup-auth`
/// creates them), and etcd's superuser.
pub const OPERATOR_USER: &str = "oxsdn-operator";
pub const ROOT_USER: &str = "root";
pub fn node_user(node: &str) -> String {
    format!("oxsdn-node-{node}")
}

pub struct Node {
    pub name: String,
    pub ip: Ipv4Addr,
    pub netns: Netns,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub conf_dir: PathBuf,
    pub log: PathBuf,
    /// The agent's: on etcd, the node's own etcd user, which may not create projects.
    pub store: StoreArgs,
    /// The operator's, when the agent's may not create projects: `add_pod` creates the
    /// pod's project first, as an operator does for a new namespace.
    project_creator: Option<StoreArgs>,
    bpffs: PathBuf,
    prefix: String,
    agent: Option<Child>,
    /// Further options of the node's agent, from its next start.
    pub agent_args: Vec<String>,
}

pub struct Pod {
    pub name: String,
    /// The node it runs on.
    pub node: String,
    pub project: String,
    pub container_id: String,
    pub ifname: String,
    pub ip: Ipv4Addr,
    pub mac: String,
    pub netns: Netns,
    /// The CNI result JSON of ADD.
    pub result: Value,
}

impl TestCluster {
    /// A cluster on the embedded file store with an initialised configuration
    /// (`oxsdnctl init` with default settings plus `init_args`) and an underlay bridge,
    /// but no nodes yet.
    pub fn new(init_args: &[&str]) -> Result<TestCluster> {
        Self::create(init_args, false)
    }

    /// The same on a real etcd, started in the underlay namespace, as a cluster should
    /// run it: agents and oxsdnctl reach it over the underlay with TLS and client
    /// certificates, and etcd's auth is on (`oxsdnctl store setup-auth`): oxsdnctl runs as
    /// the operator, each agent as its node's user.
    pub fn with_etcd(init_args: &[&str]) -> Result<TestCluster> {
        Self::create(init_args, true)
    }

    fn create(init_args: &[&str], etcd: bool) -> Result<TestCluster> {
        netns::sweep_dead_runs();
        sweep_dead_dirs();
        let prefix = format!("oxt{}-{}", std::process::id(), NEXT_CLUSTER.fetch_add(1, Ordering::SeqCst));
        let dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&dir)?;
        let bpffs = PathBuf::from("/sys/fs/bpf").join(&prefix);
        let underlay = Netns::create(&format!("{prefix}-underlay"))?;
        underlay.ip(&["link", "add", "br0", "type", "bridge"])?;
        underlay.ip(&["addr", "add", &format!("{UNDERLAY_HOST}/24"), "dev", "br0"])?;
        underlay.ip(&["link", "set", "br0", "up"])?;
        let external = Netns::create(&format!("{prefix}-external"))?;
        underlay.ip(&["link", "add", "ext0", "type", "veth", "peer", "name", "eth0", "netns", &external.name])?;
        underlay.ip(&["addr", "add", &format!("{EXTERNAL_GATEWAY}/24"), "dev", "ext0"])?;
        underlay.ip(&["link", "set", "ext0", "up"])?;
        run(underlay.command("sysctl").args(["-qw", "net.ipv4.ip_forward=1"]))?;
        external.ip(&["addr", "add", &format!("{EXTERNAL_HOST}/24"), "dev", "eth0"])?;
        external.ip(&["link", "set", "eth0", "up"])?;
        external.ip(&["route", "add", "default", "via", EXTERNAL_GATEWAY])?;
        let mut cluster = TestCluster {
            store: StoreArgs::File(dir.join("store")),
            prefix,
            dir,
            bpffs,
            underlay,
            external,
            nodes: Vec::new(),
            etcd: None,
            agent_args: Vec::new(),
        };
        if etcd {
            let ports = Ports { ip: UNDERLAY_HOST.parse()?, client: 2379, peer: 2380, metrics: 2381 };
            cluster.etcd =
                Some(EtcdServer::start(&cluster.dir.join("etcd"), ports, Some(&cluster.underlay), Transport::Tls)?);
            cluster.oxsdnctl_as(&cluster.etcd_user(ROOT_USER)?, &["store", "setup-auth"])?;
            cluster.store = cluster.etcd_user(OPERATOR_USER)?;
        }
        cluster.oxsdnctl(&[&["init"], init_args].concat())?;
        Ok(cluster)
    }

    /// Store options for etcd user `user`, with a new certificate from etcd's CA.
    pub fn etcd_user(&self, user: &str) -> Result<StoreArgs> {
        let etcd = self.etcd.as_ref().context("the cluster does not run on etcd")?;
        Ok(StoreArgs::Etcd { endpoint: etcd.endpoint(), cert: Some(etcd.client_cert(user)?) })
    }

    /// `oxsdnctl <store> <args>`, run on the underlay (where etcd is); stdout on success.
    pub fn oxsdnctl_as(&self, store: &StoreArgs, args: &[&str]) -> Result<String> {
        run(self.underlay.command(bins::oxsdnctl()).args(store.args()).args(args))
    }

    /// `oxsdnctl <store args> <args>`, run on the underlay (where etcd is); stdout on
    /// success.
    pub fn oxsdnctl(&self, args: &[&str]) -> Result<String> {
        self.oxsdnctl_as(&self.store, args)
    }

    /// `oxsdn-store-hammer <store> <args>` (raw counter increments), run on the underlay
    /// like `oxsdnctl_as`; stdout on success.
    pub fn store_hammer_as(&self, store: &StoreArgs, args: &[&str]) -> Result<String> {
        run(self.underlay.command(bins::store_hammer()).args(store.args()).args(args))
    }

    /// Every project's VNID (`oxsdnctl get netnamespaces -o json`), by name.
    pub fn netids(&self) -> Result<Vec<(String, u32)>> {
        let list: Value = serde_json::from_str(&self.oxsdnctl(&["get", "netnamespaces", "-o", "json"])?)?;
        list.as_array()
            .context("netnamespaces JSON is not a list")?
            .iter()
            .map(|ns| {
                let name = ns["name"].as_str().context("netnamespace without name")?;
                let netid = ns["netid"].as_u64().context("netnamespace without netid")?;
                Ok((name.to_string(), u32::try_from(netid)?))
            })
            .collect()
    }

    /// The VNID of `project`.
    pub fn netid(&self, project: &str) -> Result<u32> {
        self.netids()?
            .into_iter()
            .find(|(n, _)| n == project)
            .map(|(_, v)| v)
            .with_context(|| format!("no project {project}"))
    }

    /// The ClusterIP of service `name` in `project`.
    pub fn service_ip(&self, project: &str, name: &str) -> Result<Ipv4Addr> {
        let list: Value = serde_json::from_str(&self.oxsdnctl(&["get", "services", "-n", project, "-o", "json"])?)?;
        let ip = list
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == name))
            .and_then(|s| s["clusterIp"].as_str())
            .with_context(|| format!("no service {project}/{name}"))?;
        Ok(ip.parse()?)
    }

    /// Adds a node namespace wired to the underlay and starts its agent; on etcd, as the
    /// node's own etcd user, which etcd's root user sets up first.
    pub fn add_node(&mut self, name: &str) -> Result<&mut Node> {
        let (store, project_creator) = match &self.etcd {
            Some(_) => {
                self.oxsdnctl_as(&self.etcd_user(ROOT_USER)?, &["store", "setup-auth", "--node", name])?;
                (self.etcd_user(&node_user(name))?, Some(self.store.clone()))
            }
            None => (self.store.clone(), None),
        };
        let index = self.nodes.len() + 1;
        let ip: Ipv4Addr = format!("{UNDERLAY_PREFIX}.{}", 10 + index).parse()?;
        let netns = Netns::create(&format!("{}-{name}", self.prefix))?;
        let port = format!("p{index}");
        self.underlay.ip(&["link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &netns.name])?;
        self.underlay.ip(&["link", "set", &port, "master", "br0", "up"])?;
        netns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        netns.ip(&["link", "set", "eth0", "up"])?;
        netns.ip(&["route", "add", "default", "via", UNDERLAY_HOST])?;
        let node_dir = self.dir.join(name);
        let mut node = Node {
            name: name.to_string(),
            ip,
            netns,
            socket: node_dir.join("run/cni.sock"),
            state_dir: node_dir.join("state"),
            conf_dir: node_dir.join("net.d"),
            log: node_dir.join("agent.log"),
            store,
            project_creator,
            bpffs: self.bpffs.clone(),
            prefix: self.prefix.clone(),
            agent: None,
            agent_args: self.agent_args.iter().map(|a| a.replace("{NODE_IP}", &ip.to_string())).collect(),
        };
        std::fs::create_dir_all(&node_dir)?;
        node.start_agent()?;
        self.nodes.push(node);
        Ok(self.nodes.last_mut().expect("just pushed"))
    }

    pub fn node(&self, name: &str) -> &Node {
        self.nodes.iter().find(|n| n.name == name).expect("no such node")
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.stop_agent();
        }
        self.nodes.clear();
        if let Some(etcd) = &mut self.etcd {
            etcd.stop();
        }
        let _ = std::fs::remove_dir_all(&self.bpffs);
        if std::env::var_os("OXSDN_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A pod for every kind of path from pod `a`: on two nodes, `a` and `b` of project
/// red and `c` of blue on node1, `d` of red on node2. The pods go before the cluster.
pub struct PathPods {
    pub a: Pod,
    pub b: Pod,
    pub c: Pod,
    pub d: Pod,
    pub cluster: TestCluster,
}

impl PathPods {
    pub fn new() -> Result<PathPods> {
        let mut cluster = TestCluster::new(&[])?;
        cluster.add_node("node1")?;
        cluster.add_node("node2")?;
        let (n1, n2) = (&cluster.nodes[0], &cluster.nodes[1]);
        let (a, b, c, d) =
            (n1.add_pod("red", "a")?, n1.add_pod("red", "b")?, n1.add_pod("blue", "c")?, n2.add_pod("red", "d")?);
        Ok(PathPods { a, b, c, d, cluster })
    }
}

/// Removes temporary and bpffs directories of runs whose process is gone.
fn sweep_dead_dirs() {
    for base in [std::env::temp_dir(), PathBuf::from("/sys/fs/bpf")] {
        let Ok(entries) = std::fs::read_dir(&base) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix("oxt").and_then(|r| r.split('-').next()) else { continue };
            if pid.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

impl Node {
    pub fn start_agent(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let conf = self.conf_dir.join("80-oxsdn.conflist");
        // A crashed agent leaves its config behind; readiness is the new agent's config.
        let _ = std::fs::remove_file(&conf);
        let child = self
            .netns
            .command(bins::agent())
            .args(["--node-name", &self.name, "--node-ip", &self.ip.to_string()])
            .args(self.store.args())
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--bpffs-dir")
            .arg(&self.bpffs)
            .arg("--cni-conf-dir")
            .arg(&self.conf_dir)
            .args(&self.agent_args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting oxsdn-agent")?;
        self.agent = Some(child);
        let start = Instant::now();
        while !conf.exists() {
            if let Some(status) = self.agent.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.agent = None;
                bail!("agent of {} exited ({status}) before it was ready:\n{}", self.name, self.log_text());
            }
            if start.elapsed() > AGENT_READY_TIMEOUT {
                bail!("agent of {} not ready after {AGENT_READY_TIMEOUT:?}:\n{}", self.name, self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// `oxsdn-agent --teardown` for this node (uninstall), with its output on success.
    pub fn teardown(&self) -> Result<String> {
        run(self
            .netns
            .command(bins::agent())
            .args(["--teardown", "--node-name", &self.name])
            .arg("--socket")
            .arg(&self.socket)
            .arg("--bpffs-dir")
            .arg(&self.bpffs)
            .arg("--cni-conf-dir")
            .arg(&self.conf_dir))
    }

    /// Stops the agent with SIGTERM (clean shutdown) and waits for it.
    pub fn stop_agent(&mut self) {
        self.signal_agent(nix::sys::signal::Signal::SIGTERM);
    }

    /// Kills the agent with SIGKILL, as a crash would.
    pub fn kill_agent(&mut self) {
        self.signal_agent(nix::sys::signal::Signal::SIGKILL);
    }

    /// The running agent's process id.
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(|c| c.id())
    }

    /// Sends `signal` to the agent and waits for it to exit (SIGKILL: a crash;
    /// SIGTERM: the clean stop of an upgrade).
    pub fn signal_agent(&mut self, signal: nix::sys::signal::Signal) {
        if let Some(mut child) = self.agent.take() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal);
            let _ = child.wait();
        }
    }

    /// The node's bpffs directory (its pinned maps, and its links under `links/`).
    pub fn pin_dir(&self) -> PathBuf {
        self.bpffs.join(&self.name)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The network config a runtime would pass the plugin, from the conflist the agent
    /// wrote (the runtime adds `cniVersion` and `name` to each plugin's entry).
    pub fn network_config(&self) -> Result<Value> {
        let path = self.conf_dir.join("80-oxsdn.conflist");
        let list: Value =
            serde_json::from_slice(&std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?)?;
        let mut conf = list["plugins"][0].clone();
        conf["cniVersion"] = list["cniVersion"].clone();
        conf["name"] = list["name"].clone();
        Ok(conf)
    }

    /// Runs the CNI plugin binary in this node's namespace.
    pub fn cni(&self, call: &CniCall) -> CniOutput {
        call.invoke(&self.netns)
    }

    /// A pod of `project`: its own namespace, plugged in with CNI ADD.
    pub fn add_pod(&self, project: &str, name: &str) -> Result<Pod> {
        self.add_pod_with(project, name, None)
    }

    /// A pod whose runtime passes `runtime_config` (the capabilities' `runtimeConfig`:
    /// `portMappings`, `bandwidth`), as libcni does for the capabilities the conflist
    /// declares.
    pub fn add_pod_with(&self, project: &str, name: &str, runtime_config: Option<Value>) -> Result<Pod> {
        if let Some(operator) = &self.project_creator {
            run(self.netns.command(bins::oxsdnctl()).args(operator.args()).args(["create", "project", project]))?;
        }
        let netns = Netns::create(&format!("{}-{}-{name}", self.prefix, self.name))?;
        let container_id = format!("{}-{}-{name}", self.prefix, self.name);
        let mut config = self.network_config()?;
        if let Some(runtime_config) = runtime_config {
            config["runtimeConfig"] = runtime_config;
        }
        let call = CniCall::add(&config, &container_id, &netns.path(), project, name);
        let out = self.cni(&call);
        let result = out.success().with_context(|| format!("CNI ADD of pod {name}"))?;
        let ip: Ipv4Addr = result["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .context("no address in the CNI result")?
            .parse()?;
        let mac = result["interfaces"][0]["mac"].as_str().unwrap_or_default().to_string();
        Ok(Pod {
            name: name.into(),
            node: self.name.clone(),
            project: project.into(),
            container_id,
            ifname: "eth0".into(),
            ip,
            mac,
            netns,
            result,
        })
    }

    /// CNI DEL of a pod; its namespace stays until the `Pod` is dropped.
    pub fn del_pod(&self, pod: &Pod) -> Result<()> {
        let call = CniCall::del(&self.network_config()?, &pod.container_id, Some(&pod.netns.path()));
        self.cni(&call).success().map(|_| ())
    }

    /// `oxsdnctl dump-flows` for this node, as printed.
    pub fn dump_flows_text(&self) -> Result<String> {
        run(self
            .netns
            .command(bins::oxsdnctl())
            .args(["dump-flows", "--node", &self.name])
            .arg("--bpffs-dir")
            .arg(&self.bpffs))
    }

    /// `oxsdnctl dump-flows` for this node, parsed.
    pub fn dump_flows(&self) -> Result<Vec<crate::flows::FlowLine>> {
        crate::flows::parse(&self.dump_flows_text()?)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `oxsdnctl <args>` in this node's namespace, with the agent's store options; its
    /// output whether it succeeded or not.
    pub fn oxsdnctl_output(&self, args: &[&str]) -> Result<std::process::Output> {
        Ok(self.netns.command(bins::oxsdnctl()).args(self.store.args()).args(args).output()?)
    }

    /// The node options of `oxsdnctl status` and `monitor`: the node and its pins.
    pub fn node_args(&self) -> Vec<String> {
        vec!["--node".into(), self.name.clone(), "--bpffs-dir".into(), self.bpffs.display().to_string()]
    }

    /// `oxsdnctl status` on this node: whether it succeeded, and its report (JSON).
    pub fn status(&self) -> Result<(bool, Value)> {
        let mut args = vec!["status".to_string()];
        args.extend(self.node_args());
        args.extend(["--socket".into(), self.socket.display().to_string()]);
        args.extend(["--cni-conf-dir".into(), self.conf_dir.display().to_string(), "-o".into(), "json".into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.oxsdnctl_output(&args)?;
        let report: Value = serde_json::from_slice(&out.stdout).with_context(|| format!("{out:?}"))?;
        Ok((out.status.success(), report))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop_agent();
    }
}
