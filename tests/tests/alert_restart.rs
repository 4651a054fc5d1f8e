//! Alert state is stored: after a clean restart or a kill, a still-firing alert is not
//! announced again, and a condition that cleared while the aggregator was down is
//! announced resolved once it is back.

use connwatch_tests::peers::{Receiver, free_port, http};
use connwatch_tests::{Aggregator, Pki, cert_report, eventually, send_reports};
use std::net::SocketAddr;
use std::time::Duration;

fn evaluations(metrics: SocketAddr) -> u64 {
    http("GET", metrics, "/metrics", "")
        .ok()
        .and_then(|(_, t)| {
            t.lines()
                .find_map(|l| l.strip_prefix("connwatch_alert_evaluations_total "))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

async fn settle(metrics: SocketAddr, rounds: u64) {
    let target = evaluations(metrics) + rounds;
    eventually(Duration::from_secs(15), "more evaluations", || async {
        (evaluations(metrics) >= target).then_some(())
    })
    .await;
}

fn firing(receiver: &Receiver) -> usize {
    receiver
        .accepted()
        .iter()
        .filter(|b| b["code"] == "trust-cert-expiring" && b["kind"] == "firing")
        .count()
}

#[tokio::test]
async fn a_restart_does_not_announce_a_firing_alert_twice() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let receiver = Receiver::start(false);
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let mut agg = Aggregator::start(
        root.path(),
        &pki,
        &format!(
            "[rules]\nmin_healthy = 1\n[alert]\nevaluate_every = \"100ms\"\n[[alert.webhook]]\nurl = \"{}\"\n[metrics]\nlisten = \"{metrics}\"\n",
            receiver.url()
        ),
    );
    let alpha = pki.collector("alpha");
    send_reports(&agg, &alpha, vec![cert_report(1, 1, 20, "AA11")])
        .await
        .expect("report");
    eventually(
        Duration::from_secs(15),
        "the firing notification",
        || async { (firing(&receiver) == 1).then_some(()) },
    )
    .await;

    // A clean stop, then a kill: neither may lead to a second firing notification.
    assert!(agg.terminate().success());
    agg.restart();
    settle(metrics, 5).await;
    assert_eq!(firing(&receiver), 1, "announced again after a restart");
    agg.kill();
    agg.restart();
    settle(metrics, 5).await;
    assert_eq!(firing(&receiver), 1, "announced again after a kill");
    let listed = agg.cli_json(&pki, &["alerts"]);
    assert_eq!(listed["alerts"][0]["status"], "firing");

    // Renewed while the aggregator is down: the resolution is announced after start.
    agg.terminate();
    agg.restart();
    send_reports(&agg, &alpha, vec![cert_report(1, 2, 200, "BB22")])
        .await
        .expect("renewed");
    eventually(
        Duration::from_secs(15),
        "the resolved notification",
        || async {
            receiver
                .accepted()
                .iter()
                .any(|b| b["kind"] == "resolved")
                .then_some(())
        },
    )
    .await;
    assert_eq!(receiver.accepted().len(), 2);
}
