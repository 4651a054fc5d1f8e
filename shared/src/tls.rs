//! TLS set-up in one place: PEM files become tonic/rustls configurations, and every
//! error names the file it is about. Every connection is mutual TLS; there is no
//! plaintext mode.

use std::path::{Path, PathBuf};
use thiserror::Error;
use tonic::transport::{Certificate, ClientTlsConfig, Identity as TlsIdentity};

/// Why TLS material could not be loaded.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error(
        "cannot read {path}: {error}; check the path in the config, or issue the certificate with `connwatch-aggregator ca init` / `ca issue`"
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A file holds no PEM item of the expected kind.
    #[error("{path} holds no {what} in PEM form; {fix}")]
    Empty {
        /// The file.
        path: PathBuf,
        /// What was expected ("certificate", "private key").
        what: &'static str,
        /// What to do about it.
        fix: &'static str,
    },
    /// A file parses but cannot be used (a malformed certificate, a key that does not
    /// belong to the certificate).
    #[error("{path}: {error}; {fix}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        error: String,
        /// What to do about it.
        fix: &'static str,
    },
}

impl TlsError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            TlsError::Read { path, .. }
            | TlsError::Empty { path, .. }
            | TlsError::Invalid { path, .. } => path,
        }
    }
}

/// Paths of the PEM files one side of a mutual-TLS connection needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA that signed the peer's certificate.
    pub ca: PathBuf,
    /// This side's certificate (chain).
    pub cert: PathBuf,
    /// This side's private key.
    pub key: PathBuf,
}

/// PEM bytes read and checked from [`TlsFiles`]. Equal values mean unchanged files,
/// which is how the collector notices renewed certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsMaterial {
    /// The CA certificate(s).
    pub ca_pem: Vec<u8>,
    /// This side's certificate chain.
    pub cert_pem: Vec<u8>,
    /// This side's private key.
    pub key_pem: Vec<u8>,
}

const FIX_CERT: &str = "issue one with `connwatch-aggregator ca init` / `ca issue`";

impl TlsFiles {
    /// The config key that names the file an error is about, as `section.ca`,
    /// `section.cert` or `section.key` (`None` when it names none of them), so an error
    /// can say which setting to fix as well as which file.
    pub fn key_for(&self, error: &TlsError, section: &str) -> Option<String> {
        let path = error.path();
        [("ca", &self.ca), ("cert", &self.cert), ("key", &self.key)]
            .into_iter()
            .find(|(_, p)| p.as_path() == path)
            .map(|(k, _)| format!("{section}.{k}"))
    }

    /// Reads the three files and checks that each holds what it should.
    pub fn load(&self) -> Result<TlsMaterial, TlsError> {
        let ca_pem = read(&self.ca)?;
        count_certs(&self.ca, &ca_pem)?;
        let cert_pem = read(&self.cert)?;
        count_certs(&self.cert, &cert_pem)?;
        let key_pem = read(&self.key)?;
        let mut reader = key_pem.as_slice();
        match rustls_pemfile::private_key(&mut reader) {
            Ok(Some(_)) => {}
            _ => {
                return Err(TlsError::Empty {
                    path: self.key.clone(),
                    what: "private key",
                    fix: FIX_CERT,
                });
            }
        }
        Ok(TlsMaterial {
            ca_pem,
            cert_pem,
            key_pem,
        })
    }
}

