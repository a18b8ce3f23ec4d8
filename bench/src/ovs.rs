//! Open vSwitch with the userspace datapath (`datapath_type=netdev`: this machine has
//! no OVS kernel module), programmed with a faithful subset of OpenShift SDN's
//! ovs-multitenant flows (Profile A tables 0, 10, 20, 21, 30, 40, 50, 70, 80, 90).
//!
//! Each node runs its own ovsdb-server and ovs-vswitchd, started in the node's
//! namespace with private run/db/log/config directories; both are stopped by PID and
//! their directory removed when the switch is dropped, so nothing outlives the run or
//! lands in the root namespace.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use oxsdn_tests::netns::{run, Netns};

/// The VNID of the benchmark's project.
const VNID: u32 = 7;
/// OpenFlow port of vxlan0, as in OpenShift SDN.
const VXLAN_PORT: u32 = 1;
/// The cluster network; node n owns 10.94.n.0/24.
const CLUSTER_CIDR: &str = "10.94.0.0/16";
/// Pods' MTU across nodes: the underlay's 1500 less the VXLAN overhead.
pub const OVERLAY_MTU: &str = "1450";

/// A running ovsdb-server + ovs-vswitchd pair serving one node namespace.
pub struct OvsSwitch {
    dir: PathBuf,
    ovsdb: Option<Child>,
    vswitchd: Option<Child>,
}

impl OvsSwitch {
    /// Starts the daemons in `node` with everything they write under `dir`.
    pub fn start(node: &Netns, dir: &Path) -> Result<OvsSwitch> {
        std::fs::create_dir_all(dir)?;
        let mut switch = OvsSwitch { dir: dir.to_path_buf(), ovsdb: None, vswitchd: None };
        let db = dir.join("conf.db");
        run(switch.tool("ovsdb-tool").arg("create").arg(&db).arg("/usr/share/openvswitch/vswitch.ovsschema"))?;
        let socket = dir.join("db.sock");
        switch.ovsdb = Some(
            switch
                .daemon(node, "ovsdb-server")
                .arg(&db)
                .arg(format!("--remote=punix:{}", socket.display()))
                .spawn()
                .context("starting ovsdb-server (is openvswitch-switch installed? scripts/setup.sh does it)")?,
        );
        wait_for(&socket, "ovsdb-server")?;
        switch.vsctl(&["--no-wait", "init"])?;
        switch.vswitchd = Some(
            switch
                .daemon(node, "ovs-vswitchd")
                .arg(format!("unix:{}", socket.display()))
                .spawn()
                .context("starting ovs-vswitchd")?,
        );
        wait_for(&dir.join("ovs-vswitchd.ctl"), "ovs-vswitchd")?;
        Ok(switch)
    }

    /// An OVS tool that finds this switch's sockets and files through the environment.
    fn tool(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        for var in ["OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR"] {
            cmd.env(var, &self.dir);
        }
        cmd
    }

