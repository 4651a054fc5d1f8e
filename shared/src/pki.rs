//! A small certificate authority, so that nobody needs openssl to run connwatch: it
//! mints the CA, the aggregator's server certificate and the collectors' and operators'
//! client certificates. Tests and the demo use it to mint every certificate they need,
//! good and bad.

use crate::identity::Identity;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;
use time::OffsetDateTime;

/// The CA certificate's file name in a CA folder.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA key's file name in a CA folder.
pub const CA_KEY_FILE: &str = "ca.key";
/// The aggregator's server certificate in a CA folder.
pub const SERVER_CERT_FILE: &str = "server.pem";
/// The aggregator's server key in a CA folder.
pub const SERVER_KEY_FILE: &str = "server.key";

/// Why a certificate could not be made, loaded or written.
#[derive(Debug, Error)]
pub enum PkiError {
    /// rcgen refused the parameters or failed to sign.
    #[error("cannot create the certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A file exists where a new one would be written.
    #[error("{0} already exists; pass --force to replace it, or choose another --dir")]
    Exists(PathBuf),
    /// A certificate or revocation list does not parse.
    #[error("{path} is not a PEM {what}: {why}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What it should hold.
        what: &'static str,
        /// What is wrong.
        why: String,
    },
}

/// A revoked certificate: its serial number and when it was revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// The serial number, as the certificate encodes it.
    pub serial: Vec<u8>,
    /// When it was revoked.
    pub at: OffsetDateTime,
}

impl Revoked {
    /// The certificate with this serial number, revoked now.
    pub fn now(serial: Vec<u8>) -> Revoked {
        Revoked {
            serial,
            at: OffsetDateTime::now_utc(),
        }
    }
}

/// The serial number of the (first) certificate in a PEM file.
pub fn serial_of(path: &Path) -> Result<Vec<u8>, PkiError> {
    let parse = |why: String| PkiError::Parse {
        path: path.to_path_buf(),
        what: "certificate",
        why,
    };
    let bytes = std::fs::read(path).map_err(|error| PkiError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&bytes).map_err(|e| parse(e.to_string()))?;
    let cert = pem.parse_x509().map_err(|e| parse(e.to_string()))?;
    Ok(cert.raw_serial().to_vec())
}

/// The entries of the revocation lists in a PEM file (none when it does not exist).
pub fn read_revoked(path: &Path) -> Result<Vec<Revoked>, PkiError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(PkiError::Io {
                path: path.to_path_buf(),
                error,
            });
        }
    };
    let parse = |why: String| PkiError::Parse {
        path: path.to_path_buf(),
        what: "certificate revocation list",
        why,
    };
    let mut out = Vec::new();
    for pem in x509_parser::pem::Pem::iter_from_buffer(&bytes) {
        let pem = pem.map_err(|e| parse(e.to_string()))?;
        let (_, crl) =
            x509_parser::parse_x509_crl(&pem.contents).map_err(|e| parse(e.to_string()))?;
        for r in crl.iter_revoked_certificates() {
            out.push(Revoked {
                serial: r.raw_serial().to_vec(),
                at: r.revocation_date.to_datetime(),
            });
        }
    }
    Ok(out)
}

/// A certificate and its private key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
    /// The certificate, DER-encoded.
    pub cert_der: Vec<u8>,
}

/// Paths of a certificate and key written to disk.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The certificate file.
    pub cert: PathBuf,
    /// The private key file (mode 0600 on Unix).
    pub key: PathBuf,
}

impl IssuedCert {
    /// Writes `<dir>/<stem>.pem` and `<dir>/<stem>.key`; refuses to overwrite unless `force`.
    pub fn write(&self, dir: &Path, stem: &str, force: bool) -> Result<CertFiles, PkiError> {
        let files = CertFiles {
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}.key")),
        };
        for path in [&files.cert, &files.key] {
            if !force && path.exists() {
                return Err(PkiError::Exists(path.clone()));
            }
        }
        std::fs::create_dir_all(dir).map_err(|error| PkiError::Io {
            path: dir.to_path_buf(),
            error,
        })?;
        write_file(&files.cert, self.cert_pem.as_bytes(), false)?;
        write_file(&files.key, self.key_pem.as_bytes(), true)?;
        Ok(files)
    }
}

fn write_file(path: &Path, bytes: &[u8], secret: bool) -> Result<(), PkiError> {
    let io = |error| PkiError::Io {
        path: path.to_path_buf(),
        error,
    };
    std::fs::write(path, bytes).map_err(io)?;
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    #[cfg(not(unix))]
    let _ = secret;
    Ok(())
}

/// What a leaf certificate should say. Defaults: valid from an hour ago for a year.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    /// The subject's common name.
    pub common_name: String,
    /// DNS names (server certificates).
    pub dns_names: Vec<String>,
    /// IP addresses (server certificates).
    pub ip_addrs: Vec<IpAddr>,
    /// URI SANs; connwatch identities go here.
    pub uris: Vec<String>,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// Server authentication (true) or client authentication (false).
    pub server: bool,
}

