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
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
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
pub type Connections = ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>>;

/// Finished connections, by who is on the other end.
#[derive(Debug)]
pub struct Incoming {
    /// Collectors' connections, and any whose role is not an operator's.
    pub collectors: Connections,
    /// Operators' connections.
    pub operators: Connections,
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
pub fn incoming(listener: TcpListener, tls: Arc<ServerTls>, stop: CancellationToken) -> Incoming {
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
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) if is_operator(&stream) => {
                        let _ = op_tx.send(Ok(stream)).await;
                    }
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
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
