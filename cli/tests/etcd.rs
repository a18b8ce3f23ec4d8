//! `oxsdnctl` processes sharing one etcd, as operators on different machines would:
//! racing writers lose no update. And what a node's credentials may not do.

use std::{
    collections::HashSet,
    io::Write,
    path::Path,
    process::{Command, Output, Stdio},
    thread,
};

use oxsdn_tests::{
    bins,
    etcd::{EtcdServer, Transport},
    pki::ClientCert,
};
use serde_json::Value;

/// A private etcd (and the directory it lives in), and a client certificate for it.
fn etcd() -> (tempfile::TempDir, EtcdServer, ClientCert) {
    let tmp = tempfile::tempdir().unwrap();
    let server = EtcdServer::start_on_loopback(&tmp.path().join("etcd"), Transport::Tls).unwrap();
    let cert = server.client_cert("root").unwrap();
    (tmp, server, cert)
}

/// `binary <args>` (oxsdnctl or a tool taking its store options) on etcd at `endpoint`
/// with `cert` (from the environment, as operators may set them), `stdin` its standard
/// input.
fn run_binary(binary: &Path, endpoint: &str, cert: &ClientCert, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(binary)
        .args(args)
        .env("OXSDN_ETCD_ENDPOINTS", endpoint)
        .env("OXSDN_ETCD_CACERT", &cert.ca)
        .env("OXSDN_ETCD_CERT", &cert.cert)
        .env("OXSDN_ETCD_KEY", &cert.key)
        // Would be used (and fail) if the endpoints were ignored.
        .env("OXSDN_STORE", "/nonexistent/oxsdn-store")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// `oxsdnctl <args>` with `stdin` (see [`run_binary`]).
fn run(endpoint: &str, cert: &ClientCert, args: &[&str], stdin: &str) -> Output {
    run_binary(Path::new(env!("CARGO_BIN_EXE_oxsdnctl")), endpoint, cert, args, stdin)
}

/// `binary <args>`, which must succeed; its stdout.
fn succeed(binary: &Path, endpoint: &str, cert: &ClientCert, args: &[&str]) -> String {
    let out = run_binary(binary, endpoint, cert, args, "");
    assert!(out.status.success(), "{} {args:?}: {}", binary.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// `oxsdnctl <args>`, which must succeed; its stdout.
fn oxsdnctl(endpoint: &str, cert: &ClientCert, args: &[&str]) -> String {
    succeed(Path::new(env!("CARGO_BIN_EXE_oxsdnctl")), endpoint, cert, args)
}

/// The values `committed value=V revision=R` lines report.
fn committed_values(output: &str) -> Vec<u64> {
    output
        .lines()
        .map(|line| {
            line.strip_prefix("committed value=")
                .and_then(|rest| rest.split(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("unexpected line {line:?}"))
        })
        .collect()
}

/// Two processes incrementing one counter with compare-and-swap (the test tool
/// `oxsdn-store-hammer`, with oxsdnctl's store options).
#[test]
fn racing_store_hammers_lose_no_update() {
    const EACH: u64 = 100;
    let (_tmp, etcd, cert) = etcd();
    let endpoint = etcd.endpoint();
    let count = EACH.to_string();
    let hammer = bins::store_hammer();
    let outputs: Vec<String> = thread::scope(|s| {
        let hammers: Vec<_> =
            (0..2).map(|_| s.spawn(|| succeed(&hammer, &endpoint, &cert, &["--count", &count]))).collect();
        hammers.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all = HashSet::new();
    for output in &outputs {
        let values = committed_values(output);
        assert_eq!(values.len() as u64, EACH);
        all.extend(values);
    }
    // Each commit incremented what the previous one left: every value once, none lost.
    assert_eq!(all, (1..=2 * EACH).collect());
}

#[test]
fn racing_project_creations_get_distinct_vnids() {
    const EACH: usize = 6;
    let (_tmp, etcd, cert) = etcd();
    let endpoint = etcd.endpoint();
    oxsdnctl(&endpoint, &cert, &["init"]);
    thread::scope(|s| {
        for operator in ["x", "y"] {
            let (endpoint, cert) = (&endpoint, &cert);
            s.spawn(move || {
                for i in 0..EACH {
                    oxsdnctl(endpoint, cert, &["create", "project", &format!("{operator}{i}")]);
                }
            });
        }
    });
    let json = oxsdnctl(&endpoint, &cert, &["get", "netnamespaces", "-o", "json"]);
    let all: Vec<Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(all.len(), 2 * EACH, "{json}");
    let netids: HashSet<u64> = all.iter().map(|ns| ns["netid"].as_u64().unwrap()).collect();
    let ids: HashSet<u64> = all.iter().map(|ns| ns["id"].as_u64().unwrap()).collect();
    assert_eq!(netids.len(), 2 * EACH, "{json}");
    assert_eq!(ids, (1..=2 * EACH as u64).collect());
}

/// A manifest of `count` NetworkPolicies named `prefix-N` in namespace `x`.
fn policies(prefix: &str, count: usize) -> String {
    (0..count)
        .map(|i| {
            format!(
                "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {prefix}-{i}, namespace: \
                 x}}\nspec: {{podSelector: {{matchLabels: {{app: a{i}}}}}}}\n---\n"
            )
        })
        .collect()
}

#[test]
fn racing_applies_lose_no_policy() {
    const EACH: usize = 20;
    let (_tmp, etcd, cert) = etcd();
    let endpoint = etcd.endpoint();
    oxsdnctl(&endpoint, &cert, &["init", "--network-plugin", "networkpolicy"]);
    oxsdnctl(&endpoint, &cert, &["create", "project", "x"]);
    thread::scope(|s| {
        for operator in ["p", "q"] {
            let (endpoint, cert) = (&endpoint, &cert);
            s.spawn(move || {
                // Each file one transaction; several files in turn, racing the other operator's.
                for round in 0..4 {
                    let out =
                        run(endpoint, cert, &["apply", "-f", "-"], &policies(&format!("{operator}{round}"), EACH / 4));
                    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                }
            });
        }
    });
    let json = oxsdnctl(&endpoint, &cert, &["get", "networkpolicies", "-o", "json"]);
    let list: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 2 * EACH, "{json}");
}

#[test]
fn a_nodes_credentials_may_not_write_policies_labels_or_the_plugin() {
    let (_tmp, etcd, root) = etcd();
    let endpoint = etcd.endpoint();
    oxsdnctl(&endpoint, &root, &["store", "setup-auth", "--node", "n1"]);
    let operator = etcd.client_cert("oxsdn-operator").unwrap();
    let node = etcd.client_cert("oxsdn-node-n1").unwrap();
    oxsdnctl(&endpoint, &operator, &["init", "--network-plugin", "networkpolicy"]);
    oxsdnctl(&endpoint, &operator, &["create", "project", "x"]);
    let file = policies("p", 2)
        + "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x}\nspec: {containers: [{name: c}]}\n";
    let out = run(&endpoint, &operator, &["apply", "-f", "-"], &file);
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 3, "{}", String::from_utf8_lossy(&out.stderr));
    let state = || {
        ["networkpolicies", "namespaces", "pods", "clusternetwork"]
            .map(|what| oxsdnctl(&endpoint, &operator, &["get", what, "-o", "json"]))
    };
    let before = state();
    let changed = file.replace("app: a0", "app: b0") + "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: y}\n";
    for (args, stdin) in [
        (&["apply", "-f", "-"][..], changed.as_str()),
        (&["delete", "-f", "-"], file.as_str()),
        (&["label", "namespace", "x", "team=red"], ""),
        (&["label", "pod", "a", "-n", "x", "app=web"], ""),
        (&["set", "network-plugin", "subnet"], ""),
        (&["delete", "networkpolicy", "p-0", "-n", "x"], ""),
    ] {
        let out = run(&endpoint, &node, args, stdin);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains("store permission denied"), "{args:?}: {stderr}");
    }
    assert_eq!(state(), before);
    // The operator may.
    oxsdnctl(&endpoint, &operator, &["label", "pod", "a", "-n", "x", "app=web"]);
    oxsdnctl(&endpoint, &operator, &["set", "network-plugin", "subnet"]);
}
