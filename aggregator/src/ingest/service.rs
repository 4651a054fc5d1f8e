//! The `Ingest` gRPC service. Each collector stream gets a reader task (validate, hand
//! to the writer) and an acker task (answer in order once each report is durable).
//! Reports are pipelined: many can be in flight per stream, acks keep their order.

use super::writer::Submission;
use crate::auth;
use crate::metrics::Metrics;
use connwatch_shared::time::now_ms;
use connwatch_shared::validate::validate_report;
use connwatch_shared::wire::ingest_server::Ingest;
use connwatch_shared::wire::{Ack, AckOutcome, Report};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

/// Reports one stream may have in flight before the reader waits for acks.
const IN_FLIGHT: usize = 1024;

/// The ingest service; holds the writer's queue.
#[derive(Debug, Clone)]
pub struct IngestService {
    writer: mpsc::Sender<Submission>,
    metrics: Metrics,
}

impl IngestService {
    /// A service feeding `writer`, counting rejections in `metrics`.
    pub fn new(writer: mpsc::Sender<Submission>, metrics: Metrics) -> IngestService {
        IngestService { writer, metrics }
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

#[tonic::async_trait]
impl Ingest for IngestService {
    type StreamStream = ReceiverStream<Result<Ack, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<Report>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let who = auth::caller(&request)?;
        let connector = who.name;
        let span = tracing::info_span!("stream", connector = %connector);
        let mut inbound = request.into_inner();
        let (pending_tx, mut pending_rx) = mpsc::channel::<Pending>(IN_FLIGHT);
        let (ack_tx, ack_rx) = mpsc::channel(IN_FLIGHT);
        let writer = self.writer.clone();
        let metrics = self.metrics.clone();
        tracing::debug!(parent: &span, "stream opened");
        tokio::spawn(
            async move {
                loop {
                    let next = match inbound.message().await {
                        Ok(Some(report)) => accept(&writer, &connector, report, &metrics).await,
                        Ok(None) => break,
                        Err(status) => {
                            // Dropped connections land here too, so this is not a warning.
                            tracing::info!(error = %status.message(), "stream ended with an error");
                            Pending::Fail(status)
                        }
                    };
                    let last = matches!(next, Pending::Fail(_));
                    if pending_tx.send(next).await.is_err() || last {
                        break;
                    }
                }
                tracing::debug!("stream closed by collector");
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
    report: Report,
    metrics: &Metrics,
) -> Pending {
    let received_ms = now_ms();
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
