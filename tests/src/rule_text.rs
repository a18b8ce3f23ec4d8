//! The match text of a rule (`oxsdn_tables` `rules!`, as `dump-flows` prints it with its
//! placeholders filled in) read as Open vSwitch would read it, and evaluated on a frame,
//! its ingress port and the registers. The differential test uses it to check that the
//! rule the programs count for a frame is one its text matches, and that no rule of
//! higher priority in the same table matches too: then `dump-flows` and the code cannot
//! disagree.
//!
//! Frames are read as OVS's flow extraction reads them, with the reference model's
//! parser (`oxsdn_model::packet`) for the IPv4 and ARP fields, and its readings where the
//! programs deliberately differ from OVS (all of them drop such frames either way):
//! - `ip` is a frame whose IPv4 header the frame holds (IHL >= 5, version 4): OVS would
//!   match `ip` on any EtherType 0x0800 and find no addresses in it (`docs/model.md`);
//! - `vlan_tci` has the "tag present" bit for a frame whose EtherType is 802.1Q or
//!   802.1ad even when it ends before the tag's TCI (OVS reads no tag then).
//!
//! `arp` is EtherType 0x0806, as in OVS; its fields exist only for Ethernet/IPv4 ARP.
//! Fields that depend on
//! state this text cannot see (connection tracking, the cluster store's addresses, what
//! happened at the output) are [`NOT_CHECKED`]: a rule with one of them is checked on its
//! other fields only. Any other field is an error, so a new field is either evaluated
//! here or listed there, never ignored.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use oxsdn_model::packet::{self, L3};

/// Fields (and `field=value` pairs) that are not evaluated, with why.
pub const NOT_CHECKED: &[(&str, &str)] = &[
    ("ct_state", "connection tracking state: the CT_FORWARD/CT_REVERSE entries"),
    ("endpoint", "whether a tracked connection's endpoint is draining"),
    ("ct_zone_limit", "the sender's share of the connection tables"),
    ("ct_table", "whether the connection tables are full"),
    ("ct(nat)", "the outcome of the translation at the output"),
    ("nat", "the outcome of the translation at the output"),
    ("output", "the outcome of the output (table 254)"),
    ("nw_dst:tp_dst", "the cluster store's endpoints"),
    ("tp_dst=cluster_store", "the cluster store's endpoints"),
    ("policy=ingress", "whether the packet goes to a local pod: a trace records no output for a refused one"),
    ("isolated", "whether a NetworkPolicy selects the pod"),
    ("identity", "whether the pod's labels are known to the policy maps"),
    ("policy_name", "the NetworkPolicy rules that allow the packet"),
    ("isolated_by", "the NetworkPolicy that isolates the pod"),
    ("nw_src=deny_list", "the operator's deny list at the prefilter (`PREFILTER_DENY`)"),
    ("egress_ip", "the project's egress IPs and their holders (`EGRESS_IPS`)"),
    ("outer", "the validity of the outer headers, which the prefilter reads before decapsulation"),
    ("inner", "which inner frames the XDP program decapsulates itself (`--xdp-decap`, `t0_classify::decap_at_xdp`)"),
    ("bandwidth=egress", "whether the sending pod has an egress limit (`BANDWIDTH`)"),
    ("bandwidth=ingress", "whether the receiving pod has an ingress limit (`BANDWIDTH`)"),
    ("departure=beyond_horizon", "the pod's pacing state (`PACING`)"),
    ("reg0=multicast_enabled", "whether every project of the VNID enabled multicast (`MCAST_GROUPS`)"),
];

/// A packet as the rules see it: the frame, parsed once, and what else they match on.
pub struct Packet<'a> {
    frame: &'a [u8],
    l3: L3,
    context: Context<'a>,
}

impl<'a> Packet<'a> {
    pub fn new(frame: &'a [u8], context: Context<'a>) -> Self {
        Packet { frame, l3: packet::parse(frame), context }
    }
}

/// What a rule can match on besides the frame.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// The ingress port as the rule texts name it: `tun0`, `vxlan0`, or a pod port.
    pub in_port: &'a str,
    /// The tunnel's source address (0.0.0.0 when not from the tunnel, as in OVS).
    pub tun_src: Ipv4Addr,
    /// The registers, where the packet has them.
    pub reg0: Option<u32>,
    pub reg1: Option<u32>,
    /// Whether the node has its configuration (`config=none` otherwise).
    pub configured: bool,
    /// Whether the frame is at the underlay device's XDP hook (`hook=xdp`, the
    /// prefilter) rather than at a TC hook.
    pub xdp: bool,
    /// The network plugin: `multitenant`, `subnet` or `networkpolicy`.
    pub mode: &'a str,
}

