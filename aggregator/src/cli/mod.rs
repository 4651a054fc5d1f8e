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
use std::path::PathBuf;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// The HTTP/2 receive window of the operator client, in bytes.
pub const OPERATOR_WINDOW: u32 = 8 << 20;

/// How to reach the aggregator as an operator.
#[derive(Debug, Clone, Args)]
pub struct Connect {
    /// The aggregator's address.
    #[arg(
        long,
        env = "CONNWATCH_AGGREGATOR",
        default_value = "https://127.0.0.1:7443"
    )]
    pub aggregator: String,
    /// Folder with ca.pem, operator.pem and operator.key (as `ca init` writes them).
    #[arg(long, env = "CONNWATCH_CERTS", default_value = "/etc/connwatch/certs")]
    pub certs: PathBuf,
    /// The CA certificate (default: <certs>/ca.pem).
    #[arg(long, env = "CONNWATCH_CA")]
    pub ca: Option<PathBuf>,
    /// The operator certificate (default: <certs>/operator.pem).
    #[arg(long, env = "CONNWATCH_CERT")]
    pub cert: Option<PathBuf>,
    /// The operator key (default: <certs>/operator.key).
    #[arg(long, env = "CONNWATCH_KEY")]
    pub key: Option<PathBuf>,
    /// The name on the aggregator's certificate (default: the address's host).
    #[arg(long, env = "CONNWATCH_SERVER_NAME")]
    pub server_name: Option<String>,
    /// Give up on a call after this long.
    #[arg(long, default_value = "10s", value_parser = connwatch_shared::time::parse_duration)]
    pub timeout: Duration,
}

impl Connect {
    fn files(&self) -> TlsFiles {
        TlsFiles {
            ca: self.ca.clone().unwrap_or_else(|| self.certs.join("ca.pem")),
            cert: self
                .cert
                .clone()
                .unwrap_or_else(|| self.certs.join("operator.pem")),
            key: self
                .key
                .clone()
                .unwrap_or_else(|| self.certs.join("operator.key")),
        }
    }

    /// Connects and returns a query client.
    pub async fn client(&self) -> anyhow::Result<QueryClient<Channel>> {
        Ok(QueryClient::new(self.channel().await?))
    }

    /// Connects and returns the channel, for any of the operator services.
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        let files = self.files();
        let tls = files.load().context(
            "cannot load the operator certificate; pass --certs DIR (or --ca/--cert/--key)",
        )?;
        let host = self
            .aggregator
            .trim_start_matches("https://")
            .rsplit_once(':')
            .map_or(self.aggregator.as_str(), |(h, _)| h)
            .trim_matches(['[', ']'])
            .to_string();
        let server_name = self.server_name.clone().unwrap_or(host);
        let endpoint = Endpoint::from_shared(self.aggregator.clone())
            .with_context(|| {
                format!(
                    "`{}` is not an address like https://host:7443",
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
        let channel = endpoint.connect().await.with_context(|| {
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

/// Turns a gRPC error into a sentence for the operator.
pub fn explain(status: tonic::Status) -> anyhow::Error {
    let hint = match status.code() {
        tonic::Code::Unavailable => " (is the aggregator running and reachable?)",
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => {
            " (use an operator certificate issued with `connwatch-aggregator ca issue --role operator`)"
        }
        _ => "",
    };
    anyhow::anyhow!("{}{hint}", status.message())
}
