//! Connector log probe: reads what the connector logged since the previous cycle (its
//! Admin event log channel on Windows, a log file elsewhere) and counts the known error
//! signatures of the troubleshooting guides. It ships the signature, the count and the
//! last matching line, never the log itself.

use super::{Observation, Probe, failed};
use crate::config::LogConfig;
use crate::platform::{EventLog, parse::clip};
use connwatch_shared::logsig;
use connwatch_shared::wire::LogSignature;
use futures::future::BoxFuture;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The longest `last_line` shipped.
pub const MAX_LINE: usize = 512;
/// At most this much of a log file is read per cycle; older new lines are skipped.
const MAX_READ: u64 = 4 << 20;
/// When there is no saved position (the collector's first start), this much of the end
/// of a log file is read, so a new collector reports what the connector logged lately.
const FIRST_READ: u64 = 1 << 20;
/// Event log entries read per cycle.
const MAX_EVENTS: usize = 500;
/// How many leading bytes of a log file identify it: a rotated or recreated file
/// starts with other lines (log lines begin with their time), the same file keeps them.
const PREFIX: u64 = 1024;
/// The file beside the spool's state that keeps where reading stopped.
pub const POSITION_FILE: &str = "log-position";

/// How a signature is recognised: by its event id, or by any of its phrases
/// (lowercase, compared with the lowercased text).
struct Rule {
    id: &'static str,
    events: &'static [u32],
    phrases: &'static [&'static str],
}

const fn rule(id: &'static str, events: &'static [u32], phrases: &'static [&'static str]) -> Rule {
    Rule {
        id,
        events,
        phrases,
    }
}

/// The signatures, in the order they are tried: a more specific message before one it
/// contains (the re-registration message says "registration failed" too, and each
/// registration error starts with it). The phrases are the guides' error texts, cut to
/// a part that has no typographic quotes and survives rewording around it.
const RULES: &[Rule] = &[
    rule(
        "trust-cert-expired",
        &[1000],
        &["trust certificate expired"],
    ),
    rule(
        "config-download-failed",
        &[],
        &["failed to download the configuration"],
    ),
    rule(
        "service-unreachable",
        &[],
        &["unable to connect to the service"],
    ),
    rule(
        "execution-policy",
        &[],
        &["failed to retrieve the current execution policy"],
    ),
    rule("registration-wrong-tenant", &[], &["aadsts50059"]),
    rule("registration-proxy-disabled", &[], &["aadsts50001"]),
    rule(
        "registration-ports-blocked",
        &[],
        &[
            "there was no endpoint listening",
            "no endpoint listening at",
        ],
    ),
    rule(
        "registration-denied",
        &[],
        &["the registration request was denied"],
    ),
    rule(
        "registration-interrupted",
        &[],
        &["registration failed: make sure you enabled application proxy"],
    ),
    rule("registration-failed", &[], &["registration failed"]),
    rule(
        "connector-unauthorized",
        &[],
        &["connectorerror:unauthorized"],
    ),
    rule(
        "kerberos-12008",
        &[12008],
        &["exceeded the maximum number of permitted kerberos authentication attempts"],
    ),
    rule("kerberos-13016", &[13016], &["no upn in the edge token"]),
    rule(
        "kerberos-13019",
        &[13019],
        &["kerberos ticket on behalf of the user because of the following general api error"],
    ),
    rule(
        "kerberos-13020",
        &[13020],
        &["backend server spn is not defined"],
    ),
    rule(
        "kerberos-13022",
        &[13022],
        &["responds to kerberos authentication attempts with an http 401"],
    ),
    rule(
        "website-cannot-display",
        &[],
        &["the website cannot display the page"],
    ),
    rule(
        "user-not-assigned",
        &[],
        &["make sure to assign the user with access to this application"],
    ),
    rule(
        "user-not-licensed",
        &[],
        &["make sure that the user has a license"],
    ),
    rule("connector-timed-out", &[], &["the connector timed out"]),
    rule(
        "custom-domain-unresolved",
        &[],
        &["a server with the specified host name could not be found"],
    ),
    rule(
        "user-not-authorized-onprem",
        &[],
        &["the user could not be authorized"],
    ),
];

