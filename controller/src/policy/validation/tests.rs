use super::*;

/// The errors of a NetworkPolicy in namespace `ns` named `np` with `spec` (YAML), after
/// the defaults, as the API server prints them.
fn policy_errors(spec: &str) -> Vec<String> {
    let mut spec: NetworkPolicySpec = serde_yaml_ng::from_str(spec).unwrap();
    default_network_policy_spec(&mut spec);
    let policy = NetworkPolicy {
        metadata: ObjectMeta { name: Some("np".into()), namespace: Some("ns".into()), ..ObjectMeta::default() },
        spec: Some(spec),
    };
    validate_network_policy(&policy).0.iter().map(ToString::to_string).collect()
}

fn one_error(spec: &str) -> String {
    match policy_errors(spec).as_slice() {
        [one] => one.clone(),
        other => panic!("expected one error for {spec}, got {other:?}"),
    }
}

const DNS_LABEL: &str =
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must \
                         start and end with an alphanumeric character (e.g. 'my-name' or '123-abc', regex used for \
                         validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

#[test]
fn a_complete_valid_policy_has_no_errors() {
    let spec = r#"
podSelector: {matchLabels: {app: web}, matchExpressions: [{key: tier, operator: In, values: [a, b]}]}
policyTypes: [Ingress, Egress]
ingress:
- from:
  - podSelector: {matchLabels: {role: client}}
    namespaceSelector: {matchExpressions: [{key: team, operator: Exists}]}
  - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16, 10.2.3.4/32]}
  - ipBlock: {cidr: "2001:db8::/32", except: ["2001:db8:1::/48"]}
  ports: [{port: 80}, {protocol: UDP, port: 53, endPort: 60}, {protocol: SCTP, port: http-alt}, {protocol: TCP}]
egress:
- to: [{namespaceSelector: {}}]
- {}
"#;
    assert_eq!(policy_errors(spec), Vec::<String>::new());
    assert_eq!(policy_errors("{}"), Vec::<String>::new(), "the empty spec: default deny ingress to every pod");
}

#[test]
fn the_api_servers_defaults() {
    let mut spec: NetworkPolicySpec =
        serde_yaml_ng::from_str("ingress: [{ports: [{port: 80}, {protocol: UDP}]}]").unwrap();
    default_network_policy_spec(&mut spec);
    assert_eq!(spec.pod_selector, Some(LabelSelector::default()));
    assert_eq!(spec.policy_types, Some(vec!["Ingress".to_owned()]));
    let ports = spec.ingress.unwrap()[0].ports.clone().unwrap();
    assert_eq!(ports[0].protocol.as_deref(), Some("TCP"));
    assert_eq!(ports[1].protocol.as_deref(), Some("UDP"));
    let mut spec: NetworkPolicySpec = serde_yaml_ng::from_str("egress: [{}]").unwrap();
    default_network_policy_spec(&mut spec);
    assert_eq!(spec.policy_types, Some(vec!["Ingress".to_owned(), "Egress".to_owned()]));
    let mut spec: NetworkPolicySpec = serde_yaml_ng::from_str("policyTypes: [Egress]").unwrap();
    default_network_policy_spec(&mut spec);
    assert_eq!(spec.policy_types, Some(vec!["Egress".to_owned()]), "given types are kept");
}

