//! Trust certificate probe: reads the connector's client certificate from a PEM or DER
//! file and reports its subject, issuer, serial, SHA-1 thumbprint, validity and
//! signature algorithm, and whether it matches the expected thumbprint.

use super::{Observation, Probe, blocking};
use crate::config::TrustCertConfig;
use connwatch_shared::wire::TrustCertificate;
use futures::future::BoxFuture;
use std::time::Duration;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Reads one trust certificate file.
pub struct TrustCertProbe {
    config: TrustCertConfig,
}

impl TrustCertProbe {
    /// A probe for one configured certificate file.
    pub fn new(config: TrustCertConfig) -> Self {
        TrustCertProbe { config }
    }
}

/// The first certificate of a PEM file, or the whole file as DER.
fn first_der(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.starts_with(b"-----") || bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        let mut reader = bytes;
        return rustls_pemfile::certs(&mut reader)
            .find_map(Result::ok)
            .map(|c| c.to_vec());
    }
    Some(bytes.to_vec())
}

/// Describes a DER certificate; `expected` is a normalised thumbprint.
pub fn describe(source: &str, der: &[u8], expected: Option<&str>) -> TrustCertificate {
    let mut out = TrustCertificate {
        source: source.to_string(),
        expected_thumbprint: expected.unwrap_or_default().to_string(),
        ..Default::default()
    };
    let cert = match X509Certificate::from_der(der) {
        Ok((_, c)) => c,
        Err(e) => {
            out.error = format!("not an X.509 certificate: {e}");
            return out;
        }
    };
    out.found = true;
    out.subject = cert.subject().to_string();
    out.issuer = cert.issuer().to_string();
    out.serial = cert
        .raw_serial_as_string()
        .replace(':', "")
        .to_ascii_uppercase();
    out.thumbprint = sha1_smol::Sha1::from(der)
        .digest()
        .to_string()
        .to_ascii_uppercase();
    out.not_before_ms = cert.validity().not_before.timestamp().saturating_mul(1000);
    out.not_after_ms = cert.validity().not_after.timestamp().saturating_mul(1000);
    let oid = &cert.signature_algorithm.algorithm;
    out.signature_algorithm =
        x509_parser::objects::oid2sn(oid, x509_parser::objects::oid_registry())
            .map(str::to_string)
            .unwrap_or_else(|_| oid.to_id_string());
    out.thumbprint_matched = expected.is_none_or(|e| e == out.thumbprint);
    out
}

fn read(config: &TrustCertConfig) -> TrustCertificate {
    let source = config.path.display().to_string();
    let expected = config.thumbprint.as_deref();
    let missing = |error: String| TrustCertificate {
        source: source.clone(),
        expected_thumbprint: expected.unwrap_or_default().to_string(),
        error,
        ..Default::default()
    };
    match std::fs::read(&config.path) {
        Ok(bytes) => match first_der(&bytes) {
            Some(der) => describe(&source, &der, expected),
            None => missing("the file holds no PEM certificate".into()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => missing(format!(
            "permission denied reading {source}: run the collector as an account that can read it"
        )),
        Err(e) => missing(format!("cannot read {source}: {e}")),
    }
}

impl Probe for TrustCertProbe {
    fn name(&self) -> String {
        format!("trust-cert:{}", self.config.path.display())
    }

    fn deadline(&self) -> Duration {
        Duration::from_secs(2)
    }

    fn run(&self) -> BoxFuture<'_, Observation> {
        let config = self.config.clone();
        Box::pin(blocking(self.name(), move || {
            Observation::TrustCert(read(&config))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connwatch_shared::pki::{CertAuthority, LeafSpec};

    #[test]
    fn pem_and_der_files_are_described_and_thumbprints_checked() {
        let ca = CertAuthority::generate("connectorregistrationca.example").expect("ca");
        let leaf = ca
            .issue(&LeafSpec::blank(false).valid_for(Duration::from_secs(5 * 86_400)))
            .expect("leaf");
        let dir = tempfile::tempdir().expect("tempdir");
        let pem = dir.path().join("trust.pem");
        let der = dir.path().join("trust.der");
        std::fs::write(&pem, &leaf.cert_pem).expect("write");
        std::fs::write(&der, &leaf.cert_der).expect("write");
        let thumb = sha1_smol::Sha1::from(&leaf.cert_der)
            .digest()
            .to_string()
            .to_ascii_uppercase();
        let from_pem = read(&TrustCertConfig {
            path: pem,
            thumbprint: Some(thumb.clone()),
        });
        assert!(
            from_pem.found && from_pem.thumbprint_matched,
            "{from_pem:?}"
        );
        assert!(from_pem.issuer.contains("connectorregistrationca.example"));
        let days_left = (from_pem.not_after_ms - connwatch_shared::time::now_ms()) / 86_400_000;
        assert_eq!(days_left, 4, "expires in 5 days, less a few ms");
        let from_der = read(&TrustCertConfig {
            path: der,
            thumbprint: Some("00".into()),
        });
        assert_eq!(from_der.thumbprint, thumb);
        assert!(!from_der.thumbprint_matched);
        let gone = read(&TrustCertConfig {
            path: dir.path().join("nope.pem"),
            thumbprint: None,
        });
        assert!(!gone.found && gone.error.contains("nope.pem"), "{gone:?}");
    }
}