    /// A daemon in `node`, in the foreground (so it is our child and stops by PID),
    /// with its control socket and log in the switch's directory.
    fn daemon(&self, node: &Netns, program: &str) -> Command {
        let mut cmd = node.command(program);
        for var in ["OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR"] {
            cmd.env(var, &self.dir);
        }
        cmd.arg(format!("--unixctl={}", self.dir.join(format!("{program}.ctl")).display()))
            .arg(format!("--log-file={}", self.dir.join(format!("{program}.log")).display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }

    pub fn vsctl(&self, args: &[&str]) -> Result<String> {
        run(self
            .tool("ovs-vsctl")
            .arg(format!("--db=unix:{}", self.dir.join("db.sock").display()))
            .arg("--timeout=20")
            .args(args))
    }

    /// Installs OpenFlow 1.3 flows, one per line, on `bridge`.
    pub fn add_flows(&self, bridge: &str, flows: &[String]) -> Result<()> {
        let file = self.dir.join(format!("{bridge}.flows"));
        std::fs::write(&file, flows.join("\n") + "\n")?;
        run(self.tool("ovs-ofctl").args(["-O", "OpenFlow13", "add-flows", bridge]).arg(&file)).map(|_| ())
    }
}

fn wait_for(path: &Path, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        if Instant::now() > deadline {
            bail!("{what} did not create {} within 10 s", path.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

impl Drop for OvsSwitch {
    fn drop(&mut self) {
        for child in [self.vswitchd.take(), self.ovsdb.take()].into_iter().flatten() {
            let mut child = child;
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A pod plugged into an OVS node: its namespace and address.
pub struct OvsPod {
    pub netns: Netns,
    pub ip: Ipv4Addr,
}

/// A node's br0 with its pods, and `br-phy` carrying the underlay address when the
/// node has a peer (the userspace datapath sends tunnel packets out of an OVS bridge
/// port, so the node's underlay interface becomes a port of `br-phy`).
pub struct OvsNode {
    pub pods: Vec<OvsPod>,
    /// Stops the node's daemons when the node is dropped.
    switch: OvsSwitch,
}

impl OvsNode {
    /// The process of the node's userspace datapath (ovs-vswitchd forwards every packet).
    pub fn datapath_pid(&self) -> Option<u32> {
        self.switch.vswitchd.as_ref().map(Child::id)
    }
}

/// The other node of a two-node OVS cluster: its underlay address and pod subnet.
pub struct Peer {
    pub ip: Ipv4Addr,
    pub index: u8,
}

/// Sets up node `index` (pods in 10.94.<index>.0/24) in `node` with `pod_count` pods
/// named `<prefix>-<index>-<n>`, and, with a peer, the VXLAN overlay to it over `node`'s
/// `eth0` at `node_ip`.
pub fn node(
    node: &Netns,
    prefix: &str,
    dir: &Path,
    index: u8,
    pod_count: u8,
    overlay: Option<(Ipv4Addr, Peer)>,
) -> Result<OvsNode> {
    let switch = OvsSwitch::start(node, dir)?;
    switch.vsctl(&[
        "add-br",
        "br0",
        "--",
        "set",
        "bridge",
        "br0",
        "datapath_type=netdev",
        "protocols=OpenFlow13",
        "fail_mode=secure",
    ])?;
    let mut flows = base_flows();
    let subnet = format!("10.94.{index}.0/24");
    flows.push(format!("table=30,priority=200,arp,arp_tpa={subnet},actions=goto_table:40"));
    flows.push(format!("table=30,priority=200,ip,nw_dst={subnet},actions=goto_table:70"));
    if let Some((node_ip, peer)) = &overlay {
        underlay_bridge(&switch, node, *node_ip)?;
        switch.vsctl(&[
            "add-port",
            "br0",
            "vxlan0",
            "--",
            "set",
            "interface",
            "vxlan0",
            "type=vxlan",
            "options:remote_ip=flow",
            "options:key=flow",
            "options:dst_port=4789",
            &format!("ofport_request={VXLAN_PORT}"),
        ])?;
        flows.extend(peer_flows(peer));
    }
    let mtu = if overlay.is_some() { OVERLAY_MTU } else { "1500" };
    let mut pods = Vec::new();
    for n in 0..pod_count {
        let ip = Ipv4Addr::new(10, 94, index, 2 + n);
        let port = u32::from(3 + n);
        let netns = Netns::create(&format!("{prefix}-{index}-{n}"))?;
        let link = format!("veth{n}");
        node.ip(&["link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &netns.name])?;
        node.ip(&["link", "set", &link, "up"])?;
        let o = ip.octets();
        netns.ip(&[
            "link",
            "set",
            "eth0",
            "address",
            &format!("0a:58:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3]),
            "mtu",
            mtu,
        ])?;
        netns.ip(&["addr", "add", &format!("{ip}/16"), "dev", "eth0"])?;
        netns.ip(&["link", "set", "eth0", "up"])?;
        // AF_PACKET hands OVS the veth's frames with checksums left to offload, which the
        // userspace datapath forwards unfilled: the pod computes them itself.
        run(netns.command("ethtool").args(["-K", "eth0", "tx", "off"]))?;
        switch.vsctl(&[
            "add-port",
            "br0",
            &link,
            "--",
            "set",
            "interface",
            &link,
            &format!("ofport_request={port}"),
        ])?;
        flows.extend(pod_flows(ip, port));
        pods.push(OvsPod { netns, ip });
    }
    switch.add_flows("br0", &flows)?;
    Ok(OvsNode { pods, switch })
}

/// Moves the node's underlay address from `eth0` to the internal port of `br-phy`, a
/// plain learning bridge with `eth0` as its uplink.
fn underlay_bridge(switch: &OvsSwitch, node: &Netns, node_ip: Ipv4Addr) -> Result<()> {
    switch.vsctl(&["add-br", "br-phy", "--", "set", "bridge", "br-phy", "datapath_type=netdev"])?;
    switch.vsctl(&["add-port", "br-phy", "eth0"])?;
    node.ip(&["addr", "flush", "dev", "eth0"])?;
    node.ip(&["addr", "add", &format!("{node_ip}/24"), "dev", "br-phy"])?;
    node.ip(&["link", "set", "br-phy", "up"])?;
    Ok(())
}

/// The setup flows: classification by port, the default drops, routing on destination
/// and the multitenant isolation rule of VNID 0.
fn base_flows() -> Vec<String> {
    [
        // Table 0: from vxlan0 only cluster traffic, with its VNID into reg0; pods → 20.
        format!("table=0,priority=200,in_port={VXLAN_PORT},arp,arp_spa={CLUSTER_CIDR},actions=move:NXM_NX_TUN_ID[0..31]->NXM_NX_REG0[],goto_table:10"),
        format!("table=0,priority=200,in_port={VXLAN_PORT},ip,nw_src={CLUSTER_CIDR},actions=move:NXM_NX_TUN_ID[0..31]->NXM_NX_REG0[],goto_table:10"),
        format!("table=0,priority=150,in_port={VXLAN_PORT},actions=drop"),
        "table=0,priority=100,arp,actions=goto_table:20".into(),
        "table=0,priority=100,ip,actions=goto_table:20".into(),
        "table=0,priority=0,actions=drop".into(),
        "table=10,priority=0,actions=drop".into(),
        "table=20,priority=0,actions=drop".into(),
        "table=21,priority=0,actions=goto_table:30".into(),
        // Table 30: local pods (40/70), other nodes' pods (50/90).
        "table=30,priority=0,actions=drop".into(),
        "table=40,priority=0,actions=drop".into(),
        "table=50,priority=0,actions=drop".into(),
        "table=70,priority=0,actions=drop".into(),
        // Table 80: deliver iff reg0 == 0 ∨ reg1 == 0 ∨ reg0 == reg1.
        "table=80,priority=200,reg0=0,actions=output:NXM_NX_REG2[]".into(),
        "table=80,priority=200,reg1=0,actions=output:NXM_NX_REG2[]".into(),
        format!("table=80,priority=100,reg0={VNID},reg1={VNID},actions=output:NXM_NX_REG2[]"),
        "table=80,priority=0,actions=drop".into(),
        "table=90,priority=0,actions=drop".into(),
    ]
    .into()
}

/// Flows of one pod on `port`: anti-spoofing with its VNID (20), ARP (40), delivery (70).
fn pod_flows(ip: Ipv4Addr, port: u32) -> Vec<String> {
    let o = ip.octets();
    let mac_tail = format!("00:00:{:02x}:{:02x}:{:02x}:{:02x}/00:00:ff:ff:ff:ff", o[0], o[1], o[2], o[3]);
    vec![
        format!("table=20,priority=100,in_port={port},arp,arp_spa={ip},arp_sha={mac_tail},actions=load:{VNID}->NXM_NX_REG0[],goto_table:21"),
        format!("table=20,priority=100,in_port={port},ip,nw_src={ip},actions=load:{VNID}->NXM_NX_REG0[],goto_table:21"),
        format!("table=40,priority=100,arp,arp_tpa={ip},actions=output:{port}"),
        format!("table=70,priority=100,ip,nw_dst={ip},actions=load:{VNID}->NXM_NX_REG1[],load:{port}->NXM_NX_REG2[],goto_table:80"),
    ]
}

/// Flows toward and from the peer node: its VXLAN source accepted (10), its subnet
/// reached through the tunnel with the source VNID as the key (50/90).
fn peer_flows(peer: &Peer) -> Vec<String> {
    let subnet = format!("10.94.{}.0/24", peer.index);
    let to_tunnel =
        format!("move:NXM_NX_REG0[]->NXM_NX_TUN_ID[0..31],set_field:{}->tun_dst,output:{VXLAN_PORT}", peer.ip);
    vec![
        format!("table=10,priority=100,tun_src={},actions=goto_table:30", peer.ip),
        format!("table=30,priority=100,arp,arp_tpa={CLUSTER_CIDR},actions=goto_table:50"),
        format!("table=30,priority=100,ip,nw_dst={CLUSTER_CIDR},actions=goto_table:90"),
        format!("table=50,priority=100,arp,arp_tpa={subnet},actions={to_tunnel}"),
        format!("table=90,priority=100,ip,nw_dst={subnet},actions={to_tunnel}"),
    ]
}