impl TlsFiles {
    /// The server side as a rustls configuration: present our certificate, require a
    /// client certificate that chains to the CA and is not on the revocation list (a
    /// PEM file of CRLs signed by the CA, when given), speak HTTP/2. The aggregator
    /// builds one at start and again on reload, so renewed files and a newer list take
    /// effect without a restart.
    pub fn server_config(&self, crl: Option<&Path>) -> Result<rustls::ServerConfig, TlsError> {
        let material = self.load()?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut material.ca_pem.as_slice()) {
            let cert = cert.map_err(|e| invalid(&self.ca, e, FIX_CERT))?;
            roots
                .add(cert)
                .map_err(|e| invalid(&self.ca, e, FIX_CERT))?;
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            provider.clone(),
        );
        if let Some(path) = crl {
            verifier = verifier
                .with_crls(revocation_lists(path, &self.ca, &material.ca_pem)?)
                // The CA itself is the trust anchor; only leaves can be revoked.
                .only_check_end_entity_revocation()
                // A list names what one CA revoked; certificates of another CA in the
                // bundle (during a CA rotation, say) are not refused for lacking one.
                .allow_unknown_revocation_status();
        }
        let verifier = verifier.build().map_err(|e| {
            let at = crl.unwrap_or(&self.ca);
            invalid(
                at,
                e,
                "check that the CA file and the revocation list belong together",
            )
        })?;
        let chain = rustls_pemfile::certs(&mut material.cert_pem.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(&self.cert, e, FIX_CERT))?;
        let key = match rustls_pemfile::private_key(&mut material.key_pem.as_slice()) {
            Ok(Some(key)) => key,
            _ => {
                return Err(TlsError::Empty {
                    path: self.key.clone(),
                    what: "private key",
                    fix: FIX_CERT,
                });
            }
        };
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(&self.cert, e, FIX_CERT))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| {
                invalid(
                    &self.cert,
                    e,
                    "check that the key file belongs to this certificate (both from the same `ca issue` run)",
                )
            })?;
        // gRPC is HTTP/2 only.
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

const FIX_CRL: &str = "write it with `connwatch-aggregator ca revoke`, or remove `crl` from [tls]";

/// The CRLs in a PEM file; at least one, each issued and signed by a CA in `ca_pem`.
/// rustls would take a list of another CA and simply never find a certificate on it,
/// which turns revocation off without a word; so a list is checked when it loads.
fn revocation_lists(
    path: &Path,
    ca_path: &Path,
    ca_pem: &[u8],
) -> Result<Vec<rustls::pki_types::CertificateRevocationListDer<'static>>, TlsError> {
    let pem = read(path)?;
    let crls = rustls_pemfile::crls(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(path, e, FIX_CRL))?;
    if crls.is_empty() {
        return Err(TlsError::Empty {
            path: path.to_path_buf(),
            what: "certificate revocation list",
            fix: FIX_CRL,
        });
    }
    let cas: Vec<_> = rustls_pemfile::certs(&mut &ca_pem[..])
        .filter_map(Result::ok)
        .collect();
    for crl in &crls {
        check_issuer(crl, &cas).map_err(|error| TlsError::Invalid {
            path: path.to_path_buf(),
            error: format!("{error} (the CA file is {})", ca_path.display()),
            fix: FIX_CRL_ISSUER,
        })?;
    }
    Ok(crls)
}

const FIX_CRL_ISSUER: &str = "a revocation list from another CA would refuse nothing; write this CA's list with `connwatch-aggregator ca revoke --dir <the CA's folder>`, or remove `crl` from [tls]";

/// Whether `crl` names one of `cas` as its issuer and carries that CA's signature.
fn check_issuer(
    crl: &rustls::pki_types::CertificateRevocationListDer<'_>,
    cas: &[rustls::pki_types::CertificateDer<'_>],
) -> Result<(), String> {
    use x509_parser::prelude::{CertificateRevocationList, FromDer, X509Certificate};
    let (_, list) = CertificateRevocationList::from_der(crl.as_ref())
        .map_err(|e| format!("a revocation list cannot be read: {e}"))?;
    let mut named = false;
    for der in cas {
        let Ok((_, ca)) = X509Certificate::from_der(der.as_ref()) else {
            continue;
        };
        if ca.subject().as_raw() != list.issuer().as_raw() {
            continue;
        }
        named = true;
        if list.verify_signature(ca.public_key()).is_ok() {
            return Ok(());
        }
    }
    Err(if named {
        format!(
            "the revocation list of `{}` does not carry that CA's signature",
            list.issuer()
        )
    } else {
        format!(
            "the revocation list was issued by `{}`, which is not a CA of this aggregator",
            list.issuer()
        )
    })
}

fn invalid(path: &Path, error: impl std::fmt::Display, fix: &'static str) -> TlsError {
    TlsError::Invalid {
        path: path.to_path_buf(),
        error: error.to_string(),
        fix,
    }
}

impl TlsMaterial {
    /// The client side: trust only the CA, present our certificate, and expect the
    /// server to be `server_name`.
    pub fn client_config(&self, server_name: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(TlsIdentity::from_pem(&self.cert_pem, &self.key_pem))
            .domain_name(server_name)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.to_path_buf(),
        error,
    })
}

