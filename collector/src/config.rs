//! The collector's configuration: a TOML file read into raw serde structs, then
//! validated into [`Config`] before anything runs. Relative paths are resolved against
//! the folder of the config file.

use crate::layout::Layout;
use connwatch_shared::config::{self as cfg, ConfigError, invalid};
use connwatch_shared::tls::TlsFiles;
use connwatch_shared::wire::ServiceRole;
use regex::Regex;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod endpoints;

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
    // `None` (the key is absent) means the platform's defaults; an empty list means none.
    #[serde(default)]
    service: Option<Vec<RawService>>,
    #[serde(default)]
    endpoint: Option<Vec<RawEndpoint>>,
    #[serde(default)]
    trust_cert: Option<Vec<RawTrustCert>>,
    #[serde(default)]
    backend: Vec<RawBackend>,
    #[serde(default)]
    proxy: Option<RawProxy>,
    #[serde(default)]
    log: Option<RawLog>,
    #[serde(default)]
    version: Option<RawVersion>,
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
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    process: Option<String>,
    #[serde(default)]
    pid_file: Option<PathBuf>,
    #[serde(default)]
    unit: Option<String>,
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
    #[serde(default)]
    tls: bool,
    #[serde(default)]
    server_name: Option<String>,
    #[serde(default)]
    expected_issuers: Vec<String>,
    #[serde(default)]
    ca: Option<PathBuf>,
    #[serde(default)]
    proxy: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrustCert {
    #[serde(default)]
    path: Option<PathBuf>,
    #[serde(default)]
    settings: Option<PathBuf>,
    #[serde(default)]
    thumbprint: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    url: String,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    ca: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    #[serde(default)]
    connector_config: Option<PathBuf>,
    #[serde(default)]
    updater_config: Option<PathBuf>,
    #[serde(default = "yes")]
    system: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    #[serde(default)]
    file: Option<PathBuf>,
    #[serde(default)]
    channel: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVersion {
    #[serde(default)]
    connector: Option<RawVersionSource>,
    #[serde(default)]
    updater: Option<RawVersionSource>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVersionSource {
    #[serde(default)]
    file: Option<PathBuf>,
    #[serde(default)]
    command: Option<Vec<String>>,
    #[serde(default)]
    pattern: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    disk: Option<PathBuf>,
}

impl Default for RawHost {
    fn default() -> Self {
        RawHost {
            enabled: true,
            disk: None,
        }
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
    /// Internal application URLs to load.
    pub backends: Vec<BackendConfig>,
    /// Where the connector's and updater's proxy settings are read from.
    pub proxy: Option<ProxyConfig>,
    /// The connector log to scan for known errors.
    pub log: Option<LogConfig>,
    /// Where the connector's and updater's versions come from.
    pub version: VersionConfig,
    /// Whether to report host facts.
    pub host: bool,
    /// The path whose disk's size and free space are reported.
    pub disk: Option<PathBuf>,
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

/// A service to check: through the platform's service manager, or as a process.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The service name, such as `WAPCSvc`.
    pub name: String,
    /// What the service is to the connector.
    pub role: ServiceRole,
    /// A process name to look for instead of asking the service manager.
    pub process: Option<String>,
    /// A pid file to check instead of asking the service manager.
    pub pid_file: Option<PathBuf>,
    /// The systemd unit, where it differs from the name.
    pub unit: Option<String>,
}

/// A `host:port` to connect to every cycle.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// A short label; defaults to the address.
    pub name: String,
    /// `host:port`.
    pub address: String,
    /// Budget for the whole check: DNS, connect and, for TLS, the handshake.
    pub timeout: Duration,
    /// Whether the connector needs it (unreachable required endpoints are findings).
    pub required: bool,
    /// For TLS endpoints, what to check of the handshake.
    pub tls: Option<TlsCheckConfig>,
    /// Which way the check goes.
    pub proxy: EndpointProxy,
}

/// Which way an endpoint check goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointProxy {
    /// As the connector's traffic would: its `.exe.config`, else the system proxy.
    Connector,
    /// Straight to the endpoint, whatever the connector uses.
    Direct,
    /// Through this proxy.
    Via(crate::probe::route::ProxyAddr),
}

/// What to check of a TLS endpoint's handshake.
#[derive(Debug, Clone)]
pub struct TlsCheckConfig {
    /// The name sent in SNI and checked against the certificate when verifying.
    pub server_name: String,
    /// Names of the roots (substrings of a root's distinguished name, any case) the
    /// chain must be signed up to; empty means the issuer is not checked.
    pub expected_issuers: Vec<String>,
    /// Root certificates (DER) to verify the chain against; empty means the public
    /// roots.
    pub roots: Vec<Vec<u8>>,
}

/// A trust certificate: read from a file, or found in a Windows certificate store by
/// the thumbprint in TrustSettings.xml.
#[derive(Debug, Clone, Default)]
pub struct TrustCertConfig {
    /// A PEM or DER file; `None` means the Windows store named by TrustSettings.xml.
    pub path: Option<PathBuf>,
    /// TrustSettings.xml candidates; the first that exists is read.
    pub settings: Vec<PathBuf>,
    /// The SHA-1 thumbprint the certificate must have; overrides TrustSettings.xml.
    pub thumbprint: Option<String>,
}

/// An internal application URL to load from the host.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// `http://` or `https://` URL.
    pub url: String,
    /// Budget for the whole request.
    pub timeout: Duration,
    /// Roots (DER) to verify an https server against; empty means not verified.
    pub roots: Vec<Vec<u8>>,
}

