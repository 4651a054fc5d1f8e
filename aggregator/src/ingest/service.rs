//! The `Ingest` gRPC service. Each collector stream gets a reader task (validate, hand
//! to the writer) and an acker task (answer in order once each report is durable).
//! Reports are pipelined: many can be in flight per stream, acks keep their order.
//!
//! One stream per identity: a new stream from the same connector replaces the old one
//! (a reconnecting collector must not wait for its dead stream to time out, and two
//! writers with one certificate must not interleave). Each identity is paced by a
//! token bucket; a collector over its rate is slowed down, not refused.

use super::route::Received;
use super::writer::Submission;
use crate::auth;
use crate::metrics::Metrics;
use connwatch_shared::time::now_ms;
use connwatch_shared::validate::validate_report;
use connwatch_shared::wire::{Ack, AckOutcome};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

/// Reports one stream may have in flight before the reader waits for acks.
const IN_FLIGHT: usize = 1024;

/// Sustained reports per second one identity may send (a draining collector sends 50).
pub const RATE_PER_IDENTITY: u32 = 200;
/// Reports one identity may send back to back before pacing applies.
pub const BURST_PER_IDENTITY: u32 = 400;

/// The ingest service; holds the writer's queue and the live streams by identity.
#[derive(Debug, Clone)]
pub struct IngestService {
    writer: mpsc::Sender<Submission>,
    streams: Arc<Mutex<HashMap<String, (u64, CancellationToken)>>>,
    next_stream: Arc<std::sync::atomic::AtomicU64>,
    metrics: Metrics,
}

impl IngestService {
    /// A service feeding `writer`, counting rejections in `metrics`.
    pub fn new(writer: mpsc::Sender<Submission>, metrics: Metrics) -> IngestService {
        IngestService {
            writer,
            streams: Arc::default(),
            next_stream: Arc::default(),
            metrics,
        }
    }

    /// Registers a new stream for `connector`, cancelling the one it replaces.
    fn register(&self, connector: &str) -> (u64, CancellationToken) {
        let id = self
            .next_stream
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let token = CancellationToken::new();
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, old)) = streams.insert(connector.to_string(), (id, token.clone())) {
            old.cancel();
        }
        (id, token)
    }

    fn unregister(
        streams: &Mutex<HashMap<String, (u64, CancellationToken)>>,
        connector: &str,
        id: u64,
    ) {
        let mut streams = streams.lock().unwrap_or_else(|p| p.into_inner());
        if streams
            .get(connector)
            .is_some_and(|(current, _)| *current == id)
        {
            streams.remove(connector);
        }
    }
}

enum Pending {
    Ready(Ack),
    Wait(u64, oneshot::Receiver<Result<AckOutcome, String>>),
    Fail(Status),
}

fn ack(seq: u64, outcome: AckOutcome, reason: String) -> Ack {
    Ack {
        seq,
        outcome: outcome as i32,
        reason,
    }
}

/// A token bucket: `rate` per second, up to `burst` at once.
struct Pacer {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: tokio::time::Instant,
}

impl Pacer {
    fn new(rate: u32, burst: u32) -> Pacer {
        Pacer {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            at: tokio::time::Instant::now(),
        }
    }

    /// Waits until one more report may pass.
    async fn take(&mut self) {
        let now = tokio::time::Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        if self.tokens < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - self.tokens) / self.rate);
            tokio::time::sleep(wait).await;
            self.tokens = 1.0;
            self.at = tokio::time::Instant::now();
        }
        self.tokens -= 1.0;
    }
}

/// Makes tonic's transport-level errors say what they mean for a collector.
fn explain_stream_error(status: Status) -> Status {
    let msg = status.message();
    if status.code() == tonic::Code::Internal && msg.contains("decode") {
        return Status::invalid_argument(format!(
            "a report could not be decoded ({msg}); the collector may speak another version of the connwatch.v1 contract or the stream is corrupt"
        ));
    }
    if status.code() == tonic::Code::OutOfRange {
        return Status::out_of_range(format!(
            "{msg}; a report must stay under {} bytes: reduce the probes listed in the collector's config",
            crate::server::MAX_MESSAGE_BYTES
        ));
    }
    status
}

