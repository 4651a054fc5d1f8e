//! HTTP CONNECT through a forward proxy, the way the connector's own traffic leaves a
//! site that requires one: TCP to the proxy, `CONNECT host:port`, and the proxy's
//! answer read and judged. On 2xx the same socket is the tunnel, ready for the TLS
//! handshake; otherwise the failure says whether the proxy could not be reached,
//! refused, or asked for credentials, which are causes of their own rather than "the
//! endpoint is unreachable".

use super::endpoint::connect;
use super::route::ProxyAddr;
use connwatch_shared::wire::ConnectOutcome;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most bytes of a proxy's answer head that are read.
pub const MAX_HEAD: usize = 8192;

/// Why no tunnel was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The outcome to report.
    pub outcome: ConnectOutcome,
    /// The proxy's status line, when it answered with one.
    pub status_line: String,
    /// What happened, naming the proxy.
    pub error: String,
}

/// The parts of a proxy's answer to CONNECT that a check needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The status line, such as `HTTP/1.1 403 Forbidden`.
    pub status_line: String,
    /// The `Proxy-Authenticate` challenges, such as `Basic realm="corp"`.
    pub challenges: Vec<String>,
}

/// Parses a response head (status line and headers, up to the blank line).
pub fn parse_answer(head: &[u8]) -> Result<Answer, String> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r'));
    let status_line = lines.next().unwrap_or("").trim();
    let not_http = || {
        let shown: String = status_line.chars().take(60).collect();
        format!("the answer is not HTTP: {shown:?}")
    };
    let mut parts = status_line.splitn(3, ' ');
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err(not_http());
    }
    let status = parts
        .next()
        .filter(|c| c.len() == 3)
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|c| (100..600).contains(c))
        .ok_or_else(not_http)?;
    // Clipped: they travel in the report, whose strings the aggregator bounds, and a
    // proxy's answer must never make a report too big to be taken.
    let challenges = lines
        .filter_map(|l| l.split_once(':'))
        .filter(|(name, _)| name.trim().eq_ignore_ascii_case("proxy-authenticate"))
        .map(|(_, value)| crate::platform::parse::clip(value.trim(), 100).to_string())
        .take(4)
        .collect();
    Ok(Answer {
        status,
        status_line: crate::platform::parse::clip(status_line, 200).to_string(),
        challenges,
    })
}

/// How reading a head ended, when it did not end with the blank line.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    /// The peer closed the connection; what came before.
    Closed(Vec<u8>),
    /// The head grew past [`MAX_HEAD`].
    TooLong,
    /// Reading failed.
    Io(String),
}

/// Reads a response head up to and including its blank line, one byte at a time so
/// that nothing after it is taken from the socket: there the TLS handshake begins.
pub async fn read_head<R: AsyncRead + Unpin>(stream: &mut R) -> Result<Vec<u8>, HeadError> {
    let mut head = Vec::with_capacity(256);
    loop {
        if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
            return Ok(head);
        }
        if head.len() >= MAX_HEAD {
            return Err(HeadError::TooLong);
        }
        match stream.read_u8().await {
            Ok(b) => head.push(b),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(HeadError::Closed(head));
            }
            Err(e) => return Err(HeadError::Io(e.to_string())),
        }
    }
}

/// What is asked of the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// `CONNECT host:port`, for a TLS endpoint: the tunnel carries the handshake.
    Connect,
    /// `HEAD http://host:port/`, for a plain endpoint: the connector fetches those
    /// (revocation lists, OCSP) with plain HTTP requests the proxy forwards, and many
    /// proxies (Squid by default) allow CONNECT to port 443 only.
    Forward,
}

