//! A Windows connector host under Wine, for the Windows test stage: a fresh Wine
//! prefix with the collector's Windows exe, the connector's services, uninstall
//! entries, TrustSettings.xml, trust certificates and `.exe.config` files laid out the
//! way the connector's installer lays them out, in either install layout.
//!
//! Wine 8.0's gaps are worked around here, in the test set-up only: a stand-in
//! `bcryptprimitives.dll` (Rust's standard library imports `ProcessPrng` from it), a
//! `pdh.dll` whose counters all fail (Wine's `PdhEnumObjectsA` aborts its caller), and
//! stand-ins for `netsh winhttp show proxy` and `wevtutil qe`, which Wine does not
//! emulate, and for `eventcreate`, which it lacks. The helper programs are C sources in `tests/windows/`, built here with
//! MinGW.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// What the Windows stage runs with.
pub struct WineTools {
    /// The collector's Windows exe.
    pub exe: PathBuf,
}

/// The tools the Windows stage needs, or why they are missing. `scripts/test` sets
/// `CONNWATCH_WINDOWS_EXE` to the exe it built, and `CONNWATCH_REQUIRE_WINE=1`, so
/// that on CI a missing piece fails the stage instead of skipping it.
pub fn tools() -> Result<WineTools, String> {
    let exe = match std::env::var_os("CONNWATCH_WINDOWS_EXE") {
        Some(p) => PathBuf::from(p),
        None => {
            let target = crate::bin("connwatch-collector")
                .parent()
                .and_then(Path::parent)
                .map(Path::to_path_buf)
                .unwrap_or_default();
            ["release", "debug"]
                .iter()
                .map(|p| target.join(format!("x86_64-pc-windows-gnu/{p}/connwatch-collector.exe")))
                .find(|p| p.is_file())
                .unwrap_or_default()
        }
    };
    if !exe.is_file() {
        return Err(format!(
            "the collector's Windows exe is not built ({}): cargo build --release -p connwatch-collector --target x86_64-pc-windows-gnu",
            exe.display()
        ));
    }
    for tool in ["wine", "wineserver", "x86_64-w64-mingw32-gcc"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Err(format!(
                "`{tool}` is not installed (scripts/install-test-deps installs it)"
            ));
        }
    }
    Ok(WineTools { exe })
}

/// The tools, or `None` after saying loudly why the test is skipped; with
/// `CONNWATCH_REQUIRE_WINE=1` a missing tool fails the test instead.
pub fn tools_or_skip(test: &str) -> Option<WineTools> {
    match tools() {
        Ok(t) => Some(t),
        Err(why) if std::env::var("CONNWATCH_REQUIRE_WINE").is_ok_and(|v| v == "1") => {
            panic!("the Windows stage is required here but cannot run: {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED: {test}: {why}");
            None
        }
    }
}

/// The connector's install layouts, spelt out here independently of the collector so
/// that the test checks its names against the release notes' rather than its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Before 1.5.3829.0: "Microsoft AAD Application Proxy Connector".
    AppProxy,
    /// Since 1.5.3829.0: "Microsoft Entra private network connector".
    PrivateNetwork,
}

impl Layout {
    /// The id the collector reports in `version.layout`.
    pub fn id(self) -> &'static str {
        match self {
            Layout::AppProxy => "app-proxy",
            Layout::PrivateNetwork => "private-network",
        }
    }

    /// The uninstall entries' display names: connector, updater.
    pub fn products(self) -> [&'static str; 2] {
        match self {
            Layout::AppProxy => [
                "Microsoft AAD Application Proxy Connector",
                "Microsoft AAD Application Proxy Connector Updater",
            ],
            Layout::PrivateNetwork => [
                "Microsoft Entra private network connector",
                "Microsoft Entra private network connector Updater",
            ],
        }
    }

    /// TrustSettings.xml, under C:\.
    pub fn trust_settings(self) -> &'static str {
        match self {
            Layout::AppProxy => {
                "ProgramData\\Microsoft\\Microsoft AAD Application Proxy Connector\\Config\\TrustSettings.xml"
            }
            Layout::PrivateNetwork => {
                "ProgramData\\Microsoft\\Microsoft Entra private network connector\\Config\\TrustSettings.xml"
            }
        }
    }

    /// The connector's and updater's `.exe.config`, under C:\.
    pub fn exe_configs(self) -> [&'static str; 2] {
        match self {
            Layout::AppProxy => [
                "Program Files\\Microsoft AAD App Proxy Connector\\ApplicationProxyConnectorService.exe.config",
                "Program Files\\Microsoft AAD App Proxy Connector Updater\\ApplicationProxyConnectorUpdaterService.exe.config",
            ],
            Layout::PrivateNetwork => [
                "Program Files\\Microsoft Entra private network connector\\MicrosoftEntraPrivateNetworkConnectorService.exe.config",
                "Program Files\\Microsoft Entra private network connector Updater\\MicrosoftEntraPrivateNetworkConnectorUpdaterService.exe.config",
            ],
        }
    }
}

