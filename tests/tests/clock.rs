//! The host clock as the aggregator sees it: the offset measures the clock, not how
//! long a cycle's checks took, and a clock days off is shown as clock skew rather
//! than as a silent connector.

use connwatch_tests::{Aggregator, Collector, Pki, eventually, report, send_reports};
use std::time::Duration;

const DAY: i64 = 86_400_000;

#[tokio::test]
async fn a_hung_check_does_not_count_as_clock_offset() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let agg = Aggregator::start(root.path(), &pki, "");
    // Accepts connections (the kernel does) and never answers a TLS handshake: the
    // check waits out its whole timeout, and so does the cycle.
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = black_hole.local_addr().expect("addr");
    let tls = pki.collector("conn-slow");
    let _collector = Collector::start_with(
        root.path(),
        &agg,
        &tls,
        "2500ms",
        &format!(
            "[[endpoint]]\nname = \"hole\"\naddress = \"{addr}\"\ntls = true\ntimeout = \"1500ms\"\n"
        ),
    );
    let detail = eventually(
        Duration::from_secs(30),
        "two reports from conn-slow",
        || async {
            let out = agg.cli(&pki, &["connector", "conn-slow", "--json"]);
            if !out.status.success() {
                return None;
            }
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            (v["latest"]["seq"].as_u64()? >= 2).then_some(v)
        },
    )
    .await;
    assert_eq!(detail["latest"]["endpoints"][0]["outcome"], "timed-out");
    let offset = detail["clock_offset_ms"].as_i64().expect("clock_offset_ms");
    assert!(
        offset.abs() < 100,
        "a 1.5 s check made the clock look {offset} ms off"
    );
    let table = agg.cli(&pki, &["connector", "conn-slow"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("clock offset"), "{text}");
}

#[tokio::test]
async fn a_clock_two_days_ahead_shows_as_clock_skew() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let agg = Aggregator::start(root.path(), &pki, "");
    let mut r = report(1, 1);
    r.collected_at_ms += 2 * DAY - 1_000;
    r.sent_at_ms = r.collected_at_ms + 1_000;
    let acks = send_reports(&agg, &pki.collector("ahead"), vec![r])
        .await
        .expect("stream");
    assert_eq!(acks[0].reason, "", "the report is stored, not refused");
    let v = agg.cli_json(&pki, &["connector", "ahead"]);
    assert_eq!(v["summary"]["active"], true, "{v}");
    let codes: Vec<&str> = v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter_map(|f| f["code"].as_str())
        .collect();
    assert_eq!(codes, ["clock-skew"], "{v}");
    let summary = v["findings"][0]["summary"].as_str().unwrap_or("");
    assert!(summary.contains("ahead of"), "{summary}");
    // A collector from before send times is still judged by its collection time.
    let mut old = report(1, 1);
    old.collected_at_ms += 2 * DAY;
    let acks = send_reports(&agg, &pki.collector("older"), vec![old])
        .await
        .expect("stream");
    assert!(acks[0].reason.contains("ahead of"), "{}", acks[0].reason);
}