/// Reaches `target` (`host:port`) through `proxy` before `deadline`: a tunnel for
/// [`Ask::Connect`], or for [`Ask::Forward`] a forwarded request whose answer says the
/// path works (the returned socket is then spent).
pub async fn open(
    proxy: &ProxyAddr,
    target: &str,
    ask: Ask,
    deadline: tokio::time::Instant,
    timeout: Duration,
) -> Result<TcpStream, Failure> {
    let fail = |outcome, status_line: &str, error: String| Failure {
        outcome,
        status_line: status_line.to_string(),
        error,
    };
    let mut tcp = connect(&proxy.authority(), deadline, timeout)
        .await
        .map_err(|(_, e)| {
            fail(
                ConnectOutcome::ProxyUnreachable,
                "",
                format!("cannot reach the proxy {proxy}: {e}"),
            )
        })?;
    let (request, what) = match ask {
        Ask::Connect => (
            format!(
                "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: connwatch-collector/{}\r\nProxy-Connection: Keep-Alive\r\n\r\n",
                env!("CARGO_PKG_VERSION")
            ),
            format!("CONNECT {target}"),
        ),
        Ask::Forward => (
            format!(
                "HEAD http://{target}/ HTTP/1.1\r\nHost: {target}\r\nUser-Agent: connwatch-collector/{}\r\nConnection: close\r\n\r\n",
                env!("CARGO_PKG_VERSION")
            ),
            format!("HEAD http://{target}/"),
        ),
    };
    let exchange = async {
        tcp.write_all(request.as_bytes())
            .await
            .map_err(|e| HeadError::Io(e.to_string()))?;
        read_head(&mut tcp).await
    };
    let head = match tokio::time::timeout_at(deadline, exchange).await {
        // A proxy that takes the request and says nothing is usually still trying to
        // reach the endpoint itself: for the connector that is a timeout.
        Err(_) => {
            return Err(fail(
                ConnectOutcome::TimedOut,
                "",
                format!("the proxy {proxy} did not answer {what} within {timeout:?}"),
            ));
        }
        Ok(Err(HeadError::Closed(partial))) if partial.is_empty() => {
            return Err(fail(
                ConnectOutcome::ProxyRefused,
                "",
                format!("the proxy {proxy} closed the connection without answering {what}"),
            ));
        }
        Ok(Err(HeadError::Closed(partial))) => partial,
        Ok(Err(HeadError::TooLong)) => {
            return Err(fail(
                ConnectOutcome::ProxyRefused,
                "",
                format!(
                    "the proxy {proxy} answered {what} with a head longer than {MAX_HEAD} bytes"
                ),
            ));
        }
        Ok(Err(HeadError::Io(e))) => {
            return Err(fail(
                ConnectOutcome::ProxyRefused,
                "",
                format!("the connection to the proxy {proxy} failed during {what}: {e}"),
            ));
        }
        Ok(Ok(head)) => head,
    };
    let answer = parse_answer(&head).map_err(|e| {
        fail(
            ConnectOutcome::ProxyRefused,
            "",
            format!("the proxy {proxy} did not answer {what} properly: {e}"),
        )
    })?;
    match (ask, answer.status) {
        (Ask::Connect, 200..=299) => Ok(tcp),
        // Through a forwarding proxy, any answer but the proxy's own refusals (403,
        // 407) or its failure to reach the host (502, 503, 504) comes from the host:
        // the path works, whatever the host thinks of `HEAD /`.
        (Ask::Forward, status) if !matches!(status, 403 | 407 | 502..=504) => Ok(tcp),
        (_, 407) => {
            let schemes = if answer.challenges.is_empty() {
                String::new()
            } else {
                format!(" ({})", answer.challenges.join(", "))
            };
            Err(fail(
                ConnectOutcome::ProxyAuthRequired,
                &answer.status_line,
                format!(
                    "the proxy {proxy} asks for credentials{schemes} to {what}: {}",
                    answer.status_line
                ),
            ))
        }
        _ => Err(fail(
            ConnectOutcome::ProxyRefused,
            &answer.status_line,
            format!("the proxy {proxy} refused {what}: {}", answer.status_line),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// A one-shot proxy that reads a request head, answers `answer`, and hands back
    /// what it was asked.
    async fn proxy_answering(answer: &'static str) -> (ProxyAddr, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let asked = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.expect("accept");
            let mut buf = vec![0u8; 4096];
            let n = sock.read(&mut buf).await.expect("read");
            let _ = sock.write_all(answer.as_bytes()).await;
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let proxy = ProxyAddr::parse(&format!("http://{addr}")).expect("proxy");
        (proxy, asked)
    }

    #[tokio::test]
    async fn a_plain_endpoint_is_reached_through_a_forwarded_request() {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        let t = Duration::from_secs(2);
        // The host answers 404 to `HEAD /`: the path works.
        let (proxy, asked) = proxy_answering("HTTP/1.1 404 Not Found\r\n\r\n").await;
        let opened = open(&proxy, "crl3.digicert.com:80", Ask::Forward, deadline, t).await;
        assert!(opened.is_ok(), "{:?}", opened.err());
        let asked = asked.await.expect("asked");
        assert!(
            asked.starts_with("HEAD http://crl3.digicert.com:80/ HTTP/1.1"),
            "{asked}"
        );
        // The proxy could not reach the host, or refused.
        for (answer, outcome) in [
            (
                "HTTP/1.1 503 Service Unavailable\r\nX-Squid-Error: ERR_CONNECT_FAIL 111\r\n\r\n",
                ConnectOutcome::ProxyRefused,
            ),
            (
                "HTTP/1.1 403 Forbidden\r\n\r\n",
                ConnectOutcome::ProxyRefused,
            ),
            (
                "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: NTLM\r\n\r\n",
                ConnectOutcome::ProxyAuthRequired,
            ),
        ] {
            let (proxy, _) = proxy_answering(answer).await;
            let failed = open(&proxy, "crl3.digicert.com:80", Ask::Forward, deadline, t)
                .await
                .expect_err(answer);
            assert_eq!(failed.outcome, outcome, "{answer}");
            assert!(
                failed.error.contains("HEAD http://crl3.digicert.com:80/"),
                "{}",
                failed.error
            );
        }
        // A CONNECT answered 404 is no tunnel.
        let (proxy, _) = proxy_answering("HTTP/1.1 404 Not Found\r\n\r\n").await;
        assert!(
            open(&proxy, "a:443", Ask::Connect, deadline, t)
                .await
                .is_err()
        );
    }

    #[test]
    fn a_long_answer_is_clipped_to_fit_a_report() {
        let head = format!(
            "HTTP/1.1 403 {}\r\nProxy-Authenticate: Basic realm=\"{}\"\r\n\r\n",
            "x".repeat(8000),
            "y".repeat(8000)
        );
        let answer = parse_answer(head.as_bytes()).expect("an answer");
        assert_eq!(answer.status, 403);
        assert!(
            answer.status_line.len() <= 204,
            "{}",
            answer.status_line.len()
        );
        assert!(answer.challenges.iter().all(|c| c.len() <= 104));
    }

    #[test]
    fn answers_are_parsed_for_status_and_challenges() {
        let ok = parse_answer(
            b"HTTP/1.0 200 Connection established\r\nProxy-agent: tinyproxy/1.11.1\r\n\r\n",
        )
        .expect("parse");
        assert_eq!(ok.status, 200);
        assert_eq!(ok.status_line, "HTTP/1.0 200 Connection established");
        let auth = parse_answer(
            b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Negotiate\r\nproxy-authenticate:  Basic realm=\"corp\"\r\nContent-Length: 0\r\n\r\n",
        )
        .expect("parse");
        assert_eq!(auth.status, 407);
        assert_eq!(auth.challenges, ["Negotiate", "Basic realm=\"corp\""]);
        let bare = parse_answer(b"HTTP/1.1 403\n\n").expect("a status line without a reason");
        assert_eq!(
            (bare.status, bare.status_line.as_str()),
            (403, "HTTP/1.1 403")
        );
        for garbage in [
            &b"SSH-2.0-OpenSSH_9.2\r\n\r\n"[..],
            b"HTTP/1.1 abc Nope\r\n\r\n",
            b"HTTP/1.1 2000 Long\r\n\r\n",
            b"HTTP/2 200\r\n\r\n",
            b"\x16\x03\x01\x00\r\n\r\n",
            b"",
        ] {
            let err = parse_answer(garbage).expect_err("not HTTP");
            assert!(err.contains("not HTTP"), "{err}");
        }
    }

    #[tokio::test]
    async fn a_head_is_read_to_its_blank_line_and_no_further() {
        let mut input: &[u8] = b"HTTP/1.1 200 OK\r\nX: y\r\n\r\n\x16\x03\x03rest";
        let head = read_head(&mut input).await.expect("head");
        assert!(head.ends_with(b"y\r\n\r\n"));
        assert_eq!(
            input, b"\x16\x03\x03rest",
            "the bytes after the head stay unread"
        );
        let mut closed: &[u8] = b"HTTP/1.1 200 OK\r\n";
        assert_eq!(
            read_head(&mut closed).await,
            Err(HeadError::Closed(b"HTTP/1.1 200 OK\r\n".to_vec()))
        );
        let endless = [b'a'; MAX_HEAD + 10];
        assert_eq!(read_head(&mut &endless[..]).await, Err(HeadError::TooLong));
        let exactly = [&[b'a'; MAX_HEAD - 4][..], b"\r\n\r\n"].concat();
        assert_eq!(
            read_head(&mut &exactly[..]).await.map(|h| h.len()),
            Ok(MAX_HEAD)
        );
    }
}
