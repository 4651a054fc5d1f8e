//! Connector log probe: reads what the connector logged since the previous cycle (its
//! Admin event log channel on Windows, a log file elsewhere) and counts the known error
//! signatures of the troubleshooting guides. It ships the signature, the count and the
//! last matching line, never the log itself.

use super::{Observation, Probe, failed};
use crate::config::LogConfig;
use crate::platform::{EventLog, parse::clip};
use connwatch_shared::wire::LogSignature;
use futures::future::BoxFuture;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Every signature id, in report order.
pub const SIGNATURES: [&str; 10] = [
    "trust-cert-expired",
    "config-download-failed",
    "service-unreachable",
    "registration-failed",
    "connector-unauthorized",
    "kerberos-12008",
    "kerberos-13016",
    "kerberos-13019",
    "kerberos-13020",
    "kerberos-13022",
];

/// The longest `last_line` shipped.
pub const MAX_LINE: usize = 512;
/// At most this much of a log file is read per cycle; older new lines are skipped.
const MAX_READ: u64 = 4 << 20;
/// On the first cycle, this much of the end of a log file is read.
const FIRST_READ: u64 = 1 << 20;
/// Event log entries read per cycle.
const MAX_EVENTS: usize = 500;

/// The signature a log line or event shows, if any. The re-registration message also
/// says "registration failed", so the expired certificate is tested first.
pub fn classify(event_id: Option<u32>, text: &str) -> Option<&'static str> {
    let lower = text.to_ascii_lowercase();
    if event_id == Some(1000) || lower.contains("trust certificate expired") {
        return Some("trust-cert-expired");
    }
    if lower.contains("failed to download the configuration") {
        return Some("config-download-failed");
    }
    if lower.contains("unable to connect to the service") {
        return Some("service-unreachable");
    }
    if lower.contains("registration failed") {
        return Some("registration-failed");
    }
    if lower.contains("connectorerror:unauthorized") {
        return Some("connector-unauthorized");
    }
    for (id, sig) in [
        (12008, "kerberos-12008"),
        (13016, "kerberos-13016"),
        (13019, "kerberos-13019"),
        (13020, "kerberos-13020"),
        (13022, "kerberos-13022"),
    ] {
        // The number alone could be a port or a count; the Kerberos errors' messages
        // always name Kerberos.
        if event_id == Some(id) || (lower.contains("kerberos") && has_word(&lower, &id.to_string()))
        {
            return Some(sig);
        }
    }
    None
}

fn has_word(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_alphanumeric())
            && !after.is_some_and(|c| c.is_ascii_alphanumeric())
    })
}

/// Counts signatures over `(event id, text)` entries.
pub fn tally<'a>(entries: impl IntoIterator<Item = (Option<u32>, &'a str)>) -> Vec<LogSignature> {
    let mut found: Vec<LogSignature> = Vec::new();
    for (event_id, text) in entries {
        let Some(id) = classify(event_id, text) else {
            continue;
        };
        let line = clip(text.trim(), MAX_LINE).to_string();
        match found.iter_mut().find(|s| s.id == id) {
            Some(s) => {
                s.count = s.count.saturating_add(1);
                s.last_line = line;
            }
            None => found.push(LogSignature {
                id: id.into(),
                count: 1,
                last_line: line,
            }),
        }
    }
    found.sort_by_key(|s| SIGNATURES.iter().position(|id| *id == s.id));
    found
}

/// Where the previous cycle stopped reading.
#[derive(Debug, Default)]
struct Position {
    file_offset: Option<u64>,
    last_record: Option<u64>,
}

/// Scans the connector log.
pub struct LogProbe {
    config: LogConfig,
    events: Arc<dyn EventLog>,
    position: Arc<Mutex<Position>>,
}

impl LogProbe {
    /// A log probe for the configured file or channel.
    pub fn new(config: LogConfig, events: Arc<dyn EventLog>) -> Self {
        LogProbe {
            config,
            events,
            position: Arc::default(),
        }
    }

