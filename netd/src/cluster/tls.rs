//! `--cluster-store-opt`: Docker's `kv.*` keys for a cluster store behind TLS with
//! client certificates (etcd's `--client-cert-auth`), and etcd's user and password.
//!
//! TLS is on with an `https://` or `etcds://` store, or with any of kv.cacertfile,
//! kv.certfile, kv.keyfile (Docker's `etcd://` plus kv.cacertfile). Files are read at
//! start, so a missing or unreadable one stops the daemon with its name.
use std::path::{Path, PathBuf};

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};
use tokio_rustls::rustls;

use super::ClusterError;

/// Docker's cluster-store options that netd knows.
const KEYS: &[&str] = &[
    "kv.cacertfile",
    "kv.certfile",
    "kv.keyfile",
    "kv.username",
    "kv.password",
];

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreOpts {
    /// The CA certificate(s) that signed etcd's server certificate (PEM).
    pub ca: Option<PathBuf>,
    /// This node's client certificate and its key (PEM).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl StoreOpts {
    /// Checks one `KEY=VALUE` option on its own (the flag's parser).
    pub fn check_one(kv: &str) -> Result<(), ClusterError> {
        StoreOpts::default().set(kv)
    }

    fn set(&mut self, kv: &str) -> Result<(), ClusterError> {
        let bad = |why: &str| ClusterError::BadOpt(kv.to_string(), why.to_string());
        let (k, v) = kv.split_once('=').ok_or_else(|| bad("not KEY=VALUE"))?;
        if v.is_empty() {
            return Err(bad("empty value"));
        }
        let slot = match k {
            "kv.cacertfile" => &mut self.ca,
            "kv.certfile" => &mut self.cert,
            "kv.keyfile" => &mut self.key,
            "kv.username" => {
                self.username = Some(v.to_string());
                return Ok(());
            }
            "kv.password" => {
                self.password = Some(v.to_string());
                return Ok(());
            }
            _ => {
                return Err(bad(&format!(
                    "unknown option (netd knows {})",
                    KEYS.join(", ")
                )))
            }
        };
        if slot.replace(PathBuf::from(v)).is_some() {
            return Err(bad("given twice"));
        }
        Ok(())
    }

    /// Parses `KEY=VALUE` options; an unknown key, a repeated one or a half pair (a
    /// certificate without its key) is an error naming it.
    pub fn parse(opts: &[String]) -> Result<StoreOpts, ClusterError> {
        let mut o = StoreOpts::default();
        for kv in opts {
            o.set(kv)?;
        }
        match (&o.cert, &o.key) {
            (Some(_), None) => Err(ClusterError::BadOpt(
                "kv.certfile".into(),
                "needs kv.keyfile (the certificate's private key)".into(),
            )),
            (None, Some(_)) => Err(ClusterError::BadOpt(
                "kv.keyfile".into(),
                "needs kv.certfile (the client certificate)".into(),
            )),
            _ if o.username.is_some() != o.password.is_some() => Err(ClusterError::BadOpt(
                "kv.username".into(),
                "kv.username and kv.password go together".into(),
            )),
            _ => Ok(o),
        }
    }

    /// Whether any option asks for TLS.
    pub fn wants_tls(&self) -> bool {
        self.ca.is_some() || self.cert.is_some()
    }

    /// The connection's TLS and user settings on top of `opts`; the files are read now.
    pub fn apply(&self, tls: bool, opts: ConnectOptions) -> Result<ConnectOptions, ClusterError> {
        let mut opts = match (&self.username, &self.password) {
            (Some(u), Some(p)) => opts.with_user(u.clone(), p.clone()),
            _ => opts,
        };
        if tls {
            let ca = self.ca.as_deref().ok_or_else(|| {
                ClusterError::BadOpt(
                    "kv.cacertfile".into(),
                    "a TLS cluster store needs the CA that signed etcd's certificate".into(),
                )
            })?;
            let mut t = TlsOptions::new().ca_certificate(Certificate::from_pem(read(ca)?));
            if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
                t = t.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            opts = opts.with_tls(t);
        }
        Ok(opts)
    }
}

fn read(p: &Path) -> Result<Vec<u8>, ClusterError> {
    let pem = std::fs::read(p).map_err(|e| ClusterError::File(p.to_path_buf(), e.to_string()))?;
    if !pem.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(ClusterError::File(p.to_path_buf(), "not PEM".into()));
    }
    Ok(pem)
}

/// What a probe of one endpoint found.
#[derive(Debug)]
pub enum Probe {
    /// The handshake went through and etcd spoke.
    Ok,
    /// Nothing answered (etcd away): not a configuration problem.
    Unreachable(String),
    /// TLS failed: the error as rustls gives it.
    Refused(String),
}

/// How long a probe waits for each step.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

