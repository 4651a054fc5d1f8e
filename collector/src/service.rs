//! The collector as a Windows service, the part that is the same everywhere: the
//! `service` subcommands, what `install` registers (name, command line, account), and
//! the size-capped log file a service writes instead of a console. The calls into the
//! service control manager are in `platform::service_host`; off Windows they explain
//! that systemd is the way.
//!
//! The default account is `NT AUTHORITY\NetworkService`. The trust certificate lives in
//! the Network Service account's own store (its registry hive) or in the machine store
//! (`HKLM\SOFTWARE\Microsoft\SystemCertificates\MY`, readable by every local account),
//! and the connector's files under ProgramData are readable by all users, so that
//! account can read what the probes need without being LocalSystem. Reading the
//! connector's event log channel may need membership of the local "Event Log Readers"
//! group (deploy/windows/install.ps1 adds it). Where a hardened host has tightened
//! those registry keys, grant the account read on them or install with
//! `--account LocalSystem`; `probe` run as that account shows what it can see.

use clap::Subcommand;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The service's name in the service control manager.
pub const SERVICE_NAME: &str = "connwatch-collector";
/// The name shown in services.msc.
pub const DISPLAY_NAME: &str = "connwatch collector";
/// The description shown in services.msc.
pub const DESCRIPTION: &str =
    "Watches the application-proxy connector on this host and reports to the connwatch aggregator.";
/// The account the service runs as unless `--account` says otherwise.
pub const DEFAULT_ACCOUNT: &str = r"NT AUTHORITY\NetworkService";
/// Where the installed service keeps its config by default.
pub const DEFAULT_CONFIG: &str = r"C:\ProgramData\connwatch\collector.toml";
/// Where the installed service writes its log by default.
pub const DEFAULT_LOG_DIR: &str = r"C:\ProgramData\connwatch\logs";
/// The log file's size before it is rolled over to `collector.log.1`.
pub const LOG_ROLL_BYTES: u64 = 10 << 20;

/// `connwatch-collector service ...`.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum ServiceCommand {
    /// Register the collector with the service control manager (automatic start,
    /// restart on failure).
    Install {
        /// The config file the service runs with (an absolute path).
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The account: NetworkService (default), LocalService, LocalSystem, or a
        /// (group) managed service account such as `CONTOSO\connwatch$`.
        #[arg(long, default_value = DEFAULT_ACCOUNT)]
        account: String,
        /// The folder for the log file (collector.log, rolled at 10 MiB).
        #[arg(long, default_value = DEFAULT_LOG_DIR)]
        log_dir: PathBuf,
    },
    /// Stop the service if it runs, and remove it.
    Uninstall,
    /// Start the installed service.
    Start,
    /// Stop the service; it delivers what it holds first (5 s at most).
    Stop,
    /// The entry point the service control manager starts; not for interactive use.
    #[command(hide = true)]
    Run {
        /// The config file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The folder for the log file.
        #[arg(long, default_value = DEFAULT_LOG_DIR)]
        log_dir: PathBuf,
    },
}

/// What `service install` registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallPlan {
    /// The executable the service control manager starts.
    pub executable: PathBuf,
    /// Its arguments: `service run --config ... --log-dir ...`.
    pub arguments: Vec<OsString>,
    /// The account, or `None` for LocalSystem.
    pub account: Option<String>,
}

/// Why a service command cannot be planned.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ServiceError {
    /// A path the service would resolve against its working folder (System32).
    #[error(
        "{what} `{path}` is not an absolute path; a service starts in C:\\Windows\\System32, so give the full path (e.g. {example})"
    )]
    Relative {
        /// Which argument.
        what: &'static str,
        /// The path given.
        path: String,
        /// A path that would do.
        example: &'static str,
    },
    /// An account name that cannot be right.
    #[error(
        "account `{0}` is not a known built-in account or DOMAIN\\name; use NetworkService, LocalService, LocalSystem or a managed service account such as CONTOSO\\connwatch$"
    )]
    Account(String),
}

