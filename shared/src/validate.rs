//! Checks a report from the wire before anything is stored: sizes, counts, ranges and
//! timestamps. A report that fails is rejected for good, with a sentence saying what
//! was wrong, so the collector can drop it instead of resending it forever.

use crate::time::UnixMs;
use crate::wire::{self, Report};
use thiserror::Error;

/// The most entries any repeated field of a report may have.
pub const MAX_REPEATED: usize = 256;
/// The longest string field of a report, in bytes.
pub const MAX_STRING: usize = 4096;
/// How far a report's collection time may lie after the time it is judged against: the
/// aggregator's clock for a report without `sent_at_ms`, else its own send time.
pub const MAX_FUTURE_MS: i64 = 24 * 3_600_000;
/// How far in the past a report's collection time may lie (a spool may hold old ones).
pub const MAX_PAST_MS: i64 = 90 * 24 * 3_600_000;

/// Why a report was rejected.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ReportError {
    /// Sequence numbers start at 1.
    #[error("seq 0 is not allowed: sequence numbers start at 1")]
    ZeroSeq,
    /// A repeated field is too long.
    #[error("field `{field}` has {count} entries; at most {MAX_REPEATED} are allowed")]
    TooMany {
        /// The field.
        field: &'static str,
        /// How many entries it had.
        count: usize,
    },
    /// A string field is too long.
    #[error("field `{field}` is {len} bytes long; at most {MAX_STRING} are allowed")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// The collection time is implausible.
    #[error(
        "collected_at {collected_at_ms} ms is {why} the aggregator's clock ({now_ms} ms); check the collector host's clock"
    )]
    BadTime {
        /// The report's collection time.
        collected_at_ms: UnixMs,
        /// The aggregator's time.
        now_ms: UnixMs,
        /// "more than a day ahead of" or "more than 90 days behind".
        why: &'static str,
    },
    /// The collection time does not fit the send time, both on the host's clock.
    #[error(
        "collected_at {collected_at_ms} ms is {why} sent_at {sent_at_ms} ms; the report's times are not plausible"
    )]
    BadAge {
        /// The report's collection time.
        collected_at_ms: UnixMs,
        /// The report's send time.
        sent_at_ms: UnixMs,
        /// "more than a day after" or "more than 90 days before".
        why: &'static str,
    },
    /// An enum field holds a value this version does not know.
    #[error("field `{field}` holds unknown value {value}; upgrade the aggregator or the collector")]
    UnknownEnum {
        /// The field.
        field: &'static str,
        /// The value.
        value: i32,
    },
    /// A certificate time no certificate can carry (X.509 times run from 1950 to 9999).
    #[error(
        "field `{field}` holds {value} ms, which is no certificate's time (1950 to 9999); the collector read the certificate wrongly"
    )]
    AbsurdTime {
        /// The field.
        field: &'static str,
        /// The value.
        value: i64,
    },
    /// The group name is not a valid name.
    #[error(
        "group `{0}` is not a valid group name: use 1 to 64 letters, digits, `.`, `_` or `-` in the collector's config"
    )]
    BadGroup(String),
}

fn repeated(field: &'static str, count: usize) -> Result<(), ReportError> {
    if count > MAX_REPEATED {
        return Err(ReportError::TooMany { field, count });
    }
    Ok(())
}

fn string(field: &'static str, s: &str) -> Result<(), ReportError> {
    if s.len() > MAX_STRING {
        return Err(ReportError::TooLong {
            field,
            len: s.len(),
        });
    }
    Ok(())
}

/// A certificate time in milliseconds since the Unix epoch: 0 (not known) or within
/// what X.509 can express, so a day count can never overflow or mislead.
fn cert_time(field: &'static str, value: i64) -> Result<(), ReportError> {
    // 1950-01-01 and 9999-12-31T23:59:59Z.
    const EARLIEST: i64 = -631_152_000_000;
    const LATEST: i64 = 253_402_300_799_000;
    if value != 0 && !(EARLIEST..=LATEST).contains(&value) {
        return Err(ReportError::AbsurdTime { field, value });
    }
    Ok(())
}

fn known<E: TryFrom<i32>>(field: &'static str, value: i32) -> Result<(), ReportError> {
    E::try_from(value)
        .map(|_| ())
        .map_err(|_| ReportError::UnknownEnum { field, value })
}

/// The host clock's offset from the aggregator's as one report received at
/// `received_ms` shows it (positive: the host is behind): receive time minus send time,
/// which only network delay inflates. A report without a send time (from an older
/// collector) falls back to its collection time, which the cycle's duration and any
/// time in the spool inflate too.
pub fn clock_offset_ms(r: &Report, received_ms: UnixMs) -> i64 {
    let sent = if r.sent_at_ms != 0 {
        r.sent_at_ms
    } else {
        r.collected_at_ms
    };
    received_ms.saturating_sub(sent)
}

