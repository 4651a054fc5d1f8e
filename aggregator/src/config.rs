//! The aggregator's configuration: TOML read into raw serde structs and validated into
//! [`Config`] before any port is bound. Relative paths follow the config file's folder.

use crate::alert::engine::{CodePolicy, Policy};
use crate::version::Version;
use connwatch_shared::config::{self as cfg, ConfigError, invalid};
use connwatch_shared::finding::{Code, Severity};
use connwatch_shared::tls::TlsFiles;
use hyper::Uri;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_listen")]
    listen: String,
    data_dir: PathBuf,
    tls: RawTls,
    #[serde(default)]
    rules: RawRules,
    #[serde(default)]
    group: Vec<RawGroup>,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    alert: RawAlert,
    #[serde(default)]
    metrics: RawMetrics,
}

fn default_listen() -> String {
    "0.0.0.0:7443".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    crl: Option<PathBuf>,
}

/// Thresholds that can be set fleet-wide under `[rules]` and per `[[group]]`. serde's
/// `flatten` cannot be combined with `deny_unknown_fields`, so both tables list these
/// keys themselves and hand them over through this view.
struct RawThresholds<'a> {
    inactive_after: &'a Option<String>,
    cert_warning: &'a Option<String>,
    cert_critical: &'a Option<String>,
    min_healthy: Option<u32>,
    expected_cert_issuers: &'a Option<Vec<String>>,
    min_version: &'a Option<String>,
    log_quiet_after: &'a Option<String>,
}

macro_rules! with_thresholds {
    ($(#[$m:meta])* struct $name:ident { $($field:ident: $ty:ty,)* }) => {
        $(#[$m])*
        struct $name {
            $($field: $ty,)*
            inactive_after: Option<String>,
            cert_warning: Option<String>,
            cert_critical: Option<String>,
            min_healthy: Option<u32>,
            expected_cert_issuers: Option<Vec<String>>,
            min_version: Option<String>,
            log_quiet_after: Option<String>,
        }

        impl $name {
            fn thresholds(&self) -> RawThresholds<'_> {
                RawThresholds {
                    inactive_after: &self.inactive_after,
                    cert_warning: &self.cert_warning,
                    cert_critical: &self.cert_critical,
                    min_healthy: self.min_healthy,
                    expected_cert_issuers: &self.expected_cert_issuers,
                    min_version: &self.min_version,
                    log_quiet_after: &self.log_quiet_after,
                }
            }
        }
    };
}

with_thresholds! {
    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawRules {
        retire_after: Option<String>,
        max_clock_skew: Option<String>,
        startup_grace: Option<String>,
    }
}

with_thresholds! {
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawGroup {
        name: String,
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    cache_mb: Option<u64>,
    max_batch: Option<usize>,
    retention: Option<String>,
    commit_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlert {
    codes: Option<Vec<String>>,
    severities: Option<Vec<String>>,
    #[serde(rename = "for")]
    for_: Option<String>,
    repeat_interval: Option<String>,
    evaluate_every: Option<String>,
    log: Option<bool>,
    external_url: Option<String>,
    #[serde(default)]
    webhook: Vec<RawWebhook>,
    alertmanager: Option<RawAlertmanager>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: String,
    timeout: Option<String>,
    max_queue: Option<usize>,
    backoff: Option<String>,
    max_backoff: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlertmanager {
    url: String,
    timeout: Option<String>,
    resend_every: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<String>,
}

/// Alerting: which findings alert, timing, and where notifications go.
#[derive(Debug, Clone)]
pub struct AlertConfig {
    /// Codes, severities, `for` and the repeat interval.
    pub policy: Policy,
    /// How often findings are evaluated for alerts.
    pub evaluate_every: Duration,
    /// Whether notifications are logged.
    pub log: bool,
    /// The base of links in alerts (Alertmanager's `generatorURL`).
    pub external_url: String,
    /// Generic JSON webhooks.
    pub webhooks: Vec<WebhookConfig>,
    /// The Alertmanager to post to.
    pub alertmanager: Option<AlertmanagerConfig>,
}

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            policy: crate::alert::defaults::default_policy(),
            evaluate_every: Duration::from_secs(30),
            log: true,
            external_url: "https://localhost:7443".into(),
            webhooks: Vec::new(),
            alertmanager: None,
        }
    }
}

/// A JSON webhook sink.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// `http://host:port/path`.
    pub url: Uri,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Notifications held while the receiver fails; the oldest go first when full.
    pub max_queue: usize,
    /// First retry delay; doubles per failure.
    pub backoff: Duration,
    /// Largest retry delay.
    pub max_backoff: Duration,
}

