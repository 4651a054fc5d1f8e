//! Table tests for the rules, boundaries included.

use super::*;
use crate::config::GroupConfig;
use connwatch_shared::wire::{EndpointCheck, ProbeError, ServiceStatus, TrustCertificate};

const NOW: i64 = 1_800_000_000_000;

fn entry(report: Report, last_seen_ms: i64) -> StoredConnector {
    StoredConnector {
        group: "eu".into(),
        first_seen_ms: NOW - DAY_MS,
        last_seen_ms,
        epoch: 1,
        last_seq: report.seq,
        latest: Some(report),
        clock_offset_ms: 0,
    }
}

fn healthy_report() -> Report {
    Report {
        seq: 1,
        collected_at_ms: NOW,
        group: "eu".into(),
        services: vec![ServiceStatus {
            name: "WAPCSvc".into(),
            role: ServiceRole::Connector as i32,
            state: ServiceState::Running as i32,
            ..Default::default()
        }],
        trust_certs: vec![cert(NOW + 200 * DAY_MS)],
        endpoints: vec![EndpointCheck {
            name: "svc".into(),
            address: "a:443".into(),
            required: true,
            outcome: ConnectOutcome::Ok as i32,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn cert(not_after_ms: i64) -> TrustCertificate {
    TrustCertificate {
        source: "trust.pem".into(),
        found: true,
        thumbprint_matched: true,
        not_after_ms,
        ..Default::default()
    }
}

fn codes(eval: &ConnectorEval) -> Vec<(Code, Severity)> {
    eval.findings.iter().map(|f| (f.code, f.severity)).collect()
}

#[test]
fn connector_rules_table() {
    let cfg = RulesConfig::default();
    let inactive = ms(cfg.inactive_after);
    let warn = ms(cfg.cert_warning);
    let crit = ms(cfg.cert_critical);
    type Case = (
        &'static str,
        Box<dyn Fn(&mut Report)>,
        i64,
        Vec<(Code, Severity)>,
    );
    let cases: Vec<Case> = vec![
        ("healthy", Box::new(|_| {}), NOW, vec![]),
        (
            "seen exactly inactive_after ago",
            Box::new(|_| {}),
            NOW - inactive,
            vec![],
        ),
        (
            "seen just over inactive_after ago",
            Box::new(|_| {}),
            NOW - inactive - 1,
            vec![(Code::Inactive, Severity::Warning)],
        ),
        (
            "cert exactly at the warning window",
            Box::new(move |r| r.trust_certs = vec![cert(NOW + warn)]),
            NOW,
            vec![(Code::TrustCertExpiring, Severity::Warning)],
        ),
        (
            "cert just outside the warning window",
            Box::new(move |r| r.trust_certs = vec![cert(NOW + warn + 1)]),
            NOW,
            vec![],
        ),
        (
            "cert exactly at the critical window",
            Box::new(move |r| r.trust_certs = vec![cert(NOW + crit)]),
            NOW,
            vec![(Code::TrustCertExpiring, Severity::Critical)],
        ),
        (
            "cert expiring at this instant",
            Box::new(|r| r.trust_certs = vec![cert(NOW)]),
            NOW,
            vec![(Code::TrustCertExpired, Severity::Critical)],
        ),
        (
            "cert missing",
            Box::new(|r| {
                r.trust_certs = vec![TrustCertificate {
                    source: "x".into(),
                    error: "cannot read x".into(),
                    ..Default::default()
                }]
            }),
            NOW,
            vec![(Code::TrustCertMissing, Severity::Critical)],
        ),
        (
            "thumbprint mismatch",
            Box::new(|r| r.trust_certs[0].thumbprint_matched = false),
            NOW,
            vec![(Code::TrustCertMissing, Severity::Critical)],
        ),
        (
            "connector service stopped",
            Box::new(|r| r.services[0].state = ServiceState::Stopped as i32),
            NOW,
            vec![(Code::ServiceNotRunning, Severity::Critical)],
        ),
        (
            "updater not installed",
            Box::new(|r| {
                r.services.push(ServiceStatus {
                    name: "WAPCUpdaterSvc".into(),
                    role: ServiceRole::Updater as i32,
                    state: ServiceState::NotInstalled as i32,
                    ..Default::default()
                })
            }),
            NOW,
            vec![(Code::UpdaterNotRunning, Severity::Warning)],
        ),
        (
            "required endpoint refused",
            Box::new(|r| r.endpoints[0].outcome = ConnectOutcome::Refused as i32),
            NOW,
            vec![(Code::EndpointUnreachable, Severity::Critical)],
        ),
        (
            "optional endpoint timed out",
            Box::new(|r| {
                r.endpoints[0].outcome = ConnectOutcome::TimedOut as i32;
                r.endpoints[0].required = false;
            }),
            NOW,
            vec![(Code::EndpointUnreachable, Severity::Warning)],
        ),
        (
            "probe failed",
            Box::new(|r| {
                r.probe_errors = vec![ProbeError {
                    probe: "host".into(),
                    reason: "x".into(),
                }]
            }),
            NOW,
            vec![(Code::ProbeFailed, Severity::Warning)],
        ),
        (
            "inactive: stale facts are not repeated, expiry still counts",
            Box::new(move |r| {
                r.services[0].state = ServiceState::Stopped as i32;
                r.trust_certs = vec![cert(NOW + crit)];
            }),
            NOW - inactive - 1,
            vec![
                (Code::TrustCertExpiring, Severity::Critical),
                (Code::Inactive, Severity::Warning),
            ],
        ),
    ];
    for (name, mutate, last_seen, want) in cases {
        let mut r = healthy_report();
        mutate(&mut r);
        let eval = evaluate_connector("c1", &entry(r, last_seen), NOW, &cfg);
        assert_eq!(codes(&eval), want, "{name}");
        let want_health = Health::from_severities(want.iter().map(|(_, s)| *s));
        assert_eq!(eval.health, want_health, "{name}");
        for f in &eval.findings {
            assert!(
                !f.remediation.is_empty() && !f.evidence.is_empty(),
                "{name}"
            );
        }
    }
}

#[test]
fn retired_connectors_leave_the_live_views() {
    let cfg = RulesConfig::default();
    let retire = ms(cfg.retire_after);
    let mut fleet = BTreeMap::new();
    fleet.insert("old".to_string(), entry(healthy_report(), NOW - retire - 1));
    fleet.insert("edge".to_string(), entry(healthy_report(), NOW - retire));
    let eval = evaluate(&fleet, NOW, &cfg);
    let ids: Vec<&str> = eval.connectors.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["edge"]);
}

#[test]
fn group_rules_table() {
    let mut cfg = RulesConfig::default();
    cfg.groups.push(GroupConfig {
        name: "empty".into(),
        min_healthy: 1,
    });
    let stopped = || {
        let mut r = healthy_report();
        r.services[0].state = ServiceState::Stopped as i32;
        r
    };
    // (members as (report, last_seen)), expected group codes
    type Case = (&'static str, Vec<(Report, i64)>, Vec<Code>, u32);
    let cases: Vec<Case> = vec![
        (
            "two healthy",
            vec![(healthy_report(), NOW), (healthy_report(), NOW)],
            vec![],
            2,
        ),
        (
            "one healthy",
            vec![(healthy_report(), NOW), (stopped(), NOW)],
            vec![Code::GroupNoRedundancy],
            1,
        ),
        (
            "none healthy",
            vec![(stopped(), NOW), (stopped(), NOW)],
            vec![Code::GroupDown],
            0,
        ),
        (
            "inactive members do not count",
            vec![
                (healthy_report(), NOW - DAY_MS),
                (healthy_report(), NOW - DAY_MS),
            ],
            vec![Code::GroupDown],
            0,
        ),
    ];
    for (name, members, want, want_healthy) in cases {
        let fleet: BTreeMap<String, StoredConnector> = members
            .into_iter()
            .enumerate()
            .map(|(i, (r, seen))| (format!("c{i}"), entry(r, seen)))
            .collect();
        let eval = evaluate(&fleet, NOW, &cfg);
        let eu = eval
            .groups
            .iter()
            .find(|g| g.name == "eu")
            .expect("group eu");
        let got: Vec<Code> = eu.findings.iter().map(|f| f.code).collect();
        assert_eq!(got, want, "{name}");
        assert_eq!(eu.healthy, want_healthy, "{name}");
        let empty = eval
            .groups
            .iter()
            .find(|g| g.name == "empty")
            .expect("declared group");
        assert_eq!(
            empty.findings[0].code,
            Code::GroupDown,
            "a declared group with no members is down"
        );
    }
}

#[test]
fn group_worst_finding_comes_from_members_too() {
    let cfg = RulesConfig::default();
    let mut r = healthy_report();
    r.trust_certs = vec![cert(NOW + 10 * DAY_MS)];
    let mut fleet = BTreeMap::new();
    fleet.insert("a".to_string(), entry(r, NOW));
    fleet.insert("b".to_string(), entry(healthy_report(), NOW));
    let eval = evaluate(&fleet, NOW, &cfg);
    assert_eq!(eval.groups[0].worst, Some(Code::TrustCertExpiring));
    assert_eq!(eval.groups[0].health, Health::Warning);
    assert_eq!(eval.all_findings().len(), 1);
}