/// Where proxy settings are read from.
#[derive(Debug, Clone, Default)]
pub struct ProxyConfig {
    /// The connector service's `.exe.config`.
    pub connector_config: Option<PathBuf>,
    /// The updater service's `.exe.config`.
    pub updater_config: Option<PathBuf>,
    /// Whether to report the system proxy (WinHTTP on Windows, environment elsewhere).
    pub system: bool,
}

/// The connector log to scan.
#[derive(Debug, Clone, Default)]
pub struct LogConfig {
    /// A log file (Linux, tests).
    pub file: Option<PathBuf>,
    /// A Windows event log channel.
    pub channel: Option<String>,
}

/// Where versions come from.
#[derive(Debug, Clone, Default)]
pub struct VersionConfig {
    /// The connector's version.
    pub connector: Option<VersionSource>,
    /// The updater's version.
    pub updater: Option<VersionSource>,
}

/// One way to find a version.
#[derive(Debug, Clone)]
pub enum VersionSource {
    /// The first match of `pattern` in a file.
    File {
        /// The file.
        path: PathBuf,
        /// Its first capture group (or whole match) is the version.
        pattern: Regex,
    },
    /// The first match of `pattern` in a command's standard output.
    Command {
        /// Program and arguments.
        argv: Vec<String>,
        /// Its first capture group (or whole match) is the version.
        pattern: Regex,
    },
    /// The platform's record of installed software (the Windows uninstall registry).
    Installed,
}

/// The default connect timeout of an endpoint check.
pub const DEFAULT_ENDPOINT_TIMEOUT: Duration = Duration::from_secs(3);
/// The default timeout of a backend request.
pub const DEFAULT_BACKEND_TIMEOUT: Duration = Duration::from_secs(5);
/// The default version pattern: the first dotted number.
pub const DEFAULT_VERSION_PATTERN: &str = r"(?:^|[^\d.])(\d+(?:\.\d+){1,3})";

/// What a config that leaves a section out gets: the connector's standard installation
/// on Windows, nothing elsewhere (there is no connector installation to assume).
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    /// Services checked when no `[[service]]` is configured.
    pub services: Vec<ServiceConfig>,
    /// Endpoints checked when no `[[endpoint]]` is configured.
    pub endpoints: Vec<EndpointConfig>,
    /// TrustSettings.xml candidates when no `[[trust_cert]]` is configured.
    pub trust_settings: Vec<PathBuf>,
    /// Proxy sources when there is no `[proxy]` section.
    pub proxy: Option<ProxyConfig>,
    /// The log when there is no `[log]` section.
    pub log: Option<LogConfig>,
    /// Versions when there is no `[version]` section.
    pub version: VersionConfig,
    /// Whether this platform has the certificate stores TrustSettings.xml names, so a
    /// `[[trust_cert]]` with only `settings` can be read (Windows only).
    pub cert_stores: bool,
}