/// The Kerberos events, also recognised by their number in a message that names
/// Kerberos (the guides' tables print them as "13019 - ...").
const KERBEROS: [(u32, &str); 5] = [
    (12008, "kerberos-12008"),
    (13016, "kerberos-13016"),
    (13019, "kerberos-13019"),
    (13020, "kerberos-13020"),
    (13022, "kerberos-13022"),
];

/// The signature a log line or event shows, if any.
pub fn classify(event_id: Option<u32>, text: &str) -> Option<&'static str> {
    // An event id is the connector's own classification: it wins over any phrase.
    if let Some(r) = event_id.and_then(|e| RULES.iter().find(|r| r.events.contains(&e))) {
        return Some(r.id);
    }
    let lower = text.to_lowercase();
    if let Some(r) = RULES
        .iter()
        .find(|r| r.phrases.iter().any(|p| lower.contains(p)))
    {
        return Some(r.id);
    }
    // The number alone could be a port or a count; the Kerberos errors' messages
    // always name Kerberos.
    if lower.contains("kerberos") {
        for (number, id) in KERBEROS {
            if has_word(&lower, &number.to_string()) {
                return Some(id);
            }
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
    found.sort_by_key(|s| logsig::order(&s.id));
    found
}

/// Where reading a log file stopped, and which file that was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FilePosition {
    /// The first byte not read yet.
    offset: u64,
    /// How many leading bytes identify the file (fewer while it is shorter than
    /// [`PREFIX`]) and their CRC-32.
    prefix_len: u64,
    prefix_crc: u32,
}

/// Where reading stopped, for the configured file and channel.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Position {
    /// The file it applies to, as configured.
    file: Option<String>,
    at: Option<FilePosition>,
    /// The channel it applies to.
    channel: Option<String>,
    last_record: Option<u64>,
}

impl Position {
    /// The text of the position file: `key=value` lines, like the spool's state.
    fn encode(&self) -> String {
        let mut out = String::new();
        if let (Some(f), Some(at)) = (&self.file, &self.at) {
            out.push_str(&format!(
                "file={f}\nfile_offset={}\nfile_prefix_len={}\nfile_prefix_crc={}\n",
                at.offset, at.prefix_len, at.prefix_crc
            ));
        }
        if let (Some(c), Some(r)) = (&self.channel, self.last_record) {
            out.push_str(&format!("channel={c}\nchannel_record={r}\n"));
        }
        out
    }

    fn decode(text: &str) -> Result<Position, String> {
        let mut p = Position::default();
        let (mut offset, mut prefix_len, mut prefix_crc) = (None, None, None);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| format!("`{line}` is not key=value"))?;
            let number = || {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| format!("`{line}`: not a number"))
            };
            match k {
                "file" => p.file = Some(v.to_string()),
                "file_offset" => offset = Some(number()?),
                "file_prefix_len" => prefix_len = Some(number()?),
                "file_prefix_crc" => {
                    prefix_crc =
                        Some(u32::try_from(number()?).map_err(|_| format!("`{line}`: too large"))?)
                }
                "channel" => p.channel = Some(v.to_string()),
                "channel_record" => p.last_record = Some(number()?),
                _ => return Err(format!("`{line}`: unknown key")),
            }
        }
        if let (Some(offset), Some(prefix_len), Some(prefix_crc)) = (offset, prefix_len, prefix_crc)
        {
            p.at = Some(FilePosition {
                offset,
                prefix_len,
                prefix_crc,
            });
        }
        Ok(p)
    }
}

