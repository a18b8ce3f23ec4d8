//! The network configuration the runtime streams on stdin: parsing and validation.
//!
//! Error codes: bigger than [`MAX_MESSAGE_BYTES`] or not a JSON object => 6 (decode failure);
//! `cniVersion` missing/empty/not a string, `name` missing or invalid, `type` not `"oxsdn"`,
//! malformed `agentSocket`, `defaultProject`, `prevResult`, `cni.dev/valid-attachments` or
//! `runtimeConfig` (`runtime_config`) => 7
//! (invalid network config); a well-formed but unsupported `cniVersion` => 1. Unknown fields
//! are ignored.

use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::env::is_dns1123_label;
use crate::error::{code, CniError};
use crate::protocol::{Attachment, DEFAULT_AGENT_SOCKET, MAX_MESSAGE_BYTES};
use crate::runtime_config::{self, RuntimeConfig};
use crate::version::{self, CniVersion};

/// The plugin's `type`.
pub const PLUGIN_TYPE: &str = "oxsdn";
/// The GC input key of CNI 1.1.0.
pub const VALID_ATTACHMENTS_KEY: &str = "cni.dev/valid-attachments";
/// The key libcni also injects (an early spelling, kept for compatibility).
pub const ATTACHMENTS_KEY_COMPAT: &str = "cni.dev/attachments";
/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

#[derive(Clone, Debug, PartialEq)]
pub struct NetConf {
    pub cni_version: CniVersion,
    pub name: String,
    /// `agentSocket`, or [`DEFAULT_AGENT_SOCKET`].
    pub agent_socket: PathBuf,
    /// `defaultProject`: the project of pods whose runtime sends no `K8S_POD_NAMESPACE`
    /// (podman); without it such an ADD fails with code 4.
    pub default_project: Option<String>,
    /// `prevResult` (CHECK; also passed on DEL, where it is ignored).
    pub prev_result: Option<Map<String, Value>>,
    /// `cni.dev/valid-attachments` (GC). `None` when absent, which GC refuses (an absent list
    /// must not be read as "nothing is valid").
    pub valid_attachments: Option<Vec<Attachment>>,
    /// `runtimeConfig`: the host ports and bandwidth limits the runtime asks for.
    pub runtime: RuntimeConfig,
}

/// A rejected config, with the `cniVersion` string it asked for (if any) to tag the error with.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigError {
    pub requested_version: Option<String>,
    pub error: CniError,
}

impl ConfigError {
    fn new(requested_version: Option<&str>, error: CniError) -> Self {
        ConfigError { requested_version: requested_version.map(str::to_string), error }
    }
}

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(code::INVALID_NETWORK_CONFIG, msg)
}

/// Decode stdin as JSON; codes 6 for oversize, non-JSON or non-object input.
pub fn decode_object(stdin: &[u8]) -> Result<Map<String, Value>, CniError> {
    if stdin.len() > MAX_MESSAGE_BYTES {
        return Err(CniError::new(
            code::DECODE_FAILURE,
            format!("network config is larger than {MAX_MESSAGE_BYTES} bytes"),
        ));
    }
    match serde_json::from_slice::<Value>(stdin) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(CniError::new(code::DECODE_FAILURE, "network config is not a JSON object")),
        Err(e) => {
            Err(CniError::new(code::DECODE_FAILURE, "network config is not valid JSON").with_details(e.to_string()))
        }
    }
}

