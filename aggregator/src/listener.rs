//! The mutual-TLS listener: accepts TCP connections, runs each TLS handshake in its own
//! task (so a slow client never holds up the others) and hands finished connections to
//! tonic. The server configuration sits behind a lock and is replaced on reload, so a
//! renewed CA bundle or server certificate takes effect for new connections without a
//! restart; open connections keep the configuration they were accepted with.
//! tonic's built-in TLS cannot do this: its configuration is fixed at start.
//!
//! Finished connections are sorted by who is on the other end: operators' go to a
//! server on a runtime of their own, so a status query does not queue behind
//! thousands of collectors' report streams when ingest saturates the machine.

use connwatch_shared::tls::{TlsError, TlsFiles};
use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// How long a client may take to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP keepalive on accepted connections, so dead peers are noticed even when HTTP/2
/// pings cannot be sent.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// The current server configuration and the files it is built from.
#[derive(Debug)]
pub struct ServerTls {
    files: TlsFiles,
    crl: Option<PathBuf>,
    current: RwLock<Arc<rustls::ServerConfig>>,
}

impl ServerTls {
    /// Builds the configuration from `files` and the revocation list `crl`, if any.
    pub fn load(files: TlsFiles, crl: Option<PathBuf>) -> Result<ServerTls, TlsError> {
        let config = Arc::new(files.server_config(crl.as_deref())?);
        Ok(ServerTls {
            files,
            crl,
            current: RwLock::new(config),
        })
    }

    /// Reads the files again and, if they make a valid configuration, uses it for every
    /// later handshake. On error the previous configuration stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = Arc::new(self.files.server_config(self.crl.as_deref())?);
        // A poisoned lock only means a writer panicked mid-swap of an Arc, which
        // leaves the value intact.
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        tokio_rustls::TlsAcceptor::from(config)
    }
}

/// A stream of connections whose TLS handshake succeeded.
pub type Connections<S> = ReceiverStream<Result<S, std::io::Error>>;

/// Finished connections, by who is on the other end.
#[derive(Debug)]
pub struct Incoming {
    /// Collectors' connections, and any whose role is not an operator's, each holding
    /// its place under the connection limits until it closes.
    pub collectors: Connections<Counted>,
    /// Operators' connections (never limited: they are how an operator sees trouble).
    pub operators: Connections<TlsStream<TcpStream>>,
}

/// How many connections one client certificate may hold at once. A collector needs
/// one (two for a moment while it reconnects); a leaked key opening thousands must
/// not take the aggregator's file descriptors from everyone else.
pub const PER_IDENTITY: usize = 4;
/// File descriptors kept for what is not a collector's connection: operators'
/// connections, the store's files, the metrics listener, the sinks.
pub const RESERVE: usize = 256;

/// The places connections take under the limits: per identity, and in all.
#[derive(Debug)]
pub struct Limits {
    per_identity: Mutex<HashMap<Vec<u8>, usize>>,
    total: AtomicUsize,
    max_total: usize,
}

impl Limits {
    /// Limits for a process allowed `fd_limit` open files: collectors' connections in
    /// all stay [`RESERVE`] below it, and [`PER_IDENTITY`] per certificate.
    pub fn new(fd_limit: usize) -> Limits {
        Limits {
            per_identity: Mutex::new(HashMap::new()),
            total: AtomicUsize::new(0),
            max_total: fd_limit.saturating_sub(RESERVE).max(1),
        }
    }

    /// Limits from this process's open-file limit (its soft `RLIMIT_NOFILE`).
    pub fn from_process() -> Limits {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .and_then(|l| usize::try_from(l).ok())
            .unwrap_or(1 << 20);
        Limits::new(limit)
    }

    /// Takes a place for a connection of `identity`, or says which limit refuses it.
    fn take(self: &Arc<Self>, identity: Vec<u8>) -> Result<Slot, &'static str> {
        let mut per = self.per_identity.lock().unwrap_or_else(|p| p.into_inner());
        if self.total.load(Ordering::Relaxed) >= self.max_total {
            return Err("the aggregator's connection limit");
        }
        let held = per.entry(identity.clone()).or_insert(0);
        if *held >= PER_IDENTITY {
            return Err("the limit of connections per certificate");
        }
        *held += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            limits: self.clone(),
            identity,
        })
    }
}

/// A connection's place under the [`Limits`], given back when it is dropped.
#[derive(Debug)]
struct Slot {
    limits: Arc<Limits>,
    identity: Vec<u8>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut per = self
            .limits
            .per_identity
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(held) = per.get_mut(&self.identity) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                per.remove(&self.identity);
            }
        }
        self.limits.total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A collector's connection holding its place under the limits until it closes.
#[derive(Debug)]
pub struct Counted {
    stream: TlsStream<TcpStream>,
    _slot: Slot,
}