impl IngestService {
    /// Serves one collector's report stream: acks in order, each once its report is
    /// durable (or at once when it is rejected).
    pub async fn stream(
        &self,
        request: Request<Streaming<Received>>,
    ) -> Result<Response<ReceiverStream<Result<Ack, Status>>>, Status> {
        let who = auth::caller(&request)?;
        let connector = who.name;
        let span = tracing::info_span!("stream", connector = %connector);
        let mut inbound = request.into_inner();
        let (pending_tx, mut pending_rx) = mpsc::channel::<Pending>(IN_FLIGHT);
        let (ack_tx, ack_rx) = mpsc::channel(IN_FLIGHT);
        let writer = self.writer.clone();
        let (stream_id, replaced) = self.register(&connector);
        let streams = self.streams.clone();
        let metrics = self.metrics.clone();
        tracing::debug!(parent: &span, "stream opened");
        tokio::spawn(
            async move {
                let mut pacer = Pacer::new(RATE_PER_IDENTITY, BURST_PER_IDENTITY);
                loop {
                    let message = tokio::select! {
                        m = inbound.message() => m,
                        _ = replaced.cancelled() => {
                            let _ = pending_tx.send(Pending::Fail(Status::aborted(
                                "a newer stream from this connector replaced this one",
                            ))).await;
                            break;
                        }
                    };
                    let next = match message {
                        Ok(Some(report)) => {
                            pacer.take().await;
                            accept(&writer, &connector, report, &metrics).await
                        }
                        Ok(None) => break,
                        Err(status) => {
                            // Dropped connections land here too, so this is not a warning.
                            tracing::info!(error = %status.message(), "stream ended with an error");
                            Pending::Fail(explain_stream_error(status))
                        }
                    };
                    let last = matches!(next, Pending::Fail(_));
                    if pending_tx.send(next).await.is_err() || last {
                        break;
                    }
                }
                IngestService::unregister(&streams, &connector, stream_id);
                tracing::debug!("stream closed");
            }
            .instrument(span.clone()),
        );
        tokio::spawn(
            async move {
                while let Some(p) = pending_rx.recv().await {
                    let item = match p {
                        Pending::Ready(a) => Ok(a),
                        Pending::Wait(seq, rx) => match rx.await {
                            Ok(Ok(outcome)) => Ok(ack(seq, outcome, String::new())),
                            Ok(Err(e)) => Err(Status::unavailable(format!(
                                "the aggregator could not store report {seq} ({e}); it was not acknowledged, resend it later"
                            ))),
                            Err(_) => Err(Status::unavailable(
                                "the aggregator is shutting down; reconnect and resend",
                            )),
                        },
                        Pending::Fail(s) => Err(s),
                    };
                    let fatal = item.is_err();
                    if ack_tx.send(item).await.is_err() || fatal {
                        break;
                    }
                }
            }
            .instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(ack_rx)))
    }
}

async fn accept(
    writer: &mpsc::Sender<Submission>,
    connector: &str,
    received: Received,
    metrics: &Metrics,
) -> Pending {
    let received_ms = now_ms();
    let Received { raw, report } = received;
    let seq = report.seq;
    if let Err(e) = validate_report(&report, received_ms) {
        tracing::warn!(seq, error = %e, "report rejected");
        metrics
            .reports_rejected
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Pending::Ready(ack(seq, AckOutcome::Rejected, e.to_string()));
    }
    let (reply, rx) = oneshot::channel();
    let submission = Submission {
        connector: connector.to_string(),
        report,
        raw,
        received_ms,
        reply,
    };
    if writer.send(submission).await.is_err() {
        return Pending::Fail(Status::unavailable(
            "the aggregator is shutting down; reconnect and resend",
        ));
    }
    Pending::Wait(seq, rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_pacer_allows_a_burst_then_the_rate() {
        let mut p = Pacer::new(10, 5);
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            p.take().await;
        }
        assert!(
            start.elapsed() < Duration::from_millis(1),
            "the burst passes at once"
        );
        for _ in 0..10 {
            p.take().await;
        }
        let t = start.elapsed();
        assert!(
            t >= Duration::from_millis(990) && t <= Duration::from_millis(1100),
            "{t:?}"
        );
    }

    #[test]
    fn decode_errors_are_explained() {
        let s = explain_stream_error(Status::internal(
            "failed to decode Protobuf message: buffer underflow",
        ));
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert!(s.message().contains("connwatch.v1"));
    }
}