/// The position saved in `path`, for this config: a position saved for another file
/// or channel does not apply. A missing file is a first start; a damaged one is
/// logged and treated as one (the worst outcome is old errors reported once more).
fn load_position(path: &Path, config: &LogConfig) -> Position {
    let saved = match std::fs::read_to_string(path) {
        Ok(text) => match Position::decode(&text) {
            Ok(p) => p,
            Err(why) => {
                tracing::warn!(path = %path.display(), %why, "the log read position is damaged; reading the log as on a first start");
                return Position::default();
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Position::default(),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cannot read the log read position; reading the log as on a first start");
            return Position::default();
        }
    };
    let file = config.file.as_ref().map(|f| f.display().to_string());
    let mut p = Position {
        file: file.clone(),
        channel: config.channel.clone(),
        ..Position::default()
    };
    if file.is_some() && saved.file == file {
        p.at = saved.at;
    }
    if config.channel.is_some() && saved.channel == config.channel {
        p.last_record = saved.last_record;
    }
    p
}

/// Replaces the position file atomically and durably (write, sync, rename), as the
/// spool replaces its state file.
fn save_position(path: &Path, p: &Position) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(p.encode().as_bytes())?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)
}

/// Scans the connector log.
pub struct LogProbe {
    config: LogConfig,
    events: Arc<dyn EventLog>,
    /// Where reading stopped: advanced by each scan.
    position: Arc<Mutex<Position>>,
    /// The position file, and what it holds now.
    saved: Option<(PathBuf, Mutex<Position>)>,
}

impl LogProbe {
    /// A log probe for the configured file or channel. With `position_file`, it starts
    /// where the previous run's last spooled report stopped and keeps its position
    /// there (see [`Probe::spooled`]); without, it reads the end of the log first.
    pub fn new(
        config: LogConfig,
        events: Arc<dyn EventLog>,
        position_file: Option<PathBuf>,
    ) -> Self {
        let start = match &position_file {
            Some(path) => load_position(path, &config),
            None => Position::default(),
        };
        LogProbe {
            config,
            events,
            position: Arc::new(Mutex::new(start.clone())),
            saved: position_file.map(|path| (path, Mutex::new(start))),
        }
    }

