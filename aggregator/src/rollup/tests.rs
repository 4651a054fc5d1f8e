//! The rollup must answer exactly what a full evaluation answers, whatever the order of
//! reports and the passing of time.

use super::*;
use crate::config::{GroupConfig, Thresholds};
use crate::store::StoredConnector;
use connwatch_shared::finding::{Code, Scope};
use connwatch_shared::wire::{
    ConnectOutcome, EndpointCheck, LogSignature, Report, ServiceRole, ServiceState, ServiceStatus,
    TrustCertificate, VersionInfo,
};
use proptest::prelude::*;
use std::time::Duration;

const START: i64 = 1_800_000_000_000;
const DAY: i64 = 86_400_000;

#[derive(Debug, Clone)]
enum Op {
    Report {
        connector: u8,
        group: u8,
        version: u8,
        endpoint_ok: bool,
        running: bool,
        cert_in: i64,
        skew_ms: i64,
        /// A known error the report carries: 0 none, else one of two signatures.
        logs: u8,
    },
    Wait(i64),
}

fn op() -> impl Strategy<Value = Op> {
    let report = (
        0u8..10,
        0u8..4,
        0u8..3,
        any::<bool>(),
        prop::bool::weighted(0.8),
        prop_oneof![
            Just(-2 * DAY),
            Just(3 * DAY + 1_500),
            (7 * DAY - 5_000)..(7 * DAY + 5_000),
            (30 * DAY - 90_000)..(30 * DAY + 90_000),
            Just(200 * DAY),
        ],
        prop_oneof![Just(0i64), Just(400_000)],
        prop_oneof![3 => Just(0u8), 1 => 1u8..3],
    )
        .prop_map(
            |(connector, group, version, endpoint_ok, running, cert_in, skew_ms, logs)| {
                Op::Report {
                    connector,
                    group,
                    version,
                    endpoint_ok,
                    running,
                    cert_in,
                    skew_ms,
                    logs,
                }
            },
        );
    let wait = prop_oneof![
        Just(1i64),
        1i64..2_000,
        Just(59_000),
        Just(60_000),
        Just(91_000),
        1_000i64..4_000_000,
        Just(DAY),
        Just(11 * DAY),
    ]
    .prop_map(Op::Wait);
    prop_oneof![3 => report, 2 => wait]
}

fn entry(op: &Op, now: i64, previous: Option<&StoredConnector>) -> StoredConnector {
    let Op::Report {
        group,
        version,
        endpoint_ok,
        running,
        cert_in,
        skew_ms,
        logs,
        ..
    } = op
    else {
        unreachable!("only reports make entries")
    };
    let outcome = if *endpoint_ok {
        ConnectOutcome::Ok
    } else {
        ConnectOutcome::Refused
    };
    let state = if *running {
        ServiceState::Running
    } else {
        ServiceState::Stopped
    };
    let report = Report {
        collected_at_ms: now - skew_ms,
        group: format!("g{group}"),
        services: vec![ServiceStatus {
            name: "WAPCSvc".into(),
            role: ServiceRole::Connector as i32,
            state: state as i32,
            ..Default::default()
        }],
        trust_certs: vec![TrustCertificate {
            source: "trust.pem".into(),
            issuer: "CN=connectorregistrationca.msappproxy.net".into(),
            found: true,
            thumbprint_matched: true,
            not_after_ms: now + cert_in,
            ..Default::default()
        }],
        endpoints: vec![EndpointCheck {
            name: "svc".into(),
            address: "a:443".into(),
            required: true,
            outcome: outcome as i32,
            ..Default::default()
        }],
        version: Some(VersionInfo {
            connector_version: format!("1.5.{version}"),
            ..Default::default()
        }),
        log_signatures: match logs {
            0 => vec![],
            n => vec![LogSignature {
                id: ["kerberos-13019", "connector-unauthorized"][usize::from(n % 2)].into(),
                count: 1,
                last_line: "x".into(),
            }],
        },
        ..Default::default()
    };
    // As the writer remembers them; the declared config's shorter window for g0 is
    // the rules' business, so the quiet spells of both windows are crossed.
    let logged = rules::record_logged(
        previous.map_or(&[][..], |p| &p.logged),
        &report,
        now,
        Duration::from_secs(3600),
    );
    StoredConnector {
        group: report.group.clone(),
        first_seen_ms: previous.map_or(now, |p| p.first_seen_ms),
        last_seen_ms: now,
        epoch: 1,
        last_seq: previous.map_or(1, |p| p.last_seq + 1),
        latest: Some(report),
        clock_offset_ms: *skew_ms,
        recent_offsets_ms: vec![*skew_ms],
        logged,
    }
}

