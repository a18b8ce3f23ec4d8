//! podman (Debian's 4.3, runc) with its CNI network backend inside a test node's
//! network namespace: `podman run --network oxsdn` runs the node's conflist (the agent
//! writes it) through the `oxsdn` plugin. podman passes only `K8S_POD_NAME` (the
//! container's name) in `CNI_ARGS`, no `K8S_POD_NAMESPACE`.
//!
//! Its configuration (`CONTAINERS_CONF`, `CONTAINERS_STORAGE_CONF`) puts every path in
//! the test's directory: storage, run state, locks (file locks, not the machine-wide
//! shared-memory ones), the CNI plugin directory; the network config directory is the
//! agent's. Containers run from a busybox root file system built here (`--rootfs`),
//! so no image store or registry is involved.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::{
    netns::{run, Netns},
    runtime::{
        busybox_rootfs, cni_bin_dir, kill_processes_naming, remove_cgroup, remove_cni_cache_entries, unmount_below,
        IMAGE_CMD,
    },
    Node,
};

/// The network name in the agent's conflist.
pub const NETWORK: &str = "oxsdn";
/// Debian's runc.
const RUNC: &str = "/usr/sbin/runc";

/// A running podman container on the oxsdn network.
#[derive(Clone, Debug)]
pub struct PodmanContainer {
    pub name: String,
    pub ip: String,
}

pub struct Podman {
    pub dir: PathBuf,
    node_netns: Netns,
    /// The containers' cgroup parent, one per run.
    cgroup_parent: String,
    conf: PathBuf,
    storage_conf: PathBuf,
}

impl Podman {
    /// podman for `node`, with its state in `dir` and the agent's CNI config directory.
    pub fn new(node: &Node, dir: &Path) -> Result<Podman> {
        fs::create_dir_all(dir)?;
        let bin_dir = cni_bin_dir(&dir.join("cni-bin"))?;
        // runc keeps its state in /run/runc unless told otherwise, and podman passes no
        // runc options to the clean-up it runs when a container exits: a `runc` of the
        // test's own gives every call the test's state directory.
        let runc = dir.join("runtime/runc");
        fs::create_dir_all(dir.join("runtime"))?;
        fs::write(&runc, format!("#!/bin/sh\nexec {RUNC} --root {} \"$@\"\n", dir.join("runc").display()))?;
        fs::set_permissions(&runc, fs::Permissions::from_mode(0o755))?;
        let d = dir.display();
        let conf = dir.join("containers.conf");
        fs::write(
            &conf,
            format!(
                r#"[containers]
# podman's default limits (1048576) are above what a test process may raise its
# limits to; the test containers need a few files and processes.
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[network]
network_backend = "cni"
cni_plugin_dirs = ["{bin}"]
network_config_dir = "{net}"
default_network = "{NETWORK}"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "none"
lock_type = "file"
tmp_dir = "{d}/tmp"
static_dir = "{d}/storage/libpod"
volume_path = "{d}/storage/volumes"
runtime = "runc"
[engine.runtimes]
runc = ["{runc}"]
"#,
                bin = bin_dir.display(),
                net = node.conf_dir.display(),
                runc = runc.display(),
            ),
        )?;
        let storage_conf = dir.join("storage.conf");
        fs::write(
            &storage_conf,
            format!("[storage]\ndriver = \"overlay\"\ngraphroot = \"{d}/storage\"\nrunroot = \"{d}/run\"\n"),
        )?;
        Ok(Podman {
            dir: dir.to_path_buf(),
            node_netns: Netns::borrowed(&node.netns.name),
            cgroup_parent: format!("/{}-podman", node.prefix()),
            conf,
            storage_conf,
        })
    }

    /// `podman <args>` in the node's network namespace with this configuration.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.node_netns.command("podman");
        cmd.env("CONTAINERS_CONF", &self.conf)
            .env("CONTAINERS_STORAGE_CONF", &self.storage_conf)
            .current_dir(&self.dir)
            .args(args);
        cmd
    }

    /// `podman run -d --network oxsdn` of a busybox container named `name` (also its
    /// `K8S_POD_NAME`) running `command` (the image's wait when empty); then its
    /// address.
    pub fn run(&self, name: &str, command: &[&str]) -> Result<PodmanContainer> {
        self.run_with(name, &[], command)
    }

    /// `run` with more options for `podman run` (`-p HOST:CONTAINER`: a host port,
    /// which podman passes the CNI plugin as the `portMappings` capability).
    pub fn run_with(&self, name: &str, options: &[&str], command: &[&str]) -> Result<PodmanContainer> {
        let rootfs = busybox_rootfs(&self.dir.join("rootfs").join(name))?;
        let rootfs = rootfs.display().to_string();
        let command = if command.is_empty() { &IMAGE_CMD[..] } else { command };
        let args = [
            &[
                "run",
                "-d",
                "--name",
                name,
                "--network",
                NETWORK,
                "--cap-add",
                "NET_RAW",
                "--cgroup-parent",
                &self.cgroup_parent,
            ][..],
            options,
            // The image's root and command come last.
            &["--rootfs", &rootfs],
            command,
        ]
        .concat();
        run(&mut self.command(&args))?;
        self.inspect(name)
    }

    /// The container's oxsdn address (`podman inspect`).
    pub fn inspect(&self, name: &str) -> Result<PodmanContainer> {
        let out = run(&mut self.command(&["inspect", name]))?;
        let info: Value = serde_json::from_str(&out)?;
        let info = &info[0];
        let ip = info["NetworkSettings"]["Networks"][NETWORK]["IPAddress"].as_str().context("no oxsdn address")?;
        Ok(PodmanContainer { name: name.into(), ip: ip.into() })
    }

    /// `podman exec` of `command` in container `name`: its exit code and output.
    pub fn exec(&self, name: &str, command: &[&str]) -> Result<(i32, String)> {
        let out = self.command(&[&["exec", name][..], command].concat()).output()?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        Ok((out.status.code().unwrap_or(-1), text))
    }

    /// `podman rm -f`: stops the container and tears its network down (CNI DEL).
    pub fn remove(&self, name: &str) -> Result<String> {
        run(&mut self.command(&["rm", "-f", "-t", "0", name]))
    }
}

impl Drop for Podman {
    /// Removes every container (CNI DEL while the agent still runs), then ends what
    /// outlives podman (conmon and the containers, all started with this test's
    /// directory in their arguments), detaches the mounts below its directory, removes
    /// its containers' cgroups and what a failed DEL left in the CNI cache.
    fn drop(&mut self) {
        let ids = run(&mut self.command(&["ps", "-a", "-q", "--no-trunc"])).unwrap_or_default();
        let ids: Vec<String> = ids.lines().map(str::to_string).collect();
        let _ = self.command(&["rm", "-a", "-f", "-t", "0"]).output();
        kill_processes_naming(&self.dir);
        unmount_below(&self.dir);
        remove_cgroup(&self.cgroup_parent);
        remove_cni_cache_entries(&ids);
    }
}
