//! The capabilities the conflist declares (`portMappings`, `bandwidth`), as the runtime
//! passes them in the network config's `runtimeConfig`: parsing and validation. Values
//! follow the reference `portmap` and `bandwidth` plugins (rates and bursts in bits per
//! second and bits); anything malformed or out of range is code 7 before anything is
//! created, so a refused ADD leaves nothing behind.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{code, CniError};

/// Most host ports one pod may ask for: each is a DNAT rule on its node.
pub const MAX_PORT_MAPPINGS: usize = 64;
/// Lowest accepted rate, 1 kbit/s (kubelet's `resource.ParseQuantity` floor for the
/// bandwidth annotations).
pub const MIN_RATE_BPS: u64 = 1_000;
/// Highest accepted rate, 1 Tbit/s (kubelet refuses annotations above 1 Pbit/s; no
/// device here goes near either).
pub const MAX_RATE_BPS: u64 = 1_000_000_000_000;
/// The `bandwidth` plugin's bound on a burst: less than 4 GiB (in bits, 32 Gibit).
const MAX_BURST_BITS: u64 = (u32::MAX as u64) * 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// One `runtimeConfig.portMappings` entry: `hostIP:hostPort/protocol` on the node goes to
/// the pod's `containerPort`. `host_ip` `None`: every address of the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<Ipv4Addr>,
}

impl PortMapping {
    /// Whether two mappings claim the same node socket: same protocol and port, and
    /// addresses that overlap (an unspecified address covers them all).
    pub fn conflicts_with(&self, other: &PortMapping) -> bool {
        self.protocol == other.protocol
            && self.host_port == other.host_port
            && match (self.host_ip, other.host_ip) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

impl std::fmt::Display for PortMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.host_ip {
            Some(ip) => write!(f, "{ip}:{}/{}", self.host_port, self.protocol.as_str()),
            None => write!(f, "{}/{}", self.host_port, self.protocol.as_str()),
        }
    }
}

/// `runtimeConfig.bandwidth`: rates in bits per second, bursts in bits; 0: no limit
/// that way. Ingress is towards the pod, egress from it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bandwidth {
    #[serde(default)]
    pub ingress_rate: u64,
    #[serde(default)]
    pub ingress_burst: u64,
    #[serde(default)]
    pub egress_rate: u64,
    #[serde(default)]
    pub egress_burst: u64,
}

/// What the runtime asked for this attachment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeConfig {
    pub port_mappings: Vec<PortMapping>,
    pub bandwidth: Option<Bandwidth>,
}

/// A field of a runtime's object, its name matched as Go's `encoding/json` does (exact,
/// else case-insensitively): containerd's go-cni sends `HostPort`, `EgressRate`.
fn field<'a>(obj: &'a Value, key: &str) -> Option<&'a Value> {
    let map = obj.as_object()?;
    map.get(key).or_else(|| map.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v))
}

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(code::INVALID_NETWORK_CONFIG, msg)
}

/// `runtimeConfig` of a network config (absent or null: nothing asked).
pub fn parse(runtime_config: Option<&Value>) -> Result<RuntimeConfig, CniError> {
    let obj = match runtime_config {
        None | Some(Value::Null) => return Ok(RuntimeConfig::default()),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(invalid("runtimeConfig must be a JSON object")),
    };
    let port_mappings = match obj.get("portMappings") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => parse_port_mappings(v)?,
    };
    let bandwidth = match obj.get("bandwidth") {
        None | Some(Value::Null) => None,
        Some(v) => parse_bandwidth(v)?,
    };
    Ok(RuntimeConfig { port_mappings, bandwidth })
}

fn parse_port_mappings(v: &Value) -> Result<Vec<PortMapping>, CniError> {
    let Value::Array(items) = v else { return Err(invalid("runtimeConfig.portMappings must be an array")) };
    if items.len() > MAX_PORT_MAPPINGS {
        return Err(invalid(format!(
            "runtimeConfig.portMappings has {} entries; at most {MAX_PORT_MAPPINGS} are accepted",
            items.len()
        )));
    }
    let mut seen: HashSet<PortMapping> = HashSet::new();
    let mut mappings: Vec<PortMapping> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let m = parse_port_mapping(i, item)?;
        // The same mapping twice (a runtime merging its sources) is one.
        if seen.contains(&m) {
            continue;
        }
        if let Some(other) = mappings.iter().find(|o| o.conflicts_with(&m)) {
            return Err(invalid(format!("runtimeConfig.portMappings[{i}]: host port {m} is also asked as {other}")));
        }
        seen.insert(m);
        mappings.push(m);
    }
    Ok(mappings)
}

