//! The uplink: keeps one mTLS gRPC stream open to the aggregator, sends every queued
//! report in order, forgets a report once it is acked, and reconnects with exponential
//! backoff and jitter. After a reconnect it resends everything not yet acked; the
//! aggregator recognises resends by (epoch, seq).
//!
//! Certificates are renewed in place (new files at the same paths), so the uplink
//! re-reads its TLS files before each connection and, while connected, every
//! [`RENEWAL_CHECK`]; when they change it reconnects to present the new certificate.
//! A renewal never needs a restart.

use crate::config::AggregatorConfig;
use crate::spool::Spool;
use anyhow::Context;
use connwatch_shared::tls::{TlsFiles, TlsMaterial};
use connwatch_shared::wire::ingest_client::IngestClient;
use connwatch_shared::wire::{AckOutcome, Report};
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

/// The first reconnect delay; it doubles per failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(250);
/// The longest reconnect delay.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long connecting (TCP, TLS, HTTP/2) and opening the report stream may take. A
/// peer that accepts TCP and then says nothing (a stopped aggregator, something else
/// on the port, a middlebox) would otherwise hold the uplink forever while the spool
/// fills; past this the attempt is abandoned, logged, and retried with backoff.
pub const CONNECT_DEADLINE: Duration = Duration::from_secs(10);
/// How often a connected uplink looks for renewed certificate files.
pub const RENEWAL_CHECK: Duration = Duration::from_secs(5);

/// Opens a channel to the aggregator.
pub async fn connect(config: &AggregatorConfig, tls: &TlsMaterial) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(config.address.clone())
        .with_context(|| format!("aggregator address `{}` is not a URI", config.address))?
        .tls_config(tls.client_config(&config.server_name))
        .context("TLS set-up failed")?
        .connect_timeout(Duration::from_secs(5))
        .tcp_keepalive(Some(Duration::from_secs(30)))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    endpoint
        .connect()
        .await
        .with_context(|| format!("cannot connect to the aggregator at {}", config.address))
}

/// Delivers reports from `spool` until `stop`; `tls` is what the config's files held
/// at start.
pub async fn run(
    config: AggregatorConfig,
    mut tls: TlsMaterial,
    spool: Arc<Spool>,
    stop: CancellationToken,
) {
    let mut failures = 0u32;
    while !stop.is_cancelled() {
        match config.tls.load() {
            Ok(now) if now != tls => {
                tracing::info!(cert = %config.tls.cert.display(), "certificate files changed; connecting with the new ones");
                tls = now;
            }
            Ok(_) => {}
            // Mid-renewal a file can be missing or half written: keep what worked.
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the certificate files; using the ones read before")
            }
        }
        match session(&config, &tls, &spool, &stop).await {
            Ok(acked) if acked > 0 => failures = 0,
            Ok(_) => failures += 1,
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %format!("{e:#}"), pending = spool.len(), "uplink down");
            }
        }
        if stop.is_cancelled() {
            break;
        }
        let delay = backoff(failures);
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    if !spool.is_empty() {
        tracing::warn!(
            pending = spool.len(),
            "stopping with reports not acknowledged; they stay in the spool for the next start"
        );
    }
}

/// Full-jitter exponential backoff.
fn backoff(failures: u32) -> Duration {
    let cap = MIN_BACKOFF
        .saturating_mul(1u32 << failures.min(8))
        .min(MAX_BACKOFF);
    rand::rng().random_range(cap / 2..=cap)
}

