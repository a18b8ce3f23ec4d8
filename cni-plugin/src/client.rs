//! The plugin side of the agent protocol: one request per connection over the agent's Unix
//! socket (write the JSON request, shut the write side down, read the JSON response to EOF).
//!
//! Synchronous on purpose (std + a non-blocking connect), so it can be called from any thread,
//! including a test running inside a tokio runtime.
//!
//! Transport failures are `Err` with code 11 (try again later: the agent is absent, refusing,
//! too slow, or hung up without answering) or 100 (the agent answered something that is not a
//! [`Response`], or a message over [`MAX_MESSAGE_BYTES`]); [`call_detailed`] also says whether
//! no agent was running at all. The agent's own errors come back as `Ok(Response::Error(_))`,
//! untouched.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};

use crate::error::{code, CniError};
use crate::protocol::{Request, Response, MAX_MESSAGE_BYTES};

/// How long to keep trying to connect (the agent's listen backlog may be full).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the agent has to answer (an ADD may wait for the pod's project VNID).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a caller waiting for an agent to listen tries again.
const LISTENER_POLL: Duration = Duration::from_millis(25);

/// Send `req` to the agent listening on `socket` and return its response.
pub fn call(socket: &Path, req: &Request) -> Result<Response, CniError> {
    call_with_timeouts(socket, req, CONNECT_TIMEOUT, RESPONSE_TIMEOUT)
}

/// [`call`] with explicit timeouts.
pub fn call_with_timeouts(
    socket: &Path,
    req: &Request,
    connect_timeout: Duration,
    response_timeout: Duration,
) -> Result<Response, CniError> {
    exchange(socket, req, connect_timeout, None, response_timeout).map_err(|f| f.error)
}

/// [`call`], waiting up to `wait` for an agent to listen on `socket` (one restarting).
pub fn call_when_listening(socket: &Path, req: &Request, wait: Duration) -> Result<Response, CniError> {
    exchange(socket, req, CONNECT_TIMEOUT, Some(wait), RESPONSE_TIMEOUT).map_err(|f| f.error)
}

/// Why a call has no answer.
#[derive(Debug)]
pub struct CallFailure {
    pub error: CniError,
    /// Nothing listens on the socket (no such file, or refused): no agent is running, so
    /// none has seen the request.
    pub no_agent: bool,
}

/// [`call`], telling apart the failures where no agent runs.
pub fn call_detailed(socket: &Path, req: &Request) -> Result<Response, CallFailure> {
    exchange(socket, req, CONNECT_TIMEOUT, None, RESPONSE_TIMEOUT)
}

fn exchange(
    socket: &Path,
    req: &Request,
    connect_timeout: Duration,
    wait_for_listener: Option<Duration>,
    response_timeout: Duration,
) -> Result<Response, CallFailure> {
    let failed = |error| CallFailure { error, no_agent: false };
    let body = serde_json::to_vec(req).map_err(|e| {
        failed(
            CniError::new(code::INTERNAL, "cannot encode the request to the oxsdn node agent")
                .with_details(e.to_string()),
        )
    })?;
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(failed(CniError::new(
            code::INTERNAL,
            format!("request to the oxsdn node agent is larger than {MAX_MESSAGE_BYTES} bytes"),
        )));
    }
    let mut stream = connect(socket, connect_timeout, wait_for_listener)
        .map_err(|e| CallFailure { no_agent: is_no_listener(&e), error: agent_unavailable(socket, &e) })?;
    let deadline = Instant::now() + response_timeout;

    let sent = (|| {
        stream.set_write_timeout(Some(response_timeout.max(Duration::from_millis(1))))?;
        stream.write_all(&body)?;
        stream.shutdown(Shutdown::Write)
    })();
    if let Err(e) = sent {
        return Err(failed(agent_unavailable(socket, &e)));
    }

    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(failed(agent_timeout(socket, response_timeout)));
        }
        if let Err(e) = stream.set_read_timeout(Some(left)) {
            return Err(failed(agent_unavailable(socket, &e)));
        }
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                if buf.len() + n > MAX_MESSAGE_BYTES {
                    return Err(failed(CniError::new(
                        code::INTERNAL,
                        format!("response of the oxsdn node agent is larger than {MAX_MESSAGE_BYTES} bytes"),
                    )));
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(failed(agent_timeout(socket, response_timeout)));
            }
            Err(e) => return Err(failed(agent_unavailable(socket, &e))),
        }
    }
    if buf.iter().all(u8::is_ascii_whitespace) {
        return Err(failed(CniError::new(
            code::TRY_AGAIN_LATER,
            format!("oxsdn node agent closed the connection on {} without answering", socket.display()),
        )));
    }
    serde_json::from_slice::<Response>(&buf).map_err(|e| {
        failed(
            CniError::new(
                code::INTERNAL,
                format!("invalid response from the oxsdn node agent on {}", socket.display()),
            )
            .with_details(e.to_string()),
        )
    })
}

