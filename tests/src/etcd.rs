//! A private single-member etcd server for tests: the real `/usr/bin/etcd`, on an address
//! of the caller's choosing (in a network namespace or not), with its own directory;
//! stopped, killed and restarted on demand, and stopped on drop. By default it serves
//! clients over TLS and requires a client certificate (`--client-cert-auth`) from its
//! own throwaway CA, which issues the clients' certificates; its peer and metrics ports
//! listen on loopback only.

use std::{
    fs::{self, File, OpenOptions},
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

use crate::{
    netns::Netns,
    pki::{ClientCert, Pki},
};

const ETCD: &str = "/usr/bin/etcd";
/// The member's name (in `--initial-cluster`).
const MEMBER: &str = "oxsdn-test";
/// How long a start may take until etcd reports itself healthy.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long `stop` waits after SIGTERM before it sends SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Lines of etcd's log quoted when it fails to start.
const LOG_TAIL_LINES: usize = 30;

/// How etcd serves its clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// TLS, with a client certificate required (`--client-cert-auth`): with auth
    /// enabled, the certificate's common name is the etcd user.
    Tls,
    /// Plain HTTP, open to whoever reaches it (only loopback endpoints are accepted by
    /// the binaries without `--etcd-insecure`).
    Plain,
}

/// Where etcd listens: clients on `ip:client`; its peer port (unused by a single
/// member) and metrics port (`/health`, `/metrics`, plain HTTP) on 127.0.0.1 of its
/// namespace only.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub ip: Ipv4Addr,
    pub client: u16,
    pub peer: u16,
    pub metrics: u16,
}

/// A running (or stopped) etcd. Its directory holds `etcd.log` (appended to across
/// restarts), `data`, etcd's data directory, which survives restarts, and `pki`, its CA
/// and certificates (with TLS).
pub struct EtcdServer {
    dir: PathBuf,
    ports: Ports,
    /// The CA that signed etcd's certificate and signs its clients'; `None` if plain.
    pki: Option<Pki>,
    /// etcd's own certificate (with TLS).
    server_cert: Option<ClientCert>,
    /// The network namespace etcd runs in, by name: only borrowed, never deleted here.
    netns: Option<String>,
    /// The process this started; the only one it ever signals.
    child: Option<Child>,
}

impl EtcdServer {
    /// Starts etcd in `data_dir` (created if missing; give each server its own) on
    /// `ports`, inside `netns` if given, and waits until it reports itself healthy. With
    /// TLS, a new CA in `<data_dir>/pki` signs etcd's certificate (for `ports.ip`).
    pub fn start(data_dir: &Path, ports: Ports, netns: Option<&Netns>, transport: Transport) -> Result<EtcdServer> {
        fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
        let (pki, server_cert) = match transport {
            Transport::Tls => {
                let pki = Pki::new(&data_dir.join("pki"), "oxsdn test etcd CA")?;
                let cert = pki.server("etcd-server", &[ports.ip.into(), Ipv4Addr::LOCALHOST.into()])?;
                (Some(pki), Some(cert))
            }
            Transport::Plain => (None, None),
        };
        let mut server = EtcdServer {
            dir: data_dir.to_path_buf(),
            ports,
            pki,
            server_cert,
            netns: netns.map(|ns| ns.name.clone()),
            child: None,
        };
        server.launch()?;
        Ok(server)
    }

    /// Starts etcd on 127.0.0.1 with ports that are free, trying other ports if another
    /// process takes the ones picked before etcd binds them.
    pub fn start_on_loopback(data_dir: &Path, transport: Transport) -> Result<EtcdServer> {
        let mut tries = 3;
        loop {
            let [client, peer, metrics] = free_loopback_ports()?;
            let ports = Ports { ip: Ipv4Addr::LOCALHOST, client, peer, metrics };
            match EtcdServer::start(data_dir, ports, None, transport) {
                // etcd binds its ports before it writes any data, so retrying in the
                // same directory is safe.
                Err(e) if tries > 1 && format!("{e:#}").contains("address already in use") => {
                    tries -= 1;
                }
                other => return other,
            }
        }
    }

