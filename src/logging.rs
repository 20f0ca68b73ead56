//! Log lines on stderr: `2026-11-23T20:34:59.123Z INFO  listening on ...`,
//! or, for systemd's journal, `<6>listening on ...` (a syslog priority and
//! no timestamp: the journal stamps each line itself).
//!
//! The level comes from `RUST_LOG` (default `info`). The timestamp is
//! formatted here, in UTC, rather than pulling in a date-time crate.

use crate::config::LogFormat;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// The format to use: the one asked for, else journald when stderr is
/// systemd's journal (it sets `JOURNAL_STREAM`), else text.
pub fn choose(asked: Option<LogFormat>) -> LogFormat {
    asked.unwrap_or(if std::env::var_os("JOURNAL_STREAM").is_some() {
        LogFormat::Journald
    } else {
        LogFormat::Text
    })
}

/// The syslog priority systemd reads from a `<N>` prefix.
fn priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// Installs the logger. Call once, first thing in `main`.
pub fn init(format: LogFormat) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    // mio logs its own registrations at trace level (a dependency turns its
    // `log` feature on). Our trace already says what the loop does; keep
    // mio's out unless RUST_LOG names it.
    if !std::env::var("RUST_LOG").is_ok_and(|v| v.contains("mio")) {
        builder.filter_module("mio", log::LevelFilter::Off);
    }
    match format {
        LogFormat::Text => builder.format(|f, record| {
            writeln!(f, "{} {:<5} {}", Utc::now(), record.level(), record.args())
        }),
        LogFormat::Journald => builder
            .format(|f, record| writeln!(f, "<{}>{}", priority(record.level()), record.args())),
    };
    builder.init();
}

/// A UTC wall-clock time, printed as RFC 3339 with milliseconds.
struct Utc {
    secs: u64,
    millis: u32,
}

impl Utc {
    fn now() -> Utc {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Utc {
            secs: d.as_secs(),
            millis: d.subsec_millis(),
        }
    }
}

impl std::fmt::Display for Utc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (y, m, d) = civil_from_days(self.secs / 86_400);
        let s = self.secs % 86_400;
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
            s / 3600,
            s / 60 % 60,
            s % 60,
            self.millis
        )
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar: Howard Hinnant's `civil_from_days`, for days >= 0.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097; // day of the 400-year era
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of the year, from March
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_415), (2025, 11, 23));
        let t = Utc {
            secs: 1_795_466_099,
            millis: 7,
        };
        assert_eq!(t.to_string(), "2026-11-23T20:34:59.007Z");
    }
}
