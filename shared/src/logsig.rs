//! The catalogue of known connector log errors: the ids the collector's log probe
//! reports in `LogSignature.id` and the aggregator's rules and remedies know. Both
//! sides take the list from here, so a signature cannot be reported that the
//! aggregator has no advice for; the tests on each side check that.

/// A known error of the connector troubleshooting guides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSignature {
    /// The id carried in reports, such as `kerberos-13019`.
    pub id: &'static str,
    /// What the error is, in a few words, for listings.
    pub title: &'static str,
}

const fn sig(id: &'static str, title: &'static str) -> LogSignature {
    LogSignature { id, title }
}

/// Every known signature, in report order: the connector's own registration and trust
/// first, then its link to the cloud service, Kerberos delegation, and last what end
/// users are shown (which the connector logs too).
pub const SIGNATURES: &[LogSignature] = &[
    sig("trust-cert-expired", "trust certificate expired"),
    sig("config-download-failed", "configuration download failed"),
    sig("service-unreachable", "cloud service unreachable"),
    sig(
        "registration-interrupted",
        "registration ended without signing in",
    ),
    sig(
        "registration-wrong-tenant",
        "registration with an account outside the tenant",
    ),
    sig("registration-proxy-disabled", "application proxy disabled"),
    sig(
        "registration-ports-blocked",
        "registration endpoint unreachable",
    ),
    sig("registration-denied", "registration denied: not an admin"),
    sig("registration-failed", "registration failed"),
    sig("execution-policy", "PowerShell script execution disabled"),
    sig(
        "connector-unauthorized",
        "client certificate did not reach the service",
    ),
    sig("kerberos-12008", "backend declined Kerberos tickets"),
    sig("kerberos-13016", "no UPN for Kerberos delegation"),
    sig("kerberos-13019", "domain controller declined Kerberos"),
    sig("kerberos-13020", "backend SPN not defined"),
    sig("kerberos-13022", "backend answered Kerberos with 401"),
    sig("website-cannot-display", "website cannot display the page"),
    sig("user-not-assigned", "user not assigned to the app"),
    sig("user-not-licensed", "user has no licence"),
    sig("connector-timed-out", "connector timed out"),
    sig("custom-domain-unresolved", "custom domain not found"),
    sig(
        "user-not-authorized-onprem",
        "user not authorized on-premises",
    ),
];

/// The catalogue entry of an id, if it is a known one.
pub fn find(id: &str) -> Option<&'static LogSignature> {
    SIGNATURES.iter().find(|s| s.id == id)
}

/// The place of an id in report order; unknown ids sort last.
pub fn order(id: &str) -> usize {
    SIGNATURES
        .iter()
        .position(|s| s.id == id)
        .unwrap_or(SIGNATURES.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_short() {
        for (i, s) in SIGNATURES.iter().enumerate() {
            assert_eq!(order(s.id), i, "{} is listed twice", s.id);
            assert!(s.id.len() <= 32 && s.id.is_ascii(), "{}", s.id);
            assert_eq!(find(s.id), Some(s));
        }
        assert_eq!(order("unheard-of"), SIGNATURES.len());
    }
}