/// A parsed match text: the conditions it is the conjunction of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleText {
    conditions: Vec<Condition>,
    /// The fields in it that are not evaluated.
    pub not_checked: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Condition {
    /// EtherType 0x0806.
    Arp,
    /// IPv4 with a whole header.
    Ip,
    /// `tcp` or `udp`: IPv4 with this protocol.
    Protocol(u8),
    InPort(String),
    NwSrc(Ipv4Network),
    NwDst(Ipv4Network),
    ArpSpa(Ipv4Network),
    ArpTpa(Ipv4Network),
    /// The ARP sender MAC under a mask.
    ArpSha {
        mac: [u8; 6],
        mask: [u8; 6],
    },
    TpDst(u16),
    /// `nw_frag=later`: a fragment other than the first.
    LaterFragment,
    TunSrc(Ipv4Addr),
    /// `regN=value`.
    Register(usize, u32),
    /// `reg0=reg1`.
    RegistersEqual,
    /// The 802.1Q tag control information under a mask (0 when untagged; OVS sets bit
    /// 0x1000 when a tag is present).
    VlanTci {
        value: u16,
        mask: u16,
    },
    /// `config=none`.
    Unconfigured,
    /// `hook=xdp`.
    XdpHook,
    /// `mode=a|b`: the network plugin is one of these.
    Mode(Vec<String>),
    /// `policy`: NetworkPolicies judge the packet (networkpolicy mode, IPv4).
    Policy,
    /// `policy=egress`: judged by its source pod's egress policies (from a pod port).
    PolicyEgress,
}

impl RuleText {
    /// Parses a match text with its placeholders filled in (`ip,nw_dst=10.128.0.1`).
    pub fn parse(text: &str) -> Result<RuleText, String> {
        let mut rule = RuleText { conditions: Vec::new(), not_checked: Vec::new() };
        for item in text.split(',').filter(|item| !item.is_empty()) {
            let (field, value) = item.split_once('=').unwrap_or((item, ""));
            if NOT_CHECKED.iter().any(|(name, _)| *name == field || *name == item) {
                rule.not_checked.push(item.to_owned());
                continue;
            }
            let condition = match (field, value) {
                ("arp", "") => Condition::Arp,
                ("ip", "") => Condition::Ip,
                ("tcp", "") => Condition::Protocol(packet_protocol::TCP),
                ("udp", "") => Condition::Protocol(packet_protocol::UDP),
                ("in_port", port) if !port.is_empty() => Condition::InPort(port.to_owned()),
                ("nw_src", net) => Condition::NwSrc(network(net)?),
                ("nw_dst", net) => Condition::NwDst(network(net)?),
                ("arp_spa", net) => Condition::ArpSpa(network(net)?),
                ("arp_tpa", net) => Condition::ArpTpa(network(net)?),
                ("arp_sha", masked) => {
                    let (mac, mask) = masked.split_once('/').unwrap_or((masked, "ff:ff:ff:ff:ff:ff"));
                    Condition::ArpSha { mac: parse_mac(mac)?, mask: parse_mac(mask)? }
                }
                ("tp_dst", port) => Condition::TpDst(number(port)?),
                ("nw_frag", "later") => Condition::LaterFragment,
                ("tun_src", ip) => Condition::TunSrc(if ip == "0" { Ipv4Addr::UNSPECIFIED } else { address(ip)? }),
                ("reg0", "reg1") => Condition::RegistersEqual,
                ("reg0", value) => Condition::Register(0, number(value)?),
                ("reg1", value) => Condition::Register(1, number(value)?),
                ("vlan_tci", masked) => {
                    let (value, mask) = masked.split_once('/').unwrap_or((masked, "0xffff"));
                    Condition::VlanTci { value: number(value)?, mask: number(mask)? }
                }
                ("config", "none") => Condition::Unconfigured,
                ("hook", "xdp") => Condition::XdpHook,
                ("mode", modes) if !modes.is_empty() => Condition::Mode(modes.split('|').map(str::to_owned).collect()),
                ("policy", "") => Condition::Policy,
                ("policy", "egress") => Condition::PolicyEgress,
                _ => return Err(format!("{item:?} in {text:?} is neither evaluated nor listed as not checked")),
            };
            rule.conditions.push(condition);
        }
        Ok(rule)
    }

