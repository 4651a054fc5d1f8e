//! The collector's configuration: a TOML file read into raw serde structs, then
//! validated into [`Config`] before anything runs. Relative paths are resolved against
//! the folder of the config file.

use connwatch_shared::config::{self as cfg, ConfigError, invalid};
use connwatch_shared::tls::TlsFiles;
use connwatch_shared::wire::ServiceRole;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    group: String,
    #[serde(default = "default_interval")]
    interval: String,
    #[serde(default)]
    jitter: Option<String>,
    #[serde(default)]
    aggregator: Option<RawAggregator>,
    #[serde(default)]
    service: Vec<RawService>,
    #[serde(default)]
    endpoint: Vec<RawEndpoint>,
    #[serde(default)]
    trust_cert: Vec<RawTrustCert>,
    #[serde(default)]
    host: RawHost,
    #[serde(default)]
    spool: RawSpool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpool {
    dir: Option<PathBuf>,
    max_kb: Option<u64>,
}

fn default_interval() -> String {
    "30s".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAggregator {
    address: String,
    #[serde(default)]
    server_name: Option<String>,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    #[serde(default)]
    drain_rate: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    process: Option<String>,
    #[serde(default)]
    pid_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    #[serde(default)]
    name: Option<String>,
    address: String,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default = "yes")]
    required: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrustCert {
    path: PathBuf,
    #[serde(default)]
    thumbprint: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    #[serde(default = "yes")]
    enabled: bool,
}

impl Default for RawHost {
    fn default() -> Self {
        RawHost { enabled: true }
    }
}

/// A validated collector configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, for messages.
    pub file: PathBuf,
    /// The connector group this host belongs to.
    pub group: String,
    /// Time between cycles.
    pub interval: Duration,
    /// Largest random delay added to each cycle, so a fleet does not report in step.
    pub jitter: Duration,
    /// Where to send reports; `None` for a config used only with `probe`.
    pub aggregator: Option<AggregatorConfig>,
    /// Services to check.
    pub services: Vec<ServiceConfig>,
    /// Endpoints to check.
    pub endpoints: Vec<EndpointConfig>,
    /// Trust certificates to read.
    pub trust_certs: Vec<TrustCertConfig>,
    /// Whether to report host facts.
    pub host: bool,
    /// Where unacknowledged reports wait.
    pub spool: SpoolConfig,
}

/// The on-disk spool.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// Its folder.
    pub dir: PathBuf,
    /// Its bound; the oldest reports are dropped (and counted) beyond it.
    pub max_bytes: u64,
}

/// Where the spool lives unless the config says otherwise.
pub fn default_spool_dir() -> PathBuf {
    if cfg!(windows) {
        PathBuf::from(r"C:\ProgramData\connwatch\spool")
    } else {
        PathBuf::from("/var/lib/connwatch-collector/spool")
    }
}

/// How to reach the aggregator.
#[derive(Debug, Clone)]
pub struct AggregatorConfig {
    /// `https://host:port`.
    pub address: String,
    /// The name the aggregator's certificate must carry.
    pub server_name: String,
    /// Our mTLS files.
    pub tls: TlsFiles,
    /// Reports per second sent while draining a backlog, so a fleet reconnecting at
    /// once does not flatten the aggregator.
    pub drain_rate: u32,
}

/// A service (Windows) or process (elsewhere) to check.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The service name, such as `WAPCSvc`.
    pub name: String,
    /// What the service is to the connector.
    pub role: ServiceRole,
    /// The process name to look for where there is no service manager.
    pub process: String,
    /// A pid file to check instead of the process name.
    pub pid_file: Option<PathBuf>,
}

/// A `host:port` to connect to every cycle.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// A short label; defaults to the address.
    pub name: String,
    /// `host:port`.
    pub address: String,
    /// Connect timeout, DNS included.
    pub timeout: Duration,
    /// Whether the connector needs it (unreachable required endpoints are findings).
    pub required: bool,
}

