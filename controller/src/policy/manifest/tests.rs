use super::*;

fn errors(data: &str, namespace: Option<&str>) -> Vec<String> {
    match parse(data.as_bytes(), namespace) {
        Ok(objects) => panic!("expected errors, got {objects:?}"),
        Err(ManifestErrors(errors)) => errors.iter().map(|e| format!("{}: {}", e.location, e.message)).collect(),
    }
}

const POLICY: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{ports: [{port: 80}]}]
";

#[test]
fn yaml_documents_of_every_kind() {
    let data = format!(
        "{POLICY}---\n# only a comment\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n  labels: {{team: \
         blue, kubernetes.io/metadata.name: x}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: a, labels: {{app: \
         web}}}}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    ports: [{{name: http, containerPort: \
         8080}}, {{containerPort: 9090}}, {{name: dns, containerPort: 53, protocol: UDP}}]\n"
    );
    let objects = parse(data.as_bytes(), None).unwrap();
    assert_eq!(objects.len(), 3);
    let Object::NetworkPolicy { namespace, name, spec } = &objects[0] else { panic!("{objects:?}") };
    assert_eq!((namespace.as_str(), name.as_str()), ("x", "deny"));
    // The API server's defaults.
    assert_eq!(spec.policy_types, Some(vec!["Ingress".to_owned()]));
    assert_eq!(spec.ingress.as_ref().unwrap()[0].ports.as_ref().unwrap()[0].protocol.as_deref(), Some("TCP"));
    assert_eq!(objects[0].reference(), "networkpolicy.networking.k8s.io/deny");
    // The namespace's name label is implied, not kept.
    assert_eq!(objects[1], Object::Namespace { name: "x".into(), labels: [("team".into(), "blue".into())].into() });
    assert_eq!(
        objects[2],
        Object::Pod(PodMeta {
            namespace: DEFAULT_NAMESPACE.into(),
            name: "a".into(),
            labels: [("app".into(), "web".into())].into(),
            ports: vec![
                NamedPort { name: "http".into(), port: 8080, protocol: "TCP".into() },
                NamedPort { name: "dns".into(), port: 53, protocol: "UDP".into() },
            ],
        })
    );
}

#[test]
fn json_objects_and_lists() {
    let list = r#"{"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "y"}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "p", "creationTimestamp": null},
         "spec": {"podSelector": {}, "policyTypes": ["Egress"]}}]}
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "z"}}"#;
    let objects = parse(list.as_bytes(), Some("y")).unwrap();
    let references: Vec<String> = objects.iter().map(Object::reference).collect();
    assert_eq!(references, ["namespace/y", "networkpolicy.networking.k8s.io/p", "namespace/z"]);
    assert!(matches!(&objects[1], Object::NetworkPolicy { namespace, .. } if namespace == "y"));
    // A typed list, in YAML.
    let yaml = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicyList\nitems:\n- {apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, metadata: {name: q}}\n";
    assert_eq!(parse(yaml.as_bytes(), None).unwrap().len(), 1);
    assert_eq!(parse(b"", None).unwrap(), Vec::new());
    assert_eq!(parse(b"---\n---\n", None).unwrap(), Vec::new());
}

#[test]
fn invalid_documents_are_all_reported_and_nothing_is_returned() {
    let data = format!(
        "{POLICY}---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: bad}}\nspec:\n  \
         ingress:\n  - from:\n    - podSelector: {{}}\n    - ipBlock: {{cidr: 10.0.0.0/33}}\n---\n{POLICY}---\napiVersion: \
         networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: worse}}\nspec:\n  podSelector:\n    \
         matchExpressions: [{{key: a, operator: Foo}}]\n  ingress: [{{ports: [{{port: 0}}]}}]\n"
    );
    assert_eq!(
        errors(&data, None),
        [
            "document 2: The NetworkPolicy \"bad\" is invalid: spec.ingress[0].from[1].ipBlock.cidr: Invalid value: \
             \"10.0.0.0/33\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            "document 4: The NetworkPolicy \"worse\" is invalid: \n* spec.podSelector.matchExpressions[0].operator: \
             Unsupported value: \"Foo\": supported values: \"In\", \"NotIn\", \"Exists\", \"DoesNotExist\"\n* \
             spec.ingress[0].ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
        ]
    );
}

#[test]
fn unknown_fields_and_wrong_types_name_the_field() {
    let typo = POLICY.replace("ingress: [{ports", "ingress: [{prots");
    assert_eq!(
        errors(&typo, None),
        ["document 1: NetworkPolicy in version \"networking.k8s.io/v1\" cannot be handled as a NetworkPolicy: strict \
          decoding error: unknown field \"spec.ingress[0].prots\""]
    );
    let two = POLICY.replace("metadata: {", "metadata: {nam: x, ").replace("spec:\n", "spec:\n  extra: 1\n");
    assert!(errors(&two, None)[0]
        .ends_with("strict decoding error: unknown field \"metadata.nam\", unknown field \"spec.extra\""));
    let wrong = POLICY.replace("port: 80", "port: {number: 80}");
    let message = &errors(&wrong, None)[0];
    assert!(
        message.starts_with(
            "document 1: NetworkPolicy in version \"networking.k8s.io/v1\" cannot be handled as a NetworkPolicy: \
             spec.ingress[0].ports[0].port: invalid type: map"
        ),
        "{message}"
    );
    let labels = "apiVersion: v1\nkind: Namespace\nmetadata: {name: x, labels: {on: true}}\n";
    assert!(errors(labels, None)[0].contains("metadata.labels.on: invalid type: boolean `true`, expected a string"));
}

