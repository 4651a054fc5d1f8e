//! Which way an endpoint check goes: direct, or through the proxy the connector itself
//! would use for that endpoint. The connector is a .NET service, so its effective proxy
//! is the `<defaultProxy>` of its `.exe.config` (with its `bypasslist` and
//! `bypassonlocal`) and, where that defers to the system default or is absent, the
//! host's own setting (WinHTTP on Windows, the proxy variables elsewhere), with that
//! setting's bypass list.
//!
//! The sources are read once per cycle and shared: every endpoint probe of a cycle and
//! the proxy probe ask one [`Resolver`], which reads the `.exe.config` and asks the
//! platform for the system proxy on the first call and answers the others from that
//! reading. Probes of a cycle start together (`run_all`), so a reading younger than
//! [`READING_FRESH`] is this cycle's; an older one belongs to an earlier cycle and is
//! read again. This keeps one `netsh` run per cycle on Windows, and no probe waits on
//! another's schedule.

use super::proxy::{ConfigProxy, read_exe_config};
use crate::platform::{SystemProxy, SystemProxySetting};
use regex::{Regex, RegexBuilder};
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long one reading of the proxy sources serves the probes that ask for it.
pub const READING_FRESH: Duration = Duration::from_secs(1);

/// The longest an endpoint check waits for the proxy sources before it goes direct.
pub const RESOLVE_LIMIT: Duration = Duration::from_secs(4);

/// A forward proxy, reached over plain HTTP (as .NET Framework and WinHTTP reach one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyAddr {
    /// Name or address; IPv6 in brackets.
    host: String,
    port: u16,
}

impl ProxyAddr {
    /// Parses `http://host:port`, `host:port` or `http://host` (port 80): the forms of
    /// .NET's `proxyaddress`, WinHTTP's proxy server and the proxy variables. A trailing
    /// `/` and credentials (`user:pass@`, which the checks never send) are dropped.
    pub fn parse(text: &str) -> Result<ProxyAddr, String> {
        let text = text.trim();
        let rest = match text.split_once("://") {
            None => text,
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => {
                return Err(format!(
                    "`{text}`: a `{scheme}://` proxy is not supported; the connector reaches its proxy over plain HTTP (`http://host:port`)"
                ));
            }
        };
        let rest = rest.trim_end_matches('/');
        let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
        if rest.is_empty() || rest.contains(['/', '?', '#']) || rest.contains(char::is_whitespace) {
            return Err(format!(
                "`{text}` is not a proxy address; write it like `http://proxy.contoso.com:8080`"
            ));
        }
        let (host, port) = match crate::config::split_host_port(rest) {
            Some((host, port)) => (host, port),
            None if rest.starts_with('[') && rest.ends_with(']') || !rest.contains(':') => {
                (rest, 80)
            }
            None => {
                return Err(format!(
                    "`{text}` is not a proxy address; write it like `http://proxy.contoso.com:8080`"
                ));
            }
        };
        if port == 0 {
            return Err(format!("`{text}`: port 0 is not a proxy port"));
        }
        Ok(ProxyAddr {
            host: host.to_string(),
            port,
        })
    }

    /// `host:port`, to connect to and to report.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl fmt::Display for ProxyAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The path of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Straight to the endpoint.
    Direct,
    /// Through a proxy, with CONNECT.
    Proxy(ProxyAddr),
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::Direct => f.write_str("direct"),
            Route::Proxy(p) => p.fmt(f),
        }
    }
}

/// An endpoint as bypass rules see it.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// Host as written in the address (IPv6 in brackets).
    pub host: &'a str,
    /// Port.
    pub port: u16,
    /// Whether the connector speaks TLS to it (`https`) or not (`http`).
    pub tls: bool,
}

impl Target<'_> {
    /// The string .NET Framework matches bypass regexes against: `scheme://host`, with
    /// `:port` unless it is the scheme's default.
    fn uri(&self) -> String {
        let (scheme, default) = if self.tls {
            ("https", 443)
        } else {
            ("http", 80)
        };
        if self.port == default {
            format!("{scheme}://{}", self.host)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }

    fn bare_host(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }

    /// .NET's `bypassonlocal` and WinHTTP's `<local>`: a name without a dot, or a
    /// loopback name or address.
    fn is_local(&self) -> bool {
        let host = self.bare_host();
        match host.parse::<IpAddr>() {
            Ok(ip) => ip.is_loopback(),
            Err(_) => !host.contains('.') || host.eq_ignore_ascii_case("localhost"),
        }
    }
}

