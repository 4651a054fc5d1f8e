//! TLS handshakes that report what the server presented: a certificate verifier that
//! records the chain and the verification result instead of aborting, so a chain from
//! an unexpected issuer (a TLS-inspecting device) is seen, not just refused. Used by
//! the endpoint and backend probes.

use connwatch_shared::wire::{PresentedCertificate, TlsResult};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, ClientConfig, DigitallySignedStruct, PeerIncompatible, RootCertStore,
    SignatureScheme,
};
use std::sync::{Arc, Mutex};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Records the presented chain and, when roots are configured, whether it verifies.
#[derive(Debug)]
struct Recorder {
    provider: Arc<CryptoProvider>,
    verifier: Option<Arc<WebPkiServerVerifier>>,
    seen: Mutex<Seen>,
}

#[derive(Debug, Default, Clone)]
struct Seen {
    chain: Vec<CertificateDer<'static>>,
    verify_error: Option<String>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verify_error = self.verifier.as_ref().and_then(|v| {
            v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .err()
                .map(|e| format!("certificate verification failed: {e}"))
        });
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.chain = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.clone().into_owned())
            .collect();
        seen.verify_error = verify_error;
        // Accepted here so the handshake goes on and its version and cipher are seen;
        // the verification result is reported, not enforced.
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// What a handshake showed.
#[derive(Debug)]
pub struct Handshake {
    /// The facts for the report.
    pub result: TlsResult,
    /// The stream, when the handshake completed.
    pub stream: Option<TlsStream<TcpStream>>,
}

/// Runs a TLS handshake over `tcp`, recording the chain; `roots` (DER) verify it when
/// given; `expected_issuers` are matched against the chain's issuers.
pub async fn handshake(
    tcp: TcpStream,
    server_name: &str,
    roots: &[Vec<u8>],
    expected_issuers: &[String],
    alpn_http1: bool,
) -> Handshake {
    let mut result = TlsResult {
        issuer_checked: !expected_issuers.is_empty(),
        ..Default::default()
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = if roots.is_empty() {
        None
    } else {
        let mut store = RootCertStore::empty();
        for r in roots {
            let _ = store.add(CertificateDer::from(r.clone()));
        }
        match WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone()).build()
        {
            Ok(v) => Some(v),
            Err(e) => {
                result.error = format!("the configured CA certificates cannot be used: {e}");
                return Handshake {
                    result,
                    stream: None,
                };
            }
        }
    };
    let recorder = Arc::new(Recorder {
        provider: provider.clone(),
        verifier,
        seen: Mutex::new(Seen::default()),
    });
    let config =
        match ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions() {
            Ok(b) => b,
            Err(e) => {
                result.error = format!("cannot set up TLS: {e}");
                return Handshake {
                    result,
                    stream: None,
                };
            }
        };
    let mut config = config
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    if alpn_http1 {
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
    }
    let name = match ServerName::try_from(server_name.to_string()) {
        Ok(n) => n,
        Err(e) => {
            result.error = format!("`{server_name}` is not a valid TLS server name: {e}");
            return Handshake {
                result,
                stream: None,
            };
        }
    };
    let outcome = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await;
    let seen = recorder
        .seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    result.chain = seen.chain.iter().map(|c| describe(c)).collect();
    result.issuer_expected = issuer_expected(&result.chain, expected_issuers);
    match outcome {
        Ok(stream) => {
            let (_, conn) = stream.get_ref();
            result.protocol = conn
                .protocol_version()
                .map(protocol_name)
                .unwrap_or_default();
            result.cipher_suite = conn
                .negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()))
                .unwrap_or_default();
            result.version_too_old = matches!(
                result.protocol.as_str(),
                "TLSv1.0" | "TLSv1.1" | "SSLv3" | "SSLv2"
            );
            result.error = seen.verify_error.unwrap_or_default();
            Handshake {
                result,
                stream: Some(stream),
            }
        }
        Err(e) => {
            let tls_error = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>());
            result.version_too_old = tls_error.is_some_and(too_old);
            result.error = if result.version_too_old {
                format!("the server offers no TLS 1.2 or later: the handshake failed with: {e}")
            } else {
                format!("TLS handshake failed: {e}")
            };
            Handshake {
                result,
                stream: None,
            }
        }
    }
}

/// A handshake failure that means the server only speaks an older protocol.
fn too_old(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::AlertReceived(AlertDescription::ProtocolVersion)
            | rustls::Error::PeerIncompatible(PeerIncompatible::ServerDoesNotSupportTls12Or13)
            | rustls::Error::PeerIncompatible(
                PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig
            )
    )
}

fn protocol_name(v: rustls::ProtocolVersion) -> String {
    match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".into(),
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".into(),
        rustls::ProtocolVersion::TLSv1_1 => "TLSv1.1".into(),
        rustls::ProtocolVersion::TLSv1_0 => "TLSv1.0".into(),
        other => format!("{other:?}"),
    }
}

/// Subject, issuer and expiry of one presented certificate.
pub fn describe(der: &[u8]) -> PresentedCertificate {
    match X509Certificate::from_der(der) {
        Ok((_, c)) => PresentedCertificate {
            subject: c.subject().to_string(),
            issuer: c.issuer().to_string(),
            not_after_ms: c.validity().not_after.timestamp().saturating_mul(1000),
        },
        Err(e) => PresentedCertificate {
            subject: format!("(unreadable certificate: {e})"),
            ..Default::default()
        },
    }
}

/// Whether any certificate of the chain was issued by one of `expected` (matched as a
/// case-insensitive part of the issuer's distinguished name).
pub fn issuer_expected(chain: &[PresentedCertificate], expected: &[String]) -> bool {
    chain.iter().any(|c| {
        let issuer = c.issuer.to_ascii_lowercase();
        expected
            .iter()
            .any(|e| !e.is_empty() && issuer.contains(&e.to_ascii_lowercase()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuers_match_by_part_of_the_name_in_any_case() {
        let chain = [
            PresentedCertificate {
                subject: "CN=login".into(),
                issuer: "CN=Contoso Inspection CA, O=Contoso".into(),
                not_after_ms: 0,
            },
            PresentedCertificate {
                subject: "CN=Contoso Inspection CA".into(),
                issuer: "CN=Contoso Root".into(),
                not_after_ms: 0,
            },
        ];
        assert!(issuer_expected(&chain, &["contoso root".into()]));
        assert!(!issuer_expected(
            &chain,
            &["connectorregistrationca.msappproxy.net".into()]
        ));
        assert!(!issuer_expected(&chain, &[String::new()]));
    }
}
