//! Table tests for the rules, boundaries included.

use super::*;
use crate::config::{GroupConfig, Thresholds};
use connwatch_shared::wire::{
    BackendCheck, EndpointCheck, LogSignature, PresentedCertificate, ProbeError, ProxySettings,
    ServiceStatus, TlsResult, TrustCertificate, VersionInfo,
};
use std::time::Duration;

const NOW: i64 = 1_800_000_000_000;

/// A connector's entry whose latest report arrived at `last_seen_ms`, with the errors
/// the report carries remembered as the writer does.
fn entry(report: Report, last_seen_ms: i64) -> StoredConnector {
    StoredConnector {
        group: "eu".into(),
        first_seen_ms: NOW - DAY_MS,
        last_seen_ms,
        epoch: 1,
        last_seq: report.seq,
        logged: record_logged(&[], &report, last_seen_ms, Duration::from_secs(3600)),
        latest: Some(report),
        clock_offset_ms: 0,
        recent_offsets_ms: vec![20, 15, 30],
    }
}

fn eval_one(e: &StoredConnector, cfg: &RulesConfig) -> ConnectorEval {
    evaluate_connector("c1", e, NOW, cfg, &GroupContext::default())
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
        issuer: "CN=connectorregistrationca.msappproxy.net".into(),
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
    let inactive = ms(cfg.defaults.inactive_after);
    let warn = ms(cfg.defaults.cert_warning);
    let crit = ms(cfg.defaults.cert_critical);
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
            "proxy down: the proxy's finding, not the endpoint's",
            Box::new(|r| {
                r.endpoints[0].outcome = ConnectOutcome::ProxyUnreachable as i32;
                r.endpoints[0].via = "proxy:8080".into();
            }),
            NOW,
            vec![(Code::ProxyFailed, Severity::Critical)],
        ),
        (
            "proxy refuses CONNECT",
            Box::new(|r| {
                r.endpoints[0].outcome = ConnectOutcome::ProxyRefused as i32;
                r.endpoints[0].via = "proxy:8080".into();
                r.endpoints[0].proxy_status = "HTTP/1.1 403 Forbidden".into();
            }),
            NOW,
            vec![(Code::ProxyFailed, Severity::Critical)],
        ),
        (
            "proxy wants credentials for an optional endpoint",
            Box::new(|r| {
                r.endpoints[0].outcome = ConnectOutcome::ProxyAuthRequired as i32;
                r.endpoints[0].required = false;
                r.endpoints[0].via = "proxy:8080".into();
                r.endpoints[0].proxy_status = "HTTP/1.1 407 Proxy Authentication Required".into();
            }),
            NOW,
            vec![(Code::ProxyFailed, Severity::Warning)],
        ),
        (
            "through a proxy that answers, the endpoint times out",
            Box::new(|r| {
                r.endpoints[0].outcome = ConnectOutcome::TimedOut as i32;
                r.endpoints[0].via = "proxy:8080".into();
            }),
            NOW,
            vec![(Code::EndpointUnreachable, Severity::Critical)],
        ),
        (
            "reached through a proxy",
            Box::new(|r| r.endpoints[0].via = "proxy:8080".into()),
            NOW,
            vec![],
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
            "connector service disabled but running",
            Box::new(|r| r.services[0].start_type = StartType::Disabled as i32),
            NOW,
            vec![(Code::ServiceNotRunning, Severity::Critical)],
        ),
        (
            "issuer is not the registration CA",
            Box::new(|r| r.trust_certs[0].issuer = "CN=Some Other CA".into()),
            NOW,
            vec![(Code::TrustCertIssuer, Severity::Critical)],
        ),
        (
            "TLS older than 1.2",
            Box::new(|r| {
                r.endpoints[0].tls = Some(TlsResult {
                    version_too_old: true,
                    protocol: "TLSv1.1".into(),
                    ..Default::default()
                })
            }),
            NOW,
            vec![(Code::TlsTooOld, Severity::Critical)],
        ),
        (
            "chain from an unexpected issuer",
            Box::new(|r| {
                r.endpoints[0].tls = Some(TlsResult {
                    protocol: "TLSv1.3".into(),
                    issuer_checked: true,
                    issuer_expected: false,
                    chain: vec![PresentedCertificate {
                        subject: "CN=svc".into(),
                        issuer: "CN=Inspecting Proxy CA".into(),
                        not_after_ms: NOW + DAY_MS,
                    }],
                    ..Default::default()
                })
            }),
            NOW,
            vec![(Code::TlsIntercepted, Severity::Critical)],
        ),
        (
            "chain not checked is not interception",
            Box::new(|r| {
                r.endpoints[0].tls = Some(TlsResult {
                    issuer_checked: false,
                    chain: vec![PresentedCertificate::default()],
                    ..Default::default()
                })
            }),
            NOW,
            vec![],
        ),
        (
            "backend answers 503",
            Box::new(|r| {
                r.backends = vec![BackendCheck {
                    url: "http://app".into(),
                    http_status: 503,
                    ..Default::default()
                }]
            }),
            NOW,
            vec![(Code::BackendUnreachable, Severity::Warning)],
        ),
        (
            "backend answers 401 (reachable)",
            Box::new(|r| {
                r.backends = vec![BackendCheck {
                    url: "http://app".into(),
                    http_status: 401,
                    ..Default::default()
                }]
            }),
            NOW,
            vec![],
        ),
        (
            "proxy mismatch",
            Box::new(|r| {
                r.proxy = Some(ProxySettings {
                    connector_proxy: "http://proxy:8080".into(),
                    updater_proxy: "direct".into(),
                    ..Default::default()
                })
            }),
            NOW,
            vec![(Code::ProxyMismatch, Severity::Warning)],
        ),
        (
            "same proxy, spelt differently",
            Box::new(|r| {
                r.proxy = Some(ProxySettings {
                    connector_proxy: "http://Proxy:8080/".into(),
                    updater_proxy: "http://proxy:8080".into(),
                    ..Default::default()
                })
            }),
            NOW,
            vec![],
        ),
        (
            "one proxy unknown is no mismatch",
            Box::new(|r| {
                r.proxy = Some(ProxySettings {
                    connector_proxy: "http://proxy:8080".into(),
                    ..Default::default()
                })
            }),
            NOW,
            vec![],
        ),
        (
            "a named proxy beside an updater that defers to a direct system default",
            Box::new(|r| {
                r.proxy = Some(ProxySettings {
                    connector_proxy: "http://proxy:8080".into(),
                    updater_uses_default: true,
                    system_proxy: "direct".into(),
                    ..Default::default()
                })
            }),
            NOW,
            vec![(Code::ProxyMismatch, Severity::Warning)],
        ),
        (
            "both defer to the same system default",
            Box::new(|r| {
                r.proxy = Some(ProxySettings {
                    connector_uses_default: true,
                    updater_uses_default: true,
                    system_proxy: "http://proxy:8080".into(),
                    ..Default::default()
                })
            }),
            NOW,
            vec![],
        ),
        (
            "a named proxy that is also the system default",
            Box::new(|r| {
                r.proxy = Some(ProxySettings {
                    connector_proxy: "http://proxy:8080".into(),
                    updater_uses_default: true,
                    system_proxy: "http://PROXY:8080/".into(),
                    ..Default::default()
                })
            }),
            NOW,
            vec![],
        ),
        (
            "a named proxy and WinHTTP's spelling of the same one",
            Box::new(|r| {
                r.proxy = Some(ProxySettings {
                    connector_proxy: "http://proxyserver:8080".into(),
                    updater_uses_default: true,
                    system_proxy: "proxyserver:8080".into(),
                    ..Default::default()
                })
            }),
            NOW,
            vec![],
        ),
        (
            "a default whose system proxy is unknown is no mismatch",
            Box::new(|r| {
                r.proxy = Some(ProxySettings {
                    connector_proxy: "http://proxy:8080".into(),
                    updater_uses_default: true,
                    ..Default::default()
                })
            }),
            NOW,
            vec![],
        ),
        (
            "known error logged",
            Box::new(|r| {
                r.log_signatures = vec![LogSignature {
                    id: "service-unreachable".into(),
                    count: 3,
                    last_line: "x".into(),
                }]
            }),
            NOW,
            vec![(Code::KnownErrorLogged, Severity::Warning)],
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
        let eval = eval_one(&entry(r, last_seen), &cfg);
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
        thresholds: Thresholds {
            min_healthy: 1,
            ..Thresholds::default()
        },
    });
    cfg.groups.push(GroupConfig {
        name: "eu".into(),
        thresholds: Thresholds::default(),
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
            (empty.findings[0].code, empty.findings[0].severity),
            (Code::GroupEmpty, Severity::Info),
            "a declared group nobody reported for is empty, not down"
        );
        assert_eq!(empty.health, Health::Healthy);
    }
}

