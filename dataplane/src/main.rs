//! `oxsdn-agent`: the per-node daemon.

use std::{net::Ipv4Addr, path::PathBuf};

use anyhow::Result;
use clap::Parser;
use ipnetwork::Ipv4Network;
use nix::sys::signal::{SigSet, Signal};
use oxsdn_controller::store::StoreOptions;
use oxsdn_dataplane::{
    agent::{self, Agent, AgentConfig},
    cni_server, health,
    metrics::{self, collector::NodeCollector, recent::RecentDropsWindow, Starts},
    monitor,
    prefilter::{parse_deny_cidr, PrefilterMode, XdpDecap},
};

#[derive(Parser)]
#[command(version, about = "oxsdn node agent: eBPF dataplane, tun0 gateway and CNI server of one node")]
struct Args {
    /// This node's name (its HostSubnet's name).
    #[arg(long, env = "OXSDN_NODE_NAME")]
    node_name: String,
    /// This node's underlay IPv4 address.
    #[arg(long, env = "OXSDN_NODE_IP", required_unless_present = "teardown")]
    node_ip: Option<Ipv4Addr>,
    #[command(flatten)]
    store: StoreOptions,
    /// Where the agent keeps its pod table.
    #[arg(long, default_value = "/var/lib/oxsdn/node")]
    state_dir: PathBuf,
    /// The CNI socket the plugin talks to.
    #[arg(long, default_value = oxsdn_cni::protocol::DEFAULT_AGENT_SOCKET)]
    socket: PathBuf,
    /// bpffs directory for the pins; the node's are in `<dir>/<node name>`.
    #[arg(long, default_value = "/sys/fs/bpf/oxsdn")]
    bpffs_dir: PathBuf,
    /// Where the CNI config is written once the node is ready.
    #[arg(long, default_value = "/etc/cni/net.d")]
    cni_conf_dir: PathBuf,
    /// Service connections each project (and the node's host, and the tunnel) may hold
    /// in the node's tracking tables at once (131072 entries); 0: no limit but the
    /// tables' size.
    #[arg(long, env = "OXSDN_CT_QUOTA", default_value_t = oxsdn_common::conntrack::DEFAULT_QUOTA)]
    ct_quota: u32,
    /// The XDP prefilter on the underlay device (the one holding --node-ip), which drops
    /// VXLAN from unknown nodes, malformed VXLAN and denied sources before the kernel
    /// builds an skb: `auto` in the driver where it has XDP, else generic; `off` removes it.
    #[arg(long, env = "OXSDN_PREFILTER", value_enum, default_value_t)]
    prefilter: PrefilterMode,
    /// Source networks (CIDRs, comma-separated) whose IPv4 frames the prefilter drops at
    /// the underlay device, whatever they carry. Replaces the list an earlier agent set;
    /// at most 1024.
    #[arg(long, env = "OXSDN_PREFILTER_DENY", value_name = "CIDR,...", value_delimiter = ',', value_parser = parse_deny_cidr)]
    prefilter_deny: Vec<Ipv4Network>,
    /// VXLAN from known nodes to local pods that the prefilter takes off itself and
    /// redirects to the pod's veth: `non-tcp` (UDP, ICMP), `all`, or `off` (TC's
    /// `from_underlay` takes everything off; faster on a veth underlay, docs/design.md).
    /// Needs --prefilter generic.
    #[arg(long, env = "OXSDN_XDP_DECAP", value_enum, default_value_t)]
    xdp_decap: XdpDecap,
    /// The DNS server (ADDRESS:PORT) that resolves the `dnsName` rules of egress
    /// firewalls; by default the first nameserver of /etc/resolv.conf.
    #[arg(long, env = "OXSDN_DNS_SERVER")]
    dns_server: Option<std::net::SocketAddr>,
    /// Where to serve Prometheus metrics (GET /metrics), ADDRESS:PORT, or `off`. The
    /// default is OpenShift SDN's, on loopback only.
    #[arg(long, env = "OXSDN_METRICS_ADDRESS", default_value = "127.0.0.1:9101", value_parser = metrics::server::parse_address)]
    metrics_address: metrics::server::MetricsAddress,
    /// Uninstall: remove this node's dataplane (programs, maps and their pins, tun0,
    /// vxlan0, the nftables table), CNI config and socket, then exit. Pods lose their
    /// network. A plain stop (SIGTERM) leaves the dataplane running for an upgrade.
    #[arg(long)]
    teardown: bool,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if args.teardown {
        return agent::teardown(&args.node_name, &args.bpffs_dir, &args.cni_conf_dir, &args.socket);
    }
    let node_ip = args.node_ip.expect("clap requires --node-ip without --teardown");
    // Block the stop signals in every thread, so the main thread alone takes them.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGTERM);
    stop.add(Signal::SIGINT);
    stop.thread_block()?;

    let agent = Agent::start(AgentConfig {
        node_name: args.node_name,
        node_ip,
        store: args.store.backend()?,
        state_dir: args.state_dir,
        socket: args.socket,
        bpffs_dir: args.bpffs_dir,
        cni_conf_dir: args.cni_conf_dir,
        ct_quota: args.ct_quota,
        prefilter: args.prefilter,
        prefilter_deny: args.prefilter_deny,
        xdp_decap: args.xdp_decap,
        dns_server: args.dns_server,
    })?;
    let pin_dir = agent.config.bpffs_dir.join(&agent.config.node_name);
    let starts = Starts::record(&agent.config.state_dir)?;
    let metrics_address = match args.metrics_address.0 {
        Some(address) => {
            Some(metrics::server::serve(address, NodeCollector::new(&pin_dir, agent.projects(), starts)?)?)
        }
        None => None,
    };
    health::observe(health::Observed {
        recent_drops: RecentDropsWindow::start(&pin_dir)?,
        metrics_address: metrics_address.map(|a| a.to_string()),
    });
    monitor::end_expired_leases(&pin_dir)?;
    let listener = cni_server::bind(&agent.config.socket)?;
    std::thread::spawn({
        let agent = agent.clone();
        move || cni_server::serve(listener, agent)
    });
    agent.announce_ready()?;
    tracing::info!("node ready");

    let signal = stop.wait()?;
    tracing::info!(?signal, "stopping; the dataplane keeps forwarding (upgrade-safe)");
    agent.shutdown()
}
