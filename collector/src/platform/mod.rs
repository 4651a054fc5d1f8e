//! The platform seams: small traits for what only the operating system can answer
//! (service manager, certificate stores, system proxy, event log, installed software),
//! with one implementation per platform chosen by `cfg`. Everything above them is
//! shared and tested on Linux; the text and byte formats the Windows implementations
//! read are parsed in [`parse`], which compiles and is tested everywhere.

pub mod parse;
/// Registering and running the collector as a Windows service (off Windows: refusals
/// that point at systemd).
#[cfg(windows)]
#[path = "service_windows.rs"]
pub mod service_host;
#[cfg(not(windows))]
#[path = "service_unix.rs"]
pub mod service_host;
#[cfg(not(windows))]
mod unix;
#[cfg(windows)]
mod windows;

use crate::config::Defaults;
use crate::probe::route::HostPattern;
use connwatch_shared::wire::{ServiceState, StartType};
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;

/// What a service manager says about one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceFacts {
    /// Running, stopped, pending or paused.
    pub state: ServiceState,
    /// Automatic, manual or disabled.
    pub start_type: StartType,
    /// The service's process, when it has one.
    pub pid: Option<u32>,
}

/// A service manager's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceAnswer {
    /// The service exists.
    Found(ServiceFacts),
    /// The manager does not know the service.
    NotInstalled,
    /// There is no service manager to ask; look for the process instead.
    NoManager,
}

/// The host's service manager: the SCM on Windows, systemd elsewhere (when it runs).
pub trait ServiceManager: Send + Sync {
    /// The manager's name as reported in `ServiceStatus.source`.
    fn source(&self) -> &'static str;
    /// Asks about one service (a Windows service name or a systemd unit).
    fn query(&self, name: &str) -> BoxFuture<'_, Result<ServiceAnswer, String>>;
}

/// The two certificate stores a connector's trust certificate can live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertStoreKind {
    /// The local machine's personal store (`IsInUserStore` false).
    LocalMachineMy,
    /// The Network Service account's personal store (`IsInUserStore` true).
    NetworkServiceMy,
}

impl CertStoreKind {
    /// The store for an `IsInUserStore` value.
    pub fn for_user_store(is_in_user_store: bool) -> CertStoreKind {
        if is_in_user_store {
            CertStoreKind::NetworkServiceMy
        } else {
            CertStoreKind::LocalMachineMy
        }
    }

    /// The store's name as reported in `TrustCertificate.source`.
    pub fn label(self) -> &'static str {
        match self {
            CertStoreKind::LocalMachineMy => "LocalMachine\\My",
            CertStoreKind::NetworkServiceMy => "NetworkService\\My",
        }
    }
}

/// A certificate store opened directly by name (never a search of every store).
pub trait CertStore: Send + Sync {
    /// The certificate with this thumbprint if the store has it; otherwise every
    /// certificate in that one store, so the caller can say what is there instead.
    fn lookup(
        &self,
        store: CertStoreKind,
        thumbprint: &str,
    ) -> BoxFuture<'_, Result<Vec<Vec<u8>>, String>>;
}

/// The host-wide proxy setting and the hosts that bypass it.
#[derive(Debug, Clone, PartialEq)]
pub struct SystemProxySetting {
    /// `"direct"`, or the proxy as the platform writes it (an address, or WinHTTP's
    /// per-scheme list such as `http=a:80;https=b:443`).
    pub proxy: String,
    /// Hosts reached directly (WinHTTP's bypass list, `no_proxy`).
    pub bypass: Vec<HostPattern>,
}

/// The host-wide proxy setting: WinHTTP on Windows, the environment elsewhere.
pub trait SystemProxy: Send + Sync {
    /// The setting, or an error saying why it is unknown.
    fn system_proxy(&self) -> BoxFuture<'_, Result<SystemProxySetting, String>>;
}

/// One entry of an event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventEntry {
    /// The channel's record number, increasing.
    pub record_id: u64,
    /// The event id.
    pub event_id: Option<u32>,
    /// The rendered message.
    pub text: String,
}

/// The Windows event log.
pub trait EventLog: Send + Sync {
    /// Entries of `channel` after record `after` (oldest first), at most `max`; with
    /// `after` unknown, the newest `max` entries.
    fn read_after(
        &self,
        channel: &str,
        after: Option<u64>,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<EventEntry>, String>>;
}

/// An installed product and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledProduct {
    /// Its display name.
    pub name: String,
    /// Its display version.
    pub version: String,
}

/// The record of installed software (the uninstall entries of the Windows registry).
pub trait InstalledSoftware: Send + Sync {
    /// Every installed product with a version.
    fn products(&self) -> BoxFuture<'_, Result<Vec<InstalledProduct>, String>>;
}

/// This host's implementations.
#[derive(Clone)]
pub struct Platform {
    /// The service manager.
    pub services: Arc<dyn ServiceManager>,
    /// The certificate stores.
    pub cert_store: Arc<dyn CertStore>,
    /// The system proxy.
    pub proxy: Arc<dyn SystemProxy>,
    /// The event log.
    pub events: Arc<dyn EventLog>,
    /// Installed software.
    pub installed: Arc<dyn InstalledSoftware>,
}

/// The implementations for the platform this was built for.
pub fn current() -> Platform {
    #[cfg(windows)]
    {
        windows::platform()
    }
    #[cfg(not(windows))]
    {
        unix::platform()
    }
}

/// What a config that leaves sections out gets on this platform.
pub fn defaults() -> Defaults {
    #[cfg(windows)]
    {
        windows::defaults()
    }
    #[cfg(not(windows))]
    {
        Defaults::default()
    }
}

/// Runs a program and returns its standard output; the child is killed if it does not
/// finish within `timeout`.
pub async fn command_output(argv: &[String], timeout: Duration) -> Result<String, String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("no command given".into());
    };
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(timeout, child).await {
        Err(_) => Err(format!("`{program}` did not finish within {timeout:?}")),
        Ok(Err(e)) => Err(format!("cannot run `{program}`: {e}")),
        Ok(Ok(out)) if !out.status.success() => {
            let err = String::from_utf8_lossy(&out.stderr);
            Err(format!(
                "`{program}` failed ({}): {}",
                out.status,
                parse::clip(err.trim(), 300)
            ))
        }
        Ok(Ok(out)) => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
    }
}
