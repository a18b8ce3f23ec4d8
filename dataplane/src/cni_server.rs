//! The agent's CNI endpoint: a Unix socket only root may use (mode 0600 in a 0700
//! directory, and the peer's uid checked), one JSON request per connection.
//!
//! Bounded for bad callers: one thread reads every connection (tokio, current-thread),
//! each caller has `REQUEST_TIMEOUT` to send its whole request, at most
//! `MAX_CONNECTIONS` are open (at the limit the oldest still sending is closed to make
//! room, so a real request always gets in), requests hold at most `MAX_BUFFERED_BYTES`
//! between them, and at most `MAX_HANDLERS` run at once, each on a thread of its own
//! while it runs (the agent serialises what must be serial). Every refusal is answered.

use std::{
    collections::BTreeMap,
    io::Write,
    os::unix::{fs::PermissionsExt, net::UnixListener},
    path::Path,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use anyhow::{Context, Result};
use oxsdn_cni::{
    code,
    protocol::{Request, Response, MAX_MESSAGE_BYTES},
    CniError,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UnixStream,
    sync::{oneshot, OwnedSemaphorePermit, Semaphore},
};

use crate::agent::Agent;

/// Connections open at once (sending, waiting for a handler, or being answered).
pub const MAX_CONNECTIONS: usize = 1024;
/// How long a caller has, from connecting, to send its whole request (the plugin sends
/// it at once).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long writing an answer may take.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests handled at once.
pub const MAX_HANDLERS: usize = 16;
/// Request bytes held at once across connections, from the first byte read until the
/// request is answered.
pub const MAX_BUFFERED_BYTES: usize = 32 << 20;
/// Pause after accept fails for lack of file descriptors, once the oldest sending
/// connection has been closed.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

pub fn bind(path: &Path) -> Result<UnixListener> {
    raise_open_files_limit();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    let listener = UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// `MAX_CONNECTIONS` needs that many descriptors on top of the maps, programs and
/// netlink sockets: the soft limit goes up to the hard one (as Go runtimes do).
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!("raising the open files limit from {soft} to {hard}: {e}");
            }
        }
    }
}

/// Serves requests until the listener fails, once the deletions recorded while the
/// socket was not there are applied (callers meanwhile wait in the listen queue).
pub fn serve(listener: UnixListener, agent: Arc<Agent>) {
    if let Err(e) = agent.apply_queued_deletions() {
        tracing::error!("applying the delete queue: {e:#}");
    }
    let served = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("starting the CNI server's runtime")
        .and_then(|rt| rt.block_on(accept_loop(listener, agent)));
    if let Err(e) = served {
        tracing::error!("CNI server stopped: {e:#}");
    }
}

/// What the server holds for its callers, and the limits on it.
struct Limits {
    connections: Mutex<Connections>,
    buffered: AtomicUsize,
    handlers: Arc<Semaphore>,
}

#[derive(Default)]
struct Connections {
    open: usize,
    next_id: u64,
    /// Connections still sending their request, oldest first, each with the means to
    /// close it.
    sending: BTreeMap<u64, oneshot::Sender<()>>,
}

impl Limits {
    /// Registers a new connection. At the limit the oldest one still sending is told to
    /// close; `None` when every open connection has sent its request already (then the
    /// new one is turned away).
    fn admit(self: &Arc<Self>) -> Option<(Admitted, oneshot::Receiver<()>)> {
        let mut c = self.connections.lock().unwrap();
        if c.open >= MAX_CONNECTIONS && !c.evict_oldest() {
            return None;
        }
        c.open += 1;
        c.next_id += 1;
        let id = c.next_id;
        let (tx, rx) = oneshot::channel();
        c.sending.insert(id, tx);
        Some((Admitted { limits: self.clone(), id }, rx))
    }

    fn evict_oldest(&self) -> bool {
        self.connections.lock().unwrap().evict_oldest()
    }
}

impl Connections {
    fn evict_oldest(&mut self) -> bool {
        match self.sending.pop_first() {
            Some((_, close)) => {
                let _ = close.send(());
                true
            }
            None => false,
        }
    }
}

/// An open connection, counted until dropped.
struct Admitted {
    limits: Arc<Limits>,
    id: u64,
}

impl Admitted {
    /// Its request is in: it can no longer be closed to make room.
    fn received(&self) {
        self.limits.connections.lock().unwrap().sending.remove(&self.id);
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut c = self.limits.connections.lock().unwrap();
        c.sending.remove(&self.id);
        c.open -= 1;
    }
}

/// Request bytes counted against `MAX_BUFFERED_BYTES` until dropped.
struct Buffered {
    limits: Arc<Limits>,
    bytes: usize,
}