fn parse_port_mapping(i: usize, item: &Value) -> Result<PortMapping, CniError> {
    let at = |what: String| invalid(format!("runtimeConfig.portMappings[{i}]: {what}"));
    if !item.is_object() {
        return Err(at("not an object".into()));
    }
    let port = |key: &str| match field(item, key).and_then(Value::as_u64) {
        Some(p @ 1..=65535) => Ok(p as u16),
        _ => Err(at(format!("{key} must be a port number from 1 to 65535"))),
    };
    let protocol = match field(item, "protocol") {
        None | Some(Value::Null) => Protocol::Tcp,
        Some(Value::String(p)) => match p.to_ascii_lowercase().as_str() {
            "" | "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "sctp" => Protocol::Sctp,
            _ => return Err(at(format!("protocol {:?} is not tcp, udp or sctp", crate::version::truncate(p, 16)))),
        },
        Some(_) => return Err(at("protocol must be a string".into())),
    };
    let host_ip = match field(item, "hostIP") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => match s.parse::<Ipv4Addr>() {
            Ok(ip) if ip.is_unspecified() => None,
            Ok(ip) if ip.is_multicast() || ip.is_broadcast() => {
                return Err(at(format!("hostIP {ip} is not a unicast address")))
            }
            Ok(ip) => Some(ip),
            Err(_) => {
                return Err(at(format!(
                    "hostIP {:?} is not an IPv4 address (the cluster network is IPv4 only)",
                    crate::version::truncate(s, 46)
                )))
            }
        },
        Some(_) => return Err(at("hostIP must be a string".into())),
    };
    Ok(PortMapping { host_port: port("hostPort")?, container_port: port("containerPort")?, protocol, host_ip })
}

/// As the `bandwidth` plugin: rate and burst both set or both unset, per direction;
/// `None` when neither direction is limited.
fn parse_bandwidth(v: &Value) -> Result<Option<Bandwidth>, CniError> {
    if !v.is_object() {
        return Err(invalid("runtimeConfig.bandwidth must be a JSON object"));
    }
    let number = |key: &str| match field(v, key) {
        None | Some(Value::Null) => Ok(0),
        Some(n) => n.as_u64().ok_or_else(|| {
            invalid(format!("runtimeConfig.bandwidth.{key} must be a non-negative integer (bits per second or bits)"))
        }),
    };
    let b = Bandwidth {
        ingress_rate: number("ingressRate")?,
        ingress_burst: number("ingressBurst")?,
        egress_rate: number("egressRate")?,
        egress_burst: number("egressBurst")?,
    };
    check_direction("ingress", b.ingress_rate, b.ingress_burst)?;
    check_direction("egress", b.egress_rate, b.egress_burst)?;
    Ok((b.ingress_rate != 0 || b.egress_rate != 0).then_some(b))
}