#[test]
fn cidrs() {
    let cidr_error = |cidr: &str| {
        one_error(&format!("ingress: [{{from: [{{podSelector: {{}}}}, {{ipBlock: {{cidr: \"{cidr}\"}}}}]}}]"))
    };
    let path = "spec.ingress[0].from[1].ipBlock.cidr";
    let invalid = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)";
    for bad in
        ["10.0.0.0/33", "10.0.0.0", "nonsense", "10.0.0.0/", "10.0.0/8", "10.0.0.256/32", "::/129", "10.0.0.0/-1"]
    {
        assert_eq!(cidr_error(bad), format!("{path}: Invalid value: {bad:?}: {invalid}"));
    }
    for (bad, why) in [
        ("010.0.0.0/8", "must not have leading 0s in IP or prefix length"),
        ("10.0.0.0/08", "must not have leading 0s in IP or prefix length"),
        ("10.0.0.1/8", "must not have bits set beyond the prefix length"),
        ("2001:db8::1/32", "must not have bits set beyond the prefix length"),
        ("::ffff:10.0.0.0/104", "must not have an IPv4-mapped IPv6 address"),
    ] {
        assert_eq!(cidr_error(bad), format!("{path}: Invalid value: {bad:?}: {why}"));
    }
    assert_eq!(
        policy_errors("ingress: [{from: [{}]}]"),
        ["spec.ingress[0].from[0]: Required value: must specify a peer"]
    );
    assert_eq!(one_error("egress: [{to: [{ipBlock: {}}]}]"), "spec.egress[0].to[0].ipBlock.cidr: Required value");
    for ok in ["0.0.0.0/0", "10.0.0.0/8", "192.168.1.7/32", "::/0", "fe80::/10"] {
        assert_eq!(
            policy_errors(&format!("egress: [{{to: [{{ipBlock: {{cidr: \"{ok}\"}}}}]}}]")),
            Vec::<String>::new()
        );
    }
}

#[test]
fn excepts_must_be_strict_subsets_of_the_cidr() {
    let except_errors = |cidr: &str, except: &str| {
        policy_errors(&format!("egress: [{{to: [{{ipBlock: {{cidr: \"{cidr}\", except: [\"{except}\"]}}}}]}}]"))
    };
    let path = "spec.egress[0].to[0].ipBlock.except[0]";
    for (cidr, except) in [
        ("10.0.0.0/8", "11.0.0.0/16"),
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("10.0.0.0/16", "10.0.0.0/8"),
        ("10.0.0.0/8", "2001:db8::/64"),
    ] {
        assert_eq!(
            except_errors(cidr, except),
            [format!("{path}: Invalid value: {except:?}: must be a strict subset of `cidr`")],
            "{cidr} except {except}"
        );
    }
    assert_eq!(
        except_errors("10.0.0.0/8", "10.0.0.0/33"),
        [format!(
            "{path}: Invalid value: \"10.0.0.0/33\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"
        )]
    );
    assert!(except_errors("10.0.0.0/8", "10.255.255.255/32").is_empty());
    assert!(except_errors("0.0.0.0/0", "10.0.0.0/8").is_empty());
}

#[test]
fn peers_combine_selectors_but_not_with_an_ip_block() {
    assert_eq!(
        one_error("ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]"),
        "spec.ingress[0].from[0]: Forbidden: may not specify both ipBlock and another peer"
    );
    assert_eq!(
        one_error("egress: [{}, {to: [{ipBlock: {cidr: 10.0.0.0/8}, namespaceSelector: {}}]}]"),
        "spec.egress[1].to[0]: Forbidden: may not specify both ipBlock and another peer"
    );
    assert!(policy_errors("ingress: [{from: [{podSelector: {}, namespaceSelector: {}}]}]").is_empty());
}

