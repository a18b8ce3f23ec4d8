//! Network namespaces: opening and checking `CNI_NETNS`, and running code (typically a
//! netlink session) inside one.
//!
//! The calling thread never changes namespace: [`in_netns`] runs its closure on a dedicated
//! scoped thread that `setns`es first, and any netlink socket must be opened on that thread
//! after the switch (a netlink socket belongs to the namespace it was created in).

use std::fs::OpenOptions;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::sched::{setns, CloneFlags};
use nix::sys::statfs::{fstatfs, NSFS_MAGIC};

use crate::error::{code, CniError};

/// `NS_GET_NSTYPE` = `_IO(0xb7, 0x3)` (linux/nsfs.h, Linux >= 4.11).
const NS_GET_NSTYPE: u32 = (0xb7 << 8) | 0x3;

/// Open `path` as a network namespace, without ever blocking on what it is.
///
/// Error codes (a deliberate choice): a path that does not exist, or exists but is not a
/// network namespace (a FIFO, a socket, a directory, a regular file, another kind of
/// namespace), is code 4 (invalid necessary environment variable: `CNI_NETNS` is unusable)
/// rather than 3 (unknown container), because code 3 tells the runtime that no cleanup
/// (DEL) is needed, which we do not want to assert for an ADD or CHECK that merely got a bad
/// path. Any other failure to open it (EACCES, EMFILE, ...) is code 5 (I/O failure).
pub fn open_netns(path: &str) -> Result<OwnedFd, CniError> {
    let not_a_netns = |what: &str| {
        CniError::new(code::INVALID_ENV, format!("{path} is not a network namespace")).with_details(what.to_string())
    };
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, forever.
    // (A socket cannot be opened at all: ENXIO.)
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(Path::new(path))
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => {
                CniError::new(code::INVALID_ENV, format!("network namespace {path} does not exist"))
                    .with_details(e.to_string())
            }
            Some(libc::ENXIO) => not_a_netns("it is a socket or a device without a driver"),
            _ => CniError::new(code::IO_FAILURE, format!("cannot open network namespace {path}"))
                .with_details(e.to_string()),
        })?;
    let fd = OwnedFd::from(file);
    let inspect_failed =
        |e: io::Error| CniError::new(code::IO_FAILURE, format!("cannot inspect {path}")).with_details(e.to_string());
    // A namespace file is a regular file on nsfs: refuse anything else before asking nsfs.
    let kind = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(|e| inspect_failed(e.into()))?.st_mode & libc::S_IFMT;
    if kind != libc::S_IFREG {
        return Err(not_a_netns(match kind {
            libc::S_IFIFO => "it is a FIFO",
            libc::S_IFSOCK => "it is a socket",
            libc::S_IFDIR => "it is a directory",
            libc::S_IFCHR | libc::S_IFBLK => "it is a device",
            _ => "it is not a regular file",
        }));
    }
    match is_netns(fd.as_fd()) {
        Ok(true) => Ok(fd),
        Ok(false) => Err(not_a_netns("it is not a network namespace file (nsfs, CLONE_NEWNET)")),
        Err(e) => Err(inspect_failed(e)),
    }
}

/// Whether `fd` is a network namespace: on nsfs, and (where the kernel can tell,
/// `NS_GET_NSTYPE`) of type `CLONE_NEWNET`.
pub fn is_netns(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let st = fstatfs(fd)?;
    if st.filesystem_type() != NSFS_MAGIC {
        return Ok(false);
    }
    // SAFETY: NS_GET_NSTYPE takes no argument and only returns a value.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE as _) };
    if r < 0 {
        let e = io::Error::last_os_error();
        // Kernels before 4.11 do not know the ioctl: nsfs is all we can check.
        return if e.raw_os_error() == Some(libc::ENOTTY) { Ok(true) } else { Err(e) };
    }
    Ok(r == libc::CLONE_NEWNET)
}

/// Whether `netns` is the network namespace of the calling thread (the node's, for the
/// plugin): same nsfs inode as `/proc/thread-self/ns/net`.
pub fn is_current_netns(netns: BorrowedFd<'_>) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let theirs = nix::sys::stat::fstat(netns.as_raw_fd())?;
    let ours = std::fs::metadata("/proc/thread-self/ns/net").or_else(|_| std::fs::metadata("/proc/self/ns/net"))?;
    Ok(theirs.st_dev as u64 == ours.dev() && theirs.st_ino as u64 == ours.ino())
}

