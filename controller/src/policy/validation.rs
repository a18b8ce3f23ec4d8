//! Kubernetes' validation of the objects oxsdn takes from manifests (and, later, from the
//! Kubernetes API): NetworkPolicy as `ValidateNetworkPolicy` has it
//! (pkg/apis/networking/validation), Namespace, and the parts of a Pod oxsdn uses (its
//! metadata and its containers' ports), with the API server's field paths and messages:
//! `spec.ingress[0].from[1].ipBlock.cidr: Invalid value: "10.0.0.0/33": must be a valid
//! CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)`.
//!
//! CIDRs are checked as with Kubernetes' `StrictIPCIDRValidation`: no leading zeros, no
//! bits set beyond the prefix length (an ambiguous value, refused rather than guessed).
//! Label selectors' `In`/`NotIn` values must be valid label values, as for new objects.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::{IpAddr, Ipv4Addr},
};

use k8s_openapi::{
    api::{
        core::v1::{Container, Namespace, Pod},
        networking::v1::{IPBlock, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec},
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta},
        util::intstr::IntOrString,
    },
};

/// The protocols of NetworkPolicy ports and container ports.
pub const PROTOCOLS: [&str; 3] = ["TCP", "UDP", "SCTP"];
/// The total size of an object's annotations the API server accepts.
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;
const POLICY_TYPES: [&str; 2] = ["Ingress", "Egress"];
const OPERATORS: [&str; 4] = ["In", "NotIn", "Exists", "DoesNotExist"];

/// Where a field is: `spec.ingress[0].from[1].ipBlock.cidr`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldPath(String);

impl FieldPath {
    pub fn new(root: &str) -> FieldPath {
        FieldPath(root.to_owned())
    }

    pub fn child(&self, name: &str) -> FieldPath {
        if self.0.is_empty() {
            FieldPath::new(name)
        } else {
            FieldPath(format!("{}.{name}", self.0))
        }
    }

    pub fn index(&self, i: usize) -> FieldPath {
        FieldPath(format!("{}[{i}]", self.0))
    }

    /// A map entry: `metadata.labels[app]`.
    pub fn key(&self, key: &str) -> FieldPath {
        FieldPath(format!("{}[{key}]", self.0))
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The value a field error quotes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BadValue {
    Str(String),
    Int(i64),
    List(Vec<String>),
}

impl fmt::Display for BadValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadValue::Str(s) => write!(f, "{s:?}"),
            BadValue::Int(n) => write!(f, "{n}"),
            BadValue::List(items) => write!(f, "{items:?}"),
        }
    }
}

impl From<&str> for BadValue {
    fn from(s: &str) -> BadValue {
        BadValue::Str(s.to_owned())
    }
}

impl From<i32> for BadValue {
    fn from(n: i32) -> BadValue {
        BadValue::Int(n.into())
    }
}

/// Kubernetes' field error types (`field.ErrorType`), with the value they quote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldErrorKind {
    Required,
    Invalid(BadValue),
    NotSupported(BadValue),
    Forbidden,
    Duplicate(BadValue),
    TooLong,
}

/// One thing wrong with one field, displayed as the API server does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub kind: FieldErrorKind,
    pub detail: String,
}

impl FieldError {
    pub fn required(path: &FieldPath, detail: &str) -> FieldError {
        FieldError { field: path.to_string(), kind: FieldErrorKind::Required, detail: detail.to_owned() }
    }

    pub fn invalid(path: &FieldPath, value: impl Into<BadValue>, detail: &str) -> FieldError {
        FieldError { field: path.to_string(), kind: FieldErrorKind::Invalid(value.into()), detail: detail.to_owned() }
    }

    pub fn not_supported(path: &FieldPath, value: &str, supported: &[&str]) -> FieldError {
        let quoted: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        FieldError {
            field: path.to_string(),
            kind: FieldErrorKind::NotSupported(value.into()),
            detail: format!("supported values: {}", quoted.join(", ")),
        }
    }

