//! `oxsdnctl`: the operator's command line, after `oc adm pod-network` and `oc get`.

mod monitor;
mod output;
mod packet_trace;
mod status;

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use ipnetwork::Ipv4Network;
use oxsdn_controller::{
    cluster::LabelTarget,
    egress_ip::{NodeEgress, ProjectEgressIps},
    netnamespaces::DEFAULT_PROJECT,
    policy::manifest::{self, Object, MAX_MANIFEST_BYTES},
    store::{self, EtcdStore, Store, StoreBackend, StoreOptions},
    Cluster, ClusterConfig, Error, NetworkPlugin, Protocol, ServicePort,
};

use oxsdn_dataplane::{flows, maps::NodeMaps, prefilter};

use crate::output::{
    print_cluster_network, print_egress_policies, print_hostsubnets, print_namespaces, print_netnamespaces,
    print_network_policies, print_pods, print_services, Format,
};
use crate::output::{print_hostsubnet_views, print_netnamespace_views, HostSubnetView, NetNamespaceView};

#[derive(Debug, Parser)]
#[command(name = "oxsdnctl", version, about = "Manage an oxsdn pod network")]
struct Cli {
    #[command(flatten)]
    store: StoreOptions,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Store the cluster network configuration. Done once: running it again with the
    /// same values is a no-op, with other values an error.
    Init(InitArgs),
    /// Join, isolate or globalise project networks (oc adm pod-network).
    #[command(subcommand)]
    PodNetwork(PodNetworkCommand),
    /// Create a project or a service.
    #[command(subcommand)]
    Create(CreateCommand),
    /// Create or update the objects of Kubernetes manifests (kubectl apply -f):
    /// NetworkPolicy (networking.k8s.io/v1), EgressNetworkPolicy (network.openshift.io/v1),
    /// Namespace and Pod (v1), in YAML or JSON,
    /// several documents or a List. All or nothing: one invalid object and nothing is
    /// applied.
    Apply(ApplyArgs),
    /// Delete the objects of manifests (-f), a project, a service, a NetworkPolicy or an
    /// EgressNetworkPolicy.
    Delete(DeleteArgs),
    /// Change the network plugin, or a service's ports or endpoints (oc set).
    #[command(subcommand)]
    Set(SetCommand),
    /// List NetNamespaces, HostSubnets, Services, the ClusterNetwork, NetworkPolicies,
    /// EgressNetworkPolicies, namespaces or pods (oc get).
    #[command(subcommand)]
    Get(GetCommand),
    /// Add, change or remove labels of a namespace or a pod (kubectl label): KEY=VALUE
    /// sets, KEY- removes; changing an existing label needs --overwrite.
    Label(LabelArgs),
    /// Add, change or remove annotations of a NetNamespace (kubectl annotate): KEY=VALUE
    /// sets, KEY- removes; changing an existing one needs --overwrite.
    /// `netnamespace.network.openshift.io/multicast-enabled=true` enables multicast.
    Annotate(AnnotateArgs),
    /// Register or remove nodes (their HostSubnets).
    #[command(subcommand)]
    Node(NodeCommand),
    /// Administer the cluster store itself.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Show a node's dataplane rules with their counters, like `ovs-ofctl dump-flows
    /// br0`: read from the node's pinned maps, so it works while its agent is down.
    DumpFlows {
        /// Only this table.
        #[arg(long)]
        table: Option<u8>,
        /// The node whose rules to show.
        #[arg(long, env = "OXSDN_NODE_NAME")]
        node: String,
        /// bpffs directory of the pins, as given to the node's agent.
        #[arg(long, default_value = "/sys/fs/bpf/oxsdn")]
        bpffs_dir: PathBuf,
    },
    /// Run a packet through a node's programs, like `ovs-appctl ofproto/trace`: each
    /// rule it matches, the registers, any service translation and the verdict. Uses
    /// the node's live maps and changes no counter and no map. Run it in the node's
    /// network namespace (for interface names).
    Trace(TraceArgs),
    /// Stream a node's drops as they happen (with --all, every forwarding decision too),
    /// like `cilium monitor --type drop`: addresses, ports, VNIDs, and the table and rule
    /// that dropped. The programs rate-limit events per CPU and count what they
    /// suppress. Run it in the node's network namespace (for interface names).
    Monitor(MonitorArgs),
    /// Check a node like `cilium status`: agent, CNI socket, store, sync, programs on
    /// every device, maps against the store, CNI config, the last minute's drops. Exits
    /// non-zero if anything is wrong (a liveness or readiness probe). Run it in the
    /// node's network namespace.
    Status(StatusArgs),
}

/// Where a node's agent keeps its parts (as given to `oxsdn-agent`).
#[derive(Debug, Args)]
struct NodeArgs {
    /// The node.
    #[arg(long, env = "OXSDN_NODE_NAME")]
    node: String,
    /// bpffs directory of the pins, as given to the node's agent.
    #[arg(long, default_value = "/sys/fs/bpf/oxsdn")]
    bpffs_dir: PathBuf,
}

