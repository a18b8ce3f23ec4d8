//! The deletions the plugin records when no agent is there to answer a DEL, for the
//! next agent to apply before it serves (as Cilium's CNI delete queue): the CNI spec
//! asks DEL to succeed when what it would remove is gone, and a runtime keeps a pod
//! whose DEL fails (Terminating) until the agent is back.
//!
//! One file per attachment, named by a hash of it, in `delete-queue/` next to the agent's
//! socket (its 0700 runtime directory): root-only (the directory 0700, the files 0600,
//! checked before use), written atomically (a temporary file, fsync, rename), at most
//! [`MAX_ENTRIES`] of at most [`MAX_ENTRY_BYTES`] each.

use std::ffi::OsStr;
use std::fs::{DirBuilder, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{openat, renameat, OFlag};
use nix::sys::stat::Mode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::protocol::Attachment;

/// Entries a queue holds at most: more than a node's pods (kubelet's default is 110, a
/// /23 node subnet has 510 addresses).
pub const MAX_ENTRIES: usize = 1024;
/// Largest entry read back.
pub const MAX_ENTRY_BYTES: u64 = 4096;
const DIR_NAME: &str = "delete-queue";
const SUFFIX: &str = ".json";
const TEMP_PREFIX: &str = ".tmp-";

/// A DEL the plugin completed without the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deletion {
    pub attachment: Attachment,
    /// The ifindex of the host veth the plugin found (and deleted), if there was one. A
    /// pod recorded with another veth was added again since, and is not this one.
    pub host_veth_ifindex: Option<u32>,
}

impl Deletion {
    /// Whether this deletion is of the pod recorded with veth `ifindex`, whose veth is
    /// (`veth_present`) or is no longer on the node.
    pub fn applies_to(&self, ifindex: u32, veth_present: bool) -> bool {
        match self.host_veth_ifindex {
            Some(deleted) => deleted == ifindex,
            // The plugin found no veth: a recorded pod whose veth exists came after.
            None => !veth_present,
        }
    }
}

/// The queue of the agent listening on `socket`.
pub fn dir_for(socket: &Path) -> PathBuf {
    socket.parent().unwrap_or(Path::new("/")).join(DIR_NAME)
}

/// The file of `attachment`'s entry: the hex SHA-256 of `container_id/ifname`, so any
/// attachment gets a fixed-size name of hex digits only.
fn file_name(attachment: &Attachment) -> String {
    let digest = Sha256::digest(format!("{}/{}", attachment.container_id, attachment.ifname).as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}{SUFFIX}")
}

/// Creates `dir` (and its parent) root-only if absent, then opens it, refusing anything
/// but a directory owned by this user that no one else may enter (never following a
/// symbolic link).
fn open_dir(dir: &Path) -> io::Result<File> {
    let mut builder = DirBuilder::new();
    builder.mode(0o700).recursive(true);
    builder.create(dir)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)?;
    let meta = file.metadata()?;
    if !meta.is_dir() || meta.uid() != nix::unistd::geteuid().as_raw() || meta.mode() & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} is not a directory only its owner may use", dir.display()),
        ));
    }
    Ok(file)
}

