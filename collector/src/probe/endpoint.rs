//! Endpoint probe: resolves `host:port`, connects over TCP under its own timeout, and
//! says why a connect failed (refused, timed out, DNS, unreachable), with latency. This
//! is the port test of the troubleshooting flowchart, run every cycle.

use super::{Observation, Probe};
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

    async fn check(&self) -> EndpointCheck {
        let c = &self.config;
        let mut check = EndpointCheck {
            name: c.name.clone(),
            address: c.address.clone(),
            required: c.required,
            ..Default::default()
        };
        let started = Instant::now();
        let (outcome, error) = connect(&c.address, c.timeout).await;
        check.latency_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
        check.outcome = outcome as i32;
        check.error = error;
        check
    }
}

/// Connects once; returns the outcome and, on failure, the error text.
async fn connect(address: &str, timeout: Duration) -> (ConnectOutcome, String) {
    let deadline = tokio::time::Instant::now() + timeout;
    let addrs = match tokio::time::timeout_at(deadline, tokio::net::lookup_host(address)).await {
        Err(_) => {
            return (
                ConnectOutcome::TimedOut,
                format!("name resolution did not answer within {timeout:?}"),
            );
        }
        Ok(Err(e)) => return (ConnectOutcome::DnsFailed, format!("cannot resolve: {e}")),
        Ok(Ok(addrs)) => addrs.collect::<Vec<_>>(),
    };
    if addrs.is_empty() {
        return (
            ConnectOutcome::DnsFailed,
            "the name resolves to no address".into(),
        );
    }
    let mut last = (ConnectOutcome::OtherError, String::new());
    for addr in addrs {
        match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Err(_) => {
                return (
                    ConnectOutcome::TimedOut,
                    format!("no answer from {addr} within {timeout:?}"),
                );
            }
            Ok(Ok(_stream)) => return (ConnectOutcome::Ok, String::new()),
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
    last
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
