//! Probes between namespaces: ping (the real binary), TCP (an echo server and a client
//! that checks the echo), and raw Ethernet frames for hostile-traffic tests.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::netns::Netns;

pub const ECHO_PORT: u16 = 8080;

/// One ICMP echo from `from` to `to`; true if a reply came.
pub fn ping(from: &Netns, to: Ipv4Addr) -> bool {
    from.command("ping")
        .args(["-c", "1", "-W", "0.5", "-q", &to.to_string()])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Starts a TCP echo server on `0.0.0.0:port` inside `ns`; it serves until the process
/// ends (its namespace going away closes it).
pub fn serve_echo(ns: &Netns, port: u16) -> Result<()> {
    let listener = ns.enter(move || TcpListener::bind(("0.0.0.0", port)))??;
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(())
}

/// Starts a TCP server on `0.0.0.0:port` in `ns` that answers every connection with
/// the address it came from, and a UDP one on the same port that answers every
/// datagram the same way: what a host outside the cluster sees.
pub fn serve_whoami(ns: &Netns, port: u16) -> Result<()> {
    let (tcp, udp) = ns.enter(move || -> Result<(TcpListener, std::net::UdpSocket)> {
        Ok((TcpListener::bind(("0.0.0.0", port))?, std::net::UdpSocket::bind(("0.0.0.0", port))?))
    })??;
    std::thread::spawn(move || {
        for conn in tcp.incoming() {
            let Ok(mut conn) = conn else { return };
            if let Ok(peer) = conn.peer_addr() {
                let _ = conn.write_all(peer.ip().to_string().as_bytes());
            }
        }
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((_, peer)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(peer.ip().to_string().as_bytes(), peer);
        }
    });
    Ok(())
}

/// What a `serve_whoami` server at `to:port` says about `from`, over TCP.
pub fn whoami_tcp(from: &Netns, to: Ipv4Addr, port: u16) -> Result<String> {
    from.enter(move || -> Result<String> {
        let mut s = TcpStream::connect_timeout(&SocketAddr::from((to, port)), Duration::from_millis(1500))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        Ok(answer)
    })?
}

/// The same over UDP.
pub fn whoami_udp(from: &Netns, to: Ipv4Addr, port: u16) -> Result<String> {
    from.enter(move || -> Result<String> {
        let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.send_to(b"who am i", (to, port))?;
        let mut buf = [0u8; 64];
        let n = s.recv(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })?
}

/// Starts servers on `port` (TCP and UDP) in `ns` that answer with `identity`: on TCP,
/// one line per line received; on UDP, `identity:` followed by the datagram received.
/// Tells load-balanced endpoints apart.
pub fn serve_identity(ns: &Netns, port: u16, identity: &str) -> Result<()> {
    let (tcp, udp) = ns.enter(move || -> Result<(TcpListener, std::net::UdpSocket)> {
        Ok((TcpListener::bind(("0.0.0.0", port))?, std::net::UdpSocket::bind(("0.0.0.0", port))?))
    })??;
    let line = format!("{identity}\n");
    std::thread::spawn(move || {
        for conn in tcp.incoming() {
            let Ok(conn) = conn else { return };
            let line = line.clone();
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(conn);
                let mut buf = String::new();
                while matches!(std::io::BufRead::read_line(&mut reader, &mut buf), Ok(n) if n > 0) {
                    if reader.get_mut().write_all(line.as_bytes()).is_err() {
                        return;
                    }
                    buf.clear();
                }
            });
        }
    });
    let prefix = format!("{identity}:").into_bytes();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, peer)) = udp.recv_from(&mut buf) {
            let reply = [prefix.as_slice(), &buf[..n]].concat();
            let _ = udp.send_to(&reply, peer);
        }
    });
    Ok(())
}

/// A TCP connection from a namespace, for asking a `serve_identity` server who it is,
/// as often as wanted on the same connection.
pub struct IdentityClient {
    reader: std::io::BufReader<TcpStream>,
}

impl IdentityClient {
    pub fn connect(from: &Netns, to: Ipv4Addr, port: u16) -> Result<IdentityClient> {
        let stream = from
            .enter(move || TcpStream::connect_timeout(&SocketAddr::from((to, port)), Duration::from_millis(1500)))??;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        Ok(IdentityClient { reader: std::io::BufReader::new(stream) })
    }

    pub fn ask(&mut self) -> Result<String> {
        self.reader.get_mut().write_all(b"who\n")?;
        let mut line = String::new();
        std::io::BufRead::read_line(&mut self.reader, &mut line)?;
        if line.is_empty() {
            bail!("connection closed");
        }
        Ok(line.trim_end().to_string())
    }

