//! Off Windows there is no service control manager: the `service` commands say to use
//! the systemd unit instead.

use crate::service::InstallPlan;
use std::path::PathBuf;

const USE_SYSTEMD: &str = "the `service` commands manage the Windows service; on Linux install deploy/linux/connwatch-collector.service (deploy/linux/install.sh collector) and use systemctl";

/// Refuses: there is no SCM here.
pub fn available() -> anyhow::Result<()> {
    anyhow::bail!(USE_SYSTEMD)
}

/// Refuses: there is no SCM here.
pub fn install(_plan: &InstallPlan) -> anyhow::Result<()> {
    anyhow::bail!(USE_SYSTEMD)
}

/// Refuses: there is no SCM here.
pub fn uninstall() -> anyhow::Result<()> {
    anyhow::bail!(USE_SYSTEMD)
}

/// Refuses: there is no SCM here.
pub fn start() -> anyhow::Result<()> {
    anyhow::bail!(USE_SYSTEMD)
}

/// Refuses: there is no SCM here.
pub fn stop() -> anyhow::Result<()> {
    anyhow::bail!(USE_SYSTEMD)
}

/// Refuses: there is no SCM here.
pub fn run(_config: PathBuf) -> anyhow::Result<()> {
    anyhow::bail!(USE_SYSTEMD)
}
