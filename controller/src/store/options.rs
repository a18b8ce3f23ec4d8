//! How the binaries name the cluster store: the options `oxsdn-agent` and `oxsdnctl`
//! share (etcdctl's names for the etcd ones), checked into a `StoreBackend`.
//!
//! etcd holds every project's VNID, so whoever can write it decides isolation: plain
//! HTTP to etcd is refused unless etcd is on this host (loopback) or the operator says
//! `--etcd-insecure`; `https://` endpoints take the CA that signed etcd's certificate and,
//! for etcd's `--client-cert-auth`, a client certificate whose CN is the etcd user.

use std::{
    collections::BTreeSet,
    fmt,
    net::{IpAddr, Ipv4Addr, ToSocketAddrs},
    path::{Path, PathBuf},
};

use super::{StoreBackend, StoreError, ETCD_ENDPOINTS_ENV};

/// The store options of `oxsdn-agent` and `oxsdnctl`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct StoreOptions {
    /// Directory of the embedded cluster store (used without --etcd-endpoints).
    #[arg(long, global = true, env = "OXSDN_STORE", default_value = "/var/lib/oxsdn/store")]
    pub store: PathBuf,
    /// etcd client URLs, comma-separated: the cluster store is then this etcd cluster
    /// instead of --store. https:// (with --etcd-cacert); http:// only to a loopback
    /// address or with --etcd-insecure.
    #[arg(long, global = true, env = ETCD_ENDPOINTS_ENV, value_name = "URL[,URL...]", value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// CA certificate (PEM) that signed etcd's server certificate.
    #[arg(long, global = true, env = "OXSDN_ETCD_CACERT", value_name = "FILE")]
    pub etcd_cacert: Option<PathBuf>,
    /// Client certificate (PEM) presented to etcd; with etcd's --client-cert-auth its
    /// common name (CN) is the etcd user, whose roles say what it may read and write.
    #[arg(long, global = true, env = "OXSDN_ETCD_CERT", value_name = "FILE")]
    pub etcd_cert: Option<PathBuf>,
    /// Private key (PEM) of --etcd-cert.
    #[arg(long, global = true, env = "OXSDN_ETCD_KEY", value_name = "FILE")]
    pub etcd_key: Option<PathBuf>,
    /// Allow plain http:// to etcd endpoints that are not loopback addresses. Anyone who
    /// can reach such an endpoint (pods included) can read and rewrite every VNID.
    #[arg(long, global = true, env = "OXSDN_ETCD_INSECURE")]
    pub etcd_insecure: bool,
}

impl StoreOptions {
    /// The backend these options name: etcd if any endpoint is given (each entry may be
    /// a comma-separated list; blanks are ignored), else the file store. Refuses
    /// inconsistent or unsafe etcd options with a message naming the option; reads no
    /// file (opening the store does).
    pub fn backend(&self) -> Result<StoreBackend, StoreError> {
        let endpoints: Vec<&str> = self
            .etcd_endpoints
            .iter()
            .flat_map(|list| list.split(','))
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect();
        let cert_and_key = match (&self.etcd_cert, &self.etcd_key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            (Some(_), None) => return Err(config_error("--etcd-cert needs --etcd-key (its private key)")),
            (None, Some(_)) => return Err(config_error("--etcd-key needs --etcd-cert (its certificate)")),
        };
        if endpoints.is_empty() {
            let etcd_only = [
                ("--etcd-cacert", self.etcd_cacert.is_some()),
                ("--etcd-cert", cert_and_key.is_some()),
                ("--etcd-insecure", self.etcd_insecure),
            ];
            if let Some((option, _)) = etcd_only.iter().find(|(_, given)| *given) {
                return Err(config_error(format!(
                    "{option} is given but no --etcd-endpoints: it applies to etcd only"
                )));
            }
            return Ok(StoreBackend::File(self.store.clone()));
        }
        let tls = self.etcd_cacert.clone().map(|cacert| EtcdTls { cacert, cert_and_key: cert_and_key.clone() });
        if tls.is_none() && cert_and_key.is_some() {
            return Err(config_error(
                "--etcd-cert needs --etcd-cacert (the CA certificate that signed etcd's server certificate)",
            ));
        }
        EtcdConfig::new(&endpoints, tls, self.etcd_insecure).map(StoreBackend::Etcd)
    }
}

