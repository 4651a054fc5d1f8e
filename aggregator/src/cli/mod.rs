//! The operator CLI: connects to a running aggregator over mutual TLS with an operator
//! certificate, asks one question, and prints the answer as a table or as JSON. It
//! never opens the store.

pub mod alerts;
pub mod backup;
pub mod commands;
pub mod table;

use anyhow::Context;
use clap::Args;
use connwatch_shared::tls::TlsFiles;
use connwatch_shared::wire::query_client::QueryClient;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// The HTTP/2 receive window of the operator client, in bytes.
pub const OPERATOR_WINDOW: u32 = 8 << 20;

/// How to reach the aggregator as an operator.
#[derive(Debug, Clone, Args)]
pub struct Connect {
    /// The aggregator's address: `host:port` or `https://host:port`.
    #[arg(
        long,
        env = "CONNWATCH_AGGREGATOR",
        default_value = "https://127.0.0.1:7443"
    )]
    pub aggregator: String,
    /// Folder with ca.pem and an operator certificate: operator.pem/.key (as `ca init`
    /// writes them), else the only operator-NAME.pem/.key (as `ca issue` writes them).
    #[arg(long, env = "CONNWATCH_CERTS", default_value = "/etc/connwatch/certs")]
    pub certs: PathBuf,
    /// Use <certs>/operator-NAME.pem and .key (from `ca issue --role operator --name NAME`).
    #[arg(long, env = "CONNWATCH_OPERATOR")]
    pub operator: Option<String>,
    /// The CA certificate (default: <certs>/ca.pem).
    #[arg(long, env = "CONNWATCH_CA")]
    pub ca: Option<PathBuf>,
    /// The operator certificate (default: found in --certs).
    #[arg(long, env = "CONNWATCH_CERT")]
    pub cert: Option<PathBuf>,
    /// The operator key (default: the certificate's, .pem -> .key).
    #[arg(long, env = "CONNWATCH_KEY")]
    pub key: Option<PathBuf>,
    /// The name on the aggregator's certificate (default: the address's host).
    #[arg(long, env = "CONNWATCH_SERVER_NAME")]
    pub server_name: Option<String>,
    /// Give up after this long: on connecting (TCP, TLS, HTTP/2), and on each call.
    #[arg(long, default_value = "10s", value_parser = connwatch_shared::time::parse_duration)]
    pub timeout: Duration,
}

/// Exit code: the command failed or the aggregator gave no answer (unreachable, a
/// refused certificate, a broken config).
pub const EXIT_NO_ANSWER: u8 = 3;
/// Exit code: the aggregator answered that the connector, group or silence asked for does not
/// exist.
pub const EXIT_NOT_FOUND: u8 = 4;

/// The aggregator answered, and has no such connector, group or silence.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotFound(pub String);