impl tonic::transport::server::Connected for Counted {
    type ConnectInfo = <TlsStream<TcpStream> as tonic::transport::server::Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The identity URI in the client's certificate (`connwatch://<role>/<name>`), as
/// bytes found in its DER, or the whole certificate where none is found; only a key
/// for counting, since every call's identity is still checked from the parsed one.
fn identity_key(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    const PREFIX: &[u8] = b"connwatch://";
    let Some(leaf) = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
    else {
        return Vec::new();
    };
    let der = leaf.as_ref();
    let Some(at) = der.windows(PREFIX.len()).position(|w| w == PREFIX) else {
        return der.to_vec();
    };
    der[at..]
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || b"./:_-".contains(b))
        .copied()
        .collect()
}

/// The identity SAN of an operator certificate starts with this.
const OPERATOR_URI: &[u8] = b"connwatch://operator/";

/// Whether the client's certificate names an operator. This only picks the server
/// that handles the connection; the services still check the role of every call
/// from the parsed certificate. A search of the DER for the SAN's bytes is enough for
/// that and costs a microsecond, where parsing the certificate again would add to
/// every handshake of a reconnect storm.
fn is_operator(stream: &TlsStream<TcpStream>) -> bool {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .is_some_and(|leaf| {
            leaf.as_ref()
                .windows(OPERATOR_URI.len())
                .any(|w| w == OPERATOR_URI)
        })
}

/// Connections the kernel completes before the aggregator accepts them. A fleet
/// reconnecting at once (after a restart) overflows a short queue, and each connection
/// dropped from it waits a SYN retransmission (1 s, then 3 s) before its next try.
/// The kernel caps this at `net.core.somaxconn` (4096 by default).
pub const BACKLOG: u32 = 8192;

/// Binds `addr` for the listener, with a backlog of [`BACKLOG`].
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As `TcpListener::bind` does: a restart can bind while old connections linger.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Accepts connections on `listener` until `stop`, yielding each one whose handshake
/// succeeded, sorted by role. Failed handshakes (wrong CA, expired certificate, no
/// certificate) are logged at debug level and dropped: the client sees the TLS alert.
/// Collectors' connections beyond the [`Limits`] are closed at once (logged at warn at
/// most once a minute per limit), so a leaked key or a misbehaving client cannot take
/// the aggregator's file descriptors; operators' connections are never limited.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<ServerTls>,
    limits: Arc<Limits>,
    stop: CancellationToken,
) -> Incoming {
    let last_warned: Arc<Mutex<Option<std::time::Instant>>> = Arc::new(Mutex::new(None));
    let (tx, rx) = mpsc::channel(64);
    let (op_tx, op_rx) = mpsc::channel(8);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => break,
                a = listener.accept() => a,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Usually out of file descriptors: wait rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
            let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive);
            let acceptor = tls.acceptor();
            let tx = tx.clone();
            let op_tx = op_tx.clone();
            let limits = limits.clone();
            let last_warned = last_warned.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) if is_operator(&stream) => {
                        let _ = op_tx.send(Ok(stream)).await;
                    }
                    Ok(Ok(stream)) => {
                        let identity = identity_key(&stream);
                        match limits.take(identity) {
                            Ok(slot) => {
                                let _ = tx
                                    .send(Ok(Counted {
                                        stream,
                                        _slot: slot,
                                    }))
                                    .await;
                            }
                            Err(limit) => {
                                let mut last =
                                    last_warned.lock().unwrap_or_else(|p| p.into_inner());
                                if last.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                                    *last = Some(std::time::Instant::now());
                                    tracing::warn!(%peer, limit, "connection refused: over {limit} (further refusals for a minute are not logged)");
                                }
                            }
                        }
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    Incoming {
        collectors: ReceiverStream::new(rx),
        operators: ReceiverStream::new(op_rx),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_limited_per_certificate_and_in_all_and_given_back() {
        let limits = Arc::new(Limits::new(RESERVE + PER_IDENTITY + 1));
        let a: Vec<Slot> = (0..PER_IDENTITY)
            .map(|_| {
                limits
                    .take(b"connwatch://collector/a".to_vec())
                    .expect("a place")
            })
            .collect();
        assert_eq!(
            limits.take(b"connwatch://collector/a".to_vec()).err(),
            Some("the limit of connections per certificate")
        );
        let b = limits
            .take(b"connwatch://collector/b".to_vec())
            .expect("b's place");
        assert_eq!(
            limits.take(b"connwatch://collector/c".to_vec()).err(),
            Some("the aggregator's connection limit")
        );
        drop(b);
        drop(a);
        assert_eq!(limits.total.load(Ordering::Relaxed), 0);
        assert!(
            limits
                .per_identity
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
        );
        assert!(limits.take(b"connwatch://collector/c".to_vec()).is_ok());
    }
}
