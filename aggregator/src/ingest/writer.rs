//! The single writer. Every accepted report goes through it: it takes as many as are
//! waiting (up to `max_batch`, and [`MAX_GROUP_BYTES`] as received), drops resends by
//! (connector, epoch, seq), applies the rest in one atomic batch, flushes once, and
//! only then updates the live fleet and answers each report's sender. One flush per
//! group keeps ingest far above the one-fsync-per-report ceiling.

use crate::config::RulesConfig;
use crate::fleet::SharedFleet;
use crate::metrics::Metrics;
use crate::store::{Snapshot, Store, StoredConnector, Write};
use connwatch_shared::wire::{AckOutcome, Report};
use std::collections::{HashMap, HashSet};
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
    /// The same report as it arrived, which is what the store keeps.
    pub raw: bytes::Bytes,
    /// When it arrived.
    pub received_ms: i64,
    /// Where the outcome goes: stored or duplicate, or the store's failure.
    pub reply: oneshot::Sender<Result<AckOutcome, String>>,
}

/// The most bytes (as received) one group commits, whatever `max_batch` allows: a
/// group is one history blob, read whole by every history query that needs one of its
/// reports, and held in memory while it commits.
pub const MAX_GROUP_BYTES: usize = 64 << 20;

/// Whether a group can take no more: `max` reports or [`MAX_GROUP_BYTES`].
fn is_full(group: &[Submission], bytes: usize, max: usize) -> bool {
    group.len() >= max || bytes >= MAX_GROUP_BYTES
}

/// Adds to `group` (which holds at least one report, `bytes` of them as received) what
/// is already waiting, until it is full; returns its bytes.
fn gather(
    group: &mut Vec<Submission>,
    mut bytes: usize,
    rx: &mut mpsc::Receiver<Submission>,
    max: usize,
) -> usize {
    while !is_full(group, bytes, max) {
        match rx.try_recv() {
            Ok(s) => {
                bytes += s.raw.len();
                group.push(s);
            }
            Err(_) => break,
        }
    }
    bytes
}

/// Goes on adding to `group` what arrives until `until`, unless it fills or `stop`
/// fires first (snapshot requests and the retention sweep wait for it, as they wait
/// for a commit). A fleet at its usual pace sends reports one at a time, each on its own
/// stream; committing each alone would cost every report a whole group's work (a
/// flush, a history blob, a fleet update): waiting a few milliseconds for the reports
/// behind it costs them that much ack latency instead.
async fn linger(
    group: &mut Vec<Submission>,
    mut bytes: usize,
    rx: &mut mpsc::Receiver<Submission>,
    max: usize,
    until: tokio::time::Instant,
    stop: &CancellationToken,
) {
    while !is_full(group, bytes, max) {
        let next = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            r = tokio::time::timeout_at(until, rx.recv()) => r,
        };
        match next {
            Ok(Some(s)) => {
                bytes += s.raw.len();
                group.push(s);
                bytes = gather(group, bytes, rx, max);
            }
            // The time is up, or every sender has gone.
            Ok(None) | Err(_) => return,
        }
    }
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
    /// The least time from one group's start to the next: reports that arrive
    /// meanwhile wait for it, up to a full group.
    pub commit_interval: Duration,
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
    hooks: Hooks,
) {
    let Hooks {
        metrics,
        restart,
        rules,
    } = hooks;
    let mut failed: Option<String> = None;
    let Tuning {
        max_batch,
        retention,
        commit_interval,
    } = tuning;
    // As if the last group had started an interval ago, so the first report goes at once.
    let mut last_group = {
        let now = tokio::time::Instant::now();
        now.checked_sub(commit_interval).unwrap_or(now)
    };
    let mut batch = Vec::with_capacity(max_batch);
    let mut updating = Updating::default();
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
                match &failed {
                    None => pruner.step(&store),
                    Some(_) => restart.if_space_is_back(),
                }
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
        let bytes = first.raw.len();
        batch.push(first);
        let bytes = gather(&mut batch, bytes, &mut rx, max_batch);
        // The first report after a quiet spell goes at once; under load, groups already
        // take longer than the interval and nothing waits.
        let until = last_group + commit_interval;
        if failed.is_none() && tokio::time::Instant::now() < until {
            linger(&mut batch, bytes, &mut rx, max_batch, until, &stop).await;
        }
        last_group = tokio::time::Instant::now();
        let group = std::mem::take(&mut batch);
        match &failed {
            // sled does not recover from a failed flush in the same process; refuse at
            // once rather than touch it again, until the restart reopens it.
            Some(why) => {
                for s in group {
                    let _ = s.reply.send(Err(why.clone()));
                }
            }
            None => {
                if let Err(e) = commit(&store, &fleet, group, &metrics, &rules, &mut updating).await
                {
                    failed = Some(format!(
                        "the store failed ({e}); nothing is acknowledged until the aggregator restarts, which it does by itself once the disk has room"
                    ));
                }
            }
        }
    }
    updating.finish().await;
    tracing::debug!("writer stopped");
}