/// The operator certificate's file stem in `certs`: `operator`-`NAME` when a name is
/// given; else `operator` when operator.pem is there; else the only `operator-NAME`.
fn operator_stem(certs: &Path, name: Option<&str>) -> anyhow::Result<String> {
    if let Some(name) = name {
        return Ok(format!("operator-{name}"));
    }
    if certs.join("operator.pem").exists() {
        return Ok("operator".into());
    }
    let mut named: Vec<String> = std::fs::read_dir(certs)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter_map(|n| {
                    n.strip_suffix(".pem")
                        .filter(|stem| stem.starts_with("operator-"))
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    named.sort();
    match named.as_slice() {
        [one] => Ok(one.clone()),
        [] => Ok("operator".into()),
        several => anyhow::bail!(
            "{} holds no operator.pem but several named operator certificates ({}); choose one with --operator NAME",
            certs.display(),
            several
                .iter()
                .map(|s| format!("{s}.pem"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The address as a URI: `host:port` gets `https://`, which is the only scheme the
/// aggregator speaks.
fn address_uri(address: &str) -> String {
    if address.contains("://") {
        address.to_string()
    } else {
        format!("https://{address}")
    }
}

impl Connect {
    fn files(&self) -> anyhow::Result<TlsFiles> {
        let (cert, key) = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => (cert.clone(), key.clone()),
            (Some(cert), None) => (cert.clone(), cert.with_extension("key")),
            (None, key) => {
                let stem = operator_stem(&self.certs, self.operator.as_deref())?;
                (
                    self.certs.join(format!("{stem}.pem")),
                    key.clone()
                        .unwrap_or_else(|| self.certs.join(format!("{stem}.key"))),
                )
            }
        };
        Ok(TlsFiles {
            ca: self.ca.clone().unwrap_or_else(|| self.certs.join("ca.pem")),
            cert,
            key,
        })
    }

    /// Connects and returns a query client.
    pub async fn client(&self) -> anyhow::Result<QueryClient<Channel>> {
        Ok(QueryClient::new(self.channel().await?))
    }

    /// Connects and returns the channel, for any of the operator services.
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        let files = self.files()?;
        let tls = files.load().context(
            "cannot load the operator certificate; pass --certs DIR (and --operator NAME for operator-NAME.pem), or --ca/--cert/--key",
        )?;
        let uri = address_uri(&self.aggregator);
        let authority = uri.split_once("://").map_or(uri.as_str(), |(_, rest)| rest);
        let host = authority
            .rsplit_once(':')
            .map_or(authority, |(h, _)| h)
            .trim_matches(['[', ']'])
            .to_string();
        let server_name = self.server_name.clone().unwrap_or(host);
        let endpoint = Endpoint::from_shared(uri.clone())
            .with_context(|| {
                format!(
                    "`{}` is not an address like host:7443 or https://host:7443",
                    self.aggregator
                )
            })?
            .tls_config(tls.client_config(&server_name))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(self.timeout)
            // Whole-fleet answers run to megabytes; HTTP/2's default 64 KiB window
            // would make the aggregator wait for a window update every 64 KiB.
            .initial_stream_window_size(Some(OPERATOR_WINDOW))
            .initial_connection_window_size(Some(OPERATOR_WINDOW));
        // tonic's connect timeout covers TCP only: a peer that accepts and never
        // finishes TLS (a stopped aggregator, another program on the port) would hold
        // the command for minutes. --timeout bounds connecting as it bounds each call.
        let connected = tokio::time::timeout(self.timeout, endpoint.connect()).await;
        let Ok(connected) = connected else {
            anyhow::bail!(
                "no answer from the aggregator at {} within {:?}: the port takes connections but the TLS handshake never completed (is the aggregator stopped or overloaded, or is something else listening there?)",
                self.aggregator,
                self.timeout
            );
        };
        let channel = connected.with_context(|| {
            format!(
                "cannot reach the aggregator at {}: is `connwatch-aggregator serve` running there? Check --aggregator, and the operator certificate {} (signed by {})",
                self.aggregator,
                files.cert.display(),
                files.ca.display()
            )
        })?;
        Ok(channel)
    }
}

/// Turns a gRPC error into a sentence for the operator; "not found" becomes
/// [`NotFound`], which has its own exit code.
pub fn explain(status: tonic::Status) -> anyhow::Error {
    if status.code() == tonic::Code::NotFound {
        return NotFound(status.message().to_string()).into();
    }
    let hint = match status.code() {
        tonic::Code::Unavailable => " (is the aggregator running and reachable?)",
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => {
            " (use an operator certificate issued with `connwatch-aggregator ca issue --role operator`)"
        }
        _ => "",
    };
    anyhow::anyhow!("{}{hint}", status.message())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_without_a_scheme_gets_https() {
        assert_eq!(
            address_uri("agg.example.net:7443"),
            "https://agg.example.net:7443"
        );
        assert_eq!(address_uri("https://[::1]:7443"), "https://[::1]:7443");
    }

    #[test]
    fn a_named_operator_certificate_is_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let stem = |name: Option<&str>| operator_stem(dir.path(), name);
        assert_eq!(stem(None).expect("default"), "operator");
        std::fs::write(dir.path().join("operator-alice.pem"), "").expect("write");
        assert_eq!(stem(None).expect("the only one"), "operator-alice");
        std::fs::write(dir.path().join("operator-bob.pem"), "").expect("write");
        let err = stem(None).expect_err("two").to_string();
        assert!(
            err.contains("--operator") && err.contains("operator-bob.pem"),
            "{err}"
        );
        assert_eq!(stem(Some("bob")).expect("named"), "operator-bob");
        std::fs::write(dir.path().join("operator.pem"), "").expect("write");
        assert_eq!(stem(None).expect("operator.pem first"), "operator");
    }
}
