//! Endpoint probe: resolves `host:port`, connects over TCP, and says why a connect
//! failed (refused, timed out, DNS, unreachable), with latency: the port test of the
//! troubleshooting flowchart, run every cycle. For TLS endpoints it also records the
//! handshake: protocol, cipher suite, the chain the server presented and whether it
//! came from an expected issuer. One timeout covers the whole check.

use super::{Observation, Probe, tls};
use crate::config::EndpointConfig;
use connwatch_shared::wire::{ConnectOutcome, EndpointCheck};
use futures::future::BoxFuture;
use std::io::ErrorKind;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Checks one endpoint.
pub struct EndpointProbe {
    config: EndpointConfig,
}

impl EndpointProbe {
    /// A probe for one configured endpoint.
    pub fn new(config: EndpointConfig) -> Self {
        EndpointProbe { config }
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
        let deadline = tokio::time::Instant::now() + c.timeout;
        let started = Instant::now();
        let connected = connect(&c.address, deadline, c.timeout).await;
        check.latency_ms = millis(started.elapsed());
        let tcp = match connected {
            Ok(tcp) => tcp,
            Err((outcome, error)) => {
                check.outcome = outcome as i32;
                check.error = error;
                return check;
            }
        };
        check.outcome = ConnectOutcome::Ok as i32;
        let Some(t) = &c.tls else {
            return check;
        };
        let shake = tls::handshake(tcp, &t.server_name, &t.roots, &t.expected_issuers, false);
        match tokio::time::timeout_at(deadline, shake).await {
            Ok(h) => check.tls = Some(h.result),
            Err(_) => {
                // The port accepts connections but nothing answers the handshake: for
                // the connector that is as good as a timeout.
                let error = format!(
                    "{}: the TCP connect succeeded but the TLS handshake got no answer within {:?}",
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
        self.config.timeout
    }

    fn run(&self) -> BoxFuture<'_, Observation> {
        Box::pin(async move { Observation::Endpoint(self.check().await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(address: String, timeout_ms: u64) -> EndpointProbe {
        EndpointProbe::new(EndpointConfig {
            name: "t".into(),
            address,
            timeout: Duration::from_millis(timeout_ms),
            required: true,
            tls: None,
        })
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
}
