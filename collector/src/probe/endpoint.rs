//! Endpoint probe: resolves `host:port`, connects over TCP, and says why a connect
//! failed (refused, timed out, DNS, unreachable), with latency: the port test of the
//! troubleshooting flowchart, run every cycle. For TLS endpoints it also records the
//! handshake: protocol, cipher suite, the chain the server presented and whether it
//! came from an expected issuer. One timeout covers the whole check.
//!
//! The check goes the way the connector's own traffic goes: through the connector's
//! effective proxy (see [`route`](super::route)) with CONNECT, unless the endpoint's
//! config says otherwise or a bypass list sends it direct. A proxy that cannot be
//! reached, refuses or wants credentials is reported as that, not as the endpoint.

use super::route::{Resolver, Route};
use super::{Observation, Probe, tls, tunnel};
use crate::config::{EndpointConfig, EndpointProxy};
use connwatch_shared::wire::{ConnectOutcome, EndpointCheck};
use futures::future::BoxFuture;
use std::io::ErrorKind;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Checks one endpoint.
pub struct EndpointProbe {
    config: EndpointConfig,
    resolver: Arc<Resolver>,
}

impl EndpointProbe {
    /// A probe for one configured endpoint; `resolver` gives the connector's route.
    pub fn new(config: EndpointConfig, resolver: Arc<Resolver>) -> Self {
        EndpointProbe { config, resolver }
    }

    /// Runs the check.
    pub async fn check(&self) -> EndpointCheck {
        let c = &self.config;
        let mut check = EndpointCheck {
            name: c.name.clone(),
            address: c.address.clone(),
            required: c.required,
            ..Default::default()
        };
        let route = match &c.proxy {
            EndpointProxy::Direct => Route::Direct,
            EndpointProxy::Via(p) => Route::Proxy(p.clone()),
            EndpointProxy::Connector => self.resolver.route(&c.address, c.tls.is_some()).await,
        };
        check.via = route.to_string();
        // The timeout is the endpoint's own: finding the route (a file read and, on
        // Windows, netsh) comes before it, within the probe's longer deadline.
        let deadline = tokio::time::Instant::now() + c.timeout;
        let started = Instant::now();
        let connected = match &route {
            Route::Direct => {
                connect(&c.address, deadline, c.timeout)
                    .await
                    .map_err(|(outcome, error)| tunnel::Failure {
                        outcome,
                        status_line: String::new(),
                        error,
                    })
            }
            Route::Proxy(proxy) => {
                let ask = if c.tls.is_some() {
                    tunnel::Ask::Connect
                } else {
                    tunnel::Ask::Forward
                };
                tunnel::open(proxy, &c.address, ask, deadline, c.timeout).await
            }
        };
        check.latency_ms = millis(started.elapsed());
        let tcp = match connected {
            Ok(tcp) => tcp,
            Err(failure) => {
                check.outcome = failure.outcome as i32;
                check.error = failure.error;
                check.proxy_status = failure.status_line;
                return check;
            }
        };
        check.outcome = ConnectOutcome::Ok as i32;
        let Some(t) = &c.tls else {
            return check;
        };
        // After CONNECT the socket is the tunnel: the proxy's answer was read up to its
        // blank line and no further, so the handshake starts on a clean stream.
        let roots = tls::Roots::or_public(&t.roots);
        let shake = tls::handshake(tcp, &t.server_name, roots, &t.expected_issuers, false);
        match tokio::time::timeout_at(deadline, shake).await {
            Ok(h) => check.tls = Some(h.result),
            Err(_) => {
                // The port accepts connections but nothing answers the handshake: for
                // the connector that is as good as a timeout.
                let opened = match &route {
                    Route::Direct => "the TCP connect succeeded".to_string(),
                    Route::Proxy(p) => format!("the tunnel through {p} opened"),
                };
                let error = format!(
                    "{}: {opened} but the TLS handshake got no answer within {:?}",
                    c.address, c.timeout
                );
                check.outcome = ConnectOutcome::TimedOut as i32;
                check.error = error.clone();
                check.tls = Some(connwatch_shared::wire::TlsResult {
                    issuer_checked: !t.expected_issuers.is_empty(),
                    error,
                    ..Default::default()
                });
            }
        }
        check
    }
}

