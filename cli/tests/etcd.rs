//! `oxsdnctl` processes sharing one etcd, as operators on different machines would:
//! racing writers lose no update.

use std::{
    collections::HashSet,
    path::Path,
    process::{Command, Stdio},
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

/// `oxsdnctl <args>` on etcd at `endpoint` with `cert`; its stdout, which it must
/// succeed.
fn oxsdnctl(endpoint: &str, cert: &ClientCert, args: &[&str]) -> String {
    run(Path::new(env!("CARGO_BIN_EXE_oxsdnctl")), endpoint, cert, args)
}

/// `binary <args>` (oxsdnctl or a tool taking its store options) on etcd at `endpoint`
/// with `cert` (from the environment, as operators may set them); its stdout, which it
/// must succeed.
fn run(binary: &Path, endpoint: &str, cert: &ClientCert, args: &[&str]) -> String {
    let out = Command::new(binary)
        .args(args)
        .env("OXSDN_ETCD_ENDPOINTS", endpoint)
        .env("OXSDN_ETCD_CACERT", &cert.ca)
        .env("OXSDN_ETCD_CERT", &cert.cert)
        .env("OXSDN_ETCD_KEY", &cert.key)
        // Would be used (and fail) if the endpoints were ignored.
        .env("OXSDN_STORE", "/nonexistent/oxsdn-store")
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success(), "{} {args:?}: {}", binary.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
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
            (0..2).map(|_| s.spawn(|| run(&hammer, &endpoint, &cert, &["--count", &count]))).collect();
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
