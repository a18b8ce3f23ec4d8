//! Invoking the CNI plugin binary the way a runtime does: environment variables, the
//! network config on stdin, the result or error JSON on stdout.

use std::{io::Write, path::Path, process::Stdio};

use anyhow::{bail, Result};
use serde_json::Value;

use crate::{bins, netns::Netns};

#[derive(Clone, Debug)]
pub struct CniCall {
    /// Environment variables; `None` values are left unset.
    pub env: Vec<(String, Option<String>)>,
    pub stdin: Vec<u8>,
}

#[derive(Clone, Debug)]
pub struct CniOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CniCall {
    pub fn new(command: &str, config: &Value) -> CniCall {
        CniCall {
            env: vec![
                ("CNI_COMMAND".into(), Some(command.into())),
                ("CNI_PATH".into(), Some(bins::dir().display().to_string())),
            ],
            stdin: serde_json::to_vec(config).expect("config JSON"),
        }
    }

    pub fn add(config: &Value, container_id: &str, netns: &Path, project: &str, pod: &str) -> CniCall {
        CniCall::new("ADD", config)
            .var("CNI_CONTAINERID", container_id)
            .var("CNI_NETNS", &netns.display().to_string())
            .var("CNI_IFNAME", "eth0")
            .var("CNI_ARGS", &format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={project};K8S_POD_NAME={pod}"))
    }

    pub fn del(config: &Value, container_id: &str, netns: Option<&Path>) -> CniCall {
        let call = CniCall::new("DEL", config).var("CNI_CONTAINERID", container_id).var("CNI_IFNAME", "eth0");
        match netns {
            Some(p) => call.var("CNI_NETNS", &p.display().to_string()),
            None => call,
        }
    }

    /// Sets (or replaces) an environment variable.
    pub fn var(mut self, key: &str, value: &str) -> CniCall {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), Some(value.into())));
        self
    }

    /// Leaves an environment variable unset.
    pub fn unset(mut self, key: &str) -> CniCall {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), None));
        self
    }

    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> CniCall {
        self.stdin = bytes.into();
        self
    }

    /// Runs the plugin in `node`'s network namespace.
    pub fn invoke(&self, node: &Netns) -> CniOutput {
        self.invoke_via(node, &[])
    }

    /// Runs the plugin through `wrapper` (a command and its arguments, such as
    /// `setpriv --reuid=…`, which then runs the plugin).
    pub fn invoke_via(&self, node: &Netns, wrapper: &[&str]) -> CniOutput {
        let plugin = bins::cni_plugin();
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = node.command(program);
                cmd.args(args).arg(&plugin);
                cmd
            }
            None => node.command(&plugin),
        };
        cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
        for (k, v) in &self.env {
            if let Some(v) = v {
                cmd.env(k, v);
            }
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning the CNI plugin");
        // The plugin may refuse to read everything (oversize input): ignore EPIPE.
        let _ = child.stdin.take().expect("stdin").write_all(&self.stdin);
        let out = child.wait_with_output().expect("waiting for the CNI plugin");
        CniOutput {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl CniOutput {
    /// The result JSON of a successful call (an empty stdout reads as `null`).
    pub fn success(&self) -> Result<Value> {
        if self.code != Some(0) {
            bail!("CNI call failed (exit {:?}): {}{}", self.code, self.stdout, self.stderr);
        }
        if self.stdout.trim().is_empty() {
            return Ok(Value::Null);
        }
        Ok(serde_json::from_str(&self.stdout)?)
    }

    /// The CNI error code of a failed call, after checking the error's JSON shape.
    pub fn error_code(&self) -> Result<u64> {
        if self.code == Some(0) {
            bail!("CNI call succeeded but an error was expected: {}", self.stdout);
        }
        let v: Value = serde_json::from_str(&self.stdout)
            .map_err(|e| anyhow::anyhow!("error output is not JSON ({e}): {:?}", self.stdout))?;
        let code = v["code"].as_u64();
        if code.is_none() || !v["msg"].is_string() || !v["cniVersion"].is_string() {
            bail!("error output lacks cniVersion/code/msg: {v}");
        }
        Ok(code.unwrap_or_default())
    }
}
