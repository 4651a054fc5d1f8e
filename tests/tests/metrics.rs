//! `/metrics` passes `promtool check metrics`, and a real Prometheus scrapes it and
//! answers a query for the trust-certificate expiry of a connector.

use connwatch_tests::peers::{Prometheus, http};
use connwatch_tests::{Aggregator, Pki, cert_report, eventually, report, send_reports};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test]
async fn metrics_pass_promtool_and_prometheus_scrapes_the_certificate_expiry() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let agg = Aggregator::start(
        root.path(),
        &pki,
        "[alert]\nevaluate_every = \"200ms\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
    );
    let metrics = agg.metrics.expect("the metrics address is printed");
    let alpha = pki.collector("alpha");
    let beta = pki.collector("beta");
    let r = cert_report(1, 1, 20, "AA11");
    let not_after_s = r.trust_certs[0].not_after_ms.div_euclid(1000);
    send_reports(&agg, &alpha, vec![r]).await.expect("report");
    send_reports(&agg, &beta, vec![report(1, 1)])
        .await
        .expect("report");

    let (status, text) = http("GET", metrics, "/metrics", "").expect("scrape");
    assert_eq!(status, 200);
    for needle in [
        "connwatch_connector_up{connector=\"alpha\",group=\"test\"} 1",
        &format!(
            "connwatch_trust_cert_expiry_timestamp_seconds{{connector=\"alpha\",group=\"test\",thumbprint=\"AA11\"}} {not_after_s}"
        ),
        "connwatch_findings{code=\"trust-cert-expiring\",severity=\"warning\"} 1",
        "connwatch_group_active_connectors{group=\"test\"} 2",
        "connwatch_group_healthy_connectors{group=\"test\"} 2",
        "connwatch_ingest_reports_total{outcome=\"stored\"} 2",
        "connwatch_ingest_commit_duration_seconds_count 2",
        "connwatch_alert_sink_failures_total{sink=\"log\",target=\"stderr\"} 0",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    assert!(text.contains("connwatch_store_size_bytes "));

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (scripts/install-test-deps installs it)");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = promtool.wait_with_output().expect("promtool");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let (status, _) = http("GET", metrics, "/other", "").expect("404");
    assert_eq!(status, 404);

    let prom = Prometheus::start(root.path(), &metrics.to_string());
    let result = eventually(
        Duration::from_secs(30),
        "Prometheus to answer for the certificate expiry",
        || async {
            prom.query("connwatch_trust_cert_expiry_timestamp_seconds{connector=\"alpha\"}")
                .into_iter()
                .next()
        },
    )
    .await;
    assert_eq!(result["metric"]["thumbprint"], "AA11");
    assert_eq!(result["value"][1], not_after_s.to_string());
    let days = prom.query("(connwatch_trust_cert_expiry_timestamp_seconds - time()) / 86400 < 30");
    assert_eq!(days.len(), 1, "{days:?}");
}
