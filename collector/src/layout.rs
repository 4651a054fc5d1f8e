//! The connector's two install layouts on Windows. Version 1.5.3829.0 (April 2024)
//! renamed the "Microsoft AAD Application Proxy Connector" to the "Microsoft Entra
//! private network connector", and with it the program and data folders, the services'
//! `.exe.config` files and the event channel (Microsoft's connector release notes list
//! every renamed path). The service names (`WAPCSvc`, `WAPCUpdaterSvc`) stayed. A host
//! has one layout or the other, and the uninstall entry's display name says which.

use crate::platform::InstalledProduct;
use std::path::{Path, PathBuf};

/// Which of the connector's install layouts a host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// "Microsoft AAD Application Proxy Connector", before 1.5.3829.0.
    AppProxy,
    /// "Microsoft Entra private network connector", 1.5.3829.0 and later.
    PrivateNetwork,
}

impl Layout {
    /// Both layouts, the current one first.
    pub const ALL: [Layout; 2] = [Layout::PrivateNetwork, Layout::AppProxy];

    /// The short name reported in `VersionInfo.layout`.
    pub fn id(self) -> &'static str {
        match self {
            Layout::AppProxy => "app-proxy",
            Layout::PrivateNetwork => "private-network",
        }
    }

    /// The layout's name in the connector's own words.
    pub fn product(self) -> &'static str {
        match self {
            Layout::AppProxy => "Microsoft AAD Application Proxy Connector",
            Layout::PrivateNetwork => "Microsoft Entra private network connector",
        }
    }

    /// The data folder under `%ProgramData%`, which holds `Config\TrustSettings.xml`.
    fn data_folder(self) -> &'static str {
        match self {
            Layout::AppProxy => "Microsoft\\Microsoft AAD Application Proxy Connector",
            Layout::PrivateNetwork => "Microsoft\\Microsoft Entra private network connector",
        }
    }

    /// The connector's and the updater's `.exe.config`, under `%ProgramFiles%`.
    fn service_configs(self) -> [&'static str; 2] {
        match self {
            Layout::AppProxy => [
                "Microsoft AAD App Proxy Connector\\ApplicationProxyConnectorService.exe.config",
                "Microsoft AAD App Proxy Connector Updater\\ApplicationProxyConnectorUpdaterService.exe.config",
            ],
            Layout::PrivateNetwork => [
                "Microsoft Entra private network connector\\MicrosoftEntraPrivateNetworkConnectorService.exe.config",
                "Microsoft Entra private network connector Updater\\MicrosoftEntraPrivateNetworkConnectorUpdaterService.exe.config",
            ],
        }
    }

    /// The connector's Admin event channel.
    pub fn event_channel(self) -> &'static str {
        match self {
            Layout::AppProxy => "Microsoft-AadApplicationProxy-Connector/Admin",
            Layout::PrivateNetwork => "Microsoft-Microsoft Entra private network-Connector/Admin",
        }
    }

    /// `TrustSettings.xml` under the given `%ProgramData%`.
    pub fn trust_settings(self, program_data: &str) -> PathBuf {
        join(
            program_data,
            &format!("{}\\Config\\TrustSettings.xml", self.data_folder()),
        )
    }

    /// The connector's `.exe.config` under the given `%ProgramFiles%`.
    pub fn connector_config(self, program_files: &str) -> PathBuf {
        join(program_files, self.service_configs()[0])
    }

    /// The updater's `.exe.config` under the given `%ProgramFiles%`.
    pub fn updater_config(self, program_files: &str) -> PathBuf {
        join(program_files, self.service_configs()[1])
    }

    /// The layout an installed product's display name belongs to, if it is the
    /// connector or its updater.
    pub fn of_product(name: &str) -> Option<Layout> {
        let name = name.to_ascii_lowercase();
        if !name.contains("connector") {
            return None;
        }
        if name.contains("private network") {
            Some(Layout::PrivateNetwork)
        } else if name.contains("application proxy") || name.contains("app proxy") {
            Some(Layout::AppProxy)
        } else {
            None
        }
    }

    /// The layout of the connector among installed products (the connector's own
    /// entry, not the updater's, decides; the updater's is the fallback).
    pub fn of_products(products: &[InstalledProduct]) -> Option<Layout> {
        let is_updater = |p: &&InstalledProduct| p.name.to_ascii_lowercase().contains("updater");
        products
            .iter()
            .filter(|p| !is_updater(p))
            .chain(products.iter().filter(is_updater))
            .find_map(|p| Layout::of_product(&p.name))
    }

    /// The installed layout: the uninstall entries' word, else the data folder that
    /// exists (entries can be unreadable to the service's account), else none.
    pub fn detect(
        products: &[InstalledProduct],
        program_data: &str,
        exists: impl Fn(&Path) -> bool,
    ) -> Option<Layout> {
        Layout::of_products(products).or_else(|| {
            Layout::ALL
                .into_iter()
                .find(|l| exists(&join(program_data, l.data_folder())))
        })
    }
}

