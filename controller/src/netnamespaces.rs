//! NetNamespaces: one per project, carrying its VNID (NETID); project names, labels and
//! label selectors; annotations, among them OpenShift's multicast switch.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::{
    policy::{
        validation::{label_key_errors, label_value_errors},
        NAMESPACE_NAME_LABEL,
    },
    Error, Result,
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetNamespace {
    /// The project (Kubernetes namespace) name, a DNS-1123 label.
    pub name: String,
    /// The VNID: 0 for global projects, otherwise in [10, 2^24-1].
    pub netid: u32,
    /// Stable, never reused number of this project, assigned at creation. Nodes key
    /// their dataplane state by it, so a VNID change is one update per project.
    pub id: u32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Kubernetes' `metadata.annotations` (`MULTICAST_ANNOTATION` among them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl NetNamespace {
    /// The labels selectors see: the record's, and `kubernetes.io/metadata.name` with the
    /// name, which Kubernetes gives every namespace. Records need not carry it (manifests'
    /// and label commands' values for it are not stored): it is implied, and a stored
    /// value for it is overridden here.
    pub fn effective_labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.labels.clone();
        labels.insert(NAMESPACE_NAME_LABEL.to_owned(), self.name.clone());
        labels
    }

    /// Whether this project asks for multicast (`MULTICAST_ANNOTATION` is `"true"`).
    pub fn multicast_enabled(&self) -> bool {
        self.annotations.get(MULTICAST_ANNOTATION).is_some_and(|v| v == "true")
    }
}

/// The annotation with which a project enables multicast, as in OpenShift SDN.
pub const MULTICAST_ANNOTATION: &str = "netnamespace.network.openshift.io/multicast-enabled";

/// The prefix of OpenShift's NetNamespace settings (`MULTICAST_ANNOTATION`): what
/// oxsdn-kube copies from the API's NetNamespace objects.
pub const NETNAMESPACE_ANNOTATION_PREFIX: &str = "netnamespace.network.openshift.io/";

/// The annotation `oc adm pod-network` puts on a NetNamespace, and OpenShift's master
/// (oxsdn-kube on a Kubernetes cluster) removes once it has applied it.
pub const CHANGE_NETWORK_ANNOTATION: &str = "pod.network.openshift.io/multitenant.change-network";

/// Kubernetes' limit on an object's annotations, keys and values together.
pub const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;

/// The VNIDs whose multicast is enabled, from each project's VNID and wish: those every
/// project sharing the VNID enables (OpenShift's rule for joined projects).
pub fn multicast_vnids(projects: impl IntoIterator<Item = (u32, bool)>) -> BTreeSet<u32> {
    let mut all_enable: HashMap<u32, bool> = HashMap::new();
    for (vnid, enabled) in projects {
        *all_enable.entry(vnid).or_insert(true) &= enabled;
    }
    all_enable.into_iter().filter(|(_, enabled)| *enabled).map(|(vnid, _)| vnid).collect()
}

/// Checks annotations as Kubernetes does: each key a qualified name (checked in lower
/// case), values free, all of them together at most `ANNOTATIONS_MAX_BYTES`.
pub fn validate_annotations(annotations: &BTreeMap<String, String>) -> Result<()> {
    let mut total = 0;
    for (k, v) in annotations {
        if let Some(why) = label_key_errors(&k.to_lowercase()).first() {
            return Err(Error::Invalid(format!("invalid annotation key {k:?}: {why}")));
        }
        total += k.len() + v.len();
    }
    if total > ANNOTATIONS_MAX_BYTES {
        return Err(Error::Invalid(format!(
            "annotations: Too long: must have at most {ANNOTATIONS_MAX_BYTES} bytes (these have {total})"
        )));
    }
    Ok(())
}

/// The project every cluster has, always global (VNID 0) at creation.
pub const DEFAULT_PROJECT: &str = "default";

/// Whether `s` is a DNS-1123 label: 1-63 lowercase letters, digits and '-', starting and
/// ending with a letter or digit.
pub fn is_dns1123_label(s: &str) -> bool {
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|c| alnum(c) || c == b'-')
        && s.bytes().next().is_some_and(alnum)
        && s.bytes().last().is_some_and(alnum)
}

/// Checks a project name, which becomes part of a store key.
pub fn validate_project_name(name: &str) -> Result<()> {
    if is_dns1123_label(name) {
        Ok(())
    } else {
        Err(Error::InvalidProjectName(name.to_owned()))
    }
}

/// A label key: `[prefix/]name`, the prefix a DNS subdomain (Kubernetes' qualified name).
fn is_label_key(s: &str) -> bool {
    label_key_errors(s).is_empty()
}

/// A label value: empty, or like a label key's name.
fn is_label_value(s: &str) -> bool {
    label_value_errors(s).is_empty()
}

/// Checks label keys and values with Kubernetes' syntax rules.
pub fn validate_labels(labels: &BTreeMap<String, String>) -> Result<()> {
    for (k, v) in labels {
        if let Some(why) = label_key_errors(k).first() {
            return Err(Error::Invalid(format!("invalid label key {k:?}: {why}")));
        }
        if let Some(why) = label_value_errors(v).first() {
            return Err(Error::Invalid(format!("invalid value {v:?} for label {k:?}: {why}")));
        }
    }
    Ok(())
}