fn check_direction(direction: &str, rate: u64, burst: u64) -> Result<(), CniError> {
    let err = |what: String| Err(invalid(format!("runtimeConfig.bandwidth: {what}")));
    match (rate, burst) {
        (0, 0) => Ok(()),
        (0, _) => err(format!("{direction}Burst is set without {direction}Rate")),
        (_, 0) => err(format!("{direction}Rate is set without {direction}Burst")),
        (r, _) if !(MIN_RATE_BPS..=MAX_RATE_BPS).contains(&r) => {
            err(format!("{direction}Rate {r} bit/s is outside {MIN_RATE_BPS} bit/s .. {MAX_RATE_BPS} bit/s"))
        }
        (_, b) if b > MAX_BURST_BITS => err(format!("{direction}Burst {b} bits is more than 4 GiB")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn code_of(v: Value) -> u32 {
        parse(Some(&v)).unwrap_err().code
    }

    #[test]
    fn port_mappings_as_runtimes_send_them() {
        let rc = parse(Some(&json!({"portMappings": [
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 8080, "containerPort": 80, "protocol": "UDP", "hostIP": "10.0.0.1"},
            {"hostPort": 9090, "containerPort": 90, "hostIP": ""},
            {"hostPort": 9090, "containerPort": 90, "hostIP": ""}
        ]})))
        .unwrap();
        assert_eq!(
            rc.port_mappings,
            vec![
                PortMapping { host_port: 8080, container_port: 80, protocol: Protocol::Tcp, host_ip: None },
                PortMapping {
                    host_port: 8080,
                    container_port: 80,
                    protocol: Protocol::Udp,
                    host_ip: Some("10.0.0.1".parse().unwrap())
                },
                PortMapping { host_port: 9090, container_port: 90, protocol: Protocol::Tcp, host_ip: None },
            ]
        );
        assert_eq!(rc.bandwidth, None);
        assert_eq!(parse(None).unwrap(), RuntimeConfig::default());
    }

    #[test]
    fn bandwidth_as_runtimes_send_it() {
        let rc = parse(Some(&json!({"bandwidth": {"egressRate": 10_000_000, "egressBurst": 2147483647}}))).unwrap();
        assert_eq!(
            rc.bandwidth,
            Some(Bandwidth { egress_rate: 10_000_000, egress_burst: 2147483647, ..Bandwidth::default() })
        );
        assert_eq!(parse(Some(&json!({"bandwidth": {}}))).unwrap().bandwidth, None);
    }

    #[test]
    fn go_cni_field_names() {
        // containerd's go-cni marshals its structs without JSON tags.
        let rc = parse(Some(&json!({
            "portMappings": [{"HostPort": 30080, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""}],
            "bandwidth": {"IngressRate": 0, "IngressBurst": 0, "EgressRate": 10_000_000, "EgressBurst": 2147483647}
        })))
        .unwrap();
        assert_eq!(
            rc.port_mappings,
            vec![PortMapping { host_port: 30080, container_port: 80, protocol: Protocol::Tcp, host_ip: None }]
        );
        assert_eq!(rc.bandwidth.map(|b| b.egress_rate), Some(10_000_000));
    }

    #[test]
    fn bad_values_are_code_7() {
        let cases = [
            json!([]),
            json!({"portMappings": {}}),
            json!({"portMappings": [5]}),
            json!({"portMappings": [{"hostPort": 0, "containerPort": 80}]}),
            json!({"portMappings": [{"hostPort": 70000, "containerPort": 80}]}),
            json!({"portMappings": [{"hostPort": 80, "containerPort": -1}]}),
            json!({"portMappings": [{"hostPort": "80", "containerPort": 80}]}),
            json!({"portMappings": [{"hostPort": 80}]}),
            json!({"portMappings": [{"hostPort": 80, "containerPort": 80, "protocol": "icmp"}]}),
            json!({"portMappings": [{"hostPort": 80, "containerPort": 80, "hostIP": "fd00::1"}]}),
            json!({"portMappings": [{"hostPort": 80, "containerPort": 80, "hostIP": "224.0.0.1"}]}),
            json!({"portMappings": [{"hostPort": 80, "containerPort": 80}, {"hostPort": 80, "containerPort": 81}]}),
            json!({"portMappings": [{"hostPort": 80, "containerPort": 80, "hostIP": "10.0.0.1"}, {"hostPort": 80, "containerPort": 81}]}),
            json!({"portMappings": (1..=65).map(|p| json!({"hostPort": p, "containerPort": 80})).collect::<Vec<_>>()}),
            json!({"bandwidth": []}),
            json!({"bandwidth": {"egressRate": 1000000}}),
            json!({"bandwidth": {"ingressBurst": 1000000}}),
            json!({"bandwidth": {"egressRate": -5, "egressBurst": 5}}),
            json!({"bandwidth": {"egressRate": 999, "egressBurst": 5}}),
            json!({"bandwidth": {"ingressRate": 2_000_000_000_000u64, "ingressBurst": 5}}),
            json!({"bandwidth": {"ingressRate": 1_000_000, "ingressBurst": 40_000_000_000u64}}),
            json!({"bandwidth": {"egressRate": 1.5, "egressBurst": 5}}),
        ];
        for c in cases {
            assert_eq!(code_of(c.clone()), code::INVALID_NETWORK_CONFIG, "{c}");
        }
    }

    #[test]
    fn conflicts() {
        let m = |port, ip: Option<&str>| PortMapping {
            host_port: port,
            container_port: 1,
            protocol: Protocol::Tcp,
            host_ip: ip.map(|s| s.parse().unwrap()),
        };
        assert!(m(80, None).conflicts_with(&m(80, Some("10.0.0.1"))));
        assert!(m(80, Some("10.0.0.1")).conflicts_with(&m(80, Some("10.0.0.1"))));
        assert!(!m(80, Some("10.0.0.1")).conflicts_with(&m(80, Some("10.0.0.2"))));
        assert!(!m(80, None).conflicts_with(&m(81, None)));
        assert!(!m(80, None).conflicts_with(&PortMapping { protocol: Protocol::Udp, ..m(80, None) }));
    }
}
