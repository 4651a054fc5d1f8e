//! Logging set-up for the binaries: human-readable lines by default, JSON on request.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event, for log shippers.
    Json,
}

/// Installs the global subscriber, writing to stderr. `level` is an `EnvFilter`
/// directive such as `info` or `connwatch_aggregator=debug`; without one, `RUST_LOG`
/// decides, and without that, `info`.
pub fn init(format: LogFormat, level: Option<&str>) {
    init_with_writer(format, level, std::io::stderr);
}

/// As [`init`], writing to `writer` (a Windows service has no console, so it logs to a
/// file). Text lines carry no colour codes there.
pub fn init_with_writer<W>(format: LogFormat, level: Option<&str>, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = match level {
        Some(l) => EnvFilter::new(l),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    // A second init (tests, the demo) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
