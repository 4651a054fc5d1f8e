//! The single writer. Every accepted report goes through it: it takes as many as are
//! waiting (up to `max_batch`), drops resends by (connector, epoch, seq), applies the
//! rest in one atomic batch, flushes once, and only then updates the live fleet and
//! answers each report's sender. One flush per group keeps ingest far above the
//! one-fsync-per-report ceiling.

use crate::fleet::SharedFleet;
use crate::metrics::Metrics;
use crate::store::{Snapshot, Store, StoredConnector, StoredReport, Write};
use connwatch_shared::wire::{AckOutcome, Report};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// How many recent clock offsets a connector's entry keeps.
const RECENT_OFFSETS: usize = 5;

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

/// How often the writer removes a slice of expired history.
const PRUNE_EVERY: Duration = Duration::from_secs(1);
/// Entries looked at per slice.
const PRUNE_SLICE: usize = 5_000;
/// Pause between two passes over the whole history.
const PRUNE_PASS_PAUSE: Duration = Duration::from_secs(600);

/// Where the retention sweep is.
struct Pruner {
    retention_ms: i64,
    cursor: Option<Vec<u8>>,
    next_pass: tokio::time::Instant,
}

impl Pruner {
    /// Removes one slice if a pass is under way or due. The writer does this itself so
    /// that it stays the only writer.
    fn step(&mut self, store: &Store) {
        let now = tokio::time::Instant::now();
        if self.cursor.is_none() && now < self.next_pass {
            return;
        }
        let cutoff = connwatch_shared::time::now_ms() - self.retention_ms;
        match store.prune_history(cutoff, self.cursor.as_deref(), PRUNE_SLICE) {
            Ok((removed, next)) => {
                if removed > 0 {
                    tracing::debug!(removed, "expired history removed");
                }
                if next.is_none() {
                    self.next_pass = now + PRUNE_PASS_PAUSE;
                }
                self.cursor = next;
            }
            Err(e) => {
                tracing::warn!(error = %e, "pruning expired history failed; retrying on the next pass");
                self.cursor = None;
                self.next_pass = now + PRUNE_PASS_PAUSE;
            }
        }
    }
}

/// How the writer groups commits and how long it keeps history.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// The most reports committed in one flush.
    pub max_batch: usize,
    /// History older than this is removed.
    pub retention: Duration,
}

/// Requests other than reports that the writer serves between groups, so that they
/// see the store with no write half done.
#[derive(Debug)]
pub enum Control {
    /// A consistent copy of the whole store, for backups.
    Snapshot(oneshot::Sender<Result<Snapshot, String>>),
}

/// Runs until every sender is dropped or `stop` fires; then commits what is already
/// queued and returns after the last flush. Between groups it removes history older
/// than `retention`, a slice at a time, and serves [`Control`] requests.
pub async fn run(
    store: Arc<Store>,
    fleet: SharedFleet,
    mut rx: mpsc::Receiver<Submission>,
    mut control: mpsc::Receiver<Control>,
    tuning: Tuning,
    stop: CancellationToken,
    metrics: Metrics,
) {
    let Tuning {
        max_batch,
        retention,
    } = tuning;
    let mut batch = Vec::with_capacity(max_batch);
    let mut pruner = Pruner {
        retention_ms: i64::try_from(retention.as_millis()).unwrap_or(i64::MAX),
        cursor: None,
        next_pass: tokio::time::Instant::now(),
    };
    let mut prune_tick = tokio::time::interval(PRUNE_EVERY);
    prune_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
            biased;
            s = rx.recv() => s,
            _ = stop.cancelled() => {
                // Refuse new work, but commit what was already handed over.
                rx.close();
                rx.recv().await
            }
            _ = prune_tick.tick() => {
                pruner.step(&store);
                continue;
            }
            Some(c) = control.recv() => {
                match c {
                    Control::Snapshot(reply) => {
                        let _ = reply.send(store.snapshot().map_err(|e| e.to_string()));
                    }
                }
                continue;
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
            let offset = s.received_ms - s.report.collected_at_ms;
            let mut recent_offsets_ms: Vec<i64> = prev
                .map(|p| p.recent_offsets_ms.clone())
                .unwrap_or_default();
            recent_offsets_ms.push(offset);
            if recent_offsets_ms.len() > RECENT_OFFSETS {
                recent_offsets_ms.remove(0);
            }
            let entry = StoredConnector {
                group: s.report.group.clone(),
                first_seen_ms: prev.map_or(s.received_ms, |p| p.first_seen_ms),
                last_seen_ms: prev.map_or(s.received_ms, |p| p.last_seen_ms.max(s.received_ms)),
                epoch: s.report.epoch,
                last_seq: s.report.seq,
                latest: Some(s.report.clone()),
                clock_offset_ms: offset,
                recent_offsets_ms,
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
