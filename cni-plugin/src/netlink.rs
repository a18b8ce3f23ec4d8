//! Small rtnetlink helpers (links, addresses, routes) used by the plugin and reusable by the
//! node agent. Each works on the namespace of the `Handle` it is given (see [`crate::netns`]).

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

use futures::{StreamExt, TryStreamExt};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, State,
};
use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
use netlink_packet_route::route::RouteScope;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
pub use rtnetlink::{Error, Handle};
use rtnetlink::{LinkUnspec, LinkVeth, RouteMessageBuilder};

pub type NlResult<T> = Result<T, Error>;

/// The (positive) errno of a netlink error, if it is one.
pub fn errno(e: &Error) -> Option<i32> {
    match e {
        Error::NetlinkError(m) => Some(m.raw_code().abs()).filter(|c| *c != 0),
        _ => None,
    }
}

/// "No such device" / "no such file": the object is absent.
pub fn is_not_found(e: &Error) -> bool {
    matches!(errno(e), Some(libc::ENODEV) | Some(libc::ENOENT))
}

/// The parts of a link the plugin looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<Vec<u8>>,
    pub mtu: Option<u32>,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// Operationally up (IF_OPER_UP): set by the kernel's link watcher, which also
    /// starts the link's transmit queue when its carrier comes on.
    pub running: bool,
    /// A veth (`IFLA_INFO_KIND` "veth").
    pub veth: bool,
    /// `IFLA_LINK`: for a veth, its peer's ifindex (in the peer's namespace).
    pub peer_index: Option<u32>,
    /// `IFLA_LINK_NETNSID`: the id, in this link's namespace, of the namespace its peer
    /// lives in; absent when the peer is in the same namespace.
    pub peer_netnsid: Option<i32>,
}

impl Link {
    fn from_message(m: &LinkMessage) -> Link {
        let mut l = Link {
            index: m.header.index,
            name: String::new(),
            mac: None,
            mtu: None,
            up: m.header.flags.contains(LinkFlags::Up),
            running: false,
            veth: false,
            peer_index: None,
            peer_netnsid: None,
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => l.name = n.clone(),
                LinkAttribute::Address(mac) => l.mac = Some(mac.clone()),
                LinkAttribute::Mtu(mtu) => l.mtu = Some(*mtu),
                LinkAttribute::OperState(state) => l.running = *state == State::Up,
                LinkAttribute::Link(peer) => l.peer_index = Some(*peer),
                LinkAttribute::LinkNetNsId(id) => l.peer_netnsid = Some(*id),
                LinkAttribute::LinkInfo(info) => l.veth = info.contains(&LinkInfo::Kind(InfoKind::Veth)),
                _ => {}
            }
        }
        l
    }
}

