//! The aggregator server: opens the store, rebuilds the live fleet from it, starts the
//! writer and the alert engine, serves `Ingest`, `Query`, `Alerts`, gRPC health and
//! reflection over mutual TLS, and `/metrics` over plain HTTP when configured, until
//! shutdown. Shutdown stops accepting, gives open streams a grace period, stops the
//! alert engine and the metrics endpoint, lets the writer commit what it holds and
//! flushes the store last. A reload (SIGHUP in `main`) re-reads the CA bundle and the
//! server certificate for new connections.

use crate::admin::AdminService;
use crate::alert::{self, Hub, service::AlertsService};
use crate::auth::RequireRole;
use crate::config::Config;
use crate::fleet::{Fleet, SharedFleet};
use crate::ingest::{route::IngestRoute, service::IngestService, writer};
use crate::listener::{self, ServerTls};
use crate::metrics::{self, Metrics};
use crate::query::QueryService;
use crate::store::Store;
use anyhow::Context;
use connwatch_shared::identity::Role;
use connwatch_shared::wire::admin_server::AdminServer;
use connwatch_shared::wire::alerts_server::AlertsServer;
use connwatch_shared::wire::query_server::QueryServer;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;

/// The largest message the aggregator decodes. A report with every repeated field full
/// is far below this; anything larger is refused with `resource exhausted`.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// How long open streams may take to finish once shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Concurrent HTTP/2 streams per connection: a collector needs one, an operator a few.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 16;

/// The server stopped itself so that a restart can reopen a store that failed (a
/// full disk) now that it could work again. Nothing acknowledged is lost: the store
/// recovers to its last flush, and collectors resend the rest.
#[derive(Debug, thiserror::Error)]
#[error(
    "the store failed and the disk has room again: start the aggregator again to reopen it (systemd does so by itself)"
)]
pub struct RestartNeeded;

/// The exit code that asks a supervisor for a restart (EX_TEMPFAIL).
pub const EXIT_RESTART: u8 = 75;

/// Binds the configured address and serves until `shutdown`; each notification of
/// `reload` re-reads the TLS files.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    reload: Arc<Notify>,
) -> anyhow::Result<()> {
    let listener = listener::bind(config.listen).with_context(|| {
        format!(
            "cannot listen on {} (key `listen` in {})",
            config.listen,
            config.file.display()
        )
    })?;
    serve(config, listener, shutdown, reload, |addr| {
        // Scripts and tests wait for this line to know the server is up.
        println!("connwatch-aggregator listening on {addr}");
    })
    .await
}

