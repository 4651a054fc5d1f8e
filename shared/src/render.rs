//! A report as a human checklist, one line per probe result: what
//! `connwatch-collector probe` prints on a host and `connwatch-aggregator connector`
//! shows for a connector's latest report.

use crate::time::{compact_ms, now_ms, rfc3339};
use crate::wire::{ConnectOutcome, EndpointCheck, Report, ServiceState};
use connwatch_proto::enum_names::{connect_outcome_name, service_role_name, service_state_name};
use std::fmt::Write;

/// An endpoint check's result in one word, and whether it is good: the connect
/// outcome (`ok`, `refused`, ...), or for a TLS endpoint that connected, what the
/// handshake showed: `tls-too-old`, `unexpected-ca` (a chain from outside the expected
/// roots) or `tls-error` (it failed or did not verify). The checklist and the group's
/// reachability matrix both say it this way.
pub fn endpoint_result(e: &EndpointCheck) -> (String, bool) {
    let connected = e.outcome == ConnectOutcome::Ok as i32;
    match (&e.tls, connected) {
        (Some(t), true) if t.version_too_old => ("tls-too-old".into(), false),
        (Some(t), true) if t.issuer_checked && !t.issuer_expected => {
            ("unexpected-ca".into(), false)
        }
        (Some(t), true) if !t.error.is_empty() || t.chain_verified == Some(false) => {
            ("tls-error".into(), false)
        }
        _ => (connect_outcome_name(e.outcome), connected),
    }
}

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
            "host      {} ({} {}), up {}, memory {}/{} MiB, disk {}/{} GiB free",
            h.hostname,
            h.os_name,
            h.os_version,
            compact_ms(
                i64::try_from(h.uptime_s)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(1000)
            ),
            h.memory_used_bytes >> 20,
            h.memory_total_bytes >> 20,
            h.disk_free_bytes >> 30,
            h.disk_total_bytes >> 30
        );
    }
    let unknown = |s: &str| {
        if s.is_empty() {
            "unknown".to_string()
        } else {
            s.to_string()
        }
    };
    let version = report.version.clone().unwrap_or_default();
    let _ = writeln!(
        out,
        "version   connector {}, updater {}, collector {}",
        unknown(&version.connector_version),
        unknown(&version.updater_version),
        unknown(&report.collector_version)
    );
    if !version.layout.is_empty() {
        let _ = writeln!(out, "layout    {}", version.layout);
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
        let (result, ok) = endpoint_result(e);
        let connected = e.outcome == ConnectOutcome::Ok as i32;
        // The path is shown so a check that went through a proxy reads differently
        // from one that went direct; older collectors leave it empty (direct).
        let path = match e.via.as_str() {
            "" => String::new(),
            "direct" => " direct".to_string(),
            proxy => format!(" via {proxy}"),
        };
        let mut detail = if connected {
            format!("{}{path} in {} ms", e.address, e.latency_ms)
        } else if e.via.is_empty() || e.via == "direct" {
            e.error.clone()
        } else {
            format!("{}{path}: {}", e.address, e.error)
        };
        if let (Some(t), true) = (&e.tls, connected) {
            let top = t.chain.last().map(|c| c.issuer.as_str()).unwrap_or("");
            if t.protocol.is_empty() {
                detail = format!("{detail}, {}", t.error);
            } else {
                detail = format!("{detail}, {} {}, issuer {top}", t.protocol, t.cipher_suite);
                if !t.error.is_empty() {
                    detail = format!("{detail}, {}", t.error);
                }
            }
        }
        line(&mut out, "endpoint", &e.name, &result, ok, &detail);
    }
    for b in &report.backends {
        let ok = (200..400).contains(&b.http_status);
        let result = if b.http_status == 0 {
            "no-response".to_string()
        } else {
            format!("http {}", b.http_status)
        };
        let detail = if b.error.is_empty() {
            format!("in {} ms", b.latency_ms)
        } else {
            b.error.clone()
        };
        line(&mut out, "backend", &b.url, &result, ok, &detail);
    }
    if let Some(p) = &report.proxy {
        let same = p.connector_proxy == p.updater_proxy;
        let with_default = |proxy: &str, default: bool| {
            if default {
                format!("{} (system default)", unknown(proxy))
            } else {
                unknown(proxy)
            }
        };
        line(
            &mut out,
            "proxy",
            "connector / updater / system",
            if same { "same" } else { "different" },
            same,
            &format!(
                "{} / {} / {}",
                with_default(&p.connector_proxy, p.connector_uses_default),
                with_default(&p.updater_proxy, p.updater_uses_default),
                unknown(&p.system_proxy)
            ),
        );
    }
    for l in &report.log_signatures {
        line(
            &mut out,
            "log",
            &l.id,
            &format!("{} new", l.count),
            false,
            &l.last_line,
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
        let mut cut = name.len() - 33;
        while !name.is_char_boundary(cut) {
            cut += 1;
        }
        format!("…{}", &name[cut..])
    } else {
        name.to_string()
    };
    let _ = writeln!(out, "{check:<8} {name:<34}{mark}{result:<13} {detail}");
}