impl Buffered {
    fn take(&mut self, n: usize) -> Result<(), CniError> {
        let before = self.limits.buffered.fetch_add(n, Ordering::SeqCst);
        self.bytes += n;
        if before + n > MAX_BUFFERED_BYTES {
            return Err(busy("too many request bytes held"));
        }
        Ok(())
    }
}

impl Drop for Buffered {
    fn drop(&mut self) {
        self.limits.buffered.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

async fn accept_loop(listener: UnixListener, agent: Arc<Agent>) -> Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::UnixListener::from_std(listener)?;
    let limits = Arc::new(Limits {
        connections: Mutex::new(Connections::default()),
        buffered: AtomicUsize::new(0),
        handlers: Arc::new(Semaphore::new(MAX_HANDLERS)),
    });
    loop {
        match listener.accept().await {
            Ok((stream, _)) => match limits.admit() {
                Some((admitted, evicted)) => {
                    tokio::spawn(connection(stream, admitted, evicted, limits.clone(), agent.clone()));
                }
                None => {
                    tokio::spawn(answer(stream, Response::Error(busy("every connection is taken"))));
                }
            },
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                tracing::warn!("accepting a CNI connection: {e}; closing the oldest one still sending");
                limits.evict_oldest();
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
            Err(e) => {
                tracing::warn!("accepting a CNI connection: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// One caller: check it is root, read its request within `REQUEST_TIMEOUT` (unless it
/// is closed to make room first), then handle it on a thread of its own once a handler
/// slot is free.
async fn connection(
    mut stream: UnixStream,
    admitted: Admitted,
    evicted: oneshot::Receiver<()>,
    limits: Arc<Limits>,
    agent: Arc<Agent>,
) {
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == 0 => {}
        Ok(cred) => {
            let denied = CniError::new(code::INTERNAL, format!("permission denied: uid {} is not root", cred.uid()));
            return answer(stream, Response::Error(denied)).await;
        }
        Err(e) => {
            let unknown = CniError::new(code::INTERNAL, format!("cannot identify the caller: {e}"));
            return answer(stream, Response::Error(unknown)).await;
        }
    }
    let mut buffered = Buffered { limits: limits.clone(), bytes: 0 };
    let request = tokio::select! {
        read = tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut stream, &mut buffered)) => {
            read.unwrap_or_else(|_| Err(CniError::new(
                code::IO_FAILURE,
                format!("no complete request within {} s", REQUEST_TIMEOUT.as_secs()),
            )))
        }
        _ = evicted => Err(busy("every connection is taken; the oldest one still sending is closed")),
    };
    admitted.received();
    let request = match request {
        Ok(request) => request,
        Err(e) => return answer(stream, Response::Error(e)).await,
    };
    let Ok(permit) = limits.handlers.clone().acquire_owned().await else { return };
    match stream.into_std() {
        Ok(stream) => {
            std::thread::spawn(move || handle(stream, request, &agent, permit, buffered, admitted));
        }
        Err(e) => tracing::warn!("CNI connection: {e}"),
    }
}

/// Runs a request and writes its answer; what it holds is released when it returns.
fn handle(
    mut stream: std::os::unix::net::UnixStream,
    request: Request,
    agent: &Agent,
    _handler: OwnedSemaphorePermit,
    _buffered: Buffered,
    _admitted: Admitted,
) {
    let (command, started) = (request.command, std::time::Instant::now());
    let response = agent.handle(request);
    crate::metrics::global().cni_request(command, &response, started.elapsed());
    let written = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_write_timeout(Some(WRITE_TIMEOUT)))
        .and_then(|()| stream.write_all(&encode(&response)));
    if let Err(e) = written {
        tracing::warn!("CNI connection: writing the answer: {e}");
    }
}

async fn answer(mut stream: UnixStream, response: Response) {
    if let Ok(Err(e)) = tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&encode(&response))).await {
        tracing::debug!("CNI connection: writing the answer: {e}");
    }
}

fn encode(response: &Response) -> Vec<u8> {
    serde_json::to_vec(response).expect("a Response always encodes")
}

fn busy(why: &str) -> CniError {
    CniError::new(code::TRY_AGAIN_LATER, format!("oxsdn node agent is busy: {why}"))
}

async fn read_request(stream: &mut UnixStream, buffered: &mut Buffered) -> Result<Request, CniError> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| CniError::new(code::IO_FAILURE, format!("reading the request: {e}")))?;
        if n == 0 {
            break;
        }
        if buf.len() + n > MAX_MESSAGE_BYTES {
            return Err(CniError::new(code::DECODE_FAILURE, format!("request larger than {MAX_MESSAGE_BYTES} bytes")));
        }
        buffered.take(n)?;
        buf.extend_from_slice(&chunk[..n]);
    }
    serde_json::from_slice(&buf).map_err(|e| CniError::new(code::DECODE_FAILURE, format!("malformed request: {e}")))
}