impl Defaults {
    /// The connector's standard installation on a Windows host with the given
    /// `%ProgramData%` and `%ProgramFiles%` folders, in the install layout found there
    /// (`None` when no connector is installed: the current layout's files are looked
    /// for, and the services' absence is what gets reported).
    pub fn windows(program_data: &str, program_files: &str, layout: Option<Layout>) -> Defaults {
        let service = |name: &str, role| ServiceConfig {
            name: name.into(),
            role,
            process: None,
            pid_file: None,
            unit: None,
        };
        // Only the installed layout's files: the other layout's are absent on every
        // healthy host and must never read as missing.
        let layout = layout.unwrap_or(Layout::PrivateNetwork);
        Defaults {
            services: vec![
                service(DEFAULT_CONNECTOR_SERVICE, ServiceRole::Connector),
                service(DEFAULT_UPDATER_SERVICE, ServiceRole::Updater),
            ],
            endpoints: endpoints::connector_endpoints(),
            trust_settings: vec![layout.trust_settings(program_data)],
            proxy: Some(ProxyConfig {
                connector_config: Some(layout.connector_config(program_files)),
                updater_config: Some(layout.updater_config(program_files)),
                system: true,
            }),
            log: Some(LogConfig {
                file: None,
                channel: Some(layout.event_channel().into()),
            }),
            version: VersionConfig {
                connector: Some(VersionSource::Installed),
                updater: Some(VersionSource::Installed),
            },
            cert_stores: true,
        }
    }
}

/// The connector service's name.
pub const DEFAULT_CONNECTOR_SERVICE: &str = "WAPCSvc";
/// The updater service's name.
pub const DEFAULT_UPDATER_SERVICE: &str = "WAPCUpdaterSvc";

impl Config {
    /// Reads and validates a config file, with this platform's defaults.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = cfg::load_toml(file)?;
        Config::from_raw(file, raw, &crate::platform::defaults())
    }

    /// Parses and validates config text, as if read from `file`, with no defaults.
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        Config::parse_with(file, text, &Defaults::default())
    }

    /// Parses and validates config text with the given defaults.
    pub fn parse_with(file: &Path, text: &str, defaults: &Defaults) -> Result<Config, ConfigError> {
        let raw: RawConfig = cfg::parse_toml(file, text)?;
        Config::from_raw(file, raw, defaults)
    }

    fn from_raw(file: &Path, raw: RawConfig, defaults: &Defaults) -> Result<Config, ConfigError> {
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
        let services = match raw.service {
            None => defaults.services.clone(),
            Some(list) => list
                .into_iter()
                .enumerate()
                .map(|(i, s)| service_config(file, i, s))
                .collect::<Result<_, _>>()?,
        };
        let endpoints = match raw.endpoint {
            None => defaults.endpoints.clone(),
            Some(list) => list
                .into_iter()
                .enumerate()
                .map(|(i, e)| endpoint_config(file, i, e))
                .collect::<Result<_, _>>()?,
        };
        let trust_certs = match raw.trust_cert {
            None if defaults.trust_settings.is_empty() => Vec::new(),
            None => vec![TrustCertConfig {
                settings: defaults.trust_settings.clone(),
                ..Default::default()
            }],
            Some(list) => list
                .into_iter()
                .enumerate()
                .map(|(i, t)| trust_cert_config(file, i, t, defaults.cert_stores))
                .collect::<Result<_, _>>()?,
        };
        let backends = raw
            .backend
            .into_iter()
            .enumerate()
            .map(|(i, b)| backend_config(file, i, b))
            .collect::<Result<_, _>>()?;
        let proxy = match raw.proxy {
            None => defaults.proxy.clone(),
            Some(p) => Some(ProxyConfig {
                connector_config: p.connector_config.map(|p| cfg::relative_to(file, &p)),
                updater_config: p.updater_config.map(|p| cfg::relative_to(file, &p)),
                system: p.system,
            }),
        };
        let log = match raw.log {
            None => defaults.log.clone(),
            Some(l) => {
                if l.file.is_none() && l.channel.is_none() {
                    return Err(invalid(
                        file,
                        "log",
                        "names neither a `file` nor a `channel`",
                        "set `file` to the connector's log file, or `channel` to its event log channel on Windows, or remove the section",
                    ));
                }
                Some(LogConfig {
                    file: l.file.map(|p| cfg::relative_to(file, &p)),
                    channel: l.channel,
                })
            }
        };
        let version = match raw.version {
            None => defaults.version.clone(),
            Some(v) => VersionConfig {
                connector: v
                    .connector
                    .map(|s| version_source(file, "version.connector", s))
                    .transpose()?,
                updater: v
                    .updater
                    .map(|s| version_source(file, "version.updater", s))
                    .transpose()?,
            },
        };
        Ok(Config {
            file: file.to_path_buf(),
            group: raw.group,
            interval,
            jitter,
            aggregator,
            services,
            endpoints,
            trust_certs,
            backends,
            proxy,
            log,
            version,
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
            disk: raw.host.disk.map(|p| cfg::relative_to(file, &p)),
        })
    }
}

