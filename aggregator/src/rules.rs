//! The rules: pure functions from the fleet's stored state, the time and the
//! thresholds to findings per connector and per group. No I/O and no clock reads, so
//! every rule is table-tested.

use crate::config::{RulesConfig, Thresholds};
use crate::remedy::{self, OldTlsSide, log_remediation, remediation};
use crate::store::{StoredConnector, StoredLogged};
use crate::version::Version;
use connwatch_proto::enum_names;
use connwatch_shared::finding::{Code, Finding, Health, Scope, Severity};
use connwatch_shared::logsig;
use connwatch_shared::time::{compact_ms, rfc3339};
use connwatch_shared::wire::{
    ConnectOutcome, Report, ServiceRole, ServiceState, StartType, TrustCertificate,
};
use std::collections::{BTreeMap, BTreeSet};

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
    findings.sort_by(finding_order);
}

/// The order findings are listed in: most severe first, then by code and subject.
pub fn finding_order(a: &Finding, b: &Finding) -> std::cmp::Ordering {
    b.severity
        .cmp(&a.severity)
        .then(a.code.cmp(&b.code))
        .then(a.subject.cmp(&b.subject))
}

/// How a connector's silence is counted: `(origin, floor)` such that at `now` it has
/// been silent for `max(now, floor) - origin`. A connector that has reported since the
/// aggregator started is silent since its last report. For one last seen before, the
/// aggregator's downtime and the start-up grace are left out: it was silent from its
/// last report to the aggregator's last known report, and is silent again once the
/// grace has passed without a report from it (its silence stands still until then).
fn silence_clock(entry: &StoredConnector, cfg: &RulesConfig) -> (i64, i64) {
    let s = &cfg.startup;
    if entry.last_seen_ms >= s.started_ms {
        return (entry.last_seen_ms, i64::MIN);
    }
    let resumed = s.grace_end_ms();
    let before = s.stopped_ms.saturating_sub(entry.last_seen_ms).max(0);
    (resumed.saturating_sub(before), resumed)
}

/// How long a connector has been silent at `now_ms`, not counting the aggregator's
/// own downtime and start-up grace.
pub fn silence_ms(entry: &StoredConnector, now_ms: i64, cfg: &RulesConfig) -> i64 {
    let (origin, floor) = silence_clock(entry, cfg);
    now_ms.max(floor).saturating_sub(origin)
}

/// The first time at which a connector's silence exceeds `limit`; `i64::MIN` when it
/// always has.
fn silent_beyond_from(
    entry: &StoredConnector,
    cfg: &RulesConfig,
    limit: std::time::Duration,
) -> i64 {
    let (origin, floor) = silence_clock(entry, cfg);
    let from = origin.saturating_add(ms(limit)).saturating_add(1);
    if floor >= from { i64::MIN } else { from }
}

/// Whether a connector is retired: silent for longer than `retire_after`.
pub fn is_retired(entry: &StoredConnector, now_ms: i64, cfg: &RulesConfig) -> bool {
    silence_ms(entry, now_ms, cfg) > ms(cfg.retire_after)
}

/// Whether a connector has been silent for no longer than its group's `inactive_after`.
pub fn is_active(entry: &StoredConnector, now_ms: i64, cfg: &RulesConfig) -> bool {
    silence_ms(entry, now_ms, cfg) <= ms(cfg.for_group(&entry.group).inactive_after)
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// What a connector's rules need to know about the rest of its group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupContext {
    /// The newest connector version among the group's active members.
    pub newest_version: Option<Version>,
}

/// The connector version its latest report gives, when it parses.
pub fn connector_version(entry: &StoredConnector) -> Option<Version> {
    entry
        .latest
        .as_ref()
        .and_then(|r| r.version.as_ref())
        .and_then(|v| Version::parse(&v.connector_version))
}

/// The group context of every group, from the live connectors.
pub fn group_contexts<'a>(
    connectors: impl IntoIterator<Item = (&'a String, &'a StoredConnector)>,
    now_ms: i64,
    cfg: &RulesConfig,
) -> BTreeMap<String, GroupContext> {
    let mut out: BTreeMap<String, GroupContext> = BTreeMap::new();
    for (_, entry) in connectors {
        if !is_active(entry, now_ms, cfg) {
            continue;
        }
        let ctx = out.entry(entry.group.clone()).or_default();
        if let Some(v) = connector_version(entry)
            && ctx.newest_version.as_ref().is_none_or(|n| v > *n)
        {
            ctx.newest_version = Some(v);
        }
    }
    out
}

