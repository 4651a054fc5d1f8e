//! connwatch benchmarks. Every figure is measured beside its limit in the same run: the
//! real aggregator binary's acknowledged ingest beside the raw sled ceiling (the
//! aggregator's own store, keys and values, no gRPC) and a discarding tonic server
//! (the gRPC ceiling); queries over a large registered fleet while ingesting; a
//! reconnect storm; the collector's footprint beside Debian's Prometheus exporters.
//! `smoke` is the short CI version: it checks only same-run ratios.

pub mod ceiling;
pub mod fixture;
pub mod footprint;
pub mod load;
pub mod query;
pub mod report;
pub mod steady;
pub mod storm;

use crate::fixture::{Aggregator, Pki, cpu_seconds, mint_collectors, rss_bytes};
use crate::load::{Body, DriveResult, Offer, Sim, connect_all, drive};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Reports per group in the sled ceiling: the aggregator's default `max_batch`, which
/// the benchmarked aggregator runs with.
const GROUP: usize = connwatch_aggregator::config::StoreConfig::DEFAULT_MAX_BATCH;

/// Handshakes in flight while a scenario connects its fleet.
const CONNECT_PARALLEL: usize = 256;

/// The `q` quantile (0..=1) of sorted microsecond samples, in milliseconds.
pub fn quantile_ms(sorted_us: &[u32], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted_us.len() - 1) as f64 * q).round() as usize;
    f64::from(sorted_us[i.min(sorted_us.len() - 1)]) / 1000.0
}

/// Several measurements of one figure.
#[derive(Debug, Clone, Default)]
pub struct Spread(pub Vec<f64>);

impl Spread {
    /// Adds one measurement.
    pub fn push(&mut self, v: f64) {
        self.0.push(v);
    }
    /// The median.
    pub fn median(&self) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }
    /// The smallest.
    pub fn min(&self) -> f64 {
        self.0.iter().copied().fold(f64::INFINITY, f64::min)
    }
    /// The largest.
    pub fn max(&self) -> f64 {
        self.0.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }
    /// `{median, min, max, runs}` for the JSON output.
    pub fn json(&self) -> Value {
        json!({"median": self.median(), "min": self.min(), "max": self.max(), "runs": self.0})
    }
    /// `median (min–max)` with `digits` decimals.
    pub fn text(&self, digits: usize) -> String {
        format!(
            "{:.d$} ({:.d$}–{:.d$})",
            self.median(),
            self.min(),
            self.max(),
            d = digits
        )
    }
}

/// A drive against the real aggregator, with its CPU and the load generator's CPU over
/// the same window.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// What the load generator saw.
    pub drive: DriveResult,
    /// Aggregator CPU per stored report, microseconds.
    pub agg_cpu_us: f64,
    /// Load generator CPU per stored report, microseconds.
    pub gen_cpu_us: f64,
}

