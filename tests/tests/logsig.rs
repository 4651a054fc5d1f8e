//! Connector log errors end to end, with a real collector tailing a log file: a
//! finding stays while its error recurs and clears after a quiet window, history shows
//! the signatures each report carried, and a restarted collector does not report old
//! lines again.

use connwatch_tests::{Aggregator, Collector, Pki, eventually};
use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

fn append(path: &Path, line: &str) {
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .expect("open the log");
    writeln!(log, "{line}").expect("append");
}

/// The `known-error-logged` finding of `connector` for `signature`, if any.
fn logged_finding(detail: &Value, signature: &str) -> Option<Value> {
    detail["findings"]
        .as_array()?
        .iter()
        .find(|f| {
            f["code"] == "known-error-logged"
                && f["evidence"].as_array().is_some_and(|e| {
                    e.iter()
                        .any(|p| p["key"] == "signature" && p["value"] == signature)
                })
        })
        .cloned()
}

/// The connector's history: (seq, signature ids) per report, oldest first; empty
/// while the aggregator does not know the connector yet.
fn history(agg: &Aggregator, pki: &Pki, id: &str) -> Vec<(u64, Vec<String>)> {
    let out = agg.cli(pki, &["history", id, "--limit", "100000", "--json"]);
    if !out.status.success() {
        return Vec::new();
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["entries"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    let ids = e["log_signatures"]
                        .as_array()
                        .map(|l| {
                            l.iter()
                                .filter_map(|s| s["id"].as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default();
                    (e["seq"].as_u64().unwrap_or(0), ids)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn latest_seq(agg: &Aggregator, pki: &Pki, id: &str) -> Option<u64> {
    let out = agg.cli(pki, &["connector", id, "--json"]);
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v["latest"]["seq"].as_u64()
}

#[tokio::test]
async fn a_logged_error_stays_until_quiet_and_shows_in_history() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let agg = Aggregator::start(root.path(), &pki, "[rules]\nlog_quiet_after = \"3s\"\n");
    let log = root.path().join("connector.log");
    append(&log, "2026-01-01 10:00:00 Information Connector started");
    let tls = pki.collector("conn-l");
    let _collector = Collector::start(
        root.path(),
        &agg,
        &tls,
        &format!("[log]\nfile = \"{}\"\n", log.display()),
    );
    eventually(
        Duration::from_secs(15),
        "conn-l's first reports",
        || async { (latest_seq(&agg, &pki, "conn-l")? >= 2).then_some(()) },
    )
    .await;

    append(
        &log,
        "2026-01-01 10:01:00 Error InternalServerError: This corporate app can't be accessed right now. ConnectorError:Unauthorized.",
    );
    let (finding, seen_at) = eventually(
        Duration::from_secs(15),
        "the logged error's finding",
        || async {
            let v = agg.cli_json(&pki, &["connector", "conn-l"]);
            logged_finding(&v, "connector-unauthorized").map(|f| (f, Instant::now()))
        },
    )
    .await;
    let remedy = finding["remediation"].as_str().expect("remediation");
    assert!(remedy.contains("TLS inspection"), "{remedy}");

    // Later cycles carry nothing new, and the finding stays meanwhile.
    let (detail, seq) = eventually(Duration::from_secs(15), "two more cycles", || async {
        let v = agg.cli_json(&pki, &["connector", "conn-l"]);
        let seq = v["latest"]["seq"].as_u64()?;
        let quiet = v["latest"]["log_signatures"]
            .as_array()
            .is_none_or(|l| l.is_empty());
        (quiet && logged_finding(&v, "connector-unauthorized").is_some()).then_some((v, seq))
    })
    .await;
    assert!(
        seen_at.elapsed() < Duration::from_secs(3),
        "the finding must outlast the report that carried it: {detail}"
    );

    let cleared = eventually(Duration::from_secs(20), "the finding to clear", || async {
        let v = agg.cli_json(&pki, &["connector", "conn-l"]);
        logged_finding(&v, "connector-unauthorized")
            .is_none()
            .then_some(v)
    })
    .await;
    assert!(
        seen_at.elapsed() >= Duration::from_secs(2),
        "not before its quiet window"
    );
    assert_eq!(cleared["summary"]["active"], true, "still reporting");
    assert!(cleared["latest"]["seq"].as_u64() > Some(seq));

    let reports = history(&agg, &pki, "conn-l");
    let carrying: Vec<u64> = reports
        .iter()
        .filter(|(_, ids)| ids.iter().any(|i| i == "connector-unauthorized"))
        .map(|(seq, _)| *seq)
        .collect();
    assert_eq!(
        carrying.len(),
        1,
        "one report carried the line: {reports:?}"
    );
    let table = agg.cli(&pki, &["history", "conn-l"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("LOGGED"), "{text}");
    assert!(text.contains("connector-unauthorized x1"), "{text}");
}

#[tokio::test]
async fn a_restarted_collector_does_not_report_old_lines_again() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let agg = Aggregator::start(root.path(), &pki, "");
    let log = root.path().join("connector.log");
    append(
        &log,
        "2026-01-01 09:00:00 Error Connector re-registration failed: The Connector trust certificate expired.",
    );
    let tls = pki.collector("conn-r");
    let mut collector = Collector::start(
        root.path(),
        &agg,
        &tls,
        &format!("[log]\nfile = \"{}\"\n", log.display()),
    );
    // The first start reads the end of the log; a report after the one carrying the
    // line means that one was spooled and the position saved.
    let before = eventually(Duration::from_secs(15), "the old line reported", || async {
        let h = history(&agg, &pki, "conn-r");
        let at = h
            .iter()
            .position(|(_, ids)| ids.iter().any(|i| i == "trust-cert-expired"))?;
        (h.len() > at + 1).then_some(h)
    })
    .await;
    let last_before = before.last().map_or(0, |(seq, _)| *seq);

    collector.terminate();
    collector.restart();
    let after = eventually(
        Duration::from_secs(15),
        "reports after the restart",
        || async {
            let h = history(&agg, &pki, "conn-r");
            (h.iter().filter(|(seq, _)| *seq > last_before).count() >= 3).then_some(h)
        },
    )
    .await;
    for (seq, ids) in after.iter().filter(|(seq, _)| *seq > last_before) {
        assert!(
            ids.is_empty(),
            "report {seq} after the restart carries {ids:?}"
        );
    }

    append(
        &log,
        "2026-01-01 09:30:00 Error 13019 - Microsoft Entra ID cannot retrieve a Kerberos ticket on behalf of the user because of the following general API error.",
    );
    let h = eventually(Duration::from_secs(15), "the new line reported", || async {
        let h = history(&agg, &pki, "conn-r");
        h.iter()
            .any(|(_, ids)| ids.iter().any(|i| i == "kerberos-13019"))
            .then_some(h)
    })
    .await;
    let old_again = h
        .iter()
        .filter(|(seq, ids)| *seq > last_before && ids.iter().any(|i| i == "trust-cert-expired"))
        .count();
    assert_eq!(old_again, 0, "{h:?}");
}