/// Code 11 naming the socket: the agent is not there (yet), or the connection broke.
pub fn agent_unavailable(socket: &Path, cause: &io::Error) -> CniError {
    CniError::new(
        code::TRY_AGAIN_LATER,
        format!("oxsdn node agent is not running or not ready (socket {})", socket.display()),
    )
    .with_details(cause.to_string())
}

fn agent_timeout(socket: &Path, timeout: Duration) -> CniError {
    CniError::new(
        code::TRY_AGAIN_LATER,
        format!("oxsdn node agent is not running or not ready (socket {})", socket.display()),
    )
    .with_details(format!("no response within {} s", timeout.as_secs_f32()))
}

/// Whether a connect error means nothing listens there: no socket file, or no one
/// accepting on it (an agent that died leaves its socket file).
fn is_no_listener(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ECONNREFUSED))
}

/// Connect within `timeout`. A Unix socket whose listen backlog is full answers a non-blocking
/// connect with EAGAIN (it never returns EINPROGRESS), so retry until the deadline. Given
/// `wait_for_listener`, also retry that long while nothing listens (an agent restarting).
fn connect(path: &Path, timeout: Duration, wait_for_listener: Option<Duration>) -> io::Result<UnixStream> {
    let addr = UnixAddr::new(path).map_err(io::Error::from)?;
    let start = Instant::now();
    let deadline = start + timeout;
    let listener_deadline = start + wait_for_listener.unwrap_or_default();
    loop {
        let fd: OwnedFd = socket::socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        match socket::connect(fd.as_raw_fd(), &addr) {
            Ok(()) => return into_blocking(fd),
            Err(Errno::EINTR) => continue,
            Err(e @ (Errno::ENOENT | Errno::ECONNREFUSED)) => {
                if Instant::now() >= listener_deadline {
                    return Err(e.into());
                }
                std::thread::sleep(LISTENER_POLL);
            }
            Err(Errno::EAGAIN) => {
                if Instant::now() >= deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection not accepted in time (backlog full)",
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(Errno::EINPROGRESS) => {
                wait_writable(&fd, deadline)?;
                let err = socket::getsockopt(&fd, socket::sockopt::SocketError)?;
                if err != 0 {
                    return Err(io::Error::from_raw_os_error(err));
                }
                return into_blocking(fd);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn into_blocking(fd: OwnedFd) -> io::Result<UnixStream> {
    let s = UnixStream::from(fd);
    s.set_nonblocking(false)?;
    Ok(s)
}

fn wait_writable(fd: &OwnedFd, deadline: Instant) -> io::Result<()> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"));
        }
        let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n > 0 {
            return Ok(());
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::protocol::{Attachment, Command, PodNetwork};
    use std::os::unix::net::UnixListener;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A socket path in a directory of its own, which goes when this does.
    pub(crate) struct TempSocket(PathBuf);

    impl std::ops::Deref for TempSocket {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl AsRef<Path> for TempSocket {
        fn as_ref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempSocket {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    pub(crate) fn temp_socket(tag: &str) -> TempSocket {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "oxsdn-cni-test-{}-{}-{}",
            std::process::id(),
            tag,
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempSocket(dir.join("s.sock"))
    }

    /// A one-shot fake agent: accept one connection, read the request to EOF, answer `reply`.
    fn fake_agent(reply: Vec<u8>) -> (TempSocket, std::thread::JoinHandle<Vec<u8>>) {
        let path = temp_socket("client");
        let l = UnixListener::bind(&path).unwrap();
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = Vec::new();
            s.read_to_end(&mut req).unwrap();
            let _ = s.write_all(&reply);
            req
        });
        (path, h)
    }

    fn del_req() -> Request {
        Request {
            attachment: Some(Attachment { container_id: "c1".into(), ifname: "eth0".into() }),
            ..Request::of(Command::Del)
        }
    }

    #[test]
    fn round_trip() {
        let pod = PodNetwork {
            ip: "10.128.0.5".parse().unwrap(),
            prefix_len: 23,
            gateway: "10.128.0.1".parse().unwrap(),
            mac: "0a:58:0a:80:00:05".into(),
            mtu: 1450,
            cluster_network: "10.128.0.0/14".into(),
            project: "p".into(),
            vnid: 7,
        };
        let (path, h) = fake_agent(serde_json::to_vec(&Response::Pod(pod.clone())).unwrap());
        let r = call(&path, &del_req()).unwrap();
        assert_eq!(r, Response::Pod(pod));
        let sent: Request = serde_json::from_slice(&h.join().unwrap()).unwrap();
        assert_eq!(sent, del_req());
    }

    #[test]
    fn agent_errors_pass_through() {
        let e = CniError::new(code::NO_FREE_ADDRESS, "subnet full").with_details("10.128.0.0/23");
        let (path, h) = fake_agent(serde_json::to_vec(&Response::Error(e.clone())).unwrap());
        assert_eq!(call(&path, &del_req()).unwrap(), Response::Error(e));
        h.join().unwrap();
    }

    #[test]
    fn missing_socket_is_code_11_naming_the_path() {
        let path = temp_socket("missing");
        let e = call(&path, &del_req()).unwrap_err();
        assert_eq!(e.code, code::TRY_AGAIN_LATER);
        assert!(e.msg.contains("not running or not ready"), "{e}");
        assert!(e.msg.contains(path.to_str().unwrap()), "{e}");
    }

    #[test]
    fn refused_is_code_11() {
        // A socket file nobody listens on any more.
        let path = temp_socket("refused");
        drop(UnixListener::bind(&path).unwrap());
        assert_eq!(call(&path, &del_req()).unwrap_err().code, code::TRY_AGAIN_LATER);
    }

    #[test]
    fn silent_agent_times_out_with_code_11() {
        let path = temp_socket("slow");
        let l = UnixListener::bind(&path).unwrap();
        let h = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            std::thread::sleep(Duration::from_millis(600));
            drop(s);
        });
        let t = Instant::now();
        let e = call_with_timeouts(&path, &del_req(), CONNECT_TIMEOUT, Duration::from_millis(200)).unwrap_err();
        assert_eq!(e.code, code::TRY_AGAIN_LATER);
        assert!(t.elapsed() < Duration::from_millis(550));
        h.join().unwrap();
    }

    #[test]
    fn hang_up_without_answer_is_code_11() {
        let (path, h) = fake_agent(vec![]);
        assert_eq!(call(&path, &del_req()).unwrap_err().code, code::TRY_AGAIN_LATER);
        h.join().unwrap();
    }

    #[test]
    fn garbage_answer_is_internal() {
        let (path, h) = fake_agent(b"{\"what\":1}".to_vec());
        assert_eq!(call(&path, &del_req()).unwrap_err().code, code::INTERNAL);
        h.join().unwrap();
    }

    #[test]
    fn oversized_answer_is_internal() {
        let (path, h) = fake_agent(vec![b' '; MAX_MESSAGE_BYTES + 1]);
        assert_eq!(call(&path, &del_req()).unwrap_err().code, code::INTERNAL);
        h.join().unwrap();
    }

    #[test]
    fn oversized_request_is_refused_before_connecting() {
        let mut r = del_req();
        r.command = Command::Gc;
        r.valid_attachments =
            (0..40_000).map(|i| Attachment { container_id: format!("{i:030}"), ifname: "eth0".into() }).collect();
        let e = call(&temp_socket("big"), &r).unwrap_err();
        assert_eq!(e.code, code::INTERNAL);
    }
}
