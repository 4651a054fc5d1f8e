//! Host probe: hostname, OS, uptime, CPU and memory, as context for the other facts.
//! It keeps one `sysinfo::System` between cycles so CPU usage has a previous sample to
//! compare with, and the service probe borrows it to look up processes.

use super::{Observation, Probe, blocking};
use connwatch_shared::wire::HostInfo;
use futures::future::BoxFuture;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use sysinfo::System;

/// Reports host facts and owns the shared `System` snapshot.
pub struct HostProbe {
    system: Arc<Mutex<System>>,
}

impl HostProbe {
    /// A host probe; `enabled` only decides whether it is scheduled.
    pub fn new(_enabled: bool) -> Self {
        HostProbe {
            system: Arc::new(Mutex::new(System::new())),
        }
    }

    /// Locks the shared snapshot, recovering it if a previous holder panicked.
    pub fn system(&self) -> MutexGuard<'_, System> {
        self.system.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn measure(system: &Mutex<System>) -> HostInfo {
        let mut sys = system.lock().unwrap_or_else(|p| p.into_inner());
        sys.refresh_memory();
        sys.refresh_cpu_usage();
        HostInfo {
            hostname: System::host_name().unwrap_or_default(),
            os_name: System::name().unwrap_or_default(),
            os_version: System::os_version().unwrap_or_default(),
            uptime_s: System::uptime(),
            cpu_percent: sys.global_cpu_usage(),
            memory_total_bytes: sys.total_memory(),
            memory_used_bytes: sys.used_memory(),
            ..Default::default()
        }
    }
}

impl Probe for HostProbe {
    fn name(&self) -> String {
        "host".into()
    }

    fn deadline(&self) -> Duration {
        Duration::from_secs(2)
    }

    fn run(&self) -> BoxFuture<'_, Observation> {
        let system = self.system.clone();
        Box::pin(blocking(self.name(), move || {
            Observation::Host(HostProbe::measure(&system))
        }))
    }
}