/// One requirement of an equality-based label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
}

/// A Kubernetes equality-based label selector: comma-separated requirements, all of which
/// must hold: `k=v` or `k==v` (label k has value v), `k!=v` (label k is absent or has
/// another value), `k` (label k exists), `!k` (label k is absent). As in Kubernetes, the
/// empty selector matches everything. Set-based forms (`in`, `notin`) are not supported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    pub fn parse(selector: &str) -> Result<LabelSelector> {
        let invalid = |why: &str| Error::InvalidSelector(format!("{selector:?}: {why}"));
        let key = |k: &str| -> Result<String> {
            let k = k.trim();
            if is_label_key(k) {
                Ok(k.to_owned())
            } else {
                Err(invalid(&format!("invalid label key {k:?}")))
            }
        };
        let value = |v: &str| -> Result<String> {
            let v = v.trim();
            if is_label_value(v) {
                Ok(v.to_owned())
            } else {
                Err(invalid(&format!("invalid label value {v:?}")))
            }
        };
        if selector.trim().is_empty() {
            return Ok(LabelSelector { requirements: Vec::new() });
        }
        let requirements = selector
            .split(',')
            .map(|term| {
                let term = term.trim();
                if term.is_empty() {
                    Err(invalid("empty requirement"))
                } else if let Some((k, v)) = term.split_once("!=") {
                    Ok(Requirement::NotEquals(key(k)?, value(v)?))
                } else if let Some((k, v)) = term.split_once("==") {
                    Ok(Requirement::Equals(key(k)?, value(v)?))
                } else if let Some((k, v)) = term.split_once('=') {
                    Ok(Requirement::Equals(key(k)?, value(v)?))
                } else if let Some(k) = term.strip_prefix('!') {
                    Ok(Requirement::NotExists(key(k)?))
                } else {
                    Ok(Requirement::Exists(key(term)?))
                }
            })
            .collect::<Result<_>>()?;
        Ok(LabelSelector { requirements })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn project_names() {
        for ok in ["default", "a", "my-project-1", "0abc", &"x".repeat(63)] {
            assert!(validate_project_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a.b", "a/b", "a_b", " a", &"x".repeat(64)] {
            assert!(matches!(validate_project_name(bad), Err(Error::InvalidProjectName(_))), "{bad}");
        }
    }

    #[test]
    fn label_syntax() {
        validate_labels(&labels(&[("team", "blue"), ("example.com/tier", "front_end.1"), ("empty", "")])).unwrap();
        for (k, v) in [("", "x"), ("-a", "x"), ("a", "-x"), ("Bad_Prefix/a", "x"), ("a/b/c", "x"), ("a", "x y")] {
            assert!(validate_labels(&labels(&[(k, v)])).is_err(), "{k}={v}");
        }
    }

    #[test]
    fn annotation_syntax() {
        let big = "x".repeat(ANNOTATIONS_MAX_BYTES);
        validate_annotations(&labels(&[(MULTICAST_ANNOTATION, "true"), ("Example.com/Free", "any value: at all")]))
            .unwrap();
        for (k, v) in [("", "x"), ("a/b/c", "x"), ("bad_prefix/a", "x"), ("a", big.as_str())] {
            assert!(validate_annotations(&labels(&[(k, v)])).is_err(), "{k}={v:.20}");
        }
    }

    #[test]
    fn multicast_needs_every_project_of_the_vnid() {
        let vnids = multicast_vnids([(10, true), (11, true), (11, false), (12, false), (0, true)]);
        assert_eq!(vnids.into_iter().collect::<Vec<_>>(), [0, 10]);
    }

    #[test]
    fn selector_forms() {
        let l = labels(&[("team", "blue"), ("env", "prod")]);
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&l);
        assert!(m("team=blue"));
        assert!(m("team==blue"));
        assert!(m(" team = blue , env==prod "));
        assert!(!m("team=red"));
        assert!(m("team!=red"));
        assert!(!m("team!=blue"));
        assert!(m("missing!=x"), "!= matches when the label is absent");
        assert!(m("team"));
        assert!(!m("missing"));
        assert!(m("!missing"));
        assert!(!m("!team"));
        assert!(!m("team=blue,env=dev"));
        assert!(m(""), "the empty selector matches everything");
        assert!(m("team=blue,!missing,env"));
        assert!(LabelSelector::parse("empty=").unwrap().matches(&labels(&[("empty", "")])));
    }

    #[test]
    fn selector_syntax_errors() {
        for bad in ["team=blue,", ",", "a b", "team in (blue)", "=x", "!", "a=b=c", "!a=b", "a=-x"] {
            assert!(matches!(LabelSelector::parse(bad), Err(Error::InvalidSelector(_))), "{bad:?}");
        }
        let err = LabelSelector::parse("team=blue,").unwrap_err();
        assert_eq!(err.to_string(), r#"invalid label selector "team=blue,": empty requirement"#);
        // The empty value is valid, as in Kubernetes.
        assert!(LabelSelector::parse("a!=").is_ok());
    }
}