    pub fn forbidden(path: &FieldPath, detail: &str) -> FieldError {
        FieldError { field: path.to_string(), kind: FieldErrorKind::Forbidden, detail: detail.to_owned() }
    }

    pub fn duplicate(path: &FieldPath, value: &str) -> FieldError {
        FieldError { field: path.to_string(), kind: FieldErrorKind::Duplicate(value.into()), detail: String::new() }
    }

    pub fn too_long(path: &FieldPath, max_bytes: usize) -> FieldError {
        FieldError {
            field: path.to_string(),
            kind: FieldErrorKind::TooLong,
            detail: format!("must have at most {max_bytes} bytes"),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.field)?;
        match &self.kind {
            FieldErrorKind::Required => f.write_str("Required value")?,
            FieldErrorKind::Forbidden => f.write_str("Forbidden")?,
            FieldErrorKind::TooLong => f.write_str("Too long")?,
            FieldErrorKind::Invalid(v) => write!(f, "Invalid value: {v}")?,
            FieldErrorKind::NotSupported(v) => write!(f, "Unsupported value: {v}")?,
            FieldErrorKind::Duplicate(v) => write!(f, "Duplicate value: {v}")?,
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// Every error of one object, in the order found, without repetitions; displayed as
/// kubectl does: the one error, or one per line after `*`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldErrors(pub Vec<FieldError>);

impl FieldErrors {
    fn push(&mut self, e: FieldError) {
        if !self.0.contains(&e) {
            self.0.push(e);
        }
    }

    fn extend(&mut self, errors: impl IntoIterator<Item = FieldError>) {
        errors.into_iter().for_each(|e| self.push(e));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn invalid_each(&mut self, path: &FieldPath, value: impl Into<BadValue> + Clone, messages: Vec<String>) {
        for message in messages {
            self.push(FieldError::invalid(path, value.clone(), &message));
        }
    }
}

impl fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "{one}"),
            all => all.iter().try_for_each(|e| write!(f, "\n* {e}")),
        }
    }
}

// ---- names, labels, ports -----------------------------------------------------------------

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_SUBDOMAIN_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const LABEL_KEY_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_MAX_LENGTH: usize = 63;
const SUBDOMAIN_MAX_LENGTH: usize = 253;

fn max_len_error(length: usize) -> String {
    format!("must be no more than {length} bytes")
}

