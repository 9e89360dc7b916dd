//! Caching and refresh ahead of expiry, on a background thread.
//!
//! [`CachingProvider::credentials`] only reads the cache under a short lock: it never performs I/O,
//! so uploaders (and certainly the UDP path) are never blocked by STS, IMDS or a slow
//! `credential_process`. A dedicated thread fetches at start, then again about 5 minutes before the
//! credentials expire. A failed refresh keeps the current credentials while they are valid and is
//! retried with exponential backoff; while nothing valid is cached, `credentials()` returns an error
//! that says why (never a secret).

use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use super::credentials::{Credentials, CredentialsError, ProvideCredentials, redacted_key_id};
use super::fetch::FetchCredentials;
use crate::log::Level;

/// When to refresh and how to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// Refresh this long before the credentials expire (for lifetimes shorter than twice this,
    /// refresh at half the remaining lifetime).
    pub refresh_before_expiry: Duration,
    /// Never refresh more often than this after a success.
    pub min_refresh_interval: Duration,
    /// First retry delay after a failed fetch; doubles on each further failure.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            refresh_before_expiry: Duration::from_secs(300),
            min_refresh_interval: Duration::from_secs(1),
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
        }
    }
}

impl CacheConfig {
    /// How long after a successful fetch to fetch again; `None` for credentials that never expire.
    pub fn refresh_delay(&self, expiry: Option<SystemTime>, now: SystemTime) -> Option<Duration> {
        let expiry = expiry?;
        let remaining = expiry.duration_since(now).unwrap_or(Duration::ZERO);
        let delay = if remaining > self.refresh_before_expiry * 2 {
            remaining - self.refresh_before_expiry
        } else {
            remaining / 2
        };
        Some(delay.max(self.min_refresh_interval))
    }

    /// The delay before retry number `failures` (1 = first retry).
    pub fn retry_delay(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        self.retry_base
            .saturating_mul(factor)
            .min(self.retry_max)
            .max(Duration::from_millis(1))
    }
}

#[derive(Default)]
struct State {
    creds: Option<Credentials>,
    last_error: Option<String>,
    attempts: u64,
    successes: u64,
    failures_in_a_row: u32,
    stop: bool,
}

struct Shared {
    fetcher: Box<dyn FetchCredentials>,
    stats: Option<Arc<crate::stats::Stats>>,
    description: String,
    config: CacheConfig,
    state: Mutex<State>,
    changed: Condvar,
}

/// A provider that serves cached credentials and refreshes them on its own thread.
pub struct CachingProvider {
    shared: Arc<Shared>,
    name: String,
}

impl fmt::Debug for CachingProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self
            .shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("CachingProvider")
            .field("source", &self.name)
            .field("description", &self.shared.description)
            .field(
                "key_id",
                &st.creds
                    .as_ref()
                    .map(|c| redacted_key_id(c.access_key_id())),
            )
            .field("attempts", &st.attempts)
            .finish()
    }
}

impl CachingProvider {
    /// Starts the refresher thread, which fetches at once. `name` is the short source name
    /// (`ProvideCredentials::source`), `description` the longer one used in log lines and errors.
    pub fn start(
        fetcher: Box<dyn FetchCredentials>,
        name: impl Into<String>,
        description: impl Into<String>,
        config: CacheConfig,
    ) -> Result<CachingProvider, CredentialsError> {
        Self::start_counted(fetcher, name, description, config, None)
    }