/// One entry of a bypass list: hosts reached directly although a proxy is set.
#[derive(Debug, Clone)]
pub enum HostPattern {
    /// Local names and addresses (`bypassonlocal`, `<local>`).
    Local,
    /// Every host (`*` in `no_proxy`).
    All,
    /// A `.exe.config` `<bypasslist>` entry: a .NET regular expression, matched
    /// without anchors and in any case against `scheme://host[:port]`.
    DotNet(Regex),
    /// A `no_proxy` entry: the name and every name under it, or one address.
    Domain(String),
    /// A WinHTTP bypass entry: the whole host name, `*` standing for anything.
    Wildcard(Regex),
}

impl PartialEq for HostPattern {
    fn eq(&self, other: &Self) -> bool {
        use HostPattern::*;
        match (self, other) {
            (Local, Local) | (All, All) => true,
            (DotNet(a), DotNet(b)) | (Wildcard(a), Wildcard(b)) => a.as_str() == b.as_str(),
            (Domain(a), Domain(b)) => a == b,
            _ => false,
        }
    }
}

impl HostPattern {
    /// A `<bypasslist><add address="..."/>` entry.
    pub fn dotnet(regex: &str) -> Result<HostPattern, String> {
        RegexBuilder::new(regex)
            .case_insensitive(true)
            .size_limit(1 << 20)
            .build()
            .map(HostPattern::DotNet)
            .map_err(|e| format!("bypasslist entry `{regex}` is not a regular expression: {e}"))
    }

    /// One comma-separated entry of `no_proxy`; `None` for an empty one.
    pub fn no_proxy(entry: &str) -> Option<HostPattern> {
        let entry = entry.trim();
        if entry == "*" {
            return Some(HostPattern::All);
        }
        let name = entry.trim_start_matches("*.").trim_start_matches('.');
        let name = name.trim_start_matches('[').trim_end_matches(']');
        (!name.is_empty()).then(|| HostPattern::Domain(name.to_ascii_lowercase()))
    }

    /// One `;`-separated entry of WinHTTP's bypass list; `None` for an empty one.
    pub fn winhttp(entry: &str) -> Option<HostPattern> {
        let entry = entry.trim();
        if entry.is_empty() {
            return None;
        }
        if entry.eq_ignore_ascii_case("<local>") {
            return Some(HostPattern::Local);
        }
        let pattern = entry
            .split('*')
            .map(regex::escape)
            .collect::<Vec<_>>()
            .join(".*");
        RegexBuilder::new(&format!("^{pattern}$"))
            .case_insensitive(true)
            .build()
            .ok()
            .map(HostPattern::Wildcard)
    }

    /// Whether a check of `target` goes direct by this entry.
    pub fn matches(&self, target: &Target<'_>) -> bool {
        match self {
            HostPattern::Local => target.is_local(),
            HostPattern::All => true,
            HostPattern::DotNet(re) => re.is_match(&target.uri()),
            HostPattern::Domain(name) => {
                let host = target.bare_host().to_ascii_lowercase();
                host == *name
                    || host
                        .strip_suffix(name.as_str())
                        .is_some_and(|h| h.ends_with('.'))
            }
            HostPattern::Wildcard(re) => re.is_match(target.bare_host()),
        }
    }
}

/// One reading of the proxy sources.
#[derive(Debug, Clone)]
pub struct Reading {
    /// The connector's `.exe.config`, when one is configured.
    pub connector: Option<Result<ConfigProxy, String>>,
    /// The host's own setting.
    pub system: Result<SystemProxySetting, String>,
}

/// A proxy and the hosts that bypass it.
#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    /// The proxy; `None` for direct.
    pub proxy: Option<ProxyAddr>,
    /// Hosts reached directly.
    pub bypass: Vec<HostPattern>,
}

