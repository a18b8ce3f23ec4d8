use std::collections::BTreeMap;

use super::*;
use crate::{
    cluster::tests::{cluster_on, everything, raw_put, recv},
    policy::manifest::parse,
    service::{Protocol, ServicePort},
    store::testing::{on_both_stores, Kind},
};

// Transactions and watches: on etcd as well.
on_both_stores!(
    switching_plugins_is_watched,
    pod_network_is_refused_outside_multitenant_mode,
    network_policies_keep_their_ids_and_are_watched,
    pod_meta_and_addresses_are_watched,
    a_file_applies_in_one_transaction,
    an_invalid_object_in_a_file_applies_nothing,
    deleting_a_namespace_deletes_its_policies_and_pods_labels,
    concurrent_applies_get_distinct_policy_ids,
);

fn initialised(kind: Kind) -> (crate::store::testing::Backing, Cluster) {
    let (backing, c) = cluster_on(kind);
    c.init_config(&ClusterConfig::default()).unwrap();
    (backing, c)
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn spec(yaml: &str) -> NetworkPolicySpec {
    serde_yaml_ng::from_str(yaml).unwrap()
}

fn objects(yaml: &str) -> Vec<Object> {
    parse(yaml.as_bytes(), None).unwrap_or_else(|e| panic!("{e}"))
}

fn outcomes(applied: Vec<(String, ApplyOutcome)>) -> Vec<String> {
    applied.into_iter().map(|(reference, outcome)| format!("{reference} {outcome}")).collect()
}

// ---- the network plugin -------------------------------------------------------------------

fn switching_plugins_is_watched(kind: Kind) {
    let (_backing, c) = initialised(kind);
    let (config, revision) = c.config_at().unwrap();
    assert_eq!(config.network_plugin, NetworkPlugin::Multitenant);
    let events = c.watch_config(revision).unwrap();
    let switched = c.set_network_plugin(NetworkPlugin::NetworkPolicy).unwrap();
    assert_eq!(switched, ClusterConfig { network_plugin: NetworkPlugin::NetworkPolicy, ..config.clone() });
    assert_eq!(recv(&events), switched);
    // The same plugin again writes nothing.
    let before = everything(&c);
    c.set_network_plugin(NetworkPlugin::NetworkPolicy).unwrap();
    assert_eq!(everything(&c).kvs, before.kvs);
    c.set_network_plugin(NetworkPlugin::Subnet).unwrap();
    assert_eq!(recv(&events).network_plugin, NetworkPlugin::Subnet);
    assert_eq!(c.config().unwrap().network_plugin, NetworkPlugin::Subnet);
}

#[test]
fn switching_needs_an_initialised_cluster() {
    let (_backing, c) = cluster_on(Kind::File);
    assert!(matches!(c.set_network_plugin(NetworkPlugin::Subnet), Err(Error::NotInitialised)));
    assert!(matches!(c.config_at(), Err(Error::NotInitialised)));
}

fn pod_network_is_refused_outside_multitenant_mode(kind: Kind) {
    let (_backing, c) = initialised(kind);
    c.create_netnamespaces(&["a".into(), "b".into()]).unwrap();
    for plugin in [NetworkPlugin::Subnet, NetworkPlugin::NetworkPolicy] {
        c.set_network_plugin(plugin).unwrap();
        let before = everything(&c);
        for result in [
            c.join_projects("a", &["b".into()]),
            c.isolate_projects(&["b".into()]),
            c.make_projects_global(&["b".into()]),
        ] {
            match result {
                Err(e @ Error::NotMultitenant(p)) => {
                    assert_eq!(p, plugin);
                    assert_eq!(
                        e.to_string(),
                        format!(
                            "managing pod networks is only supported for the multitenant network plugin (the \
                             cluster runs redhat/openshift-ovs-{plugin}): `oxsdnctl set network-plugin multitenant` \
                             switches to it"
                        )
                    );
                }
                other => panic!("expected NotMultitenant, got {other:?}"),
            }
        }
        assert_eq!(everything(&c).kvs, before.kvs);
    }
    c.set_network_plugin(NetworkPlugin::Multitenant).unwrap();
    assert_eq!(c.join_projects("a", &["b".into()]).unwrap()[0].netid, netid(&c, "a"));
}

fn netid(c: &Cluster, name: &str) -> u32 {
    c.get_netnamespace(name).unwrap().unwrap().netid
}

#[test]
fn pod_network_on_an_uninitialised_cluster_is_multitenant() {
    let (_backing, c) = cluster_on(Kind::File);
    c.create_netnamespaces(&["a".into()]).unwrap();
    c.make_projects_global(&["a".into()]).unwrap();
    assert_eq!(netid(&c, "a"), 0);
}

// ---- NetworkPolicies ----------------------------------------------------------------------

fn network_policies_keep_their_ids_and_are_watched(kind: Kind) {
    let (_backing, c) = initialised(kind);
    let deny = spec("{}");
    assert!(matches!(c.apply_network_policy("x", "deny", &deny), Err(Error::UnknownProject(p)) if p == "x"));
    c.create_netnamespaces(&["x".into(), "y".into()]).unwrap();
    let (none, revision) = c.list_network_policies(None).unwrap();
    assert!(none.is_empty());
    let events = c.watch_network_policies(revision).unwrap();
    let first = c.apply_network_policy("x", "deny", &deny).unwrap();
    assert_eq!(first.id, 1);
    // Stored with the API server's defaults.
    assert_eq!(first.spec.policy_types, Some(vec!["Ingress".to_owned()]));
    assert_eq!(recv(&events), NetworkPolicyEvent::Upsert(first.clone()));
    let other = c.apply_network_policy("y", "deny", &deny).unwrap();
    assert_eq!(other.id, 2);
    assert_eq!(recv(&events), NetworkPolicyEvent::Upsert(other.clone()));
    // The same again changes nothing; another spec keeps the id.
    assert_eq!(c.apply_network_policy("x", "deny", &deny).unwrap(), first);
    let web = c.apply_network_policy("x", "deny", &spec("podSelector: {matchLabels: {app: web}}")).unwrap();
    assert_eq!(web.id, 1);
    assert_eq!(recv(&events), NetworkPolicyEvent::Upsert(web.clone()));
    assert_eq!(c.get_network_policy("x", "deny").unwrap(), Some(web.clone()));
    assert_eq!(c.list_network_policies(Some("x")).unwrap().0, vec![web.clone()]);
    assert_eq!(c.list_network_policies(None).unwrap().0, vec![web, other]);
    c.delete_network_policy("x", "deny").unwrap();
    assert_eq!(recv(&events), NetworkPolicyEvent::Deleted { namespace: "x".into(), name: "deny".into() });
    assert!(matches!(c.delete_network_policy("x", "deny"), Err(Error::UnknownNetworkPolicy { .. })));
    // A new policy never reuses an id.
    assert_eq!(c.apply_network_policy("x", "again", &deny).unwrap().id, 3);
}

#[test]
fn invalid_policies_are_refused_by_the_operation() {
    let (_backing, c) = initialised(Kind::File);
    c.create_netnamespaces(&["x".into()]).unwrap();
    let before = everything(&c);
    let bad = spec("ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}]}]");
    let err = c.apply_network_policy("x", "bad", &bad).unwrap_err();
    assert_eq!(
        err.to_string(),
        "The NetworkPolicy \"bad\" is invalid: spec.ingress[0].from[0].ipBlock.cidr: Invalid value: \"10.0.0.0/33\": \
         must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"
    );
    assert!(c.apply_network_policy("x", "Bad", &spec("{}")).unwrap_err().to_string().starts_with("invalid name"));
    assert_eq!(everything(&c).kvs, before.kvs);
}

#[test]
fn a_stored_policy_no_operation_could_write_is_a_bad_record() {
    let (_backing, c) = initialised(Kind::File);
    raw_put(
        &c,
        "/oxsdn/networkpolicies/x/p",
        br#"{"namespace":"x","name":"p","id":1,"spec":{"ingress":[{"ports":[{"port":0}]}]}}"#,
    );
    let err = c.get_network_policy("x", "p").unwrap_err().to_string();
    assert!(err.contains("spec.ingress[0].ports[0].port: Invalid value: 0"), "{err}");
}

// ---- pods' labels and addresses -----------------------------------------------------------

fn pod_meta_and_addresses_are_watched(kind: Kind) {
    let (_backing, c) = initialised(kind);
    let (_, revision) = c.list_pod_meta().unwrap();
    let events = c.watch_pod_meta(revision).unwrap();
    let meta = PodMeta {
        namespace: "x".into(),
        name: "a".into(),
        labels: labels(&[("app", "web")]),
        ports: vec![crate::policy::NamedPort { name: "http".into(), port: 80, protocol: "TCP".into() }],
    };
    c.apply_pod_meta(&meta).unwrap();
    assert_eq!(recv(&events), PodMetaEvent::Upsert(meta.clone()));
    assert_eq!(c.get_pod_meta("x", "a").unwrap(), Some(meta.clone()));
    let relabeled = c.label_pod("x", "a", &labels(&[("tier", "1")]), &["app".into()]).unwrap();
    assert_eq!(relabeled.labels, labels(&[("tier", "1")]));
    assert_eq!(recv(&events), PodMetaEvent::Upsert(relabeled.clone()));
    assert_eq!(c.list_pod_meta().unwrap().0, vec![relabeled]);
    assert!(c.delete_pod_meta("x", "a").unwrap());
    assert_eq!(recv(&events), PodMetaEvent::Deleted { namespace: "x".into(), name: "a".into() });
    assert!(!c.delete_pod_meta("x", "a").unwrap());
    let bad_port =
        PodMeta { ports: vec![crate::policy::NamedPort { name: "9".into(), port: 1, protocol: "TCP".into() }], ..meta };
    assert!(c.apply_pod_meta(&bad_port).unwrap_err().to_string().contains("must contain at least one letter"));

    let (_, revision) = c.list_pod_addresses(None).unwrap();
    let addresses = c.watch_pod_addresses(revision).unwrap();
    let address = PodAddress {
        node: "n1".into(),
        container_id: "c0ffee".into(),
        ifname: "eth0".into(),
        namespace: "x".into(),
        name: "a".into(),
        ip: "10.128.0.5".parse().unwrap(),
    };
    c.put_pod_address(&address).unwrap();
    assert_eq!(recv(&addresses), PodAddressEvent::Upsert(address.clone()));
    assert_eq!(c.list_pod_addresses(Some("n1")).unwrap().0, vec![address.clone()]);
    assert!(c.list_pod_addresses(Some("n2")).unwrap().0.is_empty());
    assert!(c.delete_pod_address("n1", "c0ffee", "eth0").unwrap());
    assert_eq!(recv(&addresses), PodAddressEvent::Deleted("n1/c0ffee/eth0".into()));
    let hostile = PodAddress { container_id: "../x".into(), ..address };
    assert!(c.put_pod_address(&hostile).is_err());
}

// ---- manifests ----------------------------------------------------------------------------

const FILE: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {team: blue}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec: {}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: x}
spec: {podSelector: {matchLabels: {app: web}}, ingress: [{ports: [{port: http}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {app: web}}
spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
";

fn a_file_applies_in_one_transaction(kind: Kind) {
    let (_backing, c) = initialised(kind);
    let (_, revision) = c.list_network_policies(None).unwrap();
    let events = c.watch_network_policies(revision).unwrap();
    let applied = c.apply_objects(&objects(FILE)).unwrap();
    assert_eq!(
        outcomes(applied),
        [
            "namespace/x created",
            "networkpolicy.networking.k8s.io/deny created",
            "networkpolicy.networking.k8s.io/web created",
            "pod/a created"
        ]
    );
    // One transaction: the watch sees both policies at one revision, one after the other.
    let (NetworkPolicyEvent::Upsert(deny), NetworkPolicyEvent::Upsert(web)) = (recv(&events), recv(&events)) else {
        panic!("expected two upserts")
    };
    assert_eq!((deny.name.as_str(), deny.id, web.name.as_str(), web.id), ("deny", 1, "web", 2));
    let x = c.get_netnamespace("x").unwrap().unwrap();
    assert_eq!(x.labels, labels(&[("team", "blue")]));
    assert_eq!(x.effective_labels(), labels(&[("team", "blue"), ("kubernetes.io/metadata.name", "x")]));
    assert_eq!(c.get_pod_meta("x", "a").unwrap().unwrap().ports[0].port, 8080);

    // Again: unchanged, nothing written.
    let before = everything(&c);
    assert!(outcomes(c.apply_objects(&objects(FILE)).unwrap()).iter().all(|o| o.ends_with(" unchanged")));
    assert_eq!(everything(&c).kvs, before.kvs);

    // Changed: labels replaced (not merged), policy ids kept, a pod's labels replaced.
    let changed = FILE
        .replace("labels: {team: blue}", "labels: {env: prod}")
        .replace("app: web}}, ingress", "app: api}}, ingress")
        .replace("labels: {app: web}}", "labels: {app: api}}");
    assert_eq!(
        outcomes(c.apply_objects(&objects(&changed)).unwrap()),
        [
            "namespace/x configured",
            "networkpolicy.networking.k8s.io/deny unchanged",
            "networkpolicy.networking.k8s.io/web configured",
            "pod/a configured"
        ]
    );
    assert_eq!(c.get_netnamespace("x").unwrap().unwrap().labels, labels(&[("env", "prod")]));
    assert_eq!(c.get_network_policy("x", "web").unwrap().unwrap().id, 2);
    assert_eq!(c.get_pod_meta("x", "a").unwrap().unwrap().labels, labels(&[("app", "api")]));
}

fn concurrent_applies_get_distinct_policy_ids(kind: Kind) {
    const EACH: usize = 10;
    let (backing, c) = initialised(kind);
    c.create_netnamespaces(&["x".into()]).unwrap();
    std::thread::scope(|s| {
        for writer in ["p", "q"] {
            let c = Cluster::new(backing.open());
            s.spawn(move || {
                for i in 0..EACH {
                    let policy = Object::NetworkPolicy {
                        namespace: "x".into(),
                        name: format!("{writer}{i}"),
                        spec: spec("podSelector: {}\npolicyTypes: [Ingress]"),
                    };
                    c.apply_objects(&[policy]).unwrap();
                }
            });
        }
    });
    let ids: std::collections::BTreeSet<u32> = c.list_network_policies(None).unwrap().0.iter().map(|p| p.id).collect();
    assert_eq!(ids, (1..=2 * EACH as u32).collect());
}

#[test]
fn an_object_given_twice_counts_once_with_its_last_content() {
    let (_backing, c) = initialised(Kind::File);
    let twice = format!("{FILE}---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: x, labels: {{team: red}}}}\n");
    let applied = outcomes(c.apply_objects(&objects(&twice)).unwrap());
    assert_eq!(applied.len(), 4, "{applied:?}");
    assert_eq!(applied[0], "namespace/x created");
    assert_eq!(c.get_netnamespace("x").unwrap().unwrap().labels, labels(&[("team", "red")]));
}

fn an_invalid_object_in_a_file_applies_nothing(kind: Kind) {
    let (_backing, c) = initialised(kind);
    let before = everything(&c);
    // Invalid documents: refused by the parser, nothing to apply.
    let invalid = format!(
        "{FILE}---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: bad, namespace: \
         x}}\nspec: {{ingress: [{{from: [{{ipBlock: {{cidr: 10.0.0.0/33}}}}]}}]}}\n"
    );
    let errors = parse(invalid.as_bytes(), None).unwrap_err();
    assert_eq!(errors.0.len(), 1);
    assert_eq!(errors.0[0].location, "document 5");
    // Valid documents whose last object fails in the store (its namespace does not
    // exist): the transaction writes none of the others.
    let orphan = format!(
        "{FILE}---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p, namespace: \
         ghost}}\nspec: {{}}\n"
    );
    assert!(matches!(c.apply_objects(&objects(&orphan)), Err(Error::UnknownProject(p)) if p == "ghost"));
    assert_eq!(everything(&c).kvs, before.kvs);
    // Objects that did not come from the parser are checked by the operation.
    let unchecked = [Object::NetworkPolicy {
        namespace: "x".into(),
        name: "p".into(),
        spec: spec("ingress: [{ports: [{protocol: ICMP}]}]"),
    }];
    assert!(c.apply_objects(&unchecked).unwrap_err().to_string().contains("Unsupported value: \"ICMP\""));
    assert_eq!(everything(&c).kvs, before.kvs);
}

fn deleting_a_namespace_deletes_its_policies_and_pods_labels(kind: Kind) {
    let (_backing, c) = initialised(kind);
    c.apply_objects(&objects(FILE)).unwrap();
    c.apply_objects(&objects(&FILE.replace("name: x", "name: y").replace("namespace: x", "namespace: y"))).unwrap();
    // A file naming a policy and its namespace: each deleted once.
    let some = objects(FILE).into_iter().take(2).collect::<Vec<_>>();
    let deleted = c.delete_objects(&some).unwrap();
    assert_eq!(deleted, [("namespace/x".to_owned(), true), ("networkpolicy.networking.k8s.io/deny".to_owned(), true)]);
    assert!(c.get_netnamespace("x").unwrap().is_none());
    assert!(c.list_network_policies(Some("x")).unwrap().0.is_empty(), "web went with its namespace");
    assert!(c.get_pod_meta("x", "a").unwrap().is_none());
    assert_eq!(c.list_network_policies(Some("y")).unwrap().0.len(), 2, "another namespace's are kept");
    // Not found: reported, not an error.
    assert_eq!(
        c.delete_objects(&some).unwrap(),
        [("namespace/x".to_owned(), false), ("networkpolicy.networking.k8s.io/deny".to_owned(), false)]
    );
    // `delete project` takes them too.
    c.delete_netnamespace("y").unwrap();
    assert!(c.list_network_policies(None).unwrap().0.is_empty());
    assert!(c.list_pod_meta().unwrap().0.is_empty());
}

#[test]
fn a_namespace_with_services_is_not_deleted() {
    let (_backing, c) = initialised(Kind::File);
    c.apply_objects(&objects(FILE)).unwrap();
    c.create_service("x", "web", &[ServicePort::new(Protocol::Tcp, 80, 8080)], None).unwrap();
    let before = everything(&c);
    let err = c.delete_objects(&objects(FILE)).unwrap_err();
    assert!(matches!(err, Error::ProjectHasServices { .. }), "{err}");
    assert_eq!(everything(&c).kvs, before.kvs, "the policies and pod stay too");
}

// ---- labels -------------------------------------------------------------------------------

#[test]
fn labels_as_kubectl_label_sets_them() {
    let (_backing, c) = initialised(Kind::File);
    c.create_netnamespace("x", labels(&[("team", "blue")])).unwrap();
    let ns = LabelTarget::Namespace("x");
    let label = |set: &[(&str, &str)], remove: &[&str], overwrite| {
        let remove: Vec<String> = remove.iter().map(|s| s.to_string()).collect();
        c.label(ns, &labels(set), &remove, overwrite)
    };
    assert_eq!(label(&[("env", "prod")], &[], false).unwrap().outcome, LabelOutcome::Labeled);
    let err = label(&[("team", "red")], &[], false).unwrap_err();
    assert_eq!(err.to_string(), "'team' already has a value (blue), and --overwrite is false");
    assert_eq!(label(&[("team", "blue")], &[], false).unwrap().outcome, LabelOutcome::NotLabeled, "same value");
    assert_eq!(label(&[("team", "red")], &[], true).unwrap().outcome, LabelOutcome::Labeled);
    let removed = label(&[], &["env", "nope"], false).unwrap();
    assert_eq!(removed, Labeled { outcome: LabelOutcome::Unlabeled, not_found: vec!["nope".into()] });
    assert_eq!(c.get_netnamespace("x").unwrap().unwrap().labels, labels(&[("team", "red")]));
    let err = label(&[("a", "1")], &["a"], false).unwrap_err();
    assert_eq!(err.to_string(), "can not both modify and remove the following label(s) in the same command: a");
    // The name label: implied, the same value is fine, any change refused.
    assert_eq!(label(&[(NAMESPACE_NAME_LABEL, "x")], &[], false).unwrap().outcome, LabelOutcome::NotLabeled);
    assert!(label(&[(NAMESPACE_NAME_LABEL, "y")], &[], true).unwrap_err().to_string().contains("cannot be changed"));
    assert!(label(&[], &[NAMESPACE_NAME_LABEL], false).is_err());
    assert!(label(&[("bad key", "1")], &[], false).unwrap_err().to_string().starts_with("invalid label key"));
    assert!(matches!(
        c.label(LabelTarget::Namespace("ghost"), &labels(&[("a", "1")]), &[], false),
        Err(Error::UnknownProject(_))
    ));

    // Pods: before they are added too, but in an existing namespace.
    let pod = LabelTarget::Pod { namespace: "x", name: "a" };
    assert_eq!(c.label(pod, &labels(&[("app", "web")]), &[], false).unwrap().outcome, LabelOutcome::Labeled);
    assert_eq!(c.get_pod_meta("x", "a").unwrap().unwrap().labels, labels(&[("app", "web")]));
    assert!(c.label(pod, &labels(&[("app", "api")]), &[], false).is_err());
    assert!(matches!(
        c.label(LabelTarget::Pod { namespace: "ghost", name: "a" }, &labels(&[("a", "1")]), &[], false),
        Err(Error::UnknownProject(_))
    ));
}

#[test]
fn effective_labels_override_a_stored_name_label() {
    let (_backing, c) = initialised(Kind::File);
    let ns = c.create_netnamespace("x", labels(&[(NAMESPACE_NAME_LABEL, "other")])).unwrap();
    assert_eq!(ns.effective_labels()[NAMESPACE_NAME_LABEL], "x");
    assert_eq!(ns.to_namespace().metadata.labels.unwrap()[NAMESPACE_NAME_LABEL], "x");
}
