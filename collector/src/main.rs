//! `connwatch-collector`: parses the command line, loads and validates the config, sets
//! up logging and TLS, and hands over to the library.
//!
//! Exit codes: 0 success; 2 bad usage; 3 the command failed (bad config, unreadable
//! certificates).

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use connwatch_collector::config::Config;
use connwatch_collector::platform::service_host;
use connwatch_collector::service::{self, ServiceCommand};
use connwatch_shared::logging::{self, LogFormat};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// Where the config is looked for when `--config` is not given: where
/// deploy/windows/install.ps1 and `service install` put it on Windows, under /etc
/// elsewhere.
#[cfg(windows)]
const DEFAULT_CONFIG: &str = service::DEFAULT_CONFIG;
#[cfg(not(windows))]
const DEFAULT_CONFIG: &str = "/etc/connwatch/collector.toml";

/// Watches one application-proxy connector host and reports to a connwatch aggregator.
#[derive(Debug, Parser)]
#[command(name = "connwatch-collector", version = connwatch_shared::version!(), about, long_about = None)]
struct Cli {
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log level or filter (`info`, `debug`, `connwatch_collector=trace`); default: RUST_LOG, else info.
    #[arg(long, global = true, value_parser = logging::parse_level)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Probe on a schedule and stream reports to the aggregator until stopped.
    Run {
        /// The collector's config file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Validate the config (and read its certificates), print a summary, and exit.
        #[arg(long)]
        check_config: bool,
    },
    /// Run every probe once, here, and print the results; needs no aggregator.
    Probe {
        /// The collector's config file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The Windows service: install, uninstall, start, stop.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    Completions {
        /// The shell.
        shell: connwatch_shared::manual::Shell,
    },
    /// Print the man page, or write one page per subcommand into --dir.
    Man {
        /// Write every page into this folder (e.g. /usr/local/share/man/man1).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Service(ServiceCommand::Run { log_dir, .. }) = &cli.command {
        // Started by the SCM: no console, so the log goes to a file.
        match service::RollingFile::open(log_dir, "collector.log", service::LOG_ROLL_BYTES) {
            Ok(file) => logging::init_with_writer(
                cli.log_format,
                cli.log_level.as_deref(),
                std::sync::Mutex::new(file),
            ),
            Err(e) => {
                eprintln!(
                    "error: cannot open the log file in {}: {e}",
                    log_dir.display()
                );
                return ExitCode::from(3);
            }
        }
    } else {
        logging::init(cli.log_format, cli.log_level.as_deref());
    }
    connwatch_shared::tls::install_crypto_provider();
    let as_service = matches!(cli.command, Command::Service(ServiceCommand::Run { .. }));
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            if as_service {
                // Nobody reads a service's stderr: collector.log is where it is seen.
                tracing::error!(error = %format!("{e:#}"), "the service failed");
            }
            eprintln!("error: {e:#}");
            ExitCode::from(3)
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    // One thread: a cycle's probes are mostly waiting on sockets and timers, and every
    // worker thread would add its own stack and malloc arena to a process that must
    // go unnoticed on the host. Blocking probes still run on the blocking pool.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match cli.command {
        Command::Service(command) => {
            service_command(command)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            connwatch_shared::manual::completions(Cli::command(), shell, &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir: None } => {
            connwatch_shared::manual::man_page(Cli::command(), &mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir: Some(dir) } => {
            for page in connwatch_shared::manual::man_pages(Cli::command(), &dir)
                .with_context(|| format!("cannot write man pages into {}", dir.display()))?
            {
                println!("{}", page.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            config,
            check_config,
        } => {
            let config = Config::load(&config)?;
            if check_config {
                if let Some(a) = &config.aggregator {
                    a.tls
                        .load()
                        .map_err(|e| match a.tls.key_for(&e, "aggregator") {
                            Some(key) => anyhow::Error::new(e)
                                .context(format!("{}: key `{key}`", config.file.display())),
                            None => anyhow::Error::new(e),
                        })?;
                }
                println!(
                    "{}: ok (group {}, {} services, {} endpoints, {} trust certificates)",
                    config.file.display(),
                    config.group,
                    config.services.len(),
                    config.endpoints.len(),
                    config.trust_certs.len()
                );
                return Ok(ExitCode::SUCCESS);
            }
            runtime.block_on(async {
                let shutdown = CancellationToken::new();
                tokio::spawn(connwatch_shared::signals::cancel_on_signal(
                    shutdown.clone(),
                ));
                connwatch_collector::run(config, shutdown).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Probe { config, json } => {
            let config = Config::load(&config)?;
            let report = runtime.block_on(connwatch_collector::probe_once(&config));
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                let text = connwatch_shared::render::report(&report);
                print!("{}", connwatch_shared::render::terminal_safe(&text));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn service_command(command: ServiceCommand) -> anyhow::Result<()> {
    service_host::available()?;
    match command {
        ServiceCommand::Install {
            config,
            account,
            log_dir,
        } => {
            let exe = std::env::current_exe().context("cannot find this executable's path")?;
            let plan = service::install_plan(&exe, &config, &account, &log_dir)?;
            // Refuse a config the service could not start with, before registering it.
            Config::load(&config)?;
            service_host::install(&plan)?;
            println!(
                "installed {} as {} running `{} {}`; start it with `connwatch-collector service start`",
                service::SERVICE_NAME,
                plan.account.as_deref().unwrap_or("LocalSystem"),
                plan.executable.display(),
                plan.arguments
                    .iter()
                    .map(|a| a.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        ServiceCommand::Uninstall => {
            service_host::uninstall()?;
            println!("removed {}", service::SERVICE_NAME);
        }
        ServiceCommand::Start => {
            service_host::start()?;
            println!(
                "{} is running (and stayed up for 3 s)",
                service::SERVICE_NAME
            );
        }
        ServiceCommand::Stop => {
            service_host::stop()?;
            println!("{} has stopped", service::SERVICE_NAME);
        }
        ServiceCommand::Run { config, .. } => {
            // The service loads its config itself, so that an unusable one reaches
            // the SCM as its exit code and collector.log, not this process's stderr.
            service_host::run(config)?;
        }
    }
    Ok(())
}