    async fn scan(&self) -> Observation {
        let mut out = Vec::new();
        let mut signatures = Vec::new();
        if let Some(path) = &self.config.file {
            let path = path.clone();
            let position = self.position.clone();
            let read = tokio::task::spawn_blocking(move || {
                let start = position
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .file_offset;
                let (text, next) = read_new(&path, start)?;
                position
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .file_offset = Some(next);
                Ok::<_, String>(tally(text.lines().map(|l| (None, l))))
            })
            .await;
            match read {
                Ok(Ok(found)) => signatures.extend(found),
                Ok(Err(reason)) => out.push(failed(self.name(), reason)),
                Err(e) => out.push(failed(self.name(), format!("reading the log crashed: {e}"))),
            }
        }
        if let Some(channel) = &self.config.channel {
            let after = self
                .position
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .last_record;
            match self.events.read_after(channel, after, MAX_EVENTS).await {
                Ok(entries) => {
                    if let Some(last) = entries.iter().map(|e| e.record_id).max() {
                        self.position
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .last_record = Some(last);
                    }
                    let found = tally(entries.iter().map(|e| (e.event_id, e.text.as_str())));
                    for f in found {
                        match signatures
                            .iter_mut()
                            .find(|s: &&mut LogSignature| s.id == f.id)
                        {
                            Some(s) => {
                                s.count = s.count.saturating_add(f.count);
                                s.last_line = f.last_line;
                            }
                            None => signatures.push(f),
                        }
                    }
                }
                Err(reason) => out.push(failed(self.name(), reason)),
            }
        }
        out.insert(0, Observation::Log(signatures));
        Observation::Many(out)
    }
}

/// The complete lines added to `path` since `offset` (bounded), and where to start next
/// time. A file shorter than `offset` was rotated or truncated: it is read anew.
fn read_new(path: &Path, offset: Option<u64>) -> Result<(String, u64), String> {
    let describe = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::PermissionDenied => format!(
            "permission denied reading {}: run the collector as an account that can read the connector's log",
            path.display()
        ),
        std::io::ErrorKind::NotFound => format!(
            "{} does not exist: set [log] file to the connector's log file",
            path.display()
        ),
        _ => format!("cannot read {}: {e}", path.display()),
    };
    let mut file = std::fs::File::open(path).map_err(describe)?;
    let len = file.metadata().map_err(describe)?.len();
    let mut start = match offset {
        Some(o) if o <= len => o,
        Some(_) => 0,
        None => len.saturating_sub(FIRST_READ),
    };
    start = start.max(len.saturating_sub(MAX_READ));
    file.seek(SeekFrom::Start(start)).map_err(describe)?;
    let mut bytes = Vec::new();
    file.take(len - start)
        .read_to_end(&mut bytes)
        .map_err(describe)?;
    // Only whole lines: a line still being written is read next cycle.
    let end = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let mut text = String::from_utf8_lossy(&bytes[..end]).into_owned();
    let skipped_into_a_line = offset.is_none_or(|o| o != start) && start > 0;
    if skipped_into_a_line {
        text = text
            .split_once('\n')
            .map(|(_, rest)| rest.to_string())
            .unwrap_or_default();
    }
    Ok((text, start + end as u64))
}

impl Probe for LogProbe {
    fn name(&self) -> String {
        let target: PathBuf = match (&self.config.file, &self.config.channel) {
            (Some(f), _) => f.clone(),
            (None, Some(c)) => PathBuf::from(c),
            (None, None) => PathBuf::new(),
        };
        format!("log:{}", target.display())
    }

    fn deadline(&self) -> Duration {
        Duration::from_secs(6)
    }

    fn run(&self) -> BoxFuture<'_, Observation> {
        Box::pin(self.scan())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::EventEntry;
    use connwatch_shared::wire::Report;
    use std::io::Write;

