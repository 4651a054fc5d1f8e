//! Service probe: is the connector (or updater) service installed and running? Where
//! there is no Windows service manager, the service is a process found by name or by
//! pid file.

use super::host::HostProbe;
use super::{Observation, Probe, blocking};
use crate::config::ServiceConfig;
use connwatch_shared::wire::{ServiceState, ServiceStatus, StartType};
use futures::future::BoxFuture;
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;
use sysinfo::{Pid, Process, ProcessesToUpdate, System};

/// Checks one service.
pub struct ServiceProbe {
    config: ServiceConfig,
    host: Arc<HostProbe>,
}

impl ServiceProbe {
    /// A probe for one configured service, sharing the host's process snapshot.
    pub fn new(config: ServiceConfig, host: Arc<HostProbe>) -> Self {
        ServiceProbe { config, host }
    }
}

/// Linux truncates process names to 15 bytes, so also match on the executable's name.
fn matches(p: &Process, wanted: &str) -> bool {
    p.name() == OsStr::new(wanted)
        || p.exe()
            .and_then(|e| e.file_name())
            .is_some_and(|n| n == OsStr::new(wanted))
}

fn status_of(config: &ServiceConfig, sys: &mut System) -> Result<ServiceStatus, String> {
    let mut status = ServiceStatus {
        name: config.name.clone(),
        role: config.role as i32,
        start_type: StartType::Unspecified as i32,
        source: "process".into(),
        ..Default::default()
    };
    let found = match &config.pid_file {
        Some(path) => {
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    status.state = ServiceState::Stopped as i32;
                    return Ok(status);
                }
                Err(e) => {
                    return Err(format!(
                        "cannot read pid file {}: {e}; give the collector read access to it",
                        path.display()
                    ));
                }
            };
            let pid: u32 = text
                .trim()
                .parse()
                .map_err(|_| format!("pid file {} does not hold a process id", path.display()))?;
            let pid = Pid::from_u32(pid);
            sys.refresh_processes(ProcessesToUpdate::Some(&[pid]), true);
            sys.process(pid)
                .map(|p| (p.pid(), p.run_time(), p.memory()))
        }
        None => {
            sys.refresh_processes(ProcessesToUpdate::All, true);
            sys.processes()
                .values()
                .find(|p| matches(p, &config.process))
                .map(|p| (p.pid(), p.run_time(), p.memory()))
        }
    };
    match found {
        Some((pid, uptime, memory)) => {
            status.state = ServiceState::Running as i32;
            status.pid = pid.as_u32();
            status.uptime_s = uptime;
            status.memory_bytes = memory;
        }
        None => status.state = ServiceState::Stopped as i32,
    }
    Ok(status)
}

impl Probe for ServiceProbe {
    fn name(&self) -> String {
        format!("service:{}", self.config.name)
    }

    fn deadline(&self) -> Duration {
        Duration::from_secs(2)
    }

    fn run(&self) -> BoxFuture<'_, Observation> {
        let config = self.config.clone();
        let host = self.host.clone();
        let name = self.name();
        Box::pin(blocking(name.clone(), move || {
            let mut sys = host.system();
            match status_of(&config, &mut sys) {
                Ok(s) => Observation::Service(s),
                Err(reason) => Observation::Failed(connwatch_shared::wire::ProbeError {
                    probe: name,
                    reason,
                }),
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connwatch_shared::wire::ServiceRole;

    fn config(process: &str, pid_file: Option<std::path::PathBuf>) -> ServiceConfig {
        ServiceConfig {
            name: "WAPCSvc".into(),
            role: ServiceRole::Connector,
            process: process.into(),
            pid_file,
        }
    }

    #[test]
    fn a_running_child_is_found_and_a_killed_one_is_not() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let dir = tempfile::tempdir().expect("tempdir");
        let pid_file = dir.path().join("svc.pid");
        std::fs::write(&pid_file, child.id().to_string()).expect("write");
        let mut sys = System::new();
        let by_pid = status_of(&config("x", Some(pid_file.clone())), &mut sys).expect("status");
        assert_eq!(by_pid.state, ServiceState::Running as i32);
        assert_eq!(by_pid.pid, child.id());
        let by_name = status_of(&config("sleep", None), &mut sys).expect("status");
        assert_eq!(by_name.state, ServiceState::Running as i32);
        child.kill().expect("kill");
        child.wait().expect("wait");
        let gone = status_of(&config("x", Some(pid_file)), &mut sys).expect("status");
        assert_eq!(gone.state, ServiceState::Stopped as i32);
        let never = status_of(&config("no-such-process-xyz", None), &mut sys).expect("status");
        assert_eq!(never.state, ServiceState::Stopped as i32);
    }
}
