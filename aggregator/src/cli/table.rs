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
        "{:<24} {:>9} {:>8}  {:<9} {}\n",
        "GROUP", "ACTIVE", "HEALTHY", "HEALTH", "WORST FINDING"
    );
    for g in groups {
        let _ = writeln!(
            out,
            "{:<24} {:>9} {:>8}  {} {}",
            clip(&g.name, 24),
            format!("{}/{}", g.active, g.total),
            g.healthy,
            pad(&health_name(g.health), 9, colour),
            dash(&g.worst_finding)
        );
    }
    out
}

fn dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

/// One group: summary, members, reachability matrix, group findings.
pub fn group(g: &w::GroupDetail, now_ms: i64, colour: bool) -> String {
    let mut out = String::new();
    if let Some(s) = &g.summary {
        let _ = writeln!(
            out,
            "group {}  health {}  active {}/{}  healthy {}{}\n",
            s.name,
            paint(&health_name(s.health), colour),
            s.active,
            s.total,
            s.healthy,
            if s.declared {
                ""
            } else {
                "  (not declared in the config)"
            }
        );
    }
    out.push_str(&connectors(&g.members, now_ms, colour));
    if !g.endpoints.is_empty() {
        // Wide enough for every result word (`unexpected-ca`), within 100 columns.
        const SHOWN: usize = 5;
        const WIDTH: usize = 13;
        out.push_str("\nreachability of required endpoints (active members)\n");
        let _ = write!(out, "{:<24}", "CONNECTOR");
        for e in g.endpoints.iter().take(SHOWN) {
            let _ = write!(out, " {:<WIDTH$}", clip(e, WIDTH));
        }
        out.push('\n');
        for row in &g.reachability {
            let _ = write!(out, "{:<24}", clip(&row.connector, 24));
            for o in row.outcomes.iter().take(SHOWN) {
                let _ = write!(out, " {:<WIDTH$}", clip(dash(o), WIDTH));
            }
            out.push('\n');
        }
        if g.endpoints.len() > SHOWN {
            let _ = writeln!(
                out,
                "({} more endpoints in --json)",
                g.endpoints.len() - SHOWN
            );
        }
    }
    out.push('\n');
    out.push_str(&findings(&g.findings, colour));
    out
}