/// Evaluates the whole fleet.
pub fn evaluate(
    connectors: &BTreeMap<String, StoredConnector>,
    now_ms: i64,
    cfg: &RulesConfig,
) -> Evaluation {
    let contexts = group_contexts(connectors, now_ms, cfg);
    let none = GroupContext::default();
    let mut evals = Vec::new();
    let mut members: BTreeMap<String, Vec<usize>> = cfg
        .groups
        .iter()
        .map(|g| (g.name.clone(), Vec::new()))
        .collect();
    let mut entries = Vec::new();
    for (id, entry) in connectors {
        if is_retired(entry, now_ms, cfg) {
            continue;
        }
        let ctx = contexts.get(&entry.group).unwrap_or(&none);
        let eval = evaluate_connector(id, entry, now_ms, cfg, ctx);
        members
            .entry(eval.group.clone())
            .or_default()
            .push(evals.len());
        evals.push(eval);
        entries.push(entry);
    }
    let groups = members
        .into_iter()
        .map(|(name, idx)| {
            let m: Vec<(&ConnectorEval, &StoredConnector)> =
                idx.iter().map(|&i| (&evals[i], entries[i])).collect();
            evaluate_group(&name, &m, now_ms, cfg)
        })
        .collect();
    Evaluation {
        connectors: evals,
        groups,
    }
}

/// Evaluates one connector from its registry entry and its group's context.
pub fn evaluate_connector(
    id: &str,
    entry: &StoredConnector,
    now_ms: i64,
    cfg: &RulesConfig,
    ctx: &GroupContext,
) -> ConnectorEval {
    let t = cfg.for_group(&entry.group);
    let silent_ms = silence_ms(entry, now_ms, cfg);
    let active = is_active(entry, now_ms, cfg);
    let mut f = Findings::new(id, Scope::Connector);
    let observed = entry
        .latest
        .as_ref()
        .map_or(entry.last_seen_ms, |r| r.collected_at_ms);
    if !active {
        let mut evidence = vec![
            ("last_seen".into(), rfc3339(entry.last_seen_ms)),
            (
                "inactive_after".into(),
                humantime::format_duration(t.inactive_after).to_string(),
            ),
        ];
        if entry.last_seen_ms < cfg.startup.started_ms {
            evidence.push((
                "not_counted".into(),
                format!(
                    "{} to {}: the aggregator was down or starting",
                    rfc3339(cfg.startup.stopped_ms.max(entry.last_seen_ms)),
                    rfc3339(cfg.startup.grace_end_ms())
                ),
            ));
        }
        f.push(
            Code::Inactive,
            Severity::Warning,
            format!("no report for {}", compact_ms(silent_ms)),
            evidence,
            now_ms,
        );
    }
    if !cfg.groups.is_empty() && !cfg.is_declared(&entry.group) {
        f.push(
            Code::UnassignedConnector,
            Severity::Warning,
            format!("reports group `{}`, which is not declared", entry.group),
            vec![("group".into(), entry.group.clone())],
            observed,
        );
    }
    if let Some(report) = &entry.latest {
        // Certificates expire whether or not the host reports; the rest of an inactive
        // connector's facts are stale and would only repeat its last state.
        cert_findings(&mut f, report, now_ms, observed, t);
        if active {
            service_findings(&mut f, report, observed);
            endpoint_findings(&mut f, report, observed);
            backend_findings(&mut f, report, observed);
            proxy_findings(&mut f, report, observed);
            version_findings(&mut f, report, observed, t, ctx);
            clock_findings(&mut f, entry, observed, cfg);
            log_findings(&mut f, entry, now_ms, t);
            probe_findings(&mut f, report, observed);
        }
    }
    let mut findings = f.done();
    link_causes(&mut findings);
    sort_findings(&mut findings);
    ConnectorEval {
        id: id.to_string(),
        group: entry.group.clone(),
        active,
        health: Health::from_severities(findings.iter().map(|f| f.severity)),
        findings,
    }
}

