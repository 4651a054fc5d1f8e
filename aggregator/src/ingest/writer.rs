//! The single writer. Every accepted report goes through it: it takes as many as are
//! waiting (up to `max_batch`), drops resends by (connector, epoch, seq), applies the
//! rest in one atomic batch, flushes once, and only then updates the live fleet and
//! answers each report's sender. One flush per group keeps ingest far above the
//! one-fsync-per-report ceiling.

use crate::fleet::SharedFleet;
use crate::metrics::Metrics;
use crate::store::{Store, StoredConnector, StoredReport, Write};
use connwatch_shared::wire::{AckOutcome, Report};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// A report waiting to be committed.
#[derive(Debug)]
pub struct Submission {
    /// The connector, from the sender's certificate.
    pub connector: String,
    /// The validated report.
    pub report: Report,
    /// When it arrived.
    pub received_ms: i64,
    /// Where the outcome goes: stored or duplicate, or the store's failure.
    pub reply: oneshot::Sender<Result<AckOutcome, String>>,
}

/// Runs until every sender is dropped or `stop` fires; then commits what is already
/// queued and returns after the last flush.
pub async fn run(
    store: Arc<Store>,
    fleet: SharedFleet,
    mut rx: mpsc::Receiver<Submission>,
    max_batch: usize,
    stop: CancellationToken,
    metrics: Metrics,
) {
    let mut batch = Vec::with_capacity(max_batch);
    loop {
        let first = tokio::select! {
            biased;
            s = rx.recv() => s,
            _ = stop.cancelled() => {
                // Refuse new work, but commit what was already handed over.
                rx.close();
                rx.recv().await
            }
        };
        let Some(first) = first else { break };
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(s) => batch.push(s),
                Err(_) => break,
            }
        }
        commit(&store, &fleet, std::mem::take(&mut batch), &metrics).await;
    }
    tracing::debug!("writer stopped");
}

async fn commit(store: &Store, fleet: &SharedFleet, batch: Vec<Submission>, metrics: &Metrics) {
    let mut overlay: HashMap<String, StoredConnector> = HashMap::new();
    let mut writes = Vec::new();
    let mut outcomes = Vec::with_capacity(batch.len());
    {
        let fleet = fleet.read();
        for s in &batch {
            let prev = overlay
                .get(&s.connector)
                .or_else(|| fleet.connectors.get(&s.connector));
            if let Some(p) = prev
                && p.epoch == s.report.epoch
                && s.report.seq <= p.last_seq
            {
                outcomes.push(AckOutcome::Duplicate);
                continue;
            }
            let entry = StoredConnector {
                group: s.report.group.clone(),
                first_seen_ms: prev.map_or(s.received_ms, |p| p.first_seen_ms),
                last_seen_ms: prev.map_or(s.received_ms, |p| p.last_seen_ms.max(s.received_ms)),
                epoch: s.report.epoch,
                last_seq: s.report.seq,
                latest: Some(s.report.clone()),
                clock_offset_ms: s.received_ms - s.report.collected_at_ms,
            };
            overlay.insert(s.connector.clone(), entry.clone());
            writes.push(Write {
                connector: s.connector.clone(),
                entry,
                history: StoredReport {
                    received_ms: s.received_ms,
                    report: Some(s.report.clone()),
                },
            });
            outcomes.push(AckOutcome::Stored);
        }
    }
    if !writes.is_empty() {
        let started = std::time::Instant::now();
        let result = match store.apply(&writes) {
            Ok(()) => store.flush().await.map(|_| ()),
            Err(e) => Err(e),
        };
        metrics.commit_seconds.observe(started.elapsed());
        if let Err(e) = result {
            metrics.commit_failures.fetch_add(1, Relaxed);
            tracing::error!(error = %e, reports = batch.len(), "commit failed; nothing acknowledged");
            for s in batch {
                let _ = s.reply.send(Err(e.to_string()));
            }
            return;
        }
        let mut fleet = fleet.write();
        for (id, entry) in overlay {
            fleet.connectors.insert(id, entry);
        }
    }
    for outcome in &outcomes {
        match outcome {
            AckOutcome::Duplicate => metrics.reports_duplicate.fetch_add(1, Relaxed),
            _ => metrics.reports_stored.fetch_add(1, Relaxed),
        };
    }
    for (s, outcome) in batch.into_iter().zip(outcomes) {
        // The stream may have gone; its collector will resend and get a duplicate ack.
        let _ = s.reply.send(Ok(outcome));
    }
}