#[derive(Debug, Args)]
struct MonitorArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Only drops (the default).
    #[arg(long, conflicts_with = "all")]
    drops: bool,
    /// Drops and every forwarding decision.
    #[arg(long)]
    all: bool,
    /// Only events of this project: its VNID as source or destination, or a pod of it
    /// as the source (needs the store).
    #[arg(long, value_name = "PROJECT")]
    project: Option<String>,
    /// Events per second each CPU may send; more are suppressed and counted.
    #[arg(long, default_value_t = oxsdn_common::monitor::DEFAULT_RATE)]
    rate: u32,
    /// Events a CPU may send at once after a quiet time.
    #[arg(long, default_value_t = oxsdn_common::monitor::DEFAULT_BURST)]
    burst: u32,
    /// Stop after this many events.
    #[arg(long)]
    count: Option<u64>,
    #[arg(short, long, value_enum, default_value_t)]
    output: Format,
}

#[derive(Debug, Args)]
struct StatusArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// The node agent's CNI socket.
    #[arg(long, default_value = "/run/oxsdn/cni.sock")]
    socket: PathBuf,
    /// Where the node's agent writes the CNI config.
    #[arg(long, default_value = "/etc/cni/net.d")]
    cni_conf_dir: PathBuf,
    #[arg(short, long, value_enum, default_value_t)]
    output: Format,
}

#[derive(Debug, Args)]
struct TraceArgs {
    /// The node whose programs run the packet.
    #[arg(long, env = "OXSDN_NODE_NAME")]
    node: String,
    /// bpffs directory of the pins, as given to the node's agent.
    #[arg(long, default_value = "/sys/fs/bpf/oxsdn")]
    bpffs_dir: PathBuf,
    /// Where the packet enters: pod:IP (a local pod), node (the host, into tun0),
    /// tunnel:NODE_IP:VNI (VXLAN from another node, as vxlan0 delivers it) or
    /// underlay:NODE_IP:VNI (the same VXLAN on the underlay device, through the XDP
    /// prefilter first; NODE_IP may be any address).
    #[arg(long, value_name = "pod:IP|node|tunnel:NODE_IP:VNI|underlay:NODE_IP:VNI")]
    from: packet_trace::Source,
    /// Destination address, and port for TCP and UDP.
    #[arg(long, value_name = "IP[:PORT]", value_parser = packet_trace::parse_destination)]
    to: (Ipv4Addr, u16),
    #[arg(long, value_enum)]
    proto: oxsdn_dataplane::tracer::Proto,
    /// Source address [default: the pod's, the gateway's from the node; required from a
    /// tunnel]. Another address than the pod's traces a spoofed packet.
    #[arg(long, value_name = "IP")]
    src: Option<Ipv4Addr>,
    /// Source port for TCP and UDP.
    #[arg(long, value_name = "N", default_value_t = 40000)]
    src_port: u16,
    #[arg(short, long, value_enum, default_value_t)]
    output: Format,
}

#[derive(Debug, Args)]
struct InitArgs {
    /// Pod network of the whole cluster [default: 10.128.0.0/14].
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    cluster_network: Option<Ipv4Network>,
    /// Host bits of each node's subnet [default: 9].
    #[arg(long, value_name = "N")]
    host_subnet_length: Option<u8>,
    /// ClusterIP range [default: 172.30.0.0/16].
    #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
    service_network: Option<Ipv4Network>,
    /// VXLAN UDP port [default: 4789].
    #[arg(long, value_name = "PORT")]
    vxlan_port: Option<u16>,
    /// MTU of pod interfaces and tun0 [default: 1450].
    #[arg(long, value_name = "BYTES")]
    mtu: Option<u32>,
    /// The network plugin: multitenant, subnet or networkpolicy (OpenShift's names,
    /// redhat/openshift-ovs-NAME, too) [default: multitenant].
    #[arg(long, value_name = "NAME")]
    network_plugin: Option<oxsdn_controller::NetworkPlugin>,
}

impl InitArgs {
    fn config(&self) -> ClusterConfig {
        let d = ClusterConfig::default();
        ClusterConfig {
            cluster_network: self.cluster_network.unwrap_or(d.cluster_network),
            host_subnet_length: self.host_subnet_length.unwrap_or(d.host_subnet_length),
            service_network: self.service_network.unwrap_or(d.service_network),
            vxlan_port: self.vxlan_port.unwrap_or(d.vxlan_port),
            mtu: self.mtu.unwrap_or(d.mtu),
            network_plugin: self.network_plugin.unwrap_or(d.network_plugin),
        }
    }
}

/// Which projects a pod-network command acts on: names or a selector, not both.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct ProjectSelection {
    /// Projects to act on.
    #[arg(value_name = "PROJECT")]
    projects: Vec<String>,
    /// Label selector choosing the projects instead (k=v, k==v, k!=v, k, !k; comma = and).
    #[arg(long)]
    selector: Option<String>,
}