/// The Alertmanager sink.
#[derive(Debug, Clone)]
pub struct AlertmanagerConfig {
    /// Alertmanager's base URL, `http://host:9093`.
    pub url: Uri,
    /// Per-request timeout.
    pub timeout: Duration,
    /// How often firing alerts are posted again so Alertmanager keeps them active.
    pub resend_every: Duration,
}

/// The Prometheus endpoint.
#[derive(Debug, Clone, Default)]
pub struct MetricsConfig {
    /// Where `/metrics` is served over plain HTTP; `None`: not served.
    pub listen: Option<SocketAddr>,
}

/// A validated aggregator configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub file: PathBuf,
    /// Where the gRPC server listens.
    pub listen: SocketAddr,
    /// The sled store's folder.
    pub data_dir: PathBuf,
    /// The server's mTLS files; `ca` signs collectors' and operators' certificates.
    pub tls: TlsFiles,
    /// Certificate revocation lists (PEM, signed by the CA): client certificates on them
    /// are refused. Re-read on reload.
    pub tls_crl: Option<PathBuf>,
    /// Rule thresholds.
    pub rules: RulesConfig,
    /// Store tuning.
    pub store: StoreConfig,
    /// Alerting.
    pub alert: AlertConfig,
    /// The Prometheus endpoint.
    pub metrics: MetricsConfig,
}

/// Thresholds the rules use, fleet-wide or for one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thresholds {
    /// A connector with no report for this long is inactive.
    pub inactive_after: Duration,
    /// Trust certificates expiring within this are a warning.
    pub cert_warning: Duration,
    /// Trust certificates expiring within this are critical.
    pub cert_critical: Duration,
    /// Fewer healthy connectors than this in a group is a finding.
    pub min_healthy: u32,
    /// A trust certificate's issuer must contain one of these (case-insensitive).
    pub expected_cert_issuers: Vec<String>,
    /// Connectors older than this are behind, whatever their group runs.
    pub min_version: Option<Version>,
    /// A known error's finding stays while the connector logs it again within this of
    /// the previous time, and clears once it has not logged it for this long.
    pub log_quiet_after: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            inactive_after: Duration::from_secs(90),
            cert_warning: Duration::from_secs(30 * 86_400),
            cert_critical: Duration::from_secs(7 * 86_400),
            min_healthy: 2,
            expected_cert_issuers: vec!["connectorregistrationca.msappproxy.net".into()],
            min_version: None,
            log_quiet_after: Duration::from_secs(3600),
        }
    }
}

/// The rules' configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesConfig {
    /// Thresholds for groups that do not set their own.
    pub defaults: Thresholds,
    /// A connector inactive for this long leaves the live views (history stays).
    pub retire_after: Duration,
    /// A host clock further than this from the aggregator's is skewed.
    pub max_clock_skew: Duration,
    /// Groups the operators declared, with their thresholds.
    pub groups: Vec<GroupConfig>,
    /// The aggregator's own start: its downtime and the grace after it.
    pub startup: Startup,
}

/// What the rules know of the aggregator's own start. A collector cannot report while
/// the aggregator is down, and reconnects with a backoff after it is up again: that
/// time is no connector's silence, so it is not counted towards `inactive` or
/// retirement, and until the grace has passed a member that has not reported yet does
/// not count against its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Startup {
    /// The last time the aggregator is known to have received a report before this
    /// start (ms since the Unix epoch): the newest `last_seen` in the store it opened.
    pub stopped_ms: i64,
    /// When this aggregator started (ms since the Unix epoch); 0 outside a server.
    pub started_ms: i64,
    /// How long after the start absence means "no report yet" rather than "silent".
    pub grace: Duration,
}

impl Startup {
    /// The grace unless configured: a collector's reconnect delay is capped at 30 s
    /// (with full jitter) and it reports every 30 s by default, so a collector whose
    /// spool was empty when the aggregator came back needs up to one of each.
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(60);

