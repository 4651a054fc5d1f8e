//! The operator's query commands: each connects, asks one question and prints the
//! answer as a table or, with `--json`, as JSON with stable field names.

use super::{Connect, explain, table};
use clap::{Args, Subcommand};
use connwatch_shared::time::{now_ms, parse_duration};
use connwatch_shared::wire as w;
use std::process::ExitCode;
use std::time::Duration;

/// `--json` on every query.
#[derive(Debug, Clone, Copy, Args)]
pub struct Output {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Questions an operator can ask a running aggregator.
#[derive(Debug, Subcommand)]
pub enum QueryCommand {
    /// Fleet summary: one line per group, then the most urgent findings.
    Status {
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        out: Output,
        /// How many findings to list, the most urgent first (also with --json); 0
        /// lists them all. `findings` lists and filters every one.
        #[arg(long, default_value_t = 20)]
        top: u32,
    },
    /// Every group: active/total, healthy, health and worst finding.
    Groups {
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        out: Output,
    },
    /// One group: members, versions, reachability of required endpoints, findings.
    Group {
        /// The group's name.
        name: String,
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        out: Output,
    },
    /// List connectors.
    Connectors {
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        out: Output,
        /// Only this group's connectors.
        #[arg(long)]
        group: Option<String>,
        /// Only connectors that are inactive or have warnings or critical findings.
        #[arg(long)]
        unhealthy: bool,
        /// Only connectors with a finding of this code (e.g. trust-cert-expiring).
        #[arg(long)]
        finding: Option<String>,
    },
    /// One connector: findings with what to do, and its latest report.
    Connector {
        /// The connector id (the name on its certificate).
        id: String,
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        out: Output,
    },
    /// Every trust certificate in the fleet, soonest expiry first.
    Certs {
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        out: Output,
        /// Only certificates expiring within this long (e.g. `30d`), expired ones included.
        #[arg(long, value_parser = parse_duration)]
        expiring_within: Option<Duration>,
    },
    /// A connector's stored reports, in brief.
    History {
        /// The connector id.
        id: String,
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        out: Output,
        /// Only reports received within this long (e.g. `24h`).
        #[arg(long, value_parser = parse_duration)]
        since: Option<Duration>,
        /// At most this many (the newest).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Findings across the fleet, most severe first.
    Findings {
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        out: Output,
        /// Only this code (e.g. endpoint-unreachable).
        #[arg(long)]
        code: Option<String>,
        /// Only findings at least this severe.
        #[arg(long, value_parser = ["info", "warning", "critical"])]
        severity: Option<String>,
    },
    /// Health check for scripts and monitoring: exit 0 when healthy, 1 with warnings,
    /// 2 with critical findings, 3 when the aggregator cannot answer.
    Check {
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        out: Output,
    },
}

fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

impl Output {
    /// Prints `value` as JSON, or as the table `table` makes of it.
    fn show<T: serde::Serialize>(
        self,
        value: &T,
        table: impl FnOnce(&T) -> String,
    ) -> anyhow::Result<()> {
        if self.json {
            json(value)
        } else {
            print!("{}", table(value));
            Ok(())
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

impl QueryCommand {
    /// Runs the command; the exit code matters for `check`.
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let colour = table::colour();
        match self {
            QueryCommand::Status { connect, out, top } => {
                let s = connect
                    .client()
                    .await?
                    .status(w::StatusRequest { max_findings: top })
                    .await
                    .map_err(explain)?;
                let s = s.into_inner();
                if out.json {
                    json(&s)?;
                } else {
                    if !s.ingest_problem.is_empty() {
                        println!("INGEST STOPPED: {}\n", s.ingest_problem);
                    }
                    print!(
                        "{}\n{}",
                        table::groups(&s.groups, colour),
                        table::findings(&s.findings, colour)
                    );
                    let listed = u32::try_from(s.findings.len()).unwrap_or(u32::MAX);
                    if s.findings_total > listed {
                        println!(
                            "… {} more: `connwatch-aggregator findings`",
                            s.findings_total - listed
                        );
                    }
                }
            }
            QueryCommand::Groups { connect, out } => {
                let s = connect
                    .client()
                    .await?
                    .status(w::StatusRequest { max_findings: 1 })
                    .await
                    .map_err(explain)?;
                let groups = s.into_inner().groups;
                out.show(&groups, |v| table::groups(v, colour))?;
            }
            QueryCommand::Group { name, connect, out } => {
                let g = connect
                    .client()
                    .await?
                    .get_group(w::GetGroupRequest { name })
                    .await
                    .map_err(explain)?
                    .into_inner();
                out.show(&g, |v| table::group(v, now_ms(), colour))?;
            }
            QueryCommand::Connectors {
                connect,
                out,
                group,
                unhealthy,
                finding,
            } => {
                let list = connect
                    .client()
                    .await?
                    .list_connectors(w::ListConnectorsRequest {
                        group: group.unwrap_or_default(),
                        unhealthy,
                        finding: finding.unwrap_or_default(),
                    })
                    .await
                    .map_err(explain)?
                    .into_inner();
                if out.json {
                    json(&list.connectors)?;
                } else {
                    print!("{}", table::connectors(&list.connectors, now_ms(), colour));
                }
            }
            QueryCommand::Connector { id, connect, out } => {
                let d = connect
                    .client()
                    .await?
                    .get_connector(w::GetConnectorRequest { id })
                    .await
                    .map_err(explain)?
                    .into_inner();
                out.show(&d, |v| table::connector(v, now_ms(), colour))?;
            }
            QueryCommand::Certs {
                connect,
                out,
                expiring_within,
            } => {
                let certs = connect
                    .client()
                    .await?
                    .list_certs(w::ListCertsRequest {
                        expiring_within_ms: expiring_within.map_or(0, ms),
                    })
                    .await
                    .map_err(explain)?
                    .into_inner()
                    .certs;
                out.show(&certs, |v| table::certs(v, colour))?;
            }
            QueryCommand::History {
                id,
                connect,
                out,
                since,
                limit,
            } => {
                let since_ms = since.map_or(0, |d| now_ms() - ms(d));
                let h = connect
                    .client()
                    .await?
                    .history(w::HistoryRequest {
                        id,
                        since_ms,
                        limit,
                    })
                    .await
                    .map_err(explain)?
                    .into_inner();
                out.show(&h, table::history)?;
            }
            QueryCommand::Findings {
                connect,
                out,
                code,
                severity,
            } => {
                let min_severity = match severity.as_deref() {
                    Some("info") => w::Severity::Info,
                    Some("warning") => w::Severity::Warning,
                    Some("critical") => w::Severity::Critical,
                    _ => w::Severity::Unspecified,
                } as i32;
                let findings = connect
                    .client()
                    .await?
                    .list_findings(w::ListFindingsRequest {
                        code: code.unwrap_or_default(),
                        min_severity,
                    })
                    .await
                    .map_err(explain)?
                    .into_inner()
                    .findings;
                out.show(&findings, |v| table::findings(v, colour))?;
            }
            QueryCommand::Check { connect, out } => {
                let s = connect
                    .client()
                    .await?
                    .status(w::StatusRequest { max_findings: 1 })
                    .await
                    .map_err(explain)?;
                let s = s.into_inner();
                let mut verdict = Verdict::of(&s);
                if !s.ingest_problem.is_empty() {
                    verdict.status = "critical";
                    verdict.worst = Some(format!("ingest stopped: {}", s.ingest_problem));
                }
                if out.json {
                    json(&verdict)?;
                } else {
                    println!("{}", verdict.line());
                }
                return Ok(ExitCode::from(verdict.exit_code()));
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// The outcome of `check`, in the Nagios convention.
#[derive(Debug, serde::Serialize, PartialEq, Eq)]
pub struct Verdict {
    /// `ok`, `warning` or `critical`.
    pub status: &'static str,
    /// Critical findings.
    pub critical: usize,
    /// Warnings.
    pub warning: usize,
    /// The most severe finding, as `code on subject`.
    pub worst: Option<String>,
}

impl Verdict {
    /// Judges a fleet by its finding counts and its most urgent finding.
    pub fn of(fleet: &w::StatusResponse) -> Verdict {
        let listed = |s: w::Severity| {
            fleet
                .findings
                .iter()
                .filter(|f| f.severity == s as i32)
                .count()
        };
        // An aggregator older than the totals sends none but lists every finding.
        let counted = fleet.findings_total > 0 || fleet.findings.is_empty();
        let (critical, warning) = if counted {
            (fleet.critical_total as usize, fleet.warning_total as usize)
        } else {
            (listed(w::Severity::Critical), listed(w::Severity::Warning))
        };
        let status = match (critical, warning) {
            (0, 0) => "ok",
            (0, _) => "warning",
            _ => "critical",
        };
        // `Status` lists findings most severe first, so the first one is the worst.
        let worst = fleet
            .findings
            .iter()
            .find(|f| f.severity >= w::Severity::Warning as i32)
            .map(|f| format!("{} on {}", f.code, f.subject));
        Verdict {
            status,
            critical,
            warning,
            worst,
        }
    }

    /// 0 healthy, 1 warnings, 2 critical.
    pub fn exit_code(&self) -> u8 {
        match self.status {
            "ok" => 0,
            "warning" => 1,
            _ => 2,
        }
    }

    /// One line for humans and monitoring systems.
    pub fn line(&self) -> String {
        let head = self.status.to_ascii_uppercase();
        match &self.worst {
            None => format!("{head}: no warnings or critical findings"),
            Some(w) => format!(
                "{head}: {} critical, {} warning; worst: {w}",
                self.critical, self.warning
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(code: &str, severity: w::Severity) -> w::Finding {
        w::Finding {
            code: code.into(),
            severity: severity as i32,
            subject: "x".into(),
            ..Default::default()
        }
    }

    /// A status listing these findings, counted as the server counts them.
    fn of(findings: &[w::Finding]) -> Verdict {
        let count = |s: w::Severity| {
            let n = findings.iter().filter(|f| f.severity == s as i32).count();
            u32::try_from(n).unwrap_or(u32::MAX)
        };
        Verdict::of(&w::StatusResponse {
            findings: findings.to_vec(),
            findings_total: u32::try_from(findings.len()).unwrap_or(u32::MAX),
            critical_total: count(w::Severity::Critical),
            warning_total: count(w::Severity::Warning),
            ..Default::default()
        })
    }

    #[test]
    fn check_exit_codes_follow_the_worst_severity() {
        assert_eq!(of(&[]).exit_code(), 0);
        assert_eq!(
            of(&[f("group-mixed-versions", w::Severity::Info)]).exit_code(),
            0
        );
        let warn = of(&[f("inactive", w::Severity::Warning)]);
        assert_eq!((warn.exit_code(), warn.status), (1, "warning"));
        let crit = of(&[
            f("group-down", w::Severity::Critical),
            f("inactive", w::Severity::Warning),
        ]);
        assert_eq!(crit.exit_code(), 2);
        assert_eq!(crit.worst.as_deref(), Some("group-down on x"));
        assert!(crit.line().starts_with("CRITICAL: 1 critical, 1 warning"));
    }

    #[test]
    fn check_counts_the_listed_findings_of_an_aggregator_without_totals() {
        let v = Verdict::of(&w::StatusResponse {
            findings: vec![
                f("group-down", w::Severity::Critical),
                f("inactive", w::Severity::Warning),
            ],
            ..Default::default()
        });
        assert_eq!((v.critical, v.warning, v.exit_code()), (1, 1, 2));
    }

    #[test]
    fn check_counts_findings_beyond_the_listed_one() {
        let v = Verdict::of(&w::StatusResponse {
            findings: vec![f("group-down", w::Severity::Critical)],
            findings_total: 40,
            critical_total: 3,
            warning_total: 30,
            ..Default::default()
        });
        assert_eq!((v.critical, v.warning, v.exit_code()), (3, 30, 2));
    }
}
