//! What the container-runtime tests (containerd's CRI, podman) share: a CNI plugin
//! directory, a busybox image built here from Debian's busybox-static (no registry), the
//! network namespace of a runtime's sandbox by its process, and the clean-up of what a
//! runtime leaves when a test fails (its processes, its mounts).
//!
//! Each runtime runs inside a test node's network namespace with every directory under
//! the run's own temporary directory, so nothing of the root namespace is used.

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use nix::{
    mount::{umount2, MntFlags},
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::{bins, netns::run};

/// Debian's reference CNI plugins (containernetworking-plugins): containerd's CRI runs
/// `loopback` for every pod.
pub const DEBIAN_CNI_DIR: &str = "/usr/lib/cni";
/// Debian's busybox-static: the one binary of the test image.
const BUSYBOX: &str = "/bin/busybox";
/// The applets the tests run in containers (as busybox symlinks in the image).
const APPLETS: [&str; 6] = ["sh", "sleep", "nc", "cat", "ip", "ping"];
/// The image's default command: a process that only waits (the pod sandbox's "pause").
pub const IMAGE_CMD: [&str; 2] = ["/bin/sleep", "2147483647"];
/// How long a runtime's processes get to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A CNI plugin directory for a runtime: the `oxsdn` binary under test and Debian's
/// `loopback`, linked into `dir`.
pub fn cni_bin_dir(dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir)?;
    symlink(bins::cni_plugin(), dir.join("oxsdn"))?;
    let loopback = Path::new(DEBIAN_CNI_DIR).join("loopback");
    if !loopback.exists() {
        bail!("{} missing: install containernetworking-plugins (scripts/setup.sh)", loopback.display());
    }
    symlink(loopback, dir.join("loopback"))?;
    Ok(dir.to_path_buf())
}

/// A root file system of busybox and the applets the tests use, in `dir`.
pub fn busybox_rootfs(dir: &Path) -> Result<PathBuf> {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin)?;
    fs::copy(BUSYBOX, bin.join("busybox")).with_context(|| format!("{BUSYBOX} missing: install busybox-static"))?;
    for applet in APPLETS {
        symlink("busybox", bin.join(applet))?;
    }
    // Runtimes bind-mount these over, so they must exist in the image.
    for d in ["etc", "proc", "sys", "dev", "tmp"] {
        fs::create_dir_all(dir.join(d))?;
    }
    Ok(dir.to_path_buf())
}

/// An OCI image archive (an image layout in a tar file, as `ctr images import` reads
/// it) holding one layer, the busybox root file system, named `name`, in `dir`.
pub fn busybox_image_archive(dir: &Path, name: &str) -> Result<PathBuf> {
    let rootfs = busybox_rootfs(&dir.join("rootfs"))?;
    let layout = dir.join("layout");
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    let write_blob = |bytes: &[u8]| -> Result<(String, usize)> {
        let digest = format!("{:x}", Sha256::digest(bytes));
        fs::write(blobs.join(&digest), bytes)?;
        Ok((format!("sha256:{digest}"), bytes.len()))
    };
    let layer_tar = dir.join("layer.tar");
    run(Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&layer_tar).arg("."))?;
    let (layer, layer_size) = write_blob(&fs::read(&layer_tar)?)?;
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Env": ["PATH=/bin"], "Cmd": IMAGE_CMD },
        "rootfs": { "type": "layers", "diff_ids": [layer] },
    });
    let (config, config_size) = write_blob(&serde_json::to_vec(&config)?)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_size },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": layer_size }],
    });
    let (manifest, manifest_size) = write_blob(&serde_json::to_vec(&manifest)?)?;
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest,
            "size": manifest_size,
            "annotations": { "io.containerd.image.name": name },
        }],
    });
    fs::write(layout.join("index.json"), serde_json::to_vec(&index)?)?;
    fs::write(layout.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let archive = dir.join("image.tar");
    run(Command::new("tar").arg("-C").arg(&layout).arg("-cf").arg(&archive).arg("."))?;
    Ok(archive)
}

/// Stops a daemon this test started: SIGTERM, then SIGKILL after a grace period.
pub fn stop_child(child: &mut Child) {
    let pid = Pid::from_raw(child.id() as i32);
    if matches!(child.try_wait(), Ok(None)) {
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = kill(pid, Signal::SIGKILL);
    }
    let _ = child.wait();
}

/// Kills the processes whose command line names `dir` (a runtime's shims and monitors,
/// which outlive it: they are started with this test's unique directory in their
/// arguments, which is how they are told apart from any other process).
pub fn kill_processes_naming(dir: &Path) {
    let needle = dir.as_os_str().as_encoded_bytes();
    let Ok(entries) = fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if pid == std::process::id() as i32 {
            continue;
        }
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline.windows(needle.len()).any(|w| w == needle) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Detaches every mount at or below `dir` (overlay root file systems, namespace
/// files), deepest first, so the directory can be removed.
pub fn unmount_below(dir: &Path) {
    let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in points {
        let _ = umount2(&point, MntFlags::MNT_DETACH);
    }
}

/// libcni's cache of attachments (containerd 1.6 and podman 4.3 offer no other place):
/// a DEL that succeeds removes its entry.
const CNI_CACHE: &str = "/var/lib/cni/results";

/// Removes the CNI cache entries of the containers `ids` (unique random ids a runtime
/// gave them), left when their DEL failed.
pub fn remove_cni_cache_entries(ids: &[String]) {
    let Ok(entries) = fs::read_dir(CNI_CACHE) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if ids.iter().any(|id| !id.is_empty() && name.contains(id.as_str())) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Removes the cgroup `name` (a path below each hierarchy's root, such as the cgroup
/// parent given to a runtime) from every mounted cgroup hierarchy, with the empty
/// cgroups below it.
pub fn remove_cgroup(name: &str) {
    let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    for line in mountinfo.lines() {
        // The file system type follows the " - " separator.
        let Some((mount, fstype)) = line.split_once(" - ").map(|(l, r)| (l.split(' ').nth(4), r.split(' ').next()))
        else {
            continue;
        };
        if let (Some(mount), Some("cgroup" | "cgroup2")) = (mount, fstype) {
            remove_cgroup_tree(&Path::new(mount).join(name.trim_start_matches('/')));
        }
    }
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&entry.path());
            }
        }
        let _ = fs::remove_dir(dir);
    }
}

/// Waits until `ready` returns true, or fails after `timeout` saying `what`.
pub fn wait_until(timeout: Duration, what: &str, mut ready: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !ready() {
        if Instant::now() > deadline {
            bail!("{what}: not after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
