//! Services (ClusterIP): a name in a project, a ClusterIP from the service network, the
//! ports it serves and the endpoints (pod IPs) behind them; and the rules their fields
//! follow.
//!
//! Isolation is keyed on the service's project, not on its endpoints' (spec §5: a service
//! in project A whose endpoints are pods of project B is reachable by A's pods), so a
//! service carries its project and the dataplane takes that project's VNID.

use std::{collections::HashSet, fmt, net::Ipv4Addr};

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

use crate::{allocator::RangeAllocator, netnamespaces::is_dns1123_label, Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Protocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        })
    }
}

/// A port a service serves: traffic to (ClusterIP, `port`) over `protocol` goes to
/// (endpoint, `target_port`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// Optional; a DNS-1123 label, unique within the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub protocol: Protocol,
    pub port: u16,
    pub target_port: u16,
}

impl ServicePort {
    /// An unnamed port.
    pub fn new(protocol: Protocol, port: u16, target_port: u16) -> Self {
        ServicePort { name: None, protocol, port, target_port }
    }
}

impl fmt::Display for ServicePort {
    /// `port/PROTO`, as `oc get svc` shows it, or `port:target/PROTO` when the target
    /// port differs (the `--tcp port:target` syntax of `oc create service`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port == self.target_port {
            write!(f, "{}/{}", self.port, self.protocol)
        } else {
            write!(f, "{}:{}/{}", self.port, self.target_port, self.protocol)
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    /// The project (namespace), whose VNID isolates the service.
    pub project: String,
    /// A DNS-1035 label (see `validate_service_name`).
    pub name: String,
    /// In the service network, neither its network nor its broadcast address; unique.
    pub cluster_ip: Ipv4Addr,
    /// At least one; (protocol, port) unique; no port 0.
    pub ports: Vec<ServicePort>,
    /// Pod IPs (in the cluster network), sorted and without repetitions. Every port is
    /// served by every endpoint, at the port's `target_port`.
    #[serde(default)]
    pub endpoints: Vec<Ipv4Addr>,
    /// Stable, never reused number of this service, assigned at creation, for the
    /// dataplane to key its state by (like `NetNamespace::id`).
    pub id: u32,
}

/// Checks a service name, which becomes part of a store key. Kubernetes requires a
/// DNS-1035 label, stricter than a project name's DNS-1123 label: it must start with a
/// letter, since it is the first label of the service's DNS name
/// (`name.project.svc.cluster.local`).
pub fn validate_service_name(name: &str) -> Result<()> {
    if is_dns1123_label(name) && name.starts_with(|c: char| c.is_ascii_lowercase()) {
        Ok(())
    } else {
        Err(Error::InvalidService(format!(
            "invalid service name {name:?}: must be a DNS-1035 label (lowercase letters, digits and '-', at most 63 characters, starting with a letter and ending with a letter or digit)"
        )))
    }
}

/// Checks a service's port list: at least one port, no port or target port 0, no
/// (protocol, port) twice, port names DNS-1123 labels and unique.
pub fn validate_ports(ports: &[ServicePort]) -> Result<()> {
    let invalid = |msg: String| Err(Error::InvalidService(msg));
    if ports.is_empty() {
        return invalid("a service needs at least one port".into());
    }
    let mut seen = HashSet::new();
    let mut names = HashSet::new();
    for p in ports {
        if p.port == 0 || p.target_port == 0 {
            return invalid(format!("port {p}: port 0 is not valid"));
        }
        if !seen.insert((p.protocol, p.port)) {
            return invalid(format!("port {}/{} is declared twice", p.port, p.protocol));
        }
        if let Some(name) = &p.name {
            if !is_dns1123_label(name) {
                return invalid(format!("port {p}: invalid port name {name:?} (must be a DNS-1123 label)"));
            }
            if !names.insert(name.as_str()) {
                return invalid(format!("port name {name:?} is used twice"));
            }
        }
    }
    Ok(())
}

/// The addresses of `network` a ClusterIP may take: all but the network and broadcast
/// addresses (none in a /31 or /32), as `u32`s `[first, last]`; `None` if there are none.
fn cluster_ip_range(network: Ipv4Network) -> Option<(u32, u32)> {
    let first = u32::from(network.network()).checked_add(1)?;
    let last = u32::from(network.broadcast()).checked_sub(1)?;
    (first <= last).then_some((first, last))
}