/// Parse and validate the network config.
pub fn parse_netconf(stdin: &[u8]) -> Result<NetConf, ConfigError> {
    let obj = decode_object(stdin).map_err(|e| ConfigError::new(None, e))?;

    let raw_version = match obj.get("cniVersion") {
        Some(Value::String(s)) if !s.is_empty() => s.as_str(),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(ConfigError::new(None, invalid("network config has no cniVersion")))
        }
        Some(_) => return Err(ConfigError::new(None, invalid("cniVersion must be a string"))),
    };
    let fail = |e: CniError| ConfigError::new(Some(raw_version), e);
    let cni_version = CniVersion::parse(raw_version).ok_or_else(|| fail(version::incompatible(raw_version)))?;

    let name = match obj.get("name") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) | None | Some(Value::Null) => return Err(fail(invalid("network config has no name"))),
        Some(_) => return Err(fail(invalid("name must be a string"))),
    };
    if !valid_network_name(&name) {
        return Err(fail(invalid(format!(
            "invalid network name {:?}: it must start with a letter or digit, followed by letters, digits, '_', '.' or '-'",
            version::truncate(&name, 64)
        ))));
    }

    match obj.get("type") {
        Some(Value::String(t)) if t == PLUGIN_TYPE => {}
        Some(Value::String(t)) => {
            return Err(fail(invalid(format!(
                "network config type is {:?}, this plugin is {PLUGIN_TYPE:?}",
                version::truncate(t, 64)
            ))))
        }
        None | Some(Value::Null) => return Err(fail(invalid("network config has no type"))),
        Some(_) => return Err(fail(invalid("type must be a string"))),
    }

    let agent_socket = match obj.get("agentSocket") {
        None | Some(Value::Null) => PathBuf::from(DEFAULT_AGENT_SOCKET),
        Some(Value::String(s)) => {
            if !s.starts_with('/') || s.len() > MAX_SOCKET_PATH || s.contains('\0') {
                return Err(fail(invalid(format!(
                    "agentSocket must be an absolute path of at most {MAX_SOCKET_PATH} bytes"
                ))));
            }
            PathBuf::from(s)
        }
        Some(_) => return Err(fail(invalid("agentSocket must be a string"))),
    };

    let default_project = match obj.get("defaultProject") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) if is_dns1123_label(p) => Some(p.clone()),
        Some(_) => {
            return Err(fail(invalid(
                "defaultProject must be a project (namespace) name: at most 63 of [a-z0-9-], starting and ending with a letter or digit",
            )))
        }
    };

    let prev_result = match obj.get("prevResult") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m.clone()),
        Some(_) => return Err(fail(invalid("prevResult must be a JSON object"))),
    };

    let valid_attachments = match obj.get(VALID_ATTACHMENTS_KEY).or_else(|| obj.get(ATTACHMENTS_KEY_COMPAT)) {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_attachments(v).map_err(fail)?),
    };

    let runtime = runtime_config::parse(obj.get("runtimeConfig")).map_err(fail)?;

    Ok(NetConf { cni_version, name, agent_socket, default_project, prev_result, valid_attachments, runtime })
}

/// `cni.dev/valid-attachments`: `[{"containerID": "...", "ifname": "..."}, ...]` (other keys in
/// an entry are ignored). Code 7 for anything else.
pub fn parse_attachments(v: &Value) -> Result<Vec<Attachment>, CniError> {
    let Value::Array(items) = v else {
        return Err(invalid(format!("{VALID_ATTACHMENTS_KEY} must be an array")));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let field = |key: &str| match item.get(key) {
                Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                _ => Err(invalid(format!("{VALID_ATTACHMENTS_KEY}[{i}] has no string {key:?}"))),
            };
            if !item.is_object() {
                return Err(invalid(format!("{VALID_ATTACHMENTS_KEY}[{i}] is not an object")));
            }
            Ok(Attachment { container_id: field("containerID")?, ifname: field("ifname")? })
        })
        .collect()
}

/// Network names (spec 1.0): `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`.
fn valid_network_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && s.len() <= 255
}