fn count_certs(path: &Path, pem: &[u8]) -> Result<usize, TlsError> {
    let mut reader = pem;
    let n = rustls_pemfile::certs(&mut reader)
        .filter(|c| c.is_ok())
        .count();
    if n == 0 {
        return Err(TlsError::Empty {
            path: path.to_path_buf(),
            what: "certificate",
            fix: FIX_CERT,
        });
    }
    Ok(n)
}

/// Installs ring as the process's rustls crypto provider. ring builds with nothing but
/// a C compiler (aws-lc-rs wants cmake and more on some targets, including the Windows
/// cross-build), and it is what tonic's `tls-ring` feature links anyway, so one
/// provider serves the whole process. Calling it twice is harmless.
pub fn install_crypto_provider() {
    // Err means a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{CertAuthority, LeafSpec};

    #[test]
    fn server_config_errors_name_the_file_at_fault() {
        install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = CertAuthority::generate("test CA").expect("ca");
        ca.save(dir.path(), false).expect("save");
        let spec = LeafSpec::server(&["localhost".into()], &[]);
        ca.issue(&spec)
            .expect("issue")
            .write(dir.path(), "server", false)
            .expect("write");
        ca.issue(&spec)
            .expect("issue")
            .write(dir.path(), "other", false)
            .expect("write");
        let files = TlsFiles {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server.key"),
        };
        let config = files.server_config(None).expect("a good set loads");
        assert_eq!(config.alpn_protocols, [b"h2".to_vec()]);

        let mismatched = TlsFiles {
            key: dir.path().join("other.key"),
            ..files.clone()
        };
        let err = mismatched
            .server_config(None)
            .expect_err("key of another certificate");
        assert!(
            matches!(&err, TlsError::Invalid { path, .. } if path == &files.cert),
            "{err}"
        );
        assert!(err.to_string().contains("key file belongs"), "{err}");

        std::fs::write(dir.path().join("bad-ca.pem"), "not PEM").expect("write");
        let bad_ca = TlsFiles {
            ca: dir.path().join("bad-ca.pem"),
            ..files
        };
        let err = bad_ca.server_config(None).expect_err("no CA");
        assert!(err.to_string().contains("bad-ca.pem"), "{err}");
    }

    #[test]
    fn a_revocation_list_of_another_ca_is_refused_when_it_loads() {
        install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = CertAuthority::generate("test CA").expect("ca");
        ca.save(dir.path(), false).expect("save");
        ca.issue(&LeafSpec::server(&["localhost".into()], &[]))
            .expect("issue")
            .write(dir.path(), "server", false)
            .expect("write");
        let files = TlsFiles {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server.key"),
        };
        let week = std::time::Duration::from_secs(7 * 86_400);
        let ours = dir.path().join("crl.pem");
        std::fs::write(&ours, ca.revocation_list(&[], week).expect("crl")).expect("write");
        files
            .server_config(Some(&ours))
            .expect("this CA's list loads");

        // Another CA, and another CA that copies this one's name: both refused.
        for (stem, other) in [
            (
                "foreign",
                CertAuthority::generate("some other CA").expect("ca"),
            ),
            ("forged", CertAuthority::generate("test CA").expect("ca")),
        ] {
            let list = dir.path().join(format!("{stem}.pem"));
            std::fs::write(&list, other.revocation_list(&[], week).expect("crl")).expect("write");
            let err = files
                .server_config(Some(&list))
                .expect_err(stem)
                .to_string();
            assert!(err.contains(&format!("{stem}.pem")), "{err}");
            assert!(err.contains("ca revoke"), "{err}");
            let said = if stem == "foreign" {
                "not a CA of this aggregator"
            } else {
                "does not carry that CA's signature"
            };
            assert!(err.contains(said), "{stem}: {err}");
        }
    }
}
