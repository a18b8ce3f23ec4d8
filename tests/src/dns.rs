//! A real DNS server for the tests: Debian's dnsmasq (package dnsmasq-base, installed by
//! scripts/setup.sh) in a namespace of the run, answering A records from a hosts file
//! the test rewrites (`set`: the file, then SIGHUP, on which dnsmasq reads it again).

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::netns::Netns;

pub struct DnsServer {
    child: Child,
    hosts: PathBuf,
}

impl DnsServer {
    /// dnsmasq listening on `address`:53 in `ns`, answering only from its hosts file,
    /// with a TTL of `ttl_seconds`; files under `dir`.
    pub fn start(ns: &Netns, address: Ipv4Addr, ttl_seconds: u32, dir: &std::path::Path) -> Result<DnsServer> {
        let hosts = dir.join("dns-hosts");
        std::fs::write(&hosts, "")?;
        let child = ns
            .command("dnsmasq")
            .args(["--keep-in-foreground", "--no-resolv", "--no-hosts", "--conf-file=/dev/null", "--bind-interfaces"])
            .arg(format!("--listen-address={address}"))
            .arg(format!("--addn-hosts={}", hosts.display()))
            .arg(format!("--local-ttl={ttl_seconds}"))
            .arg("--user=root")
            .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting dnsmasq (scripts/setup.sh installs dnsmasq-base)")?;
        let server = DnsServer { child, hosts };
        // Ready once it answers on its port.
        let start = Instant::now();
        while !ns.enter(move || std::net::UdpSocket::bind((address, 53)).is_err())? {
            if start.elapsed() > Duration::from_secs(10) {
                bail!("dnsmasq did not bind {address}:53");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    /// Makes `name` resolve to `addresses` (none: NXDOMAIN).
    pub fn set(&self, name: &str, addresses: &[Ipv4Addr]) -> Result<()> {
        let text: String = addresses.iter().map(|a| format!("{a} {name}\n")).collect();
        std::fs::write(&self.hosts, text)?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::Signal::SIGHUP)?;
        Ok(())
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
