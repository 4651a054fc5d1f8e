//! Service probe: is the connector (or updater) service installed, in what state, with
//! what start type, and how long has its process run with how much memory? Asks the
//! platform's service manager (the SCM on Windows, systemd where it runs); where there
//! is none, or a process name or pid file is configured, the service is a process.

use super::host::HostProbe;
use super::{Observation, Probe, blocking, failed};
use crate::config::ServiceConfig;
use crate::platform::{ServiceAnswer, ServiceManager};
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
    manager: Arc<dyn ServiceManager>,
}

impl ServiceProbe {
    /// A probe for one configured service, sharing the host's process snapshot.
    pub fn new(
        config: ServiceConfig,
        host: Arc<HostProbe>,
        manager: Arc<dyn ServiceManager>,
    ) -> Self {
        ServiceProbe {
            config,
            host,
            manager,
        }
    }

    async fn status(&self) -> Observation {
        let c = &self.config;
        let by_process = c.pid_file.is_some() || c.process.is_some();
        if !by_process {
            let name = c.unit.as_deref().unwrap_or(&c.name);
            let mut status = ServiceStatus {
                name: c.name.clone(),
                role: c.role as i32,
                source: self.manager.source().into(),
                ..Default::default()
            };
            match self.manager.query(name).await {
                Err(reason) => return failed(self.name(), reason),
                Ok(ServiceAnswer::NotInstalled) => {
                    status.state = ServiceState::NotInstalled as i32;
                    status.start_type = StartType::Unspecified as i32;
                    return Observation::Service(status);
                }
                Ok(ServiceAnswer::Found(facts)) => {
                    status.state = facts.state as i32;
                    status.start_type = facts.start_type as i32;
                    if let Some(pid) = facts.pid {
                        status.pid = pid;
                        let host = self.host.clone();
                        let found = tokio::task::spawn_blocking(move || {
                            process_facts(&mut host.system(), Pid::from_u32(pid))
                        })
                        .await
                        .ok()
                        .flatten();
                        if let Some((uptime, memory)) = found {
                            status.uptime_s = uptime;
                            status.memory_bytes = memory;
                        }
                    }
                    return Observation::Service(status);
                }
                Ok(ServiceAnswer::NoManager) => {}
            }
        }
        let config = c.clone();
        let host = self.host.clone();
        let name = self.name();
        blocking(name.clone(), move || {
            match status_of(&config, &mut host.system()) {
                Ok(s) => Observation::Service(s),
                Err(reason) => failed(name, reason),
            }
        })
        .await
    }
}

/// Uptime (s) and memory (bytes) of a process.
fn process_facts(sys: &mut System, pid: Pid) -> Option<(u64, u64)> {
    sys.refresh_processes(ProcessesToUpdate::Some(&[pid]), true);
    sys.process(pid).map(|p| (p.run_time(), p.memory()))
}

/// Linux truncates process names to 15 bytes, so also match on the executable's name.
fn matches(p: &Process, wanted: &str) -> bool {
    p.name() == OsStr::new(wanted)
        || p.exe()
            .and_then(|e| e.file_name())
            .is_some_and(|n| n == OsStr::new(wanted))
}

/// How much later than its pid file a process may seem to have started: process start
/// times are counted from a boot time known to the second, file times are not.
const START_SLACK_S: u64 = 5;

