//! The alert state machine, pure: (stored alerts, current findings, silences, now,
//! policy) -> changed alerts and the notifications to send. No I/O and no clock, so
//! every transition is table-tested.
//!
//! Per (code, subject): a condition appears -> pending (or firing at once when `for` is
//! zero); pending for `for` -> firing, notified once; firing past `repeat_interval`
//! since the last notification -> notified again; a severity change while firing ->
//! notified again; the condition clears -> resolved, notified if firing was; resolved
//! alerts are forgotten after [`RESOLVED_KEEP_MS`]. A silenced alert moves through the
//! same states but sends nothing; firing that was never announced is announced once
//! the silence ends.

use super::silence::{Silence, silenced_by};
use super::state::{Alert, Status, fingerprint};
use connwatch_shared::finding::{Code, Finding, Severity};
use std::collections::{BTreeMap, BTreeSet};

/// How long a resolved alert stays listed.
pub const RESOLVED_KEEP_MS: i64 = 3_600_000;

/// Which findings alert, and the timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Every code that alerts, with its severities and hold.
    pub codes: BTreeMap<Code, CodePolicy>,
    /// How often a still-firing alert is announced again.
    pub repeat_ms: i64,
}

/// How one code alerts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodePolicy {
    /// The severities at which it alerts.
    pub severities: BTreeSet<Severity>,
    /// How long its condition must hold before it fires (`for`).
    pub for_ms: i64,
}

impl Policy {
    /// The same rule for every code of `codes`.
    pub fn uniform(
        codes: impl IntoIterator<Item = Code>,
        severities: &BTreeSet<Severity>,
        for_ms: i64,
        repeat_ms: i64,
    ) -> Policy {
        Policy {
            codes: codes
                .into_iter()
                .map(|c| {
                    let p = CodePolicy {
                        severities: severities.clone(),
                        for_ms,
                    };
                    (c, p)
                })
                .collect(),
            repeat_ms,
        }
    }

    /// Whether a finding alerts.
    pub fn alerts_on(&self, f: &Finding) -> bool {
        self.codes
            .get(&f.code)
            .is_some_and(|p| p.severities.contains(&f.severity))
    }

    /// How long a code's condition must hold before it fires.
    pub fn for_ms(&self, code: Code) -> i64 {
        self.codes.get(&code).map_or(0, |p| p.for_ms)
    }
}

/// What a notification announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Started firing, or its severity changed, or a silence over it ended.
    Firing,
    /// Still firing after `repeat_interval`.
    Repeat,
    /// The condition cleared.
    Resolved,
}

impl Kind {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Firing => "firing",
            Kind::Repeat => "repeat",
            Kind::Resolved => "resolved",
        }
    }
}

/// One message for the sinks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// What it announces.
    pub kind: Kind,
    /// The alert after the transition.
    pub alert: Alert,
    /// When it was decided.
    pub at_ms: i64,
}

impl Notification {
    /// A unique id receivers can deduplicate on: at-least-once delivery may repeat it.
    pub fn id(&self) -> String {
        format!(
            "{}-{}-{}",
            self.alert.fingerprint,
            self.kind.as_str(),
            self.at_ms
        )
    }
}

/// The outcome of one evaluation.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Step {
    /// Alerts created or changed, to store.
    pub upserts: Vec<Alert>,
    /// Fingerprints of alerts to forget.
    pub removed: Vec<String>,
    /// What to send.
    pub notifications: Vec<Notification>,
}

/// A finding that alerts, with the group it belongs to.
#[derive(Debug, Clone)]
pub struct Condition<'a> {
    /// The finding.
    pub finding: &'a Finding,
    /// The connector's group, or the group itself.
    pub group: &'a str,
}

/// Evaluates one step.
pub fn step(
    alerts: &BTreeMap<String, Alert>,
    conditions: &[Condition<'_>],
    silences: &[Silence],
    now_ms: i64,
    policy: &Policy,
) -> Step {
    // One alert per (code, subject): a connector with two failing certificates has one
    // alert, carrying the worst of them.
    let mut current: BTreeMap<String, &Condition<'_>> = BTreeMap::new();
    for c in conditions.iter().filter(|c| policy.alerts_on(c.finding)) {
        let fp = fingerprint(c.finding.code, &c.finding.subject);
        match current.get(&fp) {
            Some(prev) if prev.finding.severity >= c.finding.severity => {}
            _ => {
                current.insert(fp, c);
            }
        }
    }
    let mut out = Step::default();
    for (fp, c) in &current {
        let before = alerts.get(fp);
        let mut a = match before {
            Some(a) if a.status != Status::Resolved => a.clone(),
            _ => Alert {
                fingerprint: fp.clone(),
                code: c.finding.code,
                severity: c.finding.severity,
                scope: c.finding.scope,
                subject: c.finding.subject.clone(),
                group: c.group.to_string(),
                summary: String::new(),
                evidence: Vec::new(),
                remediation: String::new(),
                status: Status::Pending,
                active_since_ms: now_ms,
                firing_since_ms: 0,
                resolved_at_ms: 0,
                last_notified_ms: 0,
                notified_severity: None,
            },
        };
        a.severity = c.finding.severity;
        a.group = c.group.to_string();
        a.summary = c.finding.summary.clone();
        a.evidence = c.finding.evidence.clone();
        a.remediation = c.finding.remediation.to_string();
        if a.status == Status::Pending && now_ms - a.active_since_ms >= policy.for_ms(a.code) {
            a.status = Status::Firing;
            a.firing_since_ms = now_ms;
        }
        if a.status == Status::Firing && silenced_by(silences, &a.labels(), now_ms).is_none() {
            // `notified_severity` is `None` until the episode's first notification.
            let kind = if a.notified_severity != Some(a.severity) {
                Some(Kind::Firing)
            } else if now_ms - a.last_notified_ms >= policy.repeat_ms {
                Some(Kind::Repeat)
            } else {
                None
            };
            if let Some(kind) = kind {
                a.last_notified_ms = now_ms;
                a.notified_severity = Some(a.severity);
                out.notifications.push(Notification {
                    kind,
                    alert: a.clone(),
                    at_ms: now_ms,
                });
            }
        }
        if before != Some(&a) {
            out.upserts.push(a);
        }
    }
    for (fp, a) in alerts {
        if current.contains_key(fp) {
            continue;
        }
        match a.status {
            Status::Pending => out.removed.push(fp.clone()),
            Status::Firing => {
                let mut r = a.clone();
                r.status = Status::Resolved;
                r.resolved_at_ms = now_ms;
                // Only what was announced is announced over, silenced or not.
                if r.notified_severity.is_some() {
                    out.notifications.push(Notification {
                        kind: Kind::Resolved,
                        alert: r.clone(),
                        at_ms: now_ms,
                    });
                }
                out.upserts.push(r);
            }
            Status::Resolved => {
                if now_ms - a.resolved_at_ms >= RESOLVED_KEEP_MS {
                    out.removed.push(fp.clone());
                }
            }
        }
    }
    out
}

/// Applies a step's changes to the alert map.
pub fn apply(alerts: &mut BTreeMap<String, Alert>, step: &Step) {
    for a in &step.upserts {
        alerts.insert(a.fingerprint.clone(), a.clone());
    }
    for fp in &step.removed {
        alerts.remove(fp);
    }
}

#[cfg(test)]
mod tests;