fn regex_error(message: &str, regex: &str, examples: &[&str]) -> String {
    let examples: Vec<String> = examples.iter().map(|e| format!("'{e}'")).collect();
    format!("{message} (e.g. {}, regex used for validation is '{regex}')", examples.join(" or "))
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, of any length.
fn matches_dns1123_label(s: &str) -> bool {
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    s.bytes().all(|c| alnum(c) || c == b'-')
        && s.bytes().next().is_some_and(alnum)
        && s.bytes().last().is_some_and(alnum)
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`.
fn matches_label_name(s: &str) -> bool {
    let alnum = |c: u8| c.is_ascii_alphanumeric();
    s.bytes().all(|c| alnum(c) || matches!(c, b'-' | b'_' | b'.'))
        && s.bytes().next().is_some_and(alnum)
        && s.bytes().last().is_some_and(alnum)
}

/// What is wrong with `value` as a DNS-1123 label (namespace names, container names).
pub fn dns1123_label_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > LABEL_MAX_LENGTH {
        errors.push(max_len_error(LABEL_MAX_LENGTH));
    }
    if !matches_dns1123_label(value) {
        if dns1123_subdomain_matches(value) {
            errors.push("must not contain dots".to_owned());
        } else {
            errors.push(regex_error(
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
                DNS1123_LABEL_FMT,
                &["my-name", "123-abc"],
            ));
        }
    }
    errors
}

fn dns1123_subdomain_matches(value: &str) -> bool {
    value.split('.').all(matches_dns1123_label)
}

/// What is wrong with `value` as a DNS-1123 subdomain (names of policies and pods).
pub fn dns1123_subdomain_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > SUBDOMAIN_MAX_LENGTH {
        errors.push(max_len_error(SUBDOMAIN_MAX_LENGTH));
    }
    if !dns1123_subdomain_matches(value) {
        errors.push(regex_error(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errors
}

/// What is wrong with `key` as a label key (a qualified name: `[prefix/]name`).
pub fn label_key_errors(key: &str) -> Vec<String> {
    let name_message = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
    let examples = ["MyName", "my.name", "123-abc"];
    let mut errors = Vec::new();
    let parts: Vec<&str> = key.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errors.push("prefix part must be non-empty".to_owned());
            } else {
                errors.extend(dns1123_subdomain_errors(prefix).into_iter().map(|m| format!("prefix part {m}")));
            }
            *name
        }
        _ => {
            return vec![format!(
                "a valid label key {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(name_message, LABEL_KEY_FMT, &examples)
            )]
        }
    };
    if name.is_empty() {
        errors.push("name part must be non-empty".to_owned());
    } else if name.len() > LABEL_MAX_LENGTH {
        errors.push(format!("name part {}", max_len_error(LABEL_MAX_LENGTH)));
    }
    if !matches_label_name(name) {
        errors.push(format!("name part {}", regex_error(name_message, LABEL_KEY_FMT, &examples)));
    }
    errors
}

/// What is wrong with `value` as a label value (empty, or like a label key's name).
pub fn label_value_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > LABEL_MAX_LENGTH {
        errors.push(max_len_error(LABEL_MAX_LENGTH));
    }
    if !value.is_empty() && !matches_label_name(value) {
        errors.push(regex_error(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errors
}

/// What is wrong with `name` as a port name (an IANA_SVC_NAME, RFC 6335, lower case).
pub fn port_name_errors(name: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if name.len() > 15 {
        errors.push(max_len_error(15));
    }
    if name.is_empty() || !name.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-') {
        errors.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_owned());
    }
    if !name.bytes().any(|c| c.is_ascii_lowercase()) {
        errors.push("must contain at least one letter (a-z)".to_owned());
    }
    if name.contains("--") {
        errors.push("must not contain consecutive hyphens".to_owned());
    }
    if name.starts_with('-') || name.ends_with('-') {
        errors.push("must not begin or end with a hyphen".to_owned());
    }
    errors
}

fn port_number_errors(port: i32) -> Vec<String> {
    if (1..=65535).contains(&port) {
        Vec::new()
    } else {
        vec!["must be between 1 and 65535, inclusive".to_owned()]
    }
}

/// Label keys and values (`metadata.labels`, `matchLabels`).
pub fn validate_labels(labels: &BTreeMap<String, String>, path: &FieldPath) -> FieldErrors {
    let mut errors = FieldErrors::default();
    for (key, value) in labels {
        errors.invalid_each(path, key.as_str(), label_key_errors(key));
        errors.invalid_each(&path.key(key), value.as_str(), label_value_errors(value));
    }
    errors
}

pub fn validate_label_selector(selector: &LabelSelector, path: &FieldPath) -> FieldErrors {
    let mut errors = FieldErrors::default();
    if let Some(labels) = &selector.match_labels {
        errors.extend(validate_labels(labels, &path.child("matchLabels")).0);
    }
    for (i, requirement) in selector.match_expressions.iter().flatten().enumerate() {
        errors.extend(validate_requirement(requirement, &path.child("matchExpressions").index(i)).0);
    }
    errors
}

fn validate_requirement(requirement: &LabelSelectorRequirement, path: &FieldPath) -> FieldErrors {
    let mut errors = FieldErrors::default();
    let values = requirement.values.as_deref().unwrap_or_default();
    match requirement.operator.as_str() {
        "In" | "NotIn" if values.is_empty() => errors
            .push(FieldError::required(&path.child("values"), "must be specified when `operator` is 'In' or 'NotIn'")),
        "Exists" | "DoesNotExist" if !values.is_empty() => errors.push(FieldError::forbidden(
            &path.child("values"),
            "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
        )),
        op if !OPERATORS.contains(&op) => {
            errors.push(FieldError::not_supported(&path.child("operator"), op, &OPERATORS))
        }
        _ => {}
    }
    errors.invalid_each(&path.child("key"), requirement.key.as_str(), label_key_errors(&requirement.key));
    for (i, value) in values.iter().enumerate() {
        errors.invalid_each(&path.child("values").index(i), value.as_str(), label_value_errors(value));
    }
    errors
}

// ---- CIDRs ----------------------------------------------------------------------------------

/// A parsed CIDR: its address and prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub ip: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// The address in the top bits of a u128 (IPv4 too), so one mask fits both families.
    fn top_aligned(&self) -> u128 {
        match self.ip {
            IpAddr::V4(ip) => u128::from(u32::from(ip)) << 96,
            IpAddr::V6(ip) => u128::from(ip),
        }
    }

    fn mask(&self) -> u128 {
        u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0)
    }

    fn contains(&self, other: &Cidr) -> bool {
        self.ip.is_ipv4() == other.ip.is_ipv4() && self.top_aligned() & self.mask() == other.top_aligned() & self.mask()
    }

    fn bits(&self) -> u8 {
        if self.ip.is_ipv4() {
            32
        } else {
            128
        }
    }

    fn host_bits_set(&self) -> bool {
        self.top_aligned() & !self.mask() != 0
    }
}

/// An IPv4 address whose octets may have leading zeros, as Go's sloppy parser takes it.
fn sloppy_ipv4(s: &str) -> Option<Ipv4Addr> {
    let octets: Vec<u8> =
        s.split('.')
            .map(|o| {
                if !o.is_empty() && o.len() <= 3 && o.bytes().all(|c| c.is_ascii_digit()) {
                    o.parse().ok()
                } else {
                    None
                }
            })
            .collect::<Option<_>>()?;
    <[u8; 4]>::try_from(octets).ok().map(Ipv4Addr::from)
}

/// Parses `value` as a CIDR, Kubernetes' strict way; the errors are the API server's.
pub fn parse_cidr(value: &str) -> Result<Cidr, String> {
    let invalid = || "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)".to_owned();
    let (ip, prefix) = value.split_once('/').ok_or_else(invalid)?;
    if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|c| c.is_ascii_digit()) {
        return Err(invalid());
    }
    let prefix_len: u8 = prefix.parse().map_err(|_| invalid())?;
    let (ip, sloppy) = match ip.parse::<IpAddr>() {
        Ok(ip) => (ip, false),
        Err(_) => (IpAddr::V4(sloppy_ipv4(ip).ok_or_else(invalid)?), true),
    };
    let cidr = Cidr { ip, prefix: prefix_len };
    if prefix_len > cidr.bits() {
        return Err(invalid());
    }
    if sloppy || (prefix.len() > 1 && prefix.starts_with('0')) {
        return Err("must not have leading 0s in IP or prefix length".to_owned());
    }
    if matches!(ip, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some()) {
        return Err("must not have an IPv4-mapped IPv6 address".to_owned());
    }
    if cidr.host_bits_set() {
        return Err("must not have bits set beyond the prefix length".to_owned());
    }
    Ok(cidr)
}

fn validate_ip_block(block: &IPBlock, path: &FieldPath) -> FieldErrors {
    let mut errors = FieldErrors::default();
    let cidr_path = path.child("cidr");
    if block.cidr.is_empty() {
        errors.push(FieldError::required(&cidr_path, ""));
        return errors;
    }
    let cidr = match parse_cidr(&block.cidr) {
        Ok(cidr) => cidr,
        Err(message) => {
            errors.push(FieldError::invalid(&cidr_path, block.cidr.as_str(), &message));
            return errors;
        }
    };
    for (i, except) in block.except.iter().flatten().enumerate() {
        let except_path = path.child("except").index(i);
        match parse_cidr(except) {
            Err(message) => errors.push(FieldError::invalid(&except_path, except.as_str(), &message)),
            Ok(inner) if !cidr.contains(&inner) || inner.prefix <= cidr.prefix => {
                errors.push(FieldError::invalid(&except_path, except.as_str(), "must be a strict subset of `cidr`"))
            }
            Ok(_) => {}
        }
    }
    errors
}

// ---- NetworkPolicy --------------------------------------------------------------------------

fn validate_policy_port(port: &NetworkPolicyPort, path: &FieldPath) -> FieldErrors {
    let mut errors = FieldErrors::default();
    if let Some(protocol) = &port.protocol {
        if !PROTOCOLS.contains(&protocol.as_str()) {
            errors.push(FieldError::not_supported(&path.child("protocol"), protocol, &PROTOCOLS));
        }
    }
    let end_path = path.child("endPort");
    match (&port.port, port.end_port) {
        (Some(IntOrString::Int(number)), end) => {
            errors.invalid_each(&path.child("port"), *number, port_number_errors(*number));
            if let Some(end) = end {
                if end < *number {
                    errors.push(FieldError::invalid(&end_path, end, "must be greater than or equal to `port`"));
                }
                errors.invalid_each(&end_path, end, port_number_errors(end));
            }
        }
        (Some(IntOrString::String(name)), end) => {
            if let Some(end) = end {
                errors.push(FieldError::invalid(&end_path, end, "may not be specified when `port` is non-numeric"));
            }
            errors.invalid_each(&path.child("port"), name.as_str(), port_name_errors(name));
        }
        (None, Some(end)) => {
            errors.push(FieldError::invalid(&end_path, end, "may not be specified when `port` is not specified"))
        }
        (None, None) => {}
    }
    errors
}

fn validate_peer(peer: &NetworkPolicyPeer, path: &FieldPath) -> FieldErrors {
    let mut errors = FieldErrors::default();
    if let Some(selector) = &peer.pod_selector {
        errors.extend(validate_label_selector(selector, &path.child("podSelector")).0);
    }
    if let Some(selector) = &peer.namespace_selector {
        errors.extend(validate_label_selector(selector, &path.child("namespaceSelector")).0);
    }
    if let Some(block) = &peer.ip_block {
        errors.extend(validate_ip_block(block, &path.child("ipBlock")).0);
    }
    let peers = [peer.pod_selector.is_some(), peer.namespace_selector.is_some(), peer.ip_block.is_some()];
    match peers.iter().filter(|p| **p).count() {
        0 => errors.push(FieldError::required(path, "must specify a peer")),
        1 => {}
        _ if peer.ip_block.is_some() => {
            errors.push(FieldError::forbidden(path, "may not specify both ipBlock and another peer"))
        }
        _ => {}
    }
    errors
}

/// An ingress or egress rule: its ports, and its peers (`from` or `to`: `peers_field`).
fn validate_rule(
    ports: Option<&[NetworkPolicyPort]>,
    peers: Option<&[NetworkPolicyPeer]>,
    peers_field: &str,
    path: &FieldPath,
) -> FieldErrors {
    let mut errors = FieldErrors::default();
    for (i, port) in ports.unwrap_or_default().iter().enumerate() {
        errors.extend(validate_policy_port(port, &path.child("ports").index(i)).0);
    }
    for (i, peer) in peers.unwrap_or_default().iter().enumerate() {
        errors.extend(validate_peer(peer, &path.child(peers_field).index(i)).0);
    }
    errors
}

/// `ValidateNetworkPolicySpec`: selectors, ports and peers of every rule, policy types.
pub fn validate_network_policy_spec(spec: &NetworkPolicySpec, path: &FieldPath) -> FieldErrors {
    let mut errors = FieldErrors::default();
    if let Some(selector) = &spec.pod_selector {
        errors.extend(validate_label_selector(selector, &path.child("podSelector")).0);
    }
    for (i, rule) in spec.ingress.iter().flatten().enumerate() {
        let path = path.child("ingress").index(i);
        errors.extend(validate_rule(rule.ports.as_deref(), rule.from.as_deref(), "from", &path).0);
    }
    for (i, rule) in spec.egress.iter().flatten().enumerate() {
        let path = path.child("egress").index(i);
        errors.extend(validate_rule(rule.ports.as_deref(), rule.to.as_deref(), "to", &path).0);
    }
    let types = spec.policy_types.as_deref().unwrap_or_default();
    if types.len() > POLICY_TYPES.len() {
        errors.push(FieldError::invalid(
            &path.child("policyTypes"),
            BadValue::List(types.to_vec()),
            "may not specify more than two policyTypes",
        ));
        return errors;
    }
    for (i, policy_type) in types.iter().enumerate() {
        if !POLICY_TYPES.contains(&policy_type.as_str()) {
            errors.push(FieldError::not_supported(&path.child("policyTypes").index(i), policy_type, &POLICY_TYPES));
        }
    }
    errors
}

/// The API server's defaults (`SetDefaults_NetworkPolicy`, applied before validation): an
/// absent pod selector selects every pod, a port's protocol is TCP, and without
/// `policyTypes` the policy is an Ingress policy, and an Egress one too if it has egress
/// rules.
pub fn default_network_policy_spec(spec: &mut NetworkPolicySpec) {
    spec.pod_selector.get_or_insert_with(LabelSelector::default);
    let ports = spec
        .ingress
        .iter_mut()
        .flatten()
        .flat_map(|rule| rule.ports.iter_mut().flatten())
        .chain(spec.egress.iter_mut().flatten().flat_map(|rule| rule.ports.iter_mut().flatten()));
    for port in ports {
        port.protocol.get_or_insert_with(|| "TCP".to_owned());
    }
    if spec.policy_types.as_ref().is_none_or(Vec::is_empty) {
        let mut types = vec!["Ingress".to_owned()];
        if spec.egress.as_ref().is_some_and(|rules| !rules.is_empty()) {
            types.push("Egress".to_owned());
        }
        spec.policy_types = Some(types);
    }
}

// ---- objects --------------------------------------------------------------------------------

/// How an object's name is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NameRule {
    Dns1123Label,
    Dns1123Subdomain,
}

/// `ValidateObjectMeta` for creation: name (required, by `rule`), namespace (required
/// and a DNS-1123 label for namespaced kinds, forbidden otherwise), labels, annotations.
fn validate_object_meta(meta: &ObjectMeta, namespaced: bool, rule: NameRule) -> FieldErrors {
    let path = FieldPath::new("metadata");
    let mut errors = FieldErrors::default();
    match meta.name.as_deref().unwrap_or_default() {
        "" => errors.push(FieldError::required(&path.child("name"), "name or generateName is required")),
        name => {
            let messages = match rule {
                NameRule::Dns1123Label => dns1123_label_errors(name),
                NameRule::Dns1123Subdomain => dns1123_subdomain_errors(name),
            };
            errors.invalid_each(&path.child("name"), name, messages);
        }
    }
    let namespace = meta.namespace.as_deref().unwrap_or_default();
    if namespaced {
        if namespace.is_empty() {
            errors.push(FieldError::required(&path.child("namespace"), ""));
        } else {
            errors.invalid_each(&path.child("namespace"), namespace, dns1123_label_errors(namespace));
        }
    } else if !namespace.is_empty() {
        errors.push(FieldError::forbidden(&path.child("namespace"), "not allowed on this type"));
    }
    if let Some(labels) = &meta.labels {
        errors.extend(validate_labels(labels, &path.child("labels")).0);
    }
    if let Some(annotations) = &meta.annotations {
        let annotations_path = path.child("annotations");
        let mut total = 0;
        for (key, value) in annotations {
            errors.invalid_each(&annotations_path, key.to_lowercase().as_str(), label_key_errors(&key.to_lowercase()));
            total += key.len() + value.len();
        }
        if total > MAX_ANNOTATIONS_BYTES {
            errors.push(FieldError::too_long(&annotations_path, MAX_ANNOTATIONS_BYTES));
        }
    }
    errors
}

/// `ValidateNetworkPolicy` (creation), after the defaults.
pub fn validate_network_policy(policy: &NetworkPolicy) -> FieldErrors {
    let mut errors = validate_object_meta(&policy.metadata, true, NameRule::Dns1123Subdomain);
    let spec = policy.spec.clone().unwrap_or_default();
    errors.extend(validate_network_policy_spec(&spec, &FieldPath::new("spec")).0);
    errors
}

/// `ValidateNamespace`: its metadata (the name a DNS-1123 label).
pub fn validate_namespace(namespace: &Namespace) -> FieldErrors {
    validate_object_meta(&namespace.metadata, false, NameRule::Dns1123Label)
}

/// What oxsdn takes of `ValidatePodCreate`: the metadata, and the containers with their
/// names and ports (`validateContainerPorts`). The rest of the spec (images, volumes,
/// ...) is the kubelet's business and not looked at.
pub fn validate_pod(pod: &Pod) -> FieldErrors {
    let mut errors = validate_object_meta(&pod.metadata, true, NameRule::Dns1123Subdomain);
    let containers_path = FieldPath::new("spec").child("containers");
    let containers = pod.spec.as_ref().map(|spec| spec.containers.as_slice()).unwrap_or_default();
    if containers.is_empty() {
        errors.push(FieldError::required(&containers_path, ""));
    }
    let mut names = BTreeSet::new();
    for (i, container) in containers.iter().enumerate() {
        let path = containers_path.index(i);
        let name_path = path.child("name");
        if container.name.is_empty() {
            errors.push(FieldError::required(&name_path, ""));
        } else if !names.insert(container.name.as_str()) {
            errors.push(FieldError::duplicate(&name_path, &container.name));
        } else {
            errors.invalid_each(&name_path, container.name.as_str(), dns1123_label_errors(&container.name));
        }
        errors.extend(validate_container_ports(container, &path.child("ports")).0);
    }
    errors
}

fn validate_container_ports(container: &Container, path: &FieldPath) -> FieldErrors {
    let mut errors = FieldErrors::default();
    let mut names = BTreeSet::new();
    for (i, port) in container.ports.iter().flatten().enumerate() {
        let path = path.index(i);
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            let messages = port_name_errors(name);
            if !messages.is_empty() {
                errors.invalid_each(&path.child("name"), name, messages);
            } else if !names.insert(name) {
                errors.push(FieldError::duplicate(&path.child("name"), name));
            }
        }
        if port.container_port == 0 {
            errors.push(FieldError::required(&path.child("containerPort"), ""));
        } else {
            errors.invalid_each(
                &path.child("containerPort"),
                port.container_port,
                port_number_errors(port.container_port),
            );
        }
        if let Some(host_port) = port.host_port.filter(|p| *p != 0) {
            errors.invalid_each(&path.child("hostPort"), host_port, port_number_errors(host_port));
        }
        // Defaulted to TCP by the API server when absent.
        if let Some(protocol) = port.protocol.as_deref().filter(|p| !PROTOCOLS.contains(p)) {
            let mut supported = PROTOCOLS;
            supported.sort_unstable();
            errors.push(FieldError::not_supported(&path.child("protocol"), protocol, &supported));
        }
    }
    errors
}

#[cfg(test)]
mod tests;