/// Runs `drive` and samples CPU of `pid` and of this process around the whole drive;
/// per-report CPU divides by every report stored during it (warm-up included), since
/// CPU cannot be split at the window edges from outside.
pub async fn measured_drive(
    pid: Option<u32>,
    sims: &[Sim],
    pool: &Arc<Vec<Body>>,
    offer: Offer,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<Measured> {
    let me = std::process::id();
    let agg0 = pid.and_then(cpu_seconds).unwrap_or(0.0);
    let gen0 = cpu_seconds(me).unwrap_or(0.0);
    let d = drive(sims, pool, offer, warmup, measure).await?;
    let agg = pid.and_then(cpu_seconds).unwrap_or(0.0) - agg0;
    let gen_cpu = cpu_seconds(me).unwrap_or(0.0) - gen0;
    let total = d.stored_total.max(1) as f64;
    Ok(Measured {
        agg_cpu_us: agg * 1e6 / total,
        gen_cpu_us: gen_cpu * 1e6 / total,
        drive: d,
    })
}

/// The shared set-up: a temp folder, the PKI, the report pool and `n` identities.
pub struct Bed {
    /// The working folder (removed on drop).
    pub dir: tempfile::TempDir,
    /// Certificates.
    pub pki: Arc<Pki>,
    /// Pre-encoded report bodies.
    pub pool: Arc<Vec<Body>>,
    /// Connector ids with their certificates.
    pub certs: Vec<(String, connwatch_shared::pki::IssuedCert)>,
}

impl Bed {
    /// Creates the bed with `n` collector identities in `groups` groups.
    pub async fn new(n: usize, groups: usize) -> anyhow::Result<Bed> {
        connwatch_shared::tls::install_crypto_provider();
        let dir = tempfile::Builder::new()
            .prefix("connwatch-bench")
            .tempdir()?;
        let pki = Arc::new(Pki::create(dir.path())?);
        let mut pool = Vec::new();
        for g in 0..groups.max(1) {
            pool.extend(load::bodies(&format!("group-{g:03}")));
        }
        let names = (0..n).map(|i| format!("bench-{i:06}")).collect();
        let certs = mint_collectors(&pki, names).await?;
        Ok(Bed {
            dir,
            pki,
            pool: Arc::new(pool),
            certs,
        })
    }
}

/// What the smoke run measured and the ratios it checks.
#[derive(Debug, Clone)]
pub struct Smoke {
    /// Raw sled ceiling, reports/s, per round.
    pub sled: Spread,
    /// Discarding gRPC server, reports/s, per round.
    pub grpc: Spread,
    /// The real aggregator, stored reports/s, per round.
    pub connwatch: Spread,
    /// Acks that were not `stored`, or streams that failed, in all rounds.
    pub not_stored: u64,
    /// Wall time of the whole smoke run.
    pub seconds: f64,
}

impl Smoke {
    /// connwatch over the storage ceiling, best round of each (a load spike elsewhere
    /// on the machine lowers single rounds, rarely every round of one side).
    pub fn storage_ratio(&self) -> f64 {
        self.connwatch.max() / self.sled.max()
    }
    /// connwatch over the gRPC ceiling, best round of each.
    pub fn grpc_ratio(&self) -> f64 {
        self.connwatch.max() / self.grpc.max()
    }
    /// The JSON form.
    pub fn json(&self) -> Value {
        json!({
            "sled_reports_per_s": self.sled.json(),
            "grpc_discard_reports_per_s": self.grpc.json(),
            "connwatch_reports_per_s": self.connwatch.json(),
            "storage_ratio": self.storage_ratio(),
            "grpc_ratio": self.grpc_ratio(),
            "not_stored": self.not_stored,
            "seconds": self.seconds,
        })
    }
}

/// The short CI run: `rounds` interleaved rounds of (sled ceiling, gRPC ceiling, real
/// aggregator) with `n` identities, each drive `measure` long.
pub async fn smoke(n: usize, rounds: usize, measure: Duration) -> anyhow::Result<Smoke> {
    let started = Instant::now();
    let bed = Bed::new(n, 4).await?;
    let names: Vec<String> = bed.certs.iter().map(|(n, _)| n.clone()).collect();
    let agg = Aggregator::start(&bed.dir.path().join("agg"), &bed.pki)?;
    let discard = ceiling::DiscardServer::start(&bed.pki)?;
    let (agg_sims, _) = connect_all(&bed.pki, &agg.url(), &bed.certs, CONNECT_PARALLEL).await?;
    let (discard_sims, _) =
        connect_all(&bed.pki, &discard.url, &bed.certs, CONNECT_PARALLEL).await?;
    let offer = Offer::Saturate { window: 8 };
    let warmup = Duration::from_millis(500);
    let mut out = Smoke {
        sled: Spread::default(),
        grpc: Spread::default(),
        connwatch: Spread::default(),
        not_stored: 0,
        seconds: 0.0,
    };
    for round in 0..rounds {
        let dir = bed.dir.path().join(format!("sled-{round}"));
        let s = ceiling::sled(&dir, &bed.pool, &names, GROUP, measure).await?;
        out.sled.push(s.rate);
        let g = drive(&discard_sims, &bed.pool, offer, warmup, measure).await?;
        out.grpc.push(g.rate());
        let c = drive(&agg_sims, &bed.pool, offer, warmup, measure).await?;
        out.not_stored += c.other;
        out.connwatch.push(c.rate());
    }
    out.seconds = started.elapsed().as_secs_f64();
    Ok(out)
}

/// Saturated ingest from `n` collectors into a fresh aggregator for `measure`.
pub async fn saturate(n: usize, measure: Duration) -> anyhow::Result<Value> {
    let bed = Bed::new(n, 50).await?;
    let agg = Aggregator::start(&bed.dir.path().join("agg"), &bed.pki)?;
    let (sims, _) = connect_all(&bed.pki, &agg.url(), &bed.certs, CONNECT_PARALLEL).await?;
    let offer = Offer::Saturate { window: 8 };
    let c = measured_drive(
        Some(agg.pid()),
        &sims,
        &bed.pool,
        offer,
        Duration::from_secs(2),
        measure,
    )
    .await?;
    Ok(saturation_figures(n, &c, agg.pid()))
}

/// The figures of one saturated drive of `n` collectors against the aggregator `pid`.
fn saturation_figures(n: usize, c: &Measured, pid: u32) -> Value {
    let (rss, peak) = rss_bytes(pid).unwrap_or_default();
    json!({
        "collectors": n,
        "reports_per_s": c.drive.rate(),
        "pacing_cap_per_s": n as f64 * f64::from(connwatch_aggregator::ingest::service::RATE_PER_IDENTITY),
        "ack_p50_ms": quantile_ms(&c.drive.latencies_us, 0.5),
        "ack_p99_ms": quantile_ms(&c.drive.latencies_us, 0.99),
        "ack_p999_ms": quantile_ms(&c.drive.latencies_us, 0.999),
        "agg_cpu_us_per_report": c.agg_cpu_us,
        "generator_cpu_us_per_report": c.gen_cpu_us,
        "agg_rss_bytes": rss,
        "agg_peak_rss_bytes": peak,
        "not_stored": c.drive.other,
    })
}

/// Options of the full run.
#[derive(Debug, Clone)]
pub struct FullOptions {
    /// Fleet sizes for the saturation scaling runs; the largest is the headline.
    pub fleets: Vec<usize>,
    /// Repeats of the headline comparison.
    pub repeats: usize,
    /// Length of each measured window.
    pub measure: Duration,
    /// Registered connectors for the query scenario.
    pub query_connectors: usize,
    /// Collectors in the reconnect storm.
    pub storm: usize,
    /// Cycle interval of the collector footprint scenario and how long it is watched.
    pub footprint_interval: Duration,
    /// How long the footprint is watched.
    pub footprint_window: Duration,
    /// Reports per second of the steady-fleet scenario (0 to skip it).
    pub steady_rate: f64,
}

/// Runs everything and returns the figures as JSON (the table is printed from it).
pub async fn full(opts: &FullOptions) -> anyhow::Result<Value> {
    let started = Instant::now();
    let headline_n = opts.fleets.iter().copied().max().unwrap_or(1000);
    let bed = Bed::new(headline_n, 50).await?;
    let names: Vec<String> = bed.certs.iter().map(|(n, _)| n.clone()).collect();
    eprintln!(
        "bench: {} identities minted, mean report {} bytes",
        bed.certs.len(),
        load::mean_size(&bed.pool)
    );

    let (tcp_mb_s, tcp_rtt_us) = ceiling::tcp_loopback()?;
    let mut fsyncs = Spread::default();
    for _ in 0..opts.repeats {
        fsyncs.push(ceiling::fdatasync(bed.dir.path())?);
    }

    let agg = Aggregator::start(&bed.dir.path().join("agg"), &bed.pki)?;
    let discard = ceiling::DiscardServer::start(&bed.pki)?;
    let (agg_sims, _) = connect_all(&bed.pki, &agg.url(), &bed.certs, CONNECT_PARALLEL).await?;
    let (discard_sims, _) =
        connect_all(&bed.pki, &discard.url, &bed.certs, CONNECT_PARALLEL).await?;
    let offer = Offer::Saturate { window: 8 };
    let warmup = Duration::from_secs(2);

    let mut sled_rate = Spread::default();
    let mut sled_cpu = Spread::default();
    let mut sled_disk = Spread::default();
    let mut grpc_rate = Spread::default();
    let mut grpc_gen_cpu = Spread::default();
    let mut cw_rate = Spread::default();
    let mut cw_cpu = Spread::default();
    let mut cw_gen_cpu = Spread::default();
    let mut ratio = Spread::default();
    let mut p50 = Spread::default();
    let mut p99 = Spread::default();
    let mut p999 = Spread::default();
    let mut not_stored = 0;
    // Every report the aggregator stored in this run, for bytes on disk per report.
    let mut stored_total = 0u64;
    for round in 0..opts.repeats {
        eprintln!("bench: headline round {}", round + 1);
        let dir = bed.dir.path().join(format!("sled-{round}"));
        let s = ceiling::sled(&dir, &bed.pool, &names, GROUP, opts.measure).await?;
        let _ = std::fs::remove_dir_all(&dir);
        sled_rate.push(s.rate);
        sled_cpu.push(s.cpu_us);
        sled_disk.push(s.disk_bytes);
        let g = measured_drive(None, &discard_sims, &bed.pool, offer, warmup, opts.measure).await?;
        grpc_rate.push(g.drive.rate());
        grpc_gen_cpu.push(g.gen_cpu_us);
        let c = measured_drive(
            Some(agg.pid()),
            &agg_sims,
            &bed.pool,
            offer,
            warmup,
            opts.measure,
        )
        .await?;
        not_stored += c.drive.other;
        stored_total += c.drive.stored_total;
        cw_rate.push(c.drive.rate());
        cw_cpu.push(c.agg_cpu_us);
        cw_gen_cpu.push(c.gen_cpu_us);
        ratio.push(c.drive.rate() / s.rate);
        p50.push(quantile_ms(&c.drive.latencies_us, 0.5));
        p99.push(quantile_ms(&c.drive.latencies_us, 0.99));
        p999.push(quantile_ms(&c.drive.latencies_us, 0.999));
    }
    drop(discard_sims);
    drop(discard);

    // How the figures move with N: the first n identities of the same fleet.
    let mut scaling = Vec::new();
    for &n in &opts.fleets {
        let n = n.min(agg_sims.len());
        let c = measured_drive(
            Some(agg.pid()),
            &agg_sims[..n],
            &bed.pool,
            offer,
            warmup,
            opts.measure,
        )
        .await?;
        stored_total += c.drive.stored_total;
        scaling.push(saturation_figures(n, &c, agg.pid()));
    }

    // Ramp: offered rates up to past saturation, on the whole fleet.
    let saturation = cw_rate.median();
    let mut ramp = Vec::new();
    for frac in [0.25, 0.5, 0.75, 1.0, 1.25] {
        let total = saturation * frac;
        let c = measured_drive(
            Some(agg.pid()),
            &agg_sims,
            &bed.pool,
            Offer::Rate { total },
            Duration::from_secs(1),
            opts.measure,
        )
        .await?;
        stored_total += c.drive.stored_total;
        ramp.push(json!({
            "offered_per_s": total,
            "stored_per_s": c.drive.rate(),
            "ack_p50_ms": quantile_ms(&c.drive.latencies_us, 0.5),
            "ack_p99_ms": quantile_ms(&c.drive.latencies_us, 0.99),
            "ack_p999_ms": quantile_ms(&c.drive.latencies_us, 0.999),
            "agg_cpu_us_per_report": c.agg_cpu_us,
        }));
    }
    let (agg_rss, agg_hwm) = rss_bytes(agg.pid()).unwrap_or_default();
    drop(agg_sims);
    let disk = fixture::disk_bytes(&agg.data_dir);
    drop(agg);

    let ingest = json!({
        "collectors": headline_n,
        "mean_report_bytes": load::mean_size(&bed.pool),
        "connwatch_reports_per_s": cw_rate.json(),
        "sled_ceiling_reports_per_s": sled_rate.json(),
        "grpc_ceiling_reports_per_s": grpc_rate.json(),
        "ratio_to_sled_ceiling": ratio.json(),
        "ack_p50_ms": p50.json(),
        "ack_p99_ms": p99.json(),
        "ack_p999_ms": p999.json(),
        "agg_cpu_us_per_report": cw_cpu.json(),
        "sled_cpu_us_per_report": sled_cpu.json(),
        "generator_cpu_us_per_report": cw_gen_cpu.json(),
        "generator_cpu_us_per_report_grpc_ceiling": grpc_gen_cpu.json(),
        "agg_rss_bytes": agg_rss,
        "agg_peak_rss_bytes": agg_hwm,
        "not_stored": not_stored,
        "disk_bytes_per_report": disk as f64 / stored_total.max(1) as f64,
        "disk_bytes_total": disk,
        "reports_stored_total": stored_total,
        "sled_ceiling_disk_bytes_per_report": sled_disk.json(),
        "scaling": scaling,
        "ramp": ramp,
    });
    let limits = json!({
        "tcp_loopback_mb_per_s": tcp_mb_s,
        "tcp_loopback_rtt_us": tcp_rtt_us,
        "fdatasync_per_s": fsyncs.json(),
    });
    let steady = if opts.steady_rate > 0.0 {
        eprintln!("bench: steady fleet");
        steady::run(&bed, opts.steady_rate, opts.measure * 4)
            .await
            .unwrap_or_else(|e| json!({"error": format!("{e:#}")}))
    } else {
        Value::Null
    };
    eprintln!("bench: query scenario");
    let queries = query::run(&bed, opts.query_connectors, saturation / 2.0, opts.measure)
        .await
        .unwrap_or_else(|e| json!({"error": format!("{e:#}")}));
    eprintln!("bench: reconnect storm");
    let storm = storm::run(&bed, opts.storm)
        .await
        .unwrap_or_else(|e| json!({"error": format!("{e:#}")}));
    eprintln!("bench: collector footprint");
    let footprint = footprint::run(&bed, opts.footprint_interval, opts.footprint_window)
        .await
        .unwrap_or_else(|e| json!({"error": format!("{e:#}")}));
    Ok(json!({
        "machine": report::machine(),
        "ingest": ingest,
        "steady": steady,
        "limits": limits,
        "queries": queries,
        "storm": storm,
        "footprint": footprint,
        "seconds": started.elapsed().as_secs_f64(),
    }))
}

/// Smallest connwatch / sled-ceiling ratio the smoke check accepts. The release figure
/// is far above it; a debug build on a loaded machine must still pass.
pub const SMOKE_MIN_STORAGE_RATIO: f64 = 0.05;
/// Smallest connwatch / gRPC-ceiling ratio the smoke check accepts.
pub const SMOKE_MIN_GRPC_RATIO: f64 = 0.05;

/// The smoke run with its checks: fails unless every ratio holds and every report was
/// stored.
pub async fn smoke_checked(collectors: usize) -> anyhow::Result<Smoke> {
    let s = smoke(collectors, 3, Duration::from_secs(2)).await?;
    let summary = serde_json::to_string(&s.json())?;
    anyhow::ensure!(
        s.storage_ratio() >= SMOKE_MIN_STORAGE_RATIO,
        "connwatch ingest is {:.3} x the raw sled ceiling, below {SMOKE_MIN_STORAGE_RATIO}: {summary}",
        s.storage_ratio()
    );
    anyhow::ensure!(
        s.grpc_ratio() >= SMOKE_MIN_GRPC_RATIO,
        "connwatch ingest is {:.3} x the gRPC ceiling, below {SMOKE_MIN_GRPC_RATIO}: {summary}",
        s.grpc_ratio()
    );
    anyhow::ensure!(
        s.not_stored == 0,
        "{} acks were not `stored` (or streams failed): {summary}",
        s.not_stored
    );
    Ok(s)
}
