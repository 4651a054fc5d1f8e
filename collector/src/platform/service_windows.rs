//! The collector under the Windows service control manager: registering, removing,
//! starting and stopping the service, and the service main that runs the collector
//! until the SCM says stop. The plan (command line, account) comes from
//! `crate::service`, which is tested on every platform.
//!
//! `define_windows_service!` generates the `extern "system"` entry point the SCM calls;
//! the one `unsafe` call in it (turning the SCM's raw argument array into strings) is
//! windows-service's own code, expanded from its macro, and our crate writes none.

use crate::config::Config;
use crate::service::{DESCRIPTION, DISPLAY_NAME, InstallPlan, SERVICE_NAME};
use anyhow::Context;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use windows_service::service::{
    ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
    ServiceErrorControl, ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod,
    ServiceInfo, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
use windows_service::{define_windows_service, service_dispatcher};

/// There is a service control manager here.
pub fn available() -> anyhow::Result<()> {
    Ok(())
}

/// Registers the service as `plan` says: automatic start, restarted by the SCM 5 s
/// after a failure (three times, the count reset after a day). A failure after the
/// service was created removes it again.
pub fn install(plan: &InstallPlan) -> anyhow::Result<()> {
    let manager = ServiceManager::local_computer(
        None::<&str>,
        ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE,
    )
    .context("cannot open the service control manager (run as an administrator)")?;
    let info = ServiceInfo {
        name: SERVICE_NAME.into(),
        display_name: DISPLAY_NAME.into(),
        service_type: ServiceType::OWN_PROCESS,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: plan.executable.clone(),
        launch_arguments: plan.arguments.clone(),
        dependencies: vec![],
        account_name: plan.account.as_ref().map(OsString::from),
        account_password: None,
    };
    crate::service::install_whole(
        || {
            manager
                .create_service(&info, ServiceAccess::CHANGE_CONFIG | ServiceAccess::DELETE)
                .with_context(|| {
                    format!("cannot create the service {SERVICE_NAME} (already installed? `service uninstall` first)")
                })
        },
        configure,
        |service| service.delete().context("cannot delete the service"),
    )?;
    // Registers the event source while this runs as an administrator; the service's
    // own account may write events of a registered source, not register one.
    write_event(
        "INFORMATION",
        &format!(
            "{SERVICE_NAME} installed; errors that stop it are logged here and in collector.log"
        ),
    );
    Ok(())
}

/// Sets what `install` sets beyond the command line: the description, and restart by
/// the SCM 5 s after a failure (three times, the count reset after a day), error exits
/// included.
fn configure(service: &windows_service::service::Service) -> anyhow::Result<()> {
    service
        .set_description(DESCRIPTION)
        .context("cannot set the service description")?;
    let restart = ServiceAction {
        action_type: ServiceActionType::Restart,
        delay: Duration::from_secs(5),
    };
    service
        .update_failure_actions(ServiceFailureActions {
            reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(86_400)),
            reboot_msg: None,
            command: None,
            actions: Some(vec![restart.clone(), restart.clone(), restart]),
        })
        .context("cannot set the restart-on-failure actions")?;
    // A service that exits with an error code (bad config) counts as a failure too.
    // Without it the service still runs and is restarted after a crash, so this one
    // is a warning (Wine, for one, does not know the setting).
    if let Err(e) = service.set_failure_actions_on_non_crash_failures(true) {
        eprintln!(
            "warning: the SCM will restart {SERVICE_NAME} after a crash but not after an error exit ({}); tick \"Enable actions for stops with errors\" on its Recovery tab in services.msc",
            super::windows::win_error(&e)
        );
    }
    Ok(())
}

/// Stops the service if it runs, then removes it.
pub fn uninstall() -> anyhow::Result<()> {
    let service = open(ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE)?;
    // Deletion is final once every handle closes; stop first so it goes at once.
    if service
        .query_status()
        .is_ok_and(|s| s.current_state != ServiceState::Stopped)
    {
        let _ = service.stop();
        wait_for(&service, ServiceState::Stopped)?;
    }
    service.delete().context("cannot delete the service")?;
    Ok(())
}

/// How long a started service must stay running before `start` believes it: a bad
/// config or certificate stops it within a second.
const STAY_RUNNING: Duration = Duration::from_secs(3);