/// One stream's life; returns how many acks it received.
async fn session(
    config: &AggregatorConfig,
    tls: &TlsMaterial,
    spool: &Arc<Spool>,
    stop: &CancellationToken,
) -> anyhow::Result<u64> {
    let (tx, rx) = mpsc::channel::<Report>(64);
    let open = async {
        let channel = connect(config, tls).await?;
        IngestClient::new(channel)
            .stream(ReceiverStream::new(rx))
            .await
            .context("the aggregator refused the report stream")
    };
    let response = tokio::select! {
        opened = tokio::time::timeout(CONNECT_DEADLINE, open) => match opened {
            Ok(response) => response?,
            Err(_) => anyhow::bail!(
                "no answer from the aggregator at {} within {CONNECT_DEADLINE:?}: the port accepts connections but the TLS handshake or the report stream never completed (is something else listening there, or is the aggregator stopped?)",
                config.address
            ),
        },
        _ = stop.cancelled() => return Ok(0),
    };
    let mut newest = spool.subscribe();
    let mut acks = response.into_inner();
    tracing::info!(address = %config.address, pending = spool.len(), "uplink connected");
    let mut sent = 0u64;
    let mut acked = 0u64;
    let pace = Duration::from_secs(1) / config.drain_rate.max(1);
    let mut next_send = tokio::time::Instant::now();
    // One future for the session, so its timer is not restarted by every ack.
    let renewal = renewed(&config.tls, tls);
    tokio::pin!(renewal);
    loop {
        let next = spool.next_after(sent);
        tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(acked),
            ack = acks.message() => {
                let Some(ack) = ack.context("the aggregator ended the stream")? else {
                    anyhow::bail!("the aggregator closed the stream");
                };
                acked += 1;
                if ack.outcome == AckOutcome::Rejected as i32 {
                    tracing::warn!(seq = ack.seq, reason = %ack.reason, "report rejected by the aggregator; dropped");
                }
                // The spool syncs its state: on the blocking pool, off the thread
                // that runs the probes.
                let recorded = {
                    let spool = spool.clone();
                    let seq = ack.seq;
                    tokio::task::spawn_blocking(move || spool.ack(seq)).await
                };
                match recorded {
                    Ok(Ok(())) => {}
                    // The report is durable on the aggregator; failing to forget it
                    // here only means it is resent and acked as a duplicate.
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot record an ack in the spool"),
                    Err(e) => tracing::warn!(error = %e, "cannot record an ack in the spool"),
                }
            }
            // Acks are read while sending, so a long backlog never fills both
            // directions' buffers at once. A backlog drains at `drain_rate`, with a
            // small burst allowance so live reports are not delayed.
            permit = async {
                tokio::time::sleep_until(next_send).await;
                tx.reserve().await
            }, if next.is_some() => {
                let permit = permit.context("the report stream closed")?;
                if let Some(mut report) = next {
                    sent = report.seq;
                    // Stamped now, not when the cycle ran: the aggregator measures the
                    // host's clock offset from it, and neither the cycle's slowest
                    // check nor the report's time in the spool is clock skew.
                    report.sent_at_ms = connwatch_shared::time::now_ms();
                    permit.send(report);
                }
                let now = tokio::time::Instant::now();
                let floor = now.checked_sub(pace * BURST).unwrap_or(now);
                next_send = next_send.max(floor) + pace;
            }
            changed = newest.changed(), if next.is_none() => {
                if changed.is_err() {
                    return Ok(acked);
                }
            }
            () = &mut renewal => {
                tracing::info!(cert = %config.tls.cert.display(), "certificate files renewed; reconnecting to present them");
                return Ok(acked);
            }
        }
    }
}

/// Resolves once the TLS files hold something other than `current` (and read
/// cleanly).
async fn renewed(files: &TlsFiles, current: &TlsMaterial) {
    loop {
        tokio::time::sleep(RENEWAL_CHECK).await;
        if files.load().is_ok_and(|now| &now != current) {
            return;
        }
    }
}

/// Reports that may go back to back before pacing applies.
const BURST: u32 = 10;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_capped() {
        assert!(backoff(0) <= MIN_BACKOFF);
        assert!(backoff(3) >= MIN_BACKOFF * 4);
        for f in [10, 20, 1000] {
            assert!(backoff(f) <= MAX_BACKOFF);
        }
    }
}