fn config_error(message: impl Into<String>) -> StoreError {
    StoreError::Config(message.into())
}

/// An etcd cluster and how to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdConfig {
    pub(crate) endpoints: Vec<Endpoint>,
    /// For https:// endpoints (all of them, or none, are).
    pub(crate) tls: Option<EtcdTls>,
}

/// The files TLS to etcd uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdTls {
    /// The CA certificate that signed etcd's server certificate.
    pub cacert: PathBuf,
    /// This client's certificate and its private key, for etcd's `--client-cert-auth`.
    pub cert_and_key: Option<(PathBuf, PathBuf)>,
}

/// One etcd client URL: `http(s)://HOST:PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) url: String,
    tls: bool,
    /// A name or an address (IPv6 without brackets).
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl Endpoint {
    fn parse(url: &str) -> Result<Endpoint, StoreError> {
        let bad = |why: &str| config_error(format!("etcd endpoint {url:?}: {why}"));
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(bad("must start with https:// (or http://)"));
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '@', '?', '#']) {
            return Err(bad("must be SCHEME://HOST:PORT, without a path or user"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(':') => (host, port),
            _ => return Err(bad("has no port (etcd's client port is usually 2379)")),
        };
        let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) if v6.parse::<std::net::Ipv6Addr>().is_ok() => v6,
            Some(_) => return Err(bad("not an IPv6 address between the brackets")),
            None if host.contains(':') => return Err(bad("an IPv6 address goes between brackets")),
            None => host,
        };
        if host.is_empty() || !host.chars().all(|c| c.is_ascii_alphanumeric() || ".-_:".contains(c)) {
            return Err(bad("not a host name or address"));
        }
        let port = port.parse().ok().filter(|&p| p != 0).ok_or_else(|| bad("not a port number"))?;
        Ok(Endpoint { url: url.to_owned(), tls, host: host.to_owned(), port })
    }

    /// Only this host can reach it (or see its traffic).
    fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost") || self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

impl EtcdConfig {
    /// Checks `endpoints` (client URLs) against `tls`: https:// needs the CA
    /// certificate, the TLS files need https://, and plain http:// to a host other than
    /// this one is refused unless `insecure`.
    pub fn new(endpoints: &[&str], tls: Option<EtcdTls>, insecure: bool) -> Result<EtcdConfig, StoreError> {
        let endpoints = endpoints.iter().map(|e| Endpoint::parse(e)).collect::<Result<Vec<_>, _>>()?;
        let Some(first) = endpoints.first() else {
            return Err(config_error("no etcd endpoints given"));
        };
        if let Some(other) = endpoints.iter().find(|e| e.tls != first.tls) {
            return Err(config_error(format!(
                "etcd endpoints {} and {} mix https:// and http://: use https:// for all",
                first.url, other.url
            )));
        }
        match (first.tls, &tls) {
            (true, None) => {
                return Err(config_error(format!(
                    "https:// etcd endpoint {} needs --etcd-cacert (the CA certificate that signed etcd's server certificate)",
                    first.url
                )))
            }
            (false, Some(_)) => {
                return Err(config_error(format!(
                    "--etcd-cacert, --etcd-cert and --etcd-key are for https:// endpoints; {} is plain HTTP",
                    first.url
                )))
            }
            _ => {}
        }
        if let Some(open) = endpoints.iter().find(|e| !e.tls && !e.is_loopback()) {
            if !insecure {
                return Err(config_error(format!(
                    "refusing plain HTTP to etcd endpoint {}: it is not a loopback address, so whoever reaches it \
                     (pods included) could read and rewrite every project's VNID. Use https:// with --etcd-cacert, \
                     --etcd-cert and --etcd-key, or say --etcd-insecure",
                    open.url
                )));
            }
            tracing::warn!(endpoint = open.url, "plain HTTP to a non-loopback etcd endpoint (--etcd-insecure)");
        }
        Ok(EtcdConfig { endpoints, tls })
    }