/// Checks a requested ClusterIP against the service network.
pub(crate) fn check_cluster_ip(ip: Ipv4Addr, network: Ipv4Network) -> Result<()> {
    let why = if !network.contains(ip) {
        "is outside"
    } else if ip == network.network() {
        "is the network address of"
    } else if ip == network.broadcast() {
        "is the broadcast address of"
    } else {
        return Ok(());
    };
    Err(Error::ClusterIpOutOfRange { ip, why, network: network.to_string() })
}

/// Free ClusterIPs of a service network.
pub(crate) struct ClusterIpAllocator {
    network: Ipv4Network,
    /// `None` when the network has no address a ClusterIP may take.
    free: Option<RangeAllocator>,
}

impl ClusterIpAllocator {
    /// A free ClusterIP, counted as used from now on.
    pub(crate) fn allocate(&mut self) -> Result<Ipv4Addr> {
        self.free
            .as_mut()
            .and_then(RangeAllocator::allocate)
            .map(Ipv4Addr::from)
            .ok_or_else(|| Error::ServiceIpsExhausted(self.network.to_string()))
    }
}

/// The free ClusterIPs of `network`, given those `used`.
pub(crate) fn cluster_ip_allocator(
    network: Ipv4Network,
    used: impl IntoIterator<Item = Ipv4Addr>,
) -> ClusterIpAllocator {
    let free = cluster_ip_range(network)
        .map(|(first, last)| RangeAllocator::new(first, last, used.into_iter().map(u32::from)));
    ClusterIpAllocator { network, free }
}

/// A free ClusterIP of `network`, given those `used`.
#[cfg(test)]
pub(crate) fn allocate_cluster_ip(network: Ipv4Network, used: impl IntoIterator<Item = Ipv4Addr>) -> Result<Ipv4Addr> {
    cluster_ip_allocator(network, used).allocate()
}

