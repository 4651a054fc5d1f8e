//! The probe scheduler: one cycle every `interval`, delayed by a random jitter so a
//! fleet does not report in step, each cycle turned into a numbered report.

use crate::config::Config;
use crate::outbox::Outbox;
use crate::probe::{self, Probe};
use connwatch_shared::wire::Report;
use rand::Rng;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Numbers reports: one epoch per lifetime of the sequence, seq from 1.
#[derive(Debug)]
pub struct Sequencer {
    epoch: u64,
    next: u64,
}

impl Sequencer {
    /// A new sequence with a random epoch.
    pub fn fresh() -> Sequencer {
        Sequencer {
            epoch: rand::rng().random_range(1..u64::MAX),
            next: 1,
        }
    }

    fn take(&mut self) -> (u64, u64) {
        let seq = self.next;
        self.next += 1;
        (self.epoch, seq)
    }
}

/// Runs one cycle: every probe concurrently, assembled into a report.
pub async fn cycle(config: &Config, probes: &[Arc<dyn Probe>]) -> Report {
    let collected_at_ms = connwatch_shared::time::now_ms();
    let mut report = Report {
        collected_at_ms,
        group: config.group.clone(),
        collector_version: env!("CARGO_PKG_VERSION").to_string(),
        ..Default::default()
    };
    for obs in probe::run_all(probes).await {
        obs.apply(&mut report);
    }
    report
}

/// Runs cycles until `shutdown`, queueing each report in `outbox`.
pub async fn run(
    config: Arc<Config>,
    probes: Vec<Arc<dyn Probe>>,
    outbox: Arc<Outbox>,
    mut seq: Sequencer,
    shutdown: CancellationToken,
) {
    let mut next = tokio::time::Instant::now();
    loop {
        let jitter = if config.jitter.is_zero() {
            std::time::Duration::ZERO
        } else {
            rand::rng().random_range(std::time::Duration::ZERO..config.jitter)
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(next + jitter) => {}
        }
        next += config.interval;
        let mut report = cycle(&config, &probes).await;
        let (epoch, n) = seq.take();
        report.epoch = epoch;
        report.seq = n;
        report.dropped_reports = outbox.dropped();
        tracing::debug!(seq = n, probes = probes.len(), "cycle done");
        outbox.push(report);
        // After a long stall (a suspended VM), skip the missed cycles rather than
        // running them back to back.
        let now = tokio::time::Instant::now();
        if next < now {
            next = now;
        }
    }
}
