//! The aggregator's configuration: TOML read into raw serde structs and validated into
//! [`Config`] before any port is bound. Relative paths follow the config file's folder.

use crate::alert::engine::Policy;
use connwatch_shared::config::{self as cfg, ConfigError, invalid};
use connwatch_shared::finding::{Code, Severity};
use connwatch_shared::tls::TlsFiles;
use hyper::Uri;
use serde::Deserialize;
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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRules {
    inactive_after: Option<String>,
    retire_after: Option<String>,
    cert_warning: Option<String>,
    cert_critical: Option<String>,
    min_healthy: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: String,
    min_healthy: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    cache_mb: Option<u64>,
    max_batch: Option<usize>,
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

/// The codes that alert by default: the failures that stop a connector or a group.
pub const DEFAULT_ALERT_CODES: [Code; 7] = [
    Code::TrustCertExpiring,
    Code::TrustCertExpired,
    Code::Inactive,
    Code::ServiceNotRunning,
    Code::GroupDown,
    Code::GroupNoRedundancy,
    Code::TlsIntercepted,
];

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
            policy: Policy {
                codes: DEFAULT_ALERT_CODES.into_iter().collect(),
                severities: [Severity::Warning, Severity::Critical].into(),
                for_ms: 0,
                repeat_ms: 4 * 3_600_000,
            },
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
    /// Rule thresholds.
    pub rules: RulesConfig,
    /// Store tuning.
    pub store: StoreConfig,
    /// Alerting.
    pub alert: AlertConfig,
    /// The Prometheus endpoint.
    pub metrics: MetricsConfig,
}

/// Thresholds the rules use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesConfig {
    /// A connector with no report for this long is inactive.
    pub inactive_after: Duration,
    /// A connector inactive for this long leaves the live views (history stays).
    pub retire_after: Duration,
    /// Trust certificates expiring within this are a warning.
    pub cert_warning: Duration,
    /// Trust certificates expiring within this are critical.
    pub cert_critical: Duration,
    /// Fewer healthy connectors than this in a group is a finding, by default.
    pub min_healthy: u32,
    /// Groups the operators declared, with their own minimum where set.
    pub groups: Vec<GroupConfig>,
}

/// A declared connector group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// The group's name, as collectors report it.
    pub name: String,
    /// This group's minimum of healthy connectors.
    pub min_healthy: u32,
}

impl RulesConfig {
    /// The minimum of healthy connectors for a group.
    pub fn min_healthy_for(&self, group: &str) -> u32 {
        self.groups
            .iter()
            .find(|g| g.name == group)
            .map_or(self.min_healthy, |g| g.min_healthy)
    }
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            inactive_after: Duration::from_secs(90),
            retire_after: Duration::from_secs(10 * 86_400),
            cert_warning: Duration::from_secs(30 * 86_400),
            cert_critical: Duration::from_secs(7 * 86_400),
            min_healthy: 2,
            groups: Vec::new(),
        }
    }
}

