//! Reports flow over mTLS and are acked once durable; acked reports survive a crash;
//! resends are acked without being stored twice.

use connwatch_shared::wire::AckOutcome;
use connwatch_tests::{Aggregator, Pki, report, send_reports};

fn outcomes(acks: &[connwatch_shared::wire::Ack]) -> Vec<(u64, i32)> {
    acks.iter().map(|a| (a.seq, a.outcome)).collect()
}

#[tokio::test]
async fn reports_are_acked_and_survive_a_kill_and_resends_are_not_stored_twice() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let mut agg = Aggregator::start(root.path(), &pki, "");
    let alpha = pki.collector("alpha");

    let acks = send_reports(&agg, &alpha, (1..=5).map(|s| report(42, s)).collect())
        .await
        .expect("stream");
    let stored = AckOutcome::Stored as i32;
    assert_eq!(
        outcomes(&acks),
        (1..=5).map(|s| (s, stored)).collect::<Vec<_>>()
    );

    // SIGKILL: no graceful shutdown, no final flush. Acked means durable.
    agg.kill();
    agg.restart();
    let seqs = agg.history_seqs(&pki, "alpha");
    assert_eq!(
        seqs,
        [1, 2, 3, 4, 5],
        "every acked report is there after a kill"
    );

    // Resend 4 and 5 (as a reconnecting collector does) plus a new 6.
    let acks = send_reports(&agg, &alpha, (4..=6).map(|s| report(42, s)).collect())
        .await
        .expect("stream");
    let dup = AckOutcome::Duplicate as i32;
    assert_eq!(outcomes(&acks), [(4, dup), (5, dup), (6, stored)]);
    let history = agg.cli_json(&pki, &["history", "alpha"]);
    assert_eq!(
        history["entries"].as_array().expect("entries").len(),
        6,
        "resends are not stored twice"
    );

    // A new epoch (a collector that lost its state) starts again at 1 and is stored.
    let acks = send_reports(&agg, &alpha, vec![report(43, 1)])
        .await
        .expect("stream");
    assert_eq!(outcomes(&acks), [(1, stored)]);
}

#[tokio::test]
async fn invalid_reports_are_rejected_with_a_reason_and_valid_ones_still_flow() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let agg = Aggregator::start(root.path(), &pki, "");
    let beta = pki.collector("beta");
    let mut future = report(1, 2);
    future.collected_at_ms += 3 * 86_400_000;
    let mut bad_group = report(1, 3);
    bad_group.group = "not a group".into();
    let acks = send_reports(
        &agg,
        &beta,
        vec![report(1, 1), future, bad_group, report(1, 4)],
    )
    .await
    .expect("stream");
    let rejected = AckOutcome::Rejected as i32;
    let stored = AckOutcome::Stored as i32;
    assert_eq!(
        outcomes(&acks),
        [(1, stored), (2, rejected), (3, rejected), (4, stored)]
    );
    assert!(acks[1].reason.contains("clock"), "{}", acks[1].reason);
    assert!(acks[2].reason.contains("group"), "{}", acks[2].reason);
    let history = agg.cli_json(&pki, &["history", "beta"]);
    assert_eq!(history["entries"].as_array().expect("entries").len(), 2);
}

#[tokio::test]
async fn oversized_messages_are_refused_and_nothing_stored_is_lost() {
    let root = tempfile::tempdir().expect("tempdir");
    let pki = Pki::init(root.path());
    let agg = Aggregator::start(root.path(), &pki, "");
    let gamma = pki.collector("gamma");
    send_reports(&agg, &gamma, vec![report(1, 1)])
        .await
        .expect("first report");
    let mut huge = report(1, 2);
    huge.collector_version = "x".repeat(2 << 20);
    let err = send_reports(&agg, &gamma, vec![huge])
        .await
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err:?}");
    let history = agg.cli_json(&pki, &["history", "gamma"]);
    assert_eq!(history["entries"].as_array().expect("entries").len(), 1);
}