/// Whether `p`, found under the pid a pid file names, is the service that wrote it.
/// After a crash the file stays behind and its pid can be handed to any later process;
/// reading that one as the service would report a dead service as running. So the
/// process must carry the configured name, when one is given, and must not have
/// started after the file was written (`written`, seconds since the Unix epoch).
fn wrote_pid_file(p: &Process, wanted: Option<&str>, written: Option<u64>) -> bool {
    if let Some(wanted) = wanted
        && !matches(p, wanted)
    {
        tracing::debug!(pid = %p.pid(), name = ?p.name(), wanted, "the pid file names another process");
        return false;
    }
    if let Some(written) = written
        && p.start_time() > written.saturating_add(START_SLACK_S)
    {
        tracing::debug!(pid = %p.pid(), started = p.start_time(), written, "the process started after its pid file was written");
        return false;
    }
    true
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
            // When the file was written, if the file system says: a process started
            // after that cannot have written it.
            let written = std::fs::metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs());
            sys.refresh_processes(ProcessesToUpdate::Some(&[pid]), true);
            sys.process(pid)
                .filter(|p| wrote_pid_file(p, config.process.as_deref(), written))
                .map(|p| (pid, p.run_time(), p.memory()))
        }
        None => {
            let wanted = config.process.as_deref().unwrap_or(&config.name);
            sys.refresh_processes(ProcessesToUpdate::All, true);
            sys.processes()
                .values()
                .find(|p| matches(p, wanted))
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
        Duration::from_secs(3)
    }

    fn run(&self) -> BoxFuture<'_, Observation> {
        Box::pin(self.status())
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
            process: Some(process.into()),
            pid_file,
            unit: None,
        }
    }

    /// A `sleep` child and a folder whose `svc.pid` names it.
    fn sleeping_child_with_pid_file() -> (std::process::Child, tempfile::TempDir) {
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("svc.pid"), child.id().to_string()).expect("write");
        (child, dir)
    }

    #[test]
    fn a_running_child_is_found_and_a_killed_one_is_not() {
        let (mut child, dir) = sleeping_child_with_pid_file();
        let pid_file = dir.path().join("svc.pid");
        let mut sys = System::new();
        let by_pid = status_of(&config("sleep", Some(pid_file.clone())), &mut sys).expect("status");
        assert_eq!(by_pid.state, ServiceState::Running as i32);
        assert_eq!(by_pid.pid, child.id());
        let by_name = status_of(&config("sleep", None), &mut sys).expect("status");
        assert_eq!(by_name.state, ServiceState::Running as i32);
        child.kill().expect("kill");
        child.wait().expect("wait");
        let gone = status_of(&config("sleep", Some(pid_file)), &mut sys).expect("status");
        assert_eq!(gone.state, ServiceState::Stopped as i32);
        let never = status_of(&config("no-such-process-xyz", None), &mut sys).expect("status");
        assert_eq!(never.state, ServiceState::Stopped as i32);
    }

    #[test]
    fn a_stale_pid_file_naming_another_process_is_not_running() {
        let (mut child, dir) = sleeping_child_with_pid_file();
        let pid_file = dir.path().join("svc.pid");
        let mut sys = System::new();
        // The pid is alive, but it is `sleep`, not the service.
        let other = status_of(&config("WAPCSvc", Some(pid_file.clone())), &mut sys);
        assert_eq!(
            other.expect("status").state,
            ServiceState::Stopped as i32,
            "a pid reused by another program is not the service"
        );
        // No name to compare: the process started an hour after the file was written.
        let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&pid_file)
            .and_then(|f| f.set_modified(hour_ago))
            .expect("set mtime");
        let no_name = ServiceConfig {
            process: None,
            ..config("x", Some(pid_file))
        };
        let later = status_of(&no_name, &mut sys).expect("status");
        assert_eq!(later.state, ServiceState::Stopped as i32);
        child.kill().expect("kill");
        child.wait().expect("wait");
    }

    /// A service manager that answers from a table, as the SCM or systemd would.
    struct Fake(Vec<(&'static str, ServiceAnswer)>);

    impl ServiceManager for Fake {
        fn source(&self) -> &'static str {
            "scm"
        }
        fn query(&self, name: &str) -> BoxFuture<'_, Result<ServiceAnswer, String>> {
            let answer = self
                .0
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, a)| a.clone())
                .ok_or_else(|| format!("access denied opening service {name}"));
            Box::pin(async move { answer })
        }
    }

    #[tokio::test]
    async fn the_service_manager_answer_is_reported_with_its_source() {
        use crate::platform::ServiceFacts;
        let me = std::process::id();
        let fake = Arc::new(Fake(vec![
            (
                "WAPCSvc",
                ServiceAnswer::Found(ServiceFacts {
                    state: ServiceState::Running,
                    start_type: StartType::Automatic,
                    pid: Some(me),
                }),
            ),
            (
                "WAPCUpdaterSvc",
                ServiceAnswer::Found(ServiceFacts {
                    state: ServiceState::Stopped,
                    start_type: StartType::Disabled,
                    pid: None,
                }),
            ),
            ("Gone", ServiceAnswer::NotInstalled),
            ("NoScm", ServiceAnswer::NoManager),
        ]));
        let host = Arc::new(HostProbe::new(None));
        let probe = |name: &str, role| {
            ServiceProbe::new(
                ServiceConfig {
                    name: name.into(),
                    role,
                    process: None,
                    pid_file: None,
                    unit: None,
                },
                host.clone(),
                fake.clone(),
            )
        };
        let Observation::Service(running) = probe("WAPCSvc", ServiceRole::Connector).status().await
        else {
            panic!("no service status");
        };
        assert_eq!(running.state, ServiceState::Running as i32);
        assert_eq!(running.start_type, StartType::Automatic as i32);
        assert_eq!((running.pid, running.source.as_str()), (me, "scm"));
        assert!(
            running.memory_bytes > 0,
            "memory of this test process: {running:?}"
        );
        let Observation::Service(disabled) =
            probe("WAPCUpdaterSvc", ServiceRole::Updater).status().await
        else {
            panic!("no service status");
        };
        assert_eq!(disabled.start_type, StartType::Disabled as i32);
        assert_eq!(disabled.state, ServiceState::Stopped as i32);
        let Observation::Service(gone) = probe("Gone", ServiceRole::Connector).status().await
        else {
            panic!("no service status");
        };
        assert_eq!(gone.state, ServiceState::NotInstalled as i32);
        let Observation::Service(fallback) = probe("NoScm", ServiceRole::Other).status().await
        else {
            panic!("no service status");
        };
        assert_eq!(
            (fallback.source.as_str(), fallback.state),
            ("process", ServiceState::Stopped as i32)
        );
        let Observation::Failed(err) = probe("Denied", ServiceRole::Other).status().await else {
            panic!("a manager error is a probe error");
        };
        assert!(err.reason.contains("access denied"), "{err:?}");
    }
}