pub(crate) fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// Resolves and connects before `deadline`; on failure, the outcome and error text.
pub(crate) async fn connect(
    address: &str,
    deadline: tokio::time::Instant,
    timeout: Duration,
) -> Result<TcpStream, (ConnectOutcome, String)> {
    let addrs = match tokio::time::timeout_at(deadline, tokio::net::lookup_host(address)).await {
        Err(_) => {
            return Err((
                ConnectOutcome::TimedOut,
                format!("name resolution of {address} did not answer within {timeout:?}"),
            ));
        }
        Ok(Err(e)) => {
            return Err((
                ConnectOutcome::DnsFailed,
                format!("cannot resolve {address}: {e}"),
            ));
        }
        Ok(Ok(addrs)) => addrs.collect::<Vec<_>>(),
    };
    if addrs.is_empty() {
        return Err((
            ConnectOutcome::DnsFailed,
            format!("{address} resolves to no address"),
        ));
    }
    let mut last = (ConnectOutcome::OtherError, String::new());
    for addr in addrs {
        match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Err(_) => {
                return Err((
                    ConnectOutcome::TimedOut,
                    format!("no answer from {addr} within {timeout:?}"),
                ));
            }
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => {
                let outcome = match e.kind() {
                    ErrorKind::ConnectionRefused => ConnectOutcome::Refused,
                    ErrorKind::TimedOut => ConnectOutcome::TimedOut,
                    ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => {
                        ConnectOutcome::Unreachable
                    }
                    _ => ConnectOutcome::OtherError,
                };
                last = (outcome, format!("{addr}: {e}"));
            }
        }
    }
    Err(last)
}

impl Probe for EndpointProbe {
    fn name(&self) -> String {
        format!("endpoint:{}", self.config.name)
    }

    fn deadline(&self) -> Duration {
        match self.config.proxy {
            EndpointProxy::Connector => self.config.timeout + super::route::RESOLVE_LIMIT,
            EndpointProxy::Direct | EndpointProxy::Via(_) => self.config.timeout,
        }
    }

