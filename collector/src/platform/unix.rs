//! The platform seams off Windows: systemd (when it runs) as the service manager, the
//! standard proxy environment variables as the system proxy. There are no certificate
//! stores, event log or installed-software record here: those answer with what to
//! configure instead.

use super::{
    CertStore, CertStoreKind, EventEntry, EventLog, InstalledProduct, InstalledSoftware, Platform,
    ServiceAnswer, ServiceManager, SystemProxy, SystemProxySetting, command_output, parse,
};
use crate::probe::route::HostPattern;
use futures::future::BoxFuture;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub(super) fn platform() -> Platform {
    Platform {
        services: Arc::new(Systemd),
        cert_store: Arc::new(NoStore),
        proxy: Arc::new(EnvProxy),
        events: Arc::new(NoEventLog),
        installed: Arc::new(NoRecord),
    }
}

struct Systemd;

impl ServiceManager for Systemd {
    fn source(&self) -> &'static str {
        "systemd"
    }

    fn query(&self, name: &str) -> BoxFuture<'_, Result<ServiceAnswer, String>> {
        let name = name.to_string();
        Box::pin(async move {
            // The documented test for "systemd is the init system here".
            if !Path::new("/run/systemd/system").is_dir() {
                return Ok(ServiceAnswer::NoManager);
            }
            let argv = [
                "systemctl",
                "show",
                "--property=LoadState,ActiveState,SubState,UnitFileState,MainPID",
                "--",
                &name,
            ]
            .map(String::from);
            let out = command_output(&argv, Duration::from_secs(2)).await?;
            parse::systemd_show(&out)
        })
    }
}

struct NoStore;

impl CertStore for NoStore {
    fn lookup(
        &self,
        store: CertStoreKind,
        _thumbprint: &str,
    ) -> BoxFuture<'_, Result<Vec<Vec<u8>>, String>> {
        Box::pin(async move {
            Err(format!(
                "there is no {} certificate store on this platform; set [[trust_cert]] path to the certificate file",
                store.label()
            ))
        })
    }
}

struct EnvProxy;

impl SystemProxy for EnvProxy {
    fn system_proxy(&self) -> BoxFuture<'_, Result<SystemProxySetting, String>> {
        Box::pin(async move {
            // The collector's own environment is the host's default for services
            // started the same way; the connector's own setting comes from its files.
            Ok(proxy_from(|k| std::env::var(k).ok()))
        })
    }
}

/// The first non-empty proxy variable (or `"direct"`), and `no_proxy`'s entries.
fn proxy_from(get: impl Fn(&str) -> Option<String>) -> SystemProxySetting {
    let first = |vars: &[&str]| {
        vars.iter()
            .filter_map(|k| get(k))
            .map(|v| v.trim().to_string())
            .find(|v| !v.is_empty())
    };
    let proxy = first(&[
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ])
    .unwrap_or_else(|| "direct".into());
    let bypass = first(&["NO_PROXY", "no_proxy"])
        .map(|list| list.split(',').filter_map(HostPattern::no_proxy).collect())
        .unwrap_or_default();
    SystemProxySetting { proxy, bypass }
}

struct NoEventLog;

impl EventLog for NoEventLog {
    fn read_after(
        &self,
        channel: &str,
        _after: Option<u64>,
        _max: usize,
    ) -> BoxFuture<'_, Result<Vec<EventEntry>, String>> {
        let channel = channel.to_string();
        Box::pin(async move {
            Err(format!(
                "the event log channel {channel} exists only on Windows; set [log] file to the connector's log file"
            ))
        })
    }
}

struct NoRecord;

impl InstalledSoftware for NoRecord {
    fn products(&self) -> BoxFuture<'_, Result<Vec<InstalledProduct>, String>> {
        Box::pin(async move {
            Err(
                "there is no installed-software record on this platform; set [version.connector] file or command"
                    .to_string(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_set_proxy_variable_wins_and_none_means_direct() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(name, _)| *name == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let s = proxy_from(env(&[
            ("HTTP_PROXY", "http://plain:3128"),
            ("https_proxy", "http://secure:3128"),
            ("no_proxy", "localhost, .contoso.com,,10.0.0.1"),
        ]));
        assert_eq!(s.proxy, "http://secure:3128");
        assert_eq!(
            s.bypass,
            [
                HostPattern::Domain("localhost".into()),
                HostPattern::Domain("contoso.com".into()),
                HostPattern::Domain("10.0.0.1".into()),
            ]
        );
        let none = proxy_from(env(&[("HTTPS_PROXY", "  ")]));
        assert_eq!(none.proxy, "direct");
        assert!(none.bypass.is_empty());
    }
}