/// Run `f` on a fresh thread that has joined the network namespace `netns`.
/// The caller's thread keeps its namespace. A panic in `f` becomes an error.
pub fn in_netns<T, F>(netns: BorrowedFd<'_>, f: F) -> io::Result<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    std::thread::scope(|s| {
        s.spawn(move || -> io::Result<T> {
            setns(netns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("thread running in the pod network namespace panicked")))
    })
}

/// Open a netlink (rtnetlink) session in the current thread's network namespace and run `f`
/// with its handle on a single-threaded tokio runtime. Must not be called from within an async
/// runtime (use the async helpers of [`crate::netlink`] with your own handle there).
pub fn with_netlink<T, F, Fut>(f: F) -> io::Result<T>
where
    F: FnOnce(rtnetlink::Handle) -> Fut,
    Fut: Future<Output = T>,
{
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?;
    rt.block_on(async move {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        let task = tokio::spawn(conn);
        let out = f(handle).await;
        task.abort();
        Ok(out)
    })
}

/// [`with_netlink`] inside the network namespace `netns` (see [`in_netns`]).
pub fn with_netlink_in<T, F, Fut>(netns: BorrowedFd<'_>, f: F) -> io::Result<T>
where
    T: Send,
    F: FnOnce(rtnetlink::Handle) -> Fut + Send,
    Fut: Future<Output = T>,
{
    in_netns(netns, move || with_netlink(f))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_netns_is_code_4() {
        let e = open_netns("/nonexistent/oxsdn/netns").unwrap_err();
        assert_eq!(e.code, code::INVALID_ENV);
        assert!(e.msg.contains("/nonexistent/oxsdn/netns"));
        let e = open_netns("/etc/hostname/x").unwrap_err();
        assert_eq!(e.code, code::INVALID_ENV);
    }

    #[test]
    fn a_regular_file_is_not_a_netns() {
        let p = std::env::temp_dir().join(format!("oxsdn-cni-not-netns-{}", std::process::id()));
        std::fs::write(&p, b"x").unwrap();
        let e = open_netns(p.to_str().unwrap()).unwrap_err();
        std::fs::remove_file(&p).unwrap();
        assert_eq!(e.code, code::INVALID_ENV);
        assert!(e.msg.contains("not a network namespace"));
    }

    #[test]
    fn what_is_not_a_netns_is_refused_at_once_with_code_4() {
        let dir = std::env::temp_dir().join(format!("oxsdn-cni-netns-kinds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let _ = std::fs::remove_file(&fifo);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR).unwrap();
        let socket = dir.join("socket");
        let _ = std::fs::remove_file(&socket);
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let file = dir.join("file");
        std::fs::write(&file, b"x").unwrap();
        let paths = [
            fifo.to_str().unwrap().to_string(),
            socket.to_str().unwrap().to_string(),
            dir.to_str().unwrap().to_string(),
            file.to_str().unwrap().to_string(),
            "/dev/null".to_string(),
            "/proc/self/ns/mnt".to_string(),
        ];
        for path in paths {
            // On a thread, so that an open that blocks fails the test instead of hanging it.
            let (tx, rx) = std::sync::mpsc::channel();
            let p = path.clone();
            std::thread::spawn(move || tx.send(open_netns(&p).map(drop)));
            let r = rx
                .recv_timeout(std::time::Duration::from_secs(2))
                .unwrap_or_else(|_| panic!("opening {path} as a netns blocked"));
            let e = r.unwrap_err();
            assert_eq!(e.code, code::INVALID_ENV, "{path}: {e}");
            assert!(e.msg.contains("is not a network namespace"), "{path}: {e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn in_netns_runs_on_a_thread_in_that_namespace() {
        // Joins this process's own netns (a no-op move): nothing is created.
        let fd = open_netns("/proc/self/ns/net").unwrap();
        match in_netns(fd.as_fd(), || std::thread::current().id()) {
            Ok(id) => assert_ne!(id, std::thread::current().id()),
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}"),
        }
        assert!(is_current_netns(fd.as_fd()).unwrap());
        let n = with_netlink(|_h| async { 7 }).unwrap();
        assert_eq!(n, 7);
    }

    #[test]
    fn own_namespaces_are_recognised() {
        // Read-only inspection of this process's own namespaces; nothing is created or entered.
        if let Ok(fd) = open_netns("/proc/self/ns/net") {
            assert!(is_netns(fd.as_fd()).unwrap());
        }
        if let Ok(f) = std::fs::File::open("/proc/self/ns/mnt") {
            let fd = OwnedFd::from(f);
            assert!(!is_netns(fd.as_fd()).unwrap_or(false));
        }
    }
}
