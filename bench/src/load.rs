//! The load generator: realistic reports encoded once, and simulated collectors, each
//! with its own mTLS identity and connection, streaming them on `Ingest.Stream`.
//!
//! A report body is encoded once without `seq` and `epoch`; each send prepends those
//! two fields (protobuf allows fields in any order), so the generator spends its CPU
//! on the transport, not on encoding, and leaves the cores to the aggregator.

use crate::fixture::Pki;
use bytes::{BufMut, Bytes, BytesMut};
use connwatch_shared::pki::IssuedCert;
use connwatch_shared::wire::{self as w, Ack, AckOutcome, Report};
use prost::Message;
use rand::Rng;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::{Status, Streaming};

/// Distinct report bodies in the pool.
const POOL: usize = 64;

/// One pre-encoded report body (every field but `seq` and `epoch`).
#[derive(Clone)]
pub struct Body(Bytes);

/// Builds a varied pool of realistic reports for `group`: two services, a trust
/// certificate, two to six endpoints (most with TLS and a two-certificate chain), up to
/// three backends, proxies, sometimes log signatures and a probe error.
pub fn bodies(group: &str) -> Vec<Body> {
    let mut rng = rand::rng();
    let now = connwatch_shared::time::now_ms();
    (0..POOL)
        .map(|i| {
            let r = realistic(&mut rng, group, now, i);
            Body(Bytes::from(r.encode_to_vec()))
        })
        .collect()
}

fn realistic(rng: &mut impl Rng, group: &str, now: i64, i: usize) -> Report {
    let host = format!("conn-{group}-{i:03}.corp.example.com");
    let mut service = |name: &str, role: w::ServiceRole| w::ServiceStatus {
        name: name.into(),
        role: role as i32,
        state: w::ServiceState::Running as i32,
        start_type: w::StartType::Automatic as i32,
        pid: rng.random_range(400..60_000),
        uptime_s: rng.random_range(60..9_000_000),
        memory_bytes: rng.random_range(50_000_000..400_000_000),
        source: "scm".into(),
    };
    let services = vec![
        service("WAPCSvc", w::ServiceRole::Connector),
        service("WAPCUpdaterSvc", w::ServiceRole::Updater),
    ];
    let chain = vec![
        w::PresentedCertificate {
            subject: "CN=login.microsoftonline.com".into(),
            issuer: "CN=Microsoft Azure RSA TLS Issuing CA 03".into(),
            not_after_ms: now + 200 * 86_400_000,
        },
        w::PresentedCertificate {
            subject: "CN=Microsoft Azure RSA TLS Issuing CA 03".into(),
            issuer: "CN=DigiCert Global Root G2".into(),
            not_after_ms: now + 900 * 86_400_000,
        },
    ];
    let endpoints = (0..rng.random_range(2..=6))
        .map(|e| {
            let tls = e % 3 != 2;
            w::EndpointCheck {
                name: format!("endpoint-{e}"),
                address: format!("svc{e}.msappproxy.net:{}", if tls { 443 } else { 80 }),
                required: e < 2,
                outcome: w::ConnectOutcome::Ok as i32,
                latency_ms: rng.random_range(5..120),
                error: String::new(),
                tls: tls.then(|| w::TlsResult {
                    protocol: "TLSv1.3".into(),
                    cipher_suite: "TLS13_AES_256_GCM_SHA384".into(),
                    chain: chain.clone(),
                    issuer_expected: true,
                    error: String::new(),
                    version_too_old: false,
                    issuer_checked: true,
                    chain_verified: Some(true),
                }),
                via: "direct".into(),
                proxy_status: String::new(),
            }
        })
        .collect();
    let backends = (0..rng.random_range(0..=3))
        .map(|b| w::BackendCheck {
            url: format!("https://app{b}.corp.example.com/health"),
            http_status: 200,
            latency_ms: rng.random_range(2..300),
            error: String::new(),
        })
        .collect();
    let log_signatures = if i.is_multiple_of(5) {
        vec![w::LogSignature {
            id: "kerberos-13019".into(),
            count: 1,
            last_line: "Error 13019 - Microsoft Entra ID cannot retrieve a Kerberos ticket on behalf of the user because of the following general API error.".into(),
        }]
    } else {
        Vec::new()
    };
    let probe_errors = if i.is_multiple_of(7) {
        vec![w::ProbeError {
            probe: "backend".into(),
            reason: "timed out after 5s".into(),
        }]
    } else {
        Vec::new()
    };
    Report {
        seq: 0,
        epoch: 0,
        collected_at_ms: now,
        // A collector stamps this as it sends; a realistic report carries one.
        sent_at_ms: now,
        group: group.into(),
        collector_version: "0.1.0".into(),
        host: Some(w::HostInfo {
            hostname: host,
            os_name: "Windows Server 2022 Datacenter".into(),
            os_version: "10.0.20348".into(),
            uptime_s: rng.random_range(600..8_000_000),
            cpu_percent: rng.random_range(0.0..60.0),
            memory_total_bytes: 16 << 30,
            memory_used_bytes: rng.random_range(2u64 << 30..12 << 30),
            disk_total_bytes: 127 << 30,
            disk_free_bytes: rng.random_range(10u64 << 30..90 << 30),
        }),
        services,
        trust_certs: vec![w::TrustCertificate {
            source: "LocalMachine\\My".into(),
            subject: "CN={8c4c2d2e-4d2f-4b8a-9b7c-5f0e1d2c3b4a}".into(),
            issuer: "CN=connectorregistrationca.msappproxy.net".into(),
            serial: "4F00000A1B2C3D4E5F".into(),
            thumbprint: "A1B2C3D4E5F60718293A4B5C6D7E8F9012345678".into(),
            not_before_ms: now - 100 * 86_400_000,
            not_after_ms: now + 80 * 86_400_000,
            signature_algorithm: "sha256RSA".into(),
            expected_thumbprint: "A1B2C3D4E5F60718293A4B5C6D7E8F9012345678".into(),
            thumbprint_matched: true,
            found: true,
            error: String::new(),
        }],
        endpoints,
        backends,
        proxy: Some(w::ProxySettings {
            connector_proxy: "direct".into(),
            updater_proxy: "direct".into(),
            system_proxy: "direct".into(),
            connector_uses_default: true,
            updater_uses_default: true,
        }),
        log_signatures,
        version: Some(w::VersionInfo {
            connector_version: "1.5.3437.0".into(),
            updater_version: "1.5.3437.0".into(),
            layout: "app-proxy".into(),
        }),
        probe_errors,
        dropped_reports: 0,
    }
}