/// `endpoints` sorted and without repetitions, each checked to be in the cluster network.
pub(crate) fn normalize_endpoints(
    endpoints: impl IntoIterator<Item = Ipv4Addr>,
    cluster_network: Ipv4Network,
) -> Result<Vec<Ipv4Addr>> {
    let mut out: Vec<Ipv4Addr> = endpoints.into_iter().collect();
    if let Some(ip) = out.iter().find(|ip| !cluster_network.contains(**ip)) {
        return Err(Error::InvalidService(format!("endpoint {ip} is not in the cluster network {cluster_network}")));
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Network {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn invalid(r: Result<()>) -> String {
        match r {
            Err(Error::InvalidService(m)) => m,
            other => panic!("expected InvalidService, got {other:?}"),
        }
    }

    #[test]
    fn json_shape() {
        let svc = Service {
            project: "a".into(),
            name: "web".into(),
            cluster_ip: ip("172.30.0.10"),
            ports: vec![
                ServicePort { name: Some("http".into()), ..ServicePort::new(Protocol::Tcp, 80, 8080) },
                ServicePort::new(Protocol::Udp, 53, 53),
            ],
            endpoints: vec![ip("10.128.0.5")],
            id: 7,
        };
        let json = serde_json::to_value(&svc).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "project": "a", "name": "web", "clusterIp": "172.30.0.10",
                "ports": [
                    {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080},
                    {"protocol": "UDP", "port": 53, "targetPort": 53}
                ],
                "endpoints": ["10.128.0.5"], "id": 7
            })
        );
        assert_eq!(serde_json::from_value::<Service>(json).unwrap(), svc);
        assert!(serde_json::from_value::<Protocol>(serde_json::json!("SCTP")).is_err());
        assert!(serde_json::from_value::<Protocol>(serde_json::json!("tcp")).is_err());
    }

    #[test]
    fn port_display() {
        let http = ServicePort::new(Protocol::Tcp, 80, 8080);
        let dns = ServicePort::new(Protocol::Udp, 53, 53);
        assert_eq!(http.to_string(), "80:8080/TCP");
        assert_eq!(dns.to_string(), "53/UDP");
    }

    #[test]
    fn service_names_are_dns1035_labels() {
        for ok in ["a", "web", "my-svc-1", &format!("a{}", "x".repeat(62))] {
            validate_service_name(ok).unwrap();
        }
        for bad in ["", "1web", "-a", "a-", "Web", "a.b", "a/b", "a_b", &"x".repeat(64)] {
            let m = invalid(validate_service_name(bad));
            assert!(m.starts_with(&format!("invalid service name {bad:?}")), "{m}");
        }
    }

    #[test]
    fn port_rules() {
        let tcp = |port, target| ServicePort::new(Protocol::Tcp, port, target);
        let udp = |port, target| ServicePort::new(Protocol::Udp, port, target);
        let named = |name: &str, p: ServicePort| ServicePort { name: Some(name.into()), ..p };
        validate_ports(&[tcp(80, 8080), udp(80, 80), tcp(443, 8443)]).unwrap();
        validate_ports(&[named("http", tcp(80, 80)), tcp(81, 81)]).unwrap();
        assert_eq!(invalid(validate_ports(&[])), "a service needs at least one port");
        assert_eq!(invalid(validate_ports(&[tcp(0, 80)])), "port 0:80/TCP: port 0 is not valid");
        assert_eq!(invalid(validate_ports(&[udp(53, 0)])), "port 53:0/UDP: port 0 is not valid");
        assert_eq!(invalid(validate_ports(&[tcp(80, 8080), tcp(80, 9090)])), "port 80/TCP is declared twice");
        assert_eq!(
            invalid(validate_ports(&[named("Http", tcp(80, 80))])),
            "port 80/TCP: invalid port name \"Http\" (must be a DNS-1123 label)"
        );
        assert_eq!(
            invalid(validate_ports(&[named("x", tcp(80, 80)), named("x", udp(80, 80))])),
            "port name \"x\" is used twice"
        );
    }

    #[test]
    fn requested_cluster_ips() {
        let n = net("172.30.0.0/16");
        check_cluster_ip(ip("172.30.0.1"), n).unwrap();
        check_cluster_ip(ip("172.30.255.254"), n).unwrap();
        for (bad, message) in [
            ("172.31.0.1", "ClusterIP 172.31.0.1 is outside the service network 172.30.0.0/16"),
            ("172.30.0.0", "ClusterIP 172.30.0.0 is the network address of the service network 172.30.0.0/16"),
            (
                "172.30.255.255",
                "ClusterIP 172.30.255.255 is the broadcast address of the service network 172.30.0.0/16",
            ),
        ] {
            let err = check_cluster_ip(ip(bad), n).unwrap_err();
            assert!(matches!(err, Error::ClusterIpOutOfRange { .. }), "{err:?}");
            assert_eq!(err.to_string(), message);
        }
    }

    #[test]
    fn allocation_covers_usable_addresses_then_runs_out() {
        let n = net("10.0.0.0/29");
        let mut used = vec![ip("10.0.0.3"), ip("192.168.0.1")];
        while let Ok(got) = allocate_cluster_ip(n, used.iter().copied()) {
            assert!(!used.contains(&got));
            used.push(got);
        }
        used.retain(|ip| n.contains(*ip));
        used.sort();
        let expected: Vec<Ipv4Addr> = (1..=6).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect();
        assert_eq!(used, expected, "all but the network and broadcast addresses");
        let err = allocate_cluster_ip(n, used).unwrap_err();
        assert_eq!(err.to_string(), "no free ClusterIP in 10.0.0.0/29: every address is allocated");
        for tiny in ["10.0.0.0/31", "10.0.0.0/32", "255.255.255.255/32"] {
            assert!(matches!(allocate_cluster_ip(net(tiny), []), Err(Error::ServiceIpsExhausted(_))), "{tiny}");
        }
        let pair = HashSet::from([ip("10.0.0.1"), ip("10.0.0.2")]);
        assert_eq!(allocate_cluster_ip(net("10.0.0.0/30"), [ip("10.0.0.1")]).unwrap(), ip("10.0.0.2"));
        assert!(pair.contains(&allocate_cluster_ip(net("10.0.0.0/30"), []).unwrap()));
    }

    #[test]
    fn allocation_starts_at_random() {
        // Twenty draws from 65534 free addresses: all the same only if the start is fixed.
        let n = net("172.30.0.0/16");
        let got: HashSet<Ipv4Addr> = (0..20).map(|_| allocate_cluster_ip(n, []).unwrap()).collect();
        assert!(got.len() > 1, "{got:?}");
        assert!(got.iter().all(|ip| check_cluster_ip(*ip, n).is_ok()));
    }

    #[test]
    fn endpoints_are_checked_sorted_and_deduplicated() {
        let c = net("10.128.0.0/14");
        assert_eq!(
            normalize_endpoints([ip("10.129.0.5"), ip("10.128.0.9"), ip("10.129.0.5")], c).unwrap(),
            [ip("10.128.0.9"), ip("10.129.0.5")]
        );
        assert!(normalize_endpoints([], c).unwrap().is_empty());
        let err = normalize_endpoints([ip("10.128.0.9"), ip("172.30.0.1")], c).unwrap_err();
        assert_eq!(err.to_string(), "invalid service: endpoint 172.30.0.1 is not in the cluster network 10.128.0.0/14");
    }
}