/// The earliest time after `now_ms` at which [`evaluate_connector`] could answer
/// differently for the same entry and group context: the connector going inactive or
/// retiring, a trust certificate entering a window or expiring, a logged error's quiet
/// window ending, or the text of a time-counting finding ("no report for 5m", "expires
/// in 3d2h", a day count) moving on. Earlier is always safe; the rollup re-evaluates a connector once this passes.
pub fn valid_until(entry: &StoredConnector, now_ms: i64, cfg: &RulesConfig) -> i64 {
    let t = cfg.for_group(&entry.group);
    let mut next = i64::MAX;
    let mut after = |at: i64| {
        if at > now_ms {
            next = next.min(at);
        }
    };
    let inactive_from = silent_beyond_from(entry, cfg, t.inactive_after);
    after(inactive_from);
    after(silent_beyond_from(entry, cfg, cfg.retire_after));
    for l in &entry.logged {
        after(quiet_from(l, t));
    }
    let (_, floor) = silence_clock(entry, cfg);
    // Until the grace has passed, a connector last seen before the start is not
    // getting any more silent; from then on its silence grows.
    after(floor);
    if now_ms >= inactive_from && now_ms >= floor {
        let silent = silence_ms(entry, now_ms, cfg);
        after(now_ms + text_unit(silent) - silent.rem_euclid(text_unit(silent)));
    }
    let certs = entry.latest.iter().flat_map(|r| r.trust_certs.iter());
    for c in certs.filter(|c| c.found && c.thumbprint_matched) {
        let warning_from = c.not_after_ms.saturating_sub(ms(t.cert_warning));
        after(warning_from);
        after(c.not_after_ms.saturating_sub(ms(t.cert_critical)));
        after(c.not_after_ms);
        let left = c.not_after_ms - now_ms;
        let unit = text_unit(left);
        // Any finding about the certificate (an unexpected issuer, whatever the
        // window) carries the day count, which turns just below a multiple of a day.
        after(now_ms + left.rem_euclid(DAY_MS) + 1);
        if now_ms >= warning_from {
            // The time left shrinks: the day count (floored) and the text of a time
            // left turn just below a multiple of the unit.
            after(now_ms + left.rem_euclid(unit) + 1);
        }
        if left <= 0 {
            // The time since expiry grows: its text turns at the next multiple.
            after(now_ms + unit - (-left).rem_euclid(unit));
        }
    }
    next
}

/// The unit in which `compact_ms` prints a span this long. Units nest (1 s, 1 min,
/// 1 h, and days are whole hours), so text of any unit, and a day count, can only
/// change where the span crosses a multiple of it.
fn text_unit(span_ms: i64) -> i64 {
    match span_ms.unsigned_abs() {
        0..60_000 => 1_000,
        60_000..3_600_000 => 60_000,
        _ => 3_600_000,
    }
}

/// The logged errors a blocked outbound connection causes: the guides name blocked
/// ports, a firewall or a proxy for each.
const NETWORK_SIGNATURES: &[&str] = &[
    "service-unreachable",
    "config-download-failed",
    "registration-interrupted",
    "registration-ports-blocked",
];

/// Where one finding explains another, say so in the explained one's evidence, so an
/// operator fixes the cause rather than chasing the symptom.
fn link_causes(findings: &mut [Finding]) {
    const CAUSES: &[(Code, Code, &[&str])] = &[
        (
            Code::TrustCertExpired,
            Code::KnownErrorLogged,
            &["trust-cert-expired", "config-download-failed"],
        ),
        (
            Code::TrustCertMissing,
            Code::KnownErrorLogged,
            &["config-download-failed"],
        ),
        (
            Code::ClockSkew,
            Code::KnownErrorLogged,
            &[
                "kerberos-12008",
                "kerberos-13019",
                "kerberos-13020",
                "kerberos-13022",
            ],
        ),
        (
            Code::TlsIntercepted,
            Code::KnownErrorLogged,
            &["connector-unauthorized"],
        ),
        (
            Code::EndpointUnreachable,
            Code::KnownErrorLogged,
            NETWORK_SIGNATURES,
        ),
        (
            Code::ProxyFailed,
            Code::KnownErrorLogged,
            NETWORK_SIGNATURES,
        ),
        (Code::UpdaterNotRunning, Code::VersionBehind, &[]),
    ];
    let present: Vec<Code> = findings.iter().map(|f| f.code).collect();
    for f in findings.iter_mut() {
        for (cause, effect, signatures) in CAUSES {
            if f.code != *effect || !present.contains(cause) {
                continue;
            }
            let matches = signatures.is_empty()
                || f.evidence
                    .iter()
                    .any(|(k, v)| k == "signature" && signatures.contains(&v.as_str()));
            if matches {
                f.evidence
                    .push(("explained_by".into(), cause.as_str().into()));
            }
        }
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
        self.push_with(
            code,
            severity,
            summary,
            evidence,
            observed_at_ms,
            remediation(code),
        );
    }

    /// As [`Findings::push`], with a remedy more specific than the code's.
    fn push_with(
        &mut self,
        code: Code,
        severity: Severity,
        summary: String,
        evidence: Vec<(String, String)>,
        observed_at_ms: i64,
        remediation: &'static str,
    ) {
        self.out.push(Finding {
            code,
            severity,
            scope: self.scope,
            subject: self.subject.clone(),
            summary,
            evidence,
            remediation,
            observed_at_ms,
        });
    }

    fn done(self) -> Vec<Finding> {
        self.out
    }
}

/// What the certificate findings make of one trust certificate, as one word for the
/// certificate listing: `missing`, `mismatch`, `expired`, `wrong-issuer`, `critical`,
/// `warning` or `ok`. Uses the same thresholds and comparisons as the findings, so the
/// listing never disagrees with them.
pub fn cert_state(c: &TrustCertificate, now_ms: i64, t: &Thresholds) -> &'static str {
    if !c.found {
        return "missing";
    }
    if !c.thumbprint_matched {
        return "mismatch";
    }
    let left = c.not_after_ms - now_ms;
    if left <= 0 {
        "expired"
    } else if !issuer_expected(c, t) {
        "wrong-issuer"
    } else if left <= ms(t.cert_critical) {
        "critical"
    } else if left <= ms(t.cert_warning) {
        "warning"
    } else {
        "ok"
    }
}

