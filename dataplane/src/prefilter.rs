//! The underlay device's XDP prefilter (`xdp_underlay`, table 0's and 10's rules at the
//! XDP hook): the mode the agent attaches it in, the mode the kernel runs it in, and the
//! operator's deny list (`PREFILTER_DENY`).

use std::{fmt, path::Path};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use futures::TryStreamExt;
use ipnetwork::Ipv4Network;
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage, LinkXdp, XdpAttached};
use oxsdn_cni::{netlink, netns::with_netlink};
use oxsdn_common::MAX_PREFILTER_DENY;

use crate::{
    entries::subnet_key,
    health,
    maps::{ignore_missing, ip_from_key, ip_key, NodeMaps},
};

/// The link pin of the prefilter, under `<pins>/links/` (named for its role, as the
/// underlay's TC link).
pub const PIN: &str = "underlay-xdp";

/// How the agent attaches the prefilter (`oxsdn-agent --prefilter`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PrefilterMode {
    /// In the driver where it has XDP; none on a veth or where the driver has no XDP:
    /// there a frame is an skb already, so XDP saves no allocation, and either mode
    /// costs legitimate traffic (on a veth native XDP cut cross-node TCP to a third,
    /// generic to three quarters; docs/design.md).
    #[default]
    Auto,
    /// In the driver only: the agent fails to start where the driver has no XDP.
    Native,
    /// Generic XDP: after the driver built the skb (no gain in allocation, but the
    /// same drops before the rest of the stack).
    Generic,
    /// No prefilter: the TC programs and the host stack drop what it would.
    Off,
}

/// Which VXLAN from known nodes to local pods the prefilter takes off itself and
/// redirects to the pod's veth (`oxsdn-agent --xdp-decap`, `NodeConfig.xdp_decap`);
/// the rest `from_underlay` takes off at TC. Needs the prefilter in generic mode. On a
/// veth underlay it beat TC's decapsulation behind the same hook for small UDP packets
/// but not the default without any XDP hook, and not for TCP (docs/design.md, "XDP
/// decapsulation for local pods"): hence `off` by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpDecap {
    /// `from_underlay` at TC takes every frame off (GRO and GSO aggregates kept).
    #[default]
    Off,
    /// UDP and ICMP at XDP, TCP at TC.
    NonTcp,
    /// UDP, ICMP and TCP at XDP.
    All,
}

impl XdpDecap {
    /// The setting's name for `NodeConfig.xdp_decap`'s `flags`.
    pub fn named(flags: u16) -> String {
        [XdpDecap::Off, XdpDecap::NonTcp, XdpDecap::All]
            .into_iter()
            .find(|d| d.flags() == flags)
            .and_then(|d| d.to_possible_value())
            .map_or_else(|| format!("{flags:#x}"), |v| v.get_name().to_string())
    }

    /// `NodeConfig.xdp_decap`.
    pub fn flags(self) -> u16 {
        match self {
            XdpDecap::Off => 0,
            XdpDecap::NonTcp => oxsdn_common::xdp_decap::NON_TCP,
            XdpDecap::All => oxsdn_common::xdp_decap::NON_TCP | oxsdn_common::xdp_decap::TCP,
        }
    }
}

/// The mode the kernel runs an XDP program in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// In the driver, before an skb exists.
    Native,
    /// In the core stack on the skb (`XDP_FLAGS_SKB_MODE`).
    Generic,
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        })
    }
}

impl PrefilterMode {
    /// The mode to attach in on a device (a veth or not), if any.
    pub fn attempts(self, veth: bool) -> &'static [XdpMode] {
        match self {
            PrefilterMode::Auto if veth => &[],
            PrefilterMode::Auto | PrefilterMode::Native => &[XdpMode::Native],
            PrefilterMode::Generic => &[XdpMode::Generic],
            PrefilterMode::Off => &[],
        }
    }

    /// Whether a program running in `mode` on a device (a veth or not) is what this
    /// setting asks for.
    pub fn accepts(self, mode: XdpMode, veth: bool) -> bool {
        self.attempts(veth).first() == Some(&mode)
    }
}

/// Device `ifindex` of this network namespace as netlink describes it.
fn link(ifindex: u32) -> Result<LinkMessage> {
    with_netlink(|h| async move {
        let message = match h.link().get().match_index(ifindex).execute().try_next().await {
            Err(e) if netlink::is_not_found(&e) => None,
            r => r.with_context(|| format!("looking up device {ifindex}"))?,
        };
        message.with_context(|| format!("no device with index {ifindex}"))
    })?
}

/// Whether device `ifindex` of this network namespace is a veth.
pub fn is_veth(ifindex: u32) -> Result<bool> {
    Ok(link(ifindex)?.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(info) => info.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth))),
        _ => false,
    }))
}

/// The mode of the XDP program attached to device `ifindex` of this network namespace,
/// if one is (`IFLA_XDP_ATTACHED`).
pub fn xdp_mode(ifindex: u32) -> Result<Option<XdpMode>> {
    let attached = link(ifindex)?.attributes.iter().find_map(|a| match a {
        LinkAttribute::Xdp(xdp) => xdp.iter().find_map(|x| match x {
            LinkXdp::Attached(attached) => Some(*attached),
            _ => None,
        }),
        _ => None,
    });
    Ok(match attached {
        Some(XdpAttached::Driver) => Some(XdpMode::Native),
        Some(XdpAttached::SocketBuffer) => Some(XdpMode::Generic),
        _ => None,
    })
}

/// Where the prefilter runs, as the kernel says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Attached {
    /// 0 once the device is gone (the link outlived it).
    pub ifindex: u32,
    pub prog_id: u32,
    /// None if the device has no XDP program any more (the link outlived it).
    pub mode: Option<XdpMode>,
}