/// How long a flush may take before the aggregator says ingest is stuck.
const SLOW_FLUSH: Duration = Duration::from_secs(5);

/// Flushes, and if that takes longer than [`SLOW_FLUSH`] (sled waits rather than
/// fails when the disk is full), says so in `status` while it keeps waiting: nothing
/// is acknowledged meanwhile, so collectors keep their reports.
async fn flush_watched(store: &Store, metrics: &Metrics) -> Result<(), crate::store::StoreError> {
    let flush = store.flush();
    tokio::pin!(flush);
    match tokio::time::timeout(SLOW_FLUSH, &mut flush).await {
        Ok(r) => r.map(|_| ()),
        Err(_) => {
            let problem = format!(
                "the store cannot commit (a flush has taken longer than {SLOW_FLUSH:?}: is the disk full or failing?); reports are not acknowledged and collectors keep them until it can"
            );
            tracing::error!("{problem}");
            metrics.set_ingest_problem(Some(problem));
            flush.await.map(|_| ())
        }
    }
}

/// What the writer needs besides the store: the counters, and the way to ask for a
/// restart once a failed store could work again.
#[derive(Debug, Clone)]
pub struct Hooks {
    /// The aggregator's counters.
    pub metrics: Metrics,
    /// Asks the server to stop for a restart.
    pub restart: RestartOnSpace,
    /// The thresholds the fleet is evaluated with.
    pub rules: Arc<RulesConfig>,
}

/// After a store failure: checks for disk space in the store's folder, and when there
/// is room again, asks the server to stop so that a restart reopens the store (sled
/// recovers to its last flush, so nothing acknowledged is lost).
#[derive(Debug, Clone)]
pub struct RestartOnSpace {
    /// The store's folder.
    pub dir: std::path::PathBuf,
    /// Cancelled to stop the server.
    pub shutdown: CancellationToken,
    /// Set when the stop is for a restart.
    pub requested: Arc<std::sync::atomic::AtomicBool>,
}

/// Room the store needs before a restart is worth it.
const SPACE_PROBE_BYTES: usize = 16 << 20;

impl RestartOnSpace {
    fn if_space_is_back(&self) {
        if self.requested.load(Relaxed) {
            return;
        }
        let probe = self.dir.join(".space-probe");
        let ok = std::fs::File::create(&probe)
            .and_then(|mut f| {
                use std::io::Write;
                f.write_all(&vec![0u8; SPACE_PROBE_BYTES])?;
                f.sync_all()
            })
            .is_ok();
        let _ = std::fs::remove_file(&probe);
        if ok {
            tracing::warn!("the disk has room again: stopping so that a restart reopens the store");
            self.requested.store(true, Relaxed);
            self.shutdown.cancel();
        }
    }
}

/// The fleet update (evaluation, then acks) of the group committed last, which runs
/// while the next group is applied and flushed; and that group's newest entries
/// (without their reports), which the next group must see before the fleet has them.
#[derive(Default)]
struct Updating {
    /// Ends with whether the fleet took the whole group.
    task: Option<tokio::task::JoinHandle<bool>>,
    entries: HashMap<String, StoredConnector>,
    /// Set once an update failed: the fleet may then lack entries until a restart, so
    /// `entries` keeps every group's instead of the last one's, or later groups would
    /// take older entries for their connectors' previous ones.
    lost: bool,
}

impl Updating {
    /// Waits for the last group's update and acks.
    async fn finish(&mut self) {
        if let Some(task) = self.task.take() {
            let updated = task.await.unwrap_or_else(|e| {
                tracing::error!(error = %e, "the fleet update task failed");
                false
            });
            self.lost |= !updated;
        }
    }
}