/// Plans `service install`: checks the paths and resolves the account name.
pub fn install_plan(
    executable: &Path,
    config: &Path,
    account: &str,
    log_dir: &Path,
) -> Result<InstallPlan, ServiceError> {
    absolute("--config", config, DEFAULT_CONFIG)?;
    absolute("--log-dir", log_dir, DEFAULT_LOG_DIR)?;
    Ok(InstallPlan {
        executable: executable.to_path_buf(),
        arguments: vec![
            "service".into(),
            "run".into(),
            "--config".into(),
            config.as_os_str().to_owned(),
            "--log-dir".into(),
            log_dir.as_os_str().to_owned(),
        ],
        account: resolve_account(account)?,
    })
}

/// The service-specific exit code of a service that could not start: its config or
/// its certificates are unusable (the error is in collector.log and the event log).
pub const EXIT_START_FAILED: u32 = 3;
/// The service-specific exit code of a collector that stopped on an error while it ran.
pub const EXIT_FAILED: u32 = 4;

/// What a service's exit code means, for `service start` to say.
pub fn exit_meaning(win32: u32, specific: u32) -> String {
    // ERROR_SERVICE_SPECIFIC_ERROR: the service's own code says more.
    const SERVICE_SPECIFIC: u32 = 1066;
    match (win32, specific) {
        (0, _) => "exit code 0".to_string(),
        (SERVICE_SPECIFIC, EXIT_START_FAILED) => {
            format!("exit code {EXIT_START_FAILED}: it could not start with its config")
        }
        (SERVICE_SPECIFIC, EXIT_FAILED) => {
            format!("exit code {EXIT_FAILED}: it failed while running")
        }
        (SERVICE_SPECIFIC, code) => format!("service-specific exit code {code}"),
        (code, _) => format!("Windows error {code}"),
    }
}

/// The `--log-dir` of a registered service command line (as the service control
/// manager keeps it: the executable and `service run ...` arguments, quoted where
/// they hold spaces), or the default.
pub fn log_dir_of(command_line: &str) -> PathBuf {
    let words = split_command_line(command_line);
    words
        .iter()
        .position(|w| w == "--log-dir")
        .and_then(|i| words.get(i + 1))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_LOG_DIR))
}

/// Splits a Windows command line into words: double quotes group, and are dropped.
fn split_command_line(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let (mut quoted, mut started) = (false, false);
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                started = true;
            }
            c if c.is_whitespace() && !quoted => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            c => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(word);
    }
    words
}

/// The last error a log holds: its last `ERROR` line, without the time stamp and
/// level, so `service start` can say why the service stopped.
pub fn last_error(log: &str) -> Option<String> {
    log.lines().rev().find_map(|line| {
        let (_, rest) = line.split_once(" ERROR ")?;
        // `target: message error=...`: the error itself says most.
        let said = match rest.split_once(" error=") {
            Some((_, error)) => error,
            None => rest.split_once(": ").map_or(rest, |(_, message)| message),
        };
        Some(said.trim().to_string())
    })
}

/// The `eventcreate` command that writes `message` to the Application event log as an
/// event of source `connwatch-collector` and type `kind` (`ERROR`, `INFORMATION`),
/// where an operator looks when a service will not start. eventcreate registers the
/// source on first use, which takes an administrator: `service install` writes the
/// first event, so the service's account can write later ones. eventcreate takes at
/// most about 32 KB of text.
pub fn event_log_command(kind: &str, message: &str) -> Vec<String> {
    let mut text: String = message.chars().take(30_000).collect();
    // A quote would end eventcreate's argument early once the command line is built.
    text = text.replace('"', "'");
    [
        "eventcreate",
        "/L",
        "APPLICATION",
        "/T",
        kind,
        "/SO",
        SERVICE_NAME,
        "/ID",
        "1",
        "/D",
        &text,
    ]
    .map(String::from)
    .to_vec()
}

