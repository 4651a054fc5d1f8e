//! A report as a human checklist, one line per probe result: what
//! `connwatch-collector probe` prints on a host and `connwatch-aggregator connector`
//! shows for a connector's latest report.

use crate::time::{compact_ms, now_ms, rfc3339};
use crate::wire::{ConnectOutcome, Report, ServiceState};
use connwatch_proto::enum_names::{connect_outcome_name, service_role_name, service_state_name};
use std::fmt::Write;

/// Renders a report as a checklist.
pub fn report(report: &Report) -> String {
    let mut out = String::new();
    let now = now_ms();
    let _ = writeln!(
        out,
        "report {}  group {}  collected {}",
        report.seq,
        report.group,
        rfc3339(report.collected_at_ms)
    );
    if let Some(h) = &report.host {
        let _ = writeln!(
            out,
            "host      {} ({} {}), up {}, memory {}/{} MiB",
            h.hostname,
            h.os_name,
            h.os_version,
            compact_ms(
                i64::try_from(h.uptime_s)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(1000)
            ),
            h.memory_used_bytes >> 20,
            h.memory_total_bytes >> 20
        );
    }
    let _ = writeln!(
        out,
        "\n{:<8} {:<34} {:<14} DETAIL",
        "CHECK", "NAME", "RESULT"
    );
    for s in &report.services {
        let ok = s.state == ServiceState::Running as i32;
        let detail = if ok {
            format!(
                "pid {} ({}), up {}",
                s.pid,
                s.source,
                compact_ms(i64::try_from(s.uptime_s).unwrap_or(0) * 1000)
            )
        } else {
            format!("{} service ({})", service_role_name(s.role), s.source)
        };
        line(
            &mut out,
            "service",
            &s.name,
            &service_state_name(s.state),
            ok,
            &detail,
        );
    }
    for e in &report.endpoints {
        let ok = e.outcome == ConnectOutcome::Ok as i32;
        let detail = if ok {
            format!("{} in {} ms", e.address, e.latency_ms)
        } else {
            e.error.clone()
        };
        line(
            &mut out,
            "endpoint",
            &e.name,
            &connect_outcome_name(e.outcome),
            ok,
            &detail,
        );
    }
    for c in &report.trust_certs {
        let (result, ok, detail) = if !c.found {
            ("missing".to_string(), false, c.error.clone())
        } else {
            let left = c.not_after_ms - now;
            let result = if left <= 0 {
                "expired".to_string()
            } else {
                format!("{} left", compact_ms(left))
            };
            let matched = if c.thumbprint_matched {
                ""
            } else {
                ", THUMBPRINT MISMATCH"
            };
            (
                result,
                left > 0 && c.thumbprint_matched,
                format!(
                    "expires {}, issuer {}, {}{matched}",
                    rfc3339(c.not_after_ms),
                    c.issuer,
                    c.thumbprint
                ),
            )
        };
        line(&mut out, "cert", &c.source, &result, ok, &detail);
    }
    for p in &report.probe_errors {
        line(
            &mut out,
            "failed",
            &p.probe,
            "probe-failed",
            false,
            &p.reason,
        );
    }
    out
}

fn line(out: &mut String, check: &str, name: &str, result: &str, ok: bool, detail: &str) {
    let mark = if ok { " " } else { "!" };
    let name = if name.len() > 34 {
        format!("…{}", &name[name.len() - 33..])
    } else {
        name.to_string()
    };
    let _ = writeln!(out, "{check:<8} {name:<34}{mark}{result:<13} {detail}");
}