    /// When the grace ends (ms since the Unix epoch).
    pub fn grace_end_ms(&self) -> i64 {
        self.started_ms
            .saturating_add(i64::try_from(self.grace.as_millis()).unwrap_or(i64::MAX))
    }
}

impl Default for Startup {
    fn default() -> Self {
        Startup {
            stopped_ms: 0,
            started_ms: 0,
            grace: Startup::DEFAULT_GRACE,
        }
    }
}

/// A declared connector group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// The group's name, as collectors report it.
    pub name: String,
    /// Its thresholds (the fleet-wide ones where it sets none).
    pub thresholds: Thresholds,
}

impl RulesConfig {
    /// The thresholds that apply to a group.
    pub fn for_group(&self, group: &str) -> &Thresholds {
        self.groups
            .iter()
            .find(|g| g.name == group)
            .map_or(&self.defaults, |g| &g.thresholds)
    }

    /// Whether the operators declared this group.
    pub fn is_declared(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g.name == group)
    }
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            defaults: Thresholds::default(),
            retire_after: Duration::from_secs(10 * 86_400),
            max_clock_skew: Duration::from_secs(300),
            groups: Vec::new(),
            startup: Startup::default(),
        }
    }
}

fn thresholds(
    file: &Path,
    prefix: &str,
    raw: &RawThresholds<'_>,
    base: &Thresholds,
) -> Result<Thresholds, ConfigError> {
    let dur = |key: &str, v: &Option<String>, d: Duration| match v {
        Some(t) => cfg::duration(file, &format!("{prefix}{key}"), t),
        None => Ok(d),
    };
    let min_version = match raw.min_version {
        Some(v) => Some(Version::parse(v).ok_or_else(|| {
            invalid(
                file,
                format!("{prefix}min_version"),
                format!("`{v}` is not a dotted version"),
                "write it like `1.5.3437.0`",
            )
        })?),
        None => base.min_version.clone(),
    };
    let t = Thresholds {
        inactive_after: dur("inactive_after", raw.inactive_after, base.inactive_after)?,
        cert_warning: dur("cert_warning", raw.cert_warning, base.cert_warning)?,
        cert_critical: dur("cert_critical", raw.cert_critical, base.cert_critical)?,
        min_healthy: raw.min_healthy.unwrap_or(base.min_healthy),
        expected_cert_issuers: raw
            .expected_cert_issuers
            .clone()
            .unwrap_or_else(|| base.expected_cert_issuers.clone()),
        min_version,
        log_quiet_after: dur("log_quiet_after", raw.log_quiet_after, base.log_quiet_after)?,
    };
    if t.cert_critical > t.cert_warning {
        return Err(invalid(
            file,
            format!("{prefix}cert_critical"),
            "is longer than cert_warning",
            "the critical window must sit inside the warning window, e.g. 7d and 30d",
        ));
    }
    Ok(t)
}

/// Parses `rules.startup_grace`: zero is allowed (count absence from the first
/// moment), an hour or more is not.
fn startup_grace(file: &Path, text: &str) -> Result<Duration, ConfigError> {
    let key = "rules.startup_grace";
    let d = connwatch_shared::time::parse_duration(text).map_err(|e| {
        invalid(
            file,
            key,
            e,
            "write it like `60s` (a collector's longest reconnect delay plus its interval), or `0s` for none",
        )
    })?;
    if d >= Duration::from_secs(3600) {
        return Err(invalid(
            file,
            key,
            "is an hour or longer",
            "collectors reconnect within 30 s and report every interval: keep it to about a minute, a few at most",
        ));
    }
    Ok(d)
}

/// Parses `store.commit_interval`: zero is allowed (no waiting), over a second is not.
fn commit_interval(file: &Path, text: &str) -> Result<Duration, ConfigError> {
    let key = "store.commit_interval";
    let d = connwatch_shared::time::parse_duration(text).map_err(|e| {
        invalid(
            file,
            key,
            e,
            "write it like `20ms`, or `0s` to commit at once",
        )
    })?;
    if d > StoreConfig::MAX_COMMIT_INTERVAL {
        return Err(invalid(
            file,
            key,
            "is longer than 1s",
            "acks wait for it and collectors give up on them after a few seconds: keep it to tens of milliseconds",
        ));
    }
    Ok(d)
}