/// Trust certificates, soonest expiry first.
pub fn certs(certs: &[w::CertEntry], colour: bool) -> String {
    if certs.is_empty() {
        return "no trust certificates\n".into();
    }
    let mut out = format!(
        "{:<22} {:<14} {:>9}  {:<20} {:<12} {}\n",
        "CONNECTOR", "GROUP", "DAYS LEFT", "NOT AFTER", "STATE", "THUMBPRINT"
    );
    for c in certs {
        // The aggregator judges each certificate with its group's thresholds, as the
        // findings do; one that does not (an older aggregator) gets the defaults.
        let word = if c.state.is_empty() {
            match (c.found, c.thumbprint_matched, c.days_left) {
                (false, _, _) => "missing",
                (true, false, _) => "mismatch",
                (true, true, d) if d < 0 => "expired",
                (true, true, d) if d < 7 => "critical",
                (true, true, d) if d < 30 => "warning",
                _ => "ok",
            }
        } else {
            c.state.as_str()
        };
        let state = if colour {
            let code = match word {
                "ok" => "32",
                "warning" => "33",
                _ => "31",
            };
            format!("\x1b[{code}m{word:<12}\x1b[0m")
        } else {
            format!("{word:<12}")
        };
        let _ = writeln!(
            out,
            "{:<22} {:<14} {:>9}  {:<20} {} {}",
            clip(&c.connector, 22),
            clip(&c.group, 14),
            if c.found {
                c.days_left.to_string()
            } else {
                "-".into()
            },
            if c.found {
                rfc3339(c.not_after_ms)
            } else {
                "-".into()
            },
            state,
            clip(&c.thumbprint, 17)
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
        "{:<9} {:<24} {:<20} {}\n",
        "SEVERITY", "CODE", "SUBJECT", "SUMMARY"
    );
    for f in findings {
        let _ = writeln!(
            out,
            "{} {:<24} {:<20} {}",
            pad(&severity_name(f.severity), 9, colour),
            f.code,
            clip(&f.subject, 20),
            clip(&f.summary, 44)
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
        // Evidence is wrapped, never cut: thumbprints, chains and errors are what an
        // operator compares and searches for.
        for e in &f.evidence {
            out.push_str(&wrap(&format!("    {}: ", e.key), &e.value, "      "));
        }
        out.push_str(&wrap("  what to do: ", &f.remediation, "    "));
    }
    if let Some(r) = &d.latest {
        out.push_str("\nlatest report\n");
        out.push_str(&connwatch_shared::render::report(r));
    }
    out
}

/// The widest line of text outside the tables.
const TEXT_WIDTH: usize = 100;

/// `head` then `text`, broken at spaces into lines of at most [`TEXT_WIDTH`] columns,
/// later lines starting with `indent`. A word longer than a line is split, never cut.
fn wrap(head: &str, text: &str, indent: &str) -> String {
    let mut out = String::new();
    let mut line = head.to_string();
    let mut width = line.chars().count();
    let mut fresh = true;
    for word in text.split(' ') {
        let len = word.chars().count();
        if !fresh && width + 1 + len > TEXT_WIDTH {
            out.push_str(line.trim_end());
            out.push('\n');
            line = indent.to_string();
            width = line.chars().count();
            fresh = true;
        }
        if !fresh {
            line.push(' ');
            width += 1;
        }
        let mut rest: Vec<char> = word.chars().collect();
        while width + rest.len() > TEXT_WIDTH && TEXT_WIDTH > width {
            let room = TEXT_WIDTH - width;
            let piece: String = rest.drain(..room).collect();
            line.push_str(&piece);
            out.push_str(&line);
            out.push('\n');
            line = indent.to_string();
            width = line.chars().count();
        }
        width += rest.len();
        line.extend(rest);
        fresh = false;
    }
    out.push_str(line.trim_end());
    out.push('\n');
    out
}

/// A connector's history.
pub fn history(h: &w::HistoryResponse) -> String {
    let mut out = format!(
        "{:<21} {:>8} {:>10} {:>10} {:>7}  {}\n",
        "COLLECTED", "SEQ", "SERVICES", "ENDPOINTS", "ERRORS", "LOGGED"
    );
    for e in &h.entries {
        // Each signature with its count in that cycle: `kerberos-13019 x3`.
        let logged = e
            .log_signatures
            .iter()
            .map(|l| format!("{} x{}", l.id, l.count))
            .collect::<Vec<_>>()
            .join(", ");
        let line = format!(
            "{:<21} {:>8} {:>10} {:>10} {:>7}  {logged}",
            rfc3339(e.collected_at_ms),
            e.seq,
            format!("{}/{}", e.services_running, e.services_total),
            format!("{}/{}", e.endpoints_ok, e.endpoints_total),
            e.probe_errors
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evidence(key: &str, value: &str) -> w::Evidence {
        w::Evidence {
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn connector_evidence_is_wrapped_never_cut() {
        let thumb = "4905CC64B2D81BBED60962ECC5DCF63F643CCD55";
        let reason = format!(
            "certificate {thumb} does not match the expected thumbprint 130F8C042BB18114F038836735FF04D4883E480D"
        );
        let unbroken = "x".repeat(250);
        let d = w::ConnectorDetail {
            findings: vec![w::Finding {
                code: "trust-cert-missing".into(),
                summary: "no usable trust certificate".into(),
                evidence: vec![evidence("reason", &reason), evidence("blob", &unbroken)],
                remediation: "word ".repeat(60),
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = connector(&d, 0, false);
        for l in text.lines() {
            assert!(l.chars().count() <= TEXT_WIDTH, "{l}");
        }
        assert!(!text.contains('…'), "{text}");
        let joined: String = text.split_whitespace().collect();
        assert!(joined.contains(&reason.replace(' ', "")), "{text}");
        assert!(joined.contains(&unbroken), "{text}");
        assert_eq!(text.matches("word").count(), 60);
    }

    #[test]
    fn the_cert_table_shows_the_state_the_aggregator_judged() {
        let c = |state: &str| w::CertEntry {
            connector: "c1".into(),
            found: true,
            thumbprint_matched: true,
            days_left: 40,
            thumbprint: "4905CC64B2D81BBED60962ECC5DCF63F643CCD55".into(),
            state: state.into(),
            ..Default::default()
        };
        let text = certs(&[c("wrong-issuer"), c("warning")], false);
        assert!(text.contains("wrong-issuer"), "{text}");
        assert!(text.contains("warning"), "{text}");
        assert!(!text.contains(" ok "), "{text}");
        for l in text.lines() {
            assert!(l.chars().count() <= 100, "{l}");
        }
    }
}