/// `body` with `seq` and `epoch` in front: a complete encoded `Report`.
pub fn frame(body: &Body, epoch: u64, seq: u64) -> Bytes {
    let mut b = BytesMut::with_capacity(body.0.len() + 22);
    prost::encoding::uint64::encode(1, &seq, &mut b);
    prost::encoding::uint64::encode(3, &epoch, &mut b);
    b.put_slice(&body.0);
    b.freeze()
}

/// The same report decoded, for the in-process storage ceiling.
pub fn decoded(body: &Body, epoch: u64, seq: u64) -> Report {
    let mut r = Report::decode(body.0.clone()).unwrap_or_default();
    r.epoch = epoch;
    r.seq = seq;
    r
}

/// Mean encoded size of a pool, in bytes.
pub fn mean_size(pool: &[Body]) -> usize {
    pool.iter().map(|b| b.0.len() + 12).sum::<usize>() / pool.len().max(1)
}

/// Sends already-encoded reports and decodes acks.
#[derive(Clone, Copy, Default)]
struct RawCodec;

struct RawEncoder;
struct AckDecoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for AckDecoder {
    type Item = Ack;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Ack>, Status> {
        Ack::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Ack;
    type Encoder = RawEncoder;
    type Decoder = AckDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> AckDecoder {
        AckDecoder
    }
}

/// One simulated collector: its identity's connection.
pub struct Sim {
    /// Connector id.
    pub name: String,
    channel: Channel,
}

/// Connects every identity to `url`, `parallel` handshakes at a time; returns the
/// connections and how long it took.
pub async fn connect_all(
    pki: &Pki,
    url: &str,
    certs: &[(String, IssuedCert)],
    parallel: usize,
) -> anyhow::Result<(Vec<Sim>, Duration)> {
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(parallel.max(1)));
    let mut tasks = Vec::with_capacity(certs.len());
    for (name, cert) in certs {
        let endpoint = Endpoint::from_shared(url.to_string())?
            .tls_config(pki.client_tls(cert))?
            .connect_timeout(Duration::from_secs(30))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .initial_stream_window_size(Some(1 << 20))
            .initial_connection_window_size(Some(1 << 20));
        let gate = gate.clone();
        let name = name.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await;
            endpoint
                .connect()
                .await
                .map(|channel| Sim { name, channel })
        }));
    }
    let mut sims = Vec::with_capacity(tasks.len());
    for t in tasks {
        sims.push(t.await??);
    }
    Ok((sims, started.elapsed()))
}

