//! Wall-clock helpers and human durations ("30s", "7d") as they appear in config files
//! and on the command line.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, the unit of every timestamp on the wire.
pub type UnixMs = i64;

/// The current wall-clock time in milliseconds since the Unix epoch.
pub fn now_ms() -> UnixMs {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        // A clock set before 1970 is broken; report it as the epoch rather than panic.
        Err(_) => 0,
    }
}

/// Converts a `SystemTime` to milliseconds since the Unix epoch (negative before it).
pub fn system_time_ms(t: SystemTime) -> UnixMs {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// Parses a human duration such as `500ms`, `30s`, `5m`, `7d` or `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration ({e}); write it like `30s`, `5m` or `7d`"))
}

/// Formats a duration in milliseconds compactly for tables: `45s`, `12m`, `3h`, `9d`.
pub fn compact_ms(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let s = ms.unsigned_abs() / 1000;
    let text = match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ if s % 86_400 >= 3600 && s < 30 * 86_400 => {
            format!("{}d{}h", s / 86_400, (s % 86_400) / 3600)
        }
        _ => format!("{}d", s / 86_400),
    };
    format!("{sign}{text}")
}

/// Formats a timestamp as RFC 3339 in UTC, second precision.
pub fn rfc3339(ms: UnixMs) -> String {
    let secs = ms.div_euclid(1000);
    match ::time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => {
            let t = t.replace_nanosecond(0).unwrap_or(t);
            t.format(&::time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|_| secs.to_string())
        }
        Err(_) => secs.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_errors_say_how_to_write_them() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration(" 7d "), Ok(Duration::from_secs(7 * 86_400)));
        let err = parse_duration("thirty").unwrap_err();
        assert!(err.contains("`30s`"), "{err}");
    }

    #[test]
    fn compact_durations() {
        assert_eq!(compact_ms(45_000), "45s");
        assert_eq!(compact_ms(3 * 3_600_000), "3h");
        assert_eq!(compact_ms(-2 * 86_400_000), "-2d");
        assert_eq!(compact_ms(5 * 86_400_000 - 1000), "4d23h");
    }

    #[test]
    fn rfc3339_is_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
