//! The manifests of deploy/: valid against the Kubernetes API's OpenAPI schemas (offline,
//! with kubernetes-validate, which scripts/setup.sh installs), and least privilege: each
//! component's RBAC grants what its code uses and nothing else.

use std::{path::PathBuf, process::Command};

use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use oxsdn_kube::{
    lease::LEASE_NAME,
    run::{watched, WRITE_VERBS},
};
use serde::Deserialize;

/// The Kubernetes version of the API types oxsdn is built with (k8s-openapi's v1_33).
const KUBERNETES_VERSION: &str = "1.33";

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    files
}

/// Every document of every manifest, as (kind, document).
fn documents() -> Vec<(String, serde_yaml_ng::Value)> {
    manifests()
        .iter()
        .flat_map(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            serde_yaml_ng::Deserializer::from_str(&text)
                .map(|doc| serde_yaml_ng::Value::deserialize(doc).unwrap())
                .collect::<Vec<_>>()
        })
        .map(|doc| (doc["kind"].as_str().unwrap().to_owned(), doc))
        .collect()
}

fn objects<K: serde::de::DeserializeOwned>(kind: &str) -> Vec<K> {
    documents().into_iter().filter(|(k, _)| k == kind).map(|(_, doc)| serde_yaml_ng::from_value(doc).unwrap()).collect()
}

fn validate(files: &[PathBuf]) -> std::process::Output {
    Command::new("kubernetes-validate")
        .args(["--strict", "--quiet", "-k", KUBERNETES_VERSION])
        .args(files)
        .output()
        .expect("kubernetes-validate (pip; scripts/setup.sh installs it)")
}

#[test]
fn manifests_validate_against_the_kubernetes_schemas() {
    let out = validate(&manifests());
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // The validator does catch a wrong field (so the check above can fail).
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("agent.yaml");
    let agent = std::fs::read_to_string(deploy_dir().join("30-agent.yaml")).unwrap();
    std::fs::write(&broken, agent.replacen("hostNetwork: true", "hostNetwork: true\n      hostNetwrk: true", 1))
        .unwrap();
    let out = validate(&[broken]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("hostNetwrk"), "{out:?}");
}

fn rules(rules: Option<Vec<PolicyRule>>) -> Vec<(String, String, Vec<String>, Vec<String>)> {
    let mut out: Vec<_> = rules
        .unwrap_or_default()
        .into_iter()
        .flat_map(|rule| {
            let groups = rule.api_groups.unwrap_or_default();
            let resources = rule.resources.unwrap_or_default();
            let names = rule.resource_names.unwrap_or_default();
            let mut verbs = rule.verbs;
            verbs.sort();
            groups.into_iter().flat_map(move |g| {
                let (names, verbs) = (names.clone(), verbs.clone());
                resources.clone().into_iter().map(move |r| (g.clone(), r, verbs.clone(), names.clone()))
            })
        })
        .collect();
    out.sort();
    out
}

#[test]
fn the_kube_component_may_only_read_what_it_watches_write_openshifts_objects_and_hold_its_lease() {
    let role = objects::<ClusterRole>("ClusterRole")
        .into_iter()
        .find(|r| r.metadata.name.as_deref() == Some("oxsdn-kube"))
        .unwrap();
    let mut expected: Vec<_> = watched()
        .into_iter()
        .map(|(group, resource)| {
            let mut verbs = vec!["list".to_owned(), "watch".to_owned()];
            if let Some((_, writes)) = WRITE_VERBS.iter().find(|(r, _)| *r == resource) {
                verbs.extend(writes.iter().map(|v| v.to_string()));
                verbs.sort();
            }
            (group, resource, verbs, vec![])
        })
        .collect();
    expected.sort();
    assert_eq!(rules(role.rules), expected);

    let lease =
        objects::<Role>("Role").into_iter().find(|r| r.metadata.name.as_deref() == Some("oxsdn-kube-leader")).unwrap();
    let group = "coordination.k8s.io".to_owned();
    assert_eq!(
        rules(lease.rules),
        vec![
            (group.clone(), "leases".into(), vec!["create".into()], vec![]),
            (group, "leases".into(), vec!["get".into(), "update".into()], vec![LEASE_NAME.to_owned()]),
        ]
    );
}

#[test]
fn the_agent_has_no_kubernetes_api_credentials() {
    let agent = objects::<DaemonSet>("DaemonSet").remove(0);
    let pod = agent.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("oxsdn-agent"));
    assert_eq!(pod.automount_service_account_token, Some(false));
    let bound_to_agent = |subjects: Option<Vec<k8s_openapi::api::rbac::v1::Subject>>| {
        subjects.unwrap_or_default().iter().any(|s| s.name == "oxsdn-agent")
    };
    assert!(!objects::<ClusterRoleBinding>("ClusterRoleBinding").into_iter().any(|b| bound_to_agent(b.subjects)));
    assert!(!objects::<RoleBinding>("RoleBinding").into_iter().any(|b| bound_to_agent(b.subjects)));
}

/// OpenShift's printer columns (openshift/api network/v1 CRDs), as (name, jsonPath):
/// `kubectl get` prints what `oc get` prints.
#[test]
fn openshifts_kinds_print_as_openshift_prints_them() {
    let columns = |name: &str| -> Vec<(String, String)> {
        let crd = objects::<CustomResourceDefinition>("CustomResourceDefinition")
            .into_iter()
            .find(|c| c.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no CRD {name}"));
        let version = &crd.spec.versions[0];
        assert_eq!((crd.spec.group.as_str(), version.name.as_str()), ("network.openshift.io", "v1"));
        version.additional_printer_columns.iter().flatten().map(|c| (c.name.clone(), c.json_path.clone())).collect()
    };
    let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter().map(|(n, p)| (n.to_string(), p.to_string())).collect()
    };
    assert_eq!(
        columns("netnamespaces.network.openshift.io"),
        pairs(&[("NetID", ".netid"), ("Egress IPs", ".egressIPs")])
    );
    assert_eq!(
        columns("hostsubnets.network.openshift.io"),
        pairs(&[
            ("Host", ".host"),
            ("Host IP", ".hostIP"),
            ("Subnet", ".subnet"),
            ("Egress CIDRs", ".egressCIDRs"),
            ("Egress IPs", ".egressIPs"),
        ])
    );
    assert_eq!(
        columns("clusternetworks.network.openshift.io"),
        pairs(&[
            ("Cluster Network", ".network"),
            ("Service Network", ".serviceNetwork"),
            ("Plugin Name", ".pluginName")
        ])
    );
    assert_eq!(columns("egressnetworkpolicies.network.openshift.io"), vec![]);
}
