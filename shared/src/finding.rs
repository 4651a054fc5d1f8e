//! The findings model: what the rules conclude about a connector or a group, with a
//! stable code, a severity, the evidence behind it and what to do about it.

use serde::Serialize;
use std::fmt;

/// How bad a finding is. Ordered: `Info < Warning < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; nothing is broken.
    Info,
    /// Something will break or is degraded.
    Warning,
    /// Something is broken now.
    Critical,
}

impl Severity {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    /// Parses `info`, `warning` or `critical`.
    pub fn parse(text: &str) -> Option<Severity> {
        match text {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The overall health of a connector or group, from its worst finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// No finding worse than info.
    Healthy,
    /// At least one warning.
    Warning,
    /// At least one critical finding.
    Critical,
}

impl Health {
    /// The health implied by a set of findings' severities.
    pub fn from_severities(severities: impl IntoIterator<Item = Severity>) -> Health {
        match severities.into_iter().max() {
            Some(Severity::Critical) => Health::Critical,
            Some(Severity::Warning) => Health::Warning,
            _ => Health::Healthy,
        }
    }
}

/// Whether a finding is about one connector or a whole group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// About one connector; the subject is its id.
    Connector,
    /// About a connector group; the subject is its name.
    Group,
}

impl Scope {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Connector => "connector",
            Scope::Group => "group",
        }
    }
}

/// The catalogue of findings. Codes are stable: scripts and alert routes match on them.
///
/// Declared in the order findings of one severity are listed in (the derived `Ord`):
/// a group being down comes first, since it is what an operator acts on before any
/// member's finding; [`Code::ALL`] is the catalogue's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Code {
    /// No active, healthy connector in a group that has members.
    GroupDown,
    /// No report for longer than `inactive_after`.
    Inactive,
    /// Inactive for `retire_after`: out of the live views, history kept.
    Retired,
    /// The connector service is missing, stopped or disabled.
    ServiceNotRunning,
    /// The updater service is missing or stopped.
    UpdaterNotRunning,
    /// The trust certificate expires within the warning window.
    TrustCertExpiring,
    /// The trust certificate has expired.
    TrustCertExpired,
    /// No trust certificate matches the configured thumbprint or file.
    TrustCertMissing,
    /// The trust certificate's issuer is not the expected registration CA.
    TrustCertIssuer,
    /// A required endpoint cannot be reached.
    EndpointUnreachable,
    /// The connector's outbound proxy cannot be reached, refuses a required endpoint,
    /// or asks for credentials.
    ProxyFailed,
    /// A TLS handshake cannot negotiate TLS 1.2 or later.
    TlsTooOld,
    /// An endpoint presents a chain that does not verify, or is not signed up to an
    /// expected root: TLS inspection.
    TlsIntercepted,
    /// An internal application URL fails from the connector host.
    BackendUnreachable,
    /// The connector and its updater use different proxy settings.
    ProxyMismatch,
    /// The connector runs an older version than its group or the minimum.
    VersionBehind,
    /// The host clock differs from the aggregator's by more than the limit.
    ClockSkew,
    /// A known error signature appeared in the connector's log.
    KnownErrorLogged,
    /// A probe could not run.
    ProbeFailed,
    /// Fewer than the minimum number of healthy connectors in the group.
    GroupNoRedundancy,
    /// Members of a group disagree on which endpoints they can reach.
    GroupSplitReachability,
    /// Members of a group run different connector versions.
    GroupMixedVersions,
    /// A declared group has no live member: none has reported yet, or all retired.
    GroupEmpty,
    /// A connector reports a group the aggregator does not know.
    UnassignedConnector,
}

impl Code {
    /// Every code, in catalogue order.
    pub const ALL: [Code; 24] = [
        Code::Inactive,
        Code::Retired,
        Code::ServiceNotRunning,
        Code::UpdaterNotRunning,
        Code::TrustCertExpiring,
        Code::TrustCertExpired,
        Code::TrustCertMissing,
        Code::TrustCertIssuer,
        Code::EndpointUnreachable,
        Code::ProxyFailed,
        Code::TlsTooOld,
        Code::TlsIntercepted,
        Code::BackendUnreachable,
        Code::ProxyMismatch,
        Code::VersionBehind,
        Code::ClockSkew,
        Code::KnownErrorLogged,
        Code::ProbeFailed,
        Code::GroupDown,
        Code::GroupNoRedundancy,
        Code::GroupSplitReachability,
        Code::GroupMixedVersions,
        Code::GroupEmpty,
        Code::UnassignedConnector,
    ];

    /// The stable kebab-case code.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Inactive => "inactive",
            Code::Retired => "retired",
            Code::ServiceNotRunning => "service-not-running",
            Code::UpdaterNotRunning => "updater-not-running",
            Code::TrustCertExpiring => "trust-cert-expiring",
            Code::TrustCertExpired => "trust-cert-expired",
            Code::TrustCertMissing => "trust-cert-missing",
            Code::TrustCertIssuer => "trust-cert-issuer",
            Code::EndpointUnreachable => "endpoint-unreachable",
            Code::ProxyFailed => "proxy-failed",
            Code::TlsTooOld => "tls-too-old",
            Code::TlsIntercepted => "tls-intercepted",
            Code::BackendUnreachable => "backend-unreachable",
            Code::ProxyMismatch => "proxy-mismatch",
            Code::VersionBehind => "version-behind",
            Code::ClockSkew => "clock-skew",
            Code::KnownErrorLogged => "known-error-logged",
            Code::ProbeFailed => "probe-failed",
            Code::GroupDown => "group-down",
            Code::GroupNoRedundancy => "group-no-redundancy",
            Code::GroupSplitReachability => "group-split-reachability",
            Code::GroupMixedVersions => "group-mixed-versions",
            Code::GroupEmpty => "group-empty",
            Code::UnassignedConnector => "unassigned-connector",
        }
    }

    /// Whether the code is about a whole group rather than one connector.
    pub fn is_group_level(self) -> bool {
        matches!(
            self,
            Code::GroupDown
                | Code::GroupNoRedundancy
                | Code::GroupSplitReachability
                | Code::GroupMixedVersions
                | Code::GroupEmpty
        )
    }

    /// Parses a stable code.
    pub fn parse(text: &str) -> Option<Code> {
        Code::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One conclusion about a connector or group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What kind of problem.
    pub code: Code,
    /// How bad.
    pub severity: Severity,
    /// Connector or group.
    pub scope: Scope,
    /// The connector id or group name.
    pub subject: String,
    /// One line saying what is wrong, with the key fact.
    pub summary: String,
    /// The measured facts, as key/value pairs.
    pub evidence: Vec<(String, String)>,
    /// What to do about it.
    pub remediation: &'static str,
    /// When the facts were measured (ms since the Unix epoch).
    pub observed_at_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_health_follows_the_worst_severity() {
        for code in Code::ALL {
            assert_eq!(Code::parse(code.as_str()), Some(code));
        }
        assert_eq!(Health::from_severities([]), Health::Healthy);
        assert_eq!(
            Health::from_severities([Severity::Info, Severity::Critical, Severity::Warning]),
            Health::Critical
        );
    }
}
