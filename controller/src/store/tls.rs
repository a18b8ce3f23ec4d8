//! TLS to etcd: the certificate files read and checked, the gRPC client's settings, and
//! a handshake probe that tells why etcd closes connections.

use std::{
    io,
    net::{TcpStream, ToSocketAddrs},
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use etcd_client::{Certificate, Identity, TlsOptions};
use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName},
    ClientConfig, ClientConnection, RootCertStore,
};

use super::{
    options::{read_file, Endpoint},
    EtcdTls, StoreError,
};

/// How long the probe may take in all, connecting and handshaking with every endpoint.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Reads and checks the files `tls` names, so that a wrong file is reported by name now
/// rather than as a failed handshake later. Returns the gRPC client's TLS settings and
/// a probe with the same trust and identity for `endpoints`.
pub(super) fn load(tls: &EtcdTls, endpoints: &[Endpoint]) -> Result<(TlsOptions, HandshakeProbe), StoreError> {
    let ca = read_file("--etcd-cacert", &tls.cacert)?;
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(certificates("--etcd-cacert", &tls.cacert, &ca)?);
    let mut options = TlsOptions::new().ca_certificate(Certificate::from_pem(&ca));
    let probe = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .map_err(|e| StoreError::Config(format!("TLS 1.2: {e}")))?
        .with_root_certificates(roots);
    let probe = match &tls.cert_and_key {
        None => probe.with_no_client_auth(),
        Some((cert_path, key_path)) => {
            let cert = read_file("--etcd-cert", cert_path)?;
            let chain = certificates("--etcd-cert", cert_path, &cert)?;
            let key = read_file("--etcd-key", key_path)?;
            let bad_key = |why: String| StoreError::Config(format!("--etcd-key {}: {why}", key_path.display()));
            let der = PrivateKeyDer::from_pem_slice(&key)
                .map_err(|e| bad_key(format!("no private key in PEM form ({e})")))?;
            let signing = rustls::crypto::ring::sign::any_supported_type(&der)
                .map_err(|e| bad_key(format!("unusable private key: {e}")))?;
            rustls::sign::CertifiedKey::new(chain.clone(), signing)
                .keys_match()
                .map_err(|e| bad_key(format!("not the key of --etcd-cert {}: {e}", cert_path.display())))?;
            options = options.identity(Identity::from_pem(cert, key));
            probe.with_client_auth_cert(chain, der).map_err(|e| bad_key(format!("unusable private key: {e}")))?
        }
    };
    let endpoints = endpoints.iter().map(|e| (e.host.clone(), e.port)).collect();
    Ok((options, HandshakeProbe { config: Arc::new(probe), endpoints }))
}

/// The certificates in PEM file `path` (given as `option`): at least one.
fn certificates(option: &str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, StoreError> {
    let bad = |why: String| StoreError::Config(format!("{option} {}: {why}", path.display()));
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM certificate file ({e})")))?;
    if certs.is_empty() {
        return Err(bad("no certificate in PEM form".into()));
    }
    Ok(certs)
}

/// The TLS error somewhere in `e`'s causes: a peer certificate that does not verify, or
/// an alert from etcd refusing ours. The stream layers wrap it in `std::io::Error`,
/// whose `source` skips the error it wraps, so those are opened too.
pub(super) fn failure<'e>(e: &'e (dyn std::error::Error + 'static)) -> Option<&'e rustls::Error> {
    let mut next = Some(e);
    while let Some(cause) = next {
        if let Some(tls) = cause.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        let wrapped = cause.downcast_ref::<io::Error>().and_then(wrapped_tls_error);
        if wrapped.is_some() {
            return wrapped;
        }
        next = cause.source();
    }
    None
}

fn wrapped_tls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// TLS 1.2 handshakes with etcd's endpoints, with the client's trust and certificate.
/// With TLS 1.3 (what the gRPC client negotiates), a server checks the client's
/// certificate after the handshake and refuses it with an alert that reaches the gRPC
/// client as a mere closed connection; in TLS 1.2 the refusal is part of the handshake,
/// so a handshake says whether etcd takes the certificate.
pub(super) struct HandshakeProbe {
    config: Arc<ClientConfig>,
    /// Hosts and ports.
    endpoints: Vec<(String, u16)>,
}

impl HandshakeProbe {
    /// The TLS error the first endpoint that ends its handshake in one reports; `None`
    /// if none does (handshakes that succeed, endpoints that cannot be reached) within
    /// `PROBE_TIMEOUT`.
    pub(super) fn failure(&self) -> Option<rustls::Error> {
        let deadline = Instant::now() + PROBE_TIMEOUT;
        self.endpoints.iter().find_map(|(host, port)| self.handshake(host, *port, deadline))
    }

    fn handshake(&self, host: &str, port: u16, deadline: Instant) -> Option<rustls::Error> {
        let left = || deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero());
        let name = ServerName::try_from(host.to_owned()).ok()?;
        let addr = (host, port).to_socket_addrs().ok()?.next()?;
        let mut tcp = TcpStream::connect_timeout(&addr, left()?).ok()?;
        let mut tls = ClientConnection::new(self.config.clone(), name).ok()?;
        // Done when the server's Finished arrives, which it sends only once it has
        // taken our certificate.
        while tls.is_handshaking() {
            let time = left()?;
            tcp.set_read_timeout(Some(time)).ok()?;
            tcp.set_write_timeout(Some(time)).ok()?;
            if let Err(e) = tls.complete_io(&mut tcp) {
                return wrapped_tls_error(&e).cloned();
            }
        }
        None
    }
}
