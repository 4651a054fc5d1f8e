//! Which findings alert when `[alert] codes` is left out, at which severity, and how
//! long each must hold before it fires: every critical finding, and the warnings that
//! foretell one. The README's findings table shows the same; a test keeps them equal.

use super::engine::{CodePolicy, Policy};
use connwatch_shared::finding::{Code, Severity};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How a code alerts by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultAlert {
    /// The least severity at which it alerts.
    pub least: Severity,
    /// How long the condition must hold before the alert fires (`for`).
    pub hold: Duration,
}

/// A network check fails for one cycle now and then (a dropped connection, a proxy or
/// a service restarting, as the updater does when it upgrades the connector): such a
/// condition must still hold after two reports at the default 30 s interval, that is
/// two or three evaluations, before it pages.
const NETWORK_HOLD: Duration = Duration::from_secs(60);

/// How `code` alerts when `[alert] codes` is not set; `None` when it does not.
/// Matched exhaustively, so a new code cannot be left out of this decision.
pub fn alerts_by_default(code: Code) -> Option<DefaultAlert> {
    let at = |least: Severity, hold: Duration| Some(DefaultAlert { least, hold });
    match code {
        // A certificate's state is read from the host, never measured over the
        // network, so it does not flap: its alerts fire at once, the warning window
        // included (it foretells the expiry that stops the connector).
        Code::TrustCertExpiring => at(Severity::Warning, Duration::ZERO),
        Code::TrustCertExpired | Code::TrustCertMissing | Code::TrustCertIssuer => {
            at(Severity::Critical, Duration::ZERO)
        }
        // `inactive_after` is its own hold.
        Code::Inactive => at(Severity::Warning, Duration::ZERO),
        Code::ServiceNotRunning
        | Code::EndpointUnreachable
        | Code::ProxyFailed
        | Code::TlsTooOld
        | Code::TlsIntercepted => at(Severity::Critical, NETWORK_HOLD),
        // A logged error appears in one report only (what was logged since the
        // previous cycle), so any hold would keep it from ever firing. Critical only:
        // most signatures are warnings that explain another finding.
        Code::KnownErrorLogged => at(Severity::Critical, Duration::ZERO),
        // The outage the applications' users see: paged at once. It follows from its
        // members' health, so a one-cycle failure of the only member shows here
        // without the hold its own alert has; that is the price of not delaying it.
        Code::GroupDown => at(Severity::Critical, Duration::ZERO),
        // One failure from an outage, not one yet: held like the checks behind it.
        Code::GroupNoRedundancy => at(Severity::Warning, NETWORK_HOLD),
        // Degradations that stop nothing by themselves: listed, not paged.
        Code::Retired
        | Code::UpdaterNotRunning
        | Code::BackendUnreachable
        | Code::ProxyMismatch
        | Code::VersionBehind
        | Code::ClockSkew
        | Code::ProbeFailed
        | Code::GroupSplitReachability
        | Code::GroupMixedVersions
        | Code::GroupEmpty
        | Code::UnassignedConnector => None,
    }
}

/// The severities at and above `least` that alert at all (info never does).
fn from(least: Severity) -> BTreeSet<Severity> {
    [Severity::Warning, Severity::Critical]
        .into_iter()
        .filter(|s| *s >= least)
        .collect()
}

/// The policy when nothing is configured: [`alerts_by_default`] for every code, and a
/// firing alert repeated every 4 hours.
pub fn default_policy() -> Policy {
    let codes: BTreeMap<Code, CodePolicy> = Code::ALL
        .into_iter()
        .filter_map(|code| {
            let d = alerts_by_default(code)?;
            Some((
                code,
                CodePolicy {
                    severities: from(d.least),
                    for_ms: i64::try_from(d.hold.as_millis()).unwrap_or(i64::MAX),
                },
            ))
        })
        .collect();
    Policy {
        codes,
        repeat_ms: 4 * 3_600_000,
    }
}

/// The text of the README's findings table for a code's default alerting.
pub fn describe(code: Code) -> String {
    match alerts_by_default(code) {
        None => "no".into(),
        Some(d) => format!(
            "{}, `for` {}",
            match d.least {
                Severity::Critical => "when critical",
                _ => "yes",
            },
            humantime::format_duration(d.hold)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_critical_code_alerts_by_default() {
        // Codes that can be critical, from the rules' catalogue.
        let critical = [
            Code::ServiceNotRunning,
            Code::TrustCertExpiring,
            Code::TrustCertExpired,
            Code::TrustCertMissing,
            Code::TrustCertIssuer,
            Code::EndpointUnreachable,
            Code::ProxyFailed,
            Code::TlsTooOld,
            Code::TlsIntercepted,
            Code::KnownErrorLogged,
            Code::GroupDown,
        ];
        let policy = default_policy();
        for code in critical {
            let p = policy.codes.get(&code);
            assert!(
                p.is_some_and(|p| p.severities.contains(&Severity::Critical)),
                "{code} does not alert when critical"
            );
        }
        let expiring = &policy.codes[&Code::TrustCertExpiring];
        assert!(expiring.severities.contains(&Severity::Warning));
        assert_eq!(expiring.for_ms, 0, "the certificate alert is never delayed");
    }

    #[test]
    fn the_readme_table_shows_the_defaults() {
        let readme = include_str!("../../../README.md");
        let mut rows = BTreeMap::new();
        for line in readme.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            // | `code` | severity | alerts by default | when |
            if let [_, code, _, alerts, _, _] = cells.as_slice()
                && let Some(code) = code.strip_prefix('`').and_then(|c| c.strip_suffix('`'))
                && let Some(code) = Code::parse(code)
            {
                rows.insert(code, alerts.to_string());
            }
        }
        for code in Code::ALL {
            assert_eq!(
                rows.get(&code).map(String::as_str),
                Some(describe(code).as_str()),
                "README findings table, row `{code}`"
            );
        }
    }
}