/// Store tuning.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// sled's page cache, in bytes.
    pub cache_bytes: u64,
    /// The most reports committed in one flush (a group also stops at 64 MiB).
    pub max_batch: usize,
    /// How long history is kept; older reports are removed.
    pub retention: Duration,
    /// The least time between the starts of two group commits; reports that arrive
    /// meanwhile join the next group. Zero commits whatever is waiting at once.
    pub commit_interval: Duration,
}

impl StoreConfig {
    /// Reports per group commit unless configured. At 1024, a thousand saturated
    /// streams each had about one report in a group, so every report cost its stream a
    /// wake-up and an ack write of its own on both ends; at 4096 the same machine
    /// stores more than twice as many.
    pub const DEFAULT_MAX_BATCH: usize = 4096;
    /// Commit interval unless configured: a fleet at its pace sends one report at a
    /// time, and committing each alone costs it a whole group's work.
    pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_millis(20);
    /// The longest commit interval accepted: acks wait for it, and collectors give up
    /// on an ack after a few seconds.
    pub const MAX_COMMIT_INTERVAL: Duration = Duration::from_secs(1);
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            cache_bytes: 64 << 20,
            max_batch: StoreConfig::DEFAULT_MAX_BATCH,
            retention: Duration::from_secs(30 * 86_400),
            commit_interval: StoreConfig::DEFAULT_COMMIT_INTERVAL,
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = cfg::load_toml(file)?;
        Config::from_raw(file, raw)
    }

    /// Parses and validates config text, as if read from `file`.
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = cfg::parse_toml(file, text)?;
        Config::from_raw(file, raw)
    }

    fn from_raw(file: &Path, raw: RawConfig) -> Result<Config, ConfigError> {
        let listen: SocketAddr = raw.listen.parse().map_err(|_| {
            invalid(
                file,
                "listen",
                format!("`{}` is not an address:port", raw.listen),
                "write it like `0.0.0.0:7443` or `[::]:7443`",
            )
        })?;
        let defaults = RulesConfig::default();
        let r = &raw.rules;
        let base = thresholds(file, "rules.", &r.thresholds(), &defaults.defaults)?;
        let mut rules = RulesConfig {
            retire_after: match &r.retire_after {
                Some(t) => cfg::duration(file, "rules.retire_after", t)?,
                None => defaults.retire_after,
            },
            max_clock_skew: match &r.max_clock_skew {
                Some(t) => cfg::duration(file, "rules.max_clock_skew", t)?,
                None => defaults.max_clock_skew,
            },
            defaults: base,
            groups: Vec::new(),
            startup: Startup {
                grace: match &r.startup_grace {
                    Some(t) => startup_grace(file, t)?,
                    None => Startup::DEFAULT_GRACE,
                },
                ..Startup::default()
            },
        };
        if rules.retire_after <= rules.defaults.inactive_after {
            return Err(invalid(
                file,
                "rules.retire_after",
                "is not longer than rules.inactive_after",
                "a connector is first inactive, then retired: e.g. 90s and 10d",
            ));
        }
        for (i, g) in raw.group.iter().enumerate() {
            if connwatch_shared::identity::validate_name(&g.name).is_err() {
                return Err(invalid(
                    file,
                    format!("group[{i}].name"),
                    format!("`{}` is not a valid group name", g.name),
                    "use 1 to 64 letters, digits, `.`, `_` or `-`",
                ));
            }
            if rules.is_declared(&g.name) {
                return Err(invalid(
                    file,
                    format!("group[{i}].name"),
                    format!("group `{}` is declared twice", g.name),
                    "declare each group once",
                ));
            }
            let t = thresholds(
                file,
                &format!("group[{i}]."),
                &g.thresholds(),
                &rules.defaults,
            )?;
            if rules.retire_after <= t.inactive_after {
                return Err(invalid(
                    file,
                    format!("group[{i}].inactive_after"),
                    "is not shorter than rules.retire_after",
                    "a connector is first inactive, then retired: shorten it or raise rules.retire_after",
                ));
            }
            rules.groups.push(GroupConfig {
                name: g.name.clone(),
                thresholds: t,
            });
        }
        let store = StoreConfig {
            cache_bytes: raw
                .store
                .cache_mb
                .map_or(StoreConfig::default().cache_bytes, |m| m << 20),
            max_batch: raw
                .store
                .max_batch
                .unwrap_or(StoreConfig::default().max_batch),
            retention: match &raw.store.retention {
                Some(t) => cfg::duration(file, "store.retention", t)?,
                None => StoreConfig::default().retention,
            },
            commit_interval: match &raw.store.commit_interval {
                Some(t) => commit_interval(file, t)?,
                None => StoreConfig::default().commit_interval,
            },
        };
        if store.retention <= rules.retire_after {
            return Err(invalid(
                file,
                "store.retention",
                "is not longer than rules.retire_after",
                "a live connector's latest report is in its history, so keep history longer than connectors stay live: e.g. 30d against 10d",
            ));
        }
        if store.max_batch == 0 {
            return Err(invalid(
                file,
                "store.max_batch",
                "must be at least 1",
                "leave it out for 4096",
            ));
        }
        let alert = alert_config(file, &raw.alert, listen)?;
        let metrics = MetricsConfig {
            listen: match &raw.metrics.listen {
                None => None,
                Some(text) => Some(text.parse().map_err(|_| {
                    invalid(
                        file,
                        "metrics.listen",
                        format!("`{text}` is not an address:port"),
                        "write it like `127.0.0.1:9464`, or leave [metrics] out to serve no metrics",
                    )
                })?),
            },
        };
        Ok(Config {
            file: file.to_path_buf(),
            listen,
            data_dir: cfg::relative_to(file, &raw.data_dir),
            tls: TlsFiles {
                ca: cfg::relative_to(file, &raw.tls.ca),
                cert: cfg::relative_to(file, &raw.tls.cert),
                key: cfg::relative_to(file, &raw.tls.key),
            },
            tls_crl: raw.tls.crl.as_ref().map(|c| cfg::relative_to(file, c)),
            rules,
            store,
            alert,
            metrics,
        })
    }
}