#[test]
fn ports() {
    let port_error = |port: &str| policy_errors(&format!("ingress: [{{ports: [{{}}, {port}]}}]"));
    let path = "spec.ingress[0].ports[1]";
    assert_eq!(
        port_error("{protocol: ICMP}"),
        [format!(r#"{path}.protocol: Unsupported value: "ICMP": supported values: "TCP", "UDP", "SCTP""#)]
    );
    assert_eq!(
        port_error("{protocol: tcp}"),
        [format!(r#"{path}.protocol: Unsupported value: "tcp": supported values: "TCP", "UDP", "SCTP""#)]
    );
    for bad in [0, 65536, -1] {
        assert_eq!(
            port_error(&format!("{{port: {bad}}}")),
            [format!("{path}.port: Invalid value: {bad}: must be between 1 and 65535, inclusive")]
        );
    }
    assert_eq!(
        port_error("{port: 100, endPort: 99}"),
        [format!("{path}.endPort: Invalid value: 99: must be greater than or equal to `port`")]
    );
    assert_eq!(
        port_error("{port: 100, endPort: 65536}"),
        [format!("{path}.endPort: Invalid value: 65536: must be between 1 and 65535, inclusive")]
    );
    assert_eq!(
        port_error("{port: http, endPort: 90}"),
        [format!("{path}.endPort: Invalid value: 90: may not be specified when `port` is non-numeric")]
    );
    assert_eq!(
        port_error("{endPort: 90}"),
        [format!("{path}.endPort: Invalid value: 90: may not be specified when `port` is not specified")]
    );
    assert!(port_error("{port: 100, endPort: 100}").is_empty());
    assert!(port_error("{port: 1, endPort: 65535}").is_empty());
    // Named ports: IANA_SVC_NAME.
    for (name, why) in [
        ("verylongportname", "must be no more than 15 bytes"),
        ("Http", "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"),
        ("80a_b", "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"),
        ("a--b", "must not contain consecutive hyphens"),
        ("-ab", "must not begin or end with a hyphen"),
        ("\"8080\"", "must contain at least one letter (a-z)"),
    ] {
        let shown = name.trim_matches('"');
        assert_eq!(
            port_error(&format!("{{port: {name}}}")),
            [format!("{path}.port: Invalid value: {shown:?}: {why}")],
            "{name}"
        );
    }
    assert!(port_error("{port: http-alt}").is_empty());
    assert!(port_error("{port: 9p}").is_empty());
}

#[test]
fn selectors() {
    let path = "spec.podSelector";
    assert_eq!(
        one_error("podSelector: {matchExpressions: [{key: a, operator: Foo}]}"),
        format!(
            r#"{path}.matchExpressions[0].operator: Unsupported value: "Foo": supported values: "In", "NotIn", "Exists", "DoesNotExist""#
        )
    );
    for op in ["In", "NotIn"] {
        assert_eq!(
            one_error(&format!("podSelector: {{matchExpressions: [{{key: a, operator: {op}}}]}}")),
            format!("{path}.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'")
        );
    }
    for op in ["Exists", "DoesNotExist"] {
        assert_eq!(
            one_error(&format!("podSelector: {{matchExpressions: [{{key: a, operator: {op}, values: [x]}}]}}")),
            format!(
                "{path}.matchExpressions[0].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
            )
        );
    }
    assert_eq!(
        one_error("podSelector: {matchExpressions: [{key: a, operator: In, values: [ok, -bad]}]}"),
        format!(
            "{path}.matchExpressions[0].values[1]: Invalid value: \"-bad\": a valid label must be an empty string or \
             consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric \
             character (e.g. 'MyValue' or 'my_value' or '12345', regex used for validation is \
             '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        )
    );
    assert!(one_error("podSelector: {matchExpressions: [{key: 'a b', operator: Exists}]}")
        .starts_with(&format!("{path}.matchExpressions[0].key: Invalid value: \"a b\": name part must consist of")));
    // matchLabels: the key at the map, the value at its entry.
    assert!(one_error("podSelector: {matchLabels: {'-a': x}}")
        .starts_with(&format!("{path}.matchLabels: Invalid value: \"-a\": name part must consist of")));
    assert!(one_error("podSelector: {matchLabels: {a: 'x y'}}")
        .starts_with(&format!("{path}.matchLabels[a]: Invalid value: \"x y\": a valid label must be")));
    // In peers too.
    assert!(one_error(
        "ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: k, operator: in, values: [v]}]}}]}]"
    )
    .starts_with(r#"spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].operator: Unsupported value: "in""#));
    assert!(one_error("egress: [{to: [{podSelector: {matchLabels: {'a/b/c': x}}}]}]")
        .starts_with(r#"spec.egress[0].to[0].podSelector.matchLabels: Invalid value: "a/b/c": a valid label key"#));
}

#[test]
fn policy_types() {
    assert_eq!(
        one_error("policyTypes: [Ingress, Sideways]"),
        r#"spec.policyTypes[1]: Unsupported value: "Sideways": supported values: "Ingress", "Egress""#
    );
    assert_eq!(
        one_error("policyTypes: [Ingress, Egress, Ingress]"),
        r#"spec.policyTypes: Invalid value: ["Ingress", "Egress", "Ingress"]: may not specify more than two policyTypes"#
    );
}

#[test]
fn every_error_is_reported() {
    let errors = policy_errors(
        "podSelector: {matchExpressions: [{key: a, operator: Foo}]}\ningress: [{ports: [{port: 0}], from: [{}]}]",
    );
    assert_eq!(errors.len(), 3, "{errors:?}");
}

#[test]
fn metadata() {
    let meta_errors = |name: Option<&str>, namespace: Option<&str>| {
        let policy = NetworkPolicy {
            metadata: ObjectMeta {
                name: name.map(Into::into),
                namespace: namespace.map(Into::into),
                ..ObjectMeta::default()
            },
            spec: None,
        };
        validate_network_policy(&policy).0.iter().map(ToString::to_string).collect::<Vec<_>>()
    };
    assert_eq!(meta_errors(None, Some("ns")), ["metadata.name: Required value: name or generateName is required"]);
    assert_eq!(meta_errors(Some("np"), None), ["metadata.namespace: Required value"]);
    assert_eq!(meta_errors(Some("a.b-c.d"), Some("ns")), Vec::<String>::new(), "a subdomain");
    assert_eq!(
        meta_errors(Some("Np"), Some("ns")),
        ["metadata.name: Invalid value: \"Np\": a lowercase RFC 1123 subdomain must consist of lower case \
          alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. \
          'example.com', regex used for validation is \
          '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"]
    );
    let long = "a".repeat(254);
    assert_eq!(
        meta_errors(Some(&long), Some("ns")),
        [format!("metadata.name: Invalid value: {long:?}: must be no more than 253 bytes")]
    );
    assert_eq!(
        meta_errors(Some("np"), Some("a.b")),
        ["metadata.namespace: Invalid value: \"a.b\": must not contain dots"]
    );
    assert_eq!(
        meta_errors(Some("np"), Some("Ns")),
        [format!("metadata.namespace: Invalid value: \"Ns\": {DNS_LABEL}")]
    );
    // Labels and annotations.
    let policy = NetworkPolicy {
        metadata: ObjectMeta {
            name: Some("np".into()),
            namespace: Some("ns".into()),
            labels: Some([("ok".to_owned(), "-no".to_owned())].into()),
            annotations: Some([("x".to_owned(), "y".repeat(MAX_ANNOTATIONS_BYTES))].into()),
            ..ObjectMeta::default()
        },
        spec: None,
    };
    let errors: Vec<String> = validate_network_policy(&policy).0.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].starts_with("metadata.labels[ok]: Invalid value: \"-no\": a valid label must be"), "{errors:?}");
    assert_eq!(errors[1], format!("metadata.annotations: Too long: must have at most {MAX_ANNOTATIONS_BYTES} bytes"));
}

#[test]
fn label_keys() {
    assert!(label_key_errors("example.com/MyName").is_empty());
    assert!(label_key_errors("a.b_c-d").is_empty());
    assert_eq!(label_key_errors("/a"), ["prefix part must be non-empty"]);
    assert!(label_key_errors("Example.com/a")[0].starts_with("prefix part a lowercase RFC 1123 subdomain"));
    assert_eq!(label_key_errors(&format!("{}/a", "p".repeat(254)))[0], "prefix part must be no more than 253 bytes");
    assert_eq!(label_key_errors("a/")[0], "name part must be non-empty");
    assert_eq!(label_key_errors(&"n".repeat(64)), ["name part must be no more than 63 bytes"]);
    assert!(label_key_errors("a/b/c")[0].starts_with("a valid label key must consist of"));
    assert_eq!(label_value_errors(&"v".repeat(64)), ["must be no more than 63 bytes"]);
    assert!(label_value_errors("").is_empty());
}

#[test]
fn namespaces() {
    let errors = |name: &str, namespace: Option<&str>| {
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: namespace.map(Into::into),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        validate_namespace(&ns).0.iter().map(ToString::to_string).collect::<Vec<_>>()
    };
    assert!(errors("team-a", None).is_empty());
    assert_eq!(errors("team.a", None), ["metadata.name: Invalid value: \"team.a\": must not contain dots"]);
    assert_eq!(errors("x", Some("y")), ["metadata.namespace: Forbidden: not allowed on this type"]);
}

#[test]
fn pods() {
    let errors = |spec: &str| {
        let pod = Pod {
            metadata: ObjectMeta { name: Some("p".into()), namespace: Some("ns".into()), ..ObjectMeta::default() },
            spec: Some(serde_yaml_ng::from_str(spec).unwrap()),
            ..Pod::default()
        };
        validate_pod(&pod).0.iter().map(ToString::to_string).collect::<Vec<_>>()
    };
    assert!(errors(
        "containers: [{name: c, ports: [{name: http, containerPort: 80}, {containerPort: 81, protocol: UDP}]}]"
    )
    .is_empty());
    assert_eq!(errors("containers: []"), ["spec.containers: Required value"]);
    assert_eq!(errors("containers: [{name: ''}]"), ["spec.containers[0].name: Required value"]);
    assert_eq!(errors("containers: [{name: c}, {name: c}]"), ["spec.containers[1].name: Duplicate value: \"c\""]);
    assert_eq!(
        errors("containers: [{name: C}]"),
        [format!("spec.containers[0].name: Invalid value: \"C\": {DNS_LABEL}")]
    );
    let port = |p: &str| errors(&format!("containers: [{{name: c, ports: [{{containerPort: 1}}, {p}]}}]"));
    let path = "spec.containers[0].ports[1]";
    assert_eq!(port("{containerPort: 0}"), [format!("{path}.containerPort: Required value")]);
    assert_eq!(
        port("{containerPort: 70000}"),
        [format!("{path}.containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive")]
    );
    assert_eq!(
        port("{containerPort: 80, hostPort: 70000}"),
        [format!("{path}.hostPort: Invalid value: 70000: must be between 1 and 65535, inclusive")]
    );
    assert_eq!(
        port("{containerPort: 80, protocol: ICMP}"),
        [format!(r#"{path}.protocol: Unsupported value: "ICMP": supported values: "SCTP", "TCP", "UDP""#)]
    );
    assert_eq!(
        port("{containerPort: 80, name: Web}"),
        [format!("{path}.name: Invalid value: \"Web\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")]
    );
    assert_eq!(
        errors("containers: [{name: c, ports: [{containerPort: 80, name: web}, {containerPort: 81, name: web}]}]"),
        ["spec.containers[0].ports[1].name: Duplicate value: \"web\""]
    );
    // The same name in two containers is fine, as in Kubernetes.
    assert!(errors(
        "containers: [{name: a, ports: [{containerPort: 80, name: web}]}, {name: b, ports: [{containerPort: 81, name: web}]}]"
    )
    .is_empty());
}

#[test]
fn many_errors_are_listed_one_per_line() {
    let errors = FieldErrors(vec![
        FieldError::required(&FieldPath::new("a"), ""),
        FieldError::forbidden(&FieldPath::new("b").index(2), "no"),
    ]);
    assert_eq!(errors.to_string(), "\n* a: Required value\n* b[2]: Forbidden: no");
    assert_eq!(
        FieldErrors(vec![FieldError::duplicate(&FieldPath::new("c"), "x")]).to_string(),
        "c: Duplicate value: \"x\""
    );
}