    /// The client URLs.
    pub fn urls(&self) -> Vec<&str> {
        self.endpoints.iter().map(|e| e.url.as_str()).collect()
    }

    /// The IPv4 addresses and TCP ports the endpoints name, host names resolved (with
    /// the system's resolver), without repetitions. A host with no IPv4 address is an
    /// error: the dataplane, which is IPv4 only, could not protect it.
    pub fn endpoint_addrs(&self) -> Result<Vec<(Ipv4Addr, u16)>, StoreError> {
        let mut out = BTreeSet::new();
        for e in &self.endpoints {
            let addrs = (e.host.as_str(), e.port)
                .to_socket_addrs()
                .map_err(|err| StoreError::Unavailable(format!("cannot resolve etcd endpoint {}: {err}", e.url)))?;
            let v4: Vec<(Ipv4Addr, u16)> = addrs
                .filter_map(|a| match a.ip() {
                    IpAddr::V4(ip) => Some((ip, a.port())),
                    IpAddr::V6(_) => None,
                })
                .collect();
            if v4.is_empty() {
                return Err(config_error(format!("etcd endpoint {} has no IPv4 address", e.url)));
            }
            out.extend(v4);
        }
        Ok(out.into_iter().collect())
    }
}

impl fmt::Display for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.urls().join(","))
    }
}

impl EtcdTls {
    /// What the certificate files say who this client is, for messages.
    pub(crate) fn identity(&self) -> String {
        match &self.cert_and_key {
            Some((cert, _)) => format!("the etcd user of certificate {}", cert.display()),
            None => "no client certificate".into(),
        }
    }
}

