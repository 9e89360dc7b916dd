//! The daemon's log: the AWS daemon's line format and levels, and rate-limited summaries.
//!
//! Lines look like `2026-11-26T10:20:32Z [Info] message`. Callers use the [`info!`](crate::info)
//! family of macros; a disabled level costs one atomic load.

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Log levels, most verbose first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    /// Nothing is logged.
    Silent = 5,
}

impl Level {
    /// Parses a `-l` value: dev, debug, info, warn, error, prod (= info), silent.
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s.to_ascii_lowercase().as_str() {
            "dev" | "trace" => Level::Trace,
            "debug" => Level::Debug,
            "info" | "prod" => Level::Info,
            "warn" => Level::Warn,
            "error" => Level::Error,
            "silent" => Level::Silent,
            _ => return None,
        })
    }

    fn label(self) -> &'static str {
        match self {
            Level::Trace => "Trace",
            Level::Debug => "Debug",
            Level::Info => "Info",
            Level::Warn => "Warn",
            Level::Error => "Error",
            Level::Silent => "",
        }
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
static OUT: OnceLock<Mutex<Box<dyn Write + Send>>> = OnceLock::new();
static TZ: OnceLock<jiff::tz::TimeZone> = OnceLock::new();

/// Sets the level and the destination (stdout when never called).
pub fn init(level: Level, out: Box<dyn Write + Send>) {
    LEVEL.store(level as u8, Relaxed);
    let _ = OUT.set(Mutex::new(out));
}

/// Changes the level.
pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Relaxed);
}

/// Would a line at `level` be written?
#[inline]
pub fn enabled(level: Level) -> bool {
    level as u8 >= LEVEL.load(Relaxed) && level != Level::Silent
}

/// Writes one line (use the macros).
pub fn write(level: Level, args: std::fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let line = format!("{} [{}] {}\n", timestamp(), level.label(), args);
    let out = OUT.get_or_init(|| Mutex::new(Box::new(std::io::stdout())));
    let mut w = out.lock();
    let _ = w.write_all(line.as_bytes());
    let _ = w.flush();
}

/// Local time, RFC 3339 to the second (`Z` for UTC), as the AWS daemon prints it.
pub fn timestamp() -> String {
    let tz = TZ.get_or_init(jiff::tz::TimeZone::system);
    let now = jiff::Timestamp::now().to_zoned(tz.clone());
    let s = now.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string();
    match s.strip_suffix("+00:00") {
        Some(base) => format!("{base}Z"),
        None => s,
    }
}

/// Logs at Error.
#[macro_export]
macro_rules! error { ($($t:tt)*) => { $crate::log::write($crate::log::Level::Error, format_args!($($t)*)) } }
/// Logs at Warn.
#[macro_export]
macro_rules! warn { ($($t:tt)*) => { $crate::log::write($crate::log::Level::Warn, format_args!($($t)*)) } }
/// Logs at Info.
#[macro_export]
macro_rules! info { ($($t:tt)*) => { $crate::log::write($crate::log::Level::Info, format_args!($($t)*)) } }
/// Logs at Debug.
#[macro_export]
macro_rules! debug { ($($t:tt)*) => { $crate::log::write($crate::log::Level::Debug, format_args!($($t)*)) } }
/// Logs at Trace.
#[macro_export]
macro_rules! trace { ($($t:tt)*) => { $crate::log::write($crate::log::Level::Trace, format_args!($($t)*)) } }

/// Lets one message through per interval and counts the ones it held back, so a flood of
/// per-datagram problems becomes one summary line.
pub struct Throttle {
    interval: Duration,
    start: Instant,
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttle {
    /// A throttle allowing one message per `interval`.
    pub fn new(interval: Duration) -> Self {
        Throttle {
            interval,
            start: Instant::now(),
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a message may be written now (`n` were held back since the last one).
    pub fn allow(&self, now: Instant) -> Option<u64> {
        let now_ms = now.saturating_duration_since(self.start).as_millis() as u64;
        let next = self.next_ms.load(Relaxed);
        if now_ms >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now_ms + self.interval.as_millis() as u64,
                    Relaxed,
                    Relaxed,
                )
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Relaxed));
        }
        self.suppressed.fetch_add(1, Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_like_the_aws_daemon() {
        assert_eq!(Level::parse("prod"), Some(Level::Info));
        assert_eq!(Level::parse("dev"), Some(Level::Trace));
        assert_eq!(Level::parse("Debug"), Some(Level::Debug));
        assert_eq!(Level::parse("silent"), Some(Level::Silent));
        assert_eq!(Level::parse("verbose"), None);
    }

    #[test]
    fn timestamp_is_rfc3339_seconds() {
        let t = timestamp();
        assert_eq!(&t[4..5], "-");
        assert_eq!(&t[10..11], "T");
        assert!(t.ends_with('Z') || t.len() == 25, "{t}");
    }

    #[test]
    fn throttle_lets_one_through_per_interval_and_counts_the_rest() {
        let th = Throttle::new(Duration::from_secs(10));
        let t0 = th.start;
        assert_eq!(th.allow(t0), Some(0));
        assert_eq!(th.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(th.allow(t0 + Duration::from_secs(2)), None);
        assert_eq!(th.allow(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(th.allow(t0 + Duration::from_secs(11)), None);
    }
}
