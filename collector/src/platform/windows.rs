//! The platform seams on Windows: the service control manager (windows-service), the
//! certificate stores and uninstall entries in the registry (winreg), WinHTTP's proxy
//! through `netsh winhttp show proxy`, and the event log through `wevtutil qe`. The
//! output of the tools and the registry's certificate blobs are parsed in `parse`,
//! where they are tested on every platform.

use super::{
    CertStore, CertStoreKind, EventEntry, EventLog, InstalledProduct, InstalledSoftware, Platform,
    ServiceAnswer, ServiceFacts, ServiceManager, SystemProxy, SystemProxySetting, command_output,
    parse,
};
use crate::config::Defaults;
use crate::layout::Layout;
use connwatch_shared::wire::{ServiceState, StartType};
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;
use winreg::RegKey;
use winreg::enums::{HKEY_LOCAL_MACHINE, HKEY_USERS, KEY_READ};

pub(super) fn platform() -> Platform {
    Platform {
        services: Arc::new(Scm),
        cert_store: Arc::new(RegistryStores),
        proxy: Arc::new(WinHttp),
        events: Arc::new(Wevtutil),
        installed: Arc::new(UninstallEntries),
    }
}

pub(super) fn defaults() -> Defaults {
    // The platform edge is where the install folders are learnt; the rest of the
    // collector takes them as data.
    let program_data = std::env::var("ProgramData").unwrap_or_else(|_| "C:\\ProgramData".into());
    let program_files =
        std::env::var("ProgramFiles").unwrap_or_else(|_| "C:\\Program Files".into());
    // The uninstall entries say which layout is installed. Reading them once at
    // start-up is enough: installing or upgrading the connector needs a reboot, which
    // restarts the collector too.
    let products = uninstall_entries().unwrap_or_default();
    let layout = Layout::detect(&products, &program_data, |p| p.is_dir());
    Defaults::windows(&program_data, &program_files, layout)
}

/// Runs blocking Windows calls off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("the lookup crashed: {e}"))?
}

struct Scm;

const ERROR_ACCESS_DENIED: i32 = 5;
const ERROR_SERVICE_DOES_NOT_EXIST: i32 = 1060;

/// A windows-service error with the Windows error's own text and code ("Access is
/// denied. (os error 5)"); its `Display` says only "IO error in winapi call".
pub(super) fn win_error(e: &windows_service::Error) -> String {
    match e {
        windows_service::Error::Winapi(io) => io.to_string(),
        other => other.to_string(),
    }
}

/// Asks the service manager about one service, trying again briefly when a call fails
/// for another reason than the service's absence or a refusal: the first calls of two
/// threads at once sometimes fail under Wine, and a probe should not report a
/// passing hiccup as a broken host.
fn scm_query(name: &str) -> Result<ServiceAnswer, String> {
    let mut last = String::new();
    for attempt in 0..3 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(100));
        }
        match scm_query_once(name) {
            Err(Failure::Transient(e)) => last = e,
            Err(Failure::Final(e)) => return Err(e),
            Ok(answer) => return Ok(answer),
        }
    }
    Err(last)
}

enum Failure {
    Transient(String),
    Final(String),
}

fn scm_query_once(name: &str) -> Result<ServiceAnswer, Failure> {
    use windows_service::service::{self, ServiceAccess, ServiceStartType};
    use windows_service::service_manager::{ServiceManager as Manager, ServiceManagerAccess};
    let os_code = |e: &windows_service::Error| match e {
        windows_service::Error::Winapi(io) => io.raw_os_error(),
        _ => None,
    };
    let manager =
        Manager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT).map_err(|e| {
            Failure::Transient(format!(
                "cannot connect to the service control manager: {}",
                win_error(&e)
            ))
        })?;
    let svc = match manager.open_service(
        name,
        ServiceAccess::QUERY_STATUS | ServiceAccess::QUERY_CONFIG,
    ) {
        Ok(s) => s,
        Err(e) if os_code(&e) == Some(ERROR_SERVICE_DOES_NOT_EXIST) => {
            return Ok(ServiceAnswer::NotInstalled);
        }
        Err(e) if os_code(&e) == Some(ERROR_ACCESS_DENIED) => {
            return Err(Failure::Final(format!(
                "{} opening service {name}: run the collector as LocalSystem or an administrator",
                win_error(&e)
            )));
        }
        Err(e) => {
            return Err(Failure::Transient(format!(
                "cannot open service {name}: {}",
                win_error(&e)
            )));
        }
    };
    let status = svc.query_status().map_err(|e| {
        Failure::Transient(format!("cannot query service {name}: {}", win_error(&e)))
    })?;
    let config = svc.query_config().map_err(|e| {
        Failure::Transient(format!(
            "cannot read the configuration of service {name}: {}",
            win_error(&e)
        ))
    })?;
    let state = match status.current_state {
        service::ServiceState::Running => ServiceState::Running,
        service::ServiceState::StartPending | service::ServiceState::ContinuePending => {
            ServiceState::StartPending
        }
        service::ServiceState::StopPending => ServiceState::StopPending,
        service::ServiceState::Paused | service::ServiceState::PausePending => ServiceState::Paused,
        service::ServiceState::Stopped => ServiceState::Stopped,
    };
    let start_type = match config.start_type {
        ServiceStartType::AutoStart
        | ServiceStartType::SystemStart
        | ServiceStartType::BootStart => StartType::Automatic,
        ServiceStartType::OnDemand => StartType::Manual,
        ServiceStartType::Disabled => StartType::Disabled,
    };
    Ok(ServiceAnswer::Found(ServiceFacts {
        state,
        start_type,
        pid: status.process_id.filter(|p| *p != 0),
    }))
}

