//! Certificates for a cluster store behind TLS, made with openssl: a CA, etcd's server
//! certificate for its address, a client certificate for the nodes, and a second CA
//! that signed none of them (to test refusals). ECDSA P-256 keys, valid two days.
use std::path::{Path, PathBuf};

use crate::{cmd::run, Error, Result};

pub struct TlsFiles {
    pub dir: PathBuf,
}

impl TlsFiles {
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn other_ca(&self) -> PathBuf {
        self.dir.join("other-ca.pem")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("client.pem")
    }
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client.key")
    }

    /// Makes everything under `dir`; the server certificate names `server_ip`.
    pub fn create(dir: &Path, server_ip: &str) -> Result<TlsFiles> {
        std::fs::create_dir_all(dir).map_err(|e| Error::path("creating", dir, e))?;
        let t = TlsFiles {
            dir: dir.to_path_buf(),
        };
        t.ca_pair("ca", "netd test CA")?;
        t.ca_pair("other-ca", "another CA")?;
        t.leaf(
            "server",
            "etcd",
            &format!("subjectAltName=IP:{server_ip}\nextendedKeyUsage=serverAuth\n"),
        )?;
        t.leaf("client", "netd node", "extendedKeyUsage=clientAuth\n")?;
        Ok(t)
    }

    fn p(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    fn ca_pair(&self, name: &str, cn: &str) -> Result<()> {
        run(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &self.p(&format!("{name}.key")),
                "-out",
                &self.p(&format!("{name}.pem")),
                "-days",
                "2",
                "-subj",
                &format!("/CN={cn}"),
            ],
        )
        .map(|_| ())
    }

    /// A key and a certificate signed by the CA, with X.509v3 extensions `ext`.
    fn leaf(&self, name: &str, cn: &str, ext: &str) -> Result<()> {
        let (key, csr, pem, extf) = (
            self.p(&format!("{name}.key")),
            self.p(&format!("{name}.csr")),
            self.p(&format!("{name}.pem")),
            self.p(&format!("{name}.ext")),
        );
        std::fs::write(&extf, ext).map_err(|e| Error::path("writing", Path::new(&extf), e))?;
        run(
            "openssl",
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={cn}"),
            ],
        )?;
        run(
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &self.p("ca.pem"),
                "-CAkey",
                &self.p("ca.key"),
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &extf,
            ],
        )
        .map(|_| ())
    }
}
