//! The aggregator's configuration: TOML read into raw serde structs and validated into
//! [`Config`] before any port is bound. Relative paths follow the config file's folder.

use connwatch_shared::config::{self as cfg, ConfigError, invalid};
use connwatch_shared::tls::TlsFiles;
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
        })
    }
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
        ] {
            let err = parse(extra).expect_err(extra);
            assert!(
                err.contains(needle) && err.contains("aggregator.toml"),
                "{err}"
            );
        }
    }
}
