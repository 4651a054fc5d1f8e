//! Nothing acknowledged is lost and nothing is stored twice, through aggregator
//! crashes, collector crashes and outages. The checker is independent of the
//! aggregator's own bookkeeping: it compares each collector's spool state (its ledger
//! of what was assigned and acknowledged) with what the aggregator exports.
//!
//! The aggregator crash test scales with CONNWATCH_CRASH_COLLECTORS and
//! CONNWATCH_CRASH_KILLS and CONNWATCH_CRASH_INTERVAL (defaults 12, 5 and 100ms here;
//! `scripts/soak` runs 100 collectors at 500ms through 20 kills).

use connwatch_tests::{Aggregator, Collector, Pki, SpoolState, eventually, stored};
use rand::Rng;
use std::time::Duration;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Every seq the collector assigned is stored exactly once, in its epoch, with no
/// gaps: the collector is drained (acked == last) and the store holds 1..=last.
fn assert_ledger_matches(name: &str, state: SpoolState, rows: &[(u64, u64)]) {
    assert_eq!(state.dropped, 0, "{name}: nothing was dropped");
    assert_eq!(
        state.acked_seq, state.last_seq,
        "{name}: the collector drained its spool"
    );
    assert!(state.last_seq > 0, "{name}: it reported");
    let want: Vec<(u64, u64)> = (1..=state.last_seq).map(|s| (state.epoch, s)).collect();
    if rows != want.as_slice() {
        let missing: Vec<_> = want.iter().filter(|w| !rows.contains(w)).take(10).collect();
        let mut seen = std::collections::HashSet::new();
        let dups: Vec<_> = rows.iter().filter(|r| !seen.insert(**r)).take(10).collect();
        panic!(
            "{name}: {} stored vs {} assigned; missing {missing:?}; duplicates {dups:?}",
            rows.len(),
            want.len()
        );
    }
}

/// Waits until the aggregator has caught up with each collector, then stops them
/// (SIGTERM: they deliver what they hold) and checks every ledger.
async fn drain_and_check(agg: &Aggregator, pki: &Pki, collectors: &mut [(String, Collector)]) {
    let budget = Duration::from_secs(60) + Duration::from_millis(500) * collectors.len() as u32;
    for (name, c) in collectors.iter() {
        eventually(budget, &format!("{name} to catch up"), || async {
            let last = c.spool_state().last_seq;
            let rows = stored(agg, pki, name);
            (rows.len() as u64 + 2 >= last && last > 0).then_some(())
        })
        .await;
    }
    for (_, c) in collectors.iter_mut() {
        c.terminate();
    }
    let mut total = 0;
    for (name, c) in collectors.iter() {
        let state = c.spool_state();
        assert_ledger_matches(name, state, &stored(agg, pki, name));
        total += state.last_seq;
    }
    eprintln!(
        "{} collectors, {total} reports: each stored exactly once, no gaps, ledgers match",
        collectors.len()
    );
}

#[tokio::test]
async fn acked_reports_survive_repeated_aggregator_kills() {
    let n = env_or("CONNWATCH_CRASH_COLLECTORS", 12);
    let kills = env_or("CONNWATCH_CRASH_KILLS", 5);
    let interval = std::env::var("CONNWATCH_CRASH_INTERVAL").unwrap_or_else(|_| "100ms".into());
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let mut agg = Aggregator::start(root.path(), &pki, "");
    let mut collectors: Vec<(String, Collector)> = (0..n)
        .map(|i| {
            let name = format!("crash-{i:03}");
            let tls = pki.collector(&name);
            let c = Collector::start_with(root.path(), &agg, &tls, &interval, "");
            (name, c)
        })
        .collect();
    for k in 0..kills {
        let wait = rand::rng().random_range(300..1200);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        agg.kill();
        // Down for a moment while the collectors keep spooling.
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(50..400))).await;
        agg.restart();
        eprintln!("kill {}/{kills} after {wait} ms: the store reopened", k + 1);
    }
    drain_and_check(&agg, &pki, &mut collectors).await;
    assert!(
        !agg.log().contains("panicked"),
        "the aggregator panicked:\n{}",
        agg.log()
    );
}

#[tokio::test]
async fn a_collector_killed_mid_send_leaves_no_gaps_and_no_duplicates() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let agg = Aggregator::start(root.path(), &pki, "");
    let tls = pki.collector("flaky");
    let mut c = Collector::start_with(root.path(), &agg, &tls, "50ms", "");
    let epoch = eventually(Duration::from_secs(10), "a first spool state", || async {
        let s = c.spool_state();
        (s.epoch != 0).then_some(s.epoch)
    })
    .await;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(50..300))).await;
        c.kill();
        c.restart();
    }
    let mut all = vec![("flaky".to_string(), c)];
    drain_and_check(&agg, &pki, &mut all).await;
    assert_eq!(
        all[0].1.spool_state().epoch,
        epoch,
        "the epoch survived 20 kills"
    );
}

#[tokio::test]
async fn an_outage_is_bridged_in_order_and_an_overflow_is_counted() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let mut agg = Aggregator::start(root.path(), &pki, "");
    let steady = Collector::start_with(root.path(), &agg, &pki.collector("steady"), "50ms", "");
    let mut small = Collector::start_with(
        root.path(),
        &agg,
        &pki.collector("small"),
        "20ms",
        "max_kb = 8",
    );
    eventually(Duration::from_secs(10), "both to report", || async {
        (!stored(&agg, &pki, "steady").is_empty() && !stored(&agg, &pki, "small").is_empty())
            .then_some(())
    })
    .await;
    agg.kill();
    let before = steady.spool_state().last_seq;
    // The small spool holds about 25 reports; 20 ms cycles overflow it in under a second.
    let overflowed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if small.spool_state().dropped > 0 && steady.spool_state().last_seq > before + 20 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        overflowed.is_ok(),
        "the small spool did not overflow: {:?}, steady {:?} (from {before})\n{}",
        small.spool_state(),
        steady.spool_state(),
        steady.log()
    );
    agg.restart();
    let mut all = vec![("steady".to_string(), steady)];
    drain_and_check(&agg, &pki, &mut all).await;

    // Order: the backlog arrived oldest first.
    let out = agg.cli_json(&pki, &["history", "steady", "--limit", "100000"]);
    let entries = out["entries"].as_array().expect("entries");
    let by_arrival: Vec<(i64, u64)> = entries
        .iter()
        .map(|e| {
            (
                e["received_ms"].as_i64().unwrap_or(0),
                e["seq"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert!(
        by_arrival.windows(2).all(|w| w[0].0 <= w[1].0),
        "reports were received in seq order: {by_arrival:?}"
    );

    // The overflow is counted by the collector and visible at the aggregator.
    let dropped = eventually(
        Duration::from_secs(20),
        "the drop count to reach the aggregator",
        || async {
            let d = agg.cli_json(&pki, &["connector", "small"]);
            let n = d["latest"]["dropped_reports"].as_u64().unwrap_or(0);
            (n > 0).then_some(n)
        },
    )
    .await;
    small.terminate();
    assert!(dropped <= small.spool_state().dropped);
}