    fn run(&self) -> BoxFuture<'_, Observation> {
        Box::pin(async move { Observation::Endpoint(self.check().await) })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A resolver for probes that never ask it (their route is fixed).
    pub(crate) fn unused_resolver() -> Arc<Resolver> {
        struct Unused;
        impl crate::platform::SystemProxy for Unused {
            fn system_proxy(
                &self,
            ) -> BoxFuture<'_, Result<crate::platform::SystemProxySetting, String>> {
                Box::pin(async { Err("not asked in these tests".to_string()) })
            }
        }
        Arc::new(Resolver::new(None, Arc::new(Unused)))
    }

    fn probe(address: String, timeout_ms: u64) -> EndpointProbe {
        EndpointProbe::new(
            EndpointConfig {
                name: "t".into(),
                address,
                timeout: Duration::from_millis(timeout_ms),
                required: true,
                tls: None,
                proxy: EndpointProxy::Direct,
            },
            unused_resolver(),
        )
    }

    #[tokio::test]
    async fn open_and_closed_ports_on_loopback() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let open = listener.local_addr().expect("addr").to_string();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").to_string()
        };
        let ok = probe(open, 1000).check().await;
        assert_eq!(ok.outcome, ConnectOutcome::Ok as i32, "{}", ok.error);
        let refused = probe(closed, 1000).check().await;
        assert_eq!(
            refused.outcome,
            ConnectOutcome::Refused as i32,
            "{}",
            refused.error
        );
        assert!(!refused.error.is_empty());
    }

    #[tokio::test]
    async fn an_unresolvable_name_is_a_dns_failure() {
        let c = probe("no-such-host.invalid:443".into(), 2000).check().await;
        assert!(
            c.outcome == ConnectOutcome::DnsFailed as i32
                || c.outcome == ConnectOutcome::TimedOut as i32,
            "{c:?}"
        );
    }

    use connwatch_shared::pki::{CertAuthority, IssuedCert, LeafSpec};
    use connwatch_shared::wire::TlsResult;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::net::TcpListener;

    const CLOUD_CA: &str = "connwatch test cloud CA";

    fn server_cert(ca: &CertAuthority, days: i64) -> IssuedCert {
        let mut spec = LeafSpec::server(&["localhost".into()], &["127.0.0.1".parse().expect("ip")]);
        let now = time::OffsetDateTime::now_utc();
        if days < 0 {
            spec.not_before = now - time::Duration::days(30);
        }
        spec.not_after = now + time::Duration::days(days);
        ca.issue(&spec).expect("issue")
    }

    /// A rustls server on loopback that completes handshakes with `cert` (and its CA).
    async fn tls_server(ca: &CertAuthority, cert: &IssuedCert) -> SocketAddr {
        let mut ca_pem = ca.cert_pem().as_bytes();
        let rest: Vec<Vec<u8>> = rustls_pemfile::certs(&mut ca_pem)
            .map(|c| c.expect("ca pem").to_vec())
            .collect();
        crate::probe::tls::test_server::serve(cert, &rest).await
    }

    fn tls_probe(address: String, roots: &[&CertAuthority], timeout_ms: u64) -> EndpointProbe {
        let roots = roots
            .iter()
            .flat_map(|ca| {
                let mut pem = ca.cert_pem().as_bytes();
                rustls_pemfile::certs(&mut pem)
                    .map(|c| c.expect("pem").to_vec())
                    .collect::<Vec<_>>()
            })
            .collect();
        EndpointProbe::new(
            EndpointConfig {
                name: "cloud".into(),
                address,
                timeout: Duration::from_millis(timeout_ms),
                required: true,
                tls: Some(crate::config::TlsCheckConfig {
                    server_name: "localhost".into(),
                    expected_issuers: vec![CLOUD_CA.to_ascii_uppercase()],
                    roots,
                }),
                proxy: EndpointProxy::Direct,
            },
            unused_resolver(),
        )
    }

    fn tls_of(check: &EndpointCheck) -> &TlsResult {
        check.tls.as_ref().expect("a TLS endpoint has a tls result")
    }

    fn days_left(ms: i64) -> i64 {
        (ms - connwatch_shared::time::now_ms()).div_euclid(86_400_000)
    }

    #[tokio::test]
    async fn a_chain_from_the_expected_ca_is_ok() {
        let ca = CertAuthority::generate(CLOUD_CA).expect("ca");
        let addr = tls_server(&ca, &server_cert(&ca, 200)).await;
        let check = tls_probe(addr.to_string(), &[&ca], 3000).check().await;
        assert_eq!(check.outcome, ConnectOutcome::Ok as i32, "{check:?}");
        let tls = tls_of(&check);
        assert_eq!(tls.protocol, "TLSv1.3");
        assert!(tls.cipher_suite.starts_with("TLS13_"), "{tls:?}");
        assert!(tls.issuer_checked && tls.issuer_expected, "{tls:?}");
        assert!(!tls.version_too_old);
        assert_eq!(tls.error, "", "verifies against the configured CA");
        assert_eq!(tls.chain.len(), 2, "leaf and CA as the server sent them");
        assert!(tls.chain[0].subject.contains("localhost"), "{tls:?}");
        assert!(tls.chain[0].issuer.contains(CLOUD_CA));
        assert_eq!(
            days_left(tls.chain[0].not_after_ms),
            199,
            "200 days, less a few ms"
        );
    }

    #[tokio::test]
    async fn a_chain_from_another_ca_is_reported_not_hidden() {
        let cloud = CertAuthority::generate(CLOUD_CA).expect("ca");
        let inspector = CertAuthority::generate("Contoso TLS Inspection CA").expect("ca");
        let addr = tls_server(&inspector, &server_cert(&inspector, 5)).await;
        let check = tls_probe(addr.to_string(), &[&cloud], 3000).check().await;
        assert_eq!(check.outcome, ConnectOutcome::Ok as i32, "{check:?}");
        let tls = tls_of(&check);
        assert!(tls.issuer_checked && !tls.issuer_expected, "{tls:?}");
        assert!(tls.error.contains("verification failed"), "{tls:?}");
        assert_eq!(tls.protocol, "TLSv1.3", "the handshake still completes");
        assert!(tls.chain[0].issuer.contains("Contoso TLS Inspection CA"));
        assert_eq!(days_left(tls.chain[0].not_after_ms), 4);
    }

    #[tokio::test]
    async fn an_expired_server_certificate_is_visible_in_the_chain() {
        let ca = CertAuthority::generate(CLOUD_CA).expect("ca");
        let addr = tls_server(&ca, &server_cert(&ca, -1)).await;
        let check = tls_probe(addr.to_string(), &[&ca], 3000).check().await;
        let tls = tls_of(&check);
        assert!(tls.chain[0].not_after_ms < connwatch_shared::time::now_ms());
        assert!(
            tls.error.contains("expired") || tls.error.contains("Expired"),
            "{tls:?}"
        );
        assert!(tls.issuer_expected, "expired, but from the expected CA");
    }

    #[tokio::test]
    async fn a_server_that_accepts_and_never_speaks_tls_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let started = Instant::now();
        let check = tls_probe(addr.to_string(), &[], 400).check().await;
        let took = started.elapsed();
        assert_eq!(check.outcome, ConnectOutcome::TimedOut as i32, "{check:?}");
        assert!(tls_of(&check).error.contains("handshake"), "{check:?}");
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_millis(1400),
            "{took:?}"
        );
        drop(listener);
    }

    /// `openssl s_server` offering only `version` (`-tls1_1`, `-tls1_2`); `None` when
    /// this machine's openssl cannot, with the reason printed.
    async fn openssl_server(
        dir: &std::path::Path,
        cert: &IssuedCert,
        version: &str,
    ) -> Option<(tokio::process::Child, SocketAddr)> {
        let cert_path = dir.join("server.pem");
        let key_path = dir.join("server.key");
        std::fs::write(&cert_path, &cert.cert_pem).expect("write");
        std::fs::write(&key_path, &cert.key_pem).expect("write");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let spawned = tokio::process::Command::new("openssl")
            .args(["s_server", "-accept", &format!("127.0.0.1:{port}"), "-cert"])
            .arg(&cert_path)
            .arg("-key")
            .arg(&key_path)
            .args([version, "-cipher", "DEFAULT:@SECLEVEL=0", "-naccept", "1"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                println!("skipped: cannot run openssl: {e}");
                return None;
            }
        };
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        // s_server prints ACCEPT once it listens.
        let ready = tokio::time::timeout(Duration::from_secs(10), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("ACCEPT") {
                    return true;
                }
            }
            false
        })
        .await;
        if ready != Ok(true) {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    tokio::io::AsyncReadExt::read_to_string(&mut e, &mut err),
                )
                .await;
            }
            println!("skipped: this machine's openssl cannot serve {version}: {err}");
            return None;
        }
        Some((child, SocketAddr::from(([127, 0, 0, 1], port))))
    }

    #[tokio::test]
    async fn a_server_offering_only_tls_1_1_is_too_old() {
        let ca = CertAuthority::generate(CLOUD_CA).expect("ca");
        let dir = tempfile::tempdir().expect("tempdir");
        let Some((_server, addr)) =
            openssl_server(dir.path(), &server_cert(&ca, 200), "-tls1_1").await
        else {
            return;
        };
        let check = tls_probe(addr.to_string(), &[&ca], 3000).check().await;
        assert_eq!(
            check.outcome,
            ConnectOutcome::Ok as i32,
            "TCP works: {check:?}"
        );
        let tls = tls_of(&check);
        assert!(tls.version_too_old, "{tls:?}");
        assert_eq!(tls.protocol, "", "nothing was negotiated");
        assert!(tls.error.contains("TLS 1.2"), "{tls:?}");
    }

    #[tokio::test]
    async fn a_tls_1_2_server_reports_its_protocol_and_cipher() {
        let ca = CertAuthority::generate(CLOUD_CA).expect("ca");
        let dir = tempfile::tempdir().expect("tempdir");
        let Some((_server, addr)) =
            openssl_server(dir.path(), &server_cert(&ca, 200), "-tls1_2").await
        else {
            return;
        };
        let check = tls_probe(addr.to_string(), &[&ca], 3000).check().await;
        let tls = tls_of(&check);
        assert_eq!(tls.protocol, "TLSv1.2", "{tls:?}");
        assert!(tls.cipher_suite.starts_with("TLS_ECDHE_"), "{tls:?}");
        assert!(!tls.version_too_old && tls.issuer_expected, "{tls:?}");
    }
}
