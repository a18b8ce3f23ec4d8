//! Kubernetes manifests, as `kubectl apply -f` reads them: YAML (documents separated by
//! `---`) or JSON (one or more objects), each document an object or a `List` of them.
//! oxsdn takes `NetworkPolicy` (networking.k8s.io/v1), `EgressNetworkPolicy`
//! (network.openshift.io/v1), `Namespace` (v1: its labels) and `Pod` (v1: its labels and
//! named container ports).
//!
//! Every object is decoded strictly (an unknown field is an error, as with kubectl's
//! default `--validate=strict`), given the API server's defaults and validated as the API
//! server does (`validation`); `parse` returns every object or, if any document is
//! invalid, every error, so that a caller applies all of a file or nothing.
//!
//! Bounded: at most `MAX_MANIFEST_BYTES`; libyaml's limits on nesting and alias expansion
//! (a "billion laughs" document is refused), serde_json's on nesting.

use std::{collections::BTreeMap, fmt};

use k8s_openapi::{
    api::{
        core::v1::{Namespace, Pod},
        networking::v1::{NetworkPolicy, NetworkPolicySpec},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use serde::{
    de::{self, DeserializeOwned, MapAccess, SeqAccess, Visitor},
    Deserialize, Deserializer, Serialize,
};
use serde_json::Value;

use super::{
    validate_policy_name, validate_policy_spec,
    validation::{
        default_network_policy_spec, validate_namespace, validate_network_policy, validate_pod, FieldErrors, FieldPath,
    },
    NamedPort, PodMeta, NAMESPACE_NAME_LABEL,
};
use crate::{
    egress::{self, EgressNetworkPolicy, EgressNetworkPolicyRecord},
    netnamespaces::{validate_labels, validate_project_name},
};

/// The largest manifest file taken (16 MiB): far above any real set of policies, small
/// enough that decoding it stays within a few hundred MiB.
pub const MAX_MANIFEST_BYTES: usize = 16 << 20;

/// The namespace of namespaced objects that name none, as kubectl's default context has.
pub const DEFAULT_NAMESPACE: &str = "default";

/// An object of a manifest, as oxsdn keeps it.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    /// With the API server's defaults applied.
    NetworkPolicy {
        namespace: String,
        name: String,
        spec: NetworkPolicySpec,
    },
    /// The namespace's labels, without `kubernetes.io/metadata.name` (implied: see
    /// `NetNamespace::effective_labels`).
    Namespace {
        name: String,
        labels: BTreeMap<String, String>,
    },
    Pod(PodMeta),
    /// An EgressNetworkPolicy (network.openshift.io/v1).
    EgressNetworkPolicy(EgressNetworkPolicyRecord),
    /// A NetNamespace's egress IPs (network.openshift.io/v1).
    NetNamespaceEgress(crate::egress_ip::NetNamespaceEgress),
    /// A HostSubnet's egress IPs and CIDRs (network.openshift.io/v1).
    HostSubnetEgress(crate::egress_ip::HostSubnetEgress),
}

impl Object {
    /// kubectl's name for it: `networkpolicy.networking.k8s.io/deny`, `namespace/x`, `pod/a`.
    pub fn reference(&self) -> String {
        match self {
            Object::NetworkPolicy { name, .. } => format!("networkpolicy.networking.k8s.io/{name}"),
            Object::Namespace { name, .. } => format!("namespace/{name}"),
            Object::Pod(meta) => format!("pod/{}", meta.name),
            Object::EgressNetworkPolicy(policy) => format!("egressnetworkpolicy.network.openshift.io/{}", policy.name),
            Object::NetNamespaceEgress(ns) => format!("netnamespace.network.openshift.io/{}", ns.record.project),
            Object::HostSubnetEgress(hs) => format!("hostsubnet.network.openshift.io/{}", hs.record.node),
        }
    }

    /// Checks what a store key or record is made of, for objects that did not come from
    /// `parse` (which validates them fully).
    pub(crate) fn check(&self) -> crate::Result<()> {
        match self {
            Object::NetworkPolicy { namespace, name, spec } => {
                validate_project_name(namespace)?;
                validate_policy_name(name)?;
                validate_policy_spec(name, spec)
            }
            Object::Namespace { name, labels } => {
                validate_project_name(name)?;
                validate_labels(labels)
            }
            Object::Pod(meta) => meta.check(),
            Object::EgressNetworkPolicy(policy) => policy.check(),
            Object::NetNamespaceEgress(ns) => ns.record.check(),
            Object::HostSubnetEgress(hs) => hs.record.check(),
        }
    }

    /// The same object twice in a file is one object: the later document wins.
    pub(crate) fn identity(&self) -> (u8, &str, &str) {
        match self {
            Object::Namespace { name, .. } => (0, "", name),
            Object::NetworkPolicy { namespace, name, .. } => (1, namespace, name),
            Object::Pod(meta) => (2, &meta.namespace, &meta.name),
            // One per project: a second name in a project is refused when applied.
            Object::EgressNetworkPolicy(policy) => (3, &policy.namespace, &policy.name),
            Object::NetNamespaceEgress(ns) => (4, "", &ns.record.project),
            Object::HostSubnetEgress(hs) => (5, "", &hs.record.node),
        }
    }
}

/// What is wrong with one document (or one item of a `List`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestError {
    /// `document 2`, `document 1, items[3]`.
    pub location: String,
    pub message: String,
}

