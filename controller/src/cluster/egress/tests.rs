use super::*;
use crate::{
    cluster::tests::{cluster_on, everything, recv},
    egress::{EgressNetworkPolicySpec, EgressPeer, EgressRule, EgressRuleType},
    policy::manifest::parse,
    store::testing::{on_both_stores, Kind},
    ClusterConfig,
};

on_both_stores!(egress_policies_are_stored_and_watched, a_manifest_with_a_bad_egress_policy_changes_nothing,);

fn initialised(kind: Kind) -> (crate::store::testing::Backing, Cluster) {
    let (backing, c) = cluster_on(kind);
    c.init_config(&ClusterConfig::default()).unwrap();
    c.create_netnamespace("default", Default::default()).ok();
    (backing, c)
}

fn deny_all(namespace: &str, name: &str) -> EgressNetworkPolicyRecord {
    let rule = EgressRule {
        kind: EgressRuleType::Deny,
        to: EgressPeer { cidr_selector: Some("0.0.0.0/0".into()), dns_name: None },
    };
    EgressNetworkPolicyRecord {
        namespace: namespace.into(),
        name: name.into(),
        spec: EgressNetworkPolicySpec { egress: vec![rule] },
    }
}

fn egress_policies_are_stored_and_watched(kind: Kind) {
    let (_backing, c) = initialised(kind);
    c.create_netnamespace("p", Default::default()).unwrap();
    let (_, revision) = c.list_egress_policies(None).unwrap();
    let events = c.watch_egress_policies(revision).unwrap();
    assert_eq!(c.apply_egress_policy(&deny_all("p", "default")).unwrap(), ApplyOutcome::Created);
    assert_eq!(recv(&events), EgressPolicyEvent::Upsert(deny_all("p", "default")));
    assert_eq!(c.apply_egress_policy(&deny_all("p", "default")).unwrap(), ApplyOutcome::Unchanged);
    assert_eq!(c.get_egress_policy("p").unwrap(), Some(deny_all("p", "default")));

    // Refused, each changing nothing: a second policy, an unknown project, the default
    // and a global project.
    let before = everything(&c);
    let second = c.apply_egress_policy(&deny_all("p", "other")).unwrap_err().to_string();
    assert!(second.contains("already has EgressNetworkPolicy \"default\""), "{second}");
    assert!(matches!(c.apply_egress_policy(&deny_all("nope", "default")), Err(Error::UnknownProject(_))));
    let default = c.apply_egress_policy(&deny_all("default", "default")).unwrap_err().to_string();
    assert!(default.contains("not allowed in the default or a global project"), "{default}");
    c.create_netnamespace("g", Default::default()).unwrap();
    c.make_projects_global(&["g".into()]).unwrap();
    let before_global = everything(&c);
    assert!(c.apply_egress_policy(&deny_all("g", "default")).is_err());
    assert_eq!(everything(&c).kvs, before_global.kvs);
    assert!(matches!(c.delete_egress_policy("p", "other"), Err(Error::UnknownEgressPolicy { .. })));
    assert_eq!(c.get_egress_policy("p").unwrap(), Some(deny_all("p", "default")));
    drop(before);

    c.delete_egress_policy("p", "default").unwrap();
    assert_eq!(recv(&events), EgressPolicyEvent::Deleted("p".into()));
    // Deleting the project deletes its policy.
    c.apply_egress_policy(&deny_all("p", "default")).unwrap();
    c.delete_netnamespace("p").unwrap();
    assert_eq!(c.list_egress_policies(None).unwrap().0, vec![]);
}

fn a_manifest_with_a_bad_egress_policy_changes_nothing(kind: Kind) {
    let (_backing, c) = initialised(kind);
    let good = "apiVersion: v1\nkind: Namespace\nmetadata: {name: p}\n---\napiVersion: network.openshift.io/v1\n\
                kind: EgressNetworkPolicy\nmetadata: {name: default, namespace: p}\nspec:\n  egress:\n  \
                - type: Allow\n    to: {dnsName: example.com}\n  - type: Deny\n    to: {cidrSelector: 0.0.0.0/0}\n";
    let objects = parse(good.as_bytes(), None).unwrap();
    let applied = c.apply_objects(&objects).unwrap();
    assert_eq!(applied[1], ("egressnetworkpolicy.network.openshift.io/default".into(), ApplyOutcome::Created));
    assert_eq!(c.get_egress_policy("p").unwrap().unwrap().spec.egress.len(), 2);

    // A bad CIDR and the default project are refused by the parser; a global project
    // in a file with a new namespace by the transaction: nothing of the file is written.
    let bad_cidr = good.replace("0.0.0.0/0", "0.0.0.0/40");
    let err = parse(bad_cidr.as_bytes(), None).unwrap_err().to_string();
    assert!(err.contains("spec.egress[1].to.cidrSelector"), "{err}");
    let in_default = good.replace("namespace: p", "namespace: default");
    let err = parse(in_default.as_bytes(), None).unwrap_err().to_string();
    assert!(err.contains("not allowed in the default"), "{err}");
    c.create_netnamespace("g", Default::default()).unwrap();
    c.make_projects_global(&["g".into()]).unwrap();
    let before = everything(&c);
    let in_global = "apiVersion: v1\nkind: Namespace\nmetadata: {name: q}\n---\napiVersion: network.openshift.io/v1\n\
                     kind: EgressNetworkPolicy\nmetadata: {name: default, namespace: g}\nspec: {egress: []}\n";
    let err = c.apply_objects(&parse(in_global.as_bytes(), None).unwrap()).unwrap_err().to_string();
    assert!(err.contains("not allowed in the default or a global project"), "{err}");
    assert_eq!(everything(&c).kvs, before.kvs);
}
