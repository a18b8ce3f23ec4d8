//! A throwaway certificate authority for a test's etcd: the CA, etcd's server
//! certificate and client certificates (whose common name is the etcd user), as PEM
//! files in a directory of the test's own.

use std::{
    ffi::OsString,
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};

/// A CA whose files live in `dir`.
pub struct Pki {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

/// A client's TLS files, as `oxsdn-agent` and `oxsdnctl` take them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCert {
    /// The CA the client trusts (the one that signed etcd's certificate).
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ClientCert {
    /// `--etcd-cacert … --etcd-cert … --etcd-key …`.
    pub fn args(&self) -> Vec<OsString> {
        vec![
            "--etcd-cacert".into(),
            self.ca.clone().into(),
            "--etcd-cert".into(),
            self.cert.clone().into(),
            "--etcd-key".into(),
            self.key.clone().into(),
        ]
    }

    /// The same certificate and key, trusting `ca` instead.
    pub fn trusting(&self, ca: &Path) -> ClientCert {
        ClientCert { ca: ca.to_path_buf(), ..self.clone() }
    }
}

impl Pki {
    /// A new CA named `name`, its certificate in `<dir>/ca.pem` (`dir` is created).
    pub fn new(dir: &Path, name: &str) -> Result<Pki> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key)?;
        let pki = Pki { dir: dir.to_path_buf(), issuer: Issuer::new(params, key) };
        write(&pki.ca(), &cert.pem())?;
        Ok(pki)
    }

    /// The CA certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A server certificate for `ips` (its subject alternative names), in
    /// `<name>.pem` and `<name>-key.pem`. It may also serve as a client certificate:
    /// etcd 3.4's HTTP gateway presents it to etcd's own gRPC port.
    pub fn server(&self, name: &str, ips: &[IpAddr]) -> Result<ClientCert> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.subject_alt_names = ips.iter().map(|ip| SanType::IpAddress(*ip)).collect();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(name, params)
    }

    /// A client certificate for etcd user `user` (its common name), in `<user>.pem` and
    /// `<user>-key.pem`.
    pub fn client(&self, user: &str) -> Result<ClientCert> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, user);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(user, params)
    }

    fn issue(&self, name: &str, mut params: CertificateParams) -> Result<ClientCert> {
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let files = ClientCert {
            ca: self.ca(),
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}-key.pem")),
        };
        write(&files.cert, &cert.pem())?;
        write(&files.key, &key.serialize_pem())?;
        Ok(files)
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