    /// The address the server appears at (the service's, through a service).
    pub fn peer(&self) -> Result<SocketAddr> {
        Ok(self.reader.get_ref().peer_addr()?)
    }
}

/// One UDP exchange with a `serve_identity` server: sends `payload`, returns who
/// answered and the payload echoed back, and the address the answer came from.
pub fn udp_identity(from: &Netns, to: Ipv4Addr, port: u16, payload: Vec<u8>) -> Result<(String, Vec<u8>, SocketAddr)> {
    IdentityFlow::open(from, to, port)?.exchange(&payload)
}

/// A UDP flow from a namespace (one socket: one source port) to a `serve_identity`
/// server, for asking who answers as often as wanted.
pub struct IdentityFlow {
    socket: std::net::UdpSocket,
    to: SocketAddr,
}

impl IdentityFlow {
    pub fn open(from: &Netns, to: Ipv4Addr, port: u16) -> Result<IdentityFlow> {
        let socket = from.enter(|| std::net::UdpSocket::bind("0.0.0.0:0"))??;
        socket.set_read_timeout(Some(Duration::from_secs(2)))?;
        Ok(IdentityFlow { socket, to: SocketAddr::from((to, port)) })
    }

    /// Who answers a datagram; the answer must come from the address asked.
    pub fn ask(&self) -> Result<String> {
        let (who, _, from) = self.exchange(b"who")?;
        anyhow::ensure!(from == self.to, "answer from {from}, not from {}", self.to);
        Ok(who)
    }

    /// Sends `payload`; returns who answered, the payload echoed back, and the address
    /// the answer came from.
    pub fn exchange(&self, payload: &[u8]) -> Result<(String, Vec<u8>, SocketAddr)> {
        self.socket.send_to(payload, self.to)?;
        let mut buf = vec![0u8; 65536];
        let (n, peer) = self.socket.recv_from(&mut buf)?;
        let reply = &buf[..n];
        let colon = reply.iter().position(|&b| b == b':').context("no identity in the reply")?;
        Ok((String::from_utf8_lossy(&reply[..colon]).into_owned(), reply[colon + 1..].to_vec(), peer))
    }
}

/// A transport protocol a probe speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    Tcp,
    Udp,
    /// SCTP packets on raw sockets (the kernel need not have SCTP): an INIT chunk to
    /// the port, answered by `serve_sctp` with an INIT ACK.
    Sctp,
}

const IPPROTO_SCTP: i32 = 132;
const SCTP_INIT: u8 = 1;
const SCTP_INIT_ACK: u8 = 2;
static NEXT_SCTP_PORT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(30000);

/// A raw IPv4 socket for SCTP in the calling thread's namespace (sends SCTP payloads
/// the kernel puts an IP header on; receives every SCTP packet with its IP header).
fn raw_sctp_socket() -> Result<std::net::UdpSocket> {
    // SAFETY: socket(2); the descriptor is owned by the returned socket.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, IPPROTO_SCTP) };
    if fd < 0 {
        bail!("raw SCTP socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket nothing else owns; sendto/recvfrom on it are what a
    // UdpSocket calls.
    Ok(unsafe { std::net::UdpSocket::from_raw_fd(fd) })
}

/// An SCTP packet (common header without checksum, one chunk of `chunk` type).
fn sctp_packet(sport: u16, dport: u16, chunk: u8) -> Vec<u8> {
    let mut p = Vec::with_capacity(16);
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&[0; 8]);
    p.extend_from_slice(&[chunk, 0, 0, 4]);
    p
}

/// A received raw packet's source address, SCTP ports and first chunk type.
fn parse_sctp(packet: &[u8]) -> Option<(Ipv4Addr, u16, u16, u8)> {
    let ihl = usize::from(*packet.first()? & 0x0f) * 4;
    let src = Ipv4Addr::new(*packet.get(12)?, *packet.get(13)?, *packet.get(14)?, *packet.get(15)?);
    let sctp = packet.get(ihl..ihl + 13)?;
    Some((src, u16::from_be_bytes([sctp[0], sctp[1]]), u16::from_be_bytes([sctp[2], sctp[3]]), sctp[12]))
}

/// Answers every SCTP INIT to one of `ports` in `ns` with an INIT ACK, until the
/// process ends.
pub fn serve_sctp(ns: &Netns, ports: &'static [u16]) -> Result<()> {
    let socket = ns.enter(raw_sctp_socket)??;
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, _)) = socket.recv_from(&mut buf) {
            if let Some((src, sport, dport, SCTP_INIT)) = parse_sctp(&buf[..n]) {
                if ports.contains(&dport) {
                    let _ = socket.send_to(&sctp_packet(dport, sport, SCTP_INIT_ACK), (src, 0));
                }
            }
        }
    });
    Ok(())
}