/// The link called `name`, or `None`.
pub async fn get_link(h: &Handle, name: &str) -> NlResult<Option<Link>> {
    let mut s = h.link().get().match_name(name.to_string()).execute();
    match s.try_next().await {
        Ok(m) => Ok(m.as_ref().map(Link::from_message)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The link with index `index`, or `None`.
pub async fn get_link_by_index(h: &Handle, index: u32) -> NlResult<Option<Link>> {
    let mut s = h.link().get().match_index(index).execute();
    match s.try_next().await {
        Ok(m) => Ok(m.as_ref().map(Link::from_message)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Create the veth pair `name` <-> `peer`, both with `mtu`, both down: `name` in the
/// handle's namespace, `peer` there too or, given `peer_netns`, directly in that one
/// (one netlink request instead of create, move and rename: each takes the kernel's
/// machine-wide RTNL lock, which concurrent pod set-ups queue on).
pub async fn create_veth(
    h: &Handle,
    name: &str,
    peer: &str,
    mtu: u32,
    peer_netns: Option<BorrowedFd<'_>>,
) -> NlResult<()> {
    let mut peer_msg = LinkUnspec::new_with_name(peer).mtu(mtu);
    if let Some(ns) = peer_netns {
        peer_msg = peer_msg.setns_by_fd(ns.as_raw_fd());
    }
    let msg =
        LinkVeth::new(name, peer).mtu(mtu).set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg.build()))).build();
    h.link().add(msg).execute().await
}

/// Sets link `index`'s MAC (if given) and MTU and brings it up, in one request.
pub async fn configure_up(h: &Handle, index: u32, mac: Option<[u8; 6]>, mtu: u32) -> NlResult<()> {
    let msg = LinkUnspec::new_with_index(index).mtu(mtu).up();
    let msg = match mac {
        Some(mac) => msg.address(mac.to_vec()),
        None => msg,
    };
    h.link().set(msg.build()).execute().await
}

pub async fn set_up(h: &Handle, index: u32) -> NlResult<()> {
    h.link().set(LinkUnspec::new_with_index(index).up().build()).execute().await
}

/// Add `ip/prefix_len` (with its broadcast address) to link `index`.
pub async fn add_address(h: &Handle, index: u32, ip: Ipv4Addr, prefix_len: u8) -> NlResult<()> {
    h.address().add(index, IpAddr::V4(ip), prefix_len).execute().await
}

/// The IPv4 addresses (with prefix lengths) of link `index`.
pub async fn ipv4_addresses(h: &Handle, index: u32) -> NlResult<Vec<(Ipv4Addr, u8)>> {
    let mut s = h.address().get().set_link_index_filter(index).execute();
    let mut out = Vec::new();
    while let Some(m) = s.try_next().await? {
        if m.header.family != AddressFamily::Inet || m.header.index != index {
            continue;
        }
        let mut addr = None;
        for a in &m.attributes {
            match a {
                AddressAttribute::Local(IpAddr::V4(ip)) => addr = Some(*ip),
                AddressAttribute::Address(IpAddr::V4(ip)) if addr.is_none() => addr = Some(*ip),
                _ => {}
            }
        }
        if let Some(ip) = addr {
            out.push((ip, m.header.prefix_len));
        }
    }
    Ok(out)
}

/// `dst/prefix_len dev <index> scope link` (replacing an existing route to the same prefix).
pub async fn add_onlink_route(h: &Handle, index: u32, dst: Ipv4Addr, prefix_len: u8) -> NlResult<()> {
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst, prefix_len)
        .output_interface(index)
        .scope(RouteScope::Link)
        .build();
    h.route().add(route).replace().execute().await
}

/// `default via <gw> dev <index>` (replacing an existing default route).
pub async fn add_default_route(h: &Handle, index: u32, gw: Ipv4Addr) -> NlResult<()> {
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
        .gateway(gw)
        .output_interface(index)
        .build();
    h.route().add(route).replace().execute().await
}

/// Delete link `index` (deleting one end of a veth pair deletes both).
pub async fn delete_link(h: &Handle, index: u32) -> NlResult<()> {
    h.link().del(index).execute().await
}

/// Delete the link called `name` if there is one; `Ok(false)` when there was none.
pub async fn delete_link_by_name(h: &Handle, name: &str) -> NlResult<bool> {
    let Some(link) = get_link(h, name).await? else {
        return Ok(false);
    };
    match delete_link(h, link.index).await {
        Ok(()) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The id the handle's namespace gives the network namespace `netns` (`RTM_GETNSID`), as
/// a veth's `IFLA_LINK_NETNSID` names its peer's namespace; `None` when it has none (no
/// link of this namespace has a peer there).
pub async fn netns_id(h: &Handle, netns: BorrowedFd<'_>) -> NlResult<Option<i32>> {
    let mut msg = NsidMessage::default();
    msg.attributes.push(NsidAttribute::Fd(netns.as_raw_fd() as u32));
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetNsId(msg));
    req.header.flags = NLM_F_REQUEST;
    let mut responses = h.clone().request(req)?;
    while let Some(response) = responses.next().await {
        match response.payload {
            NetlinkPayload::Error(e) => return Err(Error::NetlinkError(e)),
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNsId(m)) => {
                let id = m.attributes.iter().find_map(|a| match a {
                    NsidAttribute::Id(id) => Some(*id),
                    _ => None,
                });
                return Ok(id.filter(|id| *id >= 0));
            }
            _ => {}
        }
    }
    Ok(None)
}

/// `"0a:58:0a:80:00:05"` as bytes.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        let p = parts.next()?;
        if p.len() != 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(parse_mac("0a:58:0a:80:00:05"), Some([0x0a, 0x58, 0x0a, 0x80, 0x00, 0x05]));
        assert_eq!(parse_mac("0A:58:0A:80:00:FF"), Some([0x0a, 0x58, 0x0a, 0x80, 0x00, 0xff]));
        for bad in [
            "",
            "0a:58:0a:80:00",
            "0a:58:0a:80:00:05:06",
            "0a:58:0a:80:00:5",
            "0a-58-0a-80-00-05",
            "zz:58:0a:80:00:05",
            "+a:58:0a:80:00:05",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }

    #[test]
    fn errnos() {
        let mut e = Error::NetlinkError(Default::default());
        if let Error::NetlinkError(m) = &mut e {
            m.code = std::num::NonZeroI32::new(-libc::ENODEV);
        }
        assert_eq!(errno(&e), Some(libc::ENODEV));
        assert!(is_not_found(&e));
        assert!(!is_not_found(&Error::RequestFailed));
    }
}