/// The `cniVersion` string of a config, if it has one (used by VERSION).
pub fn requested_version(stdin: &[u8]) -> Option<String> {
    let obj = decode_object(stdin).ok()?;
    obj.get("cniVersion")?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<NetConf, ConfigError> {
        parse_netconf(v.to_string().as_bytes())
    }

    fn code_of(v: Value) -> u32 {
        parse(v).unwrap_err().error.code
    }

    #[test]
    fn minimal_config() {
        let c = parse(json!({"cniVersion": "1.0.0", "name": "oxsdn", "type": "oxsdn"})).unwrap();
        assert_eq!(c.cni_version, CniVersion::V1_0_0);
        assert_eq!(c.name, "oxsdn");
        assert_eq!(c.agent_socket, PathBuf::from(DEFAULT_AGENT_SOCKET));
        assert!(c.default_project.is_none());
        assert!(c.prev_result.is_none());
        assert!(c.valid_attachments.is_none());
    }

    #[test]
    fn full_config_with_unknown_fields() {
        let c = parse(json!({
            "cniVersion": "0.4.0", "name": "net-1.a_b", "type": "oxsdn",
            "agentSocket": "/tmp/agent.sock", "unknown": {"x": [1, 2]}, "cniVersions": ["1.0.0"],
            "defaultProject": "standalone",
            "prevResult": {"cniVersion": "0.4.0", "ips": []},
            "runtimeConfig": {}, "capabilities": {"portMappings": true}
        }))
        .unwrap();
        assert_eq!(c.agent_socket, PathBuf::from("/tmp/agent.sock"));
        assert_eq!(c.default_project.as_deref(), Some("standalone"));
        assert!(c.prev_result.is_some());
    }

    #[test]
    fn decode_failures_are_code_6() {
        for bad in [&b""[..], b"{", b"null", b"[]", b"\"s\"", b"42", b"\xff\xfe", b"{\"a\":1}x"] {
            let e = parse_netconf(bad).unwrap_err();
            assert_eq!(e.error.code, code::DECODE_FAILURE, "{bad:?}");
        }
        let mut big = br#"{"cniVersion":"1.0.0","name":"n","type":"oxsdn","pad":""#.to_vec();
        big.resize(MAX_MESSAGE_BYTES + 10, b'a');
        big.extend_from_slice(b"\"}");
        assert_eq!(parse_netconf(&big).unwrap_err().error.code, code::DECODE_FAILURE);
    }

    #[test]
    fn invalid_configs_are_code_7() {
        let cases = [
            json!({"name": "n", "type": "oxsdn"}),
            json!({"cniVersion": "", "name": "n", "type": "oxsdn"}),
            json!({"cniVersion": null, "name": "n", "type": "oxsdn"}),
            json!({"cniVersion": 1, "name": "n", "type": "oxsdn"}),
            json!({"cniVersion": "1.0.0", "type": "oxsdn"}),
            json!({"cniVersion": "1.0.0", "name": "", "type": "oxsdn"}),
            json!({"cniVersion": "1.0.0", "name": 3, "type": "oxsdn"}),
            json!({"cniVersion": "1.0.0", "name": "a b", "type": "oxsdn"}),
            json!({"cniVersion": "1.0.0", "name": "-a", "type": "oxsdn"}),
            json!({"cniVersion": "1.0.0", "name": "n"}),
            json!({"cniVersion": "1.0.0", "name": "n", "type": "bridge"}),
            json!({"cniVersion": "1.0.0", "name": "n", "type": ["oxsdn"]}),
            json!({"cniVersion": "1.0.0", "name": "n", "type": "oxsdn", "agentSocket": "rel.sock"}),
            json!({"cniVersion": "1.0.0", "name": "n", "type": "oxsdn", "agentSocket": ""}),
            json!({"cniVersion": "1.0.0", "name": "n", "type": "oxsdn", "agentSocket": 5}),
            json!({"cniVersion": "1.0.0", "name": "n", "type": "oxsdn", "agentSocket": format!("/{}", "a".repeat(200))}),
            json!({"cniVersion": "1.0.0", "name": "n", "type": "oxsdn", "defaultProject": "Not_A_Label"}),
            json!({"cniVersion": "1.0.0", "name": "n", "type": "oxsdn", "defaultProject": ""}),
            json!({"cniVersion": "1.0.0", "name": "n", "type": "oxsdn", "defaultProject": 5}),
            json!({"cniVersion": "1.0.0", "name": "n", "type": "oxsdn", "prevResult": []}),
            json!({"cniVersion": "1.1.0", "name": "n", "type": "oxsdn", "cni.dev/valid-attachments": {}}),
            json!({"cniVersion": "1.1.0", "name": "n", "type": "oxsdn", "cni.dev/valid-attachments": [{"containerID": "a"}]}),
            json!({"cniVersion": "1.1.0", "name": "n", "type": "oxsdn", "cni.dev/valid-attachments": [{"containerID": "", "ifname": "eth0"}]}),
            json!({"cniVersion": "1.1.0", "name": "n", "type": "oxsdn", "cni.dev/valid-attachments": ["x"]}),
        ];
        for c in cases {
            assert_eq!(code_of(c.clone()), code::INVALID_NETWORK_CONFIG, "{c}");
        }
    }

    #[test]
    fn unsupported_version_is_code_1_and_keeps_the_version() {
        for v in ["0.1.0", "0.2.0", "1.2.0", "2.0.0", "1.0"] {
            let e = parse(json!({"cniVersion": v, "name": "n", "type": "oxsdn"})).unwrap_err();
            assert_eq!(e.error.code, code::INCOMPATIBLE_VERSION);
            assert_eq!(e.requested_version.as_deref(), Some(v));
        }
        // The version check comes before the type check.
        assert_eq!(code_of(json!({"cniVersion": "0.2.0", "name": "n", "type": "bridge"})), code::INCOMPATIBLE_VERSION);
    }

    #[test]
    fn gc_attachments() {
        let c = parse(json!({
            "cniVersion": "1.1.0", "name": "n", "type": "oxsdn",
            "cni.dev/valid-attachments": [
                {"containerID": "abc", "ifname": "eth0"},
                {"containerID": "def", "ifname": "net1", "extra": true}
            ]
        }))
        .unwrap();
        assert_eq!(
            c.valid_attachments.unwrap(),
            vec![
                Attachment { container_id: "abc".into(), ifname: "eth0".into() },
                Attachment { container_id: "def".into(), ifname: "net1".into() },
            ]
        );
        let c = parse(json!({"cniVersion": "1.1.0", "name": "n", "type": "oxsdn", "cni.dev/valid-attachments": []}))
            .unwrap();
        assert_eq!(c.valid_attachments, Some(vec![]));
        let c = parse(json!({"cniVersion": "1.1.0", "name": "n", "type": "oxsdn",
            "cni.dev/attachments": [{"containerID": "x", "ifname": "eth0"}]}))
        .unwrap();
        assert_eq!(c.valid_attachments.unwrap().len(), 1);
    }

    #[test]
    fn shipped_conflist_is_accepted() {
        // A runtime hands each plugin its entry plus the list's cniVersion and name.
        let list: Value = serde_json::from_str(include_str!("../conf/80-oxsdn.conflist")).unwrap();
        let mut entry = list["plugins"][0].clone();
        entry["cniVersion"] = list["cniVersion"].clone();
        entry["name"] = list["name"].clone();
        let c = parse(entry).unwrap();
        assert_eq!(c.agent_socket, PathBuf::from(DEFAULT_AGENT_SOCKET));
        assert_eq!(c.default_project.as_deref(), Some("oxsdn-standalone"));
        assert_eq!(c.cni_version, CniVersion::V1_0_0);
    }

    #[test]
    fn requested_version_peek() {
        assert_eq!(requested_version(br#"{"cniVersion":"0.4.0"}"#).as_deref(), Some("0.4.0"));
        assert_eq!(requested_version(b"garbage"), None);
        assert_eq!(requested_version(b""), None);
    }
}
