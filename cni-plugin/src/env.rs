//! The CNI environment variables: the command, the attachment's identity, the netns path and
//! `CNI_ARGS`. Every malformed or missing required variable is code 4.

use crate::error::{code, CniError};
use crate::version::truncate;

/// Longest container id accepted (runtimes use 64 hex digits).
pub const MAX_CONTAINER_ID: usize = 256;
/// `IFNAMSIZ - 1`.
pub const MAX_IFNAME: usize = 15;
const MAX_NETNS_PATH: usize = 4096;
/// Kubernetes object names (DNS-1123 subdomains) are at most 253 bytes.
const MAX_POD_NAME: usize = 253;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CniCommand {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl CniCommand {
    pub fn parse(s: Option<&str>) -> Result<CniCommand, CniError> {
        match s {
            Some("ADD") => Ok(CniCommand::Add),
            Some("DEL") => Ok(CniCommand::Del),
            Some("CHECK") => Ok(CniCommand::Check),
            Some("STATUS") => Ok(CniCommand::Status),
            Some("GC") => Ok(CniCommand::Gc),
            Some("VERSION") => Ok(CniCommand::Version),
            None | Some("") => Err(invalid_env("CNI_COMMAND is not set")),
            Some(other) => Err(invalid_env(format!("unknown CNI_COMMAND {:?}", truncate(other, 32)))
                .with_details("expected one of ADD, DEL, CHECK, STATUS, GC, VERSION")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CniCommand::Add => "ADD",
            CniCommand::Del => "DEL",
            CniCommand::Check => "CHECK",
            CniCommand::Status => "STATUS",
            CniCommand::Gc => "GC",
            CniCommand::Version => "VERSION",
        }
    }
}

pub(crate) fn invalid_env(msg: impl Into<String>) -> CniError {
    CniError::new(code::INVALID_ENV, msg)
}

/// The CNI variables as the plugin was given them (empty values count as unset).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniEnv {
    pub command: Option<String>,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub args: Option<String>,
    pub path: Option<String>,
}

impl CniEnv {
    /// Read the variables through `lookup` (the process environment in the binary; a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> CniEnv {
        let get = |k: &str| lookup(k).filter(|v| !v.is_empty());
        CniEnv {
            command: get("CNI_COMMAND"),
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS"),
            ifname: get("CNI_IFNAME"),
            args: get("CNI_ARGS"),
            path: get("CNI_PATH"),
        }
    }

    pub fn command(&self) -> Result<CniCommand, CniError> {
        CniCommand::parse(self.command.as_deref())
    }

    /// `CNI_CONTAINERID`, required and validated.
    pub fn container_id(&self) -> Result<&str, CniError> {
        let id = self.container_id.as_deref().ok_or_else(|| invalid_env("CNI_CONTAINERID is not set"))?;
        validate_container_id(id)?;
        Ok(id)
    }

    /// `CNI_IFNAME`, required and validated.
    pub fn ifname(&self) -> Result<&str, CniError> {
        let name = self.ifname.as_deref().ok_or_else(|| invalid_env("CNI_IFNAME is not set"))?;
        validate_ifname(name)?;
        Ok(name)
    }

    /// `CNI_NETNS`, required (ADD, CHECK) and validated.
    pub fn netns(&self) -> Result<&str, CniError> {
        let path = self.netns.as_deref().ok_or_else(|| invalid_env("CNI_NETNS is not set"))?;
        validate_netns_path(path)?;
        Ok(path)
    }

    /// `CNI_NETNS` when set and well-formed (DEL does not need it).
    pub fn optional_netns(&self) -> Option<&str> {
        self.netns.as_deref().filter(|p| validate_netns_path(p).is_ok())
    }

    /// `CNI_ARGS` parsed (unset => no arguments).
    pub fn cni_args(&self) -> Result<CniArgs, CniError> {
        parse_cni_args(self.args.as_deref().unwrap_or(""))
    }
}

/// Container ids (spec): not empty, `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`; here also at most
/// [`MAX_CONTAINER_ID`] bytes.
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    let mut bytes = id.bytes();
    let ok = matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !ok {
        return Err(invalid_env(format!("invalid CNI_CONTAINERID {:?}", truncate(id, 80)))
            .with_details("it must start with a letter or digit, followed by letters, digits, '_', '.' or '-'"));
    }
    if id.len() > MAX_CONTAINER_ID {
        return Err(invalid_env(format!("CNI_CONTAINERID is longer than {MAX_CONTAINER_ID} bytes")));
    }
    Ok(())
}