/// Every error of a manifest file: nothing of it is to be applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestErrors(pub Vec<ManifestError>);

impl fmt::Display for ManifestErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            let separator = if i == 0 { "" } else { "\n" };
            write!(f, "{separator}{}: {}", e.location, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ManifestErrors {}

/// Parses a manifest file. Namespaced objects without a namespace get `namespace`
/// (`DEFAULT_NAMESPACE` if `None`); with `namespace` given, an object naming another is an
/// error, as with `kubectl apply -n`.
pub fn parse(data: &[u8], namespace: Option<&str>) -> Result<Vec<Object>, ManifestErrors> {
    let fail =
        |location: &str, message: String| ManifestErrors(vec![ManifestError { location: location.into(), message }]);
    if data.len() > MAX_MANIFEST_BYTES {
        return Err(fail(
            "file",
            format!("{} bytes is more than the {MAX_MANIFEST_BYTES} a manifest may have", data.len()),
        ));
    }
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for (i, document) in documents(data).into_iter().enumerate() {
        let location = format!("document {}", i + 1);
        let value = match document {
            Ok(value) => value,
            Err(message) => {
                errors.push(ManifestError { location, message });
                break;
            }
        };
        for (location, item) in items(value, location, &mut errors) {
            match object(&item, namespace) {
                Ok(object) => objects.push(object),
                Err(message) => errors.push(ManifestError { location, message }),
            }
        }
    }
    if errors.is_empty() {
        Ok(objects)
    } else {
        Err(ManifestErrors(errors))
    }
}

/// The documents of a file: a JSON stream if it starts with `{`, else YAML. The first
/// syntax error ends the list.
fn documents(data: &[u8]) -> Vec<Result<Value, String>> {
    if data.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        return serde_json::Deserializer::from_slice(data)
            .into_iter::<Strict>()
            .map(|r| r.map(|strict| strict.0).map_err(|e| format!("invalid JSON: {e}")))
            .collect();
    }
    let text = match std::str::from_utf8(data) {
        Ok(text) => text,
        Err(e) => return vec![Err(format!("not UTF-8: {e}"))],
    };
    let mut out = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        let value = Strict::deserialize(document).map(|strict| strict.0).map_err(|e| format!("invalid YAML: {e}"));
        let failed = value.is_err();
        out.push(value);
        if failed {
            break;
        }
    }
    out
}

