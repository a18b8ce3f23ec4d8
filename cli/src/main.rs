//! `oxsdnctl`: the operator's command line, after `oc adm pod-network` and `oc get`.

mod output;
mod packet_trace;

use std::{collections::BTreeMap, io::Write, net::Ipv4Addr, path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use ipnetwork::Ipv4Network;
use oxsdn_controller::{
    debug::store_hammer,
    netnamespaces::DEFAULT_PROJECT,
    store::{self, EtcdStore, Store, StoreBackend, StoreOptions},
    Cluster, ClusterConfig, Error, Protocol, ServicePort,
};

use oxsdn_dataplane::{flows, maps::NodeMaps, prefilter};

use crate::output::{print_hostsubnets, print_netnamespaces, print_services, Format};

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
    /// Delete a project or a service.
    #[command(subcommand)]
    Delete(DeleteCommand),
    /// Change a service's ports or endpoints (oc set).
    #[command(subcommand)]
    Set(SetCommand),
    /// List NetNamespaces, HostSubnets or Services (oc get).
    #[command(subcommand)]
    Get(GetCommand),
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
    #[command(subcommand, hide = true)]
    Debug(DebugCommand),
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
}

#[derive(Debug, Subcommand)]
enum SetCommand {
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
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Register a node, allocating its subnet (or update its IP).
    Add {
        name: String,
        #[arg(long)]
        ip: Ipv4Addr,
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

#[derive(Debug, Subcommand)]
enum DebugCommand {
    /// Increment a counter key in a tight loop, printing `committed value=V revision=R`
    /// after each commit: a writer to SIGKILL in crash-safety tests.
    StoreHammer {
        #[arg(long, default_value = "/oxsdn/debug/hammer")]
        key: String,
        /// Stop after this many commits (default: never).
        #[arg(long)]
        count: Option<u64>,
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
        Command::Create(CreateCommand::Project { name, labels }) => {
            let labels: BTreeMap<String, String> = labels.into_iter().collect();
            let ns = open_cluster(store)?.create_netnamespace(&name, labels)?;
            print_netnamespaces(out, &[ns], Format::Table)?;
        }
        Command::Create(CreateCommand::Service { name, project: InProject { project }, ports, cluster_ip }) => {
            let service = open_cluster(store)?.create_service(&project, &name, &ports.ports(), cluster_ip)?;
            print_services(out, &[service], Format::Table, false)?;
        }
        Command::Delete(DeleteCommand::Project { name }) => {
            open_cluster(store)?.delete_netnamespace(&name)?;
            writeln!(out, "netnamespace {name:?} deleted")?;
        }
        Command::Delete(DeleteCommand::Service { name, project: InProject { project } }) => {
            open_cluster(store)?.delete_service(&project, &name)?;
            writeln!(out, "service {name:?} deleted")?;
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
        Command::Get(GetCommand::Netnamespaces { output }) => {
            let (all, _) = open_cluster(store)?.list_netnamespaces()?;
            print_netnamespaces(out, &all, output)?;
        }
        Command::Get(GetCommand::Hostsubnets { output }) => {
            let (all, _) = open_cluster(store)?.list_hostsubnets()?;
            print_hostsubnets(out, &all, output)?;
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
        Command::Node(NodeCommand::Add { name, ip }) => {
            let hs = open_cluster(store)?.register_node(&name, ip)?;
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
        Command::Debug(DebugCommand::StoreHammer { key, count }) => {
            let store = open_store(&store.backend()?)?;
            store_hammer(&*store, &key, count, &mut |value, revision| {
                writeln!(out, "committed value={value} revision={revision}").and_then(|()| out.flush()).is_ok()
            })
            .with_context(|| format!("store-hammer on {key}"))?;
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
