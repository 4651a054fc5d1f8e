//! Counters the aggregator keeps about itself (ingest, alert sinks, alert states), a
//! cheap shared handle to them, and the Prometheus endpoint that exposes them with the
//! fleet's gauges, which are computed from the live view at scrape time.

pub mod exposition;
pub mod server;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bounds (seconds) of the ingest commit latency buckets: a group commit is one
/// sled flush, from well under a millisecond on tmpfs to about a second on a slow disk.
pub const COMMIT_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A fixed-bucket histogram of durations.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; COMMIT_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (bound, bucket) in COMMIT_BUCKETS.iter().zip(&self.buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }

    /// Cumulative bucket counts, the total count and the sum in seconds.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let buckets = COMMIT_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(b, c)| (*b, c.load(Relaxed)))
            .collect();
        (
            buckets,
            self.count.load(Relaxed),
            self.sum_micros.load(Relaxed) as f64 / 1e6,
        )
    }
}

/// Delivery counters of one alert sink.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// `log`, `webhook` or `alertmanager`.
    pub kind: &'static str,
    /// Where it delivers (the URL, or `stderr`).
    pub target: String,
    /// Notifications (or Alertmanager posts) delivered.
    pub delivered: AtomicU64,
    /// Failed attempts (each retry counts).
    pub failures: AtomicU64,
    /// Notifications dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Notifications waiting now.
    pub queued: AtomicU64,
    /// The last failure's message.
    pub last_error: Mutex<String>,
}

impl SinkStats {
    /// Stats for a sink.
    pub fn new(kind: &'static str, target: String) -> SinkStats {
        SinkStats {
            kind,
            target,
            ..Default::default()
        }
    }

    /// Counts a failed attempt and keeps its message.
    pub fn fail(&self, error: &str) {
        self.failures.fetch_add(1, Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = error.to_string();
    }

    /// The last failure's message.
    pub fn last_error(&self) -> String {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Alerts by state, as of the last evaluation.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AlertCounts {
    /// Pending.
    pub pending: u64,
    /// Firing and not silenced.
    pub firing: u64,
    /// Firing and silenced.
    pub silenced: u64,
}

/// The aggregator's own counters.
#[derive(Debug, Default)]
pub struct Inner {
    /// Reports stored.
    pub reports_stored: AtomicU64,
    /// Resends acknowledged as duplicates.
    pub reports_duplicate: AtomicU64,
    /// Invalid reports rejected.
    pub reports_rejected: AtomicU64,
    /// Group commits that failed.
    pub commit_failures: AtomicU64,
    /// Group commit latency (apply + flush).
    pub commit_seconds: Histogram,
    /// Alert evaluations run.
    pub alert_evaluations: AtomicU64,
    /// Alert evaluations whose state could not be stored.
    pub alert_evaluation_failures: AtomicU64,
    sinks: Mutex<Vec<Arc<SinkStats>>>,
    alerts: Mutex<AlertCounts>,
    /// Why the last group commit failed, until one succeeds again.
    ingest_problem: Mutex<Option<String>>,
}

/// A cheap handle to the counters, shared by the writer, the ingest service, the
/// alert engine and the metrics endpoint.
#[derive(Debug, Default, Clone)]
pub struct Metrics(Arc<Inner>);

impl std::ops::Deref for Metrics {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Metrics {
    /// Records that commits fail (`Some`, with the reason) or work again (`None`).
    pub fn set_ingest_problem(&self, problem: Option<String>) {
        let mut p = self
            .0
            .ingest_problem
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if *p != problem {
            *p = problem;
        }
    }

    /// Why ingest is stopped, if it is.
    pub fn ingest_problem(&self) -> Option<String> {
        self.0
            .ingest_problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Registers a sink's stats so the endpoint and the `alerts` command show them.
    pub fn register_sink(&self, stats: Arc<SinkStats>) {
        self.0
            .sinks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(stats);
    }

    /// Every registered sink.
    pub fn sinks(&self) -> Vec<Arc<SinkStats>> {
        self.0
            .sinks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records the alert counts of the latest evaluation.
    pub fn set_alerts(&self, counts: AlertCounts) {
        *self.0.alerts.lock().unwrap_or_else(|p| p.into_inner()) = counts;
    }

    /// The alert counts of the latest evaluation.
    pub fn alerts(&self) -> AlertCounts {
        *self.0.alerts.lock().unwrap_or_else(|p| p.into_inner())
    }
}