fn service_config(file: &Path, i: usize, s: RawService) -> Result<ServiceConfig, ConfigError> {
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
    let name = match (s.name, role) {
        (Some(n), _) => n,
        (None, ServiceRole::Connector) => DEFAULT_CONNECTOR_SERVICE.into(),
        (None, ServiceRole::Updater) => DEFAULT_UPDATER_SERVICE.into(),
        (None, _) => {
            return Err(invalid(
                file,
                format!("service[{i}].name"),
                "is missing",
                "name the service (only the connector and updater roles have default names)",
            ));
        }
    };
    Ok(ServiceConfig {
        name,
        role,
        process: s.process,
        pid_file: s.pid_file.map(|p| cfg::relative_to(file, &p)),
        unit: s.unit,
    })
}

fn endpoint_config(file: &Path, i: usize, e: RawEndpoint) -> Result<EndpointConfig, ConfigError> {
    let key = format!("endpoint[{i}]");
    let Some((host, _)) = split_host_port(&e.address) else {
        return Err(invalid(
            file,
            format!("{key}.address"),
            format!("`{}` is not host:port", e.address),
            "write it like `login.example.net:443` or `[::1]:8443`",
        ));
    };
    let timeout = match &e.timeout {
        Some(t) => cfg::duration(file, &format!("{key}.timeout"), t)?,
        None => DEFAULT_ENDPOINT_TIMEOUT,
    };
    if !e.tls && (e.server_name.is_some() || !e.expected_issuers.is_empty() || e.ca.is_some()) {
        return Err(invalid(
            file,
            format!("{key}.tls"),
            "is false, but TLS settings (server_name, expected_issuers, ca) are given",
            "set `tls = true` to check the handshake, or remove the TLS settings",
        ));
    }
    let tls = if e.tls {
        let roots = match &e.ca {
            Some(ca) => load_roots(file, &format!("{key}.ca"), &cfg::relative_to(file, ca))?,
            None => Vec::new(),
        };
        Some(TlsCheckConfig {
            server_name: e
                .server_name
                .unwrap_or_else(|| host.trim_matches(['[', ']']).to_string()),
            expected_issuers: e.expected_issuers,
            roots,
        })
    } else {
        None
    };
    let proxy = match e.proxy.as_deref().map(str::trim) {
        None | Some("connector") => EndpointProxy::Connector,
        Some("direct") => EndpointProxy::Direct,
        Some(address) => EndpointProxy::Via(crate::probe::route::ProxyAddr::parse(address).map_err(
            |why| {
                invalid(
                    file,
                    format!("{key}.proxy"),
                    why,
                    "use `connector` (the connector's own proxy, the default), `direct`, or `http://host:port`",
                )
            },
        )?),
    };
    Ok(EndpointConfig {
        name: e.name.unwrap_or_else(|| e.address.clone()),
        address: e.address,
        timeout,
        required: e.required,
        tls,
        proxy,
    })
}