    /// The client URL, for `--etcd-endpoints`.
    pub fn endpoint(&self) -> String {
        let scheme = if self.pki.is_some() { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.ports.ip, self.ports.client)
    }

    /// The client address.
    pub fn client_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ports.ip, self.ports.client))
    }

    /// The CA that signs this etcd's certificates (`None` if it serves plain HTTP).
    pub fn pki(&self) -> Option<&Pki> {
        self.pki.as_ref()
    }

    /// A new client certificate for etcd user `user`, from this etcd's CA.
    pub fn client_cert(&self, user: &str) -> Result<ClientCert> {
        self.pki.as_ref().context("etcd serves plain HTTP: it has no CA")?.client(user)
    }

    /// GET `path` from etcd's metrics port (from its namespace): the body. etcd serves
    /// `/health` and `/metrics` (Prometheus text) there.
    pub fn http_get(&self, path: &str) -> Result<String> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.ports.metrics));
        let body = match &self.netns {
            Some(name) => {
                let path = path.to_owned();
                Netns::borrowed(name).enter(move || http_get(addr, &path))?
            }
            None => http_get(addr, path),
        };
        body.with_context(|| format!("GET {path} from etcd at {addr}"))
    }

    /// SIGTERM, then SIGKILL if etcd has not exited within 5 s. Does nothing if it is
    /// not running.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // Our own child, not yet waited for: its PID cannot have been reused.
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGKILL, as a crash would. Does nothing if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops etcd if it is running and starts it again on the same data and ports.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.launch()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    fn launch(&mut self) -> Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .with_context(|| format!("opening {}", self.log_path().display()))?;
        let client_url = self.endpoint();
        let peer_url = format!("http://127.0.0.1:{}", self.ports.peer);
        let mut cmd = match &self.netns {
            Some(name) => Netns::borrowed(name).command(ETCD),
            None => Command::new(ETCD),
        };
        cmd.arg("--name")
            .arg(MEMBER)
            .arg("--data-dir")
            // Not `dir` itself: etcd warns about files it does not know there (the log).
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("{MEMBER}={peer_url}")])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            // A pod-network command over N projects is one transaction of N+1 writes;
            // etcd's default limit (128) would cap commands at 127 projects.
            .args(["--max-txn-ops", "65536"])
            .args(["--listen-metrics-urls", &format!("http://127.0.0.1:{}", self.ports.metrics)])
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("duplicating the log file")?)
            .stderr(log);
        if let Some(cert) = &self.server_cert {
            cmd.arg("--cert-file").arg(&cert.cert).arg("--key-file").arg(&cert.key);
            cmd.arg("--trusted-ca-file").arg(&cert.ca).arg("--client-cert-auth");
        }
        let child = cmd.spawn().with_context(|| format!("starting {ETCD}"))?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let exited = match &mut self.child {
                Some(child) => child.try_wait().context("waiting for etcd")?,
                None => bail!("etcd is not running"),
            };
            if let Some(status) = exited {
                self.child = None;
                bail!("etcd exited ({status}) before it was ready; {}", self.log_tail());
            }
            // Healthy once it has a leader and serves requests.
            if self.http_get("/health").is_ok_and(|body| body.contains(r#""health":"true""#)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                bail!("etcd at {} not healthy after {READY_TIMEOUT:?}; {}", self.endpoint(), self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_tail(&self) -> String {
        let path = self.log_path();
        let mut text = String::new();
        if let Err(e) = File::open(&path).and_then(|mut f| f.read_to_string(&mut text)) {
            return format!("cannot read {}: {e}", path.display());
        }
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
        format!("end of {}:\n{}", path.display(), tail.join("\n"))
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// GET `path` from `addr`: the body if the status is 200. HTTP/1.0, so that the body
/// is not chunked but ends with the connection.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let timeout = Duration::from_secs(1);
    let mut conn = TcpStream::connect_timeout(&addr, timeout)?;
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;
    write!(conn, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    conn.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(std::io::Error::other(format!("GET {path}: {status}")));
    }
    Ok(body.to_owned())
}

/// Distinct ports that are free on 127.0.0.1 at the time of the call.
fn free_loopback_ports<const N: usize>() -> Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port"))
        .collect::<Result<Vec<_>>>()?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}
