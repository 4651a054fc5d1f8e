//! The limits measured beside connwatch in the same run: the storage ceiling (the
//! aggregator's own `Store` with its own keys and values, group commit, no gRPC), the
//! gRPC ceiling (a tonic server with the same proto and TLS that acks and discards),
//! loopback TCP and `fdatasync`.

use crate::fixture::{Pki, cpu_seconds};
use crate::load::{Body, decoded};
use anyhow::Context;
use connwatch_aggregator::store::{Store, StoredConnector, Write};
use connwatch_shared::wire::ingest_server::{Ingest, IngestServer};
use connwatch_shared::wire::{Ack, AckOutcome, Report};
use std::io::{Read, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

/// What the storage ceiling measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct SledCeiling {
    /// Reports committed (applied and flushed) per second.
    pub rate: f64,
    /// CPU of this process per report, microseconds (apply + flush, all threads).
    pub cpu_us: f64,
    /// Bytes the store folder grew by per report.
    pub disk_bytes: f64,
}

/// Builds the aggregator's `Write`s for `n` reports spread over `connectors`, with
/// sequence numbers from `first_seq` (which also picks the report bodies).
pub fn writes(pool: &[Body], connectors: &[String], first_seq: u64, n: usize) -> Vec<Write> {
    let now = connwatch_shared::time::now_ms();
    (0..n)
        .map(|i| {
            let connector = connectors[i % connectors.len()].clone();
            let seq = first_seq + i as u64;
            let body = &pool[seq as usize % pool.len()];
            let report = decoded(body, 1, seq);
            let entry = StoredConnector {
                group: report.group.clone(),
                first_seen_ms: now,
                last_seen_ms: now,
                epoch: 1,
                last_seq: seq,
                latest: Some(report),
                clock_offset_ms: 3,
                recent_offsets_ms: vec![3, 2, 4, 3, 3],
                logged: Vec::new(),
            };
            Write {
                connector,
                entry,
                received_ms: now,
                raw: crate::load::frame(body, 1, seq),
            }
        })
        .collect()
}

/// Commits pre-built groups of `batch` reports for `measure` into a fresh store under
/// `dir` (same cache size as the aggregator), one apply and one flush per group, as
/// the writer does.
pub async fn sled(
    dir: &Path,
    pool: &[Body],
    connectors: &[String],
    batch: usize,
    measure: Duration,
) -> anyhow::Result<SledCeiling> {
    let store = Store::open(dir, 64 << 20).context("cannot open the ceiling store")?;
    // Enough distinct groups that values are not all identical, built before timing.
    let mut groups: Vec<Vec<Write>> = (0..8)
        .map(|g| writes(pool, connectors, 1 + (g * batch) as u64, batch))
        .collect();
    // The first groups train the store's compression dictionary, as the aggregator's
    // first reports do during its warm-up; the measurement starts after them.
    let mut round = 0u64;
    while (round as usize) * batch < connwatch_aggregator::store::history::TRAIN_AFTER {
        store.apply(&groups[round as usize % 8])?;
        store.flush().await?;
        round += 1;
    }
    let before_disk = crate::fixture::disk_bytes(dir);
    let me = std::process::id();
    let cpu0 = cpu_seconds(me).unwrap_or(0.0);
    let started = Instant::now();
    let mut done = 0u64;
    while started.elapsed() < measure {
        let group = &mut groups[(round % 8) as usize];
        // Fresh sequence numbers so every round adds history, as real ingest does.
        if round >= 8 {
            let shift = 8 * batch as u64;
            for w in group.iter_mut() {
                w.entry.last_seq += shift;
                if let Some(r) = w.entry.latest.as_mut() {
                    r.seq += shift;
                }
            }
        }
        store.apply(group)?;
        store.flush().await?;
        done += group.len() as u64;
        round += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(me).unwrap_or(0.0) - cpu0;
    let grown = crate::fixture::disk_bytes(dir).saturating_sub(before_disk);
    Ok(SledCeiling {
        rate: done as f64 / secs,
        cpu_us: cpu * 1e6 / done.max(1) as f64,
        disk_bytes: grown as f64 / done.max(1) as f64,
    })
}

/// A tonic `Ingest` service that decodes each report, acks it `stored` and drops it.
struct Discard;

#[tonic::async_trait]
impl Ingest for Discard {
    type StreamStream = ReceiverStream<Result<Ack, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<Report>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            while let Ok(Some(r)) = inbound.message().await {
                let ack = Ack {
                    seq: r.seq,
                    outcome: AckOutcome::Stored as i32,
                    reason: String::new(),
                };
                if tx.send(Ok(ack)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// The gRPC ceiling: a discarding server with the aggregator's TLS and limits, on its
/// own two-thread runtime (so it competes for the cores as the aggregator process
/// does). Dropping the handle stops it.
pub struct DiscardServer {
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    runtime: Option<tokio::runtime::Runtime>,
}

impl DiscardServer {
    /// Starts it on a free loopback port.
    pub fn start(pki: &Pki) -> anyhow::Result<DiscardServer> {
        // At the priority of the aggregator's ingest threads, which it stands in for.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .on_thread_start(connwatch_aggregator::priority::lower_for_ingest)
            .build()?;
        // Bound with std: blocking on another runtime from inside this one would panic.
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let listener = {
            let _in = runtime.enter();
            tokio::net::TcpListener::from_std(std_listener)?
        };
        let server = tonic::transport::Server::builder()
            .tls_config(pki.server_tls())?
            .max_concurrent_streams(connwatch_aggregator::server::MAX_STREAMS_PER_CONNECTION)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .tcp_keepalive(Some(Duration::from_secs(60)))
            .add_service(
                IngestServer::new(Discard)
                    .max_decoding_message_size(connwatch_aggregator::server::MAX_MESSAGE_BYTES),
            );
        runtime.spawn(server.serve_with_incoming(TcpListenerStream::new(listener)));
        Ok(DiscardServer {
            url: format!("https://{addr}"),
            runtime: Some(runtime),
        })
    }
}

impl Drop for DiscardServer {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Loopback TCP: bulk throughput in MB/s (1 s of 64 KiB writes) and the median round
/// trip of a 1-byte ping-pong in microseconds.
pub fn tcp_loopback() -> anyhow::Result<(f64, f64)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let sink = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(total);
            }
            if n == 1 && total == 0 {
                // Ping-pong phase: echo single bytes until the bulk phase starts.
                s.write_all(&buf[..1])?;
                continue;
            }
            total += n as u64;
        }
    });
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let mut rtts = Vec::with_capacity(2000);
    let mut one = [0u8; 1];
    for _ in 0..2000 {
        let t = Instant::now();
        s.write_all(&[1])?;
        s.read_exact(&mut one)?;
        rtts.push(t.elapsed().as_secs_f64() * 1e6);
    }
    rtts.sort_by(f64::total_cmp);
    let chunk = vec![7u8; 1 << 16];
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < Duration::from_secs(1) {
        s.write_all(&chunk)?;
        sent += chunk.len() as u64;
    }
    drop(s);
    let secs = started.elapsed().as_secs_f64();
    let _ = sink.join();
    Ok((sent as f64 / secs / 1e6, rtts[rtts.len() / 2]))
}

/// `fdatasync` after a 4 KiB append, for 1 s in `dir`: syncs per second.
pub fn fdatasync(dir: &Path) -> anyhow::Result<f64> {
    let path = dir.join("fdatasync.probe");
    let mut f = std::fs::File::create(&path)?;
    let block = vec![1u8; 4096];
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(1) {
        f.write_all(&block)?;
        f.sync_data()?;
        n += 1;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    Ok(rate)
}
