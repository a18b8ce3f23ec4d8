//! `oxsdnctl apply -f` / `delete -f` (the binary) on files and standard input: what it
//! prints, its exit status, and that an invalid or oversized manifest changes nothing.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use tempfile::TempDir;

/// Runs oxsdnctl on the store `store` with `stdin` as its standard input.
fn oxsdnctl(store: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_oxsdnctl"))
        .arg("--store")
        .arg(store)
        .args(args)
        .env_remove("OXSDN_ETCD_ENDPOINTS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running oxsdnctl");
    let mut input = child.stdin.take().unwrap();
    // oxsdnctl may stop reading (a refused oversized input): a broken pipe is fine.
    let _ = input.write_all(stdin);
    drop(input);
    child.wait_with_output().unwrap()
}

fn succeeds(store: &Path, args: &[&str], stdin: &[u8]) -> String {
    let out = oxsdnctl(store, args, stdin);
    assert!(out.status.success(), "oxsdnctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail, printing nothing on stdout; its stderr.
fn fails(store: &Path, args: &[&str], stdin: &[u8]) -> String {
    let out = oxsdnctl(store, args, stdin);
    assert_eq!(out.status.code(), Some(1), "oxsdnctl {args:?}: {}", String::from_utf8_lossy(&out.stdout));
    assert!(out.stdout.is_empty(), "oxsdnctl {args:?} printed {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stderr).unwrap()
}

fn store() -> (TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    succeeds(&store, &["init", "--network-plugin", "networkpolicy"], b"");
    succeeds(&store, &["create", "project", "x"], b"");
    (tmp, store)
}

fn state(store: &Path) -> Vec<u8> {
    std::fs::read(store.join("state")).unwrap()
}

const POLICIES: &str = r#"{"apiVersion": "v1", "kind": "List", "items": [
  {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "deny"}, "spec": {}},
  {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "dns"},
   "spec": {"podSelector": {}, "policyTypes": ["Egress"],
            "egress": [{"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 1000, "endPort": 2000}]}]}}
]}"#;

#[test]
fn json_on_standard_input() {
    let (_tmp, store) = store();
    let out = succeeds(&store, &["apply", "-f", "-", "-n", "x"], POLICIES.as_bytes());
    assert_eq!(out, "networkpolicy.networking.k8s.io/deny created\nnetworkpolicy.networking.k8s.io/dns created\n");
    assert_eq!(
        succeeds(&store, &["get", "netpol", "-n", "x"], b""),
        "NAME      POD-SELECTOR\ndeny      <none>\ndns       <none>\n"
    );
    let out = succeeds(&store, &["delete", "-f", "-", "-n", "x"], POLICIES.as_bytes());
    assert_eq!(
        out,
        "networkpolicy.networking.k8s.io \"deny\" deleted\nnetworkpolicy.networking.k8s.io \"dns\" deleted\n"
    );
}

#[test]
fn invalid_manifests_change_nothing_and_say_where() {
    let (_tmp, store) = store();
    let before = state(&store);
    let bad = POLICIES.replace("\"endPort\": 2000", "\"endPort\": 999");
    let err = fails(&store, &["apply", "-f", "-", "-n", "x"], bad.as_bytes());
    assert_eq!(
        err,
        "oxsdnctl: <stdin>: nothing was applied: document 1, items[1]: The NetworkPolicy \"dns\" is invalid: \
         spec.egress[0].ports[1].endPort: Invalid value: 999: must be greater than or equal to `port`\n"
    );
    let typo = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {podSelecter: {}}\n";
    let err = fails(&store, &["apply", "-f", "-", "-n", "x"], typo.as_bytes());
    assert!(err.ends_with("strict decoding error: unknown field \"spec.podSelecter\"\n"), "{err}");
    assert_eq!(state(&store), before);
}

#[test]
fn oversized_and_hostile_manifests_are_refused_quickly() {
    let (tmp, store) = store();
    let before = state(&store);
    // 16 MiB and one byte, of valid YAML: refused for its size, after reading no more.
    let big = tmp.path().join("big.yaml");
    let mut file = std::fs::File::create(&big).unwrap();
    let line = format!("# {}\n", "x".repeat(1021));
    for _ in 0..16 * 1024 {
        file.write_all(line.as_bytes()).unwrap();
    }
    file.write_all(b"\n").unwrap();
    drop(file);
    let started = Instant::now();
    let err = fails(&store, &["apply", "-f", big.to_str().unwrap()], b"");
    assert!(err.contains("file: 16777217 bytes is more than the 16777216 a manifest may have"), "{err}");
    let err = fails(&store, &["apply", "-f", "-"], &std::fs::read(&big).unwrap());
    assert!(err.contains("bytes is more than the 16777216 a manifest may have"), "{err}");
    // Exponential alias expansion.
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for (prev, next) in ["a", "b", "c", "d", "e", "f", "g", "h"].iter().zip(["b", "c", "d", "e", "f", "g", "h", "i"]) {
        let refs = vec![format!("*{prev}"); 10].join(", ");
        bomb.push_str(&format!("{next}: &{next} [{refs}]\n"));
    }
    let err = fails(&store, &["apply", "-f", "-"], bomb.as_bytes());
    assert!(err.contains("repetition limit exceeded"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
    assert_eq!(state(&store), before);
}

/// OpenShift's own EgressNetworkPolicy manifest, unchanged.
const EGRESS_POLICY: &str = "apiVersion: network.openshift.io/v1
kind: EgressNetworkPolicy
metadata:
  name: default
spec:
  egress:
  - type: Allow
    to:
      cidrSelector: 1.2.3.0/24
  - type: Allow
    to:
      dnsName: www.example.com
  - type: Deny
    to:
      cidrSelector: 0.0.0.0/0
";

#[test]
fn egress_network_policies_apply_list_and_delete() {
    let (_tmp, store) = store();
    let out = succeeds(&store, &["apply", "-f", "-", "-n", "x"], EGRESS_POLICY.as_bytes());
    assert_eq!(out, "egressnetworkpolicy.network.openshift.io/default created\n");
    assert_eq!(
        succeeds(&store, &["get", "egressnetworkpolicies"], b""),
        "NAMESPACE   NAME      RULES\nx           default   Allow:1.2.3.0/24,Allow:www.example.com,Deny:0.0.0.0/0\n"
    );
    let yaml = succeeds(&store, &["get", "egressnetworkpolicies", "-o", "yaml"], b"");
    assert!(yaml.contains("kind: EgressNetworkPolicy") && yaml.contains("dnsName: www.example.com"), "{yaml}");
    let out = succeeds(&store, &["delete", "egressnetworkpolicy", "default", "-n", "x"], b"");
    assert_eq!(out, "egressnetworkpolicy.network.openshift.io \"default\" deleted\n");
}

#[test]
fn bad_egress_network_policies_change_nothing() {
    let (_tmp, store) = store();
    let before = state(&store);
    let many = format!("{EGRESS_POLICY}{}", "  - type: Deny\n    to:\n      cidrSelector: 10.0.0.0/8\n".repeat(998));
    let err = fails(&store, &["apply", "-f", "-", "-n", "x"], many.as_bytes());
    assert!(err.contains("spec.egress: Too many: 1001: must have at most 1000 items"), "{err}");
    let bad_cidr = EGRESS_POLICY.replace("1.2.3.0/24", "1.2.3.0/33");
    let err = fails(&store, &["apply", "-f", "-", "-n", "x"], bad_cidr.as_bytes());
    assert!(err.contains("spec.egress[0].to.cidrSelector: Invalid value: \"1.2.3.0/33\""), "{err}");
    let err = fails(&store, &["apply", "-f", "-", "-n", "nope"], EGRESS_POLICY.as_bytes());
    assert!(err.contains("project \"nope\" not found"), "{err}");
    let err = fails(&store, &["apply", "-f", "-", "-n", "default"], EGRESS_POLICY.as_bytes());
    assert!(err.contains("not allowed in the default or a global project"), "{err}");
    assert_eq!(state(&store), before);
    // 1,000 rules are taken.
    let most = format!("{EGRESS_POLICY}{}", "  - type: Deny\n    to:\n      cidrSelector: 10.0.0.0/8\n".repeat(997));
    succeeds(&store, &["apply", "-f", "-", "-n", "x"], most.as_bytes());
}