impl Effective {
    /// The path a check of `target` takes.
    pub fn route(&self, target: &Target<'_>) -> Route {
        match &self.proxy {
            Some(p) if !self.bypass.iter().any(|b| b.matches(target)) => Route::Proxy(p.clone()),
            _ => Route::Direct,
        }
    }
}

/// The connector's effective proxy for an endpoint spoken to with or without TLS, as
/// .NET resolves it: the `.exe.config` when it names a proxy or turns it off, else the
/// system setting. `Err` when it cannot be known (the system setting is unreadable).
pub fn effective(reading: &Reading, tls: bool) -> Result<Effective, String> {
    let config = match &reading.connector {
        Some(Ok(c)) => Some(c),
        // An unreadable .exe.config is reported by the proxy probe; .NET falls back to
        // the system default without one, and so do the checks.
        Some(Err(_)) | None => None,
    };
    let mut bypass: Vec<HostPattern> = Vec::new();
    if let Some(c) = config {
        if c.bypass_on_local {
            bypass.push(HostPattern::Local);
        }
        // Validated when the file was parsed.
        bypass.extend(c.bypass.iter().filter_map(|b| HostPattern::dotnet(b).ok()));
        if c.proxy == "direct" {
            return Ok(Effective {
                proxy: None,
                bypass,
            });
        }
        if !c.uses_default {
            return Ok(Effective {
                proxy: Some(ProxyAddr::parse(&c.proxy).map_err(|e| {
                    format!("the connector's .exe.config names a proxy this check cannot use: {e}")
                })?),
                bypass,
            });
        }
    }
    let system = reading.system.as_ref().map_err(|e| e.clone())?;
    bypass.extend(system.bypass.iter().cloned());
    let proxy = match pick(&system.proxy, tls) {
        None => None,
        Some(p) => Some(
            ProxyAddr::parse(p)
                .map_err(|e| format!("the system proxy cannot be used by this check: {e}"))?,
        ),
    };
    Ok(Effective { proxy, bypass })
}

/// The proxy for one scheme from a proxy setting: `direct` (none), one address, or
/// WinHTTP's list such as `http=a:80;https=b:443` (the `https=` entry for TLS, the
/// `http=` one otherwise, else the first plain entry).
fn pick(setting: &str, tls: bool) -> Option<&str> {
    let setting = setting.trim();
    if setting.is_empty() || setting.eq_ignore_ascii_case("direct") {
        return None;
    }
    let entries: Vec<&str> = setting
        .split([';', ' '])
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    let want = if tls { "https=" } else { "http=" };
    entries
        .iter()
        .find_map(|e| {
            e.get(..want.len())
                .filter(|p| p.eq_ignore_ascii_case(want))
                .map(|_| &e[want.len()..])
        })
        .or_else(|| entries.iter().copied().find(|e| !e.contains('=')))
}

/// Reads the proxy sources at most once per cycle for every probe that asks.
pub struct Resolver {
    connector_config: Option<PathBuf>,
    system: Arc<dyn SystemProxy>,
    last: tokio::sync::Mutex<Option<(Instant, Arc<Reading>)>>,
}

