//! Backend probe: loads an internal application URL from the connector host (steps 7
//! and 8 of the debugging flowchart) and reports the HTTP status, latency and, when no
//! response came, why. Only the status line is read; bodies are never fetched whole.
//! Requests go direct, never through the connector's proxy: the connector reaches
//! internal applications on its own network (its outbound proxy is for the cloud
//! service, and .NET's `bypassonlocal` usually exempts intranet names anyway).

use super::endpoint::{connect, millis};
use super::{Observation, Probe, tls};
use crate::config::BackendConfig;
use connwatch_shared::wire::{BackendCheck, ConnectOutcome};
use futures::future::BoxFuture;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The parts of an `http://` or `https://` URL a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// Whether it is https.
    pub tls: bool,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// `host:port` to connect to.
    pub authority: String,
    /// Path and query, at least `/`.
    pub path: String,
}

impl Url {
    /// Parses an http(s) URL; `None` when it is not one.
    pub fn parse(url: &str) -> Option<Url> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else {
            (false, url.strip_prefix("http://")?)
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path
        };
        if authority.is_empty()
            || authority.contains('@')
            || authority.contains(char::is_whitespace)
        {
            return None;
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, authority) = match crate::config::split_host_port(authority) {
            Some((host, _)) => (host.to_string(), authority.to_string()),
            None if authority.starts_with('[') || !authority.contains(':') => {
                (authority.to_string(), format!("{authority}:{default_port}"))
            }
            None => return None,
        };
        Some(Url {
            tls,
            host: host.trim_matches(['[', ']']).to_string(),
            authority,
            path,
        })
    }
}

/// Loads one backend URL.
pub struct BackendProbe {
    config: BackendConfig,
}

impl BackendProbe {
    /// A probe for one configured URL.
    pub fn new(config: BackendConfig) -> Self {
        BackendProbe { config }
    }

    /// Runs the request.
    pub async fn check(&self) -> BackendCheck {
        let c = &self.config;
        let mut check = BackendCheck {
            url: c.url.clone(),
            ..Default::default()
        };
        let started = Instant::now();
        let result = tokio::time::timeout(c.timeout, self.request()).await;
        check.latency_ms = millis(started.elapsed());
        match result {
            Err(_) => check.error = format!("no response within {:?}", c.timeout),
            Ok(Err(e)) => check.error = e,
            Ok(Ok((status, warning))) => {
                check.http_status = u32::from(status);
                check.error = warning;
            }
        }
        check
    }

    /// The status code and, for https, a verification failure worth reporting.
    async fn request(&self) -> Result<(u16, String), String> {
        let Some(url) = Url::parse(&self.config.url) else {
            return Err(format!("`{}` is not an http(s) URL", self.config.url));
        };
        let deadline = tokio::time::Instant::now() + self.config.timeout;
        let tcp = connect(&url.authority, deadline, self.config.timeout)
            .await
            .map_err(|(outcome, e)| match outcome {
                ConnectOutcome::Refused => format!("connection refused: {e}"),
                ConnectOutcome::TimedOut => format!("timed out: {e}"),
                ConnectOutcome::DnsFailed => format!("DNS failure: {e}"),
                ConnectOutcome::Unreachable => format!("unreachable: {e}"),
                _ => e,
            })?;
        if !url.tls {
            return Ok((exchange(tcp, &url).await?, String::new()));
        }
        let roots = tls::Roots::or_none(&self.config.roots);
        let shake = tls::handshake(tcp, &url.host, roots, &[], true).await;
        let Some(stream) = shake.stream else {
            return Err(shake.result.error);
        };
        Ok((exchange(stream, &url).await?, shake.result.error))
    }
}

/// Sends a GET and reads the status line.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    url: &Url,
) -> Result<u16, String> {
    let host = if url.authority.ends_with(":80") && !url.tls
        || url.authority.ends_with(":443") && url.tls
    {
        url.authority
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(&url.authority)
    } else {
        &url.authority
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: connwatch-collector/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        url.path,
        env!("CARGO_PKG_VERSION")
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("the request could not be sent: {e}"))?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 512];
    while !head.contains(&b'\n') && head.len() < 8192 {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("the response could not be read: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    status_code(&head).ok_or_else(|| {
        if head.is_empty() {
            "the server closed the connection without a response".to_string()
        } else {
            format!(
                "the answer is not HTTP: {:?}",
                String::from_utf8_lossy(&head[..head.len().min(60)])
            )
        }
    })
}

/// The status code of an HTTP/1.x status line.
fn status_code(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts
        .next()?
        .parse()
        .ok()
        .filter(|c| (100..1000).contains(c))
}

impl Probe for BackendProbe {
    fn name(&self) -> String {
        format!("backend:{}", self.config.url)
    }

    fn deadline(&self) -> Duration {
        self.config.timeout
    }

    fn run(&self) -> BoxFuture<'_, Observation> {
        Box::pin(async move { Observation::Backend(self.check().await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn urls_parse_into_what_a_request_needs() {
        let u = Url::parse("http://intranet.local:8080/app?x=1").expect("url");
        assert_eq!(
            (
                u.tls,
                u.host.as_str(),
                u.authority.as_str(),
                u.path.as_str()
            ),
            (false, "intranet.local", "intranet.local:8080", "/app?x=1")
        );
        let u = Url::parse("https://[::1]/").expect("url");
        assert_eq!(
            (u.host.as_str(), u.authority.as_str()),
            ("::1", "[::1]:443")
        );
        let u = Url::parse("https://app.example").expect("url");
        assert_eq!(
            (u.authority.as_str(), u.path.as_str()),
            ("app.example:443", "/")
        );
        for bad in ["ftp://x", "http://", "http://user@host/", "intranet"] {
            assert_eq!(Url::parse(bad), None, "{bad}");
        }
    }

    fn probe(url: String) -> BackendProbe {
        BackendProbe::new(BackendConfig {
            url,
            timeout: Duration::from_secs(2),
            roots: Vec::new(),
        })
    }

    #[tokio::test]
    async fn status_refusal_and_silence_are_reported() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 1024];
            let n = sock.read(&mut buf).await.expect("read");
            let request = String::from_utf8_lossy(&buf[..n]).to_string();
            sock.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                .await
                .expect("write");
            request
        });
        let ok = probe(format!("http://{addr}/health")).check().await;
        assert_eq!(ok.http_status, 503, "{ok:?}");
        assert!(ok.error.is_empty());
        let request = server.await.expect("server");
        assert!(request.starts_with("GET /health HTTP/1.1\r\n"), "{request}");
        assert!(request.contains(&format!("Host: {addr}")), "{request}");

        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr");
        let refused = probe(format!("http://{closed}/")).check().await;
        assert_eq!(refused.http_status, 0);
        assert!(refused.error.contains("refused"), "{refused:?}");

        let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let silent_addr = silent.local_addr().expect("addr");
        let mut quiet = probe(format!("http://{silent_addr}/"));
        quiet.config.timeout = Duration::from_millis(300);
        let timed_out = quiet.check().await;
        assert_eq!(timed_out.http_status, 0);
        assert!(timed_out.error.contains("no response"), "{timed_out:?}");
        drop(silent);
    }
}
