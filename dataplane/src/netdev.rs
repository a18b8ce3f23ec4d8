//! The node's network devices: tun0 (OpenShift's gateway port) and pod host veths.
//!
//! tun0 is one end of a veth pair whose other end (`tun0-peer`) never carries traffic:
//! `from_tun0` on tun0's egress redirects or drops every frame the host sends, and
//! `from_pod` hands frames to the host by redirecting them into tun0's ingress.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::BorrowedFd;

use anyhow::{Context, Result};
use ipnetwork::Ipv4Network;
use netlink_packet_route::neighbour::NeighbourState;
use oxsdn_cni::{netlink, netns::with_netlink};
use rtnetlink::{LinkVxlan, RouteMessageBuilder};

pub const TUN0: &str = "tun0";
pub const TUN0_PEER: &str = "tun0-peer";
/// The overlay device: VXLAN in collect_md ("external") mode, so the programs choose
/// the remote node and the VNI per packet (OVS's `remote_ip=flow`, `key=flow`).
pub const VXLAN0: &str = "vxlan0";

pub fn ifindex(name: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(name).ok()
}

/// The name and ifindex of the device that holds `ip`, if one does.
pub fn device_with_address(ip: Ipv4Addr) -> Result<Option<(String, u32)>> {
    for entry in nix::ifaddrs::getifaddrs().context("listing the node's addresses")? {
        let holds = entry.address.as_ref().and_then(|a| a.as_sockaddr_in()).is_some_and(|a| a.ip() == ip);
        if holds {
            if let Some(index) = ifindex(&entry.interface_name) {
                return Ok(Some((entry.interface_name, index)));
            }
        }
    }
    Ok(None)
}

/// What the link of a pod's host-side veth name is on the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostVeth {
    /// No link of that name.
    Absent,
    /// A link of that name that no pod port can be: not a veth, or a veth whose peer
    /// is in the node's own namespace (as tun0's).
    Foreign(&'static str),
    /// A veth whose peer lives in another network namespace, which the node's namespace
    /// knows by id `peer_netnsid`.
    Veth { ifindex: u32, peer_netnsid: i32 },
}

/// What the link called `name` is and, given `netns`, the id the node's namespace gives
/// that namespace (`None` if it has none: no veth of the node has its peer there).
pub fn inspect_host_veth(name: &str, netns: Option<BorrowedFd<'_>>) -> Result<(HostVeth, Option<i32>)> {
    with_netlink(|h| async move {
        let link = netlink::get_link(&h, name).await.with_context(|| format!("looking up {name}"))?;
        let veth = match link {
            None => HostVeth::Absent,
            Some(l) if !l.veth => HostVeth::Foreign("it is not a veth"),
            Some(l) => match l.peer_netnsid {
                None => HostVeth::Foreign("its peer is in the node's own network namespace"),
                Some(peer_netnsid) => HostVeth::Veth { ifindex: l.index, peer_netnsid },
            },
        };
        let netns_id = match netns {
            Some(fd) => netlink::netns_id(&h, fd).await.context("asking for a network namespace's id")?,
            None => None,
        };
        Ok((veth, netns_id))
    })?
}

/// Deletes link `ifindex` if it still exists (and with a veth, its peer).
pub fn delete_link_index(ifindex: u32) -> Result<()> {
    with_netlink(|h| async move {
        match netlink::delete_link(&h, ifindex).await {
            Err(e) if netlink::is_not_found(&e) => Ok(()),
            r => r,
        }
    })?
    .with_context(|| format!("deleting link {ifindex}"))
}

/// Deletes a link if it exists (deleting either end of a veth removes both).
pub fn delete_link(name: &str) -> Result<()> {
    with_netlink(|h| async move { netlink::delete_link_by_name(&h, name).await })?
        .with_context(|| format!("deleting link {name}"))?;
    Ok(())
}

/// What tun0 must look like.
pub struct Tun0 {
    pub gateway: Ipv4Addr,
    pub subnet: Ipv4Network,
    pub mtu: u32,
    /// Reached on-link through tun0: the host ARPs for each address (pods answer).
    pub cluster_network: Ipv4Network,
    /// Reached through tun0 via `SERVICE_NEXT_HOP`: no ClusterIP answers ARP, so the
    /// host sends to one fixed neighbour and table 61 translates.
    pub service_network: Ipv4Network,
}

/// A link-local next hop for the service network, with a permanent neighbour entry on
/// tun0 (tun0-peer's MAC; frames never get there, the egress program takes them).
pub const SERVICE_NEXT_HOP: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 1);

