//! The rules: pure functions from the fleet's stored state, the time and the
//! thresholds to findings per connector and per group. No I/O and no clock reads, so
//! every rule is table-tested.

use crate::config::RulesConfig;
use crate::remedy::remediation;
use crate::store::StoredConnector;
use connwatch_shared::finding::{Code, Finding, Health, Scope, Severity};
use connwatch_shared::time::{compact_ms, rfc3339};
use connwatch_shared::wire::{ConnectOutcome, Report, ServiceRole, ServiceState};
use std::collections::BTreeMap;

const DAY_MS: i64 = 86_400_000;

/// A connector's evaluation.
#[derive(Debug, Clone)]
pub struct ConnectorEval {
    /// Its id.
    pub id: String,
    /// Its group.
    pub group: String,
    /// Whether it reported within `inactive_after`.
    pub active: bool,
    /// Its findings, most severe first.
    pub findings: Vec<Finding>,
    /// Its health, from its findings.
    pub health: Health,
}

/// A group's evaluation.
#[derive(Debug, Clone)]
pub struct GroupEval {
    /// Its name.
    pub name: String,
    /// Members that are active.
    pub active: u32,
    /// Members not retired.
    pub total: u32,
    /// Members active and without critical findings.
    pub healthy: u32,
    /// Group-level findings.
    pub findings: Vec<Finding>,
    /// The group's health, counting its members' findings.
    pub health: Health,
    /// The code of the most severe finding of the group or its members.
    pub worst: Option<Code>,
}

/// The whole fleet's evaluation.
#[derive(Debug, Clone, Default)]
pub struct Evaluation {
    /// Live (not retired) connectors, by id.
    pub connectors: Vec<ConnectorEval>,
    /// Groups, by name.
    pub groups: Vec<GroupEval>,
}

impl Evaluation {
    /// Every finding, connector and group level, most severe first.
    pub fn all_findings(&self) -> Vec<Finding> {
        let mut all: Vec<Finding> = self
            .groups
            .iter()
            .flat_map(|g| g.findings.iter().cloned())
            .chain(
                self.connectors
                    .iter()
                    .flat_map(|c| c.findings.iter().cloned()),
            )
            .collect();
        sort_findings(&mut all);
        all
    }
}

fn sort_findings(findings: &mut [Finding]) {
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(a.code.cmp(&b.code))
            .then(a.subject.cmp(&b.subject))
    });
}

/// Whether a connector is retired: inactive for `retire_after`.
pub fn is_retired(entry: &StoredConnector, now_ms: i64, cfg: &RulesConfig) -> bool {
    now_ms - entry.last_seen_ms > ms(cfg.retire_after)
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Evaluates the whole fleet.
pub fn evaluate<'a>(
    connectors: impl IntoIterator<Item = (&'a String, &'a StoredConnector)>,
    now_ms: i64,
    cfg: &RulesConfig,
) -> Evaluation {
    let mut evals = Vec::new();
    let mut groups: BTreeMap<String, Vec<usize>> = cfg
        .groups
        .iter()
        .map(|g| (g.name.clone(), Vec::new()))
        .collect();
    for (id, entry) in connectors {
        if is_retired(entry, now_ms, cfg) {
            continue;
        }
        let eval = evaluate_connector(id, entry, now_ms, cfg);
        groups
            .entry(eval.group.clone())
            .or_default()
            .push(evals.len());
        evals.push(eval);
    }
    let groups = groups
        .into_iter()
        .map(|(name, members)| {
            let members: Vec<&ConnectorEval> = members.iter().map(|&i| &evals[i]).collect();
            evaluate_group(&name, &members, now_ms, cfg)
        })
        .collect();
    Evaluation {
        connectors: evals,
        groups,
    }
}

/// Evaluates one connector from its registry entry.
pub fn evaluate_connector(
    id: &str,
    entry: &StoredConnector,
    now_ms: i64,
    cfg: &RulesConfig,
) -> ConnectorEval {
    let silent_ms = now_ms - entry.last_seen_ms;
    let active = silent_ms <= ms(cfg.inactive_after);
    let mut f = Findings::new(id, Scope::Connector);
    let observed = entry
        .latest
        .as_ref()
        .map_or(entry.last_seen_ms, |r| r.collected_at_ms);
    if !active {
        f.push(
            Code::Inactive,
            Severity::Warning,
            format!("no report for {}", compact_ms(silent_ms)),
            vec![
                ("last_seen".into(), rfc3339(entry.last_seen_ms)),
                ("inactive_after".into(), format!("{:?}", cfg.inactive_after)),
            ],
            now_ms,
        );
    }
    if let Some(report) = &entry.latest {
        // Certificates expire whether or not the host reports; the rest of an inactive
        // connector's facts are stale and would only repeat its last state.
        cert_findings(&mut f, report, now_ms, observed, cfg);
        if active {
            service_findings(&mut f, report, observed);
            endpoint_findings(&mut f, report, observed);
            probe_findings(&mut f, report, observed);
        }
    }
    let mut findings = f.done();
    sort_findings(&mut findings);
    ConnectorEval {
        id: id.to_string(),
        group: entry.group.clone(),
        active,
        health: Health::from_severities(findings.iter().map(|f| f.severity)),
        findings,
    }
}

struct Findings {
    subject: String,
    scope: Scope,
    out: Vec<Finding>,
}

impl Findings {
    fn new(subject: &str, scope: Scope) -> Findings {
        Findings {
            subject: subject.to_string(),
            scope,
            out: Vec::new(),
        }
    }

    fn push(
        &mut self,
        code: Code,
        severity: Severity,
        summary: String,
        evidence: Vec<(String, String)>,
        observed_at_ms: i64,
    ) {
        self.out.push(Finding {
            code,
            severity,
            scope: self.scope,
            subject: self.subject.clone(),
            summary,
            evidence,
            remediation: remediation(code),
            observed_at_ms,
        });
    }