    /// [`CachingProvider::start`], counting every fetch in `stats` (`credential_refreshes` and
    /// `credential_refresh_errors`).
    pub fn start_counted(
        fetcher: Box<dyn FetchCredentials>,
        name: impl Into<String>,
        description: impl Into<String>,
        config: CacheConfig,
        stats: Option<Arc<crate::stats::Stats>>,
    ) -> Result<CachingProvider, CredentialsError> {
        let shared = Arc::new(Shared {
            fetcher,
            stats,
            description: description.into(),
            config,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let worker = shared.clone();
        std::thread::Builder::new()
            .name("xrayd-credentials".into())
            .spawn(move || refresh_loop(&worker))
            .map_err(|e| CredentialsError(format!("cannot start the credentials thread: {e}")))?;
        Ok(CachingProvider {
            shared,
            name: name.into(),
        })
    }

    /// Waits (at most `timeout`) until the first fetch has finished, successfully or not; true if
    /// it has.
    pub fn wait_until_ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self
            .shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while st.attempts == 0 {
            let timed_out;
            (st, timed_out) = wait_until(&self.shared.changed, st, deadline);
            if timed_out {
                return st.attempts > 0;
            }
        }
        true
    }

    /// Waits (at most `timeout`) until at least `n` fetches have succeeded; true if they have.
    pub fn wait_for_successes(&self, n: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self
            .shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while st.successes < n {
            let timed_out;
            (st, timed_out) = wait_until(&self.shared.changed, st, deadline);
            if timed_out {
                return st.successes >= n;
            }
        }
        true
    }

    /// Fetches finished so far (successful or not) and successful ones.
    pub fn fetch_counts(&self) -> (u64, u64) {
        let st = self
            .shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        (st.attempts, st.successes)
    }

    /// The longer description of the source.
    pub fn description(&self) -> &str {
        &self.shared.description
    }
}

impl Drop for CachingProvider {
    fn drop(&mut self) {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .stop = true;
        self.shared.changed.notify_all();
    }
}

impl ProvideCredentials for CachingProvider {
    fn credentials(&self) -> Result<Credentials, CredentialsError> {
        let st = self
            .shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = SystemTime::now();
        let desc = &self.shared.description;
        match &st.creds {
            Some(c) if c.expiry().is_none_or(|e| e > now) => Ok(c.clone()),
            Some(c) => {
                let ago = c
                    .expiry()
                    .and_then(|e| now.duration_since(e).ok())
                    .unwrap_or_default()
                    .as_secs();
                Err(CredentialsError(format!(
                    "AWS credentials from {desc} expired {ago} s ago and could not be refreshed: {}",
                    st.last_error.as_deref().unwrap_or("refresh pending")
                )))
            }
            None => Err(CredentialsError(match &st.last_error {
                Some(e) => format!("no AWS credentials yet from {desc}: {e} (retrying)"),
                None => format!("AWS credentials from {desc} are still being fetched"),
            })),
        }
    }

    fn source(&self) -> &str {
        &self.name
    }
}

/// Waits on `cv` until notified or `deadline`; true when the deadline has passed.
fn wait_until<'a, T>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    deadline: Instant,
) -> (MutexGuard<'a, T>, bool) {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return (guard, true);
    }
    let (guard, _) = cv
        .wait_timeout(guard, left)
        .unwrap_or_else(PoisonError::into_inner);
    (guard, Instant::now() >= deadline)
}