    fn position(&self) -> std::sync::MutexGuard<'_, Position> {
        self.position.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn scan(&self) -> Observation {
        let mut out = Vec::new();
        let mut signatures = Vec::new();
        if let Some(path) = &self.config.file {
            let path = path.clone();
            let position = self.position.clone();
            let read = tokio::task::spawn_blocking(move || {
                let start = position.lock().unwrap_or_else(|p| p.into_inner()).at;
                let (text, next) = read_new(&path, start)?;
                let mut p = position.lock().unwrap_or_else(|p| p.into_inner());
                p.file = Some(path.display().to_string());
                p.at = Some(next);
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
            let after = self.position().last_record;
            match self.events.read_after(channel, after, MAX_EVENTS).await {
                Ok(entries) => {
                    if let Some(last) = entries.iter().map(|e| e.record_id).max() {
                        let mut p = self.position();
                        p.channel = Some(channel.clone());
                        p.last_record = Some(last);
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
                    signatures.sort_by_key(|s| logsig::order(&s.id));
                }
                Err(reason) => out.push(failed(self.name(), reason)),
            }
        }
        out.insert(0, Observation::Log(signatures));
        Observation::Many(out)
    }
}

/// The identity of the file open as `file`: its first `len` bytes' CRC-32, or `None`
/// when it is shorter than that.
fn prefix_crc(file: &mut std::fs::File, len: u64) -> std::io::Result<Option<u32>> {
    file.seek(SeekFrom::Start(0))?;
    let mut bytes = Vec::new();
    file.take(len).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 == len).then(|| crc32fast::hash(&bytes)))
}

/// The complete lines added to `path` since `from` (bounded), and where to start next
/// time. A file that is not the one `from` was taken in (its first bytes differ) or is
/// shorter than the offset was rotated or truncated: it is read from its start.
fn read_new(path: &Path, from: Option<FilePosition>) -> Result<(String, FilePosition), String> {
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
    let mut start = match from {
        Some(at) => {
            let same = at.offset <= len
                && prefix_crc(&mut file, at.prefix_len).map_err(describe)? == Some(at.prefix_crc);
            if same { at.offset } else { 0 }
        }
        None => len.saturating_sub(FIRST_READ),
    };
    start = start.max(len.saturating_sub(MAX_READ));
    let prefix_len = len.min(PREFIX);
    let prefix = prefix_crc(&mut file, prefix_len)
        .map_err(describe)?
        .unwrap_or_default();
    file.seek(SeekFrom::Start(start)).map_err(describe)?;
    let mut bytes = Vec::new();
    file.take(len - start)
        .read_to_end(&mut bytes)
        .map_err(describe)?;
    // Only whole lines: a line still being written is read next cycle.
    let end = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let mut text = String::from_utf8_lossy(&bytes[..end]).into_owned();
    let skipped_into_a_line = from.is_none_or(|at| at.offset != start) && start > 0;
    if skipped_into_a_line {
        text = text
            .split_once('\n')
            .map(|(_, rest)| rest.to_string())
            .unwrap_or_default();
    }
    Ok((
        text,
        FilePosition {
            offset: start + end as u64,
            prefix_len,
            prefix_crc: prefix,
        },
    ))
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

    fn spooled(&self) {
        let Some((path, saved)) = &self.saved else {
            return;
        };
        let now = self.position().clone();
        let mut saved = saved.lock().unwrap_or_else(|p| p.into_inner());
        if *saved == now {
            return;
        }
        match save_position(path, &now) {
            Ok(()) => *saved = now,
            // The next spooled report tries again; until then a restart would report
            // this cycle's lines once more, which is the safe side.
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot save the log read position")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::EventEntry;
    use connwatch_shared::wire::Report;
    use std::io::Write;

    /// Every error of the guides' tables, as the connector logs it, and its signature.
    /// The registration window's "clear error" is not in the table: it is shown in the
    /// wizard and never logged.
    const GUIDE_LINES: &[(Option<u32>, &str, &str)] = &[
        (
            Some(1000),
            "Connector re-registration failed: The Connector trust certificate expired. Run the PowerShell cmdlet Register-AppProxyConnector on the computer on which the Connector is running to re-register your Connector.",
            "trust-cert-expired",
        ),
        (
            None,
            "2024-02-14 10:01:02 Error Connector re-registration failed: The Connector trust certificate expired. Run the PowerShell cmdlet Register-MicrosoftEntraPrivateNetworkConnector on the computer on which the Connector is running to re-register your Connector.",
            "trust-cert-expired",
        ),
        (
            None,
            "Connector failed to download the configuration.",
            "config-download-failed",
        ),
        (
            None,
            "The connector was unable to connect to the service due to networking issues. The connector tried to access the following URL.",
            "service-unreachable",
        ),
        (
            None,
            "Connector registration failed: Make sure you enabled application proxy in the Azure Management Portal and that you entered your Active Directory user name and password correctly. Error: 'One or more errors occurred.'",
            "registration-interrupted",
        ),
        (
            None,
            "Connector registration failed: Make sure you enabled application proxy in the Azure Management Portal and that you entered your Active Directory user name and password correctly. Error: 'AADSTS50059: No tenant-identifying information found in either the request or implied by any provided credentials and search by service principal URI has failed.",
            "registration-wrong-tenant",
        ),
        (
            None,
            "Connector registration failed: Make sure you enabled Application Proxy in the Azure Management Portal and that you entered your Active Directory user name and password correctly. Error: 'AADSTS50001: Resource `https://proxy.cloudwebappproxy.net/registerapp` is disabled.'",
            "registration-proxy-disabled",
        ),
        (
            None,
            "Connector registration failed: Make sure your computer is connected to the Internet. Error: 'There was no endpoint listening at `https://connector.msappproxy.net:9090/register/RegisterConnector` that could accept the message. This is often caused by an incorrect address or SOAP action. See InnerException, if present, for more details.'",
            "registration-ports-blocked",
        ),
        (
            None,
            "Connector registration failed: Make sure you are an Application Administrator of your Active Directory to register the connector. Error: 'The registration request was denied.'",
            "registration-denied",
        ),
        (
            None,
            "Connector registration failed: Make sure you are a Global Administrator of your Active Directory to register the Connector. Error: 'The registration request was denied.'",
            "registration-denied",
        ),
        (
            None,
            "Connector registration failed: unexpected answer",
            "registration-failed",
        ),
        (
            None,
            "Failed to retrieve the current execution policy for running PowerShell scripts.",
            "execution-policy",
        ),
        (
            None,
            "InternalServerError: This corporate app can\u{2019}t be accessed right now. Please try again later\u{2026} ConnectorError:Unauthorized.",
            "connector-unauthorized",
        ),
        (
            None,
            "12008 - Microsoft Entra exceeded the maximum number of permitted Kerberos authentication attempts to the backend server.",
            "kerberos-12008",
        ),
        (
            Some(12008),
            "Microsoft Entra exceeded the maximum number of permitted\n Kerberos authentication attempts to the backend server.",
            "kerberos-12008",
        ),
        (
            None,
            "13016 - Microsoft Entra ID cannot retrieve a Kerberos ticket on behalf of the user because there is no UPN in the edge token or in the access cookie.",
            "kerberos-13016",
        ),
        (
            None,
            "13019 - Microsoft Entra ID cannot retrieve a Kerberos ticket on behalf of the user because of the following general API error.",
            "kerberos-13019",
        ),
        (
            None,
            "Azure AD cannot retrieve a Kerberos ticket on behalf of the user because of the following general API error.",
            "kerberos-13019",
        ),
        (
            None,
            "13020 - Microsoft Entra ID cannot retrieve a Kerberos ticket on behalf of the user because the backend server SPN is not defined.",
            "kerberos-13020",
        ),
        (Some(13020), "anything at all", "kerberos-13020"),
        (
            None,
            "13022 - Microsoft Entra ID cannot authenticate the user because the backend server responds to Kerberos authentication attempts with an HTTP 401 error.",
            "kerberos-13022",
        ),
        (
            None,
            "The website cannot display the page.",
            "website-cannot-display",
        ),
        (
            None,
            "This corporate app can\u{2019}t be accessed. You are not authorized to access this application. Authorization failed. Make sure to assign the user with access to this application.",
            "user-not-assigned",
        ),
        (
            None,
            "This corporate app can\u{2019}t be accessed right now. Please try again later\u{2026} The connector timed out. ",
            "connector-timed-out",
        ),
        (
            None,
            "This corporate app can\u{2019}t be accessed. You are not authorized to access this application. Authorization failed. Make sure that the user has a license for Microsoft Entra ID P1 or P2.",
            "user-not-licensed",
        ),
        (
            None,
            "A server with the specified host name could not be found.",
            "custom-domain-unresolved",
        ),
        (
            None,
            "Forbidden: This corporate app can't be accessed OR The user could not be authorized. Make sure the user is defined in your on-premises AD and that the user has access to the app in your on-premises AD.",
            "user-not-authorized-onprem",
        ),
    ];

    #[test]
    fn every_error_of_the_guides_has_its_own_signature() {
        for (event, text, want) in GUIDE_LINES {
            assert_eq!(classify(*event, text), Some(*want), "{text}");
            // Case does not matter: some tools log messages upper-cased.
            assert_eq!(
                classify(*event, &text.to_uppercase()),
                Some(*want),
                "{text}"
            );
        }
        for s in logsig::SIGNATURES {
            assert!(
                GUIDE_LINES.iter().any(|(_, _, id)| *id == s.id),
                "{} has no guide line",
                s.id
            );
        }
        for r in RULES {
            assert!(logsig::find(r.id).is_some(), "{} is not catalogued", r.id);
        }
    }

    #[test]
    fn unrelated_lines_are_not_classified() {
        for text in [
            "listening on port 12008",
            "Kerberos ticket 1130220 issued",
            "all good",
            "13019 requests served",
        ] {
            assert_eq!(classify(None, text), None, "{text}");
        }
        assert_eq!(classify(Some(4242), "all good"), None);
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
            None,
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

    fn file_probe(path: &Path, position: &Path) -> LogProbe {
        LogProbe::new(
            LogConfig {
                file: Some(path.to_path_buf()),
                channel: None,
            },
            Arc::new(NoEvents),
            Some(position.to_path_buf()),
        )
    }

    fn append(path: &Path, line: &str) {
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .expect("open");
        writeln!(log, "{line}").expect("append");
    }

    #[tokio::test]
    async fn a_restarted_probe_goes_on_from_the_last_spooled_position() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, position) = (dir.path().join("connector.log"), dir.path().join("pos"));
        append(&path, "2026-01-01 info started");
        append(
            &path,
            "2026-01-01 error Connector failed to download the configuration.",
        );
        let first = file_probe(&path, &position);
        assert_eq!(cycle(&first).await.log_signatures.len(), 1);
        // The report did not reach the spool: a restart reads those lines again.
        let again = file_probe(&path, &position);
        assert_eq!(cycle(&again).await.log_signatures.len(), 1);
        again.spooled();
        drop((first, again));

        let restarted = file_probe(&path, &position);
        assert!(
            cycle(&restarted).await.log_signatures.is_empty(),
            "old lines are not reported again"
        );
        append(
            &path,
            "2026-01-02 error The website cannot display the page.",
        );
        let next = cycle(&restarted).await;
        assert_eq!(
            next.log_signatures[0].id, "website-cannot-display",
            "{next:?}"
        );
        restarted.spooled();

        // Rotated while stopped: a new file, longer than the old offset, read whole.
        std::fs::write(
            &path,
            format!(
                "2026-01-03 error Connector registration failed: denied\n{}",
                "2026-01-03 info padding\n".repeat(50)
            ),
        )
        .expect("rotate");
        let after_rotation = cycle(&file_probe(&path, &position)).await;
        assert_eq!(
            after_rotation.log_signatures[0].id, "registration-failed",
            "{after_rotation:?}"
        );

        // A position saved for another file does not apply; a damaged one is ignored.
        std::fs::write(
            &position,
            "file=/elsewhere\nfile_offset=1\nfile_prefix_len=0\nfile_prefix_crc=0\n",
        )
        .expect("write");
        assert_eq!(
            cycle(&file_probe(&path, &position))
                .await
                .log_signatures
                .len(),
            1
        );
        std::fs::write(&position, "garbage").expect("write");
        assert_eq!(
            cycle(&file_probe(&path, &position))
                .await
                .log_signatures
                .len(),
            1
        );
    }

    struct Channel(Vec<EventEntry>);

    impl EventLog for Channel {
        fn read_after(
            &self,
            _: &str,
            after: Option<u64>,
            max: usize,
        ) -> BoxFuture<'_, Result<Vec<EventEntry>, String>> {
            let out: Vec<EventEntry> = self
                .0
                .iter()
                .filter(|e| after.is_none_or(|a| e.record_id > a))
                .take(max)
                .cloned()
                .collect();
            Box::pin(async move { Ok(out) })
        }
    }

    #[tokio::test]
    async fn the_last_event_record_is_kept_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let position = dir.path().join("pos");
        let event = |record_id, event_id| EventEntry {
            record_id,
            event_id: Some(event_id),
            text: "Kerberos".into(),
        };
        let probe = |events| {
            LogProbe::new(
                LogConfig {
                    file: None,
                    channel: Some("Connector/Admin".into()),
                },
                Arc::new(Channel(events)),
                Some(position.clone()),
            )
        };
        let first = probe(vec![event(7, 13019)]);
        assert_eq!(cycle(&first).await.log_signatures[0].id, "kerberos-13019");
        first.spooled();
        assert!(
            std::fs::read_to_string(&position)
                .expect("saved")
                .contains("channel_record=7")
        );

        let restarted = probe(vec![event(7, 13019), event(8, 12008)]);
        let report = cycle(&restarted).await;
        assert_eq!(report.log_signatures.len(), 1, "{report:?}");
        assert_eq!(report.log_signatures[0].id, "kerberos-12008");
    }
}
