//! What the plugin prints on success: the ADD result in the caller's version, and VERSION's
//! answer; plus reading a `prevResult` back for CHECK.

use std::net::Ipv4Addr;

use serde_json::{json, Map, Value};

use crate::error::{code, CniError};
use crate::protocol::PodNetwork;
use crate::version::{supported_strings, CniVersion};

/// The ADD result for `version`:
/// 1.x: `{"cniVersion","interfaces":[{"name","mac","sandbox"}],"ips":[{"address","gateway","interface":0}],
/// "routes":[{"dst":"0.0.0.0/0","gw"},{"dst":<cluster network>}],"dns":{}}`;
/// 0.3.x/0.4.0: the same with `"version":"4"` in each `ips[]` entry.
pub fn add_result(version: CniVersion, ifname: &str, netns: &str, pod: &PodNetwork) -> Value {
    let mut ip = json!({
        "address": format!("{}/{}", pod.ip, pod.prefix_len),
        "gateway": pod.gateway.to_string(),
        "interface": 0,
    });
    if version.ips_have_version() {
        ip["version"] = json!("4");
    }
    json!({
        "cniVersion": version.as_str(),
        "interfaces": [{ "name": ifname, "mac": pod.mac, "sandbox": netns }],
        "ips": [ip],
        "routes": [
            { "dst": "0.0.0.0/0", "gw": pod.gateway.to_string() },
            { "dst": pod.cluster_network },
        ],
        "dns": {},
    })
}

/// VERSION's answer, in the requested version when that one is supported, else the latest.
pub fn version_result(requested: Option<&str>) -> Value {
    let v = requested.and_then(CniVersion::parse).unwrap_or(CniVersion::LATEST);
    json!({ "cniVersion": v.as_str(), "supportedVersions": supported_strings() })
}

/// What CHECK reads from `prevResult`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrevResult {
    pub interfaces: Vec<PrevInterface>,
    pub ips: Vec<PrevIp>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrevInterface {
    pub name: String,
    pub mac: Option<String>,
    pub sandbox: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrevIp {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub interface: Option<usize>,
}

fn bad_prev(msg: impl Into<String>) -> CniError {
    CniError::new(code::INVALID_NETWORK_CONFIG, format!("invalid prevResult: {}", msg.into()))
}

/// `"a.b.c.d/len"` as an IPv4 prefix.
pub fn parse_ipv4_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, len) = s.split_once('/')?;
    let len: u8 = len.parse().ok()?;
    if len > 32 || (len.to_string() != s.split_once('/')?.1) {
        return None;
    }
    Some((ip.parse().ok()?, len))
}

/// Parse a `prevResult` (any supported version). IPv6 entries are skipped (this network is
/// IPv4-only); malformed entries are code 7.
pub fn parse_prev_result(prev: &Map<String, Value>) -> Result<PrevResult, CniError> {
    let mut interfaces = Vec::new();
    match prev.get("interfaces") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, it) in items.iter().enumerate() {
                let name = it
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad_prev(format!("interfaces[{i}] has no name")))?;
                let opt = |k: &str| it.get(k).and_then(Value::as_str).map(str::to_string);
                interfaces.push(PrevInterface { name: name.to_string(), mac: opt("mac"), sandbox: opt("sandbox") });
            }
        }
        Some(_) => return Err(bad_prev("interfaces is not an array")),
    }
    let mut ips = Vec::new();
    match prev.get("ips") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, it) in items.iter().enumerate() {
                let addr = it
                    .get("address")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad_prev(format!("ips[{i}] has no address")))?;
                if addr.contains(':') || it.get("version").and_then(Value::as_str) == Some("6") {
                    continue;
                }
                let (address, prefix_len) = parse_ipv4_cidr(addr)
                    .ok_or_else(|| bad_prev(format!("ips[{i}].address {addr:?} is not an IPv4 CIDR")))?;
                let gateway = match it.get("gateway") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(g)) => Some(
                        g.parse().map_err(|_| bad_prev(format!("ips[{i}].gateway {g:?} is not an IPv4 address")))?,
                    ),
                    Some(_) => return Err(bad_prev(format!("ips[{i}].gateway is not a string"))),
                };
                let interface = match it.get("interface") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(
                        v.as_u64()
                            .and_then(|n| usize::try_from(n).ok())
                            .ok_or_else(|| bad_prev(format!("ips[{i}].interface is not an index")))?,
                    ),
                };
                ips.push(PrevIp { address, prefix_len, gateway, interface });
            }
        }
        Some(_) => return Err(bad_prev("ips is not an array")),
    }
    Ok(PrevResult { interfaces, ips })
}

