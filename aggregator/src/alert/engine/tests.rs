//! Table tests of the alert state machine: each case is a timeline of evaluations,
//! each with the findings present and the notifications expected.

use super::*;
use crate::alert::silence::Matcher;
use connwatch_shared::finding::Scope;

fn finding(code: Code, severity: Severity, subject: &str) -> Finding {
    Finding {
        code,
        severity,
        scope: if code.is_group_level() {
            Scope::Group
        } else {
            Scope::Connector
        },
        subject: subject.into(),
        summary: format!("{code} on {subject}"),
        evidence: vec![("thumbprint".into(), "AB".into())],
        remediation: "fix it",
        observed_at_ms: 0,
    }
}

fn policy(for_ms: i64) -> Policy {
    Policy::uniform(
        [Code::TrustCertExpiring, Code::Inactive, Code::GroupDown],
        &[Severity::Warning, Severity::Critical].into(),
        for_ms,
        1000,
    )
}

fn silence(matcher: &str, starts_ms: i64, ends_ms: i64) -> Silence {
    Silence {
        id: "s1".into(),
        matchers: vec![Matcher::parse(matcher).expect("matcher")],
        starts_ms,
        ends_ms,
        comment: String::new(),
        created_by: "op".into(),
    }
}

const W: Severity = Severity::Warning;
const C: Severity = Severity::Critical;
const EXP: Code = Code::TrustCertExpiring;

/// (now, findings as (code, severity, subject), expected notifications as
/// (kind, subject, severity)).
type Tick = (
    i64,
    &'static [(Code, Severity, &'static str)],
    &'static [(Kind, &'static str, Severity)],
);

fn run(
    name: &str,
    policy: &Policy,
    silences: &[Silence],
    ticks: &[Tick],
) -> BTreeMap<String, Alert> {
    let mut alerts = BTreeMap::new();
    for (now, present, expected) in ticks {
        let findings: Vec<Finding> = present
            .iter()
            .map(|(c, s, subj)| finding(*c, *s, subj))
            .collect();
        let conditions: Vec<Condition<'_>> = findings
            .iter()
            .map(|f| Condition {
                finding: f,
                group: "eu",
            })
            .collect();
        let s = step(&alerts, &conditions, silences, *now, policy);
        apply(&mut alerts, &s);
        let got: Vec<(Kind, &str, Severity)> = s
            .notifications
            .iter()
            .map(|n| (n.kind, n.alert.subject.as_str(), n.alert.severity))
            .collect();
        assert_eq!(&got, expected, "{name} at t={now}");
    }
    alerts
}

#[test]
fn lifecycles() {
    use Kind::*;
    let cases: &[(&str, i64, &[Tick])] = &[
        (
            "fires at once with no `for`, once, repeats, resolves once",
            0,
            &[
                (0, &[(EXP, W, "a")], &[(Firing, "a", W)]),
                (500, &[(EXP, W, "a")], &[]),
                (1000, &[(EXP, W, "a")], &[(Repeat, "a", W)]),
                (1500, &[(EXP, W, "a")], &[]),
                (1600, &[], &[(Resolved, "a", W)]),
                (1700, &[], &[]),
            ],
        ),
        (
            "pending until `for` has passed",
            300,
            &[
                (0, &[(EXP, W, "a")], &[]),
                (200, &[(EXP, W, "a")], &[]),
                (300, &[(EXP, W, "a")], &[(Firing, "a", W)]),
            ],
        ),
        (
            "a pending alert that clears says nothing",
            300,
            &[
                (0, &[(EXP, W, "a")], &[]),
                (100, &[], &[]),
                (350, &[(EXP, W, "a")], &[]),
            ],
        ),
        (
            "a severity change is announced again",
            0,
            &[
                (0, &[(EXP, W, "a")], &[(Firing, "a", W)]),
                (100, &[(EXP, C, "a")], &[(Firing, "a", C)]),
                (200, &[(EXP, C, "a")], &[]),
            ],
        ),
        (
            "two certificates on one connector are one alert, the worst",
            0,
            &[(0, &[(EXP, W, "a"), (EXP, C, "a")], &[(Firing, "a", C)])],
        ),
        (
            "a recurrence after resolution is a new episode",
            0,
            &[
                (0, &[(EXP, W, "a")], &[(Firing, "a", W)]),
                (10, &[], &[(Resolved, "a", W)]),
                (20, &[(EXP, W, "a")], &[(Firing, "a", W)]),
            ],
        ),
        (
            "codes and severities outside the policy do not alert",
            0,
            &[(
                0,
                &[
                    (Code::EndpointUnreachable, C, "a"),
                    (Code::Inactive, Severity::Info, "b"),
                    (Code::GroupDown, C, "eu"),
                ],
                &[(Firing, "eu", C)],
            )],
        ),
    ];
    for (name, for_ms, ticks) in cases {
        run(name, &policy(*for_ms), &[], ticks);
    }
}