/// Whether a certificate's issuer is one of the expected ones (any, when none is set).
fn issuer_expected(c: &TrustCertificate, t: &Thresholds) -> bool {
    let issuer = c.issuer.to_ascii_lowercase();
    t.expected_cert_issuers.is_empty()
        || t.expected_cert_issuers
            .iter()
            .any(|e| issuer.contains(&e.to_ascii_lowercase()))
}

fn cert_findings(f: &mut Findings, r: &Report, now_ms: i64, observed: i64, t: &Thresholds) {
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
            let mut evidence = vec![("source".into(), c.source.clone()), ("reason".into(), why)];
            // Both thumbprints in full, each on its own line: what an operator compares
            // with the portal and the certificate store.
            if c.found {
                evidence.push(("thumbprint".into(), c.thumbprint.clone()));
                evidence.push(("expected_thumbprint".into(), c.expected_thumbprint.clone()));
            }
            f.push(
                Code::TrustCertMissing,
                Severity::Critical,
                format!("no usable trust certificate at {}", c.source),
                evidence,
                observed,
            );
            continue;
        }
        let left = c.not_after_ms - now_ms;
        let evidence = vec![
            ("source".into(), c.source.clone()),
            ("subject".into(), c.subject.clone()),
            ("issuer".into(), c.issuer.clone()),
            ("thumbprint".into(), c.thumbprint.clone()),
            ("not_after".into(), rfc3339(c.not_after_ms)),
            ("days_left".into(), (left.div_euclid(DAY_MS)).to_string()),
        ];
        if !issuer_expected(c, t) {
            f.push(
                Code::TrustCertIssuer,
                Severity::Critical,
                format!("trust certificate issued by {}", c.issuer),
                evidence.clone(),
                observed,
            );
        }
        if left <= 0 {
            f.push(
                Code::TrustCertExpired,
                Severity::Critical,
                format!("trust certificate expired {} ago", compact_ms(-left)),
                evidence,
                observed,
            );
        } else if left <= ms(t.cert_warning) {
            let severity = if left <= ms(t.cert_critical) {
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
        let disabled = s.start_type == StartType::Disabled as i32;
        if s.state == ServiceState::Running as i32 && !disabled {
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
        let state = enum_names::service_state_name(s.state);
        let start = enum_names::start_type_name(s.start_type);
        let summary = if disabled {
            format!("service {} is {state} and disabled", s.name)
        } else {
            format!("service {} is {state}", s.name)
        };
        f.push(
            code,
            severity,
            summary,
            vec![
                ("service".into(), s.name.clone()),
                ("state".into(), state),
                ("start_type".into(), start),
                ("source".into(), s.source.clone()),
            ],
            observed,
        );
    }
}

fn endpoint_findings(f: &mut Findings, r: &Report, observed: i64) {
    for e in &r.endpoints {
        let base = vec![
            ("endpoint".to_string(), e.name.clone()),
            ("address".to_string(), e.address.clone()),
        ];
        if e.outcome != ConnectOutcome::Ok as i32 {
            let cause = enum_names::connect_outcome_name(e.outcome);
            let severity = if e.required {
                Severity::Critical
            } else {
                Severity::Warning
            };
            let mut evidence = base;
            evidence.push(("cause".into(), cause.clone()));
            // The proxy stopped the check before the endpoint was tried: that is the
            // proxy's finding alone, so the endpoint is not also called unreachable.
            let at_proxy = matches!(
                ConnectOutcome::try_from(e.outcome),
                Ok(ConnectOutcome::ProxyUnreachable
                    | ConnectOutcome::ProxyRefused
                    | ConnectOutcome::ProxyAuthRequired)
            );
            if at_proxy {
                evidence.push(("proxy".into(), e.via.clone()));
                if !e.proxy_status.is_empty() {
                    evidence.push(("proxy_status".into(), e.proxy_status.clone()));
                }
                evidence.push(("error".into(), e.error.clone()));
                let answer = if e.proxy_status.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", e.proxy_status)
                };
                f.push(
                    Code::ProxyFailed,
                    severity,
                    format!("{} ({}) via {}: {cause}{answer}", e.name, e.address, e.via),
                    evidence,
                    observed,
                );
                continue;
            }
            evidence.push(("error".into(), e.error.clone()));
            if !matches!(e.via.as_str(), "" | "direct") {
                evidence.push(("via".into(), e.via.clone()));
            }
            f.push(
                Code::EndpointUnreachable,
                severity,
                format!("{} ({}) {cause}", e.name, e.address),
                evidence,
                observed,
            );
            continue;
        }
        let Some(tls) = &e.tls else { continue };
        // Interception is judged only where the endpoint names who must issue its chain
        // (every default endpoint does); `chain_verified` absent (a collector from
        // before it) leaves the judgement to `issuer_expected`, as it was.
        let not_verified = tls.chain_verified == Some(false);
        let intercepted =
            tls.issuer_checked && !tls.chain.is_empty() && (not_verified || !tls.issuer_expected);
        if tls.version_too_old {
            let via_proxy = !matches!(e.via.as_str(), "" | "direct");
            let (side, who) = if intercepted {
                (
                    OldTlsSide::Inspection,
                    "a TLS-inspecting device".to_string(),
                )
            } else if via_proxy {
                (
                    OldTlsSide::Proxy,
                    format!("the proxy {} or what is behind it", e.via),
                )
            } else {
                (OldTlsSide::Server, "the endpoint".to_string())
            };
            let mut evidence = base.clone();
            evidence.push(("protocol".into(), tls.protocol.clone()));
            evidence.push(("old_side".into(), who));
            if via_proxy {
                evidence.push(("via".into(), e.via.clone()));
            }
            evidence.push(("error".into(), tls.error.clone()));
            f.push_with(
                Code::TlsTooOld,
                Severity::Critical,
                format!("{} cannot negotiate TLS 1.2 or later", e.name),
                evidence,
                observed,
                remedy::tls_too_old(side),
            );
        }
        if intercepted {
            let leaf_issuer = tls.chain.first().map_or("", |c| c.issuer.as_str());
            let mut evidence = base;
            evidence.push(("leaf_issuer".into(), leaf_issuer.to_string()));
            evidence.push((
                "verified".into(),
                match tls.chain_verified {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "not checked",
                }
                .into(),
            ));
            evidence.push(("issuer_expected".into(), tls.issuer_expected.to_string()));
            evidence.push(("error".into(), tls.error.clone()));
            for (i, c) in tls.chain.iter().enumerate() {
                evidence.push((
                    format!("chain[{i}]"),
                    format!("{} issued by {}", c.subject, c.issuer),
                ));
            }
            let summary = if tls.issuer_expected {
                format!("{}: the chain does not verify: {}", e.name, tls.error)
            } else {
                format!("{} presents a chain from {leaf_issuer}", e.name)
            };
            f.push(
                Code::TlsIntercepted,
                Severity::Critical,
                summary,
                evidence,
                observed,
            );
        }
    }
}