fn trust_cert_config(
    file: &Path,
    i: usize,
    t: RawTrustCert,
    cert_stores: bool,
) -> Result<TrustCertConfig, ConfigError> {
    if t.path.is_none() && t.settings.is_none() {
        return Err(invalid(
            file,
            format!("trust_cert[{i}]"),
            "names neither a certificate `path` nor a TrustSettings.xml `settings` file",
            "set `path` to the certificate file, or `settings` to TrustSettings.xml (on Windows the certificate is then found in its store)",
        ));
    }
    // Without `path` the certificate is looked up in the store TrustSettings.xml
    // names; where there is no such store every cycle would report it missing and
    // send the operator to re-register a connector that is fine.
    if t.path.is_none() && !cert_stores {
        return Err(invalid(
            file,
            format!("trust_cert[{i}].path"),
            "is missing: with only `settings`, the certificate is read from a Windows certificate store, which this platform does not have",
            "set `path` to the trust certificate file (PEM or DER); `settings` can stay to supply the expected thumbprint",
        ));
    }
    Ok(TrustCertConfig {
        path: t.path.map(|p| cfg::relative_to(file, &p)),
        settings: t
            .settings
            .map(|p| cfg::relative_to(file, &p))
            .into_iter()
            .collect(),
        thumbprint: t.thumbprint.map(|s| normalise_thumbprint(&s)),
    })
}

fn backend_config(file: &Path, i: usize, b: RawBackend) -> Result<BackendConfig, ConfigError> {
    let key = format!("backend[{i}]");
    if crate::probe::backend::Url::parse(&b.url).is_none() {
        return Err(invalid(
            file,
            format!("{key}.url"),
            format!("`{}` is not an http:// or https:// URL", b.url),
            "write it like `http://intranet.example.local:8080/health`",
        ));
    }
    let timeout = match &b.timeout {
        Some(t) => cfg::duration(file, &format!("{key}.timeout"), t)?,
        None => DEFAULT_BACKEND_TIMEOUT,
    };
    let roots = match &b.ca {
        Some(ca) => load_roots(file, &format!("{key}.ca"), &cfg::relative_to(file, ca))?,
        None => Vec::new(),
    };
    Ok(BackendConfig {
        url: b.url,
        timeout,
        roots,
    })
}

fn version_source(
    file: &Path,
    key: &str,
    s: RawVersionSource,
) -> Result<VersionSource, ConfigError> {
    let pattern_text = s.pattern.as_deref().unwrap_or(DEFAULT_VERSION_PATTERN);
    let pattern = Regex::new(pattern_text).map_err(|e| {
        invalid(
            file,
            format!("{key}.pattern"),
            format!("is not a valid regular expression: {e}"),
            "write a pattern whose first group captures the version, like `Version: (\\S+)`",
        )
    })?;
    match (s.file, s.command) {
        (Some(path), None) => Ok(VersionSource::File {
            path: cfg::relative_to(file, &path),
            pattern,
        }),
        (None, Some(argv)) if !argv.is_empty() => Ok(VersionSource::Command { argv, pattern }),
        (None, None) if s.pattern.is_none() => Ok(VersionSource::Installed),
        _ => Err(invalid(
            file,
            key,
            "needs exactly one of `file` or `command` (a non-empty list)",
            "set `file = \"/opt/connector/VERSION\"` or `command = [\"connector\", \"--version\"]`, or leave the table empty to use the installed-software record on Windows",
        )),
    }
}