/// A trust certificate file (PEM or DER).
#[derive(Debug, Clone)]
pub struct TrustCertConfig {
    /// The file.
    pub path: PathBuf,
    /// The SHA-1 thumbprint the certificate must have, if one is known.
    pub thumbprint: Option<String>,
}

/// The default connect timeout of an endpoint check.
pub const DEFAULT_ENDPOINT_TIMEOUT: Duration = Duration::from_secs(3);

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
        if connwatch_shared::identity::validate_name(&raw.group).is_err() {
            return Err(invalid(
                file,
                "group",
                format!("`{}` is not a valid group name", raw.group),
                "use 1 to 64 letters, digits, `.`, `_` or `-`",
            ));
        }
        let interval = cfg::duration(file, "interval", &raw.interval)?;
        let jitter = match &raw.jitter {
            Some(j) => connwatch_shared::time::parse_duration(j)
                .map_err(|e| invalid(file, "jitter", e, "write it like `5s`"))?,
            None => interval / 10,
        };
        if jitter >= interval {
            return Err(invalid(
                file,
                "jitter",
                "is not shorter than `interval`",
                "use a jitter of at most a fraction of the interval, such as a tenth",
            ));
        }
        let aggregator = raw
            .aggregator
            .map(|a| aggregator_config(file, a))
            .transpose()?;
        let mut services = Vec::new();
        for (i, s) in raw.service.into_iter().enumerate() {
            let role = match s.role.as_deref() {
                None | Some("connector") => ServiceRole::Connector,
                Some("updater") => ServiceRole::Updater,
                Some("other") => ServiceRole::Other,
                Some(other) => {
                    return Err(invalid(
                        file,
                        format!("service[{i}].role"),
                        format!("unknown role `{other}`"),
                        "use `connector`, `updater` or `other`",
                    ));
                }
            };
            services.push(ServiceConfig {
                process: s.process.unwrap_or_else(|| s.name.clone()),
                name: s.name,
                role,
                pid_file: s.pid_file.map(|p| cfg::relative_to(file, &p)),
            });
        }
        let mut endpoints = Vec::new();
        for (i, e) in raw.endpoint.into_iter().enumerate() {
            let key = format!("endpoint[{i}]");
            if split_host_port(&e.address).is_none() {
                return Err(invalid(
                    file,
                    format!("{key}.address"),
                    format!("`{}` is not host:port", e.address),
                    "write it like `login.example.net:443` or `[::1]:8443`",
                ));
            }
            let timeout = match &e.timeout {
                Some(t) => cfg::duration(file, &format!("{key}.timeout"), t)?,
                None => DEFAULT_ENDPOINT_TIMEOUT,
            };
            endpoints.push(EndpointConfig {
                name: e.name.unwrap_or_else(|| e.address.clone()),
                address: e.address,
                timeout,
                required: e.required,
            });
        }
        let trust_certs = raw
            .trust_cert
            .into_iter()
            .map(|t| TrustCertConfig {
                path: cfg::relative_to(file, &t.path),
                thumbprint: t.thumbprint.map(|s| normalise_thumbprint(&s)),
            })
            .collect();
        Ok(Config {
            file: file.to_path_buf(),
            group: raw.group,
            interval,
            jitter,
            aggregator,
            services,
            endpoints,
            trust_certs,
            host: raw.host.enabled,
            spool: SpoolConfig {
                dir: raw
                    .spool
                    .dir
                    .map_or_else(default_spool_dir, |d| cfg::relative_to(file, &d)),
                max_bytes: match raw.spool.max_kb {
                    Some(kb) if kb < 8 => {
                        return Err(invalid(
                            file,
                            "spool.max_kb",
                            "must be at least 8",
                            "leave it out for the default of 65536 (64 MiB)",
                        ));
                    }
                    Some(kb) => kb << 10,
                    None => 64 << 20,
                },
            },
        })
    }
}