#[test]
fn a_down_group_names_itself_as_its_worst_finding() {
    let cfg = RulesConfig::default();
    let mut r = healthy_report();
    r.services[0].state = ServiceState::Stopped as i32;
    let fleet = BTreeMap::from([("a".to_string(), entry(r, NOW))]);
    let eval = evaluate(&fleet, NOW, &cfg);
    assert_eq!(eval.groups[0].worst, Some(Code::GroupDown));
    assert_eq!(eval.all_findings()[0].code, Code::GroupDown);
}

/// Rules of an aggregator that stopped at `NOW - 1h` and started at `NOW - 10 s`,
/// with a minute's grace.
fn restarted() -> RulesConfig {
    RulesConfig {
        startup: crate::config::Startup {
            stopped_ms: NOW - 3_600_000,
            started_ms: NOW - 10_000,
            grace: std::time::Duration::from_secs(60),
        },
        ..RulesConfig::default()
    }
}

#[test]
fn the_aggregators_downtime_and_grace_are_nobodys_silence() {
    let cfg = restarted();
    let grace_end = NOW + 50_000;
    let inactive_after = ms(cfg.defaults.inactive_after);
    // (case, last seen, evaluated at, active, silence)
    let cases = [
        (
            "reported until the stop, in the grace",
            NOW - 3_600_000,
            NOW,
            true,
            0,
        ),
        (
            "reported until the stop, at the grace's end",
            NOW - 3_600_000,
            grace_end,
            true,
            0,
        ),
        (
            "never back: inactive after the grace and inactive_after",
            NOW - 3_600_000,
            grace_end + inactive_after + 1,
            false,
            inactive_after + 1,
        ),
        (
            "silent 80 s before the stop: the 10 s left run after the grace",
            NOW - 3_680_000,
            grace_end + 10_001,
            false,
            90_001,
        ),
        (
            "already inactive before the stop stays inactive in the grace",
            NOW - 3_700_000,
            NOW,
            false,
            100_000,
        ),
        (
            "reported since the start: counted as usual",
            NOW - 5_000,
            NOW,
            true,
            5_000,
        ),
        (
            "reported since the start, then silent",
            NOW - 5_000,
            NOW - 5_000 + inactive_after + 1,
            false,
            inactive_after + 1,
        ),
    ];
    for (name, seen, at, active, silence) in cases {
        let e = entry(healthy_report(), seen);
        assert_eq!(silence_ms(&e, at, &cfg), silence, "{name}");
        assert_eq!(is_active(&e, at, &cfg), active, "{name}");
        let eval = evaluate_connector("c1", &e, at, &cfg, &GroupContext::default());
        assert_eq!(
            eval.findings.iter().any(|f| f.code == Code::Inactive),
            !active,
            "{name}"
        );
        // The rollup re-evaluates when `valid_until` says: it must name the turn.
        if active {
            assert!(
                valid_until(&e, at, &cfg) <= at.max(seen) + inactive_after + 60_001,
                "{name}"
            );
        }
    }
    // Without a certificate, whose day count turns on its own clock.
    let mut uncertified = healthy_report();
    uncertified.trust_certs.clear();
    let never_back = entry(uncertified, NOW - 3_600_000);
    assert_eq!(valid_until(&never_back, NOW, &cfg), grace_end);
    assert_eq!(
        valid_until(&never_back, grace_end, &cfg),
        grace_end + inactive_after + 1
    );
    let inactive = evaluate_connector(
        "c1",
        &never_back,
        grace_end + inactive_after + 1,
        &cfg,
        &GroupContext::default(),
    );
    assert!(
        inactive.findings[0]
            .evidence
            .iter()
            .any(|(k, _)| k == "not_counted"),
        "{:?}",
        inactive.findings[0]
    );
    // Retirement counts the same silence: not at the start, long after it.
    let retire = ms(cfg.retire_after);
    let old = entry(healthy_report(), NOW - 3_600_000 - retire + 60_000);
    assert!(!is_retired(&old, NOW, &cfg));
    assert!(!is_retired(&old, grace_end + 60_000, &cfg));
    assert!(is_retired(&old, grace_end + 60_001, &cfg));
}

