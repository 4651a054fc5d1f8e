//! The first minute of an aggregator pages nobody: a healthy fleet raises no alert
//! whether the aggregator starts before or after its collectors, a declared group
//! nobody has reported for yet is empty rather than down, and after the aggregator was
//! down for longer than `inactive_after` no connector is called inactive while its
//! collector reconnects.

use connwatch_tests::peers::http;
use connwatch_tests::{Aggregator, Collector, Pki, eventually};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

const FLEET: usize = 6;
const WAIT: Duration = Duration::from_secs(30);
/// The start-up grace of the first two tests.
const GRACE: Duration = Duration::from_secs(5);

/// A declared group `test`, alerts evaluated every 100 ms and `/metrics` on; `rules`
/// are keys of `[rules]`.
fn config(rules: &str) -> String {
    format!(
        "[rules]\n{rules}\n[[group]]\nname = \"test\"\n[alert]\nevaluate_every = \"100ms\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n"
    )
}

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

/// Waits for `rounds` more alert evaluations, so what is asserted next was evaluated.
async fn settle(agg: &Aggregator, rounds: u64) {
    let metrics = agg.metrics.expect("metrics address");
    let target = evaluations(metrics) + rounds;
    eventually(WAIT, "more alert evaluations", || async {
        (evaluations(metrics) >= target).then_some(())
    })
    .await;
}

/// Every alert `alerts --json` lists, as (code, subject, status): resolved ones too,
/// so an alert that fired and cleared in between is still seen.
fn alerts(agg: &Aggregator, pki: &Pki) -> Vec<(String, String, String)> {
    let listed = agg.cli_json(pki, &["alerts"]);
    listed["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .map(|a| {
            let s = |k: &str| a[k].as_str().unwrap_or("").to_string();
            (s("code"), s("subject"), s("status"))
        })
        .collect()
}

fn assert_quiet(agg: &Aggregator, pki: &Pki, when: &str) {
    assert_eq!(alerts(agg, pki), [], "alerts {when}");
    let log = agg.log();
    assert!(
        !log.contains("alert firing") && !log.contains("alert resolved"),
        "the log sink announced something {when}:\n{log}"
    );
}

/// The ids of the connectors that are active and have reported since `since_ms`.
fn active_since(agg: &Aggregator, pki: &Pki, since_ms: i64) -> usize {
    let list = agg.cli_json(pki, &["connectors"]);
    list.as_array()
        .map(|a| {
            a.iter()
                .filter(|c| c["active"] == true && c["last_seen_ms"].as_i64() >= Some(since_ms))
                .count()
        })
        .unwrap_or(0)
}

fn start_fleet(root: &Path, agg: &Aggregator, pki: &Pki) -> Vec<Collector> {
    (0..FLEET)
        .map(|i| Collector::start(root, agg, &pki.collector(&format!("conn-{i}")), ""))
        .collect()
}

/// How the group table names a group: (health, worst finding).
fn group_row(agg: &Aggregator, pki: &Pki) -> (String, String) {
    let groups = agg.cli_json(pki, &["groups"]);
    let g = groups
        .as_array()
        .and_then(|a| a.iter().find(|g| g["name"] == "test"))
        .cloned()
        .expect("the declared group is listed");
    let s = |k: &str| g[k].as_str().unwrap_or("").to_string();
    (s("health"), s("worst_finding"))
}

#[tokio::test]
async fn a_healthy_fleet_starting_after_its_aggregator_raises_no_alert() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let agg = Aggregator::start(root.path(), &pki, &config("startup_grace = \"5s\""));
    // The grace began before `start` returned, so it is over by then.
    let grace_over = tokio::time::Instant::now() + GRACE;
    settle(&agg, 5).await;
    assert_eq!(
        group_row(&agg, &pki),
        ("healthy".to_string(), "group-empty".to_string()),
        "a declared group nobody reported for is empty, not down"
    );
    assert_quiet(&agg, &pki, "before any collector reported");

    let _fleet = start_fleet(root.path(), &agg, &pki);
    eventually(WAIT, "the whole fleet active", || async {
        (active_since(&agg, &pki, 0) == FLEET).then_some(())
    })
    .await;
    settle(&agg, 5).await;
    assert_quiet(&agg, &pki, "while the fleet came up");
    // Outlive the grace (a real span of the aggregator's clock; what is left of it
    // once the fleet is up), then look again.
    tokio::time::sleep_until(grace_over).await;
    settle(&agg, 5).await;
    assert_eq!(active_since(&agg, &pki, 0), FLEET);
    assert_quiet(&agg, &pki, "after the start-up grace");
}

#[tokio::test]
async fn a_healthy_fleet_whose_aggregator_starts_last_raises_no_alert() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    // The collectors need the aggregator's address before it runs: take a port from a
    // first start, stop it and drop its store, so the real start below is a fresh one.
    let mut agg = Aggregator::start(root.path(), &pki, &config("startup_grace = \"5s\""));
    agg.terminate();
    std::fs::remove_dir_all(root.path().join("data")).expect("drop the store");
    std::fs::remove_file(root.path().join("aggregator.log")).expect("drop the log");
    let fleet = start_fleet(root.path(), &agg, &pki);
    eventually(
        WAIT,
        "every collector to fail to connect and back off",
        || async {
            fleet
                .iter()
                .all(|c| c.log().contains("uplink down"))
                .then_some(())
        },
    )
    .await;
    agg.restart();
    let grace_over = tokio::time::Instant::now() + GRACE;

    eventually(WAIT, "the whole fleet active", || async {
        (active_since(&agg, &pki, 0) == FLEET).then_some(())
    })
    .await;
    settle(&agg, 5).await;
    assert_quiet(&agg, &pki, "while the collectors reconnected");
    // Outlive the grace (a real span of the aggregator's clock; what is left of it
    // once the fleet is up), then look again.
    tokio::time::sleep_until(grace_over).await;
    settle(&agg, 5).await;
    assert_eq!(active_since(&agg, &pki, 0), FLEET);
    assert_quiet(&agg, &pki, "after the start-up grace");
}

#[tokio::test]
async fn the_aggregators_downtime_is_no_connectors_silence() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    // The default grace (60 s) covers the collectors' reconnects.
    let mut agg = Aggregator::start(root.path(), &pki, &config("inactive_after = \"2s\""));
    let _fleet = start_fleet(root.path(), &agg, &pki);
    eventually(WAIT, "the whole fleet active", || async {
        (active_since(&agg, &pki, 0) == FLEET).then_some(())
    })
    .await;
    settle(&agg, 3).await;
    assert_quiet(&agg, &pki, "before the restart");

    assert!(agg.terminate().success());
    // Down for twice inactive_after: the silence has to pass on the real clock, since
    // what is tested is that the process does not count it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    agg.restart();
    let restarted = connwatch_shared::time::now_ms();

    // From the first look until every collector is back, no connector may be called
    // inactive (the last reports are 4 s old, twice inactive_after).
    eventually(WAIT, "every collector back", || async {
        let inactive = agg.cli_json(&pki, &["findings", "--code", "inactive"]);
        assert_eq!(
            inactive.as_array().map(Vec::len),
            Some(0),
            "inactive while reconnecting: {inactive}"
        );
        (active_since(&agg, &pki, restarted) == FLEET).then_some(())
    })
    .await;
    settle(&agg, 5).await;
    assert_quiet(&agg, &pki, "once the collectors were back");
}
