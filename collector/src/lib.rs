//! The connwatch collector: measures a connector host every cycle and streams the
//! reports to the aggregator. `main.rs` is a thin shell over [`run`] and [`probe_once`].

pub mod config;
pub mod layout;
pub mod platform;
pub mod probe;
pub mod scheduler;
pub mod service;
pub mod spool;
pub mod uplink;

use anyhow::Context;
use config::Config;
use connwatch_shared::wire::Report;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Runs the collector until `shutdown`: the scheduler queues reports, the uplink
/// delivers them. Stops the scheduler first, then gives the uplink a grace period to
/// deliver what is queued.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let aggregator = config.aggregator.clone().with_context(|| {
        format!(
            "{}: no [aggregator] section; add one with address, ca, cert and key to send reports (or use `probe` to check this host without an aggregator)",
            config.file.display()
        )
    })?;
    let tls =
        aggregator
            .tls
            .load()
            .map_err(|e| match aggregator.tls.key_for(&e, "aggregator") {
                Some(key) => {
                    anyhow::Error::new(e).context(format!("{}: key `{key}`", config.file.display()))
                }
                None => anyhow::Error::new(e),
            })?;
    let config = Arc::new(config);
    let probes = probe::build(&config, &platform::current());
    let spool = Arc::new(spool::Spool::open(
        &config.spool.dir,
        config.spool.max_bytes,
    )?);
    tracing::info!(
        group = %config.group,
        probes = probes.len(),
        interval = ?config.interval,
        spooled = spool.len(),
        epoch = spool.epoch(),
        "collector starting"
    );
    let stop_uplink = CancellationToken::new();
    let uplink = tokio::spawn(uplink::run(
        aggregator,
        tls,
        spool.clone(),
        stop_uplink.clone(),
    ));
    scheduler::run(config, probes, spool.clone(), shutdown).await;
    // The scheduler has stopped, so nothing more is spooled: give the uplink a grace
    // period to deliver what is queued, then stop it. What remains stays on disk.
    let deadline = tokio::time::Instant::now() + DRAIN_GRACE;
    while !spool.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop_uplink.cancel();
    uplink.await.context("the uplink task failed")?;
    Ok(())
}

/// How long a stopping collector keeps trying to deliver what it holds.
pub const DRAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs one cycle locally and returns its report, without an aggregator.
pub async fn probe_once(config: &Config) -> Report {
    let probes = probe::build(config, &platform::current());
    let mut report = scheduler::cycle(config, &probes).await;
    report.seq = 1;
    report
}