    fn done(self) -> Vec<Finding> {
        self.out
    }
}

fn cert_findings(f: &mut Findings, r: &Report, now_ms: i64, observed: i64, cfg: &RulesConfig) {
    for c in &r.trust_certs {
        if !c.found || !c.thumbprint_matched {
            let why = if c.found {
                format!(
                    "certificate {} does not match the expected thumbprint {}",
                    c.thumbprint, c.expected_thumbprint
                )
            } else {
                c.error.clone()
            };
            f.push(
                Code::TrustCertMissing,
                Severity::Critical,
                format!("no usable trust certificate at {}", c.source),
                vec![("source".into(), c.source.clone()), ("reason".into(), why)],
                observed,
            );
            continue;
        }
        let left = c.not_after_ms - now_ms;
        let evidence = vec![
            ("source".into(), c.source.clone()),
            ("subject".into(), c.subject.clone()),
            ("thumbprint".into(), c.thumbprint.clone()),
            ("not_after".into(), rfc3339(c.not_after_ms)),
            ("days_left".into(), (left.div_euclid(DAY_MS)).to_string()),
        ];
        if left <= 0 {
            f.push(
                Code::TrustCertExpired,
                Severity::Critical,
                format!("trust certificate expired {} ago", compact_ms(-left)),
                evidence,
                observed,
            );
        } else if left <= ms(cfg.cert_warning) {
            let severity = if left <= ms(cfg.cert_critical) {
                Severity::Critical
            } else {
                Severity::Warning
            };
            f.push(
                Code::TrustCertExpiring,
                severity,
                format!("trust certificate expires in {}", compact_ms(left)),
                evidence,
                observed,
            );
        }
    }
}

fn service_findings(f: &mut Findings, r: &Report, observed: i64) {
    for s in &r.services {
        if s.state == ServiceState::Running as i32 {
            continue;
        }
        let code = match ServiceRole::try_from(s.role) {
            Ok(ServiceRole::Updater) => Code::UpdaterNotRunning,
            Ok(ServiceRole::Connector) | Ok(ServiceRole::Unspecified) => Code::ServiceNotRunning,
            _ => continue,
        };
        let severity = if code == Code::ServiceNotRunning {
            Severity::Critical
        } else {
            Severity::Warning
        };
        let state = connwatch_proto::enum_names::service_state_name(s.state);
        f.push(
            code,
            severity,
            format!("service {} is {state}", s.name),
            vec![
                ("service".into(), s.name.clone()),
                ("state".into(), state),
                ("source".into(), s.source.clone()),
            ],
            observed,
        );
    }
}

fn endpoint_findings(f: &mut Findings, r: &Report, observed: i64) {
    for e in &r.endpoints {
        if e.outcome == ConnectOutcome::Ok as i32 {
            continue;
        }
        let cause = connwatch_proto::enum_names::connect_outcome_name(e.outcome);
        let severity = if e.required {
            Severity::Critical
        } else {
            Severity::Warning
        };
        f.push(
            Code::EndpointUnreachable,
            severity,
            format!("{} ({}) {cause}", e.name, e.address),
            vec![
                ("endpoint".into(), e.name.clone()),
                ("address".into(), e.address.clone()),
                ("cause".into(), cause),
                ("error".into(), e.error.clone()),
            ],
            observed,
        );
    }
}

fn probe_findings(f: &mut Findings, r: &Report, observed: i64) {
    for p in &r.probe_errors {
        f.push(
            Code::ProbeFailed,
            Severity::Warning,
            format!("probe {} could not run", p.probe),
            vec![
                ("probe".into(), p.probe.clone()),
                ("reason".into(), p.reason.clone()),
            ],
            observed,
        );
    }
}

/// Evaluates a group from its members' evaluations.
pub fn evaluate_group(
    name: &str,
    members: &[&ConnectorEval],
    now_ms: i64,
    cfg: &RulesConfig,
) -> GroupEval {
    let total = u32::try_from(members.len()).unwrap_or(u32::MAX);
    let active = u32::try_from(members.iter().filter(|m| m.active).count()).unwrap_or(u32::MAX);
    let healthy = u32::try_from(
        members
            .iter()
            .filter(|m| m.active && m.health != Health::Critical)
            .count(),
    )
    .unwrap_or(u32::MAX);
    let min = cfg.min_healthy_for(name);
    let mut f = Findings::new(name, Scope::Group);
    let evidence = vec![
        ("members".into(), total.to_string()),
        ("active".into(), active.to_string()),
        ("healthy".into(), healthy.to_string()),
        ("min_healthy".into(), min.to_string()),
    ];
    if healthy == 0 {
        f.push(
            Code::GroupDown,
            Severity::Critical,
            format!("no healthy connector among {total}"),
            evidence,
            now_ms,
        );
    } else if healthy < min {
        f.push(
            Code::GroupNoRedundancy,
            Severity::Warning,
            format!("{healthy} healthy connector(s), fewer than {min}"),
            evidence,
            now_ms,
        );
    }
    let findings = f.done();
    let worst = findings
        .iter()
        .chain(members.iter().flat_map(|m| m.findings.iter()))
        .max_by(|a, b| a.severity.cmp(&b.severity).then(b.code.cmp(&a.code)))
        .map(|f| f.code);
    let health = Health::from_severities(
        findings
            .iter()
            .chain(members.iter().flat_map(|m| m.findings.iter()))
            .map(|f| f.severity),
    );
    GroupEval {
        name: name.to_string(),
        active,
        total,
        healthy,
        findings,
        health,
        worst,
    }
}

#[cfg(test)]
mod tests;