/// Whether a `serve_identity` server at `to:port` answers `from` over `l4` within
/// `timeout` (TCP: the connection opens and a line is answered; UDP: a datagram is).
pub fn answers(from: &Netns, l4: L4, to: Ipv4Addr, port: u16, timeout: Duration) -> bool {
    from.enter(move || -> Result<()> {
        let addr = SocketAddr::from((to, port));
        let mut buf = [0u8; 256];
        match l4 {
            L4::Tcp => {
                let mut s = TcpStream::connect_timeout(&addr, timeout)?;
                s.set_read_timeout(Some(timeout))?;
                s.write_all(b"probe\n")?;
                s.read_exact(&mut buf[..1])?;
            }
            L4::Udp => {
                // Sent again every 300 ms within `timeout`: a datagram lost on a busy
                // machine is not a refusal.
                let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
                let deadline = Instant::now() + timeout;
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        bail!("no answer");
                    }
                    s.send_to(b"probe", addr)?;
                    s.set_read_timeout(Some(left.min(Duration::from_millis(300))))?;
                    if s.recv(&mut buf).is_ok() {
                        break;
                    }
                }
            }
            L4::Sctp => {
                let s = raw_sctp_socket()?;
                let sport = NEXT_SCTP_PORT.fetch_add(1, std::sync::atomic::Ordering::Relaxed).max(30000);
                s.send_to(&sctp_packet(sport, port, SCTP_INIT), (to, 0))?;
                let deadline = Instant::now() + timeout;
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        bail!("no INIT ACK");
                    }
                    s.set_read_timeout(Some(left))?;
                    let (n, _) = s.recv_from(&mut buf)?;
                    if parse_sctp(&buf[..n]) == Some((to, port, sport, SCTP_INIT_ACK)) {
                        break;
                    }
                }
            }
        }
        Ok(())
    })
    .expect("entering the prober's namespace")
    .is_ok()
}

/// Connects from `from` to `to:port`, sends a line and expects it echoed back.
pub fn tcp_echo(from: &Netns, to: Ipv4Addr, port: u16) -> bool {
    from.enter(move || -> Result<()> {
        let addr = SocketAddr::from((to, port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(700))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"oxsdn\n")?;
        let mut buf = [0u8; 6];
        s.read_exact(&mut buf)?;
        if &buf != b"oxsdn\n" {
            bail!("bad echo");
        }
        Ok(())
    })
    .map(|r| r.is_ok())
    .unwrap_or(false)
}

/// An AF_PACKET socket on one interface of a namespace: sends raw frames, captures all.
pub struct RawSocket {
    fd: OwnedFd,
}