/// Linux interface names: 1..=15 bytes, not "." or "..", no '/', ':', whitespace or control
/// characters.
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    let why = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_IFNAME {
        Some("it is longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("it must not be \".\" or \"..\"")
    } else if name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control()) {
        Some("it must not contain '/', ':', whitespace or control characters")
    } else {
        None
    };
    match why {
        Some(why) => Err(invalid_env(format!("invalid CNI_IFNAME {:?}", truncate(name, 40))).with_details(why)),
        None => Ok(()),
    }
}

/// `CNI_NETNS` must be an absolute path (`/proc/<pid>/ns/net`, `/var/run/netns/<name>`, ...).
pub fn validate_netns_path(path: &str) -> Result<(), CniError> {
    if !path.starts_with('/') || path.len() > MAX_NETNS_PATH || path.contains('\0') {
        return Err(invalid_env(format!("invalid CNI_NETNS {:?}", truncate(path, 120)))
            .with_details("it must be an absolute path to a network namespace"));
    }
    Ok(())
}

/// DNS-1123 label: 1..=63 of `[a-z0-9-]`, starting and ending with a letter or digit.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// `CNI_ARGS`: `K=V;K=V`. Unknown keys (including `IgnoreUnknown`, `K8S_POD_UID`,
/// `K8S_POD_INFRA_CONTAINER_ID`) are accepted and ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniArgs {
    /// `K8S_POD_NAMESPACE`, a DNS-1123 label when present.
    pub pod_namespace: Option<String>,
    /// `K8S_POD_NAME`.
    pub pod_name: Option<String>,
    /// Every pair, in order.
    pub pairs: Vec<(String, String)>,
}

impl CniArgs {
    /// The pod's project: `K8S_POD_NAMESPACE`, else `default_project` (the network
    /// config's `defaultProject`, for runtimes that name no namespace, such as podman);
    /// with neither, code 4 (ADD: never a silent default).
    pub fn project<'a>(&'a self, default_project: Option<&'a str>) -> Result<&'a str, CniError> {
        self.pod_namespace.as_deref().or(default_project).ok_or_else(|| {
            invalid_env("CNI_ARGS has no K8S_POD_NAMESPACE")
                .with_details("the pod's namespace selects its project (VNID); a network config's defaultProject names one for runtimes that send none")
        })
    }
}