/// A document decoded as JSON values are, but refusing a key given twice in a mapping
/// (kubectl's strict decoding does; a JSON map would keep the last silently).
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Strict, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML or JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Strict, E> {
        Ok(Strict(Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Strict, E> {
        Ok(Strict(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Strict, E> {
        Ok(Strict(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Strict, E> {
        serde_json::Number::from_f64(v)
            .map(|n| Strict(Value::Number(n)))
            .ok_or_else(|| E::custom(format!("{v} is not a number JSON can hold")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Strict, E> {
        Ok(Strict(Value::String(v.to_owned())))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }

    fn visit_none<E: de::Error>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Strict, D::Error> {
        Strict::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Strict(Value::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Strict(value) = map.next_value()?;
            if out.insert(key.clone(), value).is_some() {
                return Err(de::Error::custom(format!("duplicate field {key:?}")));
            }
        }
        Ok(Strict(Value::Object(out)))
    }
}

/// The objects of a document: itself, or the items of a `List`; none for an empty one.
fn items(value: Value, location: String, errors: &mut Vec<ManifestError>) -> Vec<(String, Value)> {
    let mut fail = |location: String, message: &str| errors.push(ManifestError { location, message: message.into() });
    match &value {
        Value::Null => return Vec::new(),
        Value::Object(map) if is_list(map) => {
            let Some(Value::Array(items)) = map.get("items") else {
                fail(location, "a List needs items (an array of objects)");
                return Vec::new();
            };
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let location = format!("{location}, items[{i}]");
                match item {
                    Value::Object(inner) if is_list(inner) => fail(location, "a List may not contain a List"),
                    Value::Object(_) => out.push((location, item.clone())),
                    _ => fail(location, "not a Kubernetes object (a mapping with apiVersion and kind)"),
                }
            }
            return out;
        }
        Value::Object(_) => {}
        _ => {
            fail(location, "not a Kubernetes object (a mapping with apiVersion and kind)");
            return Vec::new();
        }
    }
    vec![(location, value)]
}

fn is_list(map: &serde_json::Map<String, Value>) -> bool {
    map.get("kind").and_then(Value::as_str).is_some_and(|kind| kind.ends_with("List"))
}

fn object(value: &Value, namespace: Option<&str>) -> Result<Object, String> {
    let field = |name: &str| value.get(name).and_then(Value::as_str).unwrap_or_default();
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    let missing: Vec<&str> = [("apiVersion", api_version), ("kind", kind)]
        .into_iter()
        .filter(|(_, v)| v.is_empty())
        .map(|(name, _)| name)
        .collect();
    if !missing.is_empty() {
        return Err(format!("error validating data: {} not set", missing.join(" and ")));
    }
    match (api_version, kind) {
        ("networking.k8s.io/v1", "NetworkPolicy") => network_policy(decode(value, kind, api_version)?, namespace),
        ("v1", "Namespace") => namespace_object(decode(value, kind, api_version)?),
        ("v1", "Pod") => pod(decode(value, kind, api_version)?, namespace),
        (egress::API_VERSION, egress::KIND) => egress_policy(decode(value, kind, api_version)?, namespace),
        (egress::API_VERSION, "NetNamespace") => net_namespace_egress(decode(value, kind, api_version)?),
        (egress::API_VERSION, "HostSubnet") => host_subnet_egress(decode(value, kind, api_version)?),
        _ => Err(format!(
            "no matches for kind {kind:?} in version {api_version:?}: oxsdn takes NetworkPolicy \
             (networking.k8s.io/v1), EgressNetworkPolicy, NetNamespace and HostSubnet (network.openshift.io/v1), \
             Namespace (v1), Pod (v1) and List"
        )),
    }
}

/// Decodes an object strictly: a type error names its field, and so does a field the
/// type does not have (found as what does not survive a round trip through the type).
fn decode<T: DeserializeOwned + Serialize>(value: &Value, kind: &str, api_version: &str) -> Result<T, String> {
    let cannot = format!("{kind} in version {api_version:?} cannot be handled as a {kind}");
    let typed: T = serde_path_to_error::deserialize(value).map_err(|e| match e.path().to_string().as_str() {
        "." => format!("{cannot}: {}", e.inner()),
        path => format!("{cannot}: {path}: {}", e.inner()),
    })?;
    let again = serde_json::to_value(&typed).map_err(|e| format!("{cannot}: {e}"))?;
    let mut unknown = Vec::new();
    unknown_fields(value, &again, &FieldPath::default(), &mut unknown);
    if unknown.is_empty() {
        Ok(typed)
    } else {
        let fields: Vec<String> = unknown.iter().map(|path| format!("unknown field \"{path}\"")).collect();
        Err(format!("{cannot}: strict decoding error: {}", fields.join(", ")))
    }
}

fn unknown_fields(input: &Value, decoded: &Value, path: &FieldPath, out: &mut Vec<FieldPath>) {
    match (input, decoded) {
        (Value::Object(input), Value::Object(decoded)) => {
            for (key, value) in input.iter().filter(|(_, v)| !v.is_null()) {
                match decoded.get(key) {
                    Some(again) => unknown_fields(value, again, &path.child(key), out),
                    None => out.push(path.child(key)),
                }
            }
        }
        (Value::Array(input), Value::Array(decoded)) => {
            for (i, (value, again)) in input.iter().zip(decoded).enumerate() {
                unknown_fields(value, again, &path.index(i), out);
            }
        }
        _ => {}
    }
}

/// The object's namespace: its own, or `namespace`, or `DEFAULT_NAMESPACE`.
fn namespace_of(meta: &mut ObjectMeta, namespace: Option<&str>) -> Result<(), String> {
    match (meta.namespace.as_deref().filter(|ns| !ns.is_empty()), namespace) {
        (Some(own), Some(given)) if own != given => Err(format!(
            "the namespace from the provided object {own:?} does not match the namespace {given:?}. You must \
             pass '--namespace={own}' to perform this operation."
        )),
        (Some(_), _) => Ok(()),
        (None, given) => {
            meta.namespace = Some(given.unwrap_or(DEFAULT_NAMESPACE).to_owned());
            Ok(())
        }
    }
}

/// The name of an object, required: a generated name needs a server to generate it.
fn name_of(meta: &ObjectMeta) -> Result<String, String> {
    match (meta.name.as_deref(), meta.generate_name.as_deref()) {
        (None | Some(""), Some(generate)) if !generate.is_empty() => {
            Err("cannot use metadata.generateName here: give metadata.name".to_owned())
        }
        (name, _) => Ok(name.unwrap_or_default().to_owned()),
    }
}

fn invalid(kind: &'static str, name: &str, errors: FieldErrors) -> String {
    crate::Error::InvalidObject { kind, name: name.to_owned(), errors }.to_string()
}

/// A NetworkPolicy (of a manifest, or as the API server serves it), defaulted and checked
/// as the API server does; `namespace` is used when the object names none.
pub fn network_policy(mut policy: NetworkPolicy, namespace: Option<&str>) -> Result<Object, String> {
    namespace_of(&mut policy.metadata, namespace)?;
    let name = name_of(&policy.metadata)?;
    default_network_policy_spec(policy.spec.get_or_insert_with(NetworkPolicySpec::default));
    let errors = validate_network_policy(&policy);
    if !errors.is_empty() {
        return Err(invalid("NetworkPolicy", &name, errors));
    }
    Ok(Object::NetworkPolicy {
        namespace: policy.metadata.namespace.unwrap_or_default(),
        name,
        spec: policy.spec.unwrap_or_default(),
    })
}

fn egress_policy(mut policy: EgressNetworkPolicy, namespace: Option<&str>) -> Result<Object, String> {
    namespace_of(&mut policy.metadata, namespace)?;
    let record = EgressNetworkPolicyRecord {
        name: name_of(&policy.metadata)?,
        namespace: policy.metadata.namespace.unwrap_or_default(),
        spec: policy.spec,
    };
    record.check().map_err(|e| e.to_string())?;
    Ok(Object::EgressNetworkPolicy(record))
}

/// A NetNamespace: its egress IPs.
fn net_namespace_egress(ns: crate::egress_ip::NetNamespaceManifest) -> Result<Object, String> {
    name_of(&ns.metadata)?;
    ns.into_egress().map(Object::NetNamespaceEgress)
}

/// A HostSubnet: its egress IPs and CIDRs.
fn host_subnet_egress(hs: crate::egress_ip::HostSubnetManifest) -> Result<Object, String> {
    name_of(&hs.metadata)?;
    hs.into_egress().map(Object::HostSubnetEgress)
}

/// A Namespace (of a manifest, or as the API server serves it), checked.
pub fn namespace_object(mut namespace: Namespace) -> Result<Object, String> {
    let name = name_of(&namespace.metadata)?;
    // The API server sets this label to the name, whatever the manifest says.
    namespace.metadata.labels.get_or_insert_with(BTreeMap::new).insert(NAMESPACE_NAME_LABEL.to_owned(), name.clone());
    let errors = validate_namespace(&namespace);
    if !errors.is_empty() {
        return Err(invalid("Namespace", &name, errors));
    }
    let mut labels = namespace.metadata.labels.unwrap_or_default();
    labels.remove(NAMESPACE_NAME_LABEL);
    Ok(Object::Namespace { name, labels })
}

/// A Pod's labels and named ports (of a manifest, or as the API server serves it), checked.
pub fn pod(mut pod: Pod, namespace: Option<&str>) -> Result<Object, String> {
    namespace_of(&mut pod.metadata, namespace)?;
    let name = name_of(&pod.metadata)?;
    let errors = validate_pod(&pod);
    if !errors.is_empty() {
        return Err(invalid("Pod", &name, errors));
    }
    let containers = pod.spec.map(|spec| spec.containers).unwrap_or_default();
    let ports = containers
        .into_iter()
        .flat_map(|container| container.ports.unwrap_or_default())
        .filter_map(|port| {
            Some(NamedPort {
                name: port.name.filter(|name| !name.is_empty())?,
                // Validated: 1-65535.
                port: u16::try_from(port.container_port).ok()?,
                protocol: port.protocol.unwrap_or_else(|| "TCP".to_owned()),
            })
        })
        .collect();
    Ok(Object::Pod(PodMeta {
        namespace: pod.metadata.namespace.unwrap_or_default(),
        name,
        labels: pod.metadata.labels.unwrap_or_default(),
        ports,
    }))
}

#[cfg(test)]
mod tests;
