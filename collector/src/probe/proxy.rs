//! Proxy probe: which proxy the connector uses and which the updater uses, read from
//! the `defaultProxy` element of each service's `.exe.config`, beside the host's own
//! setting (WinHTTP on Windows, the proxy environment variables elsewhere), so a
//! connector and updater that go out different ways are seen side by side. The
//! connector's file and the host's setting come from the cycle's shared
//! [`Resolver`] reading, the one the endpoint checks route by.

use super::route::Resolver;
use super::{Observation, Probe, failed};
use crate::config::ProxyConfig;
use connwatch_shared::wire::ProxySettings;
use futures::future::BoxFuture;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// What one `.exe.config` says about the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProxy {
    /// `""` when it defers to the system default, `"direct"`, or the proxy address.
    pub proxy: String,
    /// Whether it defers to the system default.
    pub uses_default: bool,
    /// `<proxy bypassonlocal="true">`: local names and addresses go direct.
    pub bypass_on_local: bool,
    /// `<bypasslist>` entries: .NET regular expressions of addresses that go direct
    /// (checked to compile when the file is read).
    pub bypass: Vec<String>,
}

/// Reads the `<system.net><defaultProxy>` element of a .NET `.exe.config`.
pub fn parse_exe_config(bytes: &[u8]) -> Result<ConfigProxy, String> {
    let text = super::cert::decode_text(bytes);
    let doc = roxmltree::Document::parse(&text).map_err(|e| format!("is not valid XML: {e}"))?;
    let mut found = ConfigProxy {
        proxy: String::new(),
        uses_default: true,
        bypass_on_local: false,
        bypass: Vec::new(),
    };
    let Some(default_proxy) = doc
        .descendants()
        .find(|n| n.is_element() && n.tag_name().name() == "defaultProxy")
    else {
        return Ok(found);
    };
    let is = |v: Option<&str>, want: &str| v.is_some_and(|v| v.trim().eq_ignore_ascii_case(want));
    if is(default_proxy.attribute("enabled"), "false") {
        found.proxy = "direct".into();
        found.uses_default = false;
        return Ok(found);
    }
    // <add>, <remove> and <clear> apply in order, as in any .NET configuration list.
    if let Some(list) = element(default_proxy, "bypasslist") {
        for entry in list.children().filter(|n| n.is_element()) {
            let address = entry.attribute("address").map(str::trim).unwrap_or("");
            match entry.tag_name().name() {
                "add" if !address.is_empty() => {
                    super::route::HostPattern::dotnet(address)?;
                    found.bypass.push(address.to_string());
                }
                "remove" => found.bypass.retain(|b| b != address),
                "clear" => found.bypass.clear(),
                _ => {}
            }
        }
    }
    let proxy = element(default_proxy, "proxy");
    found.bypass_on_local = is(proxy.and_then(|p| p.attribute("bypassonlocal")), "true");
    let address = proxy
        .and_then(|p| p.attribute("proxyaddress"))
        .map(str::trim)
        .filter(|a| !a.is_empty());
    if let Some(address) = address {
        found.proxy = address.to_string();
        found.uses_default = false;
    } else if is(proxy.and_then(|p| p.attribute("usesystemdefault")), "false") {
        found.proxy = "direct".into();
        found.uses_default = false;
    }
    Ok(found)
}

/// The first child element of `parent` named `name`.
fn element<'a, 'i>(parent: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    parent
        .children()
        .find(|n| n.is_element() && n.tag_name().name() == name)
}