/// `path`'s contents, or an error naming the option and the file.
pub(crate) fn read_file(option: &str, path: &Path) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path).map_err(|e| config_error(format!("{option} {}: cannot read: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(endpoints: &[&str]) -> StoreOptions {
        StoreOptions {
            store: "/var/lib/oxsdn/store".into(),
            etcd_endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
            ..StoreOptions::default()
        }
    }

    fn with_tls(mut o: StoreOptions) -> StoreOptions {
        o.etcd_cacert = Some("/pki/ca.pem".into());
        o.etcd_cert = Some("/pki/node1.pem".into());
        o.etcd_key = Some("/pki/node1-key.pem".into());
        o
    }

    fn refused(o: &StoreOptions) -> String {
        match o.backend() {
            Err(StoreError::Config(message)) => message,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn the_file_store_without_endpoints() {
        assert_eq!(options(&[]).backend().unwrap(), StoreBackend::File("/var/lib/oxsdn/store".into()));
        assert_eq!(options(&[" ", ","]).backend().unwrap(), StoreBackend::File("/var/lib/oxsdn/store".into()));
        // etcd options without etcd are a mistake (a mistyped endpoint variable?).
        let message = refused(&with_tls(options(&[])));
        assert!(message.starts_with("--etcd-cacert is given but no --etcd-endpoints"), "{message}");
        let mut insecure = options(&[]);
        insecure.etcd_insecure = true;
        assert!(refused(&insecure).starts_with("--etcd-insecure is given"));
    }

    #[test]
    fn https_with_certificates() {
        let backend =
            with_tls(options(&["https://10.0.0.5:2379, https://etcd-b.example:2379/", "https://[fd00::1]:2379"]))
                .backend()
                .unwrap();
        let StoreBackend::Etcd(config) = &backend else { panic!("{backend:?}") };
        assert_eq!(config.urls(), ["https://10.0.0.5:2379", "https://etcd-b.example:2379/", "https://[fd00::1]:2379"]);
        assert_eq!(
            config.tls,
            Some(EtcdTls {
                cacert: "/pki/ca.pem".into(),
                cert_and_key: Some(("/pki/node1.pem".into(), "/pki/node1-key.pem".into()))
            })
        );
        assert_eq!(
            backend.to_string(),
            "etcd at https://10.0.0.5:2379,https://etcd-b.example:2379/,https://[fd00::1]:2379"
        );
        // A server-authenticated connection without a client certificate is allowed.
        let mut ca_only = options(&["https://10.0.0.5:2379"]);
        ca_only.etcd_cacert = Some("/pki/ca.pem".into());
        assert!(ca_only.backend().is_ok());
    }

    #[test]
    fn plain_http_only_to_loopback_or_when_insecure() {
        for url in ["http://127.0.0.1:2379", "http://127.8.9.1:2379", "http://localhost:2379", "http://[::1]:2379"] {
            assert!(options(&[url]).backend().is_ok(), "{url}");
        }
        let message = refused(&options(&["http://127.0.0.1:2379,http://10.0.0.5:2379"]));
        assert!(message.starts_with("refusing plain HTTP to etcd endpoint http://10.0.0.5:2379"), "{message}");
        assert!(message.contains("--etcd-insecure"), "{message}");
        let mut insecure = options(&["http://10.0.0.5:2379"]);
        insecure.etcd_insecure = true;
        assert!(insecure.backend().is_ok());
        // A name that may resolve to anything is not loopback.
        assert!(refused(&options(&["http://etcd.example:2379"])).starts_with("refusing plain HTTP"));
    }

    #[test]
    fn inconsistent_options_are_refused_naming_what_is_wrong() {
        let cases: [(StoreOptions, &str); 10] = [
            (options(&["https://10.0.0.5:2379"]), "https:// etcd endpoint https://10.0.0.5:2379 needs --etcd-cacert"),
            (
                with_tls(options(&["http://127.0.0.1:2379"])),
                "--etcd-cacert, --etcd-cert and --etcd-key are for https:// endpoints",
            ),
            (
                with_tls(options(&["https://a:2379,http://127.0.0.1:2379"])),
                "etcd endpoints https://a:2379 and http://127.0.0.1:2379 mix",
            ),
            (StoreOptions { etcd_key: None, ..with_tls(options(&["https://a:2379"])) }, "--etcd-cert needs --etcd-key"),
            (
                StoreOptions { etcd_cert: None, ..with_tls(options(&["https://a:2379"])) },
                "--etcd-key needs --etcd-cert",
            ),
            (
                StoreOptions { etcd_cacert: None, ..with_tls(options(&["https://a:2379"])) },
                "--etcd-cert needs --etcd-cacert",
            ),
            (options(&["10.0.0.5:2379"]), "etcd endpoint \"10.0.0.5:2379\": must start with https://"),
            (options(&["http://127.0.0.1"]), "etcd endpoint \"http://127.0.0.1\": has no port"),
            (options(&["http://127.0.0.1:99999"]), "not a port number"),
            (options(&["http://user@127.0.0.1:2379/v3"]), "without a path or user"),
        ];
        for (o, expected) in cases {
            let message = refused(&o);
            assert!(message.contains(expected), "{o:?}: {message}");
        }
        for bad in ["http://::1:2379", "http://[nothing]:2379", "http://bad host:2379", "http://:2379"] {
            assert!(options(&[bad]).backend().is_err(), "{bad}");
        }
    }

    #[test]
    fn endpoint_addresses_resolve_names() {
        let backend =
            options(&["http://localhost:2379,http://127.0.0.1:2379,http://127.0.0.2:2380"]).backend().unwrap();
        assert_eq!(
            backend.endpoint_addrs().unwrap(),
            [(Ipv4Addr::LOCALHOST, 2379), (Ipv4Addr::new(127, 0, 0, 2), 2380)]
        );
        let StoreBackend::Etcd(v6) = options(&["http://[::1]:2379"]).backend().unwrap() else { panic!() };
        let err = v6.endpoint_addrs().unwrap_err();
        assert!(err.to_string().contains("http://[::1]:2379 has no IPv4 address"), "{err}");
        // The file store has no endpoints.
        assert_eq!(options(&[]).backend().unwrap().endpoint_addrs().unwrap(), []);
    }
}