#[test]
fn in_the_grace_absent_members_do_not_count_against_their_group() {
    let mut cfg = restarted();
    cfg.startup.stopped_ms = 0;
    cfg.groups.push(GroupConfig {
        name: "eu".into(),
        thresholds: Thresholds::default(),
    });
    let stopped = || {
        let mut r = healthy_report();
        r.services[0].state = ServiceState::Stopped as i32;
        r
    };
    let grace_end = NOW + 50_000;
    // (case, members reported since the start, evaluated at, group codes)
    type Case = (&'static str, Vec<Report>, i64, Vec<Code>);
    let cases: Vec<Case> = vec![
        ("nobody yet", vec![], NOW, vec![Code::GroupEmpty]),
        (
            "nobody after the grace",
            vec![],
            grace_end,
            vec![Code::GroupEmpty],
        ),
        ("one healthy so far", vec![healthy_report()], NOW, vec![]),
        (
            "one healthy after the grace",
            vec![healthy_report()],
            grace_end,
            vec![Code::GroupNoRedundancy],
        ),
        (
            "a member that reported is unhealthy",
            vec![healthy_report(), stopped()],
            NOW,
            vec![Code::GroupNoRedundancy],
        ),
        (
            "the one that reported is down",
            vec![stopped()],
            NOW,
            vec![Code::GroupDown],
        ),
    ];
    for (name, members, at, want) in cases {
        let fleet: BTreeMap<String, StoredConnector> = members
            .into_iter()
            .enumerate()
            .map(|(i, r)| (format!("c{i}"), entry(r, NOW - 1_000)))
            .collect();
        let eval = evaluate(&fleet, at, &cfg);
        let got: Vec<Code> = eval.groups[0].findings.iter().map(|f| f.code).collect();
        assert_eq!(got, want, "{name}");
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

#[test]
fn inactive_after_is_per_group() {
    let mut cfg = RulesConfig::default();
    cfg.groups.push(GroupConfig {
        name: "eu".into(),
        thresholds: Thresholds {
            inactive_after: Duration::from_secs(10),
            ..Thresholds::default()
        },
    });
    let e = entry(healthy_report(), NOW - 11_000);
    assert_eq!(
        codes(&eval_one(&e, &cfg)),
        [(Code::Inactive, Severity::Warning)]
    );
    let mut other = e.clone();
    other.group = "us".into();
    assert_eq!(
        codes(&eval_one(&other, &cfg)),
        [(Code::UnassignedConnector, Severity::Warning)],
        "us is not declared and keeps the 90 s default"
    );
}

#[test]
fn clock_skew_uses_the_least_delayed_report() {
    let cfg = RulesConfig::default();
    let five_min = 300_000;
    for (offsets, want) in [
        (vec![20, 15, 30], false),
        // A report drained from a spool an hour late is delay, not skew.
        (vec![3_600_000, 40, 25], false),
        (
            vec![five_min + 1_000, five_min + 900, five_min + 5_000],
            true,
        ),
        (vec![-five_min - 10_000, -five_min - 9_000], true),
        (vec![five_min, five_min], false),
    ] {
        let mut e = entry(healthy_report(), NOW);
        e.recent_offsets_ms = offsets.clone();
        let got = codes(&eval_one(&e, &cfg)).contains(&(Code::ClockSkew, Severity::Warning));
        assert_eq!(got, want, "{offsets:?}");
    }
}

#[test]
fn version_behind_the_group_or_the_minimum() {
    let mut cfg = RulesConfig::default();
    let with_version = |v: &str| {
        let mut r = healthy_report();
        r.version = Some(VersionInfo {
            connector_version: v.into(),
            ..Default::default()
        });
        r
    };
    let mut fleet = BTreeMap::new();
    fleet.insert("a".to_string(), entry(with_version("1.5.10.0"), NOW));
    fleet.insert("b".to_string(), entry(with_version("1.5.9.0"), NOW));
    let eval = evaluate(&fleet, NOW, &cfg);
    let b = eval.connectors.iter().find(|c| c.id == "b").expect("b");
    assert_eq!(codes(b), [(Code::VersionBehind, Severity::Warning)]);
    let a = eval.connectors.iter().find(|c| c.id == "a").expect("a");
    assert!(a.findings.is_empty(), "the newest is not behind");
    let group: Vec<Code> = eval.groups[0].findings.iter().map(|f| f.code).collect();
    assert_eq!(group, [Code::GroupMixedVersions]);

    cfg.defaults.min_version = crate::version::Version::parse("1.6");
    let eval = evaluate(&fleet, NOW, &cfg);
    let a = eval.connectors.iter().find(|c| c.id == "a").expect("a");
    assert_eq!(codes(a), [(Code::VersionBehind, Severity::Warning)]);
}

#[test]
fn causes_are_linked_to_their_symptoms() {
    let cfg = RulesConfig::default();
    let mut r = healthy_report();
    r.trust_certs = vec![cert(NOW - DAY_MS)];
    r.log_signatures = vec![LogSignature {
        id: "config-download-failed".into(),
        count: 1,
        last_line: "Connector failed to download the configuration.".into(),
    }];
    let eval = eval_one(&entry(r, NOW), &cfg);
    let logged = eval
        .findings
        .iter()
        .find(|f| f.code == Code::KnownErrorLogged)
        .expect("log finding");
    assert!(
        logged
            .evidence
            .contains(&("explained_by".to_string(), "trust-cert-expired".to_string())),
        "{:?}",
        logged.evidence
    );
}

#[test]
fn split_reachability_names_both_sides() {
    let cfg = RulesConfig::default();
    let mut blocked = healthy_report();
    blocked.endpoints[0].outcome = ConnectOutcome::TimedOut as i32;
    let mut fleet = BTreeMap::new();
    fleet.insert("a".to_string(), entry(healthy_report(), NOW));
    fleet.insert("b".to_string(), entry(healthy_report(), NOW));
    fleet.insert("c".to_string(), entry(blocked, NOW));
    let eval = evaluate(&fleet, NOW, &cfg);
    let split = eval.groups[0]
        .findings
        .iter()
        .find(|f| f.code == Code::GroupSplitReachability)
        .expect("split finding");
    assert!(
        split
            .evidence
            .contains(&("reachable_from".to_string(), "a, b".to_string()))
    );
    assert!(
        split
            .evidence
            .contains(&("unreachable_from".to_string(), "c".to_string()))
    );
}

#[test]
fn a_proxy_failure_names_the_proxy_and_its_answer() {
    let cfg = RulesConfig::default();
    let mut r = healthy_report();
    r.endpoints[0].outcome = ConnectOutcome::ProxyRefused as i32;
    r.endpoints[0].via = "proxy.contoso.com:8080".into();
    r.endpoints[0].proxy_status = "HTTP/1.1 403 Forbidden".into();
    r.endpoints[0].error = "the proxy proxy.contoso.com:8080 refused CONNECT a:443".into();
    r.log_signatures = vec![LogSignature {
        id: "service-unreachable".into(),
        count: 2,
        last_line: "x".into(),
    }];
    let eval = eval_one(&entry(r, NOW), &cfg);
    let proxy = eval
        .findings
        .iter()
        .find(|f| f.code == Code::ProxyFailed)
        .expect("proxy finding");
    assert_eq!(
        proxy.summary,
        "svc (a:443) via proxy.contoso.com:8080: proxy-refused (HTTP/1.1 403 Forbidden)"
    );
    let has = |f: &Finding, k: &str, v: &str| f.evidence.contains(&(k.to_string(), v.to_string()));
    assert!(
        has(proxy, "proxy", "proxy.contoso.com:8080"),
        "{:?}",
        proxy.evidence
    );
    assert!(has(proxy, "proxy_status", "HTTP/1.1 403 Forbidden"));
    assert!(has(proxy, "cause", "proxy-refused"));
    assert!(proxy.remediation.contains("Network Service"));
    assert!(
        !eval
            .findings
            .iter()
            .any(|f| f.code == Code::EndpointUnreachable),
        "the proxy is the cause; the endpoint was never tried"
    );
    let logged = eval
        .findings
        .iter()
        .find(|f| f.code == Code::KnownErrorLogged)
        .expect("log finding");
    assert!(
        has(logged, "explained_by", "proxy-failed"),
        "{:?}",
        logged.evidence
    );
}

#[test]
fn tls_too_old_advice_names_the_side_that_offered_old_versions() {
    let cfg = RulesConfig::default();
    let old = |via: &str, intercepted: bool| {
        let mut r = healthy_report();
        r.endpoints[0].via = via.into();
        r.endpoints[0].tls = Some(TlsResult {
            version_too_old: true,
            protocol: "TLSv1.1".into(),
            issuer_checked: intercepted,
            issuer_expected: !intercepted,
            chain: vec![PresentedCertificate {
                subject: "CN=svc".into(),
                issuer: "CN=Somebody".into(),
                not_after_ms: NOW + DAY_MS,
            }],
            ..Default::default()
        });
        let eval = eval_one(&entry(r, NOW), &cfg);
        let f = eval
            .findings
            .iter()
            .find(|f| f.code == Code::TlsTooOld)
            .cloned()
            .expect("tls-too-old");
        let side = f
            .evidence
            .iter()
            .find(|(k, _)| k == "old_side")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        (side, f.remediation)
    };
    for (via, intercepted, side, advice) in [
        ("direct", false, "the endpoint", "on it"),
        ("", false, "the endpoint", "on it"),
        ("proxy.contoso.local:8080", false, "the proxy", "behind it"),
        ("direct", true, "inspecting", "from inspection"),
    ] {
        let (got, remedy) = old(via, intercepted);
        assert!(got.contains(side), "{via} {intercepted}: {got}");
        assert!(remedy.contains(advice), "{via} {intercepted}: {remedy}");
        assert!(!remedy.contains("SChannel"), "{remedy}");
    }
}

#[test]
fn tls_interception_table() {
    let cfg = RulesConfig::default();
    let chain = |issuer: &str| {
        vec![
            PresentedCertificate {
                subject: "CN=login.microsoftonline.com".into(),
                issuer: issuer.into(),
                not_after_ms: NOW + DAY_MS,
            },
            PresentedCertificate {
                subject: issuer.into(),
                issuer: "CN=DigiCert Global Root G2".into(),
                not_after_ms: NOW + 300 * DAY_MS,
            },
        ]
    };
    let genuine = "CN=Microsoft Azure RSA TLS Issuing CA 04";
    let forged_error = "certificate verification failed: invalid peer certificate: BadSignature";
    // (case, issuer checked, chain verified, issuer expected, error, finding wanted)
    type Case = (&'static str, bool, Option<bool>, bool, &'static str, bool);
    let cases: [Case; 7] = [
        (
            "verified, from an expected root",
            true,
            Some(true),
            true,
            "",
            false,
        ),
        (
            "forged: does not verify",
            true,
            Some(false),
            false,
            forged_error,
            true,
        ),
        (
            "genuine issuer, wrong name: does not verify",
            true,
            Some(false),
            true,
            "certificate verification failed: invalid peer certificate: NotValidForName",
            true,
        ),
        (
            "verifies, to an unexpected root",
            true,
            Some(true),
            false,
            "",
            true,
        ),
        (
            "an older collector: not verified is unknown",
            true,
            None,
            true,
            "certificate verification failed: invalid peer certificate: UnknownIssuer",
            false,
        ),
        (
            "an older collector, unexpected issuer",
            true,
            None,
            false,
            "",
            true,
        ),
        (
            "no expected issuers: verification is reported, not judged",
            false,
            Some(false),
            false,
            forged_error,
            false,
        ),
    ];
    for (name, checked, verified, expected, error, want) in cases {
        let mut r = healthy_report();
        r.endpoints[0].tls = Some(TlsResult {
            protocol: "TLSv1.3".into(),
            chain: chain(genuine),
            issuer_checked: checked,
            chain_verified: verified,
            issuer_expected: expected,
            error: error.into(),
            ..Default::default()
        });
        let eval = eval_one(&entry(r, NOW), &cfg);
        let want: Vec<(Code, Severity)> = if want {
            vec![(Code::TlsIntercepted, Severity::Critical)]
        } else {
            vec![]
        };
        assert_eq!(codes(&eval), want, "{name}");
        if let Some(f) = eval.findings.first() {
            let has = |k: &str, v: &str| f.evidence.contains(&(k.to_string(), v.to_string()));
            assert!(has("leaf_issuer", genuine), "{name}: {:?}", f.evidence);
            assert!(has("error", error), "{name}: {:?}", f.evidence);
            let verified_text = match verified {
                Some(true) => "yes",
                Some(false) => "no",
                None => "not checked",
            };
            assert!(has("verified", verified_text), "{name}: {:?}", f.evidence);
            assert!(f.remediation.contains("TLS inspection"), "{name}");
            let said = if expected { "does not verify" } else { genuine };
            assert!(f.summary.contains(said), "{name}: {}", f.summary);
        }
    }
}

/// The entry after a report carrying `signatures` arrives at `at`, following `prev`.
fn next_entry(
    prev: Option<&StoredConnector>,
    at: i64,
    signatures: &[(&str, u32)],
) -> StoredConnector {
    let mut r = healthy_report();
    r.collected_at_ms = at;
    r.log_signatures = signatures
        .iter()
        .map(|(id, count)| LogSignature {
            id: (*id).into(),
            count: *count,
            last_line: format!("{id} at {at}"),
        })
        .collect();
    let quiet = RulesConfig::default().defaults.log_quiet_after;
    let logged = record_logged(prev.map_or(&[][..], |p| &p.logged), &r, at, quiet);
    StoredConnector {
        logged,
        ..entry(r, at)
    }
}

fn logged_findings(e: &StoredConnector, now: i64, cfg: &RulesConfig) -> Vec<Finding> {
    eval_one_at(e, now, cfg)
        .findings
        .into_iter()
        .filter(|f| f.code == Code::KnownErrorLogged)
        .collect()
}

fn eval_one_at(e: &StoredConnector, now: i64, cfg: &RulesConfig) -> ConnectorEval {
    evaluate_connector("c", e, now, cfg, &GroupContext::default())
}

fn evidence<'a>(f: &'a Finding, key: &str) -> &'a str {
    f.evidence
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

#[test]
fn a_logged_error_stays_until_it_has_been_quiet_for_the_window() {
    let cfg = RulesConfig::default();
    let hour = 3_600_000;
    let t0 = NOW - 3 * hour;
    // Logged twice, then reports every 30 s carry nothing new.
    let mut e = next_entry(None, t0, &[("kerberos-13019", 2)]);
    let first = logged_findings(&e, t0, &cfg);
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(evidence(&first[0], "count"), "2");
    e = next_entry(Some(&e), t0 + 20 * 60_000, &[("kerberos-13019", 1)]);
    for step in 1..=80 {
        let at = t0 + 20 * 60_000 + step * 30_000;
        e = next_entry(Some(&e), at, &[]);
        let found = logged_findings(&e, at, &cfg);
        let quiet_for = at - (t0 + 20 * 60_000);
        if quiet_for <= hour {
            assert_eq!(found.len(), 1, "{quiet_for} ms after the last time");
            assert_eq!(
                evidence(&found[0], "count"),
                "3",
                "counted since it started"
            );
            assert_eq!(evidence(&found[0], "first_seen"), rfc3339(t0));
            assert!(found[0].remediation.contains("SPN"));
        } else {
            assert!(found.is_empty(), "{quiet_for} ms after the last time");
        }
    }

    // Between reports, time alone clears it, and the rollup is told when.
    let last = t0 + 40 * 60_000;
    let e = next_entry(None, last, &[("connector-unauthorized", 1)]);
    let fresh = next_entry(Some(&e), last + 1_000, &[]);
    let lenient = RulesConfig {
        defaults: Thresholds {
            inactive_after: Duration::from_secs(7200),
            ..Thresholds::default()
        },
        ..RulesConfig::default()
    };
    assert_eq!(logged_findings(&fresh, last + hour, &lenient).len(), 1);
    assert!(logged_findings(&fresh, last + hour + 1, &lenient).is_empty());
    assert_eq!(valid_until(&fresh, last + 2_000, &lenient), last + hour + 1);

    // After a quiet window, it starts counting again.
    let again = next_entry(
        Some(&fresh),
        last + 2 * hour,
        &[("connector-unauthorized", 4)],
    );
    let found = logged_findings(&again, last + 2 * hour, &cfg);
    assert_eq!(evidence(&found[0], "count"), "4");
    assert_eq!(evidence(&found[0], "first_seen"), rfc3339(last + 2 * hour));
}

#[test]
fn a_group_can_keep_log_findings_for_its_own_window() {
    let cfg = RulesConfig {
        groups: vec![GroupConfig {
            name: "eu".into(),
            thresholds: Thresholds {
                log_quiet_after: Duration::from_secs(3),
                ..Thresholds::default()
            },
        }],
        ..RulesConfig::default()
    };
    let mut e = next_entry(None, NOW, &[("trust-cert-expired", 1)]);
    // No certificate, whose day count would turn first.
    if let Some(r) = e.latest.as_mut() {
        r.trust_certs.clear();
    }
    assert_eq!(logged_findings(&e, NOW + 3_000, &cfg).len(), 1);
    assert!(logged_findings(&e, NOW + 3_001, &cfg).is_empty());
    assert_eq!(valid_until(&e, NOW, &cfg), NOW + 3_001);
}

#[test]
fn each_logged_error_carries_its_own_remedy() {
    let cfg = RulesConfig::default();
    for (id, says) in [
        ("trust-cert-expired", "Register-AppProxyConnector"),
        ("kerberos-13019", "clocks"),
        ("kerberos-13019", "SPN"),
        ("connector-unauthorized", "TLS inspection"),
        ("connector-unauthorized", "not authorized"),
        ("website-cannot-display", "SPN"),
        ("execution-policy", "Turn on Script Execution"),
    ] {
        let e = next_entry(None, NOW, &[(id, 1)]);
        let found = logged_findings(&e, NOW, &cfg);
        assert_eq!(found.len(), 1, "{id}");
        assert!(
            found[0].remediation.contains(says),
            "{id}: {}",
            found[0].remediation
        );
        assert!(found[0].summary.contains(id), "{}", found[0].summary);
    }
    let unknown = next_entry(None, NOW, &[("from-a-newer-collector", 1)]);
    assert_eq!(
        logged_findings(&unknown, NOW, &cfg)[0].remediation,
        remediation(Code::KnownErrorLogged)
    );
}

#[test]
fn remembered_errors_are_bounded() {
    let many: Vec<(String, u32)> = (0..100).map(|i| (format!("sig-{i:03}"), 1)).collect();
    let refs: Vec<(&str, u32)> = many.iter().map(|(s, n)| (s.as_str(), *n)).collect();
    let e = next_entry(None, NOW, &refs);
    assert_eq!(e.logged.len(), MAX_LOGGED);
}