fn backend_findings(f: &mut Findings, r: &Report, observed: i64) {
    for b in &r.backends {
        if b.http_status != 0 && b.http_status < 500 {
            continue;
        }
        let what = if b.http_status == 0 {
            b.error.clone()
        } else {
            format!("HTTP {}", b.http_status)
        };
        f.push(
            Code::BackendUnreachable,
            Severity::Warning,
            format!("{}: {what}", b.url),
            vec![
                ("url".into(), b.url.clone()),
                ("http_status".into(), b.http_status.to_string()),
                ("error".into(), b.error.clone()),
                ("latency_ms".into(), b.latency_ms.to_string()),
            ],
            observed,
        );
    }
}

/// A proxy address as compared: WinHTTP prints `host:port` where an `.exe.config`
/// writes `http://host:port/`, and both mean the same proxy.
fn normalise_proxy(p: &str) -> String {
    let p = p.trim().to_ascii_lowercase();
    let p = p.strip_prefix("http://").unwrap_or(&p);
    p.trim_end_matches('/').to_string()
}

/// The proxy a service's traffic really takes: its own `defaultProxy`, or the system
/// proxy when it defers to the default; `None` when that is not known.
fn effective_proxy(own: &str, uses_default: bool, system: &str) -> Option<String> {
    let p = if uses_default { system } else { own };
    (!p.trim().is_empty()).then(|| normalise_proxy(p))
}

fn proxy_findings(f: &mut Findings, r: &Report, observed: i64) {
    let Some(p) = &r.proxy else { return };
    // Compared as each service goes out, not as each file reads: a connector that
    // names a proxy beside an updater that defers to a direct system default is the
    // flowchart's mismatch too.
    let connector = effective_proxy(
        &p.connector_proxy,
        p.connector_uses_default,
        &p.system_proxy,
    );
    let updater = effective_proxy(&p.updater_proxy, p.updater_uses_default, &p.system_proxy);
    let (Some(connector), Some(updater)) = (connector, updater) else {
        return;
    };
    if connector != updater {
        let how = |own: &str, uses_default: bool, effective: &str| {
            if uses_default {
                format!("{effective} (the system default)")
            } else {
                own.to_string()
            }
        };
        f.push(
            Code::ProxyMismatch,
            Severity::Warning,
            format!(
                "connector uses {}, updater uses {}",
                how(&p.connector_proxy, p.connector_uses_default, &connector),
                how(&p.updater_proxy, p.updater_uses_default, &updater)
            ),
            vec![
                ("connector_proxy".into(), p.connector_proxy.clone()),
                ("updater_proxy".into(), p.updater_proxy.clone()),
                ("system_proxy".into(), p.system_proxy.clone()),
                ("connector_effective".into(), connector),
                ("updater_effective".into(), updater),
            ],
            observed,
        );
    }
}

