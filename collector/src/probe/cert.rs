//! Trust certificate probe: reads TrustSettings.xml (the thumbprint the connector
//! trusts and whether the certificate is in the Network Service user's store or the
//! machine's), finds the certificate in that one store, or in a PEM or DER file, and
//! reports its subject, issuer, serial, SHA-1 thumbprint, validity and signature
//! algorithm, and whether the thumbprint matched.

use super::{Observation, Probe};
use crate::config::{TrustCertConfig, normalise_thumbprint};
use crate::platform::{CertStore, CertStoreKind};
use connwatch_shared::wire::TrustCertificate;
use futures::future::BoxFuture;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The issuer of every connector trust certificate.
pub const REGISTRATION_CA: &str = "connectorregistrationca.msappproxy.net";

/// Finds and describes one trust certificate.
pub struct TrustCertProbe {
    config: TrustCertConfig,
    store: Arc<dyn CertStore>,
}

impl TrustCertProbe {
    /// A probe for one configured trust certificate.
    pub fn new(config: TrustCertConfig, store: Arc<dyn CertStore>) -> Self {
        TrustCertProbe { config, store }
    }

    async fn read(&self) -> TrustCertificate {
        let c = &self.config;
        let settings = if c.settings.is_empty() {
            None
        } else {
            match read_settings(&c.settings).await {
                Ok(s) => Some(s),
                Err(error) => {
                    return TrustCertificate {
                        source: c
                            .path
                            .as_ref()
                            .map(|p| p.display().to_string())
                            .unwrap_or_else(|| {
                                c.settings
                                    .first()
                                    .map(|p| p.display().to_string())
                                    .unwrap_or_default()
                            }),
                        expected_thumbprint: c.thumbprint.clone().unwrap_or_default(),
                        error,
                        ..Default::default()
                    };
                }
            }
        };
        let expected = c
            .thumbprint
            .clone()
            .or_else(|| settings.as_ref().map(|s| s.thumbprint.clone()))
            .filter(|t| !t.is_empty());
        match &c.path {
            Some(path) => {
                let path = path.clone();
                let expected2 = expected.clone();
                tokio::task::spawn_blocking(move || read_file(&path, expected2.as_deref()))
                    .await
                    .unwrap_or_else(|e| TrustCertificate {
                        error: format!("reading the certificate crashed: {e}"),
                        expected_thumbprint: expected.unwrap_or_default(),
                        ..Default::default()
                    })
            }
            None => {
                let kind = CertStoreKind::for_user_store(
                    settings.as_ref().is_some_and(|s| s.is_in_user_store),
                );
                let expected = expected.unwrap_or_default();
                match self.store.lookup(kind, &expected).await {
                    Ok(candidates) => pick(kind.label(), &candidates, &expected),
                    Err(error) => TrustCertificate {
                        source: kind.label().into(),
                        expected_thumbprint: expected,
                        error,
                        ..Default::default()
                    },
                }
            }
        }
    }
}

/// What TrustSettings.xml says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustSettings {
    /// The trusted certificate's thumbprint, normalised.
    pub thumbprint: String,
    /// Whether the certificate is in the Network Service user's store.
    pub is_in_user_store: bool,
}

/// Parses TrustSettings.xml (UTF-8 or UTF-16, with or without a byte order mark).
pub fn parse_settings(bytes: &[u8]) -> Result<TrustSettings, String> {
    let text = decode_text(bytes);
    let doc = roxmltree::Document::parse(&text).map_err(|e| format!("is not valid XML: {e}"))?;
    let find = |name: &str| {
        doc.descendants()
            .find(|n| n.is_element() && n.tag_name().name().eq_ignore_ascii_case(name))
            .and_then(|n| n.text())
            .map(str::trim)
    };
    let thumbprint = find("Thumbprint")
        .map(normalise_thumbprint)
        .filter(|t| !t.is_empty())
        .ok_or("has no <Thumbprint> under <CloudProxyTrust>")?;
    let is_in_user_store = match find("IsInUserStore") {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("true") => true,
        Some(v) if v.eq_ignore_ascii_case("false") => false,
        Some(v) => return Err(format!("has IsInUserStore `{v}`, neither true nor false")),
    };
    Ok(TrustSettings {
        thumbprint,
        is_in_user_store,
    })
}

