//! The query scenario: group status and the full connector listing over a large
//! registered fleet, asked by an operator over mTLS while collectors ingest at a set
//! rate. The fleet is registered by writing the aggregator's own registry entries into
//! its store before it starts (in a child process, since sled admits one process per
//! store and frees its lock only when that process ends).

use crate::fixture::{Aggregator, rss_bytes};
use crate::load::{Offer, connect_all, drive};
use crate::{Bed, CONNECT_PARALLEL, quantile_ms};
use anyhow::Context;
use connwatch_aggregator::store::Store;
use connwatch_shared::wire::query_client::QueryClient;
use connwatch_shared::wire::{ListConnectorsRequest, StatusRequest};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use tonic::transport::Endpoint;

/// Largest answer the operator client accepts: a listing of 100k connectors is ~10 MB.
const MAX_ANSWER: usize = 256 << 20;

/// Writes `n` registry entries (`bench-000000`...) with one history entry each into a
/// store at `data`, in `groups` groups. Runs in the `populate` child process.
pub async fn populate(data: &Path, n: usize, groups: usize) -> anyhow::Result<()> {
    let store = Store::open(data, 64 << 20)?;
    let mut pool = Vec::new();
    for g in 0..groups.max(1) {
        pool.extend(crate::load::bodies(&format!("group-{g:03}")));
    }
    let names: Vec<String> = (0..n).map(|i| format!("bench-{i:06}")).collect();
    for (c, chunk) in names.chunks(1024).enumerate() {
        // Sequence numbers walk the whole pool, so every group gets an even share.
        let first = (c * 1024) as u64 + 1;
        store.apply(&crate::ceiling::writes(&pool, chunk, first, chunk.len()))?;
    }
    store.flush().await?;
    Ok(())
}

/// Runs the scenario: `n` registered connectors, the bed's identities ingesting at
/// `rate` reports/s, status and listing each asked back to back for `measure`.
pub async fn run(bed: &Bed, n: usize, rate: f64, measure: Duration) -> anyhow::Result<Value> {
    let root = bed.dir.path().join("query");
    let data = root.join("data");
    std::fs::create_dir_all(&root)?;
    let t = Instant::now();
    let status = std::process::Command::new(std::env::current_exe()?)
        .args(["populate", "--connectors", &n.to_string(), "--data-dir"])
        .arg(&data)
        .status()
        .context("cannot run the populate step")?;
    anyhow::ensure!(status.success(), "populating the store failed");
    let populate_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let agg = Aggregator::start(&root, &bed.pki)?;
    let startup_s = t.elapsed().as_secs_f64();
    let (rss_loaded, _) = rss_bytes(agg.pid()).unwrap_or_default();

    let (sims, _) = connect_all(&bed.pki, &agg.url(), &bed.certs, CONNECT_PARALLEL).await?;
    let endpoint = Endpoint::from_shared(agg.url())?
        .tls_config(bed.pki.client_tls(&bed.pki.operator))?
        .initial_stream_window_size(Some(connwatch_aggregator::cli::OPERATOR_WINDOW))
        .initial_connection_window_size(Some(connwatch_aggregator::cli::OPERATOR_WINDOW));

    let warmup = Duration::from_secs(1);
    let ingest = drive(
        &sims,
        &bed.pool,
        Offer::Rate { total: rate },
        warmup,
        measure * 2 + Duration::from_secs(1),
    );
    // The operator's client gets a thread and runtime of its own, as the CLI runs in a
    // process of its own: on the generator's runtime its answers would wait behind a
    // thousand simulated collectors' tasks, and the figure would be the generator's.
    let asks = async move {
        let channel = endpoint.connect().await?;
        let mut client = QueryClient::new(channel).max_decoding_message_size(MAX_ANSWER);
        tokio::time::sleep(warmup).await;
        let mut status_us = Vec::new();
        let mut groups = 0;
        let started = Instant::now();
        while started.elapsed() < measure {
            let t = Instant::now();
            let r = client.status(StatusRequest { max_findings: 20 }).await?;
            status_us.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
            groups = r.into_inner().groups.len();
        }
        let mut list_us = Vec::new();
        let mut listed = 0;
        let started = Instant::now();
        while started.elapsed() < measure || list_us.len() < 5 {
            let t = Instant::now();
            let r = client
                .list_connectors(ListConnectorsRequest::default())
                .await?;
            list_us.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
            listed = r.into_inner().connectors.len();
            if started.elapsed() > measure * 4 {
                break;
            }
        }
        status_us.sort_unstable();
        list_us.sort_unstable();
        anyhow::Ok((status_us, groups, list_us, listed))
    };
    let operator = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(asks))
    });
    let ingested = ingest.await?;
    let asked = tokio::task::spawn_blocking(move || operator.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the operator client's thread panicked"))?;
    let (status_us, groups, list_us, listed) = asked?;
    let (rss, _) = rss_bytes(agg.pid()).unwrap_or_default();
    Ok(json!({
        "registered": n,
        "groups": groups,
        "listed": listed,
        "populate_s": populate_s,
        "startup_s": startup_s,
        "agg_rss_loaded_bytes": rss_loaded,
        "agg_rss_bytes": rss,
        "ingest_offered_per_s": rate,
        "ingest_stored_per_s": ingested.rate(),
        "status_samples": status_us.len(),
        "status_p50_ms": quantile_ms(&status_us, 0.5),
        "status_p99_ms": quantile_ms(&status_us, 0.99),
        "status_max_ms": quantile_ms(&status_us, 1.0),
        "list_samples": list_us.len(),
        "list_p50_ms": quantile_ms(&list_us, 0.5),
        "list_p99_ms": quantile_ms(&list_us, 0.99),
        "list_max_ms": quantile_ms(&list_us, 1.0),
    }))
}