fn version_findings(
    f: &mut Findings,
    r: &Report,
    observed: i64,
    t: &Thresholds,
    ctx: &GroupContext,
) {
    let Some(v) = r
        .version
        .as_ref()
        .and_then(|v| Version::parse(&v.connector_version))
    else {
        return;
    };
    let behind_min = t.min_version.as_ref().filter(|m| v < **m);
    let behind_group = ctx.newest_version.as_ref().filter(|n| v < **n);
    let (reference, why) = match (behind_min, behind_group) {
        (Some(m), _) => (m, "the configured minimum"),
        (None, Some(n)) => (n, "the newest in its group"),
        (None, None) => return,
    };
    f.push(
        Code::VersionBehind,
        Severity::Warning,
        format!("runs {v}, older than {why} ({reference})"),
        vec![
            ("version".into(), v.to_string()),
            ("reference".into(), reference.to_string()),
            ("reference_is".into(), why.into()),
        ],
        observed,
    );
}

/// Estimates the host's clock offset from the recent reports. Delivery delay only ever
/// adds to (receive - collect), so the offset closest to zero is the one least
/// inflated by the network or a spool; a slow link is never called skew.
pub fn clock_skew_estimate(entry: &StoredConnector) -> Option<i64> {
    offset_estimate(&entry.recent_offsets_ms)
}

/// The same estimate from (receive - collect) offsets.
pub fn offset_estimate(offsets_ms: &[i64]) -> Option<i64> {
    offsets_ms.iter().copied().min_by_key(|o| o.unsigned_abs())
}

fn clock_findings(f: &mut Findings, entry: &StoredConnector, observed: i64, cfg: &RulesConfig) {
    let Some(skew) = clock_skew_estimate(entry) else {
        return;
    };
    if skew.unsigned_abs() as i64 <= ms(cfg.max_clock_skew) {
        return;
    }
    let direction = if skew > 0 { "behind" } else { "ahead of" };
    f.push(
        Code::ClockSkew,
        Severity::Warning,
        format!(
            "host clock is {} {direction} the aggregator's",
            compact_ms(skew.abs())
        ),
        vec![
            ("offset_ms".into(), skew.to_string()),
            (
                "max_clock_skew".into(),
                humantime::format_duration(cfg.max_clock_skew).to_string(),
            ),
            ("reports".into(), entry.recent_offsets_ms.len().to_string()),
        ],
        observed,
    );
}

/// The most signatures remembered per connector. Ids are strings from the collector:
/// a faulty one must not grow an entry without bound.
const MAX_LOGGED: usize = 64;

/// The first time at which a logged error's finding is gone: its quiet window over.
fn quiet_from(l: &StoredLogged, t: &Thresholds) -> i64 {
    l.last_seen_ms
        .saturating_add(ms(t.log_quiet_after))
        .saturating_add(1)
}

/// What a connector remembers of its logged errors once a report arrives: `prev`
/// with the report's signatures, seen at `seen_ms`, added in.
///
/// A report carries only what was logged since the collector's previous cycle, so the
/// latest report alone would drop a finding one cycle after the error, fixed or not.
/// Instead the writer keeps, in the connector's registry entry, when each signature
/// was first and last seen and how often, and the rules show a finding while the last
/// time is within `log_quiet_after` of now. The entry is stored with the report in one
/// batch, so this memory survives restarts exactly as far as the reports do, and the
/// rules stay a function of the entry and the time. An occurrence more than
/// `log_quiet_after` after the previous one starts a new count; signatures quiet for
/// that long are forgotten.
pub fn record_logged(
    prev: &[StoredLogged],
    report: &Report,
    seen_ms: i64,
    quiet: std::time::Duration,
) -> Vec<StoredLogged> {
    let quiet = ms(quiet);
    let mut out: Vec<StoredLogged> = prev
        .iter()
        .filter(|l| seen_ms.saturating_sub(l.last_seen_ms) <= quiet)
        .cloned()
        .collect();
    for s in &report.log_signatures {
        match out.iter_mut().find(|l| l.id == s.id) {
            Some(l) => {
                l.count = l.count.saturating_add(u64::from(s.count));
                l.last_seen_ms = l.last_seen_ms.max(seen_ms);
                l.last_line.clone_from(&s.last_line);
            }
            None => out.push(StoredLogged {
                id: s.id.clone(),
                first_seen_ms: seen_ms,
                last_seen_ms: seen_ms,
                count: u64::from(s.count),
                last_line: s.last_line.clone(),
            }),
        }
    }
    if out.len() > MAX_LOGGED {
        out.sort_by_key(|l| std::cmp::Reverse(l.last_seen_ms));
        out.truncate(MAX_LOGGED);
    }
    out.sort_by(|a, b| {
        logsig::order(&a.id)
            .cmp(&logsig::order(&b.id))
            .then(a.id.cmp(&b.id))
    });
    out
}