/// Reads and parses an `.exe.config`; the error says what to do.
pub(crate) async fn read_exe_config(path: &Path) -> Result<ConfigProxy, String> {
    match tokio::fs::read(path).await {
        Ok(bytes) => parse_exe_config(&bytes).map_err(|e| format!("{} {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(format!(
            "permission denied reading {}: run the collector as an account that can read it",
            path.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "{} does not exist: the service is not installed there, or set [proxy] to its .exe.config",
            path.display()
        )),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Reads the proxy settings.
pub struct ProxyProbe {
    config: ProxyConfig,
    resolver: Arc<Resolver>,
}

impl ProxyProbe {
    /// A proxy probe for the configured files; `resolver` reads the connector's file
    /// (the same as `config.connector_config`) and the system setting.
    pub fn new(config: ProxyConfig, resolver: Arc<Resolver>) -> Self {
        ProxyProbe { config, resolver }
    }

    async fn read(&self) -> Observation {
        let mut settings = ProxySettings::default();
        let mut out = Vec::new();
        let c = &self.config;
        let reading = self.resolver.reading().await;
        match &reading.connector {
            Some(Ok(found)) => {
                settings.connector_proxy = found.proxy.clone();
                settings.connector_uses_default = found.uses_default;
            }
            Some(Err(reason)) => out.push(failed("proxy:connector", reason.clone())),
            None => {}
        }
        if let Some(path) = &c.updater_config {
            match read_exe_config(path).await {
                Ok(found) => {
                    settings.updater_proxy = found.proxy;
                    settings.updater_uses_default = found.uses_default;
                }
                Err(reason) => out.push(failed("proxy:updater", reason)),
            }
        }
        if c.system {
            match &reading.system {
                Ok(p) => settings.system_proxy = p.proxy.clone(),
                Err(reason) => out.push(failed("proxy:system", reason.clone())),
            }
        }
        out.insert(0, Observation::Proxy(settings));
        Observation::Many(out)
    }
}

impl Probe for ProxyProbe {
    fn name(&self) -> String {
        "proxy".into()
    }

    fn deadline(&self) -> Duration {
        Duration::from_secs(4)
    }

    fn run(&self) -> BoxFuture<'_, Observation> {
        Box::pin(self.read())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::{SystemProxy, SystemProxySetting};
    use connwatch_shared::wire::Report;

    const CONNECTOR: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <startup><supportedRuntime version="v4.0" sku=".NETFramework,Version=v4.7.1"/></startup>
  <system.net>
    <defaultProxy enabled="true" useDefaultCredentials="true">
      <proxy bypassonlocal="true" usesystemdefault="false" proxyaddress="http://proxyserver:8080" />
    </defaultProxy>
  </system.net>
  <runtime><gcServer enabled="true"/></runtime>
</configuration>"#;

    #[test]
    fn exe_config_samples_give_the_proxy_direct_or_the_default() {
        let p = |s: &str| parse_exe_config(s.as_bytes()).expect("parse");
        assert_eq!(
            p(CONNECTOR),
            ConfigProxy {
                proxy: "http://proxyserver:8080".into(),
                uses_default: false,
                bypass_on_local: true,
                bypass: Vec::new(),
            }
        );
        let bypass = r#"<configuration><system.net><defaultProxy enabled="false"></defaultProxy></system.net></configuration>"#;
        assert_eq!(p(bypass).proxy, "direct");
        let no_system = r#"<configuration><system.net><defaultProxy><proxy usesystemdefault="false"/></defaultProxy></system.net></configuration>"#;
        assert_eq!(p(no_system).proxy, "direct");
        let default = r#"<configuration><system.net><defaultProxy useDefaultCredentials="true"/></system.net></configuration>"#;
        assert_eq!(
            p(default),
            ConfigProxy {
                proxy: String::new(),
                uses_default: true,
                bypass_on_local: false,
                bypass: Vec::new(),
            }
        );
        let none = "<configuration><appSettings/></configuration>";
        assert!(p(none).uses_default);
        assert!(parse_exe_config(b"<configuration>").is_err());
    }

    #[test]
    fn the_bypass_list_applies_add_remove_and_clear_in_order() {
        let with_list = |list: &str| {
            parse_exe_config(
                format!(
                    r#"<configuration><system.net><defaultProxy><bypasslist>{list}</bypasslist><proxy proxyaddress="http://p:3128"/></defaultProxy></system.net></configuration>"#
                )
                .as_bytes(),
            )
        };
        let got = with_list(
            r#"<add address="old\.contoso\.com"/><clear/><add address="[a-z]+\.contoso\.com$"/><add address="10\.1\..*"/><remove address="10\.1\..*"/>"#,
        )
        .expect("parse");
        assert_eq!(got.bypass, [r"[a-z]+\.contoso\.com$"]);
        assert!(!got.bypass_on_local);
        let err = with_list(r#"<add address="(unclosed"/>"#).expect_err("bad regex");
        assert!(err.contains("(unclosed"), "{err}");
    }

    struct Fixed(Result<String, String>);

    impl SystemProxy for Fixed {
        fn system_proxy(&self) -> BoxFuture<'_, Result<SystemProxySetting, String>> {
            let r = self.0.clone().map(|proxy| SystemProxySetting {
                proxy,
                bypass: Vec::new(),
            });
            Box::pin(async move { r })
        }
    }

    #[tokio::test]
    async fn connector_and_updater_are_reported_side_by_side() {
        let dir = tempfile::tempdir().expect("tempdir");
        let connector = dir
            .path()
            .join("ApplicationProxyConnectorService.exe.config");
        std::fs::write(&connector, CONNECTOR).expect("write");
        let probe = ProxyProbe::new(
            ProxyConfig {
                connector_config: Some(connector.clone()),
                updater_config: Some(dir.path().join("missing.exe.config")),
                system: true,
            },
            Arc::new(Resolver::new(
                Some(connector),
                Arc::new(Fixed(Ok("direct".into()))),
            )),
        );
        let mut report = Report::default();
        probe.read().await.apply(&mut report);
        let p = report.proxy.expect("proxy");
        assert_eq!(p.connector_proxy, "http://proxyserver:8080");
        assert_eq!(p.updater_proxy, "", "unknown, not direct");
        assert_eq!(p.system_proxy, "direct");
        assert_eq!(report.probe_errors.len(), 1);
        assert!(report.probe_errors[0].reason.contains("missing.exe.config"));
    }
}
