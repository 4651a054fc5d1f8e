//! The alert model: one alert per (code, connector or group), its lifecycle status, the
//! labels sinks and silences match on, and its stable fingerprint.

use connwatch_shared::finding::{Code, Scope, Severity};
use std::collections::BTreeMap;

/// Where an alert is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// The condition holds but has not held for `for` yet.
    Pending,
    /// The condition holds and has held long enough.
    Firing,
    /// The condition cleared; kept a while so operators can see what ended.
    Resolved,
}

impl Status {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }

    /// Parses a lower-case name.
    pub fn parse(text: &str) -> Option<Status> {
        [Status::Pending, Status::Firing, Status::Resolved]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// One alert and its lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// Stable identity: a hash of the code and the subject.
    pub fingerprint: String,
    /// The finding code.
    pub code: Code,
    /// The severity of the latest finding.
    pub severity: Severity,
    /// Connector or group.
    pub scope: Scope,
    /// The connector id or group name.
    pub subject: String,
    /// The group the subject belongs to (the subject itself for group alerts).
    pub group: String,
    /// The latest finding's one-line summary.
    pub summary: String,
    /// The latest finding's evidence.
    pub evidence: Vec<(String, String)>,
    /// What to do.
    pub remediation: String,
    /// Lifecycle status.
    pub status: Status,
    /// When the condition was first seen in this episode.
    pub active_since_ms: i64,
    /// When it started firing (0 while pending).
    pub firing_since_ms: i64,
    /// When it resolved (0 unless resolved).
    pub resolved_at_ms: i64,
    /// When a firing or repeat notification was last sent (0: never in this episode).
    pub last_notified_ms: i64,
    /// The severity the last notification carried; `None` until the episode's first.
    pub notified_severity: Option<Severity>,
}

/// The fingerprint of (code, subject): FNV-1a 64, hex. Stable across builds and
/// platforms, unlike `std`'s hasher, because it is stored and shown to operators.
pub fn fingerprint(code: Code, subject: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in code
        .as_str()
        .bytes()
        .chain(std::iter::once(0))
        .chain(subject.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// `trust-cert-expiring` as `ConnwatchTrustCertExpiring`, the conventional shape of an
/// `alertname`.
pub fn alert_name(code: Code) -> String {
    let mut out = String::from("Connwatch");
    for part in code.as_str().split('-') {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    out
}

impl Alert {
    /// The labels that identify the alert to sinks and silences. Evidence that changes
    /// over an alert's life (a thumbprint, days left) is an annotation, not a label, so
    /// the identity stays put.
    pub fn labels(&self) -> BTreeMap<&'static str, String> {
        let mut l = BTreeMap::new();
        l.insert("alertname", alert_name(self.code));
        l.insert("code", self.code.as_str().to_string());
        l.insert("severity", self.severity.as_str().to_string());
        l.insert("scope", self.scope.as_str().to_string());
        l.insert("group", self.group.clone());
        if self.scope == Scope::Connector {
            l.insert("connector", self.subject.clone());
        }
        l.insert("source", "connwatch".to_string());
        l
    }

    /// The evidence value under `key`.
    pub fn evidence(&self, key: &str) -> Option<&str> {
        self.evidence
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Human annotations: summary, remediation and every piece of evidence.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        let mut a: BTreeMap<String, String> = self.evidence.iter().cloned().collect();
        a.insert(
            "summary".into(),
            format!("{}: {}", self.subject, self.summary),
        );
        a.insert("remediation".into(), self.remediation.clone());
        a.insert("fingerprint".into(), self.fingerprint.clone());
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_stable_and_names_follow_convention() {
        assert_eq!(
            fingerprint(Code::TrustCertExpiring, "conn-1"),
            fingerprint(Code::TrustCertExpiring, "conn-1")
        );
        assert_ne!(
            fingerprint(Code::TrustCertExpiring, "conn-1"),
            fingerprint(Code::TrustCertExpired, "conn-1")
        );
        // Pinned: the fingerprint is stored and must not change between builds.
        assert_eq!(fingerprint(Code::Inactive, "a").len(), 16);
        assert_eq!(
            alert_name(Code::TrustCertExpiring),
            "ConnwatchTrustCertExpiring"
        );
        assert_eq!(Status::parse("firing"), Some(Status::Firing));
    }
}
