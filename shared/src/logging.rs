//! Logging set-up for the binaries: human-readable lines by default, JSON on request.

use std::io::IsTerminal;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{Format, Full, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event, for log shippers.
    Json,
}

/// The level names a filter directive may end in.
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Checks a `--log-level` value, for use as a clap value parser: a level (`info`), or
/// comma-separated `target=level` directives. A bare word that is not a level would
/// be taken by the filter as a target name and silently log nothing useful (`verbose`,
/// `warning`), so it is refused with the words that work.
pub fn parse_level(text: &str) -> Result<String, String> {
    let usage = "use trace, debug, info, warn, error or off, or target=level such as `connwatch_aggregator=debug`";
    for directive in text.split(',').map(str::trim) {
        let level = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
        if !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level.trim())) {
            return Err(format!(
                "`{directive}` is not a log level or filter: {usage}"
            ));
        }
    }
    EnvFilter::try_new(text).map_err(|e| format!("`{text}` is not a log filter ({e}): {usage}"))?;
    Ok(text.to_string())
}

/// Installs the global subscriber, writing to stderr. `level` is an `EnvFilter`
/// directive such as `info` or `connwatch_aggregator=debug`; without one, `RUST_LOG`
/// decides, and without that, `info`. Colour only on a terminal (and not with
/// `NO_COLOR`); under systemd (stderr is the stream `JOURNAL_STREAM` names) each text line starts with its
/// syslog priority (`<3>` for errors ... `<7>` for debug), which journald reads as the
/// entry's priority, so `journalctl -p warning` works and no escape codes are stored.
pub fn init(format: LogFormat, level: Option<&str>) {
    let style = if stderr_is_journal() {
        Style::Journald
    } else if std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
        Style::Colour
    } else {
        Style::Plain
    };
    install(format, level, std::io::stderr, style);
}

/// Whether stderr is journald's stream: `JOURNAL_STREAM` names its device and inode
/// (the variable alone is inherited by shells and children that write elsewhere).
fn stderr_is_journal() -> bool {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        use std::os::unix::fs::MetadataExt;
        let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
            return false;
        };
        let Some((dev, ino)) = stream.to_str().and_then(|v| v.split_once(':')) else {
            return false;
        };
        let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
            return false;
        };
        let Ok(meta) = std::fs::File::from(fd).metadata() else {
            return false;
        };
        dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// As [`init`], writing to `writer` (a Windows service has no console, so it logs to a
/// file). Text lines carry no colour codes there.
pub fn init_with_writer<W>(format: LogFormat, level: Option<&str>, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    install(format, level, writer, Style::Plain);
}

/// How text lines look where they go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    /// A terminal: coloured levels and fields.
    Colour,
    /// A file or a pipe: no escape codes.
    Plain,
    /// journald: no escape codes, and a syslog priority before each line.
    Journald,
}

fn install<W>(format: LogFormat, level: Option<&str>, writer: W, style: Style)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = match level {
        Some(l) => EnvFilter::new(l),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(style == Style::Colour);
    // A second init (tests, the demo) keeps the first subscriber.
    let _ = match (format, style) {
        (LogFormat::Json, _) => builder.json().try_init(),
        (LogFormat::Text, Style::Journald) => builder
            .event_format(Prioritised(Format::default().without_time()))
            .try_init(),
        (LogFormat::Text, _) => builder.try_init(),
    };
}

/// The syslog priority journald takes from a `<N>` line prefix.
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// Text lines with their syslog priority in front (journald adds its own time stamp).
struct Prioritised(Format<Full, ()>);

impl<S, N> FormatEvent<S, N> for Prioritised
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_levels_and_filters_are_checked() {
        for ok in ["info", "DEBUG", "warn,connwatch_aggregator=trace", "off"] {
            assert_eq!(parse_level(ok).as_deref(), Ok(ok));
        }
        for bad in ["verbose", "warning", "info,chatty", "x=loud", ""] {
            let err = parse_level(bad).expect_err(bad);
            assert!(err.contains("trace, debug"), "{err}");
        }
    }
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(style: Style) -> String {
        let sink = Sink::default();
        let out = sink.clone();
        let builder = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .with_ansi(style == Style::Colour);
        let subscriber: Box<dyn Subscriber + Send + Sync> = match style {
            Style::Journald => Box::new(
                builder
                    .event_format(Prioritised(Format::default().without_time()))
                    .finish(),
            ),
            _ => Box::new(builder.finish()),
        };
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(connector = "c1", "broken");
            tracing::warn!("odd");
            tracing::info!("fine");
        });
        let bytes = sink.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn plain_and_journald_lines_carry_no_escape_codes() {
        for style in [Style::Plain, Style::Journald] {
            let text = lines(style);
            assert!(!text.contains('\u{1b}'), "{style:?}: {text:?}");
            assert!(text.contains("connector=\"c1\""), "{style:?}: {text:?}");
        }
        assert!(
            lines(Style::Colour).contains('\u{1b}'),
            "a terminal gets colour"
        );
    }

    #[test]
    fn journald_lines_start_with_their_priority() {
        let text = lines(Style::Journald);
        let starts: Vec<&str> = text.lines().map(|l| &l[..3]).collect();
        assert_eq!(starts, ["<3>", "<4>", "<6>"], "{text}");
    }
}
