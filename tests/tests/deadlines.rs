//! No peer can hold a collector or the CLI forever: a port that accepts TCP and never
//! finishes TLS (something else listening, a stopped process) costs the uplink one
//! connect deadline, after which it retries, and it delivers as soon as a real
//! aggregator has the port again; the CLI gives up within its `--timeout`.

use connwatch_shared::tls::TlsFiles;
use connwatch_tests::{Aggregator, Collector, Pki, bin, eventually, stored};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

/// A port that accepts connections, holds them open and never says a word; accepted
/// connections are reported on the channel.
fn black_hole() -> (std::net::SocketAddr, mpsc::Receiver<std::net::TcpStream>) {
    let hole = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = hole.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for sock in hole.incoming().flatten() {
            if tx.send(sock).is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

#[test]
fn check_gives_up_on_a_tls_black_hole_within_its_timeout() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let (addr, _held) = black_hole();
    let started = std::time::Instant::now();
    let out = std::process::Command::new(bin("connwatch-aggregator"))
        .args([
            "check",
            "--timeout",
            "2s",
            "--aggregator",
            &addr.to_string(),
            "--certs",
        ])
        .arg(&pki.dir)
        .output()
        .expect("run check");
    let took = started.elapsed();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "no answer is exit 3: {said}");
    assert!(
        took < Duration::from_secs(3),
        "gave up after {took:?}, not within 2 s + 1 s"
    );
    assert!(said.contains("within 2s"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_recovers_when_a_real_aggregator_takes_the_port_from_a_black_hole() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let mut agg = Aggregator::start(root.path(), &pki, "");
    let addr = agg.url().trim_start_matches("https://").to_string();
    agg.kill();

    // The black hole: accepts, holds every connection open, and never says a word.
    let hole = TcpListener::bind(&addr).expect("bind the aggregator's port");
    let (accepted_tx, accepted) = mpsc::channel();
    let (close_tx, close) = mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        hole.set_nonblocking(true).expect("nonblocking");
        let mut held = Vec::new();
        while close.try_recv().is_err() {
            match hole.accept() {
                Ok((sock, _)) => {
                    held.push(sock);
                    let _ = accepted_tx.send(());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        // The listener closes; the held connections stay open and silent, as a hung
        // peer's would.
        held
    });

    let tls = pki.collector("wedge-me");
    let _collector = Collector::start(root.path(), &agg, &tls, "");
    accepted
        .recv_timeout(Duration::from_secs(20))
        .expect("the collector connects to the black hole");
    let _ = close_tx.send(());
    let _held = holder.join().expect("holder thread");

    agg.restart();
    let delivered = eventually(
        Duration::from_secs(40),
        "reports from the collector that was stuck in a handshake",
        || async { Some(stored(&agg, &pki, "wedge-me")).filter(|s| !s.is_empty()) },
    )
    .await;
    assert!(!delivered.is_empty());
}

/// A raw mutual-TLS connection with `files`' certificate that finishes the handshake
/// and then sends nothing, not even HTTP/2's preface.
async fn idle_tls(
    addr: &str,
    files: &TlsFiles,
) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let read = |p: &std::path::Path| std::fs::read(p);
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut read(&files.ca)?.as_slice()) {
        roots.add(c?)?;
    }
    let chain =
        rustls_pemfile::certs(&mut read(&files.cert)?.as_slice()).collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pemfile::private_key(&mut read(&files.key)?.as_slice())?
        .ok_or_else(|| anyhow::anyhow!("no key"))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    Ok(
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await?,
    )
}

/// The aggregator process's open file descriptors.
fn open_fds(agg: &Aggregator) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", agg.pid()))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_holding_a_thousand_idle_connections_wedges_nothing() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let agg = Aggregator::start(root.path(), &pki, "");
    let addr = agg.url().trim_start_matches("https://").to_string();
    let leaked = pki.collector("leaked");
    let before = open_fds(&agg);

    // A leaked key opens a thousand connections that finish TLS and say nothing.
    let mut held = Vec::new();
    for _ in 0..1000 {
        if let Ok(c) = idle_tls(&addr, &leaked).await {
            held.push(c);
        }
    }
    // The aggregator keeps a few of them, not a thousand descriptors.
    let kept = eventually(
        Duration::from_secs(10),
        "the aggregator to close what is over the limit",
        || async {
            let fds = open_fds(&agg);
            (fds < before + 20).then_some(fds)
        },
    )
    .await;
    assert!(
        kept < before + 20,
        "{kept} descriptors open, {before} before"
    );

    // Another collector still gets its reports acked, and status answers at once.
    let tls = pki.collector("honest");
    let _collector = Collector::start(root.path(), &agg, &tls, "");
    eventually(Duration::from_secs(15), "honest's reports", || async {
        Some(stored(&agg, &pki, "honest")).filter(|s| !s.is_empty())
    })
    .await;
    let started = std::time::Instant::now();
    let status = agg.cli(&pki, &["status", "--timeout", "1s"]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "status took {:?}",
        started.elapsed()
    );
    drop(held);
}
