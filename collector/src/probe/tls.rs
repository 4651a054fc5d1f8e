//! TLS handshakes that report what the server presented: a certificate verifier that
//! records the chain and judges it instead of aborting, so a chain from an unexpected
//! issuer (a TLS-inspecting device) is seen, not just refused. Used by the endpoint and
//! backend probes.
//!
//! A chain is judged from the leaf up, by signatures: whether it verifies against the
//! roots (for the server name, now), and whether it is signed up to a root named among
//! the expected issuers. The names a chain shows prove nothing on their own: anyone can
//! mint a leaf whose issuer reads like the genuine intermediate.

use connwatch_shared::wire::{PresentedCertificate, TlsResult};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{
    AlertDescription, ClientConfig, DigitallySignedStruct, PeerIncompatible, RootCertStore,
    SignatureScheme,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use x509_parser::prelude::{FromDer, X509Certificate, X509Name};

/// The roots a presented chain is verified against.
#[derive(Debug, Clone, Copy)]
pub enum Roots<'a> {
    /// None: the chain is recorded, not verified.
    None,
    /// The public roots (Mozilla's, compiled in from `webpki-roots`). Compiled in, not
    /// read from the host: a TLS-inspection product installs its own root into the
    /// host's store, and the check must not trust what it is looking for.
    Public,
    /// These certificates (DER).
    Given(&'a [Vec<u8>]),
}

impl<'a> Roots<'a> {
    /// `given`, or the public roots when it is empty: for the cloud endpoints.
    pub fn or_public(given: &'a [Vec<u8>]) -> Roots<'a> {
        if given.is_empty() {
            Roots::Public
        } else {
            Roots::Given(given)
        }
    }

    /// `given`, or no verification when it is empty: for internal applications, whose
    /// CA is the organisation's own.
    pub fn or_none(given: &'a [Vec<u8>]) -> Roots<'a> {
        if given.is_empty() {
            Roots::None
        } else {
            Roots::Given(given)
        }
    }

    /// The trust anchors; `Ok(None)` when nothing is to be verified.
    fn store(self) -> Result<Option<RootCertStore>, String> {
        match self {
            Roots::None => Ok(None),
            Roots::Public => Ok(Some(RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            })),
            Roots::Given(given) => {
                let mut store = RootCertStore::empty();
                let (_, rejected) =
                    store.add_parsable_certificates(given.iter().map(|r| r.as_slice().into()));
                if store.is_empty() {
                    return Err(format!(
                        "the configured CA certificates cannot be used: none of the {rejected} is a usable root certificate"
                    ));
                }
                Ok(Some(store))
            }
        }
    }
}

/// The roots a chain is judged against, and those of them named as expected issuers.
#[derive(Debug)]
struct Judge {
    roots: RootCertStore,
    expected: RootCertStore,
}

/// What the judge found of one presented chain.
#[derive(Debug, Clone, Default)]
struct Judgement {
    verified: bool,
    error: Option<String>,
    issuer_expected: bool,
}

impl Judge {
    fn new(roots: RootCertStore, expected_issuers: &[String]) -> Judge {
        let expected = RootCertStore {
            roots: roots
                .roots
                .iter()
                .filter(|a| {
                    anchor_name(a).is_some_and(|name| name_matches(&name, expected_issuers))
                })
                .cloned()
                .collect(),
        };
        Judge { roots, expected }
    }

    fn judge(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
        provider: &CryptoProvider,
    ) -> Judgement {
        let algs = provider.signature_verification_algorithms.all;
        let leaf = match ParsedCertificate::try_from(end_entity) {
            Ok(l) => l,
            Err(e) => {
                return Judgement {
                    error: Some(format!("certificate verification failed: {e}")),
                    ..Default::default()
                };
            }
        };
        let verified =
            verify_server_cert_signed_by_trust_anchor(&leaf, &self.roots, intermediates, now, algs)
                .and_then(|()| verify_server_name(&leaf, server_name));
        // Where the chain comes from is judged apart from time and name: a genuine chain
        // that expired, or a host whose clock is off, is not an unexpected issuer (the
        // verification error says what is wrong instead).
        let signed_by_expected = |at: UnixTime| {
            !self.expected.is_empty()
                && verify_server_cert_signed_by_trust_anchor(
                    &leaf,
                    &self.expected,
                    intermediates,
                    at,
                    algs,
                )
                .is_ok()
        };
        let issuer_expected =
            signed_by_expected(now) || within_validity(end_entity).is_some_and(signed_by_expected);
        Judgement {
            verified: verified.is_ok(),
            error: verified
                .err()
                .map(|e| format!("certificate verification failed: {e}")),
            issuer_expected,
        }
    }
}

/// A moment within the certificate's validity (its middle).
fn within_validity(der: &[u8]) -> Option<UnixTime> {
    let (_, c) = X509Certificate::from_der(der).ok()?;
    let from = c.validity().not_before.timestamp();
    let to = c.validity().not_after.timestamp();
    let middle = from.checked_add(to.checked_sub(from)? / 2)?;
    Some(UnixTime::since_unix_epoch(Duration::from_secs(
        u64::try_from(middle).ok()?,
    )))
}

/// A trust anchor's subject as a distinguished name (`CN=..., O=...`).
pub(crate) fn anchor_name(anchor: &TrustAnchor<'_>) -> Option<String> {
    // The anchor keeps the contents of the subject's SEQUENCE: put the tag and length
    // back to parse it as a Name.
    let contents: &[u8] = anchor.subject.as_ref();
    let mut der = Vec::with_capacity(contents.len() + 4);
    der.push(0x30);
    match u8::try_from(contents.len()) {
        Ok(n) if n < 0x80 => der.push(n),
        Ok(n) => der.extend([0x81, n]),
        Err(_) => {
            der.push(0x82);
            der.extend(u16::try_from(contents.len()).ok()?.to_be_bytes());
        }
    }
    der.extend_from_slice(contents);
    let (_, name) = X509Name::from_der(&der).ok()?;
    Some(name.to_string())
}

/// Whether a distinguished name contains one of `expected` (any case).
fn name_matches(name: &str, expected: &[String]) -> bool {
    let name = name.to_ascii_lowercase();
    expected
        .iter()
        .any(|e| !e.is_empty() && name.contains(&e.to_ascii_lowercase()))
}

/// Records the presented chain and, when there are roots, judges it.
#[derive(Debug)]
struct Recorder {
    provider: Arc<CryptoProvider>,
    judge: Option<Judge>,
    seen: Mutex<Seen>,
}

#[derive(Debug, Default, Clone)]
struct Seen {
    chain: Vec<CertificateDer<'static>>,
    judgement: Option<Judgement>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let judgement = self
            .judge
            .as_ref()
            .map(|j| j.judge(end_entity, intermediates, server_name, now, &self.provider));
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.chain = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.clone().into_owned())
            .collect();
        seen.judgement = judgement;
        // Accepted here so the handshake goes on and its version and cipher are seen;
        // the judgement is reported, not enforced.
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

/// Runs a TLS handshake over `tcp`, recording the chain; `roots` verify it, and
/// `expected_issuers` name the roots (parts of their names, any case) it must be signed
/// up to.
pub async fn handshake(
    tcp: TcpStream,
    server_name: &str,
    roots: Roots<'_>,
    expected_issuers: &[String],
    alpn_http1: bool,
) -> Handshake {
    let mut result = TlsResult {
        issuer_checked: !expected_issuers.is_empty(),
        ..Default::default()
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let judge = match roots.store() {
        Ok(store) => store.map(|s| Judge::new(s, expected_issuers)),
        Err(e) => {
            result.error = e;
            return Handshake {
                result,
                stream: None,
            };
        }
    };
    let recorder = Arc::new(Recorder {
        provider: provider.clone(),
        judge,
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
    result.chain_verified = seen.judgement.as_ref().map(|j| j.verified);
    let judgement = seen.judgement.unwrap_or_default();
    result.issuer_expected = judgement.issuer_expected;
    if outcome.is_err() {
        // A chain is only vouched for by a server that then proves it holds the key:
        // a device replaying the genuine chain fails the handshake. A failed handshake
        // keeps a chain that did not verify as such, and claims nothing else.
        if result.chain_verified == Some(true) {
            result.chain_verified = None;
        }
        result.issuer_expected = false;
    }
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
            result.error = judgement.error.unwrap_or_default();
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

#[cfg(test)]
mod tests {
    use super::test_server::serve;
    use super::*;
    use connwatch_shared::pki::{CertAuthority, IssuedCert, LeafSpec};
    use std::net::SocketAddr;

    const ROOT: &str = "connwatch test cloud root";
    const ISSUING: &str = "connwatch test cloud issuing CA 01";

    #[test]
    fn issuers_match_by_part_of_the_name_in_any_case() {
        let name = "CN=Contoso Root, O=Contoso";
        assert!(name_matches(name, &["contoso root".into()]));
        assert!(!name_matches(
            name,
            &["connectorregistrationca.msappproxy.net".into()]
        ));
        assert!(!name_matches(name, &[String::new()]));
    }

    #[test]
    fn every_public_root_has_a_readable_name() {
        let names: Vec<String> = webpki_roots::TLS_SERVER_ROOTS
            .iter()
            .map(|a| anchor_name(a).expect("a distinguished name"))
            .collect();
        assert!(names.len() > 100, "{}", names.len());
        for root in [
            "DigiCert Global Root G2",
            "Microsoft RSA Root Certificate Authority 2017",
        ] {
            assert!(
                names.iter().any(|n| n.contains(root)),
                "{root} is among the public roots"
            );
        }
    }

    fn der(pem: &str) -> Vec<u8> {
        let mut pem = pem.as_bytes();
        rustls_pemfile::certs(&mut pem)
            .next()
            .expect("a certificate")
            .expect("pem")
            .to_vec()
    }

    fn leaf(ca: &CertAuthority) -> IssuedCert {
        ca.issue(&LeafSpec::server(
            &["localhost".into()],
            &["127.0.0.1".parse().expect("ip")],
        ))
        .expect("issue")
    }

    async fn shake(addr: SocketAddr, name: &str, roots: Roots<'_>, expected: &[&str]) -> TlsResult {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let expected: Vec<String> = expected.iter().map(|e| e.to_string()).collect();
        let h = handshake(tcp, name, roots, &expected, false).await;
        assert_eq!(h.result.protocol, "TLSv1.3", "{:?}", h.result);
        h.result
    }

    /// The genuine hierarchy: a root and the intermediate it signed.
    struct Genuine {
        root: CertAuthority,
        issuing: CertAuthority,
    }

    impl Genuine {
        fn new() -> Genuine {
            let root = CertAuthority::generate(ROOT).expect("root");
            let issuing = root.intermediate(ISSUING).expect("intermediate");
            Genuine { root, issuing }
        }

        fn roots(&self) -> Vec<Vec<u8>> {
            vec![der(self.root.cert_pem())]
        }

        fn issuing_der(&self) -> Vec<u8> {
            der(self.issuing.cert_pem())
        }
    }

    #[tokio::test]
    async fn a_genuine_chain_verifies_up_to_the_expected_root() {
        let g = Genuine::new();
        let addr = serve(&leaf(&g.issuing), &[g.issuing_der()]).await;
        let roots = g.roots();
        let tls = shake(addr, "localhost", Roots::Given(&roots), &[ROOT]).await;
        assert_eq!(tls.chain_verified, Some(true), "{tls:?}");
        assert!(tls.issuer_checked && tls.issuer_expected, "{tls:?}");
        assert_eq!(tls.error, "");
        assert_eq!(tls.chain.len(), 2);
        assert!(tls.chain[0].issuer.contains(ISSUING), "{tls:?}");
    }

    #[tokio::test]
    async fn a_forged_leaf_beside_the_genuine_intermediate_is_not_verified() {
        let g = Genuine::new();
        // The attacker's key, under the genuine intermediate's very name.
        let forger = CertAuthority::generate(ISSUING).expect("forger");
        let addr = serve(&leaf(&forger), &[g.issuing_der()]).await;
        let roots = g.roots();
        let tls = shake(addr, "localhost", Roots::Given(&roots), &[ROOT, ISSUING]).await;
        assert_eq!(
            tls.chain[0].issuer, tls.chain[1].subject,
            "the names line up: only the signatures tell"
        );
        assert_eq!(tls.chain_verified, Some(false), "{tls:?}");
        assert!(!tls.issuer_expected, "{tls:?}");
        assert!(tls.error.contains("verification failed"), "{tls:?}");
    }

    #[tokio::test]
    async fn an_inspecting_ca_naming_its_intermediate_like_the_genuine_one_is_caught() {
        let g = Genuine::new();
        let inspector = CertAuthority::generate("Contoso TLS Inspection Root").expect("ca");
        let lookalike = inspector.intermediate(ISSUING).expect("intermediate");
        let addr = serve(
            &leaf(&lookalike),
            &[der(lookalike.cert_pem()), der(inspector.cert_pem())],
        )
        .await;
        let roots = g.roots();
        let tls = shake(addr, "localhost", Roots::Given(&roots), &[ROOT, ISSUING]).await;
        assert_eq!(tls.chain_verified, Some(false), "{tls:?}");
        assert!(!tls.issuer_expected, "{tls:?}");
        assert!(tls.error.contains("UnknownIssuer"), "{tls:?}");
    }

    #[tokio::test]
    async fn a_chain_to_a_trusted_but_unexpected_root_verifies_and_is_not_expected() {
        // The inspecting device's root is among the roots, as a host that has it
        // installed would trust it: the chain verifies, but not up to an expected root.
        let g = Genuine::new();
        let inspector = CertAuthority::generate("Contoso TLS Inspection Root").expect("ca");
        let lookalike = inspector.intermediate(ISSUING).expect("intermediate");
        let addr = serve(&leaf(&lookalike), &[der(lookalike.cert_pem())]).await;
        let mut roots = g.roots();
        roots.push(der(inspector.cert_pem()));
        let tls = shake(addr, "localhost", Roots::Given(&roots), &[ROOT]).await;
        assert_eq!(tls.chain_verified, Some(true), "{tls:?}");
        assert_eq!(tls.error, "");
        assert!(tls.issuer_checked && !tls.issuer_expected, "{tls:?}");
    }

    #[tokio::test]
    async fn a_certificate_for_another_name_is_not_verified() {
        let g = Genuine::new();
        let addr = serve(&leaf(&g.issuing), &[g.issuing_der()]).await;
        let roots = g.roots();
        let tls = shake(addr, "login.example.net", Roots::Given(&roots), &[ROOT]).await;
        assert_eq!(tls.chain_verified, Some(false), "{tls:?}");
        assert!(tls.error.contains("not valid for name"), "{tls:?}");
        assert!(
            tls.issuer_expected,
            "the genuine issuer, for the wrong name"
        );
    }

    #[tokio::test]
    async fn the_public_roots_refuse_a_private_root_named_like_a_public_one() {
        let fake_root = CertAuthority::generate("DigiCert Global Root G2").expect("ca");
        let issuing = fake_root
            .intermediate("Microsoft Azure RSA TLS Issuing CA 04")
            .expect("intermediate");
        let addr = serve(&leaf(&issuing), &[der(issuing.cert_pem())]).await;
        let tls = shake(
            addr,
            "localhost",
            Roots::Public,
            &["DigiCert Global Root G2"],
        )
        .await;
        assert_eq!(tls.chain_verified, Some(false), "{tls:?}");
        assert!(!tls.issuer_expected, "{tls:?}");
    }

    #[tokio::test]
    async fn without_roots_the_chain_is_recorded_and_not_judged() {
        let g = Genuine::new();
        let addr = serve(&leaf(&g.issuing), &[g.issuing_der()]).await;
        let tls = shake(addr, "localhost", Roots::None, &[]).await;
        assert_eq!(tls.chain_verified, None, "{tls:?}");
        assert!(!tls.issuer_checked && !tls.issuer_expected);
        assert_eq!(tls.error, "");
        assert_eq!(tls.chain.len(), 2);
    }
}

/// A TLS server for the probes' tests.
#[cfg(test)]
pub(crate) mod test_server {
    use connwatch_shared::pki::IssuedCert;
    use rustls::pki_types::CertificateDer;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use tokio::net::TcpListener;

    /// A rustls server on loopback presenting `leaf` and then `rest` (DER), as given;
    /// it completes handshakes and holds each connection until the client goes.
    pub(crate) async fn serve(leaf: &IssuedCert, rest: &[Vec<u8>]) -> SocketAddr {
        let chain = std::iter::once(&leaf.cert_der)
            .chain(rest)
            .map(|c| CertificateDer::from(c.clone()))
            .collect();
        let key = rustls_pemfile::private_key(&mut leaf.key_pem.as_bytes())
            .expect("key pem")
            .expect("a key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut stream) = acceptor.accept(sock).await {
                        // Hold the connection open until the client goes away.
                        let mut buf = [0u8; 16];
                        let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await;
                    }
                });
            }
        });
        addr
    }
}