/// Sends each report's outcome to its stream.
fn answer(
    replies: Vec<(oneshot::Sender<Result<AckOutcome, String>>, AckOutcome)>,
    metrics: &Metrics,
) {
    for (reply, outcome) in replies {
        match outcome {
            AckOutcome::Duplicate => metrics.reports_duplicate.fetch_add(1, Relaxed),
            _ => metrics.reports_stored.fetch_add(1, Relaxed),
        };
        // The stream may have gone; its collector will resend and get a duplicate ack.
        let _ = reply.send(Ok(outcome));
    }
}

async fn commit(
    store: &Arc<Store>,
    fleet: &SharedFleet,
    batch: Vec<Submission>,
    metrics: &Metrics,
    rules: &Arc<RulesConfig>,
    updating: &mut Updating,
) -> Result<(), String> {
    // Each report is moved, never copied: into its registry entry, which the store
    // encodes into the group's history blob and the fleet then keeps as the latest.
    let mut writes: Vec<Write> = Vec::with_capacity(batch.len());
    // The newest entry of each connector in this group, by its place in `writes`.
    let mut newest: HashMap<String, usize> = HashMap::new();
    let mut replies = Vec::with_capacity(batch.len());
    // What the group needs of the fleet, copied out at once: a long read would hold up
    // the fleet update behind it, and every query queued behind that.
    let known: HashMap<String, StoredConnector> = {
        let wanted: HashSet<&str> = batch
            .iter()
            .map(|s| s.connector.as_str())
            .filter(|c| !updating.entries.contains_key(*c))
            .collect();
        let fleet = fleet.read();
        wanted
            .into_iter()
            .filter_map(|c| Some((c.to_string(), fleet.connectors.get(c)?.without_report())))
            .collect()
    };
    for s in batch {
        let Submission {
            connector,
            report,
            raw,
            received_ms,
            reply,
        } = s;
        let prev = newest
            .get(&connector)
            .map(|&i| &writes[i].entry)
            .or_else(|| updating.entries.get(&connector))
            .or_else(|| known.get(&connector));
        if let Some(p) = prev
            && p.epoch == report.epoch
            && report.seq <= p.last_seq
        {
            replies.push((reply, AckOutcome::Duplicate));
            continue;
        }
        let offset = connwatch_shared::validate::clock_offset_ms(&report, received_ms);
        let mut recent_offsets_ms: Vec<i64> = prev
            .map(|p| p.recent_offsets_ms.clone())
            .unwrap_or_default();
        recent_offsets_ms.push(offset);
        if recent_offsets_ms.len() > RECENT_OFFSETS {
            recent_offsets_ms.remove(0);
        }
        // When the connector logged what the report carries, on the aggregator's clock:
        // its collection time moved by the host's estimated offset, so a report held in
        // a spool counts from when it was collected, and never later than its arrival.
        let seen_ms = crate::rules::offset_estimate(&recent_offsets_ms).map_or(received_ms, |o| {
            report.collected_at_ms.saturating_add(o).min(received_ms)
        });
        let logged = crate::rules::record_logged(
            prev.map_or(&[][..], |p| &p.logged),
            &report,
            seen_ms,
            rules.for_group(&report.group).log_quiet_after,
        );
        let entry = StoredConnector {
            group: report.group.clone(),
            first_seen_ms: prev.map_or(received_ms, |p| p.first_seen_ms),
            last_seen_ms: prev.map_or(received_ms, |p| p.last_seen_ms.max(received_ms)),
            epoch: report.epoch,
            last_seq: report.seq,
            latest: Some(report),
            clock_offset_ms: offset,
            recent_offsets_ms,
            logged,
        };
        newest.insert(connector.clone(), writes.len());
        writes.push(Write {
            connector,
            entry,
            received_ms,
            raw,
        });
        replies.push((reply, AckOutcome::Stored));
    }
    if !writes.is_empty() {
        let started = std::time::Instant::now();
        // Applying a full group is milliseconds of CPU; on a runtime worker it would
        // hold up every stream and query task queued behind it.
        let applied = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || {
                let r = store.apply(&writes);
                (writes, r)
            })
            .await
        };
        let (writes, applied) = match applied {
            Ok(done) => done,
            Err(e) => {
                let why = format!("the store's apply task failed: {e}");
                for (reply, _) in replies {
                    let _ = reply.send(Err(why.clone()));
                }
                return Err(why);
            }
        };
        let result = match applied {
            Ok(()) => flush_watched(store, metrics).await,
            Err(e) => Err(e),
        };
        metrics.commit_seconds.observe(started.elapsed());
        if let Err(e) = result {
            metrics.commit_failures.fetch_add(1, Relaxed);
            metrics.set_ingest_problem(Some(format!(
                "the store cannot commit ({e}); reports are not acknowledged and collectors keep them until it can"
            )));
            tracing::error!(error = %e, reports = replies.len(), "commit failed; nothing acknowledged (free disk space or fix the store; collectors resend)");
            for (reply, _) in replies {
                let _ = reply.send(Err(e.to_string()));
            }
            return Err(e.to_string());
        }
        metrics.set_ingest_problem(None);
        let headers = newest
            .into_iter()
            .map(|(connector, i)| (connector, writes[i].entry.without_report()));
        updating.finish().await;
        if updating.lost {
            updating.entries.extend(headers);
        } else {
            updating.entries = headers.collect();
        }
        // Evaluating a group's connectors is milliseconds of CPU: it runs on a blocking
        // thread while the next group commits, and ends before the acks, so that every
        // answer given after a collector's ack already reflects its report.
        let (fleet, rules, metrics) = (fleet.clone(), rules.clone(), metrics.clone());
        let now = connwatch_shared::time::now_ms();
        let entries = writes.into_iter().map(|w| (w.connector, w.entry));
        updating.task = Some(tokio::spawn(async move {
            let updated =
                tokio::task::spawn_blocking(move || fleet.upsert(entries, now, &rules)).await;
            answer(replies, &metrics);
            updated
                .map_err(|e| {
                    // The reports are durable; the live view lacks what the failed
                    // update had not reached until those connectors report again or
                    // the aggregator restarts.
                    tracing::error!(error = %e, "updating the live fleet failed");
                })
                .is_ok()
        }));
        return Ok(());
    }
    // Nothing new: the acks still wait for the previous group's, which they may name.
    updating.finish().await;
    answer(replies, metrics);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submission(bytes: usize) -> Submission {
        Submission {
            connector: "c".into(),
            report: Report::default(),
            raw: bytes::Bytes::from(vec![0u8; bytes]),
            received_ms: 0,
            reply: oneshot::channel().0,
        }
    }

    #[tokio::test]
    async fn a_group_stops_at_its_count_or_its_bytes() {
        let (tx, mut rx) = mpsc::channel(16);
        for _ in 0..5 {
            tx.try_send(submission(10)).expect("room");
        }
        let mut group = vec![submission(10)];
        gather(&mut group, 10, &mut rx, 4);
        assert_eq!(group.len(), 4, "stops at max_batch");
        let mut group = vec![submission(10)];
        gather(&mut group, 10, &mut rx, 100);
        assert_eq!(group.len(), 3, "takes only what is waiting");

        let big = MAX_GROUP_BYTES / 2;
        for _ in 0..3 {
            tx.try_send(submission(big)).expect("room");
        }
        let mut group = vec![submission(10)];
        gather(&mut group, 10, &mut rx, 100);
        assert_eq!(group.len(), 3, "stops once the bytes reach the bound");
        assert_eq!(rx.len(), 1, "the rest waits for the next group");
    }

    #[tokio::test(start_paused = true)]
    async fn lingering_takes_what_arrives_until_its_time_or_a_full_group() {
        let stop = CancellationToken::new();
        let (tx, mut rx) = mpsc::channel(16);
        let start = tokio::time::Instant::now();
        let until = start + Duration::from_millis(20);
        let sender = tokio::spawn(async move {
            for at in [5, 10, 30] {
                tokio::time::sleep_until(start + Duration::from_millis(at)).await;
                tx.send(submission(10)).await.expect("open");
            }
            tx
        });
        let mut group = vec![submission(10)];
        linger(&mut group, 10, &mut rx, 100, until, &stop).await;
        assert_eq!(group.len(), 3, "the two sent within the interval join");
        assert_eq!(
            tokio::time::Instant::now(),
            until,
            "it waits out the interval"
        );
        let tx = sender.await.expect("sender");
        assert_eq!(rx.len(), 1, "the one sent later waits for the next group");

        let mut group = vec![submission(10)];
        let until = tokio::time::Instant::now() + Duration::from_secs(1);
        linger(&mut group, 10, &mut rx, 2, until, &stop).await;
        assert_eq!(group.len(), 2);
        assert!(
            tokio::time::Instant::now() < until,
            "a full group goes at once"
        );

        tx.send(submission(10)).await.expect("open");
        stop.cancel();
        let mut group = vec![submission(10)];
        linger(&mut group, 10, &mut rx, 100, until, &stop).await;
        assert_eq!(group.len(), 1, "a stop commits what it has without waiting");
        assert!(tokio::time::Instant::now() < until);
    }
}