#[derive(Debug, Subcommand)]
enum PodNetworkCommand {
    /// Give the projects the network (VNID) of project --to.
    JoinProjects {
        /// The project whose network the others join.
        #[arg(long, value_name = "PROJECT")]
        to: String,
        #[command(flatten)]
        selection: ProjectSelection,
    },
    /// Give each project a network of its own.
    IsolateProjects {
        #[command(flatten)]
        selection: ProjectSelection,
    },
    /// Let the projects reach and be reached by every project (VNID 0).
    MakeProjectsGlobal {
        #[command(flatten)]
        selection: ProjectSelection,
    },
}

/// The project a service command acts in (oc's -n).
#[derive(Debug, Args)]
struct InProject {
    /// The service's project.
    #[arg(short = 'n', long = "namespace", visible_alias = "project", value_name = "PROJECT")]
    project: String,
}

/// A service's ports, as `oc create service clusterip` takes them: at least one.
#[derive(Debug, Args)]
#[group(required = true, multiple = true)]
struct PortArgs {
    /// A TCP port, PORT or PORT:TARGET_PORT (the target defaults to the port);
    /// repeatable or comma-separated.
    #[arg(long, value_name = "PORT[:TARGET]", value_parser = parse_port_pair, value_delimiter = ',')]
    tcp: Vec<(u16, u16)>,
    /// A UDP port, as --tcp.
    #[arg(long, value_name = "PORT[:TARGET]", value_parser = parse_port_pair, value_delimiter = ',')]
    udp: Vec<(u16, u16)>,
}

impl PortArgs {
    /// The TCP ports, then the UDP ports, each in the order given.
    fn ports(&self) -> Vec<ServicePort> {
        let with = |protocol, pairs: &[(u16, u16)]| -> Vec<ServicePort> {
            pairs.iter().map(|&(port, target)| ServicePort::new(protocol, port, target)).collect()
        };
        [with(Protocol::Tcp, &self.tcp), with(Protocol::Udp, &self.udp)].concat()
    }
}

/// The endpoints `set endpoints` gives a service: IPs, or --none.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct EndpointArgs {
    /// Pod IPs; each serves every port of the service at its target port.
    #[arg(value_name = "IP")]
    ips: Vec<Ipv4Addr>,
    /// Remove every endpoint.
    #[arg(long)]
    none: bool,
}

#[derive(Debug, Subcommand)]
enum CreateCommand {
    /// Create a project's NetNamespace (idempotent: labels are merged into an existing one).
    Project {
        name: String,
        /// A label, k=v; repeatable.
        #[arg(long = "label", value_name = "K=V", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Import the project with this VNID (the NETID of its OpenShift NetNamespace):
        /// 0 or 10 to 16777215, shared with the projects that hold it (joined).
        #[arg(long, value_name = "N")]
        netid: Option<u32>,
    },
    /// Create a ClusterIP service in an existing project, without endpoints.
    #[command(alias = "svc")]
    Service {
        /// The service's name, a DNS-1035 label.
        name: String,
        #[command(flatten)]
        project: InProject,
        #[command(flatten)]
        ports: PortArgs,
        /// The ClusterIP to take (default: a free one of the service network).
        #[arg(long, value_name = "IP")]
        cluster_ip: Option<Ipv4Addr>,
    },
}

/// The manifest file of apply and delete, and the namespace of its objects.
#[derive(Debug, Args)]
struct ManifestArgs {
    /// The manifest file (YAML or JSON, at most 16 MiB); - reads standard input.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    file: PathBuf,
    /// The namespace of objects that name none [default: default]; objects naming
    /// another are refused.
    #[arg(short = 'n', long = "namespace", value_name = "NAMESPACE")]
    namespace: Option<String>,
}