/// Serves on an already bound listener until `shutdown`; `ready` is called once the
/// store is open and the services are set up; each notification of `reload` re-reads
/// the TLS files.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    reload: Arc<Notify>,
    ready: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let tls = Arc::new(ServerTls::load(config.tls.clone(), config.tls_crl.clone())?);
    let addr: SocketAddr = listener.local_addr().context("listener has no address")?;
    let store = {
        let dir = config.data_dir.clone();
        let cache = config.store.cache_bytes;
        tokio::task::spawn_blocking(move || Store::open(&dir, cache))
            .await
            .context("opening the store panicked")??
    };
    let store = Arc::new(store);
    let connectors = store
        .connectors()
        .context("cannot load the connector registry")?;
    let loaded = connectors.len();
    let mut rules = config.rules.clone();
    // The aggregator's downtime is nobody's silence: the newest report it stored is
    // the last moment it is known to have been listening.
    rules.startup.stopped_ms = connectors
        .iter()
        .map(|(_, c)| c.last_seen_ms)
        .max()
        .unwrap_or(0);
    rules.startup.started_ms = connwatch_shared::time::now_ms();
    let fleet = SharedFleet::new(Fleet {
        connectors: connectors.into_iter().collect(),
    });

    let metrics = Metrics::default();
    let rules = Arc::new(rules);
    // Evaluate the loaded fleet once now, so the first query does not pay for it.
    let evaluated = Instant::now();
    fleet.evaluated(connwatch_shared::time::now_ms(), &rules, |_, _| ());
    tracing::debug!(connectors = loaded, took = ?evaluated.elapsed(), "fleet evaluated");
    let hub =
        Arc::new(Hub::load(store.clone(), metrics.clone()).context("cannot load alert states")?);
    let metrics_listener = match config.metrics.listen {
        None => None,
        Some(a) => Some(TcpListener::bind(a).await.with_context(|| {
            format!(
                "cannot listen on {a} (key `metrics.listen` in {})",
                config.file.display()
            )
        })?),
    };

    // One group's worth waits while one commits and one is put in place: enough to
    // keep the writer busy; more only holds decoded reports (tens of KB each) in memory.
    let (tx, rx) = tokio::sync::mpsc::channel(config.store.max_batch);
    let (control_tx, control_rx) = tokio::sync::mpsc::channel(4);
    let writer_stop = CancellationToken::new();
    let restart_requested = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = tokio::spawn(writer::run(
        store.clone(),
        fleet.clone(),
        rx,
        control_rx,
        writer::Tuning {
            max_batch: config.store.max_batch,
            retention: config.store.retention,
            commit_interval: config.store.commit_interval,
        },
        writer_stop.clone(),
        writer::Hooks {
            metrics: metrics.clone(),
            restart: writer::RestartOnSpace {
                dir: config.data_dir.clone(),
                shutdown: shutdown.clone(),
                requested: restart_requested.clone(),
            },
            rules: rules.clone(),
        },
    ));
    // The engine and the metrics endpoint stop with the server, before the writer,
    // so the engine's last stored states are in the final flush.
    let side_stop = shutdown.child_token();
    let engine = alert::spawn(
        hub.clone(),
        fleet.clone(),
        rules.clone(),
        config.alert.clone(),
        side_stop.clone(),
    );
    let metrics_server = match metrics_listener {
        Some(l) => {
            let a = l.local_addr().context("metrics listener has no address")?;
            // Scripts and tests read this line to find the endpoint.
            println!("connwatch-aggregator metrics on http://{a}/metrics");
            tracing::info!(addr = %a, "serving /metrics");
            Some(tokio::spawn(metrics::server::serve(
                l,
                metrics::server::Sources {
                    metrics: metrics.clone(),
                    fleet: fleet.clone(),
                    rules: rules.clone(),
                    store: store.clone(),
                },
                side_stop.clone(),
            )))
        }
        None => None,
    };

    let ingest = IngestRoute::new(IngestService::new(tx, metrics.clone()), MAX_MESSAGE_BYTES);
    let query = QueryServer::new(QueryService::new(
        fleet,
        store.clone(),
        rules,
        metrics.clone(),
    ))
    .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let alerts =
        AlertsServer::new(AlertsService::new(hub)).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<IngestRoute>().await;
    health.set_serving::<QueryServer<QueryService>>().await;
    health.set_serving::<AlertsServer<AlertsService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(connwatch_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("cannot build the reflection service")?;

    // TLS is done by `listener`, whose configuration can be swapped at run time.
    let server = Server::builder()
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            ingest,
            RequireRole(Role::Collector),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            query,
            RequireRole(Role::Operator),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            AdminServer::new(AdminService::new(control_tx)),
            RequireRole(Role::Operator),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            alerts,
            RequireRole(Role::Operator),
        ))
        .add_service(health_service)
        .add_service(reflection);

    tracing::info!(%addr, store = %config.data_dir.display(), connectors = loaded, "aggregator serving");
    ready(addr);

    let reloader = tokio::spawn(reload_on(reload, tls.clone(), shutdown.clone()));
    let limits = Arc::new(listener::Limits::from_process());
    let incoming = listener::incoming(listener, tls, limits, shutdown.clone());
    // Operators' connections get the same services on a runtime of their own: with
    // the workers busy with report streams, a query would otherwise wait its turn
    // behind them (status p99 12-27 ms at half of ingest saturation, against 5). Its
    // thread keeps the process's priority only because it is started here, on the
    // thread that runs `block_on` (threads inherit their creator's nice value, and
    // the main runtime's are lowered): this must not move into a spawned task.
    let operator_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("connwatch-operator")
        .enable_all()
        .build()
        .context("cannot start the operator runtime")?;
    let operator_server = server
        .clone()
        .serve_with_incoming_shutdown(incoming.operators, shutdown.clone().cancelled_owned());
    let operators = operator_runtime.spawn(async move {
        if let Err(e) = operator_server.await {
            tracing::error!(error = %e, "the server for operators' connections failed; queries are refused until a restart");
        }
    });
    let stopping = shutdown.clone();
    let serving =
        server.serve_with_incoming_shutdown(incoming.collectors, stopping.cancelled_owned());
    tokio::pin!(serving);
    // Long-lived report streams never end on their own: once shutdown starts, give
    // them a grace period, then drop the server and its connections.
    let result = tokio::select! {
        r = &mut serving => r.context("the gRPC server failed"),
        _ = async {
            shutdown.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => Ok(()),
    };
    side_stop.cancel();
    reloader.abort();
    // Operators' calls in flight get the same grace as report streams.
    let mut operators = operators;
    if tokio::time::timeout(SHUTDOWN_GRACE, &mut operators)
        .await
        .is_err()
    {
        operators.abort();
    }
    // Not dropped: dropping a runtime blocks, which an async task must not do.
    operator_runtime.shutdown_background();
    if restart_requested.load(std::sync::atomic::Ordering::Relaxed) {
        // The store failed: another flush would only wait forever, and sled flushes
        // when its last handle drops, so one handle is leaked on purpose and the
        // process exits without dropping it. What was acknowledged is on disk
        // already; leave the rest to the restart.
        std::mem::forget(Arc::clone(&store));
        return Err(RestartNeeded.into());
    }
    engine.await.context("the alert engine failed")?;
    if let Some(m) = metrics_server {
        m.await.context("the metrics endpoint failed")?;
    }
    tracing::info!("stopping: committing queued reports");
    writer_stop.cancel();
    writer.await.context("the writer task failed")?;
    store.flush().await.context("final flush failed")?;
    tracing::info!("stopped");
    result
}

/// Re-reads the TLS files on each notification until `shutdown`. A bad file is an
/// error an operator must act on; the server keeps the configuration it has.
async fn reload_on(reload: Arc<Notify>, tls: Arc<ServerTls>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = reload.notified() => {}
        }
        match tls.reload() {
            Ok(()) => tracing::info!("reloaded the CA bundle and server certificate"),
            Err(e) => tracing::error!(
                error = %e,
                "cannot reload TLS files; still using the ones loaded before"
            ),
        }
    }
}
