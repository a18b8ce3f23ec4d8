//! Network namespaces created by a test run, and ways to act inside them.

use std::{
    fs::File,
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Command, Output},
};

use anyhow::{bail, Context, Result};
use nix::sched::{setns, CloneFlags};

/// A named network namespace (`ip netns add`), deleted on drop unless borrowed.
pub struct Netns {
    pub name: String,
    owned: bool,
}

impl Netns {
    pub fn create(name: &str) -> Result<Netns> {
        run(Command::new("ip").args(["netns", "add", name]))?;
        let ns = Netns { name: name.to_string(), owned: true };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A handle on an existing namespace that dropping does not delete.
    pub fn borrowed(name: &str) -> Netns {
        Netns { name: name.to_string(), owned: false }
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs `f` on a fresh thread that has entered this namespace (the calling
    /// thread's namespace never changes). Sockets `f` creates belong to this namespace.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let file = File::open(self.path()).with_context(|| format!("opening netns {}", self.name))?;
        std::thread::spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread in netns panicked"))
    }

    /// A command that runs in this namespace (only the network namespace changes, so
    /// bpffs and the file system stay as they are, unlike `ip netns exec`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        let path = self.path();
        // SAFETY: setns is async-signal-safe; the file is opened before the fork.
        let file = File::open(&path).ok();
        unsafe {
            cmd.pre_exec(move || {
                let f = file.as_ref().ok_or_else(|| std::io::Error::other("netns missing"))?;
                setns(f, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
            });
        }
        cmd
    }

    /// `ip <args>` in this namespace.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run(self.command("ip").args(args))
    }

    /// The MAC address of `ifname` in this namespace.
    pub fn mac(&self, ifname: &str) -> Result<[u8; 6]> {
        let v: serde_json::Value = serde_json::from_str(&self.ip(&["-j", "link", "show", ifname])?)?;
        let text = v[0]["address"].as_str().unwrap_or_default().to_string();
        let bytes: Vec<u8> = text.split(':').filter_map(|b| u8::from_str_radix(b, 16).ok()).collect();
        bytes.try_into().map_err(|_| anyhow::anyhow!("no MAC for {ifname}: {text}"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if self.owned {
            let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
        }
    }
}

/// Runs a command; its stdout if it succeeded, else an error with its stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out: Output = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Deletes namespaces left by earlier runs whose process is gone (a run's namespaces
/// are named `oxt<pid>-…`).
pub fn sweep_dead_runs() {
    let Ok(list) = run(Command::new("ip").args(["netns", "list"])) else { return };
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(pid) = name.strip_prefix("oxt").and_then(|r| r.split('-').next()) else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if !PathBuf::from(format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}
