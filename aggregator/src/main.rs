//! `connwatch-aggregator`: parses the command line, loads and validates config, sets up
//! logging and TLS, and hands over to the library: the server, the operator CLI, the
//! certificate commands or the demo.
//!
//! Exit codes: 0 success; 2 bad usage; 3 the command failed or got no answer
//! (unreachable aggregator, bad config, refused certificate); 4 the aggregator has no
//! such connector, group or silence. `check` adds 1 (warnings) and 2 (critical findings).

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use connwatch_aggregator::cli::commands::QueryCommand;
use connwatch_aggregator::cli::{self, Connect};
use connwatch_aggregator::config::Config;
use connwatch_aggregator::demo::{self, DemoOptions};
use connwatch_aggregator::server::{EXIT_RESTART, RestartNeeded};
use connwatch_shared::identity::Role;
use connwatch_shared::logging::{self, LogFormat};
use connwatch_shared::time::parse_duration;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

// glibc's allocator spent a fifth of the aggregator's time under ingest consolidating
// and unlinking chunks (reports, frames and sled nodes of every size, freed on other
// threads than they were allocated on).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Stores connector health reports and answers operators' questions about the fleet.
#[derive(Debug, Parser)]
#[command(
    name = "connwatch-aggregator",
    version = connwatch_shared::version!(),
    about,
    long_about = None,
    after_help = "Exit codes: 0 success; 1 `check` found warnings; 2 bad usage, or `check` found critical findings; 3 the command failed or the aggregator gave no answer (unreachable, certificate refused); 4 no such connector, group or silence."
)]
struct Cli {
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log level or filter (`info`, `debug`, `connwatch_aggregator=trace`); default: RUST_LOG, else info.
    #[arg(long, global = true, value_parser = logging::parse_level)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the aggregator: ingest reports, evaluate findings, answer queries.
    Serve {
        /// The aggregator's config file.
        #[arg(long, short, default_value = "/etc/connwatch/aggregator.toml")]
        config: PathBuf,
        /// Validate the config (and read its certificates), print a summary, and exit.
        #[arg(long)]
        check_config: bool,
    },
    #[command(flatten)]
    Query(QueryCommand),
    /// Copy the whole store of a running aggregator into a checksummed file.
    Backup {
        #[command(flatten)]
        connect: Connect,
        /// The file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Load a backup into a stopped aggregator's new, empty store.
    Restore {
        /// The aggregator's config file (its data_dir is restored into).
        #[arg(long, short, default_value = "/etc/connwatch/aggregator.toml")]
        config: PathBuf,
        /// The backup file.
        #[arg(long = "in")]
        input: PathBuf,
    },
    /// Alerts (firing, pending, silenced, recently resolved), silences and sink counters.
    Alerts {
        #[command(flatten)]
        connect: Connect,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Silence alerts for a while: add, list, remove.
    #[command(subcommand)]
    Silence(cli::alerts::SilenceCommand),
    /// Certificates: create a CA, issue certificates.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Run a small fleet on this machine, end to end, and show what connwatch finds.
    Demo {
        /// How long to run.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        duration: Duration,
        /// Print the final state as JSON.
        #[arg(long)]
        json: bool,
        /// Working folder (default: a temporary one, removed afterwards).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Keep the working folder.
        #[arg(long)]
        keep: bool,
    },
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

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Create a CA, the aggregator's server certificate and a first operator certificate.
    Init {
        /// Where to write them.
        #[arg(long)]
        dir: PathBuf,
        /// Extra DNS names or IP addresses for the server certificate (repeatable);
        /// localhost, 127.0.0.1 and ::1 are always included.
        #[arg(long = "server-name")]
        server_names: Vec<String>,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Issue a client certificate for a collector (one per connector host) or an operator.
    Issue {
        /// The folder holding ca.pem and ca.key.
        #[arg(long)]
        dir: PathBuf,
        /// `collector` or `operator`.
        #[arg(long, value_parser = ["collector", "operator"])]
        role: String,
        /// The connector id (collectors) or the operator's name.
        #[arg(long)]
        name: String,
        /// Where to write the files (default: --dir).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Validity.
        #[arg(long, default_value = "365d", value_parser = parse_duration)]
        valid_for: Duration,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Revoke a certificate: add it to the CA folder's revocation list (crl.pem), which
    /// the aggregator checks when `[tls] crl` names it (re-read on SIGHUP).
    Revoke {
        /// The folder holding ca.pem and ca.key (and crl.pem).
        #[arg(long)]
        dir: PathBuf,
        /// The certificate to revoke (a PEM file `ca issue` wrote).
        #[arg(long)]
        cert: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet_by_default = !matches!(cli.command, Command::Serve { .. });
    let level = cli.log_level.clone().or_else(|| {
        (quiet_by_default && std::env::var_os("RUST_LOG").is_none()).then(|| "warn".to_string())
    });
    logging::init(cli.log_format, level.as_deref());
    connwatch_shared::tls::install_crypto_provider();
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<cli::NotFound>().is_some() {
                ExitCode::from(cli::EXIT_NOT_FOUND)
            } else {
                ExitCode::from(cli::EXIT_NO_ANSWER)
            }
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    let serving = matches!(cli.command, Command::Serve { .. });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(move || {
            // Only the server: a CLI command's threads have nothing to yield to.
            if serving {
                connwatch_aggregator::priority::lower_for_ingest();
            }
        })
        .build()
        .context("cannot start the async runtime")?;
    match cli.command {
        Command::Completions { shell } => {
            connwatch_shared::manual::completions(Cli::command(), shell, &mut std::io::stdout());
        }
        Command::Man { dir: None } => {
            connwatch_shared::manual::man_page(Cli::command(), &mut std::io::stdout())?;
        }
        Command::Man { dir: Some(dir) } => {
            for page in connwatch_shared::manual::man_pages(Cli::command(), &dir)
                .with_context(|| format!("cannot write man pages into {}", dir.display()))?
            {
                println!("{}", page.display());
            }
        }
        Command::Serve {
            config,
            check_config,
        } => {
            let config = Config::load(&config)?;
            // Builds the whole TLS set-up, revocation list included, so a bad file is
            // reported now rather than at the first connection.
            config
                .tls
                .server_config(config.tls_crl.as_deref())
                .map_err(|e| {
                    let key = config
                        .tls
                        .key_for(&e, "tls")
                        .unwrap_or_else(|| "tls.crl".into());
                    anyhow::Error::new(e).context(format!("{}: key `{key}`", config.file.display()))
                })?;
            if check_config {
                println!(
                    "{}: ok (listen {}, store {}, {} declared groups)",
                    config.file.display(),
                    config.listen,
                    config.data_dir.display(),
                    config.rules.groups.len()
                );
                println!("{}", connwatch_aggregator::alert::describe(&config));
                return Ok(ExitCode::SUCCESS);
            }
            let served = runtime.block_on(async {
                let shutdown = CancellationToken::new();
                tokio::spawn(connwatch_shared::signals::cancel_on_signal(
                    shutdown.clone(),
                ));
                let reload = std::sync::Arc::new(tokio::sync::Notify::new());
                tokio::spawn(on_hangup(reload.clone()));
                connwatch_aggregator::server::run(config, shutdown, reload).await
            });
            if let Err(e) = &served
                && e.downcast_ref::<RestartNeeded>().is_some()
            {
                // Exit before anything drops the failed store: sled would try to
                // flush it on drop and wait forever. It recovers on the next open.
                eprintln!("{e:#}");
                std::process::exit(i32::from(EXIT_RESTART));
            }
            served?;
        }
        Command::Query(q) => return runtime.block_on(q.run()),
        Command::Backup { connect, out } => {
            println!(
                "{}",
                runtime.block_on(connwatch_aggregator::cli::backup::backup(&connect, &out))?
            );
        }
        Command::Restore { config, input } => {
            let config = Config::load(&config)?;
            println!(
                "{}",
                runtime.block_on(connwatch_aggregator::cli::backup::restore(&config, &input))?
            );
        }
        Command::Alerts { connect, json } => {
            let text = runtime.block_on(cli::alerts::alerts(&connect, json))?;
            print!("{}", connwatch_shared::render::terminal_safe(&text));
        }
        Command::Silence(cmd) => {
            let text = runtime.block_on(cli::alerts::silence(cmd))?;
            print!("{}", connwatch_shared::render::terminal_safe(&text));
        }
        Command::Ca(CaCommand::Init {
            dir,
            server_names,
            force,
        }) => {
            println!(
                "{}",
                connwatch_aggregator::ca::init(&dir, &server_names, force)?
            );
        }
        Command::Ca(CaCommand::Issue {
            dir,
            role,
            name,
            out,
            valid_for,
            force,
        }) => {
            let role = Role::parse(&role).context("role must be collector or operator")?;
            let out = out.unwrap_or_else(|| dir.clone());
            println!(
                "{}",
                connwatch_aggregator::ca::issue(&dir, &out, role, &name, valid_for, force)?
            );
        }
        Command::Ca(CaCommand::Revoke { dir, cert }) => {
            println!("{}", connwatch_aggregator::ca::revoke(&dir, &cert)?);
        }
        Command::Demo {
            duration,
            json,
            dir,
            keep,
        } => {
            runtime.block_on(async {
                let shutdown = CancellationToken::new();
                tokio::spawn(connwatch_shared::signals::cancel_on_signal(
                    shutdown.clone(),
                ));
                demo::run(
                    DemoOptions {
                        duration,
                        json,
                        dir,
                        keep,
                    },
                    shutdown,
                )
                .await
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Turns each SIGHUP into a reload of the TLS files (`systemctl reload`). Windows has
/// no SIGHUP; there the aggregator is restarted to pick up new files.
async fn on_hangup(reload: std::sync::Arc<tokio::sync::Notify>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading TLS files");
                    reload.notify_one();
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP; TLS reload is off"),
        }
    }
    #[cfg(not(unix))]
    drop(reload);
}