/// A Wine prefix seeded as a connector host, with a persistent wineserver (so the
/// services keep the states the test gives them) that is killed on drop.
pub struct WineHost {
    prefix: PathBuf,
    /// `C:\connwatch-test`, where the collector's exe and the helpers are.
    tools_dir: PathBuf,
}

/// Where the collector's exe sits inside the prefix.
pub const EXE: &str = "C:\\connwatch-test\\connwatch-collector.exe";

impl WineHost {
    /// A fresh prefix under `root` with the helpers built and installed.
    pub fn new(root: &Path, tools: &WineTools) -> WineHost {
        let prefix = root.join("wine");
        let host = WineHost {
            tools_dir: prefix.join("drive_c/connwatch-test"),
            prefix,
        };
        std::fs::create_dir_all(&host.prefix).expect("create the Wine prefix");
        host.quiet("wine", &["wineboot", "--init"]);
        // wineboot leaves a wineserver shutting down beside a new one; a service
        // created then can be lost with the old one's service manager. Start afresh.
        host.quiet("wineserver", &["-k"]);
        host.quiet("wineserver", &["-w"]);
        // Persistent: an idle wineserver exits after a few seconds and the next one
        // would start every automatic service again, whatever state the test set.
        host.quiet("wineserver", &["-p"]);
        // The first program starts Wine's service manager, which would inherit and
        // hold open the pipes of a command whose output is read.
        host.quiet("wine", &["cmd", "/c", "exit"]);
        std::fs::create_dir_all(&host.tools_dir).expect("create C:\\connwatch-test");
        let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("windows");
        let system32 = host.prefix.join("drive_c/windows/system32");
        host.mingw(
            &[
                sources.join("bcryptprimitives.c"),
                sources.join("bcryptprimitives.def"),
            ],
            &system32.join("bcryptprimitives.dll"),
            &["-shared", "-lbcrypt"],
        );
        host.mingw(
            &[sources.join("fake-service.c")],
            &host.tools_dir.join("fake-service.exe"),
            &["-municode", "-ladvapi32"],
        );
        host.mingw(
            &[sources.join("certimport.c")],
            &host.tools_dir.join("certimport.exe"),
            &["-municode", "-lcrypt32", "-ladvapi32"],
        );
        host.mingw(
            &[sources.join("pdh.c"), sources.join("pdh.def")],
            &host.tools_dir.join("pdh.dll"),
            &["-shared"],
        );
        // For the collector's exe only: the stand-in beside it, not Wine's pdh.
        host.reg_add(
            "HKCU\\Software\\Wine\\AppDefaults\\connwatch-collector.exe\\DllOverrides",
            "pdh",
            "REG_SZ",
            "native",
        );
        for standin in ["netsh.exe", "wevtutil.exe", "eventcreate.exe"] {
            host.mingw(
                &[sources.join("standin.c")],
                &host.tools_dir.join(standin),
                &[],
            );
        }
        std::fs::copy(&tools.exe, host.tools_dir.join("connwatch-collector.exe"))
            .expect("copy the collector's exe into the prefix");
        host
    }

    /// Runs a command with no input or output, for its effect; it must succeed.
    fn quiet(&self, program: &str, args: &[&str]) {
        let status = self
            .command(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() || args == ["-k"] => {}
            other => panic!("`{program} {}` failed: {other:?}", args.join(" ")),
        }
    }