impl LeafSpec {
    /// A client certificate proving `identity`.
    pub fn client(identity: &Identity) -> LeafSpec {
        LeafSpec {
            common_name: format!("{} {}", identity.role, identity.name),
            uris: vec![identity.san_uri()],
            ..LeafSpec::blank(false)
        }
    }

    /// A server certificate for the given DNS names and IP addresses.
    pub fn server(dns_names: &[String], ip_addrs: &[IpAddr]) -> LeafSpec {
        LeafSpec {
            common_name: dns_names
                .first()
                .cloned()
                .unwrap_or_else(|| "connwatch-aggregator".into()),
            dns_names: dns_names.to_vec(),
            ip_addrs: ip_addrs.to_vec(),
            ..LeafSpec::blank(true)
        }
    }

    /// A certificate with no SANs, valid for a year from an hour ago.
    pub fn blank(server: bool) -> LeafSpec {
        let now = OffsetDateTime::now_utc();
        LeafSpec {
            common_name: "connwatch".into(),
            dns_names: Vec::new(),
            ip_addrs: Vec::new(),
            uris: Vec::new(),
            not_before: now - time::Duration::hours(1),
            not_after: now + time::Duration::days(365),
            server,
        }
    }

    /// Sets the end of validity to `valid_for` from now (start an hour ago).
    pub fn valid_for(mut self, valid_for: Duration) -> LeafSpec {
        let now = OffsetDateTime::now_utc();
        self.not_before = now - time::Duration::hours(1);
        self.not_after = now + valid_for;
        self
    }
}

/// The parameters of a CA certificate named `common_name`, valid for ten years.
fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "connwatch");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(3650);
    params
}

/// A certificate authority: its certificate and signing key.
pub struct CertAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl CertAuthority {
    /// Creates a new CA with the given common name, valid for ten years.
    pub fn generate(common_name: &str) -> Result<CertAuthority, PkiError> {
        let params = ca_params(common_name);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(CertAuthority {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Creates an intermediate CA with the given common name, signed by this one, valid
    /// for ten years: for chains of more than one link, as public services present.
    pub fn intermediate(&self, common_name: &str) -> Result<CertAuthority, PkiError> {
        let mut params = ca_params(common_name);
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertAuthority {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads `ca.pem` and `ca.key` from a CA folder made by [`CertAuthority::save`].
    pub fn load(dir: &Path) -> Result<CertAuthority, PkiError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|error| PkiError::Io { path, error })
        };
        let cert_pem = read(CA_CERT_FILE)?;
        let key = KeyPair::from_pem(&read(CA_KEY_FILE)?)?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)?;
        Ok(CertAuthority { issuer, cert_pem })
    }

    /// Writes `ca.pem` and `ca.key` (mode 0600) into `dir`.
    pub fn save(&self, dir: &Path, force: bool) -> Result<CertFiles, PkiError> {
        let issued = IssuedCert {
            cert_pem: self.cert_pem.clone(),
            key_pem: self.issuer.key().serialize_pem(),
            cert_der: Vec::new(),
        };
        issued.write(dir, "ca", force)
    }

    /// The CA certificate, PEM-encoded.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A revocation list of `revoked`, signed by this CA, valid for `valid_for`, PEM.
    /// Its number is the time of signing, so a newer list always has a larger one.
    pub fn revocation_list(
        &self,
        revoked: &[Revoked],
        valid_for: Duration,
    ) -> Result<String, PkiError> {
        let now = OffsetDateTime::now_utc();
        let params = rcgen::CertificateRevocationListParams {
            this_update: now,
            next_update: now + valid_for,
            crl_number: rcgen::SerialNumber::from(u64::try_from(now.unix_timestamp()).unwrap_or(0)),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|r| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from_slice(&r.serial),
                    revocation_time: r.at,
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }

    /// Issues a leaf certificate with a fresh key.
    pub fn issue(&self, spec: &LeafSpec) -> Result<IssuedCert, PkiError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, spec.common_name.as_str());
        params.distinguished_name = dn;
        let mut sans = Vec::new();
        for name in &spec.dns_names {
            sans.push(SanType::DnsName(name.clone().try_into()?));
        }
        for ip in &spec.ip_addrs {
            sans.push(SanType::IpAddress(*ip));
        }
        for uri in &spec.uris {
            sans.push(SanType::URI(uri.clone().try_into()?));
        }
        params.subject_alt_names = sans;
        params.not_before = spec.not_before;
        params.not_after = spec.not_after;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![if spec.server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Role;

    #[test]
    fn issued_client_certs_carry_their_identity_and_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = CertAuthority::generate("test CA").expect("ca");
        ca.save(dir.path(), false).expect("save");
        assert!(matches!(
            ca.save(dir.path(), false),
            Err(PkiError::Exists(_))
        ));
        let ca = CertAuthority::load(dir.path()).expect("load");
        let id = Identity {
            role: Role::Collector,
            name: "conn-7".into(),
        };
        let leaf = ca.issue(&LeafSpec::client(&id)).expect("issue");
        assert_eq!(Identity::from_cert_der(&leaf.cert_der), Ok(id));
    }
}