#[test]
fn kinds_versions_and_syntax() {
    let one = |data: &str| errors(data, None).remove(0);
    assert_eq!(
        one("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n"),
        "document 1: no matches for kind \"Deployment\" in version \"apps/v1\": oxsdn takes NetworkPolicy \
         (networking.k8s.io/v1), EgressNetworkPolicy, NetNamespace and HostSubnet (network.openshift.io/v1), \
         Namespace (v1), Pod (v1) and List"
    );
    assert!(one("apiVersion: networking.k8s.io/v1beta1\nkind: NetworkPolicy\n").contains("no matches for kind"));
    assert_eq!(one("metadata: {name: d}\n"), "document 1: error validating data: apiVersion and kind not set");
    assert_eq!(one("kind: Pod\n"), "document 1: error validating data: apiVersion not set");
    assert_eq!(one("- a\n- b\n"), "document 1: not a Kubernetes object (a mapping with apiVersion and kind)");
    assert!(one("a: [\n").starts_with("document 1: invalid YAML: "));
    assert!(one("{\"a\": ").starts_with("document 1: invalid JSON: "));
    assert!(one("kind: Pod\nkind: Pod\n").contains("duplicate field \"kind\""), "{}", one("kind: Pod\nkind: Pod\n"));
    assert!(one("{\"kind\": \"Pod\", \"kind\": \"Pod\"}").contains("duplicate field \"kind\""));
    assert_eq!(one("apiVersion: v1\nkind: List\n"), "document 1: a List needs items (an array of objects)");
    assert_eq!(
        one("apiVersion: v1\nkind: List\nitems: [{apiVersion: v1, kind: List, items: []}, 3]\n"),
        "document 1, items[0]: a List may not contain a List"
    );
    assert!(matches!(parse(&[0xff, 0xfe], None), Err(ManifestErrors(e)) if e[0].message.starts_with("not UTF-8")));
    // Documents after a syntax error are not looked at; the ones before are.
    let all = errors("apiVersion: v1\nkind: Foo\n---\n{\n", None);
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(all[1].starts_with("document 2: invalid YAML"), "{all:?}");
}

#[test]
fn namespaces_of_objects() {
    let policy = |ns: &str| POLICY.replace("namespace: x", &format!("namespace: {ns}"));
    assert_eq!(
        errors(&policy("x"), Some("y")),
        ["document 1: the namespace from the provided object \"x\" does not match the namespace \"y\". You must pass \
          '--namespace=x' to perform this operation."]
    );
    assert!(parse(policy("x").as_bytes(), Some("x")).is_ok());
    assert!(errors(&policy("X"), None)[0].contains("metadata.namespace: Invalid value: \"X\""));
    let namespace = "apiVersion: v1\nkind: Namespace\nmetadata: {name: x, namespace: y}\n";
    assert_eq!(
        errors(namespace, None),
        ["document 1: The Namespace \"x\" is invalid: metadata.namespace: Forbidden: not allowed on this type"]
    );
    let generated = "apiVersion: v1\nkind: Pod\nmetadata: {generateName: p-}\nspec: {containers: [{name: c}]}\n";
    assert_eq!(errors(generated, None), ["document 1: cannot use metadata.generateName here: give metadata.name"]);
    let nameless = "apiVersion: v1\nkind: Pod\nmetadata: {}\nspec: {containers: [{name: c}]}\n";
    assert_eq!(
        errors(nameless, None),
        ["document 1: The Pod \"\" is invalid: metadata.name: Required value: name or generateName is required"]
    );
}

#[test]
fn size_and_expansion_are_bounded() {
    let big = vec![b' '; MAX_MANIFEST_BYTES + 1];
    assert_eq!(
        errors(std::str::from_utf8(&big).unwrap(), None),
        [format!("file: {} bytes is more than the {MAX_MANIFEST_BYTES} a manifest may have", MAX_MANIFEST_BYTES + 1)]
    );
    // A billion laughs: nine levels of ten aliases each.
    let mut bomb = String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    for (prev, next) in ["a", "b", "c", "d", "e", "f", "g", "h"].iter().zip(["b", "c", "d", "e", "f", "g", "h", "i"]) {
        bomb.push_str(&format!(
            "{next}: &{next} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
    }
    let started = std::time::Instant::now();
    let message = &errors(&bomb, None)[0];
    assert!(message.contains("repetition limit exceeded"), "{message}");
    assert!(started.elapsed().as_secs() < 5);
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(errors(&deep, None)[0].contains("recursion limit exceeded"));
    let deep_json = format!("{{\"a\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(errors(&deep_json, None)[0].contains("recursion limit exceeded"));
}
