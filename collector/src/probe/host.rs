//! Host probe: hostname, OS, uptime, CPU, memory and disk, as context for the other facts.
//! It keeps one `sysinfo::System` between cycles so CPU usage has a previous sample to
//! compare with, and the service probe borrows it to look up processes.

use super::{Observation, Probe, blocking};
use connwatch_shared::wire::HostInfo;
use futures::future::BoxFuture;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use sysinfo::{Disks, System};

/// Reports host facts and owns the shared `System` snapshot.
pub struct HostProbe {
    system: Arc<Mutex<System>>,
    disk: PathBuf,
}

impl HostProbe {
    /// A host probe reporting the disk that holds `disk` (default: the system disk).
    pub fn new(disk: Option<PathBuf>) -> Self {
        let default = if cfg!(windows) { "C:\\" } else { "/" };
        HostProbe {
            system: Arc::new(Mutex::new(System::new())),
            disk: disk.unwrap_or_else(|| PathBuf::from(default)),
        }
    }

    /// Locks the shared snapshot, recovering it if a previous holder panicked.
    pub fn system(&self) -> MutexGuard<'_, System> {
        self.system.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn measure(system: &Mutex<System>, disk: &Path) -> HostInfo {
        let (disk_total_bytes, disk_free_bytes) = disk_space(disk);
        let mut sys = system.lock().unwrap_or_else(|p| p.into_inner());
        sys.refresh_memory();
        sys.refresh_cpu_usage();
        HostInfo {
            disk_total_bytes,
            disk_free_bytes,
            hostname: System::host_name().unwrap_or_default(),
            os_name: System::name().unwrap_or_default(),
            os_version: System::os_version().unwrap_or_default(),
            uptime_s: System::uptime(),
            cpu_percent: sys.global_cpu_usage(),
            memory_total_bytes: sys.total_memory(),
            memory_used_bytes: sys.used_memory(),
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
        let disk = self.disk.clone();
        Box::pin(blocking(self.name(), move || {
            Observation::Host(HostProbe::measure(&system, &disk))
        }))
    }
}

/// Total and available bytes of the mounted disk holding `path`: the one with the
/// longest mount point that is a prefix of it. Zero when none is found.
fn disk_space(path: &Path) -> (u64, u64) {
    let disks = Disks::new_with_refreshed_list();
    disks
        .list()
        .iter()
        .filter(|d| path.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len())
        .map(|d| (d.total_space(), d.available_space()))
        .unwrap_or((0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_facts_include_the_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let info = HostProbe::measure(&Mutex::new(System::new()), dir.path());
        assert!(info.disk_total_bytes > 0, "{info:?}");
        assert!(info.disk_free_bytes <= info.disk_total_bytes);
        assert!(info.memory_total_bytes > 0 && !info.hostname.is_empty());
    }
}
