//! The `/metrics` HTTP endpoint: plain HTTP/1.1 on its own listen address, read-only,
//! off unless `[metrics] listen` is set. Every scrape evaluates the live fleet.

use super::{Metrics, exposition};
use crate::config::RulesConfig;
use crate::fleet::SharedFleet;
use crate::store::Store;
use bytes::Bytes;
use connwatch_shared::time::now_ms;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What a scrape reads.
#[derive(Clone)]
pub struct Sources {
    /// The aggregator's counters.
    pub metrics: Metrics,
    /// The live fleet.
    pub fleet: SharedFleet,
    /// Rule thresholds.
    pub rules: Arc<RulesConfig>,
    /// For its size on disk.
    pub store: Arc<Store>,
}

/// The exposition content type Prometheus expects.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn respond(src: &Sources, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            let size = src.store.size_on_disk();
            let text = src.fleet.evaluated(now_ms(), &src.rules, |fleet, r| {
                exposition::render(&src.metrics, r, fleet, size)
            });
            (StatusCode::OK, text)
        }
        (_, "/metrics") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET /metrics\n".to_string(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "connwatch serves only /metrics here\n".to_string(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(CONTENT_TYPE),
    );
    resp
}

/// Serves `/metrics` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, src: Sources, shutdown: CancellationToken) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "metrics listener cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let src = src.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let resp = respond(&src, &req);
                async move { Ok::<_, std::convert::Infallible>(resp) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .header_read_timeout(Duration::from_secs(10))
                .timer(hyper_util::rt::TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "metrics connection ended");
                    }
                }
                _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
            }
        });
    }
    tracing::debug!("metrics endpoint stopped");
}
