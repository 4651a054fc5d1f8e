//! Certificates are renewed in place without restarts: a running collector whose
//! certificate files are replaced reconnects with the new certificate and its reports
//! keep landing under the same identity, even once the old certificate has expired;
//! the aggregator re-reads its CA bundle and server certificate on SIGHUP, and a bad
//! file on reload leaves it serving with what it had.

use connwatch_shared::pki::LeafSpec;
use connwatch_shared::wire::StatusRequest;
use connwatch_tests::{Aggregator, Collector, Pki, collector_id, eventually, query_client, stored};
use std::time::Duration;

#[tokio::test]
async fn a_collector_picks_up_a_renewed_certificate_without_a_restart() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let mut agg = Aggregator::start(root.path(), &pki, "");
    // A certificate that expires shortly, at the paths `ca issue` uses for "rot".
    let valid_for = Duration::from_secs(8);
    let expires = std::time::Instant::now() + valid_for;
    let old = pki.custom("collector-rot", &{
        let mut spec = LeafSpec::client(&collector_id("rot"));
        spec.not_after = time::OffsetDateTime::now_utc() + valid_for;
        spec
    });
    let collector = Collector::start(root.path(), &agg, &old, "");
    eventually(Duration::from_secs(20), "first reports", || async {
        (!stored(&agg, &pki, "rot").is_empty()).then_some(())
    })
    .await;

    // Renew in place, as an operator would: `ca issue --force` into the same files.
    let renewed = pki.collector("rot");
    assert_eq!(renewed.cert, old.cert);
    eventually(
        Duration::from_secs(20),
        "the collector to reconnect",
        || async {
            collector
                .log()
                .contains("certificate files renewed")
                .then_some(())
        },
    )
    .await;

    // Once the old certificate has expired, a fresh handshake can only succeed with
    // the new one: restart the aggregator to force one.
    tokio::time::sleep(expires.saturating_duration_since(std::time::Instant::now())).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    agg.kill();
    agg.restart();
    let before = stored(&agg, &pki, "rot").len();
    eventually(
        Duration::from_secs(20),
        "reports after the restart",
        || async { (stored(&agg, &pki, "rot").len() > before + 2).then_some(()) },
    )
    .await;
    assert_eq!(
        agg.connector_ids(&pki),
        ["rot"],
        "same identity, one connector"
    );
    assert_eq!(
        collector.log().matches("collector starting").count(),
        1,
        "the collector was never restarted"
    );
}

#[tokio::test]
async fn the_aggregator_reloads_its_ca_and_server_certificate_on_sighup() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let agg = Aggregator::start(root.path(), &pki, "");
    let next = Pki::init(&root.path().join("next"));
    let status = |tls| {
        let agg = &agg;
        async move {
            match query_client(agg, &tls).await {
                Ok(mut q) => q.status(StatusRequest::default()).await.is_ok(),
                Err(_) => false,
            }
        }
    };
    assert!(status(pki.operator()).await);
    assert!(
        !status(next.operator()).await,
        "the new CA is not trusted yet"
    );

    // A broken server certificate on reload is refused; the server keeps serving.
    std::fs::write(pki.dir.join("server.pem"), "not a certificate").expect("write");
    agg.hangup();
    eventually(Duration::from_secs(10), "the refused reload", || async {
        agg.log().contains("cannot reload TLS files").then_some(())
    })
    .await;
    assert!(
        status(pki.operator()).await,
        "still serving with the old files"
    );

    // Move the aggregator to a new CA and server certificate.
    for file in ["ca.pem", "server.pem", "server.key"] {
        std::fs::copy(next.dir.join(file), pki.dir.join(file)).expect("copy");
    }
    agg.hangup();
    eventually(
        Duration::from_secs(10),
        "the new CA to be trusted",
        || async { status(next.operator()).await.then_some(()) },
    )
    .await;
    assert!(
        !status(pki.operator()).await,
        "the old CA is no longer trusted"
    );
    assert!(
        agg.log()
            .contains("reloaded the CA bundle and server certificate")
    );
}
