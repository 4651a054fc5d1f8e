//! A steady fleet at its usual pace: every collector of the bed sends one report per
//! interval, with random phase, into a fresh aggregator. Saturation commits groups of
//! a thousand reports; a fleet at its pace commits a few at a time, and this is what
//! those small groups cost: history on disk, CPU and ack latency per report, beside
//! the same fleet into an aggregator that commits each report alone.

use crate::fixture::{Aggregator, disk_bytes};
use crate::load::{Offer, connect_all, drive};
use crate::{Bed, CONNECT_PARALLEL, measured_drive, quantile_ms};
use connwatch_aggregator::store::history::TRAIN_AFTER;
use serde_json::{Value, json};
use std::time::Duration;

/// Runs `per_s` reports per second from the bed's collectors for `measure`, after a
/// warm-up long enough for the store to train its compression dictionary: first into
/// an aggregator that commits each report as it comes (`commit_interval = "0s"`, the
/// baseline), then into one with the default interval.
pub async fn run(bed: &Bed, per_s: f64, measure: Duration) -> anyhow::Result<Value> {
    let at_once = one(
        bed,
        "steady-at-once",
        "commit_interval = \"0s\"\n",
        per_s,
        measure,
    )
    .await?;
    let mut r = one(bed, "steady", "", per_s, measure).await?;
    r["commit_at_once"] = at_once;
    Ok(r)
}

async fn one(
    bed: &Bed,
    name: &str,
    store: &str,
    per_s: f64,
    measure: Duration,
) -> anyhow::Result<Value> {
    let agg = Aggregator::start_with(&bed.dir.path().join(name), &bed.pki, store)?;
    let (sims, _) = connect_all(&bed.pki, &agg.url(), &bed.certs, CONNECT_PARALLEL).await?;
    let offer = Offer::Rate { total: per_s };
    let warmup = Duration::from_secs_f64(TRAIN_AFTER as f64 / per_s.max(1.0) + 2.0);
    drive(&sims, &bed.pool, offer, warmup, Duration::from_millis(1)).await?;
    let disk0 = disk_bytes(&agg.data_dir);
    let m = measured_drive(
        Some(agg.pid()),
        &sims,
        &bed.pool,
        offer,
        Duration::from_secs(1),
        measure,
    )
    .await?;
    let grown = disk_bytes(&agg.data_dir).saturating_sub(disk0);
    Ok(json!({
        "collectors": sims.len(),
        "offered_per_s": per_s,
        "stored_per_s": m.drive.rate(),
        "seconds": measure.as_secs_f64(),
        "ack_p50_ms": quantile_ms(&m.drive.latencies_us, 0.5),
        "ack_p99_ms": quantile_ms(&m.drive.latencies_us, 0.99),
        "agg_cpu_us_per_report": m.agg_cpu_us,
        "disk_bytes_per_report": grown as f64 / m.drive.stored_total.max(1) as f64,
        "reports_stored": m.drive.stored_total,
        "not_stored": m.drive.other,
    }))
}