fn refresh_loop(shared: &Shared) {
    loop {
        let result = shared.fetcher.fetch();
        let now = SystemTime::now();
        let desc = &shared.description;
        let mut st = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
        if st.stop {
            return;
        }
        st.attempts += 1;
        if let Some(stats) = &shared.stats {
            let counter = if result.is_ok() {
                &stats.credential_refreshes
            } else {
                &stats.credential_refresh_errors
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let (next, line) = match result {
            Ok(c) => {
                let expires = match c.expiry().map(|e| e.duration_since(now)) {
                    Some(Ok(d)) => format!(", valid for {} s", d.as_secs()),
                    Some(Err(_)) => ", already expired".to_string(),
                    None => String::new(),
                };
                let key = redacted_key_id(c.access_key_id());
                let line = if st.successes == 0 || st.failures_in_a_row > 0 {
                    (
                        Level::Info,
                        format!("Got AWS credentials from {desc} (key id {key}{expires})"),
                    )
                } else {
                    (
                        Level::Debug,
                        format!("Refreshed AWS credentials from {desc} (key id {key}{expires})"),
                    )
                };
                let delay = shared.config.refresh_delay(c.expiry(), now);
                st.creds = Some(c);
                st.last_error = None;
                st.successes += 1;
                st.failures_in_a_row = 0;
                (delay, line)
            }
            Err(e) => {
                st.failures_in_a_row = st.failures_in_a_row.saturating_add(1);
                let delay = shared.config.retry_delay(st.failures_in_a_row);
                let valid_for = st.creds.as_ref().and_then(|c| match c.expiry() {
                    None => Some(None),
                    Some(x) => x.duration_since(now).ok().map(Some),
                });
                let msg = match valid_for {
                    Some(left) => format!(
                        "Cannot refresh AWS credentials from {desc}: {e}; keeping the current ones{}; retrying in {:.1} s",
                        left.map(|d| format!(" (valid for {} s more)", d.as_secs()))
                            .unwrap_or_default(),
                        delay.as_secs_f64()
                    ),
                    None => format!(
                        "Cannot get AWS credentials from {desc}: {e}; retrying in {:.1} s (segments stay buffered meanwhile)",
                        delay.as_secs_f64()
                    ),
                };
                st.last_error = Some(e.0);
                (Some(delay), (Level::Warn, msg))
            }
        };
        shared.changed.notify_all();
        drop(st);
        // Logged outside the lock, so a slow log destination never delays `credentials()`.
        crate::log::write(line.0, format_args!("{}", line.1));
        let deadline = next.map(|d| Instant::now() + d);
        let mut st = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if st.stop {
                return;
            }
            match deadline {
                Some(d) => {
                    let timed_out;
                    (st, timed_out) = wait_until(&shared.changed, st, d);
                    if timed_out {
                        break;
                    }
                }
                None => {
                    st = shared
                        .changed
                        .wait(st)
                        .unwrap_or_else(PoisonError::into_inner)
                }
            }
        }
        if st.stop {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn cfg() -> CacheConfig {
        CacheConfig {
            refresh_before_expiry: Duration::from_secs(300),
            min_refresh_interval: Duration::from_millis(50),
            retry_base: Duration::from_millis(20),
            retry_max: Duration::from_millis(100),
        }
    }

    #[test]
    fn refresh_is_scheduled_ahead_of_expiry() {
        let c = CacheConfig::default();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(c.refresh_delay(None, now), None);
        assert_eq!(
            c.refresh_delay(Some(now + Duration::from_secs(3600)), now),
            Some(Duration::from_secs(3300))
        );
        assert_eq!(
            c.refresh_delay(Some(now + Duration::from_secs(400)), now),
            Some(Duration::from_secs(200))
        );
        assert_eq!(
            c.refresh_delay(Some(now - Duration::from_secs(5)), now),
            Some(Duration::from_secs(1))
        );
        assert_eq!(c.retry_delay(1), Duration::from_secs(1));
        assert_eq!(c.retry_delay(3), Duration::from_secs(4));
        assert_eq!(c.retry_delay(40), Duration::from_secs(60));
    }

    struct Flaky {
        calls: AtomicU32,
        fail_from: u32,
    }

    impl FetchCredentials for Flaky {
        fn fetch(&self) -> Result<Credentials, CredentialsError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n >= self.fail_from {
                return Err(CredentialsError("endpoint down".into()));
            }
            Ok(Credentials::new(
                format!("AKID{n}"),
                "secret-value",
                Some("token-value".into()),
                Some(SystemTime::now() + Duration::from_secs(3600)),
                "test",
            ))
        }
    }

    #[test]
    fn serves_cache_and_reports_errors_without_secrets() {
        let p = CachingProvider::start(
            Box::new(Flaky {
                calls: AtomicU32::new(0),
                fail_from: 0,
            }),
            "test",
            "a test source",
            cfg(),
        )
        .unwrap();
        assert!(p.wait_until_ready(Duration::from_secs(5)));
        let e = p.credentials().unwrap_err();
        assert!(
            e.0.contains("a test source") && e.0.contains("endpoint down"),
            "{e}"
        );
        let p = CachingProvider::start(
            Box::new(Flaky {
                calls: AtomicU32::new(0),
                fail_from: 1,
            }),
            "test",
            "a test source",
            cfg(),
        )
        .unwrap();
        assert!(p.wait_for_successes(1, Duration::from_secs(5)));
        let c = p.credentials().unwrap();
        assert_eq!(c.access_key_id(), "AKID0");
        let dbg = format!("{p:?}");
        assert!(
            !dbg.contains("secret-value") && !dbg.contains("token-value"),
            "{dbg}"
        );
    }
}
