//! Structured log lines on stderr: `<RFC 3339 UTC time> <LEVEL> <message> key=value ...`.
//! Values with spaces or quotes are quoted, so every line splits unambiguously.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy)]
pub enum Level {
    Info,
    Warn,
    Error,
}

pub fn info(message: &str, fields: &[(&str, &dyn std::fmt::Display)]) {
    emit(Level::Info, message, fields);
}

pub fn warn(message: &str, fields: &[(&str, &dyn std::fmt::Display)]) {
    emit(Level::Warn, message, fields);
}

pub fn error(message: &str, fields: &[(&str, &dyn std::fmt::Display)]) {
    emit(Level::Error, message, fields);
}

pub fn emit(level: Level, message: &str, fields: &[(&str, &dyn std::fmt::Display)]) {
    eprintln!("{}", line(SystemTime::now(), level, message, fields));
}

/// A duration as a log field: milliseconds with one decimal (`12.3`), fine enough for a
/// step of a few hundred microseconds to show.
pub struct Millis(pub std::time::Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.1}", self.0.as_secs_f64() * 1e3)
    }
}

fn line(
    now: SystemTime,
    level: Level,
    message: &str,
    fields: &[(&str, &dyn std::fmt::Display)],
) -> String {
    let level = match level {
        Level::Info => "INFO",
        Level::Warn => "WARN",
        Level::Error => "ERROR",
    };
    let mut out = format!("{} {level} {}", rfc3339(now), quote(message));
    for (key, value) in fields {
        let _ = write!(out, " {key}={}", quote(&value.to_string()));
    }
    out
}

fn quote(s: &str) -> String {
    if !s.is_empty() && !s.contains([' ', '"', '=', '\n', '\t']) {
        return s.to_string();
    }
    format!("{s:?}")
}

/// UTC time with milliseconds, e.g. `2026-11-23T03:30:00.123Z`.
fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_time_and_fields() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_404_600_123);
        let l = line(
            t,
            Level::Warn,
            "datastore degraded",
            &[("error", &"no route"), ("rev", &7)],
        );
        assert_eq!(
            l,
            "2026-11-23T03:30:00.123Z WARN \"datastore degraded\" error=\"no route\" rev=7"
        );
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn millis_keep_a_tenth() {
        assert_eq!(Millis(Duration::from_micros(12_345)).to_string(), "12.3");
        assert_eq!(Millis(Duration::from_micros(40)).to_string(), "0.0");
        assert_eq!(Millis(Duration::from_secs(2)).to_string(), "2000.0");
    }
}