/// `text` made safe to print on a terminal: control characters that came from reports
/// (escape sequences that retitle a window, clear the screen or move the cursor, a
/// bell, a carriage return that hides what came before) become `\u{fffd}`. Line
/// breaks, tabs and the colour codes the tables add themselves (`ESC[31m`, `ESC[32m`,
/// `ESC[33m`, `ESC[0m`) are kept.
pub fn terminal_safe(text: &str) -> String {
    const OURS: [&str; 4] = ["\x1b[31m", "\x1b[32m", "\x1b[33m", "\x1b[0m"];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c == '\x1b'
            && let Some(ours) = OURS.iter().find(|o| rest.starts_with(**o))
        {
            out.push_str(ours);
            rest = &rest[ours.len()..];
            continue;
        }
        let control = c.is_control() && c != '\n' && c != '\t';
        out.push(if control { '\u{fffd}' } else { c });
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reported_escape_sequences_are_neutralised_and_our_colours_kept() {
        let hostile = "host\x1b]0;owned\x07\x1b[2J\r\u{9b}31m";
        let safe = terminal_safe(&format!("\x1b[31mcritical\x1b[0m {hostile}\n\tnext"));
        assert_eq!(
            safe,
            "\x1b[31mcritical\x1b[0m host\u{fffd}]0;owned\u{fffd}\u{fffd}[2J\u{fffd}\u{fffd}31m\n\tnext"
        );
    }
    use crate::wire::EndpointCheck;

    #[test]
    fn endpoint_lines_show_the_path_taken() {
        let endpoint = |via: &str, outcome: ConnectOutcome, error: &str| EndpointCheck {
            name: "login".into(),
            address: "login.example:443".into(),
            outcome: outcome as i32,
            latency_ms: 7,
            via: via.into(),
            error: error.into(),
            ..Default::default()
        };
        let text = report(&Report {
            endpoints: vec![
                endpoint("direct", ConnectOutcome::Ok, ""),
                endpoint("proxy.contoso:8080", ConnectOutcome::Ok, ""),
                endpoint(
                    "proxy.contoso:8080",
                    ConnectOutcome::ProxyRefused,
                    "the proxy refused CONNECT: HTTP/1.1 403 Forbidden",
                ),
                endpoint("", ConnectOutcome::Ok, ""),
            ],
            ..Default::default()
        });
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("endpoint")).collect();
        assert!(
            lines[0].ends_with("login.example:443 direct in 7 ms"),
            "{text}"
        );
        assert!(
            lines[1].ends_with("login.example:443 via proxy.contoso:8080 in 7 ms"),
            "{text}"
        );
        assert!(lines[2].contains("!proxy-refused"), "{text}");
        assert!(
            lines[2].ends_with(
                "via proxy.contoso:8080: the proxy refused CONNECT: HTTP/1.1 403 Forbidden"
            ),
            "{text}"
        );
        assert!(lines[3].ends_with("login.example:443 in 7 ms"), "{text}");
    }
}