#[derive(Debug, Args)]
struct ApplyArgs {
    #[command(flatten)]
    manifest: ManifestArgs,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct DeleteArgs {
    /// The manifest file whose objects to delete (- reads standard input).
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    file: Option<PathBuf>,
    /// The namespace of objects that name none [default: default].
    #[arg(short = 'n', long = "namespace", value_name = "NAMESPACE", requires = "file")]
    namespace: Option<String>,
    /// Objects of the file that do not exist are not an error.
    #[arg(long, requires = "file")]
    ignore_not_found: bool,
    #[command(subcommand)]
    command: Option<DeleteCommand>,
}

/// The namespace of a NetworkPolicy or pod command (kubectl's -n).
#[derive(Debug, Args)]
struct InNamespace {
    #[arg(short = 'n', long = "namespace", value_name = "NAMESPACE", default_value = manifest::DEFAULT_NAMESPACE)]
    namespace: String,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum AnnotateResource {
    #[value(alias = "netnamespaces", alias = "netnamespace.network.openshift.io")]
    Netnamespace,
}

#[derive(Debug, Args)]
struct AnnotateArgs {
    /// What to annotate.
    #[arg(value_enum)]
    resource: AnnotateResource,
    /// Its name.
    name: String,
    /// KEY=VALUE to set an annotation, KEY- to remove one.
    #[arg(required = true, value_name = "KEY=VALUE|KEY-")]
    changes: Vec<String>,
    /// Change annotations that have another value.
    #[arg(long)]
    overwrite: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LabelResource {
    #[value(alias = "namespaces", alias = "ns")]
    Namespace,
    #[value(alias = "pods", alias = "po")]
    Pod,
}

#[derive(Debug, Args)]
struct LabelArgs {
    /// What to label.
    #[arg(value_enum)]
    resource: LabelResource,
    /// Its name.
    name: String,
    /// KEY=VALUE to set a label, KEY- to remove one.
    #[arg(required = true, value_name = "KEY=VALUE|KEY-")]
    changes: Vec<String>,
    /// The pod's namespace.
    #[arg(short = 'n', long = "namespace", value_name = "NAMESPACE", default_value = manifest::DEFAULT_NAMESPACE)]
    namespace: String,
    /// Change labels that have another value.
    #[arg(long)]
    overwrite: bool,
}

#[derive(Debug, Subcommand)]
enum DeleteCommand {
    /// Delete a project's NetNamespace (refused while it has services).
    Project { name: String },
    /// Delete a service, freeing its ClusterIP.
    #[command(alias = "svc")]
    Service {
        name: String,
        #[command(flatten)]
        project: InProject,
    },
    /// Delete a NetworkPolicy.
    #[command(aliases = ["networkpolicies", "netpol"])]
    Networkpolicy {
        name: String,
        #[command(flatten)]
        namespace: InNamespace,
    },
    /// Delete a project's EgressNetworkPolicy.
    #[command(alias = "egressnetworkpolicies")]
    Egressnetworkpolicy {
        name: String,
        #[command(flatten)]
        namespace: InNamespace,
    },
}

#[derive(Debug, Subcommand)]
enum SetCommand {
    /// Switch the cluster to another network plugin: multitenant, subnet or networkpolicy
    /// (or OpenShift's names, redhat/openshift-ovs-NAME). Every node follows within a
    /// second; no pod restarts.
    NetworkPlugin {
        #[arg(value_name = "NAME")]
        plugin: NetworkPlugin,
    },
    /// Replace a service's ports (its ClusterIP and endpoints are kept).
    Ports {
        /// The service.
        name: String,
        #[command(flatten)]
        project: InProject,
        #[command(flatten)]
        ports: PortArgs,
    },
    /// Replace a service's endpoints.
    Endpoints {
        /// The service.
        name: String,
        #[command(flatten)]
        project: InProject,
        #[command(flatten)]
        endpoints: EndpointArgs,
    },
    /// Set a project's egress IPs (NetNamespace.egressIPs; none: clear them). Its pods
    /// leave the cluster with one of them, from the node that holds it.
    EgressIps {
        project: String,
        #[arg(value_name = "IP")]
        ips: Vec<Ipv4Addr>,
    },
    /// Set the egress IPs a node holds (HostSubnet.egressIPs) or the networks from which
    /// it may be given egress IPs automatically (HostSubnet.egressCIDRs); neither: clear.
    HostsubnetEgress {
        node: String,
        #[arg(long, value_delimiter = ',', num_args = 1..)]
        ips: Vec<Ipv4Addr>,
        #[arg(long, value_delimiter = ',', num_args = 1..)]
        cidrs: Vec<Ipv4Network>,
    },
}

#[derive(Debug, Subcommand)]
enum GetCommand {
    /// List NetNamespaces (projects and their VNIDs).
    #[command(alias = "netnamespace")]
    Netnamespaces {
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// List HostSubnets (nodes and their subnets).
    #[command(alias = "hostsubnet")]
    Hostsubnets {
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// List services (oc get svc): of every project, or of one.
    #[command(aliases = ["service", "svc"])]
    Services {
        /// Only this project's services.
        #[arg(short = 'n', long = "namespace", visible_alias = "project", value_name = "PROJECT")]
        project: Option<String>,
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Show the cluster network configuration and its network plugin (oc get
    /// clusternetwork).
    #[command(alias = "clusternetworks")]
    Clusternetwork {
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// List NetworkPolicies (kubectl get networkpolicies): of every namespace, or of one;
    /// or one by name.
    #[command(aliases = ["networkpolicy", "netpol"])]
    Networkpolicies {
        /// Only this policy (needs its namespace, -n, default "default").
        name: Option<String>,
        /// Only this namespace's policies.
        #[arg(short = 'n', long = "namespace", value_name = "NAMESPACE")]
        namespace: Option<String>,
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// List EgressNetworkPolicies (oc get egressnetworkpolicies): of every project, or
    /// of one.
    #[command(alias = "egressnetworkpolicy")]
    Egressnetworkpolicies {
        /// Only this project's policy.
        #[arg(short = 'n', long = "namespace", value_name = "NAMESPACE")]
        namespace: Option<String>,
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// List namespaces with their labels (kubectl get namespaces --show-labels).
    #[command(aliases = ["namespace", "ns"])]
    Namespaces {
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// List pods' labels and named ports, with the addresses of those added.
    #[command(aliases = ["pod", "po"])]
    Pods {
        /// Only this namespace's pods.
        #[arg(short = 'n', long = "namespace", value_name = "NAMESPACE")]
        namespace: Option<String>,
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Register a node, allocating its subnet (or update its IP).
    Add {
        name: String,
        #[arg(long)]
        ip: Ipv4Addr,
        /// Import the node with this subnet (the subnet of its OpenShift HostSubnet): a
        /// node-sized subnet of the cluster network that no other node's overlaps.
        #[arg(long, value_name = "CIDR", value_parser = parse_cidr)]
        subnet: Option<Ipv4Network>,
    },
    /// Remove a node, freeing its subnet.
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Set up etcd's users and roles for oxsdn and enable etcd's auth (idempotent): the
    /// user and role oxsdn-operator (every command of oxsdnctl), one user and role
    /// oxsdn-node-NAME per node (its agent: reads everything, writes only its own
    /// HostSubnet), and etcd's root user. With etcd's --client-cert-auth, a client
    /// certificate's CN is its user. Once auth is on, run it as root (CN root) to add
    /// nodes.
    SetupAuth {
        /// A node whose agent gets a user; repeatable.
        #[arg(long = "node", value_name = "NAME")]
        nodes: Vec<String>,
    },
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not of the form key=value"))
}

/// `ADDRESS/PREFIX`. The prefix is required: a bare address would be a /32 network,
/// certainly not what was meant.
fn parse_cidr(s: &str) -> Result<Ipv4Network, String> {
    if !s.contains('/') {
        return Err(format!("{s:?} has no prefix length (a CIDR such as 10.128.0.0/14)"));
    }
    s.parse().map_err(|e| format!("{s:?} is not an IPv4 CIDR: {e}"))
}

/// `PORT` or `PORT:TARGET`: the port and its target port.
fn parse_port_pair(s: &str) -> Result<(u16, u16), String> {
    // clap's message quotes the whole value; this names the part that is wrong.
    let number = |n: &str| n.parse::<u16>().map_err(|_| format!("{n:?} is not a port number (0-65535)"));
    match s.split_once(':') {
        None => number(s).map(|port| (port, port)),
        Some((port, target)) => Ok((number(port)?, number(target)?)),
    }
}

/// kubectl label's (and annotate's) arguments: `KEY=VALUE` to set, `KEY-` to remove;
/// `what` they change, for the error.
fn parse_changes(changes: &[String], what: &str) -> Result<(BTreeMap<String, String>, Vec<String>)> {
    let mut set = BTreeMap::new();
    let mut remove = Vec::new();
    for change in changes {
        match (change.split_once('='), change.strip_suffix('-')) {
            (Some((key, value)), _) => {
                set.insert(key.to_owned(), value.to_owned());
            }
            (None, Some(key)) if !key.is_empty() => remove.push(key.to_owned()),
            _ => {
                let article = if what.starts_with('a') { "an" } else { "a" };
                bail!("invalid {what} spec: {change:?} (KEY=VALUE sets {article} {what}, KEY- removes it)")
            }
        }
    }
    Ok((set, remove))
}

/// A manifest file (`-`: standard input), read up to one byte more than a manifest may
/// have, so that a larger one is refused without being read whole.
fn read_manifest(file: &Path) -> Result<Vec<u8>> {
    let limit = MAX_MANIFEST_BYTES as u64 + 1;
    let mut data = Vec::new();
    if file == Path::new("-") {
        std::io::stdin().lock().take(limit).read_to_end(&mut data).context("reading standard input")?;
    } else {
        let opened = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
        opened.take(limit).read_to_end(&mut data).with_context(|| format!("reading {}", file.display()))?;
    }
    Ok(data)
}

/// The objects of a manifest file, every one valid, or every error. `verb` and `done`:
/// what is to be done with them, for messages.
fn manifest_objects(manifest: &ManifestArgs, verb: &str, done: &str) -> Result<Vec<Object>> {
    let name = if manifest.file == Path::new("-") { "<stdin>".into() } else { manifest.file.display().to_string() };
    let data = read_manifest(&manifest.file)?;
    let objects = manifest::parse(&data, manifest.namespace.as_deref())
        .map_err(Error::from)
        .with_context(|| format!("{name}: nothing was {done}"))?;
    if objects.is_empty() {
        bail!("{name}: no objects passed to {verb}");
    }
    Ok(objects)
}

fn apply(store: &StoreOptions, args: &ApplyArgs, out: &mut dyn Write) -> Result<()> {
    let objects = manifest_objects(&args.manifest, "apply", "applied")?;
    for (reference, outcome) in open_cluster(store)?.apply_objects(&objects)? {
        writeln!(out, "{reference} {outcome}")?;
    }
    Ok(())
}

fn delete(store: &StoreOptions, args: DeleteArgs, out: &mut dyn Write) -> Result<()> {
    if let Some(command) = args.command {
        return delete_one(store, command, out);
    }
    // clap requires one of them.
    let Some(file) = args.file else { bail!("give -f FILE, or what to delete (project, service, networkpolicy)") };
    let manifest = ManifestArgs { file, namespace: args.namespace };
    let objects = manifest_objects(&manifest, "delete", "deleted")?;
    let mut not_found = Vec::new();
    for (reference, found) in open_cluster(store)?.delete_objects(&objects)? {
        let (kind, name) = reference.split_once('/').unwrap_or(("", &reference));
        if found {
            writeln!(out, "{kind} {name:?} deleted")?;
        } else if !args.ignore_not_found {
            not_found.push(format!("{kind} {name:?}"));
        }
    }
    if !not_found.is_empty() {
        bail!("not found: {}", not_found.join(", "));
    }
    Ok(())
}

fn delete_one(store: &StoreOptions, command: DeleteCommand, out: &mut dyn Write) -> Result<()> {
    match command {
        DeleteCommand::Project { name } => {
            open_cluster(store)?.delete_netnamespace(&name)?;
            writeln!(out, "netnamespace {name:?} deleted")?;
        }
        DeleteCommand::Service { name, project: InProject { project } } => {
            open_cluster(store)?.delete_service(&project, &name)?;
            writeln!(out, "service {name:?} deleted")?;
        }
        DeleteCommand::Networkpolicy { name, namespace: InNamespace { namespace } } => {
            open_cluster(store)?.delete_network_policy(&namespace, &name)?;
            writeln!(out, "networkpolicy.networking.k8s.io {name:?} deleted")?;
        }
        DeleteCommand::Egressnetworkpolicy { name, namespace: InNamespace { namespace } } => {
            open_cluster(store)?.delete_egress_policy(&namespace, &name)?;
            writeln!(out, "egressnetworkpolicy.network.openshift.io {name:?} deleted")?;
        }
    }
    Ok(())
}

fn label(store: &StoreOptions, args: &LabelArgs, out: &mut dyn Write) -> Result<()> {
    let (set, remove) = parse_changes(&args.changes, "label")?;
    let (target, reference) = match args.resource {
        LabelResource::Namespace => (LabelTarget::Namespace(&args.name), format!("namespace/{}", args.name)),
        LabelResource::Pod => {
            (LabelTarget::Pod { namespace: &args.namespace, name: &args.name }, format!("pod/{}", args.name))
        }
    };
    let labeled = open_cluster(store)?.label(target, &set, &remove, args.overwrite)?;
    for key in &labeled.not_found {
        eprintln!("label {key:?} not found.");
    }
    writeln!(out, "{reference} {}", labeled.outcome)?;
    Ok(())
}

fn annotate(store: &StoreOptions, args: &AnnotateArgs, out: &mut dyn Write) -> Result<()> {
    let (set, remove) = parse_changes(&args.changes, "annotation")?;
    let AnnotateResource::Netnamespace = args.resource;
    let annotated = open_cluster(store)?.annotate_netnamespace(&args.name, &set, &remove, args.overwrite)?;
    for key in &annotated.not_found {
        eprintln!("annotation {key:?} not found.");
    }
    writeln!(out, "netnamespace.network.openshift.io/{} annotated", args.name)?;
    Ok(())
}

fn get_network_policies(
    cluster: &Cluster,
    name: Option<&str>,
    namespace: Option<&str>,
    output: Format,
    out: &mut dyn Write,
) -> Result<()> {
    let Some(name) = name else {
        let (all, _) = cluster.list_network_policies(namespace)?;
        return print_network_policies(out, &all, output, namespace.is_none(), false);
    };
    let namespace = namespace.unwrap_or(manifest::DEFAULT_NAMESPACE);
    let policy = cluster
        .get_network_policy(namespace, name)?
        .ok_or_else(|| Error::UnknownNetworkPolicy { namespace: namespace.to_owned(), name: name.to_owned() })?;
    print_network_policies(out, &[policy], output, false, true)
}

fn open_store(backend: &StoreBackend) -> Result<Arc<dyn Store>> {
    store::open(backend).with_context(|| format!("opening the {backend}"))
}

/// Opens the cluster in an existing store: only `init` creates a file store, so a
/// mistyped --store does not quietly start an empty cluster. (etcd has no such thing as
/// a missing store: an uninitialised cluster there says so at the first read.)
fn open_cluster(options: &StoreOptions) -> Result<Cluster> {
    let backend = &options.backend()?;
    if let StoreBackend::File(dir) = backend {
        if !dir.is_dir() {
            bail!("store {} does not exist; run `oxsdnctl init` first", dir.display());
        }
    }
    Ok(Cluster::new(open_store(backend)?))
}

/// `oc adm pod-network isolate-projects` refuses `default` before asking the master.
fn refuse_isolating_default(projects: &[String]) -> Result<()> {
    if projects.iter().any(|p| p == DEFAULT_PROJECT) {
        return Err(Error::IsolateDefault.into());
    }
    Ok(())
}

/// The projects a selection names, resolving a selector against the store.
fn resolve(cluster: &Cluster, selection: &ProjectSelection) -> Result<Vec<String>> {
    match &selection.selector {
        None => Ok(selection.projects.clone()),
        Some(selector) => {
            let projects = cluster.select_projects(selector)?;
            if projects.is_empty() {
                bail!("no projects found matching selector {selector:?}");
            }
            Ok(projects)
        }
    }
}

fn pod_network(store: &StoreOptions, command: PodNetworkCommand, out: &mut dyn Write) -> Result<()> {
    let records = match command {
        PodNetworkCommand::JoinProjects { to, selection } => {
            let cluster = open_cluster(store)?;
            let projects: Vec<String> = resolve(&cluster, &selection)?.into_iter().filter(|p| *p != to).collect();
            cluster.join_projects(&to, &projects)?
        }
        PodNetworkCommand::IsolateProjects { selection } => {
            refuse_isolating_default(&selection.projects)?;
            let cluster = open_cluster(store)?;
            let projects = resolve(&cluster, &selection)?;
            refuse_isolating_default(&projects)?;
            cluster.isolate_projects(&projects)?
        }
        PodNetworkCommand::MakeProjectsGlobal { selection } => {
            let cluster = open_cluster(store)?;
            let projects = resolve(&cluster, &selection)?;
            cluster.make_projects_global(&projects)?
        }
    };
    // Like `oc adm pod-network`, silent when there was nothing to do.
    if !records.is_empty() {
        print_netnamespaces(out, &records, Format::Table)?;
    }
    Ok(())
}

fn run(cli: Cli, out: &mut dyn Write) -> Result<()> {
    // The store options are checked by the commands that use the store only.
    let store = &cli.store;
    match cli.command {
        Command::Init(args) => {
            // Checked before the store is opened: a bad configuration creates nothing.
            args.config().validate()?;
            let cluster = Cluster::new(open_store(&store.backend()?)?);
            let config = cluster.init_config(&args.config())?;
            serde_json::to_writer_pretty(&mut *out, &config)?;
            writeln!(out)?;
        }
        Command::PodNetwork(command) => pod_network(store, command, out)?,
        Command::Create(CreateCommand::Project { name, labels, netid }) => {
            let labels: BTreeMap<String, String> = labels.into_iter().collect();
            let cluster = open_cluster(store)?;
            if let Some(netid) = netid {
                cluster.import_netnamespace(&name, netid)?;
            }
            let ns = cluster.create_netnamespace(&name, labels)?;
            print_netnamespaces(out, &[ns], Format::Table)?;
        }
        Command::Create(CreateCommand::Service { name, project: InProject { project }, ports, cluster_ip }) => {
            let service = open_cluster(store)?.create_service(&project, &name, &ports.ports(), cluster_ip)?;
            print_services(out, &[service], Format::Table, false)?;
        }
        Command::Apply(args) => apply(store, &args, out)?,
        Command::Delete(args) => delete(store, args, out)?,
        Command::Label(args) => label(store, &args, out)?,
        Command::Annotate(args) => annotate(store, &args, out)?,
        Command::Set(SetCommand::NetworkPlugin { plugin }) => {
            let config = open_cluster(store)?.set_network_plugin(plugin)?;
            let plugin = config.network_plugin;
            writeln!(out, "network plugin {plugin} ({})", plugin.openshift_name())?;
        }
        Command::Set(SetCommand::Ports { name, project: InProject { project }, ports }) => {
            let service = open_cluster(store)?.update_service_ports(&project, &name, &ports.ports())?;
            print_services(out, &[service], Format::Table, false)?;
        }
        Command::Set(SetCommand::Endpoints { name, project: InProject { project }, endpoints }) => {
            // `--none` and IPs exclude each other, so with --none `ips` is empty.
            let service = open_cluster(store)?.set_endpoints(&project, &name, &endpoints.ips)?;
            print_services(out, &[service], Format::Table, false)?;
        }
        Command::Set(SetCommand::EgressIps { project, ips }) => {
            let record = ProjectEgressIps { project, egress_ips: ips };
            open_cluster(store)?.set_project_egress_ips(&record)?;
            writeln!(out, "netnamespace.network.openshift.io/{} patched", record.project)?;
        }
        Command::Set(SetCommand::HostsubnetEgress { node, ips, cidrs }) => {
            let record = NodeEgress { node, egress_ips: ips, egress_cidrs: cidrs };
            open_cluster(store)?.set_node_egress(&record)?;
            writeln!(out, "hostsubnet.network.openshift.io/{} patched", record.node)?;
        }
        Command::Get(GetCommand::Netnamespaces { output }) => {
            let cluster = open_cluster(store)?;
            let (all, _) = cluster.list_netnamespaces()?;
            let (egress, _) = cluster.list_project_egress_ips()?;
            let mut egress: BTreeMap<String, Vec<Ipv4Addr>> =
                egress.into_iter().map(|e| (e.project, e.egress_ips)).collect();
            let views: Vec<NetNamespaceView> = all
                .into_iter()
                .map(|record| NetNamespaceView { egress_ips: egress.remove(&record.name).unwrap_or_default(), record })
                .collect();
            print_netnamespace_views(out, &views, output)?;
        }
        Command::Get(GetCommand::Hostsubnets { output }) => {
            let cluster = open_cluster(store)?;
            let (all, _) = cluster.list_hostsubnets()?;
            let (egress, _) = cluster.list_node_egress()?;
            let mut egress: BTreeMap<String, NodeEgress> = egress.into_iter().map(|e| (e.node.clone(), e)).collect();
            let views: Vec<HostSubnetView> = all
                .into_iter()
                .map(|record| {
                    let e = egress.remove(&record.host).unwrap_or_default();
                    HostSubnetView { record, egress_ips: e.egress_ips, egress_cidrs: e.egress_cidrs }
                })
                .collect();
            print_hostsubnet_views(out, &views, output)?;
        }
        Command::Get(GetCommand::Services { project, output }) => {
            let cluster = open_cluster(store)?;
            let (all, _) = match &project {
                Some(project) => cluster.list_project_services(project)?,
                None => cluster.list_services()?,
            };
            // Like `oc get svc`: a NAMESPACE column only when listing every project.
            print_services(out, &all, output, project.is_none())?;
        }
        Command::Get(GetCommand::Clusternetwork { output }) => {
            print_cluster_network(out, &open_cluster(store)?.config()?, output)?;
        }
        Command::Get(GetCommand::Networkpolicies { name, namespace, output }) => {
            get_network_policies(&open_cluster(store)?, name.as_deref(), namespace.as_deref(), output, out)?;
        }
        Command::Get(GetCommand::Egressnetworkpolicies { namespace, output }) => {
            let (all, _) = open_cluster(store)?.list_egress_policies(namespace.as_deref())?;
            print_egress_policies(out, &all, output)?;
        }
        Command::Get(GetCommand::Namespaces { output }) => {
            let (all, _) = open_cluster(store)?.list_netnamespaces()?;
            print_namespaces(out, &all, output)?;
        }
        Command::Get(GetCommand::Pods { namespace, output }) => {
            let cluster = open_cluster(store)?;
            let (mut pods, _) = cluster.list_pod_meta()?;
            pods.retain(|p| namespace.as_ref().is_none_or(|ns| *ns == p.namespace));
            let (addresses, _) = cluster.list_pod_addresses(None)?;
            print_pods(out, &pods, &addresses, output)?;
        }
        Command::Node(NodeCommand::Add { name, ip, subnet }) => {
            let cluster = open_cluster(store)?;
            let hs = match subnet {
                Some(subnet) => cluster.import_node(&name, ip, subnet)?,
                None => cluster.register_node(&name, ip)?,
            };
            print_hostsubnets(out, &[hs], Format::Table)?;
        }
        Command::Node(NodeCommand::Delete { name }) => {
            open_cluster(store)?.delete_node(&name)?;
            writeln!(out, "hostsubnet {name:?} deleted")?;
        }
        Command::Store(StoreCommand::SetupAuth { nodes }) => {
            let StoreBackend::Etcd(config) = store.backend()? else {
                bail!("store setup-auth sets up etcd's users and roles: give --etcd-endpoints, with etcd's root user's certificate");
            };
            for line in EtcdStore::connect(&config)?.setup_auth(&nodes)? {
                writeln!(out, "{line}")?;
            }
        }
        Command::DumpFlows { table, node, bpffs_dir } => {
            let maps = NodeMaps::open(&bpffs_dir.join(&node))
                .with_context(|| format!("node {node} has no dataplane here (is its agent started?)"))?;
            writeln!(out, "OXSDN_FLOW reply (node={node}, {}):", prefilter::describe(&bpffs_dir.join(&node), &maps))?;
            for flow in flows::collect(&maps, flows::ifname_or_index)? {
                if table.is_none_or(|t| t == flow.table) {
                    writeln!(out, "{flow}")?;
                }
            }
        }
        Command::Trace(args) => {
            let request = packet_trace::Request {
                from: args.from,
                to: args.to,
                proto: args.proto,
                src: args.src,
                src_port: args.src_port,
            };
            packet_trace::trace(&args.bpffs_dir.join(&args.node), &args.node, &request, args.output, out)?;
        }
        Command::Monitor(args) => {
            let request = monitor::Request {
                all: args.all,
                rate: args.rate,
                burst: args.burst,
                project: args.project,
                count: args.count,
                output: args.output,
            };
            // The store gives project names; a monitor works without it.
            let cluster = open_cluster(store).ok();
            monitor::monitor(&args.node.bpffs_dir.join(&args.node.node), cluster, &request, out)?;
        }
        Command::Status(args) => {
            let paths = oxsdn_dataplane::health::NodePaths {
                pin_dir: args.node.bpffs_dir.join(&args.node.node),
                node: args.node.node,
                socket: args.socket,
                cni_conf_dir: args.cni_conf_dir,
            };
            status::status(&paths, open_cluster(store), args.output, out)?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    // Usage errors exit with clap's status 2 from here.
    let cli = Cli::parse();
    match run(cli, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oxsdnctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests;
