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
    /// 2 with critical findings, 3 when the aggregator cannot answer. Findings matched by
    /// an active silence are not counted (the output says how many).
    Check {
        #[command(flatten)]
        connect: Connect,
        #[command(flatten)]
        out: Output,
    },
}

/// Human output carries strings from reports: printed terminal-safe.
fn safe(text: &str) -> String {
    connwatch_shared::render::terminal_safe(text)
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
            print!("{}", safe(&table(value)));
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
                        println!("INGEST STOPPED: {}\n", safe(&s.ingest_problem));
                    }
                    print!(
                        "{}\n{}",
                        safe(&table::groups(&s.groups, colour)),
                        safe(&table::findings(&s.findings, colour))
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
                    print!(
                        "{}",
                        safe(&table::connectors(&list.connectors, now_ms(), colour))
                    );
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
                let channel = connect.channel().await?;
                let mut query = w::query_client::QueryClient::new(channel.clone());
                let s = query
                    .status(w::StatusRequest { max_findings: 1 })
                    .await
                    .map_err(explain)?;
                let s = s.into_inner();
                let silences: Vec<w::Silence> = w::alerts_client::AlertsClient::new(channel)
                    .list_silences(w::ListSilencesRequest {})
                    .await
                    .map_err(explain)?
                    .into_inner()
                    .silences
                    .into_iter()
                    .filter(|s| s.active)
                    .collect();
                let mut verdict = if silences.is_empty() {
                    Verdict::of(&s)
                } else {
                    // A silenced finding is one an operator has taken on: it must not
                    // fail the check, so every finding is judged against the silences
                    // with the labels its alert would carry.
                    let findings = query
                        .list_findings(w::ListFindingsRequest {
                            code: String::new(),
                            min_severity: w::Severity::Warning as i32,
                        })
                        .await
                        .map_err(explain)?
                        .into_inner()
                        .findings;
                    let groups: std::collections::HashMap<String, String> = query
                        .list_connectors(w::ListConnectorsRequest::default())
                        .await
                        .map_err(explain)?
                        .into_inner()
                        .connectors
                        .into_iter()
                        .map(|c| (c.id, c.group))
                        .collect();
                    Verdict::judge(&findings, |f| {
                        let group = if f.scope == "group" {
                            f.subject.clone()
                        } else {
                            groups.get(&f.subject).cloned().unwrap_or_default()
                        };
                        is_silenced(f, &group, &silences)
                    })
                };
                if !s.ingest_problem.is_empty() {
                    verdict.status = "critical";
                    verdict.worst = Some(format!("ingest stopped: {}", s.ingest_problem));
                }
                if out.json {
                    json(&verdict)?;
                } else {
                    println!("{}", safe(&verdict.line()));
                }
                return Ok(ExitCode::from(verdict.exit_code()));
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Whether an active silence matches the labels the finding's alert would carry.
fn is_silenced(f: &w::Finding, group: &str, silences: &[w::Silence]) -> bool {
    let mut labels: Vec<(&str, String)> = vec![
        ("code", f.code.clone()),
        (
            "severity",
            connwatch_proto::enum_names::severity_name(f.severity),
        ),
        ("scope", f.scope.clone()),
        ("group", group.to_string()),
    ];
    if let Some(code) = connwatch_shared::finding::Code::parse(&f.code) {
        labels.push(("alertname", crate::alert::state::alert_name(code)));
    }
    if f.scope == "connector" {
        labels.push(("connector", f.subject.clone()));
    }
    silences.iter().any(|s| {
        !s.matchers.is_empty()
            && s.matchers.iter().all(|m| {
                labels
                    .iter()
                    .any(|(name, value)| *name == m.name && *value == m.value)
            })
    })
}

/// The outcome of `check`, in the Nagios convention.
#[derive(Debug, serde::Serialize, PartialEq, Eq)]
pub struct Verdict {
    /// `ok`, `warning` or `critical`.
    pub status: &'static str,
    /// Critical findings, silenced ones left out.
    pub critical: usize,
    /// Warnings, silenced ones left out.
    pub warning: usize,
    /// The most severe finding not silenced, as `code on subject`.
    pub worst: Option<String>,
    /// Warnings and critical findings left out because a silence matches them.
    pub silenced: usize,
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
            silenced: 0,
        }
    }

    /// Judges a fleet by its findings (most severe first), leaving out the silenced.
    pub fn judge(findings: &[w::Finding], silenced: impl Fn(&w::Finding) -> bool) -> Verdict {
        let serious = |f: &&w::Finding| f.severity >= w::Severity::Warning as i32;
        let (quiet, loud): (Vec<&w::Finding>, Vec<&w::Finding>) =
            findings.iter().filter(serious).partition(|f| silenced(f));
        let count = |s: w::Severity| loud.iter().filter(|f| f.severity == s as i32).count();
        let (critical, warning) = (count(w::Severity::Critical), count(w::Severity::Warning));
        Verdict {
            status: match (critical, warning) {
                (0, 0) => "ok",
                (0, _) => "warning",
                _ => "critical",
            },
            critical,
            warning,
            worst: loud.first().map(|f| format!("{} on {}", f.code, f.subject)),
            silenced: quiet.len(),
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
        let silenced = match self.silenced {
            0 => String::new(),
            n => format!("; {n} silenced (not counted)"),
        };
        match &self.worst {
            None => format!("{head}: no warnings or critical findings{silenced}"),
            Some(w) => format!(
                "{head}: {} critical, {} warning; worst: {w}{silenced}",
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
    fn silenced_findings_do_not_fail_the_check() {
        let silence = w::Silence {
            matchers: vec![w::Matcher {
                name: "code".into(),
                value: "group-down".into(),
            }],
            active: true,
            ..Default::default()
        };
        let mut down = f("group-down", w::Severity::Critical);
        down.scope = "group".into();
        let findings = [down, f("inactive", w::Severity::Warning)];
        let v = Verdict::judge(&findings, |f| {
            is_silenced(f, "eu", std::slice::from_ref(&silence))
        });
        assert_eq!((v.critical, v.warning, v.silenced), (0, 1, 1));
        assert_eq!(v.exit_code(), 1);
        assert!(
            v.line().ends_with("1 silenced (not counted)"),
            "{}",
            v.line()
        );
        let by_group = w::Silence {
            matchers: vec![w::Matcher {
                name: "group".into(),
                value: "eu".into(),
            }],
            active: true,
            ..Default::default()
        };
        let all = Verdict::judge(&findings, |f| {
            is_silenced(f, "eu", std::slice::from_ref(&by_group))
        });
        assert_eq!((all.status, all.silenced, all.exit_code()), ("ok", 2, 0));
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
