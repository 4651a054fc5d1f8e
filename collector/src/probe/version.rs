//! Version probe: the connector's and the updater's versions, from the record of
//! installed software on Windows, or from a file or a command's output matched by a
//! pattern elsewhere. A connector that lags its group points at a broken updater.

use super::{Observation, Probe, failed};
use crate::config::{VersionConfig, VersionSource};
use crate::layout::Layout;
use crate::platform::{InstalledProduct, InstalledSoftware, command_output, parse};
use connwatch_shared::wire::{ServiceRole, VersionInfo};
use futures::future::BoxFuture;
use regex::Regex;
use std::sync::Arc;
use std::time::Duration;

/// The most of a version file that is read.
const MAX_FILE: u64 = 64 << 10;

/// Finds the connector's and updater's versions.
pub struct VersionProbe {
    config: VersionConfig,
    installed: Arc<dyn InstalledSoftware>,
}

impl VersionProbe {
    /// A version probe for the configured sources.
    pub fn new(config: VersionConfig, installed: Arc<dyn InstalledSoftware>) -> Self {
        VersionProbe { config, installed }
    }

    async fn read(&self) -> Observation {
        let mut info = VersionInfo::default();
        let mut out = Vec::new();
        let mut products: Option<Result<Vec<InstalledProduct>, String>> = None;
        for (source, role, label) in [
            (&self.config.connector, ServiceRole::Connector, "connector"),
            (&self.config.updater, ServiceRole::Updater, "updater"),
        ] {
            let Some(source) = source else { continue };
            let found = match source {
                VersionSource::File { path, pattern } => match read_bounded(path).await {
                    Ok(text) => first_match(pattern, &text).ok_or_else(|| {
                        format!("{} has no match for `{}`", path.display(), pattern.as_str())
                    }),
                    Err(e) => Err(e),
                },
                VersionSource::Command { argv, pattern } => {
                    match command_output(argv, Duration::from_secs(3)).await {
                        Ok(text) => first_match(pattern, &text).ok_or_else(|| {
                            format!(
                                "the output of `{}` has no match for `{}`",
                                argv.join(" "),
                                pattern.as_str()
                            )
                        }),
                        Err(e) => Err(e),
                    }
                }
                VersionSource::Installed => {
                    if products.is_none() {
                        products = Some(self.installed.products().await);
                    }
                    if let Some(Ok(list)) = products.as_ref()
                        && let Some(layout) = Layout::of_products(list)
                    {
                        info.layout = layout.id().into();
                    }
                    match products.as_ref() {
                        Some(Ok(list)) => parse::pick_version(list, role).ok_or_else(|| {
                            format!("no installed {label} is recorded on this host")
                        }),
                        Some(Err(e)) => Err(e.clone()),
                        None => Err("the installed-software record was not read".into()),
                    }
                }
            };
            match found {
                Ok(v) if role == ServiceRole::Connector => info.connector_version = v,
                Ok(v) => info.updater_version = v,
                Err(reason) => out.push(failed(format!("version:{label}"), reason)),
            }
        }
        out.insert(0, Observation::Version(info));
        Observation::Many(out)
    }
}

async fn read_bounded(path: &std::path::Path) -> Result<String, String> {
    use tokio::io::AsyncReadExt;
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::PermissionDenied => format!(
                "permission denied reading {}: run the collector as an account that can read it",
                path.display()
            ),
            _ => format!("cannot read {}: {e}", path.display()),
        })?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(super::cert::decode_text(&bytes))
}

/// The first capture group of the first match (the whole match without groups).
pub fn first_match(pattern: &Regex, text: &str) -> Option<String> {
    let caps = pattern.captures(text)?;
    caps.get(1)
        .or_else(|| caps.get(0))
        .map(|m| m.as_str().trim().to_string())
        .filter(|v| !v.is_empty())
}

impl Probe for VersionProbe {
    fn name(&self) -> String {
        "version".into()
    }

    fn deadline(&self) -> Duration {
        Duration::from_secs(4)
    }

    fn run(&self) -> BoxFuture<'_, Observation> {
        Box::pin(self.read())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_VERSION_PATTERN;
    use connwatch_shared::wire::Report;

    struct Products(Vec<InstalledProduct>);

    impl InstalledSoftware for Products {
        fn products(&self) -> BoxFuture<'_, Result<Vec<InstalledProduct>, String>> {
            let list = self.0.clone();
            Box::pin(async move { Ok(list) })
        }
    }

    #[tokio::test]
    async fn versions_come_from_files_commands_and_the_installed_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("VERSION");
        std::fs::write(&file, "Connector build\nProductVersion: 1.5.3437.0\n").expect("write");
        let pattern = Regex::new(DEFAULT_VERSION_PATTERN).expect("regex");
        let probe = VersionProbe::new(
            VersionConfig {
                connector: Some(VersionSource::File {
                    path: file,
                    pattern: pattern.clone(),
                }),
                updater: Some(VersionSource::Command {
                    argv: vec!["echo".into(), "updater v1.5.1975.0 (x64)".into()],
                    pattern,
                }),
            },
            Arc::new(Products(Vec::new())),
        );
        let mut report = Report::default();
        probe.read().await.apply(&mut report);
        let v = report.version.expect("version");
        assert_eq!(v.connector_version, "1.5.3437.0");
        assert_eq!(v.updater_version, "1.5.1975.0");
        assert!(report.probe_errors.is_empty(), "{:?}", report.probe_errors);

        let installed = VersionProbe::new(
            VersionConfig {
                connector: Some(VersionSource::Installed),
                updater: Some(VersionSource::Installed),
            },
            Arc::new(Products(vec![InstalledProduct {
                name: "Microsoft AAD Application Proxy Connector".into(),
                version: "1.5.2482.0".into(),
            }])),
        );
        let mut report = Report::default();
        installed.read().await.apply(&mut report);
        let v = report.version.expect("version");
        assert_eq!(
            (v.connector_version.as_str(), v.updater_version.as_str()),
            ("1.5.2482.0", "")
        );
        assert_eq!(report.probe_errors.len(), 1);
        assert_eq!(report.probe_errors[0].probe, "version:updater");
    }
}