    fn mingw(&self, sources: &[PathBuf], out: &Path, flags: &[&str]) {
        let built = Command::new("x86_64-w64-mingw32-gcc")
            .arg("-O2")
            .arg("-o")
            .arg(out)
            .args(sources)
            .args(flags)
            .output()
            .expect("run x86_64-w64-mingw32-gcc");
        assert!(
            built.status.success(),
            "cannot build {}: {}",
            out.display(),
            String::from_utf8_lossy(&built.stderr)
        );
    }

    /// A command with this prefix's environment.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("WINEPREFIX", &self.prefix)
            .env("WINEDEBUG", "-all")
            .env("WINEARCH", "win64")
            .env_remove("DISPLAY")
            .stdin(Stdio::null());
        c
    }

    /// Runs a Windows program (a path inside the prefix, or a Wine builtin) to the end.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command("wine").args(args).output().expect("run wine")
    }

    /// Runs a Windows program and insists that it succeeds; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            succeeded(&out),
            "`{}` failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts the collector's exe with these arguments, its output to `log`.
    pub fn spawn_collector(&self, args: &[&str], log: &Path) -> Child {
        let log = std::fs::File::create(log).expect("create the collector's log");
        self.command("wine")
            .arg(EXE)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn the collector under wine")
    }

    /// The Linux path of `C:\<path>`.
    pub fn c_drive(&self, path: &str) -> PathBuf {
        self.prefix.join("drive_c").join(path.replace('\\', "/"))
    }

    /// Writes `C:\<path>`, creating its folders.
    pub fn write(&self, path: &str, contents: &[u8]) {
        let file = self.c_drive(path);
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).expect("create folders in the prefix");
        }
        std::fs::write(&file, contents).expect("write a file in the prefix");
    }

    /// Adds a registry value through Wine's `reg`.
    pub fn reg_add(&self, key: &str, name: &str, kind: &str, data: &str) {
        self.ok(&["reg", "add", key, "/v", name, "/t", kind, "/d", data, "/f"]);
    }

    /// Imports string values into the registry in one `regedit /S`: each key with its
    /// `(name, value)` pairs.
    pub fn reg_import(&self, keys: &[(String, Vec<(&str, &str)>)]) {
        let mut text = String::from("Windows Registry Editor Version 5.00\r\n");
        for (key, values) in keys {
            text.push_str(&format!("\r\n[{key}]\r\n"));
            for (name, value) in values {
                let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
                text.push_str(&format!("\"{name}\"=\"{escaped}\"\r\n"));
            }
        }
        self.write("connwatch-test\\import.reg", text.as_bytes());
        self.ok(&["regedit", "/S", "C:\\connwatch-test\\import.reg"]);
    }

    /// Installs the connector and updater as `layout` installs them: uninstall entries
    /// (the connector's 64-bit, the updater's under WOW6432Node), both services
    /// (automatic, running), and both `.exe.config` files without a proxy.
    pub fn install_connector(
        &self,
        layout: Layout,
        version: &'static str,
        updater_version: &'static str,
    ) {
        let [connector, updater] = layout.products();
        let entry = |root: &str, guid: &str, name: &'static str, version: &'static str| {
            (
                format!("{root}\\{guid}"),
                vec![
                    ("DisplayName", name),
                    ("DisplayVersion", version),
                    ("Publisher", "Microsoft Corporation"),
                ],
            )
        };
        self.reg_import(&[
            entry(
                "HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall",
                "{2A1B5E84-4B7C-4C1D-9E3A-6F2D1C0B9A81}",
                connector,
                version,
            ),
            entry(
                "HKEY_LOCAL_MACHINE\\SOFTWARE\\WOW6432Node\\Microsoft\\Windows\\CurrentVersion\\Uninstall",
                "{7C3E2D19-5A8B-4F60-B1D4-0E9C8A7B6F52}",
                updater,
                updater_version,
            ),
        ]);
        for name in ["WAPCSvc", "WAPCUpdaterSvc"] {
            self.add_service(name);
        }
        for config in layout.exe_configs() {
            self.write(config, exe_config(None).as_bytes());
        }
    }

    /// Stops service `name` and waits until the service manager says it has stopped
    /// (`sc stop` only asks): Wine loses a deletion asked for while a stop is pending.
    pub fn stop_service(&self, name: &str) {
        self.ok(&["sc", "stop", name]);
        let started = std::time::Instant::now();
        loop {
            let out = self.run(&["sc", "query", name]);
            if String::from_utf8_lossy(&out.stdout).contains("STOPPED") {
                return;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "{name} did not stop: {}",
                String::from_utf8_lossy(&out.stdout)
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Registers a stand-in service under `name` (automatic start) and starts it.
    pub fn add_service(&self, name: &str) {
        let command = format!("C:\\connwatch-test\\fake-service.exe {name}");
        self.ok(&["sc", "create", name, "binPath=", &command, "start=", "auto"]);
        self.ok(&["sc", "start", name]);
    }

    /// Puts a trust certificate (DER) in the machine store or the Network Service
    /// account's store and points `layout`'s TrustSettings.xml at it; returns the
    /// thumbprint crypt32 computed.
    pub fn register_trust_cert(&self, layout: Layout, der: &[u8], user_store: bool) -> String {
        self.write("connwatch-test\\trust.der", der);
        let store = if user_store {
            "networkservice"
        } else {
            "machine"
        };
        let thumbprint = self
            .ok(&[
                "C:\\connwatch-test\\certimport.exe",
                store,
                "C:\\connwatch-test\\trust.der",
            ])
            .trim()
            .to_string();
        self.write_trust_settings(layout, &thumbprint, user_store);
        thumbprint
    }

    /// Writes `layout`'s TrustSettings.xml as the connector's registration does, in
    /// UTF-16 with a byte-order mark.
    pub fn write_trust_settings(&self, layout: Layout, thumbprint: &str, user_store: bool) {
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"utf-16\"?>\r\n<ConnectorTrustSettingsFile xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\">\r\n  <CloudProxyTrust>\r\n    <Thumbprint>{thumbprint}</Thumbprint>\r\n    <IsInUserStore>{user_store}</IsInUserStore>\r\n  </CloudProxyTrust>\r\n</ConnectorTrustSettingsFile>\r\n"
        );
        let mut bytes = vec![0xff, 0xfe];
        bytes.extend(xml.encode_utf16().flat_map(u16::to_le_bytes));
        self.write(layout.trust_settings(), &bytes);
    }

    /// Runs `probe --json` with the config at `C:\<config>` and returns the report.
    pub fn probe(&self, config: &str) -> serde_json::Value {
        let out = self.ok(&[EXE, "probe", "--json", "--config", &format!("C:\\{config}")]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("probe --json: {e}: {out}"))
    }
}

impl Drop for WineHost {
    fn drop(&mut self) {
        let _ = self.command("wineserver").arg("-k").status();
    }
}

/// Whether a Wine command succeeded. Wine 8.0's loader now and then trips an assertion
/// in glibc's `_dl_fini` as a process exits, after its work is done, and reports 127;
/// that alone is not the command's failure (what it did is checked by the test).
pub fn succeeded(out: &Output) -> bool {
    out.status.success()
        || (out.status.code() == Some(127)
            && String::from_utf8_lossy(&out.stderr).contains("Inconsistency detected by ld.so"))
}

/// A .NET `.exe.config` with a `defaultProxy` for `proxy`, or none (the system
/// default).
pub fn exe_config(proxy: Option<&str>) -> String {
    let net = match proxy {
        None => String::new(),
        Some(address) => format!(
            "  <system.net>\r\n    <defaultProxy>\r\n      <proxy proxyaddress=\"{address}\" bypassonlocal=\"True\" usesystemdefault=\"False\"/>\r\n    </defaultProxy>\r\n  </system.net>\r\n"
        ),
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\r\n<configuration>\r\n  <startup>\r\n    <supportedRuntime version=\"v4.0\" sku=\".NETFramework,Version=v4.7.2\"/>\r\n  </startup>\r\n{net}</configuration>\r\n"
    )
}

/// `path` as the Windows exe under Wine sees it (Wine maps `/` to drive Z:).
pub fn z_path(path: &Path) -> String {
    format!("Z:{}", path.display()).replace('/', "\\")
}