impl Resolver {
    /// A resolver reading the connector's `.exe.config` (when given) and the platform's
    /// system proxy.
    pub fn new(connector_config: Option<PathBuf>, system: Arc<dyn SystemProxy>) -> Resolver {
        Resolver {
            connector_config,
            system,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// This cycle's reading of the sources. Callers that arrive while it is read wait
    /// for it rather than reading again.
    pub async fn reading(&self) -> Arc<Reading> {
        let mut last = self.last.lock().await;
        if let Some((at, reading)) = last.as_ref()
            && at.elapsed() < READING_FRESH
        {
            return reading.clone();
        }
        let connector = match &self.connector_config {
            Some(path) => Some(read_exe_config(path).await),
            None => None,
        };
        let system = self.system.system_proxy().await;
        let reading = Arc::new(Reading { connector, system });
        *last = Some((Instant::now(), reading.clone()));
        reading
    }

    /// The path the connector's traffic to `address` (`host:port`) takes. When the
    /// sources cannot say (unreadable, or slower than [`RESOLVE_LIMIT`]) the check goes
    /// direct; the proxy probe reports what could not be read.
    pub async fn route(&self, address: &str, tls: bool) -> Route {
        let Some((host, port)) = crate::config::split_host_port(address) else {
            return Route::Direct;
        };
        let Ok(reading) = tokio::time::timeout(RESOLVE_LIMIT, self.reading()).await else {
            tracing::debug!(
                address,
                "the proxy sources did not answer in time; checking direct"
            );
            return Route::Direct;
        };
        match effective(&reading, tls) {
            Ok(e) => e.route(&Target { host, port, tls }),
            Err(why) => {
                tracing::debug!(address, %why, "the effective proxy is unknown; checking direct");
                Route::Direct
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(host: &str, port: u16, tls: bool) -> Target<'_> {
        Target { host, port, tls }
    }

    #[test]
    fn proxy_addresses_parse_in_every_written_form() {
        let a = |t: &str| ProxyAddr::parse(t).map(|p| p.authority());
        assert_eq!(a("http://proxyserver:8080"), Ok("proxyserver:8080".into()));
        assert_eq!(a("http://proxyserver:8080/"), Ok("proxyserver:8080".into()));
        assert_eq!(a("HTTP://proxy"), Ok("proxy:80".into()));
        assert_eq!(
            a("proxy.contoso.com:3128"),
            Ok("proxy.contoso.com:3128".into())
        );
        assert_eq!(a("http://user:pw@proxy:3128"), Ok("proxy:3128".into()));
        assert_eq!(a("http://[::1]:3128"), Ok("[::1]:3128".into()));
        for bad in [
            "https://proxy:443",
            "socks5://p:1080",
            "http://",
            "http://p:x",
            "p:0",
            "a b:1",
        ] {
            assert!(ProxyAddr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dotnet_bypass_entries_are_regexes_over_scheme_host_and_port() {
        let re = |r: &str| HostPattern::dotnet(r).expect("regex");
        // Unanchored, any case, as .NET Framework's WebProxy matches them.
        assert!(re(r"contoso\.com").matches(&target("Login.CONTOSO.com", 443, true)));
        assert!(re(r"[a-z]+\.contoso\.com$").matches(&target("app.contoso.com", 443, true)));
        // The port is part of the string when it is not the scheme's default.
        assert!(!re(r"[a-z]+\.contoso\.com$").matches(&target("app.contoso.com", 8443, true)));
        assert!(re(r"^https://app\.").matches(&target("app.contoso.com", 443, true)));
        assert!(!re(r"^https://app\.").matches(&target("app.contoso.com", 80, false)));
        assert!(re(r"^http://10\.1\.").matches(&target("10.1.2.3", 80, false)));
        // `.` unescaped matches any character, as it does for .NET.
        assert!(re("login.microsoftonline.com").matches(&target(
            "loginXmicrosoftonline.com",
            443,
            true
        )));
        assert!(HostPattern::dotnet("(unclosed").is_err());
    }

    #[test]
    fn local_means_no_dot_or_loopback() {
        let local = HostPattern::Local;
        for host in ["intranet", "localhost", "127.0.0.1", "127.8.9.10", "[::1]"] {
            assert!(local.matches(&target(host, 443, true)), "{host}");
        }
        for host in ["login.microsoftonline.com", "10.0.0.1", "[2001:db8::1]"] {
            assert!(!local.matches(&target(host, 443, true)), "{host}");
        }
    }

    #[test]
    fn no_proxy_and_winhttp_entries() {
        let np = |e: &str| HostPattern::no_proxy(e).expect("entry");
        assert!(np(".contoso.com").matches(&target("a.contoso.com", 443, true)));
        assert!(np("contoso.com").matches(&target("contoso.com", 443, true)));
        assert!(np("contoso.com").matches(&target("b.a.Contoso.com", 443, true)));
        assert!(!np("contoso.com").matches(&target("notcontoso.com", 443, true)));
        assert!(np("127.0.0.1").matches(&target("127.0.0.1", 80, false)));
        assert!(np("*").matches(&target("anything.example", 443, true)));
        assert_eq!(HostPattern::no_proxy(" "), None);
        let wh = |e: &str| HostPattern::winhttp(e).expect("entry");
        assert_eq!(wh("<local>"), HostPattern::Local);
        assert!(wh("*.contoso.com").matches(&target("a.contoso.com", 443, true)));
        assert!(!wh("*.contoso.com").matches(&target("contoso.com", 443, true)));
        assert!(wh("10.*").matches(&target("10.2.3.4", 443, true)));
        assert!(!wh("10.*").matches(&target("110.2.3.4", 443, true)));
    }

    fn config(proxy: &str, uses_default: bool, bypass: &[&str], local: bool) -> ConfigProxy {
        ConfigProxy {
            proxy: proxy.into(),
            uses_default,
            bypass_on_local: local,
            bypass: bypass.iter().map(|b| b.to_string()).collect(),
        }
    }

    fn system(proxy: &str, bypass: Vec<HostPattern>) -> Result<SystemProxySetting, String> {
        Ok(SystemProxySetting {
            proxy: proxy.into(),
            bypass,
        })
    }

    #[test]
    fn the_exe_config_decides_before_the_system_setting() {
        let login = target("login.microsoftonline.com", 443, true);
        let route = |connector: Option<Result<ConfigProxy, String>>,
                     system: Result<SystemProxySetting, String>,
                     t: &Target<'_>| {
            effective(&Reading { connector, system }, t.tls).map(|e| e.route(t).to_string())
        };
        let named = Some(Ok(config("http://proxyserver:8080", false, &[], true)));
        assert_eq!(
            route(named.clone(), system("direct", vec![]), &login),
            Ok("proxyserver:8080".into())
        );
        // Named in the file, so an unreadable system setting does not matter.
        assert_eq!(
            route(named.clone(), Err("netsh failed".into()), &login),
            Ok("proxyserver:8080".into())
        );
        assert_eq!(
            route(
                named,
                system("direct", vec![]),
                &target("intranet", 80, false)
            ),
            Ok("direct".into()),
            "bypassonlocal"
        );
        let listed = Some(Ok(config(
            "http://proxyserver:8080",
            false,
            &[r"microsoftonline\.com$"],
            false,
        )));
        assert_eq!(
            route(listed, system("direct", vec![]), &login),
            Ok("direct".into())
        );
        let off = Some(Ok(config("direct", false, &[], false)));
        assert_eq!(
            route(off, system("sys:3128", vec![]), &login),
            Ok("direct".into())
        );
        let defers = Some(Ok(config("", true, &[], false)));
        assert_eq!(
            route(defers, system("sys:3128", vec![]), &login),
            Ok("sys:3128".into())
        );
        assert_eq!(
            route(
                Some(Err("permission denied".into())),
                system("http=plain:80;https=secure:443", vec![]),
                &login
            ),
            Ok("secure:443".into()),
            "an unreadable file falls back to the system setting, as .NET does without one"
        );
        assert_eq!(
            route(
                None,
                system("http=plain:80;https=secure:443", vec![]),
                &target("login.microsoftonline.com", 80, false)
            ),
            Ok("plain:80".into())
        );
        assert_eq!(
            route(
                None,
                system(
                    "sys:3128",
                    vec![HostPattern::winhttp("*.microsoftonline.com").expect("entry")]
                ),
                &login
            ),
            Ok("direct".into())
        );
        assert!(route(None, Err("netsh failed".into()), &login).is_err());
    }

    struct Counting(std::sync::atomic::AtomicUsize);

    impl SystemProxy for Counting {
        fn system_proxy(
            &self,
        ) -> futures::future::BoxFuture<'_, Result<SystemProxySetting, String>> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async { system("proxy:3128", vec![HostPattern::Local]) })
        }
    }

    #[tokio::test]
    async fn one_reading_serves_every_probe_of_a_cycle() {
        let counting = Arc::new(Counting(Default::default()));
        let resolver = Resolver::new(None, counting.clone());
        let routes = futures::future::join_all(
            ["login.example:443", "localhost:443", "a.example:443"]
                .map(|a| resolver.route(a, true)),
        )
        .await;
        let routes: Vec<String> = routes.iter().map(Route::to_string).collect();
        assert_eq!(routes, ["proxy:3128", "direct", "proxy:3128"]);
        assert_eq!(counting.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