    #[test]
    fn the_guides_error_texts_are_classified() {
        for (event, text, want) in [
            (
                None,
                "Connector re-registration failed: The Connector trust certificate expired. Run the PowerShell cmdlet Register-AppProxyConnector",
                Some("trust-cert-expired"),
            ),
            (Some(1000), "anything", Some("trust-cert-expired")),
            (
                None,
                "Connector failed to download the configuration.",
                Some("config-download-failed"),
            ),
            (
                None,
                "The connector was unable to connect to the service due to networking issues.",
                Some("service-unreachable"),
            ),
            (
                None,
                "Connector registration failed: Make sure you enabled application proxy",
                Some("registration-failed"),
            ),
            (
                None,
                "InternalServerError: This corporate app can't be accessed right now. ConnectorError:Unauthorized.",
                Some("connector-unauthorized"),
            ),
            (
                None,
                "12008 - Microsoft Entra exceeded the maximum number of permitted Kerberos authentication attempts",
                Some("kerberos-12008"),
            ),
            (
                None,
                "13016 - Microsoft Entra ID cannot retrieve a Kerberos ticket on behalf of the user because there is no UPN",
                Some("kerberos-13016"),
            ),
            (
                None,
                "13019 - cannot retrieve a Kerberos ticket because of the following general API error.",
                Some("kerberos-13019"),
            ),
            (
                Some(13020),
                "backend server SPN is not defined",
                Some("kerberos-13020"),
            ),
            (
                None,
                "13022 - Microsoft Entra ID cannot authenticate the user because the backend server responds to Kerberos authentication attempts with an HTTP 401 error.",
                Some("kerberos-13022"),
            ),
            (None, "listening on port 12008", None),
            (None, "Kerberos ticket 1130220 issued", None),
            (None, "all good", None),
        ] {
            assert_eq!(classify(event, text), want, "{text}");
        }
    }

    #[test]
    fn tally_counts_and_keeps_the_last_line_trimmed() {
        let long = format!("ConnectorError:Unauthorized {}", "é".repeat(600));
        let found = tally([
            (None, "12008 Kerberos first"),
            (None, long.as_str()),
            (None, "12008 Kerberos second"),
        ]);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].id, "connector-unauthorized", "report order");
        assert!(found[0].last_line.len() <= MAX_LINE);
        assert_eq!(
            (found[1].count, found[1].last_line.as_str()),
            (2, "12008 Kerberos second")
        );
    }

    struct NoEvents;

    impl EventLog for NoEvents {
        fn read_after(
            &self,
            _: &str,
            _: Option<u64>,
            _: usize,
        ) -> BoxFuture<'_, Result<Vec<EventEntry>, String>> {
            Box::pin(async { Err("no event log".to_string()) })
        }
    }

    async fn cycle(probe: &LogProbe) -> Report {
        let mut report = Report::default();
        probe.scan().await.apply(&mut report);
        report
    }

    #[tokio::test]
    async fn only_lines_appended_since_the_last_cycle_are_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("connector.log");
        std::fs::write(
            &path,
            "2026-01-01 info started\n2026-01-01 error Connector failed to download the configuration.\n",
        )
        .expect("write");
        let probe = LogProbe::new(
            LogConfig {
                file: Some(path.clone()),
                channel: None,
            },
            Arc::new(NoEvents),
        );
        let first = cycle(&probe).await;
        assert_eq!(first.log_signatures.len(), 1, "{first:?}");
        assert_eq!(first.log_signatures[0].id, "config-download-failed");
        assert!(cycle(&probe).await.log_signatures.is_empty(), "nothing new");

        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        writeln!(log, "error 13019 - cannot retrieve a Kerberos ticket").expect("append");
        writeln!(log, "error 13019 - cannot retrieve a Kerberos ticket again").expect("append");
        write!(log, "error ConnectorError:Unauthorized (still being writ").expect("append");
        log.flush().expect("flush");
        let second = cycle(&probe).await;
        assert_eq!(second.log_signatures.len(), 1, "{second:?}");
        assert_eq!(second.log_signatures[0].id, "kerberos-13019");
        assert_eq!(second.log_signatures[0].count, 2);
        assert!(second.log_signatures[0].last_line.ends_with("again"));

        writeln!(log, "ten)").expect("append");
        log.flush().expect("flush");
        let third = cycle(&probe).await;
        assert_eq!(
            third.log_signatures[0].id, "connector-unauthorized",
            "{third:?}"
        );

        // Rotation: the file starts again, shorter than where we were.
        std::fs::write(&path, "Connector registration failed: denied\n").expect("rotate");
        let fourth = cycle(&probe).await;
        assert_eq!(
            fourth.log_signatures[0].id, "registration-failed",
            "{fourth:?}"
        );

        std::fs::remove_file(&path).expect("remove");
        let gone = cycle(&probe).await;
        assert!(
            gone.probe_errors[0].reason.contains("connector.log"),
            "{gone:?}"
        );
    }
}
