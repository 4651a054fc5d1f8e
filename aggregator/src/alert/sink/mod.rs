//! Where notifications go: the log, JSON webhooks and Alertmanager, several at once.
//! Each HTTP sink runs as its own task so a slow or failing receiver never holds up
//! evaluation or the other sinks. Sinks speak plain HTTP/1.1 (hyper); keep receivers
//! on loopback or a trusted network.

pub mod alertmanager;
pub mod log;
pub mod webhook;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use std::time::Duration;
use tokio::net::TcpStream;

/// The most response body read from a receiver; only the status matters.
const MAX_RESPONSE: usize = 64 * 1024;

/// Posts `body` as JSON to `url` and succeeds on a 2xx answer, all within `timeout`.
/// One connection per post: notifications are rare, and a fresh connection never
/// inherits a half-dead one.
pub async fn post_json(url: &Uri, body: Vec<u8>, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, post(url, body)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer from {url} within {timeout:?}")),
    }
}

async fn post(url: &Uri, body: Vec<u8>) -> Result<(), String> {
    let host = url.host().ok_or_else(|| format!("{url} has no host"))?;
    let port = url.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with {url} failed: {e}"))?;
    let driver = tokio::spawn(conn);
    let authority = url.authority().map_or(host.to_string(), |a| a.to_string());
    let req = Request::post(url.path_and_query().map_or("/", |p| p.as_str()))
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("connwatch/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("cannot build a request for {url}: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("POST {url} failed: {e}"))?;
    let status = resp.status();
    let mut text = Vec::new();
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Some(d) = frame.data_ref() {
            let room = MAX_RESPONSE.saturating_sub(text.len());
            text.extend_from_slice(&d[..d.len().min(room)]);
        }
    }
    driver.abort();
    if status.is_success() {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&text);
        Err(format!(
            "POST {url} answered {status}: {}",
            text.trim().chars().take(200).collect::<String>()
        ))
    }
}