fn join(base: &str, rest: &str) -> PathBuf {
    PathBuf::from(format!("{}\\{rest}", base.trim_end_matches('\\')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(name: &str) -> InstalledProduct {
        InstalledProduct {
            name: name.into(),
            version: "1.5.3829.0".into(),
        }
    }

    #[test]
    fn display_names_name_their_layout() {
        for (name, layout) in [
            (
                "Microsoft Entra private network connector",
                Some(Layout::PrivateNetwork),
            ),
            (
                "Microsoft Entra private network connector Updater",
                Some(Layout::PrivateNetwork),
            ),
            (
                "Microsoft AAD Application Proxy Connector",
                Some(Layout::AppProxy),
            ),
            (
                "Microsoft AAD App Proxy Connector Updater",
                Some(Layout::AppProxy),
            ),
            ("Microsoft Azure AD Connect", None),
            ("Microsoft Edge", None),
        ] {
            assert_eq!(Layout::of_product(name), layout, "{name}");
        }
    }

    #[test]
    fn the_connector_entry_decides_and_folders_are_the_fallback() {
        let products = [
            product("Microsoft AAD App Proxy Connector Updater"),
            product("Microsoft Entra private network connector"),
        ];
        assert_eq!(
            Layout::detect(&products, "C:\\ProgramData", |_| false),
            Some(Layout::PrivateNetwork)
        );
        let old_folder_only = |p: &Path| {
            p.to_string_lossy()
                .ends_with("\\Microsoft AAD Application Proxy Connector")
        };
        assert_eq!(
            Layout::detect(
                &[product("Microsoft Edge")],
                "C:\\ProgramData",
                old_folder_only
            ),
            Some(Layout::AppProxy)
        );
        assert_eq!(Layout::detect(&[], "C:\\ProgramData", |_| false), None);
    }

    #[test]
    fn paths_are_those_of_the_release_notes() {
        let l = Layout::PrivateNetwork;
        assert_eq!(
            l.trust_settings("C:\\ProgramData").to_string_lossy(),
            "C:\\ProgramData\\Microsoft\\Microsoft Entra private network connector\\Config\\TrustSettings.xml"
        );
        assert_eq!(
            l.connector_config("C:\\Program Files\\").to_string_lossy(),
            "C:\\Program Files\\Microsoft Entra private network connector\\MicrosoftEntraPrivateNetworkConnectorService.exe.config"
        );
        assert_eq!(
            l.updater_config("C:\\Program Files").to_string_lossy(),
            "C:\\Program Files\\Microsoft Entra private network connector Updater\\MicrosoftEntraPrivateNetworkConnectorUpdaterService.exe.config"
        );
        let old = Layout::AppProxy;
        assert_eq!(
            old.trust_settings("C:\\ProgramData").to_string_lossy(),
            "C:\\ProgramData\\Microsoft\\Microsoft AAD Application Proxy Connector\\Config\\TrustSettings.xml"
        );
        assert_eq!(
            old.event_channel(),
            "Microsoft-AadApplicationProxy-Connector/Admin"
        );
    }
}
