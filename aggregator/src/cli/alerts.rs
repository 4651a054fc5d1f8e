//! The alert commands of the operator CLI: `alerts`, `silence add|list|remove`, with
//! their tables (100 columns) and `--json`.

use super::{Connect, explain};
use crate::alert::silence::Matcher;
use clap::Subcommand;
use connwatch_proto::enum_names::severity_name;
use connwatch_shared::time::{compact_ms, now_ms, parse_duration, rfc3339};
use connwatch_shared::wire::alerts_client::AlertsClient;
use connwatch_shared::wire::{self as w};
use std::fmt::Write;
use std::time::Duration;

/// `silence` subcommands.
#[derive(Debug, Subcommand)]
pub enum SilenceCommand {
    /// Silence alerts matching every --match for a while; they stay visible in `alerts`.
    Add {
        #[command(flatten)]
        connect: Connect,
        /// `label=value`; labels: alertname, code, severity, scope, group, connector.
        #[arg(long = "match", required = true, value_parser = Matcher::parse)]
        matchers: Vec<Matcher>,
        /// How long (at most 90d).
        #[arg(long = "for", value_parser = parse_duration)]
        duration: Duration,
        /// Why, for the next operator.
        #[arg(long, default_value = "")]
        comment: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Silences in force, and those that ended within the last hour.
    List {
        #[command(flatten)]
        connect: Connect,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// End a silence now.
    Remove {
        /// The silence id, from `silence list`.
        id: String,
        #[command(flatten)]
        connect: Connect,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

async fn client(connect: &Connect) -> anyhow::Result<AlertsClient<tonic::transport::Channel>> {
    Ok(AlertsClient::new(connect.channel().await?))
}

/// Runs `alerts`; returns what to print.
pub async fn alerts(connect: &Connect, json: bool) -> anyhow::Result<String> {
    let resp = client(connect)
        .await?
        .list_alerts(w::ListAlertsRequest {})
        .await
        .map_err(explain)?
        .into_inner();
    if json {
        return Ok(serde_json::to_string_pretty(&resp)? + "\n");
    }
    let mut out = alert_table(&resp.alerts, resp.generated_at_ms);
    if !resp.silences.is_empty() {
        out.push('\n');
        out.push_str(&silence_table(&resp.silences, resp.generated_at_ms));
    }
    out.push('\n');
    out.push_str(&sink_table(&resp.sinks));
    Ok(out)
}

/// Runs a `silence` subcommand; returns what to print.
pub async fn silence(cmd: SilenceCommand) -> anyhow::Result<String> {
    match cmd {
        SilenceCommand::Add {
            connect,
            matchers,
            duration,
            comment,
            json,
        } => {
            let s = client(&connect)
                .await?
                .add_silence(w::AddSilenceRequest {
                    matchers: matchers
                        .into_iter()
                        .map(|m| w::Matcher {
                            name: m.name,
                            value: m.value,
                        })
                        .collect(),
                    duration_ms: i64::try_from(duration.as_millis()).unwrap_or(i64::MAX),
                    comment,
                })
                .await
                .map_err(explain)?
                .into_inner();
            if json {
                return Ok(serde_json::to_string_pretty(&s)? + "\n");
            }
            Ok(format!(
                "silence {} added: {} until {}\n",
                s.id,
                matchers_text(&s.matchers),
                rfc3339(s.ends_ms)
            ))
        }
        SilenceCommand::List { connect, json } => {
            let resp = client(&connect)
                .await?
                .list_silences(w::ListSilencesRequest {})
                .await
                .map_err(explain)?
                .into_inner();
            if json {
                return Ok(serde_json::to_string_pretty(&resp)? + "\n");
            }
            Ok(silence_table(&resp.silences, now_ms()))
        }
        SilenceCommand::Remove { id, connect, json } => {
            let s = client(&connect)
                .await?
                .remove_silence(w::RemoveSilenceRequest { id })
                .await
                .map_err(explain)?
                .into_inner();
            if json {
                return Ok(serde_json::to_string_pretty(&s)? + "\n");
            }
            Ok(format!(
                "silence {} removed: {}\n",
                s.id,
                matchers_text(&s.matchers)
            ))
        }
    }
}

fn matchers_text(m: &[w::Matcher]) -> String {
    m.iter()
        .map(|m| format!("{}={}", m.name, m.value))
        .collect::<Vec<_>>()
        .join(",")
}

fn clip(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut s: String = text.chars().take(width.saturating_sub(1)).collect();
    s.push('…');
    s
}

/// The alert table: status (or `silenced`), severity, code, subject, how long, summary.
pub fn alert_table(alerts: &[w::Alert], now_ms: i64) -> String {
    if alerts.is_empty() {
        return "no alerts\n".into();
    }
    let mut out = format!(
        "{:<9} {:<8} {:<20} {:<18} {:>6}  {}\n",
        "STATE", "SEVERITY", "CODE", "SUBJECT", "SINCE", "SUMMARY"
    );
    for a in alerts {
        let state = if !a.silenced_by.is_empty() && a.status == "firing" {
            "silenced"
        } else {
            a.status.as_str()
        };
        let since = match a.status.as_str() {
            "firing" => a.firing_since_ms,
            "resolved" => a.resolved_at_ms,
            _ => a.active_since_ms,
        };
        let _ = writeln!(
            out,
            "{:<9} {:<8} {:<20} {:<18} {:>6}  {}",
            state,
            severity_name(a.severity),
            clip(&a.code, 20),
            clip(&a.subject, 18),
            compact_ms(now_ms - since),
            clip(&a.summary, 32)
        );
    }
    out
}

/// The silence table.
pub fn silence_table(silences: &[w::Silence], now_ms: i64) -> String {
    if silences.is_empty() {
        return "no silences\n".into();
    }
    let mut out = format!(
        "{:<16} {:<7} {:>6}  {:<36} {:<10} {}\n",
        "SILENCE", "STATE", "ENDS", "MATCHERS", "BY", "COMMENT"
    );
    for s in silences {
        let _ = writeln!(
            out,
            "{:<16} {:<7} {:>6}  {:<36} {:<10} {}",
            s.id,
            if s.active { "active" } else { "ended" },
            compact_ms(s.ends_ms - now_ms),
            clip(&matchers_text(&s.matchers), 36),
            clip(&s.created_by, 10),
            clip(&s.comment, 18)
        );
    }
    out
}

/// Sink counters.
pub fn sink_table(sinks: &[w::SinkStatus]) -> String {
    let mut out = format!(
        "{:<12} {:<32} {:>9} {:>8} {:>7} {:>6}  {}\n",
        "SINK", "TARGET", "DELIVERED", "FAILURES", "DROPPED", "QUEUED", "LAST ERROR"
    );
    for s in sinks {
        let _ = writeln!(
            out,
            "{:<12} {:<32} {:>9} {:>8} {:>7} {:>6}  {}",
            s.kind,
            clip(&s.target, 32),
            s.delivered,
            s.failures,
            s.dropped,
            s.queued,
            clip(
                if s.last_error.is_empty() {
                    "-"
                } else {
                    &s.last_error
                },
                16
            )
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_fit_in_100_columns() {
        let long = "x".repeat(200);
        let a = w::Alert {
            status: "firing".into(),
            code: "group-split-reachability".into(),
            subject: long.clone(),
            summary: long.clone(),
            severity: 3,
            silenced_by: "abc".into(),
            ..Default::default()
        };
        let s = w::Silence {
            id: "0123456789abcdef".into(),
            matchers: vec![w::Matcher {
                name: "code".into(),
                value: long.clone(),
            }],
            created_by: long.clone(),
            comment: long.clone(),
            ends_ms: 7 * 86_400_000,
            active: true,
            ..Default::default()
        };
        let k = w::SinkStatus {
            kind: "alertmanager".into(),
            target: long.clone(),
            delivered: 123_456,
            last_error: long,
            ..Default::default()
        };
        let text = alert_table(&[a], 0) + &silence_table(&[s], 0) + &sink_table(&[k]);
        assert!(text.contains("silenced"));
        for line in text.lines() {
            assert!(
                line.chars().count() <= 100,
                "{} columns: {line}",
                line.chars().count()
            );
        }
    }
}