/// Registers a service in two steps, `create` then `configure`, and takes it out again
/// with `delete` when `configure` fails: a service registered half-way would make the
/// next install say "already installed".
pub fn install_whole<S>(
    create: impl FnOnce() -> anyhow::Result<S>,
    configure: impl FnOnce(&S) -> anyhow::Result<()>,
    delete: impl FnOnce(S) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let service = create()?;
    let Err(e) = configure(&service) else {
        return Ok(());
    };
    Err(match delete(service) {
        Ok(()) => e.context(format!(
            "the service was not installed ({SERVICE_NAME} was registered and removed again)"
        )),
        Err(d) => e.context(format!(
            "{SERVICE_NAME} is registered but incomplete, and removing it failed ({d:#}): run `connwatch-collector service uninstall`"
        )),
    })
}

/// The account name the service control manager wants, `None` being LocalSystem.
pub fn resolve_account(account: &str) -> Result<Option<String>, ServiceError> {
    let bare = account
        .trim()
        .trim_start_matches(r"NT AUTHORITY\")
        .trim_start_matches(r".\");
    let resolved = match bare.to_ascii_lowercase().replace(' ', "").as_str() {
        "localsystem" | "system" => None,
        "networkservice" => Some(r"NT AUTHORITY\NetworkService".to_string()),
        "localservice" => Some(r"NT AUTHORITY\LocalService".to_string()),
        _ => {
            let valid = account.split_once('\\').is_some_and(|(domain, name)| {
                !domain.is_empty() && !name.is_empty() && !name.contains('\\')
            });
            if !valid {
                return Err(ServiceError::Account(account.to_string()));
            }
            Some(account.to_string())
        }
    };
    Ok(resolved)
}

/// Absolute on Windows (drive or UNC) or on Unix; `Path::is_absolute` only knows the
/// platform it was built for, and the plan is tested on Linux.
fn absolute(what: &'static str, path: &Path, example: &'static str) -> Result<(), ServiceError> {
    let text = path.to_string_lossy();
    let bytes = text.as_bytes();
    let drive = bytes.len() >= 3
        && bytes[0].is_ascii_alphabetic()
        && bytes[1] == b':'
        && (bytes[2] == b'\\' || bytes[2] == b'/');
    if drive || text.starts_with(r"\\") || path.is_absolute() {
        Ok(())
    } else {
        Err(ServiceError::Relative {
            what,
            path: text.into_owned(),
            example,
        })
    }
}

/// A log file that is renamed to `<name>.1` (replacing the previous one) once it
/// reaches `limit` bytes, so a service's log never fills the disk: at most twice the
/// limit is kept.
#[derive(Debug)]
pub struct RollingFile {
    path: PathBuf,
    limit: u64,
    file: std::fs::File,
    written: u64,
}

impl RollingFile {
    /// Opens (appends to) `dir/name`, creating the folder.
    pub fn open(dir: &Path, name: &str, limit: u64) -> std::io::Result<RollingFile> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(name);
        let file = Self::append(&path)?;
        let written = file.metadata()?.len();
        Ok(RollingFile {
            path,
            limit,
            file,
            written,
        })
    }

    fn append(path: &Path) -> std::io::Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    }

    fn roll(&mut self) -> std::io::Result<()> {
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        // Windows refuses to rename onto an existing file.
        let _ = std::fs::remove_file(&old);
        std::fs::rename(&self.path, &old)?;
        self.file = Self::append(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

impl Write for RollingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.written > 0 && self.written + buf.len() as u64 > self.limit {
            // A failed roll keeps writing to the current file rather than losing lines.
            let _ = self.roll();
        }
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: ServiceCommand,
    }

    /// The shape of the real command line: `connwatch-collector service ...`.
    #[derive(Debug, Parser)]
    struct Top {
        #[command(subcommand)]
        command: TopCommand,
    }

    #[derive(Debug, clap::Subcommand)]
    enum TopCommand {
        #[command(subcommand)]
        Service(ServiceCommand),
    }

    fn parse(args: &[&str]) -> Result<ServiceCommand, clap::Error> {
        let mut all = vec!["service"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).map(|c| c.command)
    }

    #[test]
    fn install_defaults_to_network_service_and_program_data() {
        let ServiceCommand::Install {
            config,
            account,
            log_dir,
        } = parse(&["install"]).expect("parse")
        else {
            panic!("not install");
        };
        let plan = install_plan(
            Path::new(r"C:\Program Files\connwatch\connwatch-collector.exe"),
            &config,
            &account,
            &log_dir,
        )
        .expect("plan");
        assert_eq!(
            plan.account.as_deref(),
            Some(r"NT AUTHORITY\NetworkService")
        );
        let args: Vec<String> = plan
            .arguments
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "service",
                "run",
                "--config",
                DEFAULT_CONFIG,
                "--log-dir",
                DEFAULT_LOG_DIR
            ]
        );
        // The registered command line parses back into `service run`.
        let mut again = vec!["connwatch-collector"];
        again.extend(args.iter().map(String::as_str));
        let Ok(Top {
            command: TopCommand::Service(ServiceCommand::Run { config, log_dir }),
        }) = Top::try_parse_from(again)
        else {
            panic!("the registered arguments do not parse as `service run`");
        };
        assert_eq!(config, PathBuf::from(DEFAULT_CONFIG));
        assert_eq!(log_dir, PathBuf::from(DEFAULT_LOG_DIR));
    }

    #[test]
    fn accounts_resolve_to_what_the_scm_expects() {
        for (given, want) in [
            ("LocalSystem", None),
            ("system", None),
            ("NetworkService", Some(r"NT AUTHORITY\NetworkService")),
            (
                r"NT AUTHORITY\Network Service",
                Some(r"NT AUTHORITY\NetworkService"),
            ),
            ("LocalService", Some(r"NT AUTHORITY\LocalService")),
            (r"CONTOSO\connwatch$", Some(r"CONTOSO\connwatch$")),
        ] {
            assert_eq!(
                resolve_account(given).expect("valid").as_deref(),
                want,
                "{given}"
            );
        }
        for bad in ["alice", r"\alice", r"CONTOSO\", ""] {
            assert!(
                matches!(resolve_account(bad), Err(ServiceError::Account(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn relative_paths_are_refused_with_an_example() {
        let err = install_plan(
            Path::new("c.exe"),
            Path::new("collector.toml"),
            "NetworkService",
            Path::new(DEFAULT_LOG_DIR),
        )
        .expect_err("relative");
        let text = err.to_string();
        assert!(
            text.contains("--config") && text.contains(DEFAULT_CONFIG),
            "{text}"
        );
        for ok in [
            r"D:\connwatch\c.toml",
            r"\\share\c.toml",
            "/etc/connwatch/c.toml",
        ] {
            assert!(
                absolute("--config", Path::new(ok), DEFAULT_CONFIG).is_ok(),
                "{ok}"
            );
        }
    }

    #[test]
    fn the_other_subcommands_parse_and_unknown_ones_do_not() {
        assert_eq!(
            parse(&["uninstall"]).expect("parse"),
            ServiceCommand::Uninstall
        );
        assert_eq!(parse(&["start"]).expect("parse"), ServiceCommand::Start);
        assert_eq!(parse(&["stop"]).expect("parse"), ServiceCommand::Stop);
        assert!(parse(&["restart"]).is_err());
        assert!(parse(&["install", "--acount", "x"]).is_err());
    }

    #[test]
    fn the_log_dir_is_read_back_from_the_registered_command_line() {
        let line = r#""C:\Program Files\connwatch\connwatch-collector.exe" service run --config "C:\ProgramData\connwatch\collector.toml" --log-dir "D:\connwatch logs""#;
        assert_eq!(log_dir_of(line), PathBuf::from(r"D:\connwatch logs"));
        assert_eq!(
            log_dir_of(r"C:\c.exe service run --log-dir C:\logs --config C:\c.toml"),
            PathBuf::from(r"C:\logs")
        );
        assert_eq!(
            log_dir_of(r"C:\c.exe service run"),
            PathBuf::from(DEFAULT_LOG_DIR)
        );
    }

    #[test]
    fn the_last_error_line_is_found_without_its_time_and_level() {
        let log = "2026-11-29T10:00:00Z  INFO connwatch_collector: collector starting\n2026-11-29T10:00:01Z ERROR connwatch_collector::platform::service_host: the service failed error=C:\\c.toml: cannot read: The system cannot find the file specified. (os error 2)\n2026-11-29T10:00:01Z  INFO x: stopped\n";
        assert_eq!(
            last_error(log).as_deref(),
            Some(
                "C:\\c.toml: cannot read: The system cannot find the file specified. (os error 2)"
            )
        );
        assert_eq!(
            last_error("t ERROR connwatch_collector: lost the spool\n").as_deref(),
            Some("lost the spool")
        );
        assert_eq!(last_error("all fine\n"), None);
    }

    #[test]
    fn exit_codes_are_explained() {
        assert!(exit_meaning(1066, EXIT_START_FAILED).contains("could not start"));
        assert!(exit_meaning(1066, EXIT_FAILED).contains("while running"));
        assert_eq!(exit_meaning(1067, 0), "Windows error 1067");
    }

    #[test]
    fn event_log_messages_are_bounded_and_unquoted() {
        let argv = event_log_command("ERROR", &format!("bad \"key\" {}", "x".repeat(40_000)));
        let text = argv.last().expect("message");
        assert!(text.starts_with("bad 'key' "));
        assert_eq!(text.chars().count(), 30_000);
        assert_eq!(argv[..2], ["eventcreate", "/L"]);
    }

    #[test]
    fn an_install_that_fails_half_way_is_taken_out_again() {
        use std::cell::RefCell;
        let registered = RefCell::new(Vec::<&str>::new());
        let create = || {
            registered.borrow_mut().push("svc");
            Ok("svc")
        };
        let delete = |s| {
            registered.borrow_mut().retain(|r| *r != s);
            Ok(())
        };
        let err = install_whole(
            create,
            |_| anyhow::bail!("Invalid level. (os error 124)"),
            delete,
        )
        .expect_err("configure failed");
        assert!(registered.borrow().is_empty(), "nothing left registered");
        let text = format!("{err:#}");
        assert!(text.contains("registered and removed again"), "{text}");
        assert!(text.contains("os error 124"), "{text}");

        let err = install_whole(
            || Ok("svc"),
            |_| anyhow::bail!("no description"),
            |_| anyhow::bail!("access denied"),
        )
        .expect_err("both failed");
        assert!(format!("{err:#}").contains("service uninstall"), "{err:#}");
        assert!(install_whole(|| Ok(()), |_| Ok(()), |_| anyhow::bail!("unused")).is_ok());
    }

    #[test]
    fn the_log_file_rolls_over_and_keeps_one_old_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = RollingFile::open(dir.path(), "collector.log", 100).expect("open");
        for i in 0..25 {
            writeln!(log, "line {i:03} of the log").expect("write");
        }
        let current = std::fs::read_to_string(dir.path().join("collector.log")).expect("read");
        let old = std::fs::read_to_string(dir.path().join("collector.log.1")).expect("read old");
        assert!(current.len() <= 100 && old.len() <= 100);
        assert!(current.ends_with("line 024 of the log\n"), "{current}");
        assert!(!dir.path().join("collector.log.2").exists());
    }
}