/// Validates a report received at `now_ms`.
pub fn validate_report(r: &Report, now_ms: UnixMs) -> Result<(), ReportError> {
    if r.seq == 0 {
        return Err(ReportError::ZeroSeq);
    }
    if r.sent_at_ms != 0 {
        // The host stamped both times on its own clock, so the report's age is judged
        // there; how far that clock is from ours is a fact about the host (clock
        // skew, shown as a finding), not a fault of the report. Refusing it would
        // leave the connector looking silent, with the wrong advice.
        if r.sent_at_ms < 0 {
            return Err(ReportError::BadAge {
                collected_at_ms: r.collected_at_ms,
                sent_at_ms: r.sent_at_ms,
                why: "paired with a negative",
            });
        }
        if r.collected_at_ms > r.sent_at_ms.saturating_add(MAX_FUTURE_MS) {
            return Err(ReportError::BadAge {
                collected_at_ms: r.collected_at_ms,
                sent_at_ms: r.sent_at_ms,
                why: "more than a day after",
            });
        }
        if r.collected_at_ms < r.sent_at_ms.saturating_sub(MAX_PAST_MS) {
            return Err(ReportError::BadAge {
                collected_at_ms: r.collected_at_ms,
                sent_at_ms: r.sent_at_ms,
                why: "more than 90 days before",
            });
        }
    } else {
        if r.collected_at_ms > now_ms.saturating_add(MAX_FUTURE_MS) {
            return Err(ReportError::BadTime {
                collected_at_ms: r.collected_at_ms,
                now_ms,
                why: "more than a day ahead of",
            });
        }
        if r.collected_at_ms < now_ms.saturating_sub(MAX_PAST_MS) {
            return Err(ReportError::BadTime {
                collected_at_ms: r.collected_at_ms,
                now_ms,
                why: "more than 90 days behind",
            });
        }
    }
    if crate::identity::validate_name(&r.group).is_err() {
        let mut g = r.group.clone();
        g.truncate(80);
        return Err(ReportError::BadGroup(g));
    }
    string("collector_version", &r.collector_version)?;
    repeated("services", r.services.len())?;
    repeated("trust_certs", r.trust_certs.len())?;
    repeated("endpoints", r.endpoints.len())?;
    repeated("backends", r.backends.len())?;
    repeated("log_signatures", r.log_signatures.len())?;
    repeated("probe_errors", r.probe_errors.len())?;
    if let Some(h) = &r.host {
        for (f, s) in [
            ("host.hostname", &h.hostname),
            ("host.os_name", &h.os_name),
            ("host.os_version", &h.os_version),
        ] {
            string(f, s)?;
        }
    }
    for s in &r.services {
        string("services.name", &s.name)?;
        string("services.source", &s.source)?;
        known::<wire::ServiceRole>("services.role", s.role)?;
        known::<wire::ServiceState>("services.state", s.state)?;
        known::<wire::StartType>("services.start_type", s.start_type)?;
    }
    for c in &r.trust_certs {
        for (f, s) in [
            ("trust_certs.source", &c.source),
            ("trust_certs.subject", &c.subject),
            ("trust_certs.issuer", &c.issuer),
            ("trust_certs.serial", &c.serial),
            ("trust_certs.thumbprint", &c.thumbprint),
            ("trust_certs.expected_thumbprint", &c.expected_thumbprint),
            ("trust_certs.signature_algorithm", &c.signature_algorithm),
            ("trust_certs.error", &c.error),
        ] {
            string(f, s)?;
        }
        cert_time("trust_certs.not_before_ms", c.not_before_ms)?;
        cert_time("trust_certs.not_after_ms", c.not_after_ms)?;
    }
    for e in &r.endpoints {
        string("endpoints.name", &e.name)?;
        string("endpoints.address", &e.address)?;
        string("endpoints.error", &e.error)?;
        string("endpoints.via", &e.via)?;
        string("endpoints.proxy_status", &e.proxy_status)?;
        known::<wire::ConnectOutcome>("endpoints.outcome", e.outcome)?;
        if let Some(tls) = &e.tls {
            repeated("endpoints.tls.chain", tls.chain.len())?;
            string("endpoints.tls.error", &tls.error)?;
            for c in &tls.chain {
                string("endpoints.tls.chain.subject", &c.subject)?;
                string("endpoints.tls.chain.issuer", &c.issuer)?;
            }
        }
    }
    for b in &r.backends {
        string("backends.url", &b.url)?;
        string("backends.error", &b.error)?;
    }
    if let Some(p) = &r.proxy {
        for (f, s) in [
            ("proxy.connector_proxy", &p.connector_proxy),
            ("proxy.updater_proxy", &p.updater_proxy),
            ("proxy.system_proxy", &p.system_proxy),
        ] {
            string(f, s)?;
        }
    }
    for l in &r.log_signatures {
        string("log_signatures.id", &l.id)?;
        string("log_signatures.last_line", &l.last_line)?;
    }
    if let Some(v) = &r.version {
        string("version.connector_version", &v.connector_version)?;
        string("version.updater_version", &v.updater_version)?;
        string("version.layout", &v.layout)?;
    }
    for p in &r.probe_errors {
        string("probe_errors.probe", &p.probe)?;
        string("probe_errors.reason", &p.reason)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn ok_report() -> Report {
        Report {
            seq: 1,
            collected_at_ms: NOW,
            group: "eu".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_plain_report_passes() {
        assert_eq!(validate_report(&ok_report(), NOW), Ok(()));
    }

    #[test]
    fn a_host_clock_days_off_is_accepted_when_the_report_says_when_it_was_sent() {
        for off in [-2 * 86_400_000, 2 * 86_400_000, 200 * 86_400_000] {
            let mut r = ok_report();
            r.collected_at_ms = NOW + off - 2_000;
            r.sent_at_ms = NOW + off;
            assert_eq!(validate_report(&r, NOW), Ok(()), "{off}");
            assert_eq!(clock_offset_ms(&r, NOW + 30), 30 - off);
        }
        // Without a send time, the collection time stands in for it.
        let mut old = ok_report();
        old.collected_at_ms = NOW - 2_000;
        assert_eq!(clock_offset_ms(&old, NOW), 2_000);
        old.collected_at_ms = NOW + 2 * 86_400_000;
        assert!(validate_report(&old, NOW).is_err());
    }

    #[test]
    fn proxy_outcomes_are_known_values() {
        for outcome in [
            wire::ConnectOutcome::ProxyUnreachable,
            wire::ConnectOutcome::ProxyRefused,
            wire::ConnectOutcome::ProxyAuthRequired,
        ] {
            let mut r = ok_report();
            r.endpoints = vec![wire::EndpointCheck {
                outcome: outcome as i32,
                via: "proxy.contoso.com:8080".into(),
                proxy_status: "HTTP/1.1 403 Forbidden".into(),
                ..Default::default()
            }];
            assert_eq!(validate_report(&r, NOW), Ok(()), "{outcome:?}");
        }
    }

    #[test]
    fn each_class_of_bad_report_is_named() {
        type Mutation = Box<dyn Fn(&mut Report)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|r| r.seq = 0), "seq 0"),
            (
                Box::new(|r| r.collected_at_ms = NOW + MAX_FUTURE_MS + 1),
                "ahead",
            ),
            (
                Box::new(|r| r.collected_at_ms = NOW - MAX_PAST_MS - 1),
                "behind",
            ),
            (
                Box::new(|r| {
                    r.sent_at_ms = NOW;
                    r.collected_at_ms = NOW + MAX_FUTURE_MS + 1;
                }),
                "after sent_at",
            ),
            (
                Box::new(|r| {
                    r.sent_at_ms = NOW;
                    r.collected_at_ms = NOW - MAX_PAST_MS - 1;
                }),
                "before sent_at",
            ),
            (Box::new(|r| r.group = "a b".into()), "group"),
            (
                Box::new(|r| r.collector_version = "x".repeat(MAX_STRING + 1)),
                "collector_version",
            ),
            (
                Box::new(|r| r.endpoints = vec![Default::default(); MAX_REPEATED + 1]),
                "endpoints",
            ),
            (
                Box::new(|r| {
                    r.services = vec![wire::ServiceStatus {
                        state: 42,
                        ..Default::default()
                    }]
                }),
                "services.state",
            ),
            (
                Box::new(|r| {
                    r.endpoints = vec![wire::EndpointCheck {
                        outcome: 99,
                        ..Default::default()
                    }]
                }),
                "endpoints.outcome",
            ),
            (
                Box::new(|r| {
                    r.endpoints = vec![wire::EndpointCheck {
                        proxy_status: "x".repeat(MAX_STRING + 1),
                        ..Default::default()
                    }]
                }),
                "endpoints.proxy_status",
            ),
            (
                Box::new(|r| {
                    r.trust_certs = vec![wire::TrustCertificate {
                        not_after_ms: i64::MIN,
                        ..Default::default()
                    }]
                }),
                "trust_certs.not_after_ms",
            ),
            (
                Box::new(|r| {
                    r.trust_certs = vec![wire::TrustCertificate {
                        not_before_ms: i64::MAX,
                        ..Default::default()
                    }]
                }),
                "no certificate's time",
            ),
        ];
        for (mutate, needle) in cases {
            let mut r = ok_report();
            mutate(&mut r);
            let err = validate_report(&r, NOW).expect_err(needle).to_string();
            assert!(err.contains(needle), "{err} should mention {needle}");
        }
    }
}
