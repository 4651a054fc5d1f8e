//! Human tables for the operator CLI: fit in 100 columns, colour only on a terminal.

use connwatch_proto::enum_names::{health_name, severity_name};
use connwatch_shared::time::{compact_ms, rfc3339};
use connwatch_shared::wire::{self as w};
use std::fmt::Write;
use std::io::IsTerminal;

/// Whether to colour output.
pub fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

fn paint(word: &str, colour: bool) -> String {
    if !colour {
        return word.to_string();
    }
    let code = match word {
        "critical" => "31",
        "warning" => "33",
        "healthy" => "32",
        _ => return word.to_string(),
    };
    format!("\x1b[{code}m{word}\x1b[0m")
}

fn pad(word: &str, width: usize, colour: bool) -> String {
    let painted = paint(word, colour);
    let extra = painted.len() - word.len();
    format!("{painted:<width$}", width = width + extra)
}

fn clip(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut s: String = text.chars().take(width.saturating_sub(1)).collect();
    s.push('…');
    s
}

/// The group table.
pub fn groups(groups: &[w::GroupSummary], colour: bool) -> String {
    let mut out = format!(
        "{:<24} {:>9}  {:<9} {}\n",
        "GROUP", "ACTIVE", "HEALTH", "WORST FINDING"
    );
    for g in groups {
        let _ = writeln!(
            out,
            "{:<24} {:>9}  {} {}",
            clip(&g.name, 24),
            format!("{}/{}", g.active, g.total),
            pad(&health_name(g.health), 9, colour),
            if g.worst_finding.is_empty() {
                "-"
            } else {
                &g.worst_finding
            }
        );
    }
    out
}

/// The findings list, one line each.
pub fn findings(findings: &[w::Finding], colour: bool) -> String {
    if findings.is_empty() {
        return "no findings\n".into();
    }
    let mut out = format!(
        "{:<9} {:<22} {:<20} {}\n",
        "SEVERITY", "CODE", "SUBJECT", "SUMMARY"
    );
    for f in findings {
        let _ = writeln!(
            out,
            "{} {:<22} {:<20} {}",
            pad(&severity_name(f.severity), 9, colour),
            f.code,
            clip(&f.subject, 20),
            clip(&f.summary, 46)
        );
    }
    out
}

/// The connector list.
pub fn connectors(list: &[w::ConnectorSummary], now_ms: i64, colour: bool) -> String {
    let mut out = format!(
        "{:<24} {:<16} {:<9} {:>9}  {:<12} {}\n",
        "CONNECTOR", "GROUP", "HEALTH", "LAST SEEN", "VERSION", "WORST FINDING"
    );
    for c in list {
        let _ = writeln!(
            out,
            "{:<24} {:<16} {} {:>9}  {:<12} {}",
            clip(&c.id, 24),
            clip(&c.group, 16),
            pad(&health_name(c.health), 9, colour),
            format!("{} ago", compact_ms(now_ms - c.last_seen_ms)),
            clip(
                if c.connector_version.is_empty() {
                    "-"
                } else {
                    &c.connector_version
                },
                12
            ),
            if c.worst_finding.is_empty() {
                "-"
            } else {
                &c.worst_finding
            }
        );
    }
    out
}

/// One connector in full: summary, findings with evidence and remediation, and its
/// latest report as a checklist.
pub fn connector(d: &w::ConnectorDetail, now_ms: i64, colour: bool) -> String {
    let mut out = String::new();
    if let Some(s) = &d.summary {
        let _ = writeln!(
            out,
            "connector {}  group {}  health {}  {}",
            s.id,
            s.group,
            paint(&health_name(s.health), colour),
            if s.active { "active" } else { "INACTIVE" }
        );
        let _ = writeln!(
            out,
            "first seen {}, last seen {} ({} ago), clock offset {} ms",
            rfc3339(s.first_seen_ms),
            rfc3339(s.last_seen_ms),
            compact_ms(now_ms - s.last_seen_ms),
            d.clock_offset_ms
        );
    }
    if d.findings.is_empty() {
        out.push_str("\nno findings\n");
    }
    for f in &d.findings {
        let _ = writeln!(
            out,
            "\n[{}] {}: {}",
            paint(&severity_name(f.severity), colour),
            f.code,
            f.summary
        );
        for e in &f.evidence {
            let _ = writeln!(out, "    {}: {}", e.key, clip(&e.value, 80));
        }
        let _ = writeln!(out, "  what to do: {}", f.remediation);
    }
    if let Some(r) = &d.latest {
        out.push_str("\nlatest report\n");
        out.push_str(&connwatch_shared::render::report(r));
    }
    out
}

/// A connector's history.
pub fn history(h: &w::HistoryResponse) -> String {
    let mut out = format!(
        "{:<21} {:>8} {:>10} {:>10} {:>7}\n",
        "COLLECTED", "SEQ", "SERVICES", "ENDPOINTS", "ERRORS"
    );
    for e in &h.entries {
        let _ = writeln!(
            out,
            "{:<21} {:>8} {:>10} {:>10} {:>7}",
            rfc3339(e.collected_at_ms),
            e.seq,
            format!("{}/{}", e.services_running, e.services_total),
            format!("{}/{}", e.endpoints_ok, e.endpoints_total),
            e.probe_errors
        );
    }
    out
}
