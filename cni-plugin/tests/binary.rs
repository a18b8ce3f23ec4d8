//! The `oxsdn` binary's process contract (stdout JSON, exit status), on inputs that fail or
//! finish before any network change.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

fn run(env: &[(&str, &str)], stdin: &[u8]) -> (i32, Value) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_oxsdn"));
    cmd.env_clear();
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let _ = child.stdin.take().unwrap().write_all(stdin);
    let out = child.wait_with_output().unwrap();
    let v = if out.stdout.is_empty() { Value::Null } else { serde_json::from_slice(&out.stdout).unwrap() };
    (out.status.code().unwrap(), v)
}

#[test]
fn version() {
    let (rc, v) = run(&[("CNI_COMMAND", "VERSION")], br#"{"cniVersion":"1.0.0"}"#);
    assert_eq!(rc, 0);
    assert_eq!(v["cniVersion"], "1.0.0");
    assert_eq!(v["supportedVersions"], serde_json::json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]));
}

#[test]
fn errors_are_json_on_stdout_with_exit_1() {
    let (rc, v) = run(&[], b"{}");
    assert_eq!((rc, v["code"].as_u64()), (1, Some(4)));
    let (rc, v) = run(&[("CNI_COMMAND", "ADD")], b"\xff not json");
    assert_eq!((rc, v["code"].as_u64()), (1, Some(6)));
    assert!(v["msg"].is_string() && v["cniVersion"].is_string());
    let big = vec![b' '; oxsdn_cni::protocol::MAX_MESSAGE_BYTES + 4096];
    let (rc, v) = run(&[("CNI_COMMAND", "ADD")], &big);
    assert_eq!((rc, v["code"].as_u64()), (1, Some(6)));
    let (rc, v) = run(&[("CNI_COMMAND", "ADD")], br#"{"cniVersion":"1.0.0","name":"n","type":"other"}"#);
    assert_eq!((rc, v["code"].as_u64()), (1, Some(7)));
}

#[test]
fn status_without_agent_is_50() {
    let conf =
        br#"{"cniVersion":"1.1.0","name":"oxsdn","type":"oxsdn","agentSocket":"/nonexistent/oxsdn-test/cni.sock"}"#;
    let (rc, v) = run(&[("CNI_COMMAND", "STATUS")], conf);
    assert_eq!((rc, v["code"].as_u64()), (1, Some(50)));
    assert!(v["msg"].as_str().unwrap().contains("/nonexistent/oxsdn-test/cni.sock"));
}
