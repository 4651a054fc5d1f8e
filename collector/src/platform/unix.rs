//! The platform seams off Windows: systemd (when it runs) as the service manager, the
//! standard proxy environment variables as the system proxy. There are no certificate
//! stores, event log or installed-software record here: those answer with what to
//! configure instead.

use super::{
    CertStore, CertStoreKind, EventEntry, EventLog, InstalledProduct, InstalledSoftware, Platform,
    ServiceAnswer, ServiceManager, SystemProxy, command_output, parse,
};
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
    fn system_proxy(&self) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(async move {
            // The collector's own environment is the host's default for services
            // started the same way; the connector's own setting comes from its files.
            let vars = [
                "HTTPS_PROXY",
                "https_proxy",
                "HTTP_PROXY",
                "http_proxy",
                "ALL_PROXY",
                "all_proxy",
            ];
            Ok(proxy_from(|k| std::env::var(k).ok(), &vars))
        })
    }
}

/// The first non-empty proxy variable, or `"direct"`.
fn proxy_from(get: impl Fn(&str) -> Option<String>, vars: &[&str]) -> String {
    vars.iter()
        .filter_map(|k| get(k))
        .map(|v| v.trim().to_string())
        .find(|v| !v.is_empty())
        .unwrap_or_else(|| "direct".into())
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
        let vars = ["HTTPS_PROXY", "HTTP_PROXY"];
        let env = |k: &str| (k == "HTTP_PROXY").then(|| "http://proxy:3128".to_string());
        assert_eq!(proxy_from(env, &vars), "http://proxy:3128");
        assert_eq!(proxy_from(|_| Some("  ".into()), &vars), "direct");
    }
}