fn aggregator_config(file: &Path, a: RawAggregator) -> Result<AggregatorConfig, ConfigError> {
    let Some(rest) = a.address.strip_prefix("https://") else {
        return Err(invalid(
            file,
            "aggregator.address",
            format!("`{}` does not start with https://", a.address),
            "every connection is mutual TLS: write it like `https://aggregator.example.net:7443`",
        ));
    };
    let Some((host, _)) = split_host_port(rest.trim_end_matches('/')) else {
        return Err(invalid(
            file,
            "aggregator.address",
            format!("`{}` has no host:port", a.address),
            "write it like `https://aggregator.example.net:7443`",
        ));
    };
    let server_name = a
        .server_name
        .unwrap_or_else(|| host.trim_matches(['[', ']']).to_string());
    let drain_rate = a.drain_rate.unwrap_or(50);
    if drain_rate == 0 {
        return Err(invalid(
            file,
            "aggregator.drain_rate",
            "must be at least 1",
            "leave it out for the default of 50 reports per second",
        ));
    }
    Ok(AggregatorConfig {
        address: a.address.clone(),
        server_name,
        tls: TlsFiles {
            ca: cfg::relative_to(file, &a.ca),
            cert: cfg::relative_to(file, &a.cert),
            key: cfg::relative_to(file, &a.key),
        },
        drain_rate,
    })
}

/// Splits `host:port` (with `[v6]:port`) into its parts.
pub fn split_host_port(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let port = port.parse().ok()?;
    if host.is_empty() || (host.contains(':') && !host.starts_with('[')) {
        return None;
    }
    Some((host, port))
}

/// Upper-case hex without separators, as Windows shows thumbprints.
pub fn normalise_thumbprint(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_hexdigit())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("/etc/connwatch/collector.toml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn a_minimal_config_gets_working_defaults() {
        let c = parse("group = \"eu\"").expect("valid");
        assert_eq!(c.interval, Duration::from_secs(30));
        assert_eq!(c.jitter, Duration::from_secs(3));
        assert!(c.host && c.aggregator.is_none());
    }

    #[test]
    fn relative_paths_are_resolved_against_the_file() {
        let c = parse(
            "group = \"eu\"\n[aggregator]\naddress = \"https://agg.example:7443\"\nca = \"ca.pem\"\ncert = \"c.pem\"\nkey = \"c.key\"",
        )
        .expect("valid");
        let a = c.aggregator.expect("aggregator");
        assert_eq!(a.tls.ca, PathBuf::from("/etc/connwatch/ca.pem"));
        assert_eq!(a.server_name, "agg.example");
    }

    #[test]
    fn broken_configs_name_the_key_and_the_fix() {
        for (text, needle) in [
            ("group = \"e u\"", "`group`"),
            ("group = \"eu\"\ninterval = \"soon\"", "`interval`"),
            (
                "group = \"eu\"\ninterval = \"10s\"\njitter = \"20s\"",
                "`jitter`",
            ),
            (
                "group = \"eu\"\n[[endpoint]]\naddress = \"nohost\"",
                "endpoint[0].address",
            ),
            (
                "group = \"eu\"\n[[service]]\nname = \"x\"\nrole = \"boss\"",
                "service[0].role",
            ),
            ("group = \"eu\"\nbogus = 1", "bogus"),
            (
                "group = \"eu\"\n[aggregator]\naddress = \"http://a:1\"\nca = \"a\"\ncert = \"b\"\nkey = \"c\"",
                "https://",
            ),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.contains(needle), "{err} should mention {needle}");
            assert!(err.contains("collector.toml"), "{err} should name the file");
        }
    }

    #[test]
    fn thumbprints_are_normalised() {
        assert_eq!(normalise_thumbprint("ab:cd ef"), "ABCDEF");
    }
}