/// How hard to push.
#[derive(Debug, Clone, Copy)]
pub enum Offer {
    /// As fast as acks allow, `window` reports in flight per stream.
    Saturate { window: usize },
    /// `total` reports/s across the fleet, spread evenly with random phase.
    Rate { total: f64 },
}

/// What one drive measured.
#[derive(Debug, Clone, Default)]
pub struct DriveResult {
    /// Reports acknowledged `stored` in the measured window.
    pub stored: u64,
    /// Acks of any other outcome, and failed streams.
    pub other: u64,
    /// Reports acknowledged `stored` during the whole drive, warm-up included.
    pub stored_total: u64,
    /// Length of the measured window.
    pub seconds: f64,
    /// Ack latencies in the measured window, microseconds, sorted.
    pub latencies_us: Vec<u32>,
}

impl DriveResult {
    /// Stored reports per second.
    pub fn rate(&self) -> f64 {
        self.stored as f64 / self.seconds.max(1e-9)
    }
}

struct Shared {
    measuring: AtomicBool,
    stop: AtomicBool,
    stored: AtomicU64,
    stored_total: AtomicU64,
    other: AtomicU64,
}

/// Streams reports from every sim for `warmup + measure`, counting only acks received
/// in the measured window. Each stream has a fresh epoch, so nothing is a duplicate.
pub async fn drive(
    sims: &[Sim],
    pool: &Arc<Vec<Body>>,
    offer: Offer,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<DriveResult> {
    let shared = Arc::new(Shared {
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        stored: AtomicU64::new(0),
        stored_total: AtomicU64::new(0),
        other: AtomicU64::new(0),
    });
    let epoch_base = rand::rng().random_range(1u64..1 << 40);
    let mut tasks = Vec::with_capacity(sims.len());
    for (i, sim) in sims.iter().enumerate() {
        let channel = sim.channel.clone();
        let pool = pool.clone();
        let shared = shared.clone();
        let epoch = epoch_base + i as u64;
        let per_stream = match offer {
            Offer::Saturate { .. } => None,
            Offer::Rate { total } => Some(total / sims.len().max(1) as f64),
        };
        let window = match offer {
            Offer::Saturate { window } => window,
            Offer::Rate { .. } => 256,
        };
        tasks.push(tokio::spawn(stream_one(
            channel, pool, shared, epoch, per_stream, window, i,
        )));
    }
    tokio::time::sleep(warmup).await;
    shared.stored.store(0, Relaxed);
    shared.other.store(0, Relaxed);
    shared.measuring.store(true, Relaxed);
    let started = Instant::now();
    tokio::time::sleep(measure).await;
    shared.measuring.store(false, Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    let stored = shared.stored.load(Relaxed);
    let other = shared.other.load(Relaxed);
    shared.stop.store(true, Relaxed);
    let mut latencies_us = Vec::new();
    for t in tasks {
        // A stream that failed has already been counted under `other`.
        if let Ok(Ok(mut l)) = tokio::time::timeout(Duration::from_secs(30), t).await {
            latencies_us.append(&mut l);
        }
    }
    latencies_us.sort_unstable();
    Ok(DriveResult {
        stored,
        other,
        stored_total: shared.stored_total.load(Relaxed),
        seconds,
        latencies_us,
    })
}

/// One collector's stream: a sender paced by `per_second` (or by the window alone) and
/// an ack reader that matches acks to send times (acks come in order).
async fn stream_one(
    channel: Channel,
    pool: Arc<Vec<Body>>,
    shared: Arc<Shared>,
    epoch: u64,
    per_second: Option<f64>,
    window: usize,
    index: usize,
) -> Vec<u32> {
    let (tx, rx) = mpsc::channel::<Bytes>(window.max(1));
    let mut grpc = tonic::client::Grpc::new(channel);
    if grpc.ready().await.is_err() {
        shared.other.fetch_add(1, Relaxed);
        return Vec::new();
    }
    let sent_at: Arc<Mutex<VecDeque<Instant>>> = Arc::default();
    let permits = Arc::new(Semaphore::new(window.max(1)));
    let sender = {
        let sent_at = sent_at.clone();
        let permits = permits.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut seq = 0u64;
            // Pacing in 50 ms slices keeps timer wake-ups low with thousands of streams.
            // Random phase twice over: within a slice (each stream's ticks are offset),
            // and across slices (a stream below one report per slice starts with a
            // random part of one, so the fleet's reports do not all fall on the same
            // slice).
            let slice = Duration::from_millis(50);
            let (phase, mut budget) = {
                let mut rng = rand::rng();
                (
                    Duration::from_micros(rng.random_range(0..50_000)),
                    rng.random_range(0.0..1.0f64),
                )
            };
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, slice);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            while !shared.stop.load(Relaxed) {
                let n = match per_second {
                    None => 1,
                    Some(r) => {
                        tick.tick().await;
                        budget += r * slice.as_secs_f64();
                        let n = budget.floor();
                        budget -= n;
                        n as usize
                    }
                };
                for _ in 0..n {
                    let Ok(p) = permits.clone().acquire_owned().await else {
                        return;
                    };
                    p.forget();
                    seq += 1;
                    let body = &pool[(index + seq as usize) % pool.len()];
                    if let Ok(mut q) = sent_at.lock() {
                        q.push_back(Instant::now());
                    }
                    if tx.send(frame(body, epoch, seq)).await.is_err() {
                        return;
                    }
                }
            }
        })
    };
    let path = PathAndQuery::from_static("/connwatch.v1.Ingest/Stream");
    let response = grpc
        .streaming(tonic::Request::new(ReceiverStream::new(rx)), path, RawCodec)
        .await;
    let mut acks: Streaming<Ack> = match response {
        Ok(r) => r.into_inner(),
        Err(_) => {
            shared.other.fetch_add(1, Relaxed);
            sender.abort();
            return Vec::new();
        }
    };
    let mut latencies = Vec::new();
    while !shared.stop.load(Relaxed) {
        let next = tokio::time::timeout(Duration::from_millis(200), acks.message()).await;
        let ack = match next {
            Err(_) => continue,
            Ok(Ok(Some(a))) => a,
            Ok(_) => {
                shared.other.fetch_add(1, Relaxed);
                break;
            }
        };
        let sent = sent_at.lock().ok().and_then(|mut q| q.pop_front());
        permits.add_permits(1);
        if ack.outcome == AckOutcome::Stored as i32 {
            shared.stored_total.fetch_add(1, Relaxed);
        }
        if shared.measuring.load(Relaxed) {
            if ack.outcome == AckOutcome::Stored as i32 {
                shared.stored.fetch_add(1, Relaxed);
            } else {
                shared.other.fetch_add(1, Relaxed);
            }
            if let Some(s) = sent {
                latencies.push(u32::try_from(s.elapsed().as_micros()).unwrap_or(u32::MAX));
            }
        }
    }
    sender.abort();
    latencies
}

/// Opens a report stream on `channel`, sends one report and waits for its ack; returns
/// the open stream (the sender and the ack stream) so the connection stays up, idle.
pub async fn open_and_report(
    channel: Channel,
    body: &Body,
    epoch: u64,
) -> anyhow::Result<(mpsc::Sender<Bytes>, Streaming<Ack>)> {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    tx.send(frame(body, epoch, 1)).await?;
    let path = PathAndQuery::from_static("/connwatch.v1.Ingest/Stream");
    let mut acks = grpc
        .streaming(tonic::Request::new(ReceiverStream::new(rx)), path, RawCodec)
        .await?
        .into_inner();
    match acks.message().await? {
        Some(a) if a.outcome == AckOutcome::Stored as i32 => Ok((tx, acks)),
        other => anyhow::bail!("unexpected answer {other:?}"),
    }
}

/// An endpoint for `url` presenting `cert`.
pub fn endpoint(pki: &Pki, url: &str, cert: &IssuedCert) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::from_shared(url.to_string())?
        .tls_config(pki.client_tls(cert))?
        .connect_timeout(Duration::from_secs(60)))
}