/// Creates tun0 or brings an existing one to the wanted state (address, MTU, up,
/// routes); every setting is asserted each time, since drift (OpenShift's tun0 MTU
/// falling back to 1500) silently black-holes traffic. Returns tun0's ifindex.
pub fn ensure_tun0(want: &Tun0) -> Result<u32> {
    with_netlink(|h| async move {
        if netlink::get_link(&h, TUN0).await?.is_none() {
            netlink::create_veth(&h, TUN0, TUN0_PEER, want.mtu, None).await.context("creating tun0")?;
        }
        let mut tun0 = None;
        let mut peer_mac = None;
        for name in [TUN0_PEER, TUN0] {
            let link = netlink::get_link(&h, name).await?.with_context(|| format!("{name} vanished"))?;
            netlink::configure_up(&h, link.index, None, want.mtu).await?;
            if name == TUN0_PEER {
                peer_mac = link.mac.clone();
            }
            tun0 = Some(link.index);
        }
        let index = tun0.context("tun0 vanished")?;
        match netlink::add_address(&h, index, want.gateway, want.subnet.prefix()).await {
            Err(e) if netlink::errno(&e) == Some(libc::EEXIST) => {}
            r => r.context("adding the gateway address to tun0")?,
        }
        let cluster = want.cluster_network;
        netlink::add_onlink_route(&h, index, cluster.network(), cluster.prefix())
            .await
            .with_context(|| format!("routing {cluster} via tun0"))?;
        h.neighbours()
            .add(index, IpAddr::V4(SERVICE_NEXT_HOP))
            .link_layer_address(&peer_mac.context("tun0-peer has no MAC")?)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .context("adding the service next hop's neighbour entry")?;
        let services = want.service_network;
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(services.network(), services.prefix())
            .output_interface(index)
            .gateway(SERVICE_NEXT_HOP)
            .onlink()
            .build();
        h.route().add(route).replace().execute().await.with_context(|| format!("routing {services} via tun0"))?;
        Ok(index)
    })?
}

/// Creates vxlan0 (or checks the existing one) on UDP `port`, with the pod MTU.
/// Returns its ifindex.
pub fn ensure_vxlan0(port: u16, mtu: u32) -> Result<u32> {
    with_netlink(|h| async move {
        if netlink::get_link(&h, VXLAN0).await?.is_none() {
            let vxlan = LinkVxlan::new(VXLAN0, 0).collect_metadata(true).port(port).learning(false).build();
            h.link().add(vxlan).execute().await.context("creating vxlan0")?;
        }
        let link = netlink::get_link(&h, VXLAN0).await?.context("vxlan0 vanished")?;
        netlink::configure_up(&h, link.index, None, mtu).await?;
        Ok(link.index)
    })?
}

/// Turns IPv6 off on one of our devices: the pipeline carries IPv4 and ARP only, and
/// the host's IPv6 chatter would only fill table 0's drop counter.
pub fn disable_ipv6(ifname: &str) -> Result<()> {
    let path = format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6");
    match std::fs::write(&path, "1") {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).with_context(|| format!("writing {path}")),
        _ => Ok(()),
    }
}

/// Makes `fq` the root qdisc of link `ifindex` (replacing whatever was there): the
/// queue that holds a paced packet until the departure time the programs gave it
/// (`oxsdn_common::bandwidth`). Only on devices oxsdn owns: pods' host veths and, when
/// a pod's egress is limited, the node's underlay device. `false`: this kernel has no
/// `fq` (`CONFIG_NET_SCH_FQ`); the limits then hold as the programs' token bucket.
pub fn ensure_fq(ifindex: u32) -> Result<bool> {
    use futures::StreamExt;
    use rtnetlink::packet_core::{
        NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST,
    };
    use rtnetlink::packet_route::{
        tc::{TcAttribute, TcHandle, TcMessage},
        RouteNetlinkMessage,
    };
    with_netlink(|mut h| async move {
        let mut message = TcMessage::with_index(ifindex as i32);
        message.header.parent = TcHandle::ROOT;
        message.attributes.push(TcAttribute::Kind("fq".to_string()));
        let mut request = NetlinkMessage::from(RouteNetlinkMessage::NewQueueDiscipline(message));
        request.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        let mut responses = h.request(request)?;
        while let Some(response) = responses.next().await {
            if let NetlinkPayload::Error(e) = response.payload {
                match e.raw_code() {
                    0 => {}
                    // The kernel knows no qdisc of that kind.
                    code if code == -libc::ENOENT => return Ok(false),
                    _ => return Err(anyhow::anyhow!("{e}")),
                }
            }
        }
        Ok(true)
    })?
    .with_context(|| format!("putting the fq qdisc on link {ifindex}"))
}