/// Starts the service and waits until it runs and has stayed running for a few
/// seconds; a service that stops instead is an error naming its exit code and the last
/// error in its log.
pub fn start() -> anyhow::Result<()> {
    let service =
        open(ServiceAccess::QUERY_STATUS | ServiceAccess::START | ServiceAccess::QUERY_CONFIG)?;
    let log_dir = service
        .query_config()
        .map(|c| crate::service::log_dir_of(&c.executable_path.to_string_lossy()))
        .unwrap_or_else(|_| crate::service::DEFAULT_LOG_DIR.into());
    if let Err(e) = service.start::<&str>(&[]) {
        // A service that stops during its start makes StartService fail (1053 under
        // Wine); its exit code and log say why better than that error does. It may
        // still be on its way down when StartService gives up.
        for _ in 0..30 {
            match service.query_status() {
                Ok(status)
                    if status.current_state == ServiceState::Stopped
                        && status.exit_code != ServiceExitCode::Win32(0) =>
                {
                    return Err(stopped_error(&status, &log_dir));
                }
                Ok(status) if status.current_state == ServiceState::StopPending => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                _ => break,
            }
        }
        anyhow::bail!(
            "cannot start the service: {}",
            super::windows::win_error(&e)
        );
    }
    let mut running_since: Option<std::time::Instant> = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = service.query_status().context("cannot query the service")?;
        match status.current_state {
            ServiceState::Stopped => return Err(stopped_error(&status, &log_dir)),
            ServiceState::Running => {
                let since = *running_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() >= STAY_RUNNING {
                    return Ok(());
                }
            }
            _ => {}
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!(
                "the service did not start within 30 s; see {}",
                log_dir.join("collector.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn stopped_error(status: &ServiceStatus, log_dir: &std::path::Path) -> anyhow::Error {
    let (win32, specific) = match status.exit_code {
        ServiceExitCode::Win32(c) => (c, 0),
        ServiceExitCode::ServiceSpecific(c) => (1066, c),
    };
    let log = log_dir.join("collector.log");
    let why = std::fs::read_to_string(&log)
        .ok()
        .and_then(|text| crate::service::last_error(&text))
        .unwrap_or_else(|| "it logged no error".into());
    anyhow::anyhow!(
        "{SERVICE_NAME} stopped right after starting ({}): {why}; see {}",
        crate::service::exit_meaning(win32, specific),
        log.display()
    )
}

/// Stops the service and waits until it has stopped.
pub fn stop() -> anyhow::Result<()> {
    let service = open(ServiceAccess::QUERY_STATUS | ServiceAccess::STOP)?;
    service.stop().context("cannot stop the service")?;
    wait_for(&service, ServiceState::Stopped)
}

fn open(access: ServiceAccess) -> anyhow::Result<windows_service::service::Service> {
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
        .context("cannot open the service control manager")?;
    manager.open_service(SERVICE_NAME, access).with_context(|| {
        format!("cannot open the service {SERVICE_NAME} (is it installed? run as an administrator)")
    })
}

fn wait_for(
    service: &windows_service::service::Service,
    state: ServiceState,
) -> anyhow::Result<()> {
    // The drain grace plus start-up: the collector stops within about 6 s.
    for _ in 0..300 {
        if service
            .query_status()
            .context("cannot query the service")?
            .current_state
            == state
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!("the service did not reach {state:?} within 30 s; see collector.log")
}

/// The config file handed from `main` to the service main, which the SCM calls on its
/// own thread with no way to pass data.
static CONFIG: Mutex<Option<PathBuf>> = Mutex::new(None);

define_windows_service!(ffi_service_main, service_main);

/// Connects to the SCM and runs the collector as the service until it is stopped.
/// Blocks; returns once the service has stopped. The config is loaded inside the
/// service, so that a broken one is reported to the SCM as the service's exit code
/// (and logged), not lost on a console nobody sees.
pub fn run(config: PathBuf) -> anyhow::Result<()> {
    *CONFIG.lock().unwrap_or_else(|e| e.into_inner()) = Some(config);
    service_dispatcher::start(SERVICE_NAME, ffi_service_main).context(
        "cannot reach the service control manager; `service run` is for the SCM only: use `run` in a console",
    )
}

fn service_main(_arguments: Vec<OsString>) {
    if let Err(e) = service_body() {
        let message = format!("{e:#}");
        tracing::error!(error = %message, "the service failed");
        report_to_event_log(&message);
    }
}

/// Writes the error to the Application event log too, where operators look first.
fn report_to_event_log(message: &str) {
    write_event("ERROR", &format!("{SERVICE_NAME}: {message}"));
}

/// Writes one Application event of source `connwatch-collector`.
fn write_event(kind: &str, message: &str) {
    let argv = crate::service::event_log_command(kind, message);
    let written = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    if !written.as_ref().is_ok_and(|s| s.success()) {
        tracing::warn!(
            ?written,
            "cannot write to the Application event log with eventcreate"
        );
    }
}

fn service_body() -> anyhow::Result<()> {
    let path = CONFIG
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .context("the service started twice in one process")?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let handle = service_control_handler::register(SERVICE_NAME, move |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown | ServiceControl::Preshutdown => {
            tracing::info!(?control, "stopping");
            stop.cancel();
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    })
    .context("cannot register the service control handler")?;
    let status = |state, accept, exit_code, wait_hint| ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state: state,
        controls_accepted: accept,
        exit_code,
        checkpoint: 0,
        wait_hint,
        process_id: None,
    };
    let stopped = |code: u32| {
        let exit_code = if code == 0 {
            ServiceExitCode::Win32(0)
        } else {
            ServiceExitCode::ServiceSpecific(code)
        };
        handle.set_service_status(status(
            ServiceState::Stopped,
            ServiceControlAccept::empty(),
            exit_code,
            Duration::ZERO,
        ))
    };
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            let e = anyhow::Error::new(e).context("cannot start: the config is not usable");
            // Logged before the SCM is told, so `service start` finds it in the log.
            tracing::error!(error = %format!("{e:#}"), "the service failed");
            report_to_event_log(&format!("{e:#}"));
            stopped(crate::service::EXIT_START_FAILED)?;
            return Ok(());
        }
    };
    tracing::info!(config = %path.display(), "service starting");
    handle.set_service_status(status(
        ServiceState::Running,
        ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN,
        ServiceExitCode::Win32(0),
        Duration::ZERO,
    ))?;
    // One thread, as for `run` from a console (see main.rs).
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|runtime| runtime.block_on(crate::run(config, shutdown)));
    if let Err(e) = &result {
        tracing::error!(error = %format!("{e:#}"), "the service failed");
    }
    stopped(if result.is_ok() {
        0
    } else {
        crate::service::EXIT_FAILED
    })?;
    result
}
