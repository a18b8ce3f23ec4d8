//! `oxsdnctl` (the binary) against bad input: invalid CIDRs and settings, unknown
//! projects, a store with a VNID out of range, corrupted store files. Each gets a
//! precise error and a failure exit status, and the store is left exactly as it was:
//! nothing half-written, nothing reset.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::Value;
use tempfile::TempDir;

fn oxsdnctl(store: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_oxsdnctl"))
        .arg("--store")
        .arg(store)
        .args(args)
        .env_remove("OXSDN_ETCD_ENDPOINTS")
        .output()
        .expect("running oxsdnctl")
}

/// Runs a command that must fail; returns its stderr.
fn fails(store: &Path, args: &[&str]) -> String {
    let out = oxsdnctl(store, args);
    assert!(!out.status.success(), "oxsdnctl {args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
    assert!(out.stdout.is_empty(), "oxsdnctl {args:?} printed a result: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn succeeds(store: &Path, args: &[&str]) {
    let out = oxsdnctl(store, args);
    assert!(out.status.success(), "oxsdnctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A store with projects `a` and `b`.
fn store_with_projects() -> (TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    succeeds(&store, &["init"]);
    succeeds(&store, &["create", "project", "a"]);
    succeeds(&store, &["create", "project", "b"]);
    (tmp, store)
}

fn state(store: &Path) -> Vec<u8> {
    std::fs::read(store.join("state")).unwrap()
}

#[test]
fn invalid_cidrs_and_settings_at_init_create_no_store() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let cases: [(&[&str], &str); 8] = [
        (&["--cluster-network", "10.0.0.0/33"], "\"10.0.0.0/33\" is not an IPv4 CIDR"),
        (&["--cluster-network", "nonsense"], "\"nonsense\" has no prefix length"),
        (&["--service-network", "172.30.0.0"], "\"172.30.0.0\" has no prefix length"),
        (
            &["--cluster-network", "10.0.0.1/16"],
            "clusterNetwork 10.0.0.1/16 has host bits set; did you mean 10.0.0.0/16?",
        ),
        (&["--service-network", "10.128.0.0/16"], "clusterNetwork 10.128.0.0/14 overlaps serviceNetwork 10.128.0.0/16"),
        (&["--host-subnet-length", "20"], "hostSubnetLength 20 is out of range [2, 12]"),
        (&["--mtu", "100"], "mtu 100 is out of range [576, 9000]"),
        (&["--vxlan-port", "70000"], "invalid value '70000' for '--vxlan-port <PORT>'"),
    ];
    for (args, message) in cases {
        let err = fails(&store, &[&["init"], args].concat());
        assert!(err.contains(message), "init {args:?}: {err}");
        assert!(!store.exists(), "init {args:?} left {}", store.display());
    }
}

#[test]
fn unknown_projects_and_bad_addresses_change_nothing() {
    let (_tmp, store) = store_with_projects();
    let before = state(&store);
    let cases: [(&[&str], &str); 8] = [
        (&["pod-network", "join-projects", "--to=ghost", "a"], "project \"ghost\" not found"),
        (&["pod-network", "join-projects", "--to=a", "b", "ghost"], "project \"ghost\" not found"),
        (&["pod-network", "isolate-projects", "ghost"], "project \"ghost\" not found"),
        (&["pod-network", "make-projects-global", "a", "ghost"], "project \"ghost\" not found"),
        (&["create", "service", "web", "-n", "ghost", "--tcp", "80"], "ghost"),
        (
            &["create", "service", "web", "-n", "a", "--tcp", "80", "--cluster-ip", "10.0.0.1"],
            "ClusterIP 10.0.0.1 is outside the service network 172.30.0.0/16",
        ),
        (
            &["create", "service", "web", "-n", "a", "--tcp", "80", "--cluster-ip", "172.30.0.300"],
            "invalid value '172.30.0.300'",
        ),
        (&["create", "project", "Not_A_Name"], "Not_A_Name"),
    ];
    for (args, message) in cases {
        let err = fails(&store, args);
        assert!(err.contains(message), "{args:?}: {err}");
        assert_eq!(state(&store), before, "{args:?} changed the store");
    }
}

/// Rewrites project `name`'s record in a file store with `netid`, keeping the file's
/// checksum valid: a well-formed store holding a bad record.
fn set_netid_on_disk(store: &Path, name: &str, netid: u64) {
    let text = String::from_utf8(state(store)).unwrap();
    let (_, body) = text.split_once('\n').unwrap();
    let mut body: Value = serde_json::from_str(body).unwrap();
    let entry = &mut body["kvs"][format!("/oxsdn/netnamespaces/{name}")]["value"];
    let mut record: Value = serde_json::from_str(entry.as_str().unwrap()).unwrap();
    record["netid"] = netid.into();
    *entry = Value::String(record.to_string());
    let body = serde_json::to_vec(&body).unwrap();
    let sum = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut sum.stdin.as_ref().unwrap(), &body).unwrap();
    let hex = String::from_utf8(sum.wait_with_output().unwrap().stdout).unwrap();
    let header = format!("oxsdn-store 1 sha256={}\n", &hex[..64]);
    std::fs::write(store.join("state"), [header.as_bytes(), &body].concat()).unwrap();
}

#[test]
fn a_vnid_out_of_range_in_the_store_is_reported_and_left_alone() {
    let (_tmp, store) = store_with_projects();
    for netid in [1u64 << 24, 5] {
        set_netid_on_disk(&store, "a", netid);
        let before = state(&store);
        let message = format!("VNID {netid} is neither 0 nor in [10, 16777215]");
        for args in [
            &["get", "netnamespaces"][..],
            &["pod-network", "join-projects", "--to=b", "a"],
            &["pod-network", "isolate-projects", "a"],
        ] {
            let err = fails(&store, args);
            assert!(err.contains("/oxsdn/netnamespaces/a") && err.contains(&message), "{args:?}: {err}");
            assert_eq!(state(&store), before, "{args:?} changed the store");
        }
    }
}

#[test]
fn corrupted_store_files_are_reported_and_never_reset() {
    let (_tmp, store) = store_with_projects();
    let good = state(&store);
    let flipped = {
        let mut s = good.clone();
        let last = s.len() - 2;
        s[last] ^= 0x20;
        s
    };
    let corruptions: [(&str, Vec<u8>, &str); 4] = [
        ("a flipped byte", flipped, "checksum mismatch"),
        ("a truncated file", good[..good.len() / 2].to_vec(), "is corrupted"),
        ("an empty file", Vec::new(), "is corrupted"),
        ("another format", b"{\"revision\": 1, \"kvs\": {}}".to_vec(), "is corrupted"),
    ];
    for (what, bytes, message) in corruptions {
        std::fs::write(store.join("state"), &bytes).unwrap();
        for args in [
            &["get", "netnamespaces"][..],
            &["create", "project", "c"],
            &["pod-network", "isolate-projects", "a"],
            &["init"],
        ] {
            let err = fails(&store, args);
            assert!(
                err.contains(message) && err.contains(&store.join("state").display().to_string()),
                "{what}, {args:?}: {err}"
            );
            assert_eq!(state(&store), bytes, "{what}: {args:?} changed the store");
        }
    }
    // Put back, the store works again.
    std::fs::write(store.join("state"), &good).unwrap();
    succeeds(&store, &["get", "netnamespaces"]);
}