/// Check that `prev` (what ADD printed, possibly modified by later chained plugins) still
/// describes the interface `ifname` in `netns` with the address the agent expects.
pub fn check_prev_result(prev: &PrevResult, ifname: &str, netns: &str, pod: &PodNetwork) -> Result<(), CniError> {
    let mismatch = |m: String| CniError::new(code::INTERNAL, m);
    let ours = prev.interfaces.iter().position(|i| i.name == ifname && i.sandbox.as_deref().is_none_or(|s| s == netns));
    if let Some(idx) = ours {
        if let Some(mac) = &prev.interfaces[idx].mac {
            if !mac.eq_ignore_ascii_case(&pod.mac) {
                return Err(mismatch(format!("prevResult gives {ifname} MAC {mac}, the agent expects {}", pod.mac)));
            }
        }
    } else if !prev.interfaces.is_empty() {
        return Err(mismatch(format!("prevResult lists no interface {ifname} in {netns}")));
    }
    let ip =
        prev.ips.iter().find(|ip| ip.address == pod.ip).ok_or_else(|| {
            mismatch(format!("prevResult does not list the pod address {}/{}", pod.ip, pod.prefix_len))
        })?;
    if ip.prefix_len != pod.prefix_len {
        return Err(mismatch(format!(
            "prevResult gives {}/{}, the agent expects {}/{}",
            ip.address, ip.prefix_len, pod.ip, pod.prefix_len
        )));
    }
    if let Some(gw) = ip.gateway {
        if gw != pod.gateway {
            return Err(mismatch(format!("prevResult gives gateway {gw}, the agent expects {}", pod.gateway)));
        }
    }
    if let (Some(i), Some(ours)) = (ip.interface, ours) {
        if i != ours {
            return Err(mismatch(format!("prevResult assigns {} to interface #{i}, not {ifname}", pod.ip)));
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn pod() -> PodNetwork {
        PodNetwork {
            ip: "10.128.2.5".parse().unwrap(),
            prefix_len: 23,
            gateway: "10.128.2.1".parse().unwrap(),
            mac: "0a:58:0a:80:02:05".into(),
            mtu: 1450,
            cluster_network: "10.128.0.0/14".into(),
            project: "demo".into(),
            vnid: 42,
        }
    }

    #[test]
    fn result_1x_shape() {
        for v in [CniVersion::V1_0_0, CniVersion::V1_1_0] {
            let r = add_result(v, "eth0", "/var/run/netns/blue", &pod());
            assert_eq!(
                r,
                json!({
                    "cniVersion": v.as_str(),
                    "interfaces": [{"name": "eth0", "mac": "0a:58:0a:80:02:05", "sandbox": "/var/run/netns/blue"}],
                    "ips": [{"address": "10.128.2.5/23", "gateway": "10.128.2.1", "interface": 0}],
                    "routes": [{"dst": "0.0.0.0/0", "gw": "10.128.2.1"}, {"dst": "10.128.0.0/14"}],
                    "dns": {}
                })
            );
        }
    }

    #[test]
    fn result_0x_shape_has_ip_versions() {
        for v in [CniVersion::V0_3_0, CniVersion::V0_3_1, CniVersion::V0_4_0] {
            let r = add_result(v, "eth0", "/proc/1/ns/net", &pod());
            assert_eq!(r["cniVersion"], v.as_str());
            assert_eq!(
                r["ips"],
                json!([{"version": "4", "address": "10.128.2.5/23", "gateway": "10.128.2.1", "interface": 0}])
            );
            assert_eq!(r["interfaces"][0]["sandbox"], "/proc/1/ns/net");
            assert_eq!(r["routes"].as_array().unwrap().len(), 2);
            assert_eq!(r["dns"], json!({}));
        }
    }

    #[test]
    fn version_output() {
        let all = json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]);
        assert_eq!(version_result(None), json!({"cniVersion": "1.1.0", "supportedVersions": all}));
        assert_eq!(version_result(Some("0.4.0")), json!({"cniVersion": "0.4.0", "supportedVersions": all}));
        assert_eq!(version_result(Some("0.2.0"))["cniVersion"], "1.1.0");
    }

    #[test]
    fn cidrs() {
        assert_eq!(parse_ipv4_cidr("10.0.0.1/24"), Some(("10.0.0.1".parse().unwrap(), 24)));
        assert_eq!(parse_ipv4_cidr("0.0.0.0/0"), Some((Ipv4Addr::UNSPECIFIED, 0)));
        for bad in ["10.0.0.1", "10.0.0.1/33", "10.0.0.1/", "/24", "x/24", "10.0.0.1/024", "10.0.0.1/+4", "::1/64"] {
            assert_eq!(parse_ipv4_cidr(bad), None, "{bad}");
        }
    }

    fn prev_of(v: Value) -> Result<PrevResult, CniError> {
        parse_prev_result(v.as_object().unwrap())
    }

    #[test]
    fn prev_results_round_trip_through_check() {
        for v in [CniVersion::V0_4_0, CniVersion::V1_0_0, CniVersion::V1_1_0] {
            let r = add_result(v, "eth0", "/run/netns/x", &pod());
            let prev = prev_of(r).unwrap();
            check_prev_result(&prev, "eth0", "/run/netns/x", &pod()).unwrap();
        }
    }

    #[test]
    fn prev_result_mismatches() {
        let good = add_result(CniVersion::V1_0_0, "eth0", "/run/netns/x", &pod());
        let mut other_ip = good.clone();
        other_ip["ips"][0]["address"] = json!("10.128.2.6/23");
        let mut other_len = good.clone();
        other_len["ips"][0]["address"] = json!("10.128.2.5/24");
        let mut other_mac = good.clone();
        other_mac["interfaces"][0]["mac"] = json!("0a:58:0a:80:02:06");
        let mut other_gw = good.clone();
        other_gw["ips"][0]["gateway"] = json!("10.128.2.254");
        let mut other_if = good.clone();
        other_if["interfaces"][0]["name"] = json!("eth1");
        for bad in [other_ip, other_len, other_mac, other_gw, other_if] {
            let e = check_prev_result(&prev_of(bad.clone()).unwrap(), "eth0", "/run/netns/x", &pod()).unwrap_err();
            assert_eq!(e.code, code::INTERNAL, "{bad}");
        }
        // Upper-case MAC and extra (chained) interfaces/ips are fine.
        let mut ok = good.clone();
        ok["interfaces"][0]["mac"] = json!("0A:58:0A:80:02:05");
        ok["interfaces"].as_array_mut().unwrap().insert(0, json!({"name": "oxabc", "mac": "aa:bb:cc:dd:ee:ff"}));
        ok["ips"][0]["interface"] = json!(1);
        ok["ips"].as_array_mut().unwrap().push(json!({"address": "fd00::5/64", "interface": 1}));
        check_prev_result(&prev_of(ok).unwrap(), "eth0", "/run/netns/x", &pod()).unwrap();
    }

    #[test]
    fn malformed_prev_results_are_code_7() {
        for bad in [
            json!({"ips": {}}),
            json!({"ips": [{"gateway": "1.2.3.4"}]}),
            json!({"ips": [{"address": "nope"}]}),
            json!({"ips": [{"address": "1.2.3.4/8", "gateway": 5}]}),
            json!({"ips": [{"address": "1.2.3.4/8", "interface": -1}]}),
            json!({"interfaces": [{"mac": "x"}]}),
            json!({"interfaces": "eth0"}),
        ] {
            assert_eq!(prev_of(bad.clone()).unwrap_err().code, code::INVALID_NETWORK_CONFIG, "{bad}");
        }
    }
}