/// Parse `CNI_ARGS`. Empty segments (a trailing ';') are skipped; a segment without '=' or
/// with an empty key, a repeated `K8S_POD_*` key, an invalid namespace or pod name => code 4.
/// A value may contain '='.
pub fn parse_cni_args(s: &str) -> Result<CniArgs, CniError> {
    let mut out = CniArgs::default();
    for seg in s.split(';') {
        if seg.is_empty() {
            continue;
        }
        let Some((k, v)) = seg.split_once('=') else {
            return Err(invalid_env(format!("invalid CNI_ARGS pair {:?}", truncate(seg, 80)))
                .with_details("expected KEY=VALUE"));
        };
        if k.is_empty() {
            return Err(invalid_env(format!("invalid CNI_ARGS pair {:?}", truncate(seg, 80))).with_details("empty key"));
        }
        match k {
            "K8S_POD_NAMESPACE" => {
                if out.pod_namespace.is_some() {
                    return Err(invalid_env("CNI_ARGS sets K8S_POD_NAMESPACE twice"));
                }
                if !is_dns1123_label(v) {
                    return Err(invalid_env(format!("invalid K8S_POD_NAMESPACE {:?}", truncate(v, 80)))
                        .with_details("a namespace is a DNS-1123 label: at most 63 of [a-z0-9-], starting and ending with a letter or digit"));
                }
                out.pod_namespace = Some(v.to_string());
            }
            "K8S_POD_NAME" => {
                if out.pod_name.is_some() {
                    return Err(invalid_env("CNI_ARGS sets K8S_POD_NAME twice"));
                }
                if v.is_empty() || v.len() > MAX_POD_NAME || v.chars().any(|c| c.is_control() || c.is_whitespace()) {
                    return Err(invalid_env(format!("invalid K8S_POD_NAME {:?}", truncate(v, 80))));
                }
                out.pod_name = Some(v.to_string());
            }
            _ => {}
        }
        out.pairs.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;

    pub(crate) fn env(pairs: &[(&str, &str)]) -> CniEnv {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        CniEnv::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn commands() {
        for (s, c) in [
            ("ADD", CniCommand::Add),
            ("DEL", CniCommand::Del),
            ("CHECK", CniCommand::Check),
            ("STATUS", CniCommand::Status),
            ("GC", CniCommand::Gc),
            ("VERSION", CniCommand::Version),
        ] {
            assert_eq!(CniCommand::parse(Some(s)).unwrap(), c);
            assert_eq!(c.as_str(), s);
        }
        for bad in [None, Some(""), Some("add"), Some("INIT"), Some("FINALIZE"), Some("ADD ")] {
            assert_eq!(CniCommand::parse(bad).unwrap_err().code, code::INVALID_ENV, "{bad:?}");
        }
    }

    #[test]
    fn env_lookup_and_required_vars() {
        let e = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", ""),
            ("CNI_PATH", "/opt/cni/bin"),
        ]);
        assert_eq!(e.command().unwrap(), CniCommand::Add);
        assert_eq!(e.container_id().unwrap(), "abc123");
        assert_eq!(e.netns().unwrap(), "/var/run/netns/x");
        assert_eq!(e.ifname().unwrap(), "eth0");
        assert_eq!(e.args, None, "empty values count as unset");
        assert_eq!(e.cni_args().unwrap(), CniArgs::default());

        let e = env(&[("CNI_COMMAND", "ADD")]);
        for r in [e.container_id().map(drop), e.netns().map(drop), e.ifname().map(drop)] {
            assert_eq!(r.unwrap_err().code, code::INVALID_ENV);
        }
        assert_eq!(e.optional_netns(), None);
        assert_eq!(env(&[("CNI_NETNS", "relative/ns")]).optional_netns(), None);
        assert_eq!(env(&[("CNI_NETNS", "relative/ns")]).netns().unwrap_err().code, code::INVALID_ENV);
    }

    #[test]
    fn container_ids() {
        for ok in ["a", "0", "abc-DEF_1.2", &"f".repeat(64), &"a".repeat(MAX_CONTAINER_ID)] {
            assert!(validate_container_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "_a", ".a", "a/b", "a b", "a;b", "é", "a\n", &"a".repeat(MAX_CONTAINER_ID + 1)] {
            assert_eq!(validate_container_id(bad).unwrap_err().code, code::INVALID_ENV, "{bad:?}");
        }
    }

    #[test]
    fn ifnames() {
        for ok in ["eth0", "e", "net1", "a.b-c_d", "123456789012345", "..."] {
            assert!(validate_ifname(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "1234567890123456", "a/b", "a:b", "a b", "a\tb", "\u{7f}x", "ééééééééé"] {
            assert_eq!(validate_ifname(bad).unwrap_err().code, code::INVALID_ENV, "{bad:?}");
        }
    }

    #[test]
    fn dns1123_labels() {
        for ok in ["a", "default", "my-project-1", "0", &"a".repeat(63)] {
            assert!(is_dns1123_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64), "é"] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
    }

    #[test]
    fn cni_args_kubelet_style() {
        let a = parse_cni_args("IgnoreUnknown=1;K8S_POD_NAMESPACE=my-ns;K8S_POD_NAME=web-5d8f-x2;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=1-2-3").unwrap();
        assert_eq!(a.pod_namespace.as_deref(), Some("my-ns"));
        assert_eq!(a.pod_name.as_deref(), Some("web-5d8f-x2"));
        assert_eq!(a.pairs.len(), 5);
        assert_eq!(a.project(None).unwrap(), "my-ns");
        assert_eq!(a.project(Some("other")).unwrap(), "my-ns", "the runtime's namespace wins");
    }

    #[test]
    fn cni_args_edge_cases() {
        assert_eq!(parse_cni_args("").unwrap(), CniArgs::default());
        let a = parse_cni_args("K8S_POD_NAMESPACE=ns;").unwrap();
        assert_eq!(a.pod_namespace.as_deref(), Some("ns"));
        assert!(a.pod_name.is_none());
        let a = parse_cni_args("X=a=b;K8S_POD_NAMESPACE=ns").unwrap();
        assert_eq!(a.pairs[0], ("X".into(), "a=b".into()));
        assert_eq!(parse_cni_args("FOO=1").unwrap().project(None).unwrap_err().code, code::INVALID_ENV);
        // podman 4's CNI_ARGS: a pod name, no namespace.
        let podman = parse_cni_args("IgnoreUnknown=1;K8S_POD_NAME=web").unwrap();
        assert_eq!(podman.project(Some("standalone")).unwrap(), "standalone");
        for bad in [
            "FOO",
            "=v",
            "K8S_POD_NAMESPACE=",
            "K8S_POD_NAMESPACE=Bad_NS",
            "K8S_POD_NAMESPACE=a;K8S_POD_NAMESPACE=b",
            "K8S_POD_NAME=",
            "K8S_POD_NAME=a b",
            "K8S_POD_NAME=a;K8S_POD_NAME=b",
            "K8S_POD_NAMESPACE=-x",
        ] {
            assert_eq!(parse_cni_args(bad).unwrap_err().code, code::INVALID_ENV, "{bad:?}");
        }
    }
}