/// Store tuning.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// sled's page cache, in bytes.
    pub cache_bytes: u64,
    /// The most reports committed in one flush.
    pub max_batch: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            cache_bytes: 64 << 20,
            max_batch: 1024,
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
        let dur = |key: &str, v: &Option<String>, d: Duration| match v {
            Some(t) => cfg::duration(file, key, t),
            None => Ok(d),
        };
        let r = &raw.rules;
        let mut rules = RulesConfig {
            inactive_after: dur(
                "rules.inactive_after",
                &r.inactive_after,
                defaults.inactive_after,
            )?,
            retire_after: dur("rules.retire_after", &r.retire_after, defaults.retire_after)?,
            cert_warning: dur("rules.cert_warning", &r.cert_warning, defaults.cert_warning)?,
            cert_critical: dur(
                "rules.cert_critical",
                &r.cert_critical,
                defaults.cert_critical,
            )?,
            min_healthy: r.min_healthy.unwrap_or(defaults.min_healthy),
            groups: Vec::new(),
        };
        if rules.cert_critical > rules.cert_warning {
            return Err(invalid(
                file,
                "rules.cert_critical",
                "is longer than rules.cert_warning",
                "the critical window must sit inside the warning window, e.g. 7d and 30d",
            ));
        }
        if rules.retire_after <= rules.inactive_after {
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
            if rules.groups.iter().any(|o: &GroupConfig| o.name == g.name) {
                return Err(invalid(
                    file,
                    format!("group[{i}].name"),
                    format!("group `{}` is declared twice", g.name),
                    "declare each group once",
                ));
            }
            rules.groups.push(GroupConfig {
                name: g.name.clone(),
                min_healthy: g.min_healthy.unwrap_or(rules.min_healthy),
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
        };
        if store.max_batch == 0 {
            return Err(invalid(
                file,
                "store.max_batch",
                "must be at least 1",
                "leave it out for 1024",
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
    let codes = match &raw.codes {
        None => DEFAULT_ALERT_CODES.into_iter().collect(),
        Some(list) => list
            .iter()
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
    };
    let severities = match &raw.severities {
        None => [Severity::Warning, Severity::Critical].into(),
        Some(list) => list
            .iter()
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
    };
    // `for` may be zero (fire at once), so it is parsed without the positive check.
    let for_ = match &raw.for_ {
        None => Duration::ZERO,
        Some(t) => connwatch_shared::time::parse_duration(t)
            .map_err(|e| invalid(file, "alert.for", e, "write it like `0s` or `5m`"))?,
    };
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let policy = Policy {
        codes,
        severities,
        for_ms: ms(for_),
        repeat_ms: ms(dur(
            "alert.repeat_interval",
            &raw.repeat_interval,
            Duration::from_secs(4 * 3600),
        )?),
    };
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
        assert_eq!(c.alert.policy.codes.len(), DEFAULT_ALERT_CODES.len());
        assert_eq!(c.alert.policy.for_ms, 0);
        assert!(c.metrics.listen.is_none());
    }

    #[test]
    fn alert_sinks_and_metrics() {
        let c = parse(
            "[alert]\ncodes = [\"inactive\"]\nfor = \"5m\"\n[[alert.webhook]]\nurl = \"http://127.0.0.1:9000/hook\"\n[alert.alertmanager]\nurl = \"http://127.0.0.1:9093\"\n[metrics]\nlisten = \"127.0.0.1:9464\"",
        )
        .expect("valid");
        assert_eq!(c.alert.policy.codes, [Code::Inactive].into());
        assert_eq!(c.alert.policy.for_ms, 300_000);
        assert_eq!(c.alert.webhooks[0].url.path(), "/hook");
        assert!(c.alert.alertmanager.is_some());
        assert_eq!(c.metrics.listen.map(|a| a.port()), Some(9464));
    }

    #[test]
    fn groups_take_their_own_minimum() {
        let c = parse("[[group]]\nname = \"eu\"\nmin_healthy = 3\n[[group]]\nname = \"us\"")
            .expect("valid");
        assert_eq!(c.rules.min_healthy_for("eu"), 3);
        assert_eq!(c.rules.min_healthy_for("us"), 2);
        assert_eq!(c.rules.min_healthy_for("other"), 2);
    }

    #[test]
    fn broken_values_name_their_key() {
        for (extra, needle) in [
            ("listen = \"nowhere\"", "`listen`"),
            ("[rules]\ninactive_after = \"soon\"", "rules.inactive_after"),
            ("[rules]\ncert_critical = \"40d\"", "rules.cert_critical"),
            ("[rules]\nretire_after = \"1s\"", "rules.retire_after"),
            (
                "[[group]]\nname = \"a\"\n[[group]]\nname = \"a\"",
                "group[1].name",
            ),
            ("[store]\nmax_batch = 0", "store.max_batch"),
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