impl RawSocket {
    pub fn open(ns: &Netns, ifname: &str) -> Result<RawSocket> {
        let ifname = ifname.to_string();
        ns.enter(move || -> Result<RawSocket> {
            let ifindex = nix::net::if_::if_nametoindex(ifname.as_str()).with_context(|| format!("no {ifname}"))?;
            let proto = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: plain socket(2)/bind(2) calls with a zeroed, filled sockaddr_ll.
            unsafe {
                let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto as i32);
                if fd < 0 {
                    bail!("socket: {}", std::io::Error::last_os_error());
                }
                let fd = OwnedFd::from_raw_fd(fd);
                let mut addr: libc::sockaddr_ll = std::mem::zeroed();
                addr.sll_family = libc::AF_PACKET as u16;
                addr.sll_protocol = proto;
                addr.sll_ifindex = ifindex as i32;
                let len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                if libc::bind(fd.as_raw_fd(), (&addr as *const libc::sockaddr_ll).cast(), len) < 0 {
                    bail!("bind: {}", std::io::Error::last_os_error());
                }
                Ok(RawSocket { fd })
            }
        })?
    }

    /// Sends past the device's qdisc (`PACKET_QDISC_BYPASS`), as a flood generator does.
    pub fn bypass_qdisc(&self) -> Result<()> {
        let on: libc::c_int = 1;
        // SAFETY: setsockopt with a c_int option on our socket.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        if rc < 0 {
            bail!("PACKET_QDISC_BYPASS: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sends `frame` over and over, 64 per system call, until `limit` are out or `stop`
    /// is set (a full device queue is tried again); how many went out.
    pub fn send_repeatedly(&self, frame: &[u8], limit: u64, stop: &std::sync::atomic::AtomicBool) -> Result<u64> {
        const BATCH: u64 = 64;
        let mut iov = libc::iovec { iov_base: frame.as_ptr() as *mut libc::c_void, iov_len: frame.len() };
        let mut messages: Vec<libc::mmsghdr> = (0..BATCH)
            .map(|_| {
                // SAFETY: an all-zero mmsghdr is valid.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = &mut iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let mut sent = 0;
        while sent < limit && !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let n = (limit - sent).min(BATCH) as u32;
            // SAFETY: `messages` holds `n` mmsghdrs pointing to `iov` and `frame`, which
            // outlive the call.
            let rc = unsafe { libc::sendmmsg(self.fd.as_raw_fd(), messages.as_mut_ptr(), n, 0) };
            if rc < 0 {
                let e = std::io::Error::last_os_error();
                if matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::EAGAIN)) {
                    continue;
                }
                bail!("sendmmsg: {e}");
            }
            sent += rc as u64;
        }
        Ok(sent)
    }

    pub fn send(&self, frame: &[u8]) -> Result<()> {
        // SAFETY: writing a byte buffer to our socket.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            bail!("send: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Frames received within `window` (incoming ones only) for which `keep` holds.
    pub fn capture(&self, window: Duration, keep: impl Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + window;
        let mut frames = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return frames;
            }
            let tv = libc::timeval { tv_sec: left.as_secs() as i64, tv_usec: left.subsec_micros().max(1) as i64 };
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: setsockopt with a timeval; recvfrom into our buffer.
            let n = unsafe {
                libc::setsockopt(
                    self.fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&tv as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as u32,
                );
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&mut from as *mut libc::sockaddr_ll).cast(),
                    &mut from_len,
                )
            };
            if n < 0 {
                continue;
            }
            let frame = &buf[..n as usize];
            if from.sll_pkttype != libc::PACKET_OUTGOING && keep(frame) {
                frames.push(frame.to_vec());
            }
        }
    }
}

/// A one-off iperf3 server (`iperf3 -s -1`) in a namespace, ready when returned.
pub struct Iperf3Server {
    child: std::process::Child,
}

impl Iperf3Server {
    pub fn start(ns: &Netns) -> Result<Iperf3Server> {
        let child = ns
            .command("iperf3")
            .args(["-s", "-1"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting iperf3 -s")?;
        let server = Iperf3Server { child };
        let deadline = Instant::now() + Duration::from_secs(10);
        // Listening is checked with ss: a probe connection would be the one-off's client.
        while !ns.command("ss").args(["-Hltn", "sport = :5201"]).output().map(|o| !o.stdout.is_empty()).unwrap_or(false)
        {
            if Instant::now() > deadline {
                bail!("iperf3 server in {} not listening after 10 s", ns.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    /// Waits for the server to finish its one test.
    pub fn wait(mut self) {
        let _ = self.child.wait();
    }
}

impl Drop for Iperf3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An iperf3 client (`iperf3 -c TO -t SECS -J`, at most `-b BITRATE` if given) running
/// in a namespace.
pub struct Iperf3Client {
    child: std::process::Child,
    secs: u32,
}

impl Iperf3Client {
    pub fn start(ns: &Netns, to: Ipv4Addr, secs: u32, bitrate: Option<&str>) -> Result<Iperf3Client> {
        let child = ns
            .command("iperf3")
            .args(["-c", &to.to_string(), "-t", &secs.to_string(), "-J"])
            .args(bitrate.map(|b| ["-b", b]).iter().flatten())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting iperf3 -c")?;
        Ok(Iperf3Client { child, secs })
    }

    /// Waits for the test's end: an error if the stream broke or stopped early (the
    /// receiver ran less than all but the last second).
    pub fn finish(self) -> Result<()> {
        self.report().map(|_| ())
    }

    /// Waits for the test's end (as `finish`) and returns the rate the receiver saw,
    /// in bits per second.
    pub fn received_bits_per_second(self) -> Result<f64> {
        let report = self.report()?;
        report["end"]["sum_received"]["bits_per_second"].as_f64().context("no receiver rate in the iperf3 report")
    }

    fn report(self) -> Result<serde_json::Value> {
        let out = self.child.wait_with_output()?;
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).context("iperf3 -J output")?;
        if !report["error"].is_null() {
            bail!("the TCP stream broke: {}", report["error"]);
        }
        let ran = report["end"]["sum_received"]["seconds"].as_f64().unwrap_or(0.0);
        if ran < f64::from(self.secs) - 1.0 {
            bail!("the stream ran {ran} s of {}", self.secs);
        }
        Ok(report)
    }
}