/// Findings whose time of observation is the time of evaluation cannot match to the
/// millisecond between a kept and a fresh evaluation; everything else must.
fn clear(f: &mut Finding) {
    if f.code == Code::Inactive || f.scope == Scope::Group {
        f.observed_at_ms = 0;
    }
}

fn normalised_findings(mut findings: Vec<Finding>) -> String {
    findings.iter_mut().for_each(clear);
    format!("{findings:#?}")
}

fn normalised(mut eval: rules::Evaluation) -> String {
    for c in &mut eval.connectors {
        c.findings.iter_mut().for_each(clear);
    }
    for g in &mut eval.groups {
        g.findings.iter_mut().for_each(clear);
    }
    format!("{eval:#?}")
}

fn configs() -> Vec<Arc<RulesConfig>> {
    let mut declared = RulesConfig {
        retire_after: Duration::from_secs(5 * 86_400),
        ..RulesConfig::default()
    };
    declared.groups = vec![
        GroupConfig {
            name: "g0".into(),
            thresholds: Thresholds {
                inactive_after: Duration::from_secs(30),
                cert_warning: Duration::from_secs(10 * 86_400),
                min_healthy: 1,
                log_quiet_after: Duration::from_secs(20),
                ..Thresholds::default()
            },
        },
        GroupConfig {
            name: "empty".into(),
            thresholds: Thresholds::default(),
        },
    ];
    // Every certificate gets an issuer finding (which counts its days left whatever
    // the window) and connectors stay active across days.
    let slow = RulesConfig {
        defaults: Thresholds {
            expected_cert_issuers: vec!["nobody".into()],
            inactive_after: Duration::from_secs(3 * 86_400),
            ..Thresholds::default()
        },
        ..RulesConfig::default()
    };
    // The aggregator started at +100 s, after a downtime from +40 s, with a minute's
    // grace: reports before +100 s are those it loaded from its store.
    let restarted = RulesConfig {
        startup: crate::config::Startup {
            stopped_ms: START + 40_000,
            started_ms: START + 100_000,
            grace: Duration::from_secs(60),
        },
        ..declared.clone()
    };
    vec![
        Arc::new(RulesConfig::default()),
        Arc::new(declared),
        Arc::new(slow),
        Arc::new(restarted),
    ]
}

