//! The reconnect storm: `n` collectors, each with its own certificate, connect at once
//! to a fresh aggregator, each opens its report stream and has one report
//! acknowledged; then they stay connected and idle while the aggregator's memory per
//! connection is read. Needs about `n` + a few hundred open files in this process and
//! in the aggregator (`ulimit -n`).

use crate::Bed;
use crate::fixture::{Aggregator, cpu_seconds, mint_collectors, rss_bytes};
use crate::load::{endpoint, open_and_report};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// How long the storm may take before the remaining collectors count as failed.
const STORM_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the fleet sits idle before memory is read.
const SETTLE: Duration = Duration::from_secs(3);
/// How much longer until memory is read again, past the allocator's decay of freed
/// pages.
const DECAYED: Duration = Duration::from_secs(12);

/// Runs the storm with `n` collectors.
pub async fn run(bed: &Bed, n: usize) -> anyhow::Result<Value> {
    let t = Instant::now();
    let names = (0..n).map(|i| format!("storm-{i:06}")).collect();
    let certs = mint_collectors(&bed.pki, names).await?;
    let mint_s = t.elapsed().as_secs_f64();
    let agg = Aggregator::start(&bed.dir.path().join("storm"), &bed.pki)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = agg.pid();
    let (rss0, _) = rss_bytes(pid).unwrap_or_default();
    let cpu0 = cpu_seconds(pid).unwrap_or(0.0);
    let url = agg.url();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for (i, (_, cert)) in certs.iter().enumerate() {
        let ep = endpoint(&bed.pki, &url, cert)?;
        let body = bed.pool[i % bed.pool.len()].clone();
        tasks.push(tokio::spawn(async move {
            let attempt = async {
                let channel = ep.connect().await?;
                let open = open_and_report(channel, &body, 1).await?;
                anyhow::Ok((open, started.elapsed()))
            };
            tokio::time::timeout(STORM_TIMEOUT, attempt).await
        }));
    }
    let mut held = Vec::with_capacity(n);
    let mut failed = 0usize;
    let mut first_error = None;
    let mut done_at = Vec::with_capacity(n);
    for t in tasks {
        match t.await {
            Ok(Ok(Ok((open, at)))) => {
                held.push(open);
                done_at.push(at.as_secs_f64());
            }
            Ok(Ok(Err(e))) => {
                failed += 1;
                first_error.get_or_insert(format!("{e:#}"));
            }
            _ => {
                failed += 1;
                first_error.get_or_insert("timed out".to_string());
            }
        }
    }
    done_at.sort_by(f64::total_cmp);
    let all_s = done_at.last().copied().unwrap_or(f64::NAN);
    let cpu = cpu_seconds(pid).unwrap_or(0.0) - cpu0;
    tokio::time::sleep(SETTLE).await;
    let (rss1, _) = rss_bytes(pid).unwrap_or_default();
    // The handshakes' freed memory stays resident until the allocator returns it (its
    // dirty pages decay over ten seconds); what stays after that is what the idle
    // connections hold.
    tokio::time::sleep(DECAYED).await;
    let (rss2, _) = rss_bytes(pid).unwrap_or_default();
    let connected = held.len();
    let per_conn = |rss: u64| rss.saturating_sub(rss0) as f64 / connected.max(1) as f64;
    drop(held);
    Ok(json!({
        "collectors": n,
        "connected": connected,
        "failed": failed,
        "first_error": first_error,
        "mint_s": mint_s,
        "all_acked_s": all_s,
        "half_acked_s": done_at.get(done_at.len() / 2).copied().unwrap_or(f64::NAN),
        "agg_cpu_s": cpu,
        "agg_cpu_ms_per_handshake": cpu * 1000.0 / connected.max(1) as f64,
        "agg_rss_before_bytes": rss0,
        "agg_rss_idle_bytes": rss1,
        "agg_bytes_per_idle_connection": per_conn(rss1),
        "agg_rss_settled_bytes": rss2,
        "agg_bytes_per_settled_connection": per_conn(rss2),
    }))
}