/// The prefilter of the node pinned in `pin_dir`, if its link is pinned: run it in the
/// node's network namespace (the device is looked up there).
pub fn attached(pin_dir: &Path) -> Result<Option<Attached>> {
    let pin = pin_dir.join("links").join(PIN);
    if !pin.exists() {
        return Ok(None);
    }
    let link = health::pinned_xdp_link(&pin)?;
    let mode = if link.ifindex == 0 { None } else { xdp_mode(link.ifindex)? };
    Ok(Some(Attached { ifindex: link.ifindex, prog_id: link.prog_id, mode }))
}

/// `--prefilter-deny`'s CIDRs: the network address with a prefix, at most
/// `MAX_PREFILTER_DENY` of them.
pub fn parse_deny_cidr(s: &str) -> Result<Ipv4Network, String> {
    if !s.contains('/') {
        return Err(format!("{s:?} has no prefix length (a CIDR such as 203.0.113.0/24; /32 for one address)"));
    }
    let net: Ipv4Network = s.parse().map_err(|e| format!("{s:?} is not an IPv4 CIDR: {e}"))?;
    if net.ip() != net.network() {
        return Err(format!("{s:?} has host bits set: did you mean {}/{}?", net.network(), net.prefix()));
    }
    Ok(net)
}

/// Makes `PREFILTER_DENY` hold exactly `deny`: the new entries first, then the stale
/// ones removed, so a network in both lists is never let through meanwhile.
pub fn set_deny_list(maps: &mut NodeMaps, deny: &[Ipv4Network]) -> Result<()> {
    if deny.len() > MAX_PREFILTER_DENY as usize {
        bail!("the prefilter's deny list holds at most {MAX_PREFILTER_DENY} networks, not {}", deny.len());
    }
    for net in deny {
        maps.prefilter_deny.insert(&subnet_key(*net), 1, 0).with_context(|| format!("denying {net}"))?;
    }
    let stale: Vec<_> = maps
        .prefilter_deny
        .keys()
        .filter_map(|k| k.ok())
        .filter(|k| {
            !deny.iter().any(|net| (u32::from(net.prefix()), ip_key(net.network())) == (k.prefix_len(), k.data()))
        })
        .collect();
    for key in stale {
        ignore_missing(maps.prefilter_deny.remove(&key))?;
    }
    Ok(())
}

/// The networks `PREFILTER_DENY` holds, sorted.
pub fn deny_list(maps: &NodeMaps) -> Result<Vec<Ipv4Network>> {
    let mut nets = Vec::new();
    for key in maps.prefilter_deny.keys() {
        let key = key?;
        nets.push(Ipv4Network::new(ip_from_key(key.data()), key.prefix_len() as u8)?);
    }
    nets.sort();
    Ok(nets)
}

/// The prefilter of the node pinned in `pin_dir` in one line, as `dump-flows` heads its
/// rules with it: where it runs and in which mode, and the deny list.
pub fn describe(pin_dir: &Path, maps: &NodeMaps) -> String {
    let hook = match attached(pin_dir) {
        Ok(None) => "off".to_string(),
        Ok(Some(Attached { ifindex, mode, .. })) => {
            let mode = mode.map_or("detached".to_string(), |m| format!("{m} XDP"));
            format!("{} on {} ({mode})", crate::loader::XDP_UNDERLAY, crate::flows::ifname_or_index(ifindex))
        }
        Err(e) => format!("unknown ({e:#})"),
    };
    let deny = match deny_list(maps) {
        Ok(nets) if nets.is_empty() => "none".to_string(),
        Ok(nets) => nets.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(","),
        Err(e) => format!("unknown ({e:#})"),
    };
    let decap = match maps.config.get(&0, 0) {
        Ok(config) => XdpDecap::named(config.xdp_decap),
        Err(e) => format!("unknown ({e})"),
    };
    format!("prefilter={hook}, deny_list={deny}, xdp_decap={decap}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_cidrs_are_networks_with_a_prefix() {
        assert_eq!(parse_deny_cidr("203.0.113.0/24"), Ok("203.0.113.0/24".parse().unwrap()));
        assert_eq!(parse_deny_cidr("198.51.100.7/32"), Ok("198.51.100.7/32".parse().unwrap()));
        assert!(parse_deny_cidr("203.0.113.0").unwrap_err().contains("no prefix length"));
        assert!(parse_deny_cidr("203.0.113.9/24").unwrap_err().contains("did you mean 203.0.113.0/24?"));
        assert!(parse_deny_cidr("203.0.113.0/33").unwrap_err().contains("not an IPv4 CIDR"));
        assert!(parse_deny_cidr("2001:db8::/32").unwrap_err().contains("not an IPv4 CIDR"));
    }

    #[test]
    fn auto_is_native_but_on_a_veth() {
        assert!(PrefilterMode::Auto.accepts(XdpMode::Native, false));
        assert!(!PrefilterMode::Auto.accepts(XdpMode::Generic, false));
        assert!(PrefilterMode::Auto.attempts(true).is_empty());
        assert!(!PrefilterMode::Auto.accepts(XdpMode::Generic, true));
        assert!(!PrefilterMode::Auto.accepts(XdpMode::Native, true));
        assert!(PrefilterMode::Generic.accepts(XdpMode::Generic, false));
        assert!(PrefilterMode::Native.accepts(XdpMode::Native, true));
        assert!(!PrefilterMode::Native.accepts(XdpMode::Generic, false));
        assert!(!PrefilterMode::Off.accepts(XdpMode::Native, false));
    }
}