    /// Whether every field of the text is evaluated.
    pub fn fully_checked(&self) -> bool {
        self.not_checked.is_empty()
    }

    /// Whether `packet` satisfies every evaluated condition; an error if one needs a
    /// register the packet did not have.
    pub fn matches(&self, packet: &Packet) -> Result<bool, String> {
        let (frame, context) = (packet.frame, &packet.context);
        let (arp, ip) = match &packet.l3 {
            L3::Arp(arp) => (Some(arp), None),
            L3::Ipv4(ip) => (None, Some(ip)),
            L3::Other => (None, None),
        };
        let register = |n: usize| {
            [context.reg0, context.reg1][n].ok_or_else(|| format!("the rule matches reg{n}, which the trace lacks"))
        };
        for condition in &self.conditions {
            let holds = match condition {
                Condition::Arp => frame.get(12..14) == Some(&[0x08, 0x06]),
                Condition::Ip => ip.is_some(),
                Condition::Protocol(protocol) => ip.is_some_and(|ip| ip.protocol == *protocol),
                Condition::InPort(port) => context.in_port == port,
                Condition::NwSrc(net) => ip.is_some_and(|ip| net.contains(ip.src)),
                Condition::NwDst(net) => ip.is_some_and(|ip| net.contains(ip.dst)),
                Condition::ArpSpa(net) => arp.is_some_and(|arp| net.contains(arp.sender_ip)),
                Condition::ArpTpa(net) => arp.is_some_and(|arp| net.contains(arp.target_ip)),
                Condition::ArpSha { mac, mask } => {
                    arp.is_some_and(|arp| (0..6).all(|i| arp.sender_mac[i] & mask[i] == mac[i] & mask[i]))
                }
                Condition::TpDst(port) => ip.and_then(|ip| ip.ports).is_some_and(|(_, dst)| dst == *port),
                Condition::LaterFragment => ip.is_some_and(|ip| ip.later_fragment),
                Condition::TunSrc(src) => context.tun_src == *src,
                Condition::Register(n, value) => register(*n)? == *value,
                Condition::RegistersEqual => register(0)? == register(1)?,
                Condition::VlanTci { value, mask } => vlan_tci(frame) & mask == value & mask,
                Condition::Unconfigured => !context.configured,
                Condition::XdpHook => context.xdp,
                Condition::Mode(modes) => modes.iter().any(|m| m == context.mode),
                Condition::Policy => context.mode == NETWORKPOLICY && ip.is_some(),
                Condition::PolicyEgress => {
                    context.mode == NETWORKPOLICY && ip.is_some() && !matches!(context.in_port, "tun0" | "vxlan0")
                }
            };
            if !holds {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// The `mode` of networkpolicy nodes.
const NETWORKPOLICY: &str = "networkpolicy";

/// IP protocol numbers of the protocol keywords.
mod packet_protocol {
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
}

/// The 802.1Q (or 802.1ad) tag control information of a frame that carries a tag in
/// its data, with OVS's "tag present" bit 0x1000 (and the TCI's bits as far as the frame
/// holds them); 0 without a tag. (The kernel moves a received tag into the skb's
/// metadata; a test run's frame keeps it in its data.)
fn vlan_tci(frame: &[u8]) -> u16 {
    match frame.get(12..14) {
        Some([0x81, 0x00] | [0x88, 0xa8]) => {
            let tci = frame.get(14..16).map_or(0, |tci| u16::from_be_bytes([tci[0], tci[1]]));
            tci | 0x1000
        }
        _ => 0,
    }
}

fn network(text: &str) -> Result<Ipv4Network, String> {
    text.parse().map_err(|e| format!("{text:?} is not an IPv4 address or network: {e}"))
}

fn address(text: &str) -> Result<Ipv4Addr, String> {
    text.parse().map_err(|e| format!("{text:?} is not an IPv4 address: {e}"))
}

/// A decimal or `0x` hexadecimal number.
fn number<T: TryFrom<u64>>(text: &str) -> Result<T, String> {
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.ok().and_then(|n| T::try_from(n).ok()).ok_or_else(|| format!("{text:?} is not a number in range"))
}

fn parse_mac(text: &str) -> Result<[u8; 6], String> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{text:?} is not a MAC: {e}"))?;
    bytes.try_into().map_err(|_| format!("{text:?} is not a MAC"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "7";

    fn context(in_port: &str) -> Context<'_> {
        Context {
            in_port,
            tun_src: Ipv4Addr::UNSPECIFIED,
            reg0: Some(10),
            reg1: Some(10),
            configured: true,
            xdp: false,
            mode: "multitenant",
        }
    }

    /// Ethernet + IPv4 (20 bytes) + UDP (8 bytes) from `src` to `dst`, destination port
    /// `dport`, fragment offset `offset` (8-byte units).
    fn udp(src: [u8; 4], dst: [u8; 4], dport: u16, offset: u16) -> Vec<u8> {
        let mut f = vec![0x0a, 0x58, 10, 128, 0, 3, 0x0a, 0x58, 10, 128, 0, 2, 0x08, 0x00];
        f.extend([0x45, 0, 0, 28, 0, 1]);
        f.extend(offset.to_be_bytes());
        f.extend([64, 17, 0, 0]);
        f.extend(src);
        f.extend(dst);
        f.extend([0x9c, 0x40]);
        f.extend(dport.to_be_bytes());
        f.extend([0, 8, 0, 0]);
        f
    }

    fn arp(sender_mac: [u8; 6], spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend(sender_mac);
        f.extend([0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        f.extend(sender_mac);
        f.extend(spa);
        f.extend([0; 6]);
        f.extend(tpa);
        f
    }

    fn matches(text: &str, frame: &[u8], context: &Context) -> bool {
        RuleText::parse(text).unwrap().matches(&Packet::new(frame, *context)).unwrap()
    }

    #[test]
    fn evaluates_ip_fields() {
        let frame = udp([10, 128, 0, 2], [172, 30, 0, 10], 53, 0);
        let pod = context(POD);
        assert!(matches("", &frame, &pod));
        assert!(matches("ip,in_port=7,nw_src=10.128.0.2", &frame, &pod));
        assert!(matches("udp,nw_dst=172.30.0.0/16,tp_dst=53", &frame, &pod));
        assert!(!matches("tcp", &frame, &pod));
        assert!(!matches("arp", &frame, &pod));
        assert!(!matches("ip,in_port=tun0", &frame, &pod));
        assert!(!matches("ip,nw_dst=10.128.0.0/14", &frame, &pod));
        assert!(!matches("udp,tp_dst=54", &frame, &pod));
        assert!(!matches("ip,nw_frag=later", &frame, &pod));
        // A later fragment has no ports.
        let later = udp([10, 128, 0, 2], [172, 30, 0, 10], 53, 1);
        assert!(matches("ip,nw_frag=later", &later, &pod));
        assert!(!matches("udp,tp_dst=53", &later, &pod));
    }

    #[test]
    fn evaluates_arp_fields() {
        let frame = arp([0x0a, 0x58, 10, 128, 0, 2], [10, 128, 0, 2], [10, 128, 0, 1]);
        let pod = context(POD);
        assert!(matches("arp,arp_spa=10.128.0.2,arp_tpa=10.128.0.0/14", &frame, &pod));
        assert!(matches("arp,arp_sha=00:00:0a:80:00:02/00:00:ff:ff:ff:ff", &frame, &pod));
        assert!(!matches("arp,arp_sha=00:00:0a:80:00:03/00:00:ff:ff:ff:ff", &frame, &pod));
        assert!(!matches("arp,arp_tpa=10.128.0.2", &frame, &pod));
        assert!(!matches("ip", &frame, &pod));
        // ARP for another hardware type is `arp` without ARP fields, as in OVS.
        let mut other = frame.clone();
        other[14..16].copy_from_slice(&[0x38, 0x01]);
        assert!(matches("arp", &other, &pod));
        assert!(!matches("arp,arp_spa=10.128.0.2", &other, &pod));
    }

    #[test]
    fn evaluates_registers_ports_and_tags() {
        let frame = udp([10, 128, 0, 2], [10, 128, 0, 3], 80, 0);
        let mut c = context(POD);
        assert!(matches("reg0=reg1", &frame, &c));
        assert!(matches("reg0=0xa", &frame, &c));
        c.reg1 = Some(0);
        assert!(matches("reg1=0", &frame, &c));
        assert!(!matches("reg0=reg1", &frame, &c));
        c.reg1 = None;
        assert!(RuleText::parse("reg1=0").unwrap().matches(&Packet::new(&frame, c)).is_err());
        let tunnel = Context { tun_src: Ipv4Addr::new(192, 168, 1, 2), ..context("vxlan0") };
        assert!(matches("in_port=vxlan0,tun_src=192.168.1.2", &frame, &tunnel));
        assert!(!matches("in_port=vxlan0,tun_src=0", &frame, &tunnel));
        assert!(!matches("config=none", &frame, &tunnel));
        let underlay = Context { xdp: true, ..context("eth0") };
        assert!(!matches("hook=xdp,in_port=eth0,udp", &frame, &context("eth0")));
        assert!(matches("hook=xdp,in_port=eth0,udp", &frame, &underlay));
        assert!(!matches("vlan_tci=0x1000/0x1000", &frame, &tunnel));
        assert!(matches("mode=multitenant|subnet", &frame, &tunnel));
        assert!(!matches("mode=subnet|networkpolicy", &frame, &tunnel));
        assert!(!matches("ip,policy", &frame, &tunnel));
        let policy = Context { mode: "networkpolicy", ..c };
        assert!(matches("ip,policy", &frame, &policy));
        assert!(matches("ip,policy=egress", &frame, &policy));
        assert!(!matches("ip,policy=egress", &frame, &Context { in_port: "tun0", ..policy }));
        let mut tagged = frame[..12].to_vec();
        tagged.extend([0x81, 0x00, 0x00, 0x05]);
        tagged.extend(&frame[12..]);
        assert!(matches("vlan_tci=0x1000/0x1000", &tagged, &tunnel));
        assert!(matches("vlan_tci=0x1000/0x1000", &tagged[..15], &tunnel));
        assert!(!matches("ip", &tagged, &tunnel));
    }

    #[test]
    fn lists_what_it_does_not_check_and_refuses_the_unknown() {
        let rule = RuleText::parse("tcp,ct_state=+est,endpoint=draining").unwrap();
        assert_eq!(rule.not_checked, ["ct_state=+est", "endpoint=draining"]);
        assert!(!rule.fully_checked());
        let store = RuleText::parse("ip,nw_dst=10.128.0.1,tp_dst=cluster_store").unwrap();
        assert_eq!(store.not_checked, ["tp_dst=cluster_store"]);
        assert!(RuleText::parse("ip,nw_tos=4").is_err());
        assert!(RuleText::parse("ip,nw_dst=10.300.0.0/16").is_err());
        assert!(RuleText::parse("in_port").is_err());
        assert!(RuleText::parse("hook=tc").is_err());
        let denied = RuleText::parse("hook=xdp,ip,nw_src=deny_list").unwrap();
        assert_eq!(denied.not_checked, ["nw_src=deny_list"]);
    }

    /// Every rule the tables declare parses, with the placeholders filled in as
    /// `dump-flows` fills them.
    #[test]
    fn every_declared_rule_parses() {
        let values = [
            ("{GW}", "10.128.0.1"),
            ("{L}", "10.128.0.0/23"),
            ("{C}", "10.128.0.0/14"),
            ("{S}", "172.30.0.0/16"),
            ("{NODEIP}", "192.168.1.1"),
            ("{VXP}", "4789"),
            ("{PORT}", "7"),
            ("{IP}", "10.128.0.2"),
            ("{MAC}", "00:00:0a:80:00:02/00:00:ff:ff:ff:ff"),
            ("{NODE_IP}", "192.168.1.2"),
            ("{SUBNET}", "10.128.2.0/23"),
            ("{PROTO}", "tcp"),
            ("{UNDERLAY}", "eth0"),
            ("{VNID}", "0xb"),
            ("{CIDR}", "192.0.2.0/24"),
        ];
        for rule in oxsdn_tables::rules() {
            // A service's {PORT} is a port number, a pod's its port name: both are numbers here.
            let text = values.iter().fold(rule.matches.to_owned(), |t, (k, v)| t.replace(k, v));
            RuleText::parse(&text).unwrap_or_else(|e| panic!("table {} {}: {e}", rule.table, rule.name));
        }
    }
}