impl ServiceManager for Scm {
    fn source(&self) -> &'static str {
        "scm"
    }

    fn query(&self, name: &str) -> BoxFuture<'_, Result<ServiceAnswer, String>> {
        let name = name.to_string();
        Box::pin(blocking(move || scm_query(&name)))
    }
}

struct RegistryStores;

/// The registry folder of a system certificate store, and the hive it is in.
fn store_key(store: CertStoreKind) -> (RegKey, &'static str) {
    match store {
        CertStoreKind::LocalMachineMy => (
            RegKey::predef(HKEY_LOCAL_MACHINE),
            "SOFTWARE\\Microsoft\\SystemCertificates\\MY\\Certificates",
        ),
        // S-1-5-20 is the Network Service account; its hive is loaded while it runs
        // services, which is when the connector needs it.
        CertStoreKind::NetworkServiceMy => (
            RegKey::predef(HKEY_USERS),
            "S-1-5-20\\Software\\Microsoft\\SystemCertificates\\My\\Certificates",
        ),
    }
}

fn store_lookup(store: CertStoreKind, thumbprint: &str) -> Result<Vec<Vec<u8>>, String> {
    let (hive, path) = store_key(store);
    let certs = match hive.open_subkey_with_flags(path, KEY_READ) {
        Ok(k) => k,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(format!(
                "permission denied opening the {} store: run the collector as LocalSystem",
                store.label()
            ));
        }
        Err(e) => return Err(format!("cannot open the {} store: {e}", store.label())),
    };
    let blob_of = |key: &str| -> Option<Vec<u8>> {
        let k = certs.open_subkey_with_flags(key, KEY_READ).ok()?;
        let value = k.get_raw_value("Blob").ok()?;
        parse::cert_from_blob(&value.bytes.to_vec())
    };
    if !thumbprint.is_empty()
        && let Some(der) = blob_of(thumbprint)
    {
        return Ok(vec![der]);
    }
    Ok(certs
        .enum_keys()
        .filter_map(Result::ok)
        .take(1000)
        .filter_map(|k| blob_of(&k))
        .collect())
}

impl CertStore for RegistryStores {
    fn lookup(
        &self,
        store: CertStoreKind,
        thumbprint: &str,
    ) -> BoxFuture<'_, Result<Vec<Vec<u8>>, String>> {
        let thumbprint = thumbprint.to_string();
        Box::pin(blocking(move || store_lookup(store, &thumbprint)))
    }
}

struct WinHttp;

impl SystemProxy for WinHttp {
    fn system_proxy(&self) -> BoxFuture<'_, Result<SystemProxySetting, String>> {
        Box::pin(async move {
            let argv = ["netsh", "winhttp", "show", "proxy"].map(String::from);
            let out = command_output(&argv, Duration::from_secs(3)).await?;
            parse::winhttp_proxy(&out)
        })
    }
}

struct Wevtutil;

impl EventLog for Wevtutil {
    fn read_after(
        &self,
        channel: &str,
        after: Option<u64>,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<EventEntry>, String>> {
        let mut argv = vec![
            "wevtutil".to_string(),
            "qe".into(),
            channel.to_string(),
            "/f:RenderedXml".into(),
            "/e:Events".into(),
            format!("/c:{max}"),
        ];
        match after {
            Some(id) => argv.push(format!("/q:*[System[(EventRecordID>{id})]]")),
            None => argv.push("/rd:true".into()),
        }
        Box::pin(async move {
            let out = command_output(&argv, Duration::from_secs(5)).await?;
            parse::events_xml(&out)
        })
    }
}

struct UninstallEntries;

fn uninstall_entries() -> Result<Vec<InstalledProduct>, String> {
    let hklm = RegKey::predef(HKEY_LOCAL_MACHINE);
    let mut out = Vec::new();
    for path in [
        "SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall",
        "SOFTWARE\\WOW6432Node\\Microsoft\\Windows\\CurrentVersion\\Uninstall",
    ] {
        let Ok(root) = hklm.open_subkey_with_flags(path, KEY_READ) else {
            continue;
        };
        for key in root.enum_keys().filter_map(Result::ok).take(5000) {
            let Ok(k) = root.open_subkey_with_flags(&key, KEY_READ) else {
                continue;
            };
            let name: Result<String, _> = k.get_value("DisplayName");
            let version: Result<String, _> = k.get_value("DisplayVersion");
            if let (Ok(name), Ok(version)) = (name, version) {
                out.push(InstalledProduct { name, version });
            }
        }
    }
    Ok(out)
}

impl InstalledSoftware for UninstallEntries {
    fn products(&self) -> BoxFuture<'_, Result<Vec<InstalledProduct>, String>> {
        Box::pin(blocking(uninstall_entries))
    }
}
