//! `connwatch-bench`: runs the benchmarks against the release (or debug) binaries built
//! beside it and prints the figures table and JSON. `full` is the documented run,
//! `smoke` the short CI check of same-run ratios.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

// The aggregator's allocator: the operator client here stands in for the aggregator's
// own CLI (same binary, same allocator), and the simulated collectors share the cores
// with the aggregator, so the less they spend on allocation the less they skew it.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    version,
    about = "Benchmarks connwatch beside its ceilings and peers, in one run."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Every scenario; prints a Markdown table, then the JSON.
    Full {
        /// Fleet sizes for the scaling runs; the largest is the headline fleet.
        #[arg(long, value_delimiter = ',', default_value = "250,500,1000")]
        fleets: Vec<usize>,
        /// Repeats of the headline comparison.
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Seconds per measured window.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Registered connectors in the query scenario.
        #[arg(long, default_value_t = 100_000)]
        query_connectors: usize,
        /// Collectors in the reconnect storm.
        #[arg(long, default_value_t = 10_000)]
        storm: usize,
        /// Collector cycle interval in the footprint scenario, seconds.
        #[arg(long, default_value_t = 3)]
        footprint_interval: u64,
        /// How long the footprint is watched, seconds.
        #[arg(long, default_value_t = 30)]
        footprint_window: u64,
        /// Reports per second of the steady-fleet scenario, from the headline fleet's
        /// collectors (1000 a second is a 30,000-connector fleet at 30 s); 0 skips it.
        #[arg(long, default_value_t = 1000.0)]
        steady_rate: f64,
        /// Also write the JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The CI check: interleaved short rounds; fails unless the same-run ratios hold.
    Smoke {
        /// Simulated collectors.
        #[arg(long, default_value_t = 200)]
        collectors: usize,
    },
    /// Only the query scenario: status and listing over a registered fleet while the
    /// collectors ingest at a set rate; prints its JSON.
    Query {
        /// Simulated collectors ingesting.
        #[arg(long, default_value_t = 1000)]
        collectors: usize,
        /// Reports per second they send in all (0: no ingest).
        #[arg(long, default_value_t = 10_000.0)]
        rate: f64,
        /// Registered connectors.
        #[arg(long, default_value_t = 100_000)]
        connectors: usize,
        /// Seconds each question is asked back to back.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// Only saturated ingest into a fresh aggregator, with its CPU per report; prints
    /// its JSON (for profiling one path without the rest of `full`).
    Ingest {
        /// Simulated collectors.
        #[arg(long, default_value_t = 1000)]
        collectors: usize,
        /// Seconds measured, after 2 s of warm-up.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Only the steady fleet: the collectors send a set rate in all, with random phase,
    /// into a fresh aggregator; prints its JSON (CPU, disk and ack latency per report
    /// when the writer commits a few reports at a time).
    Steady {
        /// Simulated collectors.
        #[arg(long, default_value_t = 1000)]
        collectors: usize,
        /// Reports per second they send in all.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// Seconds measured, after the warm-up.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// Only the reconnect storm: collectors connect at once to a fresh aggregator, then
    /// idle while its memory is read; prints its JSON.
    Storm {
        /// Simulated collectors.
        #[arg(long, default_value_t = 10_000)]
        collectors: usize,
    },
    /// Internal: writes a registered fleet into a store folder (used by `full`).
    #[command(hide = true)]
    Populate {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        connectors: usize,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The simulated collectors run at the priority of the aggregator's own ingest
    // threads (its main runtime's), below the operator's client, which runs on a
    // thread of its own started from the main thread: in a real deployment neither the
    // collectors nor the operator share the aggregator's cores, and here neither should
    // take them from the other's counterpart.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(connwatch_aggregator::priority::lower_for_ingest)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("connwatch-bench: cannot start the runtime: {e}");
            return std::process::ExitCode::from(3);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("connwatch-bench: {e:#}");
            std::process::ExitCode::from(3)
        }
    }
}

async fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Full {
            fleets,
            repeats,
            seconds,
            query_connectors,
            storm,
            footprint_interval,
            footprint_window,
            steady_rate,
            json,
        } => {
            let opts = connwatch_bench::FullOptions {
                fleets,
                repeats: repeats.max(1),
                measure: Duration::from_secs(seconds.max(1)),
                query_connectors,
                storm,
                footprint_interval: Duration::from_secs(footprint_interval.max(1)),
                footprint_window: Duration::from_secs(footprint_window.max(1)),
                steady_rate,
            };
            let r = connwatch_bench::full(&opts).await?;
            println!("{}", connwatch_bench::report::table(&r));
            let text = serde_json::to_string_pretty(&r)?;
            println!("{text}");
            if let Some(p) = json {
                std::fs::write(&p, text)
                    .with_context(|| format!("cannot write {}", p.display()))?;
            }
            Ok(())
        }
        Cmd::Smoke { collectors } => {
            print(&connwatch_bench::smoke_checked(collectors).await?.json())
        }
        Cmd::Query {
            collectors,
            rate,
            connectors,
            seconds,
        } => {
            let bed = connwatch_bench::Bed::new(collectors.max(1), 50).await?;
            let measure = Duration::from_secs(seconds.max(1));
            print(&connwatch_bench::query::run(&bed, connectors, rate, measure).await?)
        }
        Cmd::Ingest {
            collectors,
            seconds,
        } => {
            let measure = Duration::from_secs(seconds.max(1));
            print(&connwatch_bench::saturate(collectors.max(1), measure).await?)
        }
        Cmd::Steady {
            collectors,
            rate,
            seconds,
        } => {
            let bed = connwatch_bench::Bed::new(collectors.max(1), 50).await?;
            let measure = Duration::from_secs(seconds.max(1));
            print(&connwatch_bench::steady::run(&bed, rate.max(1.0), measure).await?)
        }
        Cmd::Storm { collectors } => {
            let bed = connwatch_bench::Bed::new(1, 50).await?;
            print(&connwatch_bench::storm::run(&bed, collectors.max(1)).await?)
        }
        Cmd::Populate {
            data_dir,
            connectors,
        } => connwatch_bench::query::populate(&data_dir, connectors, 50).await,
    }
}

/// Prints a scenario's figures as JSON.
fn print(figures: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(figures)?);
    Ok(())
}