fn log_findings(f: &mut Findings, entry: &StoredConnector, now_ms: i64, t: &Thresholds) {
    for l in &entry.logged {
        let clears = quiet_from(l, t);
        if now_ms >= clears {
            continue;
        }
        let what = logsig::find(&l.id).map_or(l.id.as_str(), |s| s.title);
        f.push_with(
            Code::KnownErrorLogged,
            Severity::Warning,
            format!(
                "{what} ({}): logged {} time(s) since {}",
                l.id,
                l.count,
                rfc3339(l.first_seen_ms)
            ),
            vec![
                ("signature".into(), l.id.clone()),
                ("count".into(), l.count.to_string()),
                ("first_seen".into(), rfc3339(l.first_seen_ms)),
                ("last_seen".into(), rfc3339(l.last_seen_ms)),
                ("clears_at".into(), rfc3339(clears)),
                ("last_line".into(), l.last_line.clone()),
            ],
            l.last_seen_ms,
            log_remediation(&l.id),
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

/// What one member adds to its group's evaluation. Kept by the rollup so that it can
/// be taken away again exactly when the member changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contribution {
    active: bool,
    healthy: bool,
    /// (severity, code) of each of its findings.
    findings: Vec<(Severity, Code)>,
    /// Its required endpoints and whether each was reached (active members only).
    endpoints: Vec<(String, bool)>,
    /// Its connector version (active members only).
    version: Option<String>,
}

/// What a member adds to its group, from its evaluation and entry.
pub fn contribution(eval: &ConnectorEval, entry: &StoredConnector) -> Contribution {
    let report = entry.latest.as_ref().filter(|_| eval.active);
    Contribution {
        active: eval.active,
        healthy: eval.active && eval.health != Health::Critical,
        findings: eval.findings.iter().map(|f| (f.severity, f.code)).collect(),
        endpoints: report
            .map(|r| {
                r.endpoints
                    .iter()
                    .filter(|e| e.required)
                    .map(|e| (e.name.clone(), e.outcome == ConnectOutcome::Ok as i32))
                    .collect()
            })
            .unwrap_or_default(),
        version: report.and(connector_version(entry)).map(|v| v.to_string()),
    }
}

/// A group's members, summed: everything the group rules look at. Members are added
/// and removed one at a time, so a group is re-evaluated without visiting them all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupFacts {
    total: u32,
    active: u32,
    healthy: u32,
    /// Members' findings by (severity, code), counted.
    findings: BTreeMap<(Severity, std::cmp::Reverse<Code>), u32>,
    /// Per required endpoint, the active members that reached it and those that did
    /// not, each counted once per check.
    endpoints: BTreeMap<String, (Tally, Tally)>,
    /// Per version, the active members running it.
    versions: BTreeMap<String, BTreeSet<String>>,
}

/// Member ids, counted.
type Tally = BTreeMap<String, u32>;

fn bump<K: Ord + Clone>(map: &mut BTreeMap<K, u32>, key: &K, add: bool) {
    if add {
        *map.entry(key.clone()).or_default() += 1;
    } else if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl GroupFacts {
    /// Adds a member.
    pub fn add(&mut self, id: &str, c: &Contribution) {
        self.apply(id, c, true);
    }

    /// Takes away a member added before with the same contribution.
    pub fn remove(&mut self, id: &str, c: &Contribution) {
        self.apply(id, c, false);
    }

    fn apply(&mut self, id: &str, c: &Contribution, add: bool) {
        let step = |n: &mut u32, counts: bool| {
            if counts {
                *n = if add { *n + 1 } else { n.saturating_sub(1) };
            }
        };
        step(&mut self.total, true);
        step(&mut self.active, c.active);
        step(&mut self.healthy, c.healthy);
        for (severity, code) in &c.findings {
            bump(
                &mut self.findings,
                &(*severity, std::cmp::Reverse(*code)),
                add,
            );
        }
        let id = id.to_string();
        for (name, ok) in &c.endpoints {
            let sides = self.endpoints.entry(name.clone()).or_default();
            bump(if *ok { &mut sides.0 } else { &mut sides.1 }, &id, add);
            if sides.0.is_empty() && sides.1.is_empty() {
                self.endpoints.remove(name);
            }
        }
        if let Some(v) = &c.version {
            let ids = self.versions.entry(v.clone()).or_default();
            if add {
                ids.insert(id);
            } else {
                ids.remove(&id);
                if ids.is_empty() {
                    self.versions.remove(v);
                }
            }
        }
    }
}

/// Evaluates a group from its members' evaluations and entries.
pub fn evaluate_group(
    name: &str,
    members: &[(&ConnectorEval, &StoredConnector)],
    now_ms: i64,
    cfg: &RulesConfig,
) -> GroupEval {
    let mut facts = GroupFacts::default();
    for (m, e) in members {
        facts.add(&m.id, &contribution(m, e));
    }
    evaluate_group_facts(name, &facts, now_ms, cfg)
}

/// Evaluates a group from its summed members.
pub fn evaluate_group_facts(
    name: &str,
    facts: &GroupFacts,
    now_ms: i64,
    cfg: &RulesConfig,
) -> GroupEval {
    let (total, active, healthy) = (facts.total, facts.active, facts.healthy);
    let min = cfg.for_group(name).min_healthy;
    let mut f = Findings::new(name, Scope::Group);
    let evidence = vec![
        ("members".into(), total.to_string()),
        ("active".into(), active.to_string()),
        ("healthy".into(), healthy.to_string()),
        ("min_healthy".into(), min.to_string()),
    ];
    // During the start-up grace a member that has not reported yet may still be
    // reconnecting, so too few healthy members is a finding only where a member that
    // did report is unhealthy.
    let starting = now_ms < cfg.startup.grace_end_ms();
    if total == 0 {
        // Never seen (or all retired): nothing is known to be down.
        f.push(
            Code::GroupEmpty,
            Severity::Info,
            "no member has reported".into(),
            evidence,
            now_ms,
        );
    } else if healthy == 0 {
        f.push(
            Code::GroupDown,
            Severity::Critical,
            format!("no healthy connector among {total}"),
            evidence,
            now_ms,
        );
    } else if healthy < min && !(starting && healthy == total) {
        f.push(
            Code::GroupNoRedundancy,
            Severity::Warning,
            format!("{healthy} healthy connector(s), fewer than {min}"),
            evidence,
            now_ms,
        );
    }
    split_reachability(&mut f, facts, now_ms);
    mixed_versions(&mut f, facts, now_ms);
    let findings = f.done();
    let own = findings
        .iter()
        .map(|f| (f.severity, std::cmp::Reverse(f.code)));
    let worst = own.clone().chain(facts.findings.keys().copied()).max();
    GroupEval {
        name: name.to_string(),
        active,
        total,
        healthy,
        health: Health::from_severities(worst.map(|(s, _)| s)),
        worst: worst.map(|(_, c)| c.0),
        findings,
    }
}

/// The reachability of each required endpoint, by endpoint name, across members:
/// (member id, reachable).
pub fn reachability<'a>(
    members: &[(&'a str, &'a StoredConnector)],
) -> BTreeMap<&'a str, Vec<(&'a str, bool)>> {
    let mut out: BTreeMap<&str, Vec<(&str, bool)>> = BTreeMap::new();
    for (id, entry) in members {
        let Some(r) = &entry.latest else { continue };
        for e in r.endpoints.iter().filter(|e| e.required) {
            out.entry(e.name.as_str())
                .or_default()
                .push((id, e.outcome == ConnectOutcome::Ok as i32));
        }
    }
    out
}