/// Reads a PEM bundle of root certificates for TLS verification.
fn load_roots(file: &Path, key: &str, path: &Path) -> Result<Vec<Vec<u8>>, ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| {
        invalid(
            file,
            key,
            format!("cannot read {}: {e}", path.display()),
            "point it at a PEM file of the CA certificates the chain should verify against",
        )
    })?;
    let mut reader = bytes.as_slice();
    let roots: Vec<Vec<u8>> = rustls_pemfile::certs(&mut reader)
        .filter_map(Result::ok)
        .map(|c| c.to_vec())
        .collect();
    if roots.is_empty() {
        return Err(invalid(
            file,
            key,
            format!("{} holds no PEM certificate", path.display()),
            "point it at a PEM file of CA certificates",
        ));
    }
    Ok(roots)
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
    fn an_endpoint_follows_the_connector_unless_told_otherwise() {
        let c = parse(
            "group = \"eu\"\n[[endpoint]]\naddress = \"a:443\"\n[[endpoint]]\naddress = \"b:443\"\nproxy = \"direct\"\n[[endpoint]]\naddress = \"c:443\"\nproxy = \"http://proxy.contoso.com:8080/\"",
        )
        .expect("valid");
        let proxies: Vec<String> = c
            .endpoints
            .iter()
            .map(|e| match &e.proxy {
                EndpointProxy::Connector => "connector".to_string(),
                EndpointProxy::Direct => "direct".to_string(),
                EndpointProxy::Via(p) => p.authority(),
            })
            .collect();
        assert_eq!(proxies, ["connector", "direct", "proxy.contoso.com:8080"]);
    }

    #[test]
    fn thumbprints_are_normalised() {
        assert_eq!(normalise_thumbprint("ab:cd ef"), "ABCDEF");
    }

    #[test]
    fn windows_defaults_fill_the_sections_left_out() {
        let defaults = Defaults::windows(
            "C:\\ProgramData",
            "C:\\Program Files",
            Some(Layout::PrivateNetwork),
        );
        let c = Config::parse_with(
            Path::new("C:\\connwatch\\collector.toml"),
            "group = \"eu\"",
            &defaults,
        )
        .expect("valid");
        let names: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["WAPCSvc", "WAPCUpdaterSvc"]);
        assert_eq!(c.services[1].role, ServiceRole::Updater);
        let endpoint = |address: &str| {
            c.endpoints
                .iter()
                .find(|e| e.address == address)
                .unwrap_or_else(|| panic!("{address} is a default endpoint"))
        };
        for address in [
            "login.microsoftonline.com:443",
            "login.windows.net:443",
            "autoupdate.msappproxy.net:443",
        ] {
            let e = endpoint(address);
            let tls = e.tls.as_ref().expect("checked over TLS");
            assert!(e.required, "{address}");
            assert_eq!(Some(tls.server_name.as_str()), address.strip_suffix(":443"));
            assert!(tls.roots.is_empty(), "{address}: the public roots");
            for root in [
                "DigiCert Global Root G2",
                "Microsoft RSA Root Certificate Authority 2017",
            ] {
                assert!(
                    tls.expected_issuers.iter().any(|i| i == root),
                    "{address} expects {root}"
                );
            }
        }
        for host in [
            "crl3.digicert.com",
            "crl4.digicert.com",
            "ocsp.digicert.com",
            "crl.microsoft.com",
            "oneocsp.microsoft.com",
            "ocsp.msocsp.com",
        ] {
            let e = endpoint(&format!("{host}:80"));
            assert!(e.required && e.tls.is_none(), "{host}");
        }
        assert!(
            c.endpoints
                .iter()
                .all(|e| e.address.ends_with(":80") != e.tls.is_some()),
            "TLS on 443, plain HTTP on 80"
        );
        assert_eq!(
            c.trust_certs[0].settings,
            [Layout::PrivateNetwork.trust_settings("C:\\ProgramData")],
            "only the installed layout's file"
        );
        assert!(c.trust_certs[0].path.is_none(), "the store, not a file");
        let proxy = c.proxy.as_ref().expect("proxy defaults");
        assert!(proxy.connector_config.as_ref().is_some_and(|p| {
            p.to_string_lossy()
                .ends_with("MicrosoftEntraPrivateNetworkConnectorService.exe.config")
        }));
        assert_eq!(
            c.log.as_ref().and_then(|l| l.channel.as_deref()),
            Some("Microsoft-Microsoft Entra private network-Connector/Admin")
        );
        assert!(matches!(
            c.version.connector,
            Some(VersionSource::Installed)
        ));
        // A host of the old layout gets the old layout's files and channel only.
        let old = Config::parse_with(
            Path::new("c.toml"),
            "group = \"eu\"",
            &Defaults::windows(
                "C:\\ProgramData",
                "C:\\Program Files",
                Some(Layout::AppProxy),
            ),
        )
        .expect("valid");
        assert_eq!(
            old.trust_certs[0].settings,
            [Layout::AppProxy.trust_settings("C:\\ProgramData")]
        );
        assert_eq!(
            old.log.as_ref().and_then(|l| l.channel.as_deref()),
            Some("Microsoft-AadApplicationProxy-Connector/Admin")
        );
        // An empty list turns a default off; a listed service keeps its defaults by role.
        let none = Config::parse_with(
            Path::new("c.toml"),
            "group = \"eu\"\nservice = []\nendpoint = []\n[[trust_cert]]\npath = \"t.pem\"\n[[service]]\nrole = \"updater\"",
            &defaults,
        );
        assert!(none.is_err(), "service cannot be both a list and tables");
        let some = Config::parse_with(
            Path::new("c.toml"),
            "group = \"eu\"\nendpoint = []\n[[service]]\nrole = \"updater\"",
            &defaults,
        )
        .expect("valid");
        assert!(some.endpoints.is_empty());
        assert_eq!(some.services.len(), 1);
        assert_eq!(some.services[0].name, "WAPCUpdaterSvc");
    }

    #[test]
    fn probe_sections_are_validated() {
        let c = parse(
            "group = \"eu\"\n[[endpoint]]\naddress = \"[::1]:443\"\ntls = true\nexpected_issuers = [\"Contoso\"]\n[[backend]]\nurl = \"http://intranet:8080/\"\n[proxy]\nconnector_config = \"c.exe.config\"\n[log]\nfile = \"connector.log\"\n[version.connector]\nfile = \"VERSION\"\n[version.updater]\ncommand = [\"updater\", \"--version\"]\npattern = \"v(\\\\S+)\"\n[host]\ndisk = \"/var\"",
        )
        .expect("valid");
        let tls = c.endpoints[0].tls.as_ref().expect("tls");
        assert_eq!(tls.server_name, "::1");
        assert_eq!(c.endpoints[0].proxy, EndpointProxy::Connector);
        assert_eq!(c.backends[0].timeout, DEFAULT_BACKEND_TIMEOUT);
        assert_eq!(
            c.proxy.and_then(|p| p.connector_config),
            Some(PathBuf::from("/etc/connwatch/c.exe.config"))
        );
        assert_eq!(
            c.log.and_then(|l| l.file),
            Some(PathBuf::from("/etc/connwatch/connector.log"))
        );
        assert!(matches!(
            c.version.updater,
            Some(VersionSource::Command { .. })
        ));
        for (text, needle) in [
            (
                "group = \"eu\"\n[[endpoint]]\naddress = \"a:1\"\nexpected_issuers = [\"x\"]",
                "endpoint[0].tls",
            ),
            (
                "group = \"eu\"\n[[endpoint]]\naddress = \"a:1\"\ntls = true\nca = \"missing.pem\"",
                "endpoint[0].ca",
            ),
            (
                "group = \"eu\"\n[[trust_cert]]\nthumbprint = \"AA\"",
                "trust_cert[0]",
            ),
            (
                "group = \"eu\"\n[[trust_cert]]\nsettings = \"TrustSettings.xml\"",
                "trust_cert[0].path",
            ),
            (
                "group = \"eu\"\n[[endpoint]]\naddress = \"a:1\"\nproxy = \"https://p:443\"",
                "endpoint[0].proxy",
            ),
            (
                "group = \"eu\"\n[[endpoint]]\naddress = \"a:1\"\nproxy = \"proxy server\"",
                "endpoint[0].proxy",
            ),
            (
                "group = \"eu\"\n[[backend]]\nurl = \"intranet\"",
                "backend[0].url",
            ),
            ("group = \"eu\"\n[log]", "`log`"),
            (
                "group = \"eu\"\n[version.connector]\nfile = \"v\"\ncommand = [\"x\"]",
                "version.connector",
            ),
            (
                "group = \"eu\"\n[version.connector]\nfile = \"v\"\npattern = \"(\"",
                "version.connector.pattern",
            ),
            (
                "group = \"eu\"\n[[service]]\nrole = \"other\"",
                "service[0].name",
            ),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.contains(needle), "{err} should mention {needle}");
        }
    }
}
