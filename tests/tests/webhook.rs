//! The webhook sink delivers what piled up while its receiver was down, once each,
//! counts the failures where operators see them, and delivers the resolution too.

use connwatch_tests::peers::{Receiver, http};
use connwatch_tests::{Aggregator, Pki, cert_report, eventually, send_reports};
use std::collections::BTreeMap;
use std::time::Duration;

fn ids_by_kind(bodies: &[serde_json::Value]) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for b in bodies {
        *seen
            .entry(b["id"].as_str().expect("id").to_string())
            .or_insert(0) += 1;
    }
    seen
}

#[tokio::test]
async fn webhook_delivers_after_its_receiver_recovers_without_duplicates() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let receiver = Receiver::start(true);
    let agg = Aggregator::start(
        root.path(),
        &pki,
        &format!(
            "[rules]\nmin_healthy = 1\n[alert]\nevaluate_every = \"200ms\"\n[[alert.webhook]]\nurl = \"{}\"\nbackoff = \"100ms\"\nmax_backoff = \"400ms\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
            receiver.url()
        ),
    );
    let alpha = pki.collector("alpha");
    let wait = Duration::from_secs(15);
    send_reports(&agg, &alpha, vec![cert_report(1, 1, 3, "AA11")])
        .await
        .expect("report");

    // Down for a while: several attempts fail and are counted.
    eventually(wait, "three refused deliveries", || async {
        (receiver.refused() >= 3).then_some(())
    })
    .await;
    let listed = agg.cli_json(&pki, &["alerts"]);
    let hook = listed["sinks"]
        .as_array()
        .expect("sinks")
        .iter()
        .find(|s| s["kind"] == "webhook")
        .cloned()
        .expect("webhook sink listed");
    assert!(hook["failures"].as_u64() >= Some(3), "{hook}");
    assert!(hook["queued"].as_u64() >= Some(1), "{hook}");
    assert!(
        hook["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("503")),
        "{hook}"
    );
    let metrics = agg.metrics.expect("metrics address");
    let (_, text) = http("GET", metrics, "/metrics", "").expect("scrape");
    assert!(
        text.lines().any(
            |l| l.starts_with("connwatch_alert_sink_failures_total{sink=\"webhook\"")
                && !l.ends_with(" 0")
        ),
        "{text}"
    );

    // Back up: the trust-certificate alert (critical: 3 days left) and the group-down
    // it causes arrive, each once.
    receiver.set_down(false);
    let accepted = eventually(wait, "both firing notifications", || async {
        let a = receiver.accepted();
        (a.len() >= 2).then_some(a)
    })
    .await;
    let codes: Vec<&str> = accepted
        .iter()
        .map(|b| b["code"].as_str().expect("code"))
        .collect();
    assert!(
        codes.contains(&"trust-cert-expiring") && codes.contains(&"group-down"),
        "{codes:?}"
    );
    let cert = accepted
        .iter()
        .find(|b| b["code"] == "trust-cert-expiring")
        .expect("cert alert");
    assert_eq!(cert["kind"], "firing");
    assert_eq!(cert["severity"], "critical");
    assert_eq!(cert["labels"]["connector"], "alpha");
    assert_eq!(cert["annotations"]["thumbprint"], "AA11");
    assert_eq!(cert["annotations"]["days_left"], "2");

    // Renewal resolves both; the resolutions are delivered too.
    send_reports(&agg, &alpha, vec![cert_report(1, 2, 200, "BB22")])
        .await
        .expect("renewed report");
    eventually(wait, "both resolved notifications", || async {
        receiver
            .accepted()
            .iter()
            .filter(|b| b["kind"] == "resolved")
            .count()
            .eq(&2)
            .then_some(())
    })
    .await;
    // Let a few more evaluations pass: nothing new may be sent for settled alerts.
    let evaluations = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("connwatch_alert_evaluations_total "))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let (_, before) = http("GET", metrics, "/metrics", "").expect("scrape");
    let target = evaluations(&before) + 5;
    eventually(wait, "five more evaluations", || async {
        let (_, t) = http("GET", metrics, "/metrics", "").ok()?;
        (evaluations(&t) >= target).then_some(())
    })
    .await;
    let all = receiver.accepted();
    let seen = ids_by_kind(&all);
    assert!(
        seen.values().all(|n| *n == 1),
        "a notification arrived twice: {seen:?}"
    );
    assert_eq!(all.len(), 4, "two firing and two resolved: {all:#?}");
    let listed = agg.cli_json(&pki, &["alerts"]);
    let hook = listed["sinks"]
        .as_array()
        .expect("sinks")
        .iter()
        .find(|s| s["kind"] == "webhook")
        .cloned()
        .expect("webhook");
    assert_eq!(hook["delivered"], 4);
    assert_eq!(hook["queued"], 0);
}