fn http_url(file: &Path, key: &str, text: &str) -> Result<Uri, ConfigError> {
    let fix = "write it like `http://127.0.0.1:9093`; sinks speak plain HTTP, so keep them on loopback or a trusted network";
    let uri: Uri = text
        .parse()
        .map_err(|_| invalid(file, key, format!("`{text}` is not a URL"), fix))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(invalid(
            file,
            key,
            format!("`{text}` is not an http:// URL with a host"),
            fix,
        ));
    }
    Ok(uri)
}

fn alert_config(
    file: &Path,
    raw: &RawAlert,
    listen: SocketAddr,
) -> Result<AlertConfig, ConfigError> {
    let dur = |key: &str, v: &Option<String>, d: Duration| match v {
        Some(t) => cfg::duration(file, key, t),
        None => Ok(d),
    };
    let codes: Option<Vec<Code>> = match &raw.codes {
        None => None,
        Some(list) => Some(
            list.iter()
                .map(|c| {
                    Code::parse(c).ok_or_else(|| {
                        invalid(
                            file,
                            "alert.codes",
                            format!("`{c}` is not a finding code"),
                            "use codes from the findings table in the README, e.g. `trust-cert-expiring`",
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    let severities: Option<BTreeSet<Severity>> = match &raw.severities {
        None => None,
        Some(list) => Some(
            list.iter()
                .map(|s| {
                    Severity::parse(s).ok_or_else(|| {
                        invalid(
                            file,
                            "alert.severities",
                            format!("`{s}` is not a severity"),
                            "use `info`, `warning` or `critical`",
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    // `for` may be zero (fire at once), so it is parsed without the positive check.
    let for_ = match &raw.for_ {
        None => None,
        Some(t) => Some(
            connwatch_shared::time::parse_duration(t)
                .map_err(|e| invalid(file, "alert.for", e, "write it like `0s` or `5m`"))?,
        ),
    };
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    // Each key left out keeps the per-code defaults; each one set applies to every
    // code that alerts. Codes named without severities alert at warning and critical.
    let mut policy = crate::alert::defaults::default_policy();
    if let Some(codes) = codes {
        policy.codes = codes
            .into_iter()
            .map(|c| {
                let hold = crate::alert::defaults::alerts_by_default(c).map_or(0, |d| ms(d.hold));
                let p = CodePolicy {
                    severities: [Severity::Warning, Severity::Critical].into(),
                    for_ms: hold,
                };
                (c, p)
            })
            .collect();
    }
    for p in policy.codes.values_mut() {
        if let Some(s) = &severities {
            p.severities = s.clone();
        }
        if let Some(f) = for_ {
            p.for_ms = ms(f);
        }
    }
    policy.repeat_ms = ms(dur(
        "alert.repeat_interval",
        &raw.repeat_interval,
        Duration::from_secs(4 * 3600),
    )?);
    let mut webhooks = Vec::new();
    for (i, w) in raw.webhook.iter().enumerate() {
        let key = |k: &str| format!("alert.webhook[{i}].{k}");
        let hook = WebhookConfig {
            url: http_url(file, &key("url"), &w.url)?,
            timeout: dur(&key("timeout"), &w.timeout, Duration::from_secs(5))?,
            max_queue: w.max_queue.unwrap_or(10_000),
            backoff: dur(&key("backoff"), &w.backoff, Duration::from_secs(1))?,
            max_backoff: dur(
                &key("max_backoff"),
                &w.max_backoff,
                Duration::from_secs(300),
            )?,
        };
        if hook.max_queue == 0 {
            return Err(invalid(
                file,
                key("max_queue"),
                "must be at least 1",
                "leave it out for 10000",
            ));
        }
        if hook.backoff > hook.max_backoff {
            return Err(invalid(
                file,
                key("backoff"),
                "is longer than max_backoff",
                "the first retry delay must not exceed the largest, e.g. 1s and 5m",
            ));
        }
        webhooks.push(hook);
    }
    let alertmanager = match &raw.alertmanager {
        None => None,
        Some(a) => Some(AlertmanagerConfig {
            url: http_url(file, "alert.alertmanager.url", &a.url)?,
            timeout: dur(
                "alert.alertmanager.timeout",
                &a.timeout,
                Duration::from_secs(5),
            )?,
            resend_every: dur(
                "alert.alertmanager.resend_every",
                &a.resend_every,
                Duration::from_secs(60),
            )?,
        }),
    };
    let external_url = match &raw.external_url {
        Some(u) => {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(invalid(
                    file,
                    "alert.external_url",
                    format!("`{u}` is not an http(s) URL"),
                    "write the address operators reach the aggregator at, e.g. `https://aggregator.example.net:7443`",
                ));
            }
            u.trim_end_matches('/').to_string()
        }
        None => format!("https://{listen}"),
    };
    Ok(AlertConfig {
        policy,
        evaluate_every: dur(
            "alert.evaluate_every",
            &raw.evaluate_every,
            Duration::from_secs(30),
        )?,
        log: raw.log.unwrap_or(true),
        external_url,
        webhooks,
        alertmanager,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str =
        "data_dir = \"data\"\n[tls]\nca = \"ca.pem\"\ncert = \"s.pem\"\nkey = \"s.key\"\n";

    fn parse(extra: &str) -> Result<Config, String> {
        Config::parse(
            Path::new("/etc/connwatch/aggregator.toml"),
            &format!("{BASE}{extra}"),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_relative_paths() {
        let c = parse("").expect("valid");
        assert_eq!(c.data_dir, PathBuf::from("/etc/connwatch/data"));
        assert_eq!(c.rules, RulesConfig::default());
        assert_eq!(c.listen.port(), 7443);
        assert!(c.alert.log && c.alert.webhooks.is_empty() && c.alert.alertmanager.is_none());
        assert_eq!(c.alert.policy, crate::alert::defaults::default_policy());
        assert_eq!(c.alert.policy.for_ms(Code::TrustCertExpiring), 0);
        assert_eq!(c.alert.policy.for_ms(Code::EndpointUnreachable), 60_000);
        assert!(c.metrics.listen.is_none());
        assert_eq!(c.store.commit_interval, Duration::from_millis(20));
        for (text, want) in [("0s", 0), ("5ms", 5), ("1s", 1000)] {
            let c = parse(&format!("[store]\ncommit_interval = \"{text}\"")).expect("valid");
            assert_eq!(c.store.commit_interval, Duration::from_millis(want));
        }
    }

    #[test]
    fn alert_sinks_and_metrics() {
        let c = parse(
            "[alert]\ncodes = [\"inactive\"]\nfor = \"5m\"\n[[alert.webhook]]\nurl = \"http://127.0.0.1:9000/hook\"\n[alert.alertmanager]\nurl = \"http://127.0.0.1:9093\"\n[metrics]\nlisten = \"127.0.0.1:9464\"",
        )
        .expect("valid");
        assert_eq!(
            c.alert.policy.codes.keys().copied().collect::<Vec<_>>(),
            [Code::Inactive]
        );
        assert_eq!(c.alert.policy.for_ms(Code::Inactive), 300_000);
        assert_eq!(c.alert.webhooks[0].url.path(), "/hook");
        assert!(c.alert.alertmanager.is_some());
        assert_eq!(c.metrics.listen.map(|a| a.port()), Some(9464));
        // Severities alone narrow every default code; the holds stay per code.
        let c = parse("[alert]\nseverities = [\"critical\"]").expect("valid");
        assert!(
            c.alert
                .policy
                .codes
                .values()
                .all(|p| p.severities == [Severity::Critical].into())
        );
        assert_eq!(c.alert.policy.for_ms(Code::ProxyFailed), 60_000);
    }

    #[test]
    fn groups_take_their_own_thresholds_and_inherit_the_rest() {
        let c = parse(
            "[rules]\ncert_warning = \"20d\"\nlog_quiet_after = \"3s\"\n[[group]]\nname = \"eu\"\nmin_healthy = 3\nmin_version = \"1.5\"\nlog_quiet_after = \"2h\"\n[[group]]\nname = \"us\"",
        )
        .expect("valid");
        assert_eq!(c.rules.for_group("eu").min_healthy, 3);
        assert_eq!(c.rules.for_group("us").min_healthy, 2);
        assert_eq!(c.rules.for_group("other").min_healthy, 2);
        assert_eq!(
            c.rules.for_group("us").cert_warning,
            Duration::from_secs(20 * 86_400)
        );
        assert_eq!(c.rules.for_group("eu").min_version, Version::parse("1.5"));
        assert_eq!(
            c.rules.for_group("eu").log_quiet_after,
            Duration::from_secs(7200)
        );
        assert_eq!(
            c.rules.for_group("us").log_quiet_after,
            Duration::from_secs(3)
        );
        assert!(c.rules.is_declared("eu") && !c.rules.is_declared("other"));
    }

    #[test]
    fn broken_values_name_their_key() {
        for (extra, needle) in [
            ("listen = \"nowhere\"", "`listen`"),
            ("[rules]\ninactive_after = \"soon\"", "rules.inactive_after"),
            ("[rules]\ncert_critical = \"40d\"", "rules.cert_critical"),
            ("[rules]\nretire_after = \"1s\"", "rules.retire_after"),
            ("[rules]\nlog_quiet_after = \"0s\"", "rules.log_quiet_after"),
            (
                "[[group]]\nname = \"a\"\nlog_quiet_after = \"often\"",
                "group[0].log_quiet_after",
            ),
            (
                "[[group]]\nname = \"a\"\n[[group]]\nname = \"a\"",
                "group[1].name",
            ),
            ("[store]\nmax_batch = 0", "store.max_batch"),
            ("[rules]\nstartup_grace = \"2h\"", "rules.startup_grace"),
            ("[rules]\nstartup_grace = \"soon\"", "rules.startup_grace"),
            ("[store]\nretention = \"5d\"", "store.retention"),
            ("[store]\ncommit_interval = \"2s\"", "store.commit_interval"),
            (
                "[store]\ncommit_interval = \"soon\"",
                "store.commit_interval",
            ),
            (
                "[[group]]\nname = \"a\"\ninactive_after = \"11d\"",
                "group[0].inactive_after",
            ),
            ("[alert]\ncodes = [\"cert\"]", "alert.codes"),
            ("[alert]\nseverities = [\"high\"]", "alert.severities"),
            ("[alert]\nevaluate_every = \"0s\"", "alert.evaluate_every"),
            (
                "[[alert.webhook]]\nurl = \"https://x/\"",
                "alert.webhook[0].url",
            ),
            (
                "[[alert.webhook]]\nurl = \"http://x/\"\nbackoff = \"1h\"",
                "alert.webhook[0].backoff",
            ),
            (
                "[alert.alertmanager]\nurl = \"am:9093\"",
                "alert.alertmanager.url",
            ),
            ("[metrics]\nlisten = \"9464\"", "metrics.listen"),
        ] {
            let err = parse(extra).expect_err(extra);
            assert!(
                err.contains(needle) && err.contains("aggregator.toml"),
                "{err}"
            );
        }
    }
}