#[test]
fn silences_hold_notifications_and_release_unannounced_firing() {
    use Kind::*;
    let s = [silence("code=trust-cert-expiring", 0, 2500)];
    run(
        "silenced",
        &policy(0),
        &s,
        &[
            (
                0,
                &[(EXP, W, "a"), (Code::Inactive, W, "b")],
                &[(Firing, "b", W)],
            ),
            (
                1200,
                &[(EXP, W, "a"), (Code::Inactive, W, "b")],
                &[(Repeat, "b", W)],
            ),
            // The silence has ended: the alert was never announced, so it is now.
            (
                2500,
                &[(EXP, W, "a")],
                &[(Firing, "a", W), (Resolved, "b", W)],
            ),
        ],
    );
    // Silenced from the start and cleared while silenced: nothing was announced, so
    // nothing is announced over.
    run(
        "silenced throughout",
        &policy(0),
        &s,
        &[(0, &[(EXP, W, "a")], &[]), (100, &[], &[])],
    );
}

#[test]
fn resolved_alerts_are_forgotten_later_and_unchanged_alerts_are_not_rewritten() {
    let p = policy(0);
    let alerts = run(
        "forget",
        &p,
        &[],
        &[
            (0, &[(EXP, W, "a")], &[(Kind::Firing, "a", W)]),
            (10, &[], &[(Kind::Resolved, "a", W)]),
        ],
    );
    let fp = fingerprint(EXP, "a");
    assert_eq!(alerts[&fp].status, Status::Resolved);
    let s = step(&alerts, &[], &[], 10 + RESOLVED_KEEP_MS, &p);
    assert_eq!(s.removed, [fp]);

    // A firing alert whose finding did not change writes nothing to the store.
    let f = finding(EXP, W, "a");
    let c = [Condition {
        finding: &f,
        group: "eu",
    }];
    let mut alerts = BTreeMap::new();
    let first = step(&alerts, &c, &[], 0, &p);
    apply(&mut alerts, &first);
    let again = step(&alerts, &c, &[], 100, &p);
    assert!(again.upserts.is_empty() && again.notifications.is_empty());
}

#[test]
fn state_reloaded_after_a_restart_sends_no_second_firing() {
    // The engine's only memory is the alert map, which is what the store keeps: a
    // fresh engine given the stored map continues the episode.
    let p = policy(0);
    let f = finding(EXP, W, "a");
    let c = [Condition {
        finding: &f,
        group: "eu",
    }];
    let mut alerts = BTreeMap::new();
    let first = step(&alerts, &c, &[], 0, &p);
    assert_eq!(first.notifications.len(), 1);
    apply(&mut alerts, &first);
    let stored = alerts.clone();
    let after_restart = step(&stored, &c, &[], 400, &p);
    assert!(after_restart.notifications.is_empty());
}

#[test]
fn every_critical_finding_fires_with_the_default_policy_after_its_hold() {
    let policy = crate::alert::defaults::default_policy();
    // Every code the rules can raise as critical, and the one warning that foretells
    // a critical one.
    let cases = [
        (Code::ServiceNotRunning, C),
        (Code::TrustCertExpiring, W),
        (Code::TrustCertExpiring, C),
        (Code::TrustCertExpired, C),
        (Code::TrustCertMissing, C),
        (Code::TrustCertIssuer, C),
        (Code::EndpointUnreachable, C),
        (Code::ProxyFailed, C),
        (Code::TlsTooOld, C),
        (Code::TlsIntercepted, C),
        (Code::KnownErrorLogged, C),
        (Code::GroupDown, C),
    ];
    for (code, severity) in cases {
        let f = finding(code, severity, "x");
        let conditions = [Condition {
            finding: &f,
            group: "eu",
        }];
        let hold = policy.for_ms(code);
        let mut alerts = BTreeMap::new();
        let first = step(&alerts, &conditions, &[], 0, &policy);
        apply(&mut alerts, &first);
        if hold > 0 {
            assert!(
                first.notifications.is_empty(),
                "{code} fired before its hold"
            );
            assert_eq!(
                alerts.values().next().map(|a| a.status),
                Some(Status::Pending)
            );
        }
        let later = step(&alerts, &conditions, &[], hold, &policy);
        let fired: Vec<Kind> = first
            .notifications
            .iter()
            .chain(&later.notifications)
            .map(|n| n.kind)
            .collect();
        assert_eq!(fired, [Kind::Firing], "{code} {severity}");
    }
    // The warnings of codes that alert only when critical stay quiet.
    for code in [
        Code::EndpointUnreachable,
        Code::ProxyFailed,
        Code::KnownErrorLogged,
    ] {
        assert!(!policy.alerts_on(&finding(code, W, "x")), "{code}");
    }
}