/// Member ids, each as often as counted, in id order.
fn names(ids: &Tally) -> String {
    ids.iter()
        .flat_map(|(id, n)| std::iter::repeat_n(id.as_str(), *n as usize))
        .collect::<Vec<_>>()
        .join(", ")
}

fn split_reachability(f: &mut Findings, facts: &GroupFacts, now_ms: i64) {
    for (endpoint, (ok, failing)) in &facts.endpoints {
        if ok.is_empty() || failing.is_empty() {
            continue;
        }
        let reached: u32 = ok.values().sum();
        let tried = reached + failing.values().sum::<u32>();
        f.push(
            Code::GroupSplitReachability,
            Severity::Warning,
            format!("{endpoint} is reachable from {reached} of {tried} members"),
            vec![
                ("endpoint".into(), endpoint.clone()),
                ("reachable_from".into(), names(ok)),
                ("unreachable_from".into(), names(failing)),
            ],
            now_ms,
        );
    }
}

fn mixed_versions(f: &mut Findings, facts: &GroupFacts, now_ms: i64) {
    if facts.versions.len() < 2 {
        return;
    }
    let evidence = facts
        .versions
        .iter()
        .map(|(v, ids)| {
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            (format!("version {v}"), ids.join(", "))
        })
        .collect();
    f.push(
        Code::GroupMixedVersions,
        Severity::Info,
        format!("members run {} different versions", facts.versions.len()),
        evidence,
        now_ms,
    );
}

#[cfg(test)]
mod tests;