/// Text of a file written by Windows tools: UTF-16 when it has a UTF-16 byte order
/// mark, otherwise UTF-8 (without its mark).
pub fn decode_text(bytes: &[u8]) -> String {
    let utf16 = |le: bool| {
        let units: Vec<u16> = bytes[2..]
            .chunks_exact(2)
            .map(|c| {
                if le {
                    u16::from_le_bytes([c[0], c[1]])
                } else {
                    u16::from_be_bytes([c[0], c[1]])
                }
            })
            .collect();
        String::from_utf16_lossy(&units)
    };
    let text = match bytes {
        [0xff, 0xfe, ..] => utf16(true),
        [0xfe, 0xff, ..] => utf16(false),
        _ => String::from_utf8_lossy(bytes).into_owned(),
    };
    let text = text.trim_start_matches('\u{feff}');
    // The declaration may name an encoding the bytes no longer are in; roxmltree only
    // reads UTF-8, which the text now is.
    match text.strip_prefix("<?xml") {
        Some(rest) => rest
            .split_once("?>")
            .map(|(_, body)| body.to_string())
            .unwrap_or_default(),
        None => text.to_string(),
    }
}

/// Reads the first TrustSettings.xml that exists among `candidates`.
async fn read_settings(candidates: &[std::path::PathBuf]) -> Result<TrustSettings, String> {
    for path in candidates {
        match tokio::fs::read(path).await {
            Ok(bytes) => {
                return parse_settings(&bytes).map_err(|e| format!("{} {e}", path.display()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(format!(
                    "permission denied reading {}: run the collector as LocalSystem or an account that can read the connector's Config folder",
                    path.display()
                ));
            }
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        }
    }
    let list: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
    Err(format!(
        "TrustSettings.xml not found (looked in {}): the connector is not installed or not registered here",
        list.join(", ")
    ))
}

/// From a store's certificates, the one with the expected thumbprint; failing that, the
/// newest issued by the registration CA, reported as not matching.
fn pick(source: &str, candidates: &[Vec<u8>], expected: &str) -> TrustCertificate {
    let expected_opt = (!expected.is_empty()).then_some(expected);
    let described: Vec<TrustCertificate> = candidates
        .iter()
        .map(|der| describe(source, der, expected_opt))
        .filter(|c| c.found)
        .collect();
    if let Some(exact) = described.iter().find(|c| c.thumbprint == expected) {
        return exact.clone();
    }
    let newest = described
        .into_iter()
        .filter(|c| c.issuer.to_ascii_lowercase().contains(REGISTRATION_CA))
        .max_by_key(|c| c.not_after_ms);
    match newest {
        Some(mut c) => {
            c.thumbprint_matched = false;
            c.error = format!(
                "no certificate with thumbprint {expected} in {source}; this one is the newest issued by {REGISTRATION_CA}"
            );
            c
        }
        None => TrustCertificate {
            source: source.into(),
            expected_thumbprint: expected.into(),
            error: format!(
                "no certificate with thumbprint {expected} and none issued by {REGISTRATION_CA} in {source}: register the connector again"
            ),
            ..Default::default()
        },
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

fn read_file(path: &Path, expected: Option<&str>) -> TrustCertificate {
    let source = path.display().to_string();
    let missing = |error: String| TrustCertificate {
        source: source.clone(),
        expected_thumbprint: expected.unwrap_or_default().to_string(),
        error,
        ..Default::default()
    };
    match std::fs::read(path) {
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
        match (&self.config.path, self.config.settings.first()) {
            (Some(p), _) => format!("trust-cert:{}", p.display()),
            (None, Some(s)) => format!("trust-cert:{}", s.display()),
            (None, None) => "trust-cert".into(),
        }
    }

    fn deadline(&self) -> Duration {
        Duration::from_secs(3)
    }

    fn run(&self) -> BoxFuture<'_, Observation> {
        Box::pin(async move { Observation::TrustCert(self.read().await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connwatch_shared::pki::{CertAuthority, LeafSpec};
    use std::path::PathBuf;

    fn thumbprint(der: &[u8]) -> String {
        sha1_smol::Sha1::from(der)
            .digest()
            .to_string()
            .to_ascii_uppercase()
    }

    fn settings_xml(thumb: &str, user: bool) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<ConnectorTrustSettingsFile xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\n  <CloudProxyTrust>\n    <Thumbprint>{thumb}</Thumbprint>\n    <IsInUserStore>{user}</IsInUserStore>\n  </CloudProxyTrust>\n</ConnectorTrustSettingsFile>\n"
        )
    }

    /// A store that holds some certificates and records which store was asked for.
    struct FakeStore {
        certs: Vec<Vec<u8>>,
        asked: std::sync::Mutex<Vec<CertStoreKind>>,
    }

    impl CertStore for FakeStore {
        fn lookup(
            &self,
            store: CertStoreKind,
            thumbprint: &str,
        ) -> BoxFuture<'_, Result<Vec<Vec<u8>>, String>> {
            self.asked.lock().expect("lock").push(store);
            let exact: Vec<Vec<u8>> = self
                .certs
                .iter()
                .filter(|c| super::tests::thumbprint(c) == thumbprint)
                .cloned()
                .collect();
            let all = if exact.is_empty() {
                self.certs.clone()
            } else {
                exact
            };
            Box::pin(async move { Ok(all) })
        }
    }

    fn no_store() -> Arc<dyn CertStore> {
        Arc::new(FakeStore {
            certs: Vec::new(),
            asked: Default::default(),
        })
    }

    async fn read(config: TrustCertConfig, store: Arc<dyn CertStore>) -> TrustCertificate {
        TrustCertProbe::new(config, store).read().await
    }

    #[test]
    fn trust_settings_samples_parse() {
        let s = parse_settings(
            settings_xml("4905CC64B2D81BBED60962ECC5DCF63F643CCD55", false).as_bytes(),
        )
        .expect("parse");
        assert_eq!(s.thumbprint, "4905CC64B2D81BBED60962ECC5DCF63F643CCD55");
        assert!(!s.is_in_user_store);
        // Windows tools often write UTF-16 with a byte order mark.
        let mut utf16 = vec![0xff, 0xfe];
        for u in settings_xml("ab cd ef", true).encode_utf16() {
            utf16.extend_from_slice(&u.to_le_bytes());
        }
        let s = parse_settings(&utf16).expect("utf-16");
        assert_eq!(
            (s.thumbprint.as_str(), s.is_in_user_store),
            ("ABCDEF", true)
        );
        assert!(parse_settings(b"<ConnectorTrustSettingsFile/>").is_err());
        assert!(parse_settings(b"not xml <").is_err());
        assert!(
            parse_settings(
                settings_xml("AA", false)
                    .replace("false", "maybe")
                    .as_bytes()
            )
            .is_err()
        );
    }

    #[tokio::test]
    async fn pem_and_der_files_are_described_and_thumbprints_checked() {
        let ca = CertAuthority::generate("connectorregistrationca.example").expect("ca");
        let leaf = ca
            .issue(&LeafSpec::blank(false).valid_for(Duration::from_secs(5 * 86_400)))
            .expect("leaf");
        let dir = tempfile::tempdir().expect("tempdir");
        let pem = dir.path().join("trust.pem");
        let der = dir.path().join("trust.der");
        std::fs::write(&pem, &leaf.cert_pem).expect("write");
        std::fs::write(&der, &leaf.cert_der).expect("write");
        let thumb = thumbprint(&leaf.cert_der);
        let from_pem = read(
            TrustCertConfig {
                path: Some(pem),
                thumbprint: Some(thumb.clone()),
                ..Default::default()
            },
            no_store(),
        )
        .await;
        assert!(
            from_pem.found && from_pem.thumbprint_matched,
            "{from_pem:?}"
        );
        assert!(from_pem.issuer.contains("connectorregistrationca.example"));
        let days_left = (from_pem.not_after_ms - connwatch_shared::time::now_ms()) / 86_400_000;
        assert_eq!(days_left, 4, "expires in 5 days, less a few ms");
        let from_der = read(
            TrustCertConfig {
                path: Some(der),
                thumbprint: Some("00".into()),
                ..Default::default()
            },
            no_store(),
        )
        .await;
        assert_eq!(from_der.thumbprint, thumb);
        assert!(!from_der.thumbprint_matched);
        let gone = read(
            TrustCertConfig {
                path: Some(dir.path().join("nope.pem")),
                ..Default::default()
            },
            no_store(),
        )
        .await;
        assert!(!gone.found && gone.error.contains("nope.pem"), "{gone:?}");
    }

    #[tokio::test]
    async fn trust_settings_thumbprints_that_match_and_that_do_not() {
        let ca = CertAuthority::generate(REGISTRATION_CA).expect("ca");
        let leaf = ca.issue(&LeafSpec::blank(false)).expect("leaf");
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = dir.path().join("trust.pem");
        std::fs::write(&cert, &leaf.cert_pem).expect("write");
        let good = dir.path().join("good.xml");
        let bad = dir.path().join("bad.xml");
        std::fs::write(&good, settings_xml(&thumbprint(&leaf.cert_der), false)).expect("write");
        std::fs::write(
            &bad,
            settings_xml("4905CC64B2D81BBED60962ECC5DCF63F643CCD55", false),
        )
        .expect("write");
        let with = |settings: PathBuf| TrustCertConfig {
            path: Some(cert.clone()),
            settings: vec![dir.path().join("absent.xml"), settings],
            thumbprint: None,
        };
        let matched = read(with(good), no_store()).await;
        assert!(matched.found && matched.thumbprint_matched, "{matched:?}");
        assert_eq!(matched.expected_thumbprint, matched.thumbprint);
        let mismatched = read(with(bad), no_store()).await;
        assert!(
            mismatched.found && !mismatched.thumbprint_matched,
            "{mismatched:?}"
        );
        assert_eq!(
            mismatched.expected_thumbprint,
            "4905CC64B2D81BBED60962ECC5DCF63F643CCD55"
        );
        let none = read(
            TrustCertConfig {
                settings: vec![dir.path().join("absent.xml")],
                ..Default::default()
            },
            no_store(),
        )
        .await;
        assert!(!none.found && none.error.contains("absent.xml"), "{none:?}");
    }

    #[tokio::test]
    async fn the_store_named_by_is_in_user_store_is_searched() {
        let ca = CertAuthority::generate(REGISTRATION_CA).expect("ca");
        let older = ca
            .issue(&LeafSpec::blank(false).valid_for(Duration::from_secs(86_400)))
            .expect("leaf");
        let newer = ca
            .issue(&LeafSpec::blank(false).valid_for(Duration::from_secs(200 * 86_400)))
            .expect("leaf");
        let other = CertAuthority::generate("Some Other CA")
            .expect("ca")
            .issue(&LeafSpec::blank(false).valid_for(Duration::from_secs(900 * 86_400)))
            .expect("leaf");
        let store = Arc::new(FakeStore {
            certs: vec![
                older.cert_der.clone(),
                newer.cert_der.clone(),
                other.cert_der,
            ],
            asked: Default::default(),
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let xml = dir.path().join("TrustSettings.xml");
        std::fs::write(&xml, settings_xml(&thumbprint(&older.cert_der), true)).expect("write");
        let config = TrustCertConfig {
            settings: vec![xml.clone()],
            ..Default::default()
        };
        let found = read(config.clone(), store.clone()).await;
        assert_eq!(found.source, "NetworkService\\My");
        assert!(found.found && found.thumbprint_matched, "{found:?}");
        assert_eq!(found.thumbprint, thumbprint(&older.cert_der));
        // A thumbprint the store does not hold: the newest registration certificate
        // is shown, marked as not matching.
        std::fs::write(&xml, settings_xml("0011", false)).expect("write");
        let instead = read(config, store.clone()).await;
        assert_eq!(instead.source, "LocalMachine\\My");
        assert!(instead.found && !instead.thumbprint_matched, "{instead:?}");
        assert_eq!(instead.thumbprint, thumbprint(&newer.cert_der));
        assert_eq!(
            *store.asked.lock().expect("lock"),
            [
                CertStoreKind::NetworkServiceMy,
                CertStoreKind::LocalMachineMy
            ]
        );
    }
}
