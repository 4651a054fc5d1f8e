//! The probe scheduler: one cycle every `interval`, delayed by a random jitter so a
//! fleet does not report in step, each cycle turned into a numbered report.

use crate::config::Config;
use crate::probe::{self, Probe};
use crate::spool::Spool;
use connwatch_shared::wire::Report;
use rand::Rng;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

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

/// Runs cycles until `shutdown`, spooling each report; the spool numbers them.
pub async fn run(
    config: Arc<Config>,
    probes: Vec<Arc<dyn Probe>>,
    spool: Arc<Spool>,
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
        let report = cycle(&config, &probes).await;
        // The spool syncs to disk: on the blocking pool, so the runtime's one thread
        // keeps timing the probes of other tasks meanwhile.
        let pushed = {
            let spool = spool.clone();
            let probes = probes.clone();
            tokio::task::spawn_blocking(move || {
                let seq = spool.push(report)?;
                for p in &probes {
                    p.spooled();
                }
                Ok::<_, crate::spool::SpoolError>(seq)
            })
            .await
        };
        match pushed {
            Ok(Ok(seq)) => tracing::debug!(seq, probes = probes.len(), "cycle done"),
            // Losing one cycle is better than stopping: say so and carry on.
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot spool the report; this cycle is lost")
            }
            Err(e) => tracing::error!(error = %e, "the spool write failed; this cycle is lost"),
        }
        // After a long stall (a suspended VM), skip the missed cycles rather than
        // running them back to back.
        let now = tokio::time::Instant::now();
        if next < now {
            next = now;
        }
    }
}