fn run(ops: &[Op], cfg: &Arc<RulesConfig>) -> Result<(), TestCaseError> {
    let mut fleet = Fleet::default();
    let mut rollup = Rollup::default();
    let mut now = START;
    // Reports not yet in the fleet, and their evaluations worked out ahead.
    let mut pending: Vec<(String, StoredConnector)> = Vec::new();
    let mut prepared = HashMap::new();
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Wait(ms) => now += ms,
            Op::Report { connector, .. } => {
                let id = format!("c{connector}");
                let before = pending
                    .iter()
                    .rev()
                    .find(|(p, _)| *p == id)
                    .map(|(_, e)| e)
                    .or_else(|| fleet.connectors.get(&id));
                let e = entry(op, now, before);
                // As the writer does: evaluated ahead with the group's context of the
                // moment, put in place later (every other report, after the next
                // step: the time and the group may have moved on meanwhile).
                let ctx = rollup.contexts().get(&e.group).cloned().unwrap_or_default();
                prepared.insert(id.clone(), Prepared::new(&id, &e, now, cfg, &ctx));
                pending.push((id, e));
            }
        }
        if step % 2 == 0 || step + 1 == ops.len() {
            for (id, e) in pending.drain(..) {
                fleet.connectors.insert(id.clone(), e);
                rollup.mark(&id);
            }
        }
        rollup.refresh_prepared(&fleet, now, cfg, &mut prepared);
        let reference = rules::evaluate(&fleet.connectors, now, cfg);
        let all = reference.all_findings();
        let (top, counts) = rollup.top_findings(0);
        prop_assert_eq!(normalised_findings(top), normalised_findings(all.clone()));
        let critical = all
            .iter()
            .filter(|f| f.severity == Severity::Critical)
            .count();
        let warning = all
            .iter()
            .filter(|f| f.severity == Severity::Warning)
            .count();
        prop_assert_eq!(
            (counts.total, counts.critical, counts.warning),
            (all.len(), critical, warning)
        );
        prop_assert_eq!(rollup.top_findings(2).0.len(), all.len().min(2));
        // Listing rows are kept encoded: each must be what the row would be now.
        for (eval, row) in rollup.rows() {
            let fresh = crate::query::summary_of(eval, fleet.connectors.get(&eval.id));
            let kept = connwatch_shared::wire::ConnectorSummary::decode(row.as_ref());
            prop_assert_eq!(
                kept.ok(),
                Some(fresh),
                "row of {} at step {}",
                &eval.id,
                step
            );
        }
        let kept = normalised(rollup.to_evaluation());
        let fresh = normalised(reference);
        if kept != fresh {
            let first = kept
                .lines()
                .zip(fresh.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            let around = |s: &str| {
                s.lines()
                    .skip(first.saturating_sub(12))
                    .take(16)
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            return Err(TestCaseError::fail(format!(
                "after step {step} ({op:?}) at +{} ms the kept evaluation differs at line {first}:\nkept:\n{}\nfresh:\n{}",
                now - START,
                around(&kept),
                around(&fresh)
            )));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn kept_evaluation_matches_a_full_one(ops in prop::collection::vec(op(), 1..60)) {
        for cfg in configs() {
            run(&ops, &cfg)?;
        }
    }
}

/// A report of a healthy connector in group 0, on version 0.
fn healthy() -> Op {
    Op::Report {
        connector: 0,
        group: 0,
        version: 0,
        endpoint_ok: true,
        running: true,
        cert_in: 200 * DAY,
        skew_ms: 0,
        logs: 0,
    }
}

#[test]
fn time_alone_turns_a_connector_inactive_and_then_retires_it() {
    let cfg = Arc::new(RulesConfig::default());
    let report = healthy();
    let mut fleet = Fleet::default();
    fleet
        .connectors
        .insert("c0".into(), entry(&report, START, None));
    let mut rollup = Rollup::default();
    rollup.refresh(&fleet, START, &cfg);
    assert!(rollup.connector("c0").is_some_and(|c| c.active));
    rollup.refresh(&fleet, START + 90_000, &cfg);
    assert!(rollup.connector("c0").is_some_and(|c| c.active));
    rollup.refresh(&fleet, START + 90_001, &cfg);
    let c = rollup.connector("c0").expect("still live");
    assert!(!c.active);
    assert_eq!(c.findings[0].summary, "no report for 1m");
    rollup.refresh(&fleet, START + 10 * DAY + 1, &cfg);
    assert!(rollup.connector("c0").is_none());
    assert_eq!(rollup.groups().count(), 0);
}

#[test]
fn time_alone_clears_a_logged_error_once_it_has_been_quiet() {
    let cfg = Arc::new(RulesConfig {
        defaults: Thresholds {
            inactive_after: Duration::from_secs(3 * 3600),
            ..Thresholds::default()
        },
        ..RulesConfig::default()
    });
    let report = Op::Report {
        connector: 0,
        group: 0,
        version: 0,
        endpoint_ok: true,
        running: true,
        cert_in: 200 * DAY,
        skew_ms: 0,
        logs: 1,
    };
    let mut fleet = Fleet::default();
    fleet
        .connectors
        .insert("c0".into(), entry(&report, START, None));
    let mut rollup = Rollup::default();
    let logged = |rollup: &Rollup| {
        rollup
            .connector("c0")
            .is_some_and(|c| c.findings.iter().any(|f| f.code == Code::KnownErrorLogged))
    };
    rollup.refresh(&fleet, START, &cfg);
    assert!(logged(&rollup));
    rollup.refresh(&fleet, START + 3_600_000, &cfg);
    assert!(logged(&rollup), "kept through the quiet window");
    rollup.refresh(&fleet, START + 3_600_001, &cfg);
    assert!(!logged(&rollup), "cleared when it ends, with no new report");
}

#[test]
fn top_findings_are_the_most_urgent_and_counted_in_full() {
    let cfg = Arc::new(RulesConfig::default());
    let mut fleet = Fleet::default();
    for (i, running) in [true, false, true, false, true].into_iter().enumerate() {
        let report = Op::Report {
            connector: 0,
            group: 0,
            version: 0,
            endpoint_ok: i != 2,
            running,
            cert_in: 200 * DAY,
            skew_ms: 0,
            logs: 0,
        };
        fleet
            .connectors
            .insert(format!("c{i}"), entry(&report, START, None));
    }
    let mut rollup = Rollup::default();
    rollup.refresh(&fleet, START, &cfg);
    let (all, counts) = rollup.top_findings(0);
    let (top, same) = rollup.top_findings(3);
    assert_eq!(counts, same);
    assert_eq!(counts.total, all.len());
    // Two stopped services and one refused endpoint; the split reachability warns.
    assert_eq!((counts.critical, counts.warning), (3, 1), "{all:#?}");
    assert_eq!(top, all[..3].to_vec());
    assert!(top.iter().all(|f| f.severity == Severity::Critical));
    assert_eq!(all[3].code, Code::GroupSplitReachability);
}

#[test]
fn an_evaluation_prepared_for_a_newer_entry_is_not_used_for_the_old_one() {
    let cfg = Arc::new(RulesConfig::default());
    let report = healthy();
    let mut fleet = Fleet::default();
    let old = entry(&report, START, None);
    fleet.connectors.insert("c0".into(), old.clone());
    // A second member on the same version keeps the group's context as it was.
    fleet
        .connectors
        .insert("c1".into(), entry(&report, START + 50_000, None));
    let mut rollup = Rollup::default();
    rollup.refresh(&fleet, START + 50_000, &cfg);
    // A newer report is evaluated ahead, but the old entry turns inactive before the
    // newer one is in the fleet.
    let later = START + 90_001;
    let newer = entry(&report, later, Some(&old));
    let ctx = rollup
        .contexts()
        .get(&newer.group)
        .cloned()
        .unwrap_or_default();
    let mut prepared = HashMap::from([(
        "c0".to_string(),
        Prepared::new("c0", &newer, later, &cfg, &ctx),
    )]);
    rollup.refresh_prepared(&fleet, later, &cfg, &mut prepared);
    assert!(rollup.connector("c0").is_some_and(|c| !c.active));
}

#[test]
fn the_generation_never_goes_back_through_a_reset() {
    let cfg = Arc::new(RulesConfig::default());
    let mut fleet = Fleet::default();
    fleet
        .connectors
        .insert("c0".into(), entry(&healthy(), START, None));
    let mut rollup = Rollup::default();
    rollup.refresh(&fleet, START, &cfg);
    let before = rollup.generation();
    // A published view names its generation: after a reset and a rebuild the
    // generation must differ, or the old view would go on answering.
    rollup.reset();
    rollup.refresh(&fleet, START, &cfg);
    assert!(rollup.generation() > before);
}
