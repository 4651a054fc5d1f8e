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
/// after a failure (three times, the count reset after a day).
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
    let service = manager
        .create_service(&info, ServiceAccess::CHANGE_CONFIG)
        .with_context(|| {
            format!("cannot create the service {SERVICE_NAME} (already installed? `service uninstall` first)")
        })?;
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
    service
        .set_failure_actions_on_non_crash_failures(true)
        .context("cannot enable restart after an error exit")?;
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

/// Starts the service and waits until it runs.
pub fn start() -> anyhow::Result<()> {
    let service = open(ServiceAccess::QUERY_STATUS | ServiceAccess::START)?;
    service
        .start::<&str>(&[])
        .context("cannot start the service; see collector.log in its log folder")?;
    wait_for(&service, ServiceState::Running)
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

/// The config handed from `main` to the service main, which the SCM calls on its own
/// thread with no way to pass data.
static CONFIG: Mutex<Option<Config>> = Mutex::new(None);

define_windows_service!(ffi_service_main, service_main);

/// Connects to the SCM and runs the collector as the service until it is stopped.
/// Blocks; returns once the service has stopped.
pub fn run(config: Config) -> anyhow::Result<()> {
    *CONFIG.lock().unwrap_or_else(|e| e.into_inner()) = Some(config);
    service_dispatcher::start(SERVICE_NAME, ffi_service_main).context(
        "cannot reach the service control manager; `service run` is for the SCM only: use `run` in a console",
    )
}

fn service_main(_arguments: Vec<OsString>) {
    if let Err(e) = service_body() {
        tracing::error!(error = %format!("{e:#}"), "the service failed");
    }
}

fn service_body() -> anyhow::Result<()> {
    let config = CONFIG
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
    let exit_code = match &result {
        Ok(()) => ServiceExitCode::Win32(0),
        Err(_) => ServiceExitCode::ServiceSpecific(3),
    };
    handle.set_service_status(status(
        ServiceState::Stopped,
        ServiceControlAccept::empty(),
        exit_code,
        Duration::ZERO,
    ))?;
    result
}