impl StoreOpts {
    /// One TLS handshake with `host:port` with these options, and one read: etcd
    /// refuses a missing or unknown client certificate with an alert after the TLS 1.3
    /// handshake, so only the read sees it.
    pub async fn probe(&self, host_port: &str) -> Result<Probe, ClusterError> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::time::timeout;
        let config = self.client_config()?;
        let host = host_port
            .rsplit_once(':')
            .map_or(host_port, |(h, _)| h)
            .trim_matches(['[', ']']);
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| ClusterError::BadOpt(host_port.into(), e.to_string()))?;
        let tcp = match timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(host_port)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Ok(Probe::Unreachable(e.to_string())),
            Err(_) => return Ok(Probe::Unreachable("no answer".into())),
        };
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let mut tls = match timeout(PROBE_TIMEOUT, connector.connect(name, tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Ok(Probe::Refused(e.to_string())),
            Err(_) => return Ok(Probe::Unreachable("no TLS handshake".into())),
        };
        // HTTP/2's connection preface and an empty SETTINGS frame: what a gRPC client
        // sends first; etcd answers with its SETTINGS.
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        let mut buf = [0u8; 64];
        let read = async {
            tls.write_all(&hello).await?;
            tls.read(&mut buf).await
        };
        Ok(match timeout(PROBE_TIMEOUT, read).await {
            Ok(Ok(n)) if n > 0 => Probe::Ok,
            Ok(Ok(_)) => {
                Probe::Refused("etcd closed the connection after the TLS handshake".into())
            }
            Ok(Err(e)) => Probe::Refused(e.to_string()),
            Err(_) => Probe::Unreachable("no answer after the TLS handshake".into()),
        })
    }

    /// rustls' client configuration: the CA as the only root, the client certificate
    /// if given, HTTP/2 (gRPC) by ALPN.
    fn client_config(&self) -> Result<rustls::ClientConfig, ClusterError> {
        use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
        let file_err = |p: &Path| {
            let p = p.to_path_buf();
            move |e: rustls::pki_types::pem::Error| ClusterError::File(p.clone(), e.to_string())
        };
        let mut roots = rustls::RootCertStore::empty();
        if let Some(ca) = &self.ca {
            for c in CertificateDer::pem_slice_iter(&read(ca)?) {
                roots
                    .add(c.map_err(file_err(ca))?)
                    .map_err(|e| ClusterError::File(ca.clone(), e.to_string()))?;
            }
        }
        // The process's one crypto provider: ring, the only one built in (tonic's).
        let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
        let mut config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_slice_iter(&read(cert)?)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(file_err(cert))?;
                let k = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(file_err(key))?;
                builder
                    .with_client_auth_cert(chain, k)
                    .map_err(|e| ClusterError::File(cert.clone(), e.to_string()))?
            }
            _ => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

/// What a TLS failure means, from rustls' words (UnknownIssuer, CertificateRequired),
/// and whether this node sent a client certificate.
pub fn explain(err: &str, sent_cert: bool) -> &'static str {
    let e = err.to_ascii_lowercase().replace([' ', '_'], "");
    let refused_cert = ["certificaterequired", "badcertificate", "unknownca"]
        .iter()
        .any(|w| e.contains(w));
    if refused_cert && !sent_cert {
        "etcd asks for a client certificate: give kv.certfile and kv.keyfile"
    } else if refused_cert {
        "etcd refused this node's client certificate (kv.certfile): is it signed by the CA etcd trusts?"
    } else if e.contains("unknownissuer") || e.contains("badsignature") {
        "etcd's certificate is not signed by kv.cacertfile"
    } else if e.contains("notvalidforname") {
        "etcd's certificate does not name the address in the cluster store URL"
    } else {
        "the TLS handshake with etcd failed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[&str]) -> Result<StoreOpts, ClusterError> {
        StoreOpts::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn dockers_keys() {
        let o = p(&[
            "kv.cacertfile=/a/ca.pem",
            "kv.certfile=/a/c.pem",
            "kv.keyfile=/a/k.pem",
        ])
        .unwrap();
        assert_eq!(o.ca.as_deref(), Some(Path::new("/a/ca.pem")));
        assert!(o.wants_tls());
        assert!(!p(&[]).unwrap().wants_tls());
        for (bad, named) in [
            (&["kv.certfile=/c"][..], "kv.keyfile"),
            (&["kv.keyfile=/k"][..], "kv.certfile"),
            (&["kv.cacert=/c"][..], "kv.cacert=/c"),
            (&["kv.cacertfile"][..], "KEY=VALUE"),
            (&["kv.cacertfile=/a", "kv.cacertfile=/b"][..], "twice"),
            (&["kv.username=u"][..], "kv.password"),
        ] {
            let e = p(bad).unwrap_err().to_string();
            assert!(e.contains(named), "{bad:?}: {e}");
        }
    }

    #[test]
    fn tls_failures_get_advice() {
        assert!(explain("invalid peer certificate: UnknownIssuer", true).contains("kv.cacertfile"));
        for alert in ["CertificateRequired", "BadCertificate"] {
            let e = format!("received fatal alert: {alert}");
            assert!(explain(&e, false).contains("give kv.certfile"));
            assert!(explain(&e, true).contains("refused this node's client certificate"));
        }
    }
}