/// Records `deletion` in the queue `dir`, replacing an earlier entry of the same
/// attachment; returns the entry's path.
pub fn record(dir: &Path, deletion: &Deletion) -> io::Result<PathBuf> {
    let dir_file = open_dir(dir)?;
    let name = file_name(&deletion.attachment);
    let entries = std::fs::read_dir(dir)?.filter(|e| e.as_ref().is_ok_and(|e| is_entry_name(&e.file_name()))).count();
    if entries >= MAX_ENTRIES && !dir.join(&name).exists() {
        return Err(io::Error::new(
            io::ErrorKind::StorageFull,
            format!("{} holds {MAX_ENTRIES} entries already", dir.display()),
        ));
    }
    let temp = format!("{TEMP_PREFIX}{}-{name}", std::process::id());
    let fd = openat(
        Some(dir_file.as_raw_fd()),
        temp.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::S_IRUSR | Mode::S_IWUSR,
    )?;
    // SAFETY: openat just returned this descriptor, which nothing else owns.
    let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let written = serde_json::to_vec(deletion)
        .map_err(io::Error::other)
        .and_then(|bytes| file.write_all(&bytes))
        .and_then(|()| file.sync_all())
        .and_then(|()| {
            Ok(renameat(Some(dir_file.as_raw_fd()), temp.as_str(), Some(dir_file.as_raw_fd()), name.as_str())?)
        });
    if let Err(e) = written {
        let _ =
            nix::unistd::unlinkat(Some(dir_file.as_raw_fd()), temp.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
        return Err(e);
    }
    dir_file.sync_all()?;
    Ok(dir.join(name))
}

fn is_entry_name(name: &OsStr) -> bool {
    name.to_str()
        .and_then(|n| n.strip_suffix(SUFFIX))
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// What a queue holds.
#[derive(Debug, Default)]
pub struct Pending {
    /// The valid entries, each with its path.
    pub entries: Vec<(PathBuf, Deletion)>,
    /// What was removed instead, and why.
    pub discarded: Vec<String>,
}

/// The entries of queue `dir` (none if it does not exist). What is not a valid entry (a
/// temporary file a plugin left when it died, anything unreadable, oversized or whose
/// name is not its attachment's) is removed.
pub fn pending(dir: &Path) -> io::Result<Pending> {
    let mut pending = Pending::default();
    if !dir.exists() {
        return Ok(pending);
    }
    open_dir(dir)?;
    for entry in std::fs::read_dir(dir)?.take(MAX_ENTRIES * 2) {
        let entry = entry?;
        let path = entry.path();
        match read_entry(&path, &entry.file_name()) {
            Ok(deletion) => pending.entries.push((path, deletion)),
            Err(why) => {
                pending.discarded.push(format!("{}: {why}", path.display()));
                remove(&path)?;
            }
        }
    }
    Ok(pending)
}

fn read_entry(path: &Path, name: &OsStr) -> Result<Deletion, String> {
    if !is_entry_name(name) {
        return Err("not an entry".into());
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| e.to_string())?;
    if !file.metadata().map_err(|e| e.to_string())?.is_file() {
        return Err("not a regular file".into());
    }
    let mut bytes = Vec::new();
    file.take(MAX_ENTRY_BYTES + 1).read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_ENTRY_BYTES {
        return Err(format!("larger than {MAX_ENTRY_BYTES} bytes"));
    }
    let deletion: Deletion = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    if name.to_str() != Some(file_name(&deletion.attachment).as_str()) {
        return Err("its name is not its attachment's".into());
    }
    Ok(deletion)
}

/// Removes an entry (applied, or discarded).
pub fn remove(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// On a tmpfs, as the agent's runtime directory (/run) usually is: fsync is free
    /// there, so a thousand entries take no time.
    fn temp_dir(tag: &str) -> PathBuf {
        let d = PathBuf::from(format!("/dev/shm/oxsdn-del-queue-test-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn deletion(id: &str, ifindex: Option<u32>) -> Deletion {
        Deletion {
            attachment: Attachment { container_id: id.into(), ifname: "eth0".into() },
            host_veth_ifindex: ifindex,
        }
    }

    #[test]
    fn record_then_read_back() {
        let base = temp_dir("rw");
        let dir = dir_for(&base.join("cni.sock"));
        let path = record(&dir, &deletion("abc", Some(7))).unwrap();
        // Root-only, created as needed, the name a hash.
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(std::fs::metadata(&base).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(is_entry_name(path.file_name().unwrap()));
        // A later DEL of the same attachment replaces it.
        record(&dir, &deletion("abc", None)).unwrap();
        record(&dir, &deletion("def", Some(9))).unwrap();
        let Pending { mut entries, discarded } = pending(&dir).unwrap();
        entries.sort_by(|a, b| a.1.attachment.container_id.cmp(&b.1.attachment.container_id));
        assert!(discarded.is_empty());
        assert_eq!(
            entries.iter().map(|e| e.1.clone()).collect::<Vec<_>>(),
            [deletion("abc", None), deletion("def", Some(9))]
        );
        remove(&entries[0].0).unwrap();
        assert_eq!(pending(&dir).unwrap().entries.len(), 1);
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn what_is_not_an_entry_is_discarded() {
        let base = temp_dir("junk");
        let dir = dir_for(&base.join("cni.sock"));
        record(&dir, &deletion("good", Some(1))).unwrap();
        std::fs::write(dir.join(".tmp-1-x.json"), b"{").unwrap();
        std::fs::write(dir.join("notes.txt"), b"x").unwrap();
        // Valid JSON under another attachment's name.
        let other = dir.join(file_name(&deletion("other", None).attachment));
        std::fs::write(&other, serde_json::to_vec(&deletion("good", Some(1))).unwrap()).unwrap();
        std::fs::write(dir.join(file_name(&deletion("big", None).attachment)), vec![b' '; 5000]).unwrap();
        let Pending { entries, discarded } = pending(&dir).unwrap();
        assert_eq!(entries.len(), 1, "{discarded:?}");
        assert_eq!(discarded.len(), 4, "{discarded:?}");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "the discarded files are removed");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_directory_others_may_use_is_refused() {
        let base = temp_dir("open");
        let dir = dir_for(&base.join("cni.sock"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(record(&dir, &deletion("x", None)).unwrap_err().kind(), io::ErrorKind::PermissionDenied);
        // Nor a symbolic link to a directory.
        std::fs::remove_dir(&dir).unwrap();
        let real = base.join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, &dir).unwrap();
        assert!(record(&dir, &deletion("x", None)).is_err());
        assert_eq!(std::fs::read_dir(&real).unwrap().count(), 0);
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn the_queue_is_bounded() {
        let base = temp_dir("full");
        let dir = dir_for(&base.join("cni.sock"));
        for i in 0..MAX_ENTRIES {
            record(&dir, &deletion(&format!("c{i}"), None)).unwrap();
        }
        assert_eq!(record(&dir, &deletion("one-more", None)).unwrap_err().kind(), io::ErrorKind::StorageFull);
        // Replacing an entry is still possible.
        record(&dir, &deletion("c0", Some(3))).unwrap();
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn which_pod_a_deletion_applies_to() {
        // The plugin deleted veth 7: the pod recorded with veth 7, not one re-added with 9.
        assert!(deletion("a", Some(7)).applies_to(7, false));
        assert!(deletion("a", Some(7)).applies_to(7, true));
        assert!(!deletion("a", Some(7)).applies_to(9, true));
        // It found no veth: a recorded pod whose veth is gone, not one whose veth exists.
        assert!(deletion("a", None).applies_to(7, false));
        assert!(!deletion("a", None).applies_to(7, true));
    }
}
