//! A caching resolver for the signed AWS client ([`super::signed`]) that talks to X-Ray.
//!
//! The HTTP client looks up the host before every request, even when it then reuses a pooled
//! connection. For `xray.<region>.amazonaws.com` that is a blocking `getaddrinfo` per upload: with
//! Kubernetes' `ndots: 5` each one walks the search domains first, so a busy node would send
//! several DNS queries per batch to the cluster's DNS, and a DNS hiccup would fail uploads that
//! had a healthy connection. Answers are therefore kept for [`FRESH`]; when a refresh fails, the
//! last good answer is used for up to [`STALE_LIMIT`] (looked up again every [`RETRY`]).

use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// How long a lookup is used without asking again.
pub const FRESH: Duration = Duration::from_secs(30);
/// After a failed refresh: how long until the next attempt.
pub const RETRY: Duration = Duration::from_secs(5);
/// The oldest answer still used while lookups fail.
pub const STALE_LIMIT: Duration = Duration::from_secs(600);
/// Hosts remembered (the endpoint, a proxy); the least recently resolved is forgotten first.
const MAX_HOSTS: usize = 8;

struct Entry {
    scheme: String,
    authority: String,
    addrs: ResolvedSocketAddrs,
    /// When `addrs` was looked up.
    resolved: Instant,
    /// When to look up again.
    next_check: Instant,
}

/// Wraps a resolver (ureq's default in the product) with the cache.
pub struct CachingResolver<R> {
    inner: R,
    entries: Mutex<Vec<Entry>>,
}

impl<R> fmt::Debug for CachingResolver<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachingResolver").finish_non_exhaustive()
    }
}

impl<R: Resolver> CachingResolver<R> {
    pub fn new(inner: R) -> Self {
        CachingResolver {
            inner,
            entries: Mutex::new(Vec::new()),
        }
    }

    /// [`Resolver::resolve`] at a given time.
    pub fn resolve_at(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
        now: Instant,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let scheme = uri.scheme_str().unwrap_or("");
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
        let find = |entries: &[Entry]| {
            entries
                .iter()
                .position(|e| e.scheme == scheme && e.authority == authority)
        };
        {
            let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(i) = find(&entries)
                && now < entries[i].next_check
            {
                return Ok(entries[i].addrs.clone());
            }
        }
        // Looked up without the lock: a slow DNS server must not hold up other hosts.
        let result = self.inner.resolve(uri, config, timeout);
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let found = find(&entries);
        match (result, found) {
            (Ok(addrs), Some(i)) => {
                let e = &mut entries[i];
                e.addrs = addrs.clone();
                e.resolved = now;
                e.next_check = now + FRESH;
                Ok(addrs)
            }
            (Ok(addrs), None) => {
                if entries.len() >= MAX_HOSTS
                    && let Some(oldest) = (0..entries.len()).min_by_key(|&i| entries[i].resolved)
                {
                    entries.swap_remove(oldest);
                }
                entries.push(Entry {
                    scheme: scheme.to_string(),
                    authority: authority.to_string(),
                    addrs: addrs.clone(),
                    resolved: now,
                    next_check: now + FRESH,
                });
                Ok(addrs)
            }
            (Err(e), Some(i))
                if now.saturating_duration_since(entries[i].resolved) < STALE_LIMIT =>
            {
                let entry = &mut entries[i];
                entry.next_check = now + RETRY;
                crate::warn!(
                    "Looking up {authority} failed ({e}); using the addresses found {:.0} seconds ago",
                    now.saturating_duration_since(entry.resolved).as_secs_f64()
                );
                Ok(entry.addrs.clone())
            }
            (Err(e), found) => {
                if let Some(i) = found {
                    entries.swap_remove(i);
                }
                Err(e)
            }
        }
    }
}

impl<R: Resolver> Resolver for CachingResolver<R> {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        self.resolve_at(uri, config, timeout, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};

    /// Answers `10.0.0.N:port`, N counting lookups, or fails while `fail` is set.
    #[derive(Debug, Default)]
    struct Counting {
        lookups: AtomicU32,
        fail: AtomicBool,
    }

    impl Resolver for Counting {
        fn resolve(
            &self,
            uri: &Uri,
            _config: &Config,
            _timeout: NextTimeout,
        ) -> Result<ResolvedSocketAddrs, ureq::Error> {
            let n = self.lookups.fetch_add(1, Relaxed) + 1;
            if self.fail.load(Relaxed) {
                return Err(ureq::Error::HostNotFound);
            }
            let default = if uri.scheme_str() == Some("http") {
                80
            } else {
                443
            };
            let port = uri.port_u16().unwrap_or(default);
            let mut addrs = self.empty();
            addrs.push(SocketAddr::from(([10, 0, 0, n as u8], port)));
            Ok(addrs)
        }
    }

    fn lookup(
        r: &CachingResolver<Counting>,
        uri: &str,
        now: Instant,
    ) -> Result<Vec<SocketAddr>, ureq::Error> {
        let uri: Uri = uri.parse().unwrap();
        let config = ureq::Agent::config_builder().build();
        r.resolve_at(&uri, &config, NextTimeout::default(), now)
            .map(|a| a.iter().copied().collect())
    }

    fn addr(n: u8, port: u16) -> Vec<SocketAddr> {
        vec![SocketAddr::from(([10, 0, 0, n], port))]
    }

    #[test]
    fn one_lookup_per_host_while_fresh() {
        let r = CachingResolver::new(Counting::default());
        let t = Instant::now();
        let x = "https://xray.us-east-1.amazonaws.com/TraceSegments";
        assert_eq!(lookup(&r, x, t).unwrap(), addr(1, 443));
        assert_eq!(lookup(&r, x, t + FRESH / 2).unwrap(), addr(1, 443));
        assert_eq!(r.inner.lookups.load(Relaxed), 1);
        // Another host, or the same host on another port or scheme, is looked up on its own.
        assert_eq!(
            lookup(&r, "https://sts.amazonaws.com/", t).unwrap(),
            addr(2, 443)
        );
        assert_eq!(
            lookup(&r, "https://xray.us-east-1.amazonaws.com:8443/", t).unwrap(),
            addr(3, 8443)
        );
        assert_eq!(
            lookup(&r, "http://xray.us-east-1.amazonaws.com/", t).unwrap(),
            addr(4, 80)
        );
        // Expired: asked again, new answer used.
        assert_eq!(lookup(&r, x, t + FRESH).unwrap(), addr(5, 443));
        assert_eq!(lookup(&r, x, t + FRESH * 2 - RETRY).unwrap(), addr(5, 443));
        assert_eq!(r.inner.lookups.load(Relaxed), 5);
    }

    #[test]
    fn failed_refresh_uses_the_last_answer_within_the_stale_limit() {
        let r = CachingResolver::new(Counting::default());
        let t = Instant::now();
        let x = "https://xray.eu-west-1.amazonaws.com/";
        assert_eq!(lookup(&r, x, t).unwrap(), addr(1, 443));
        r.inner.fail.store(true, Relaxed);
        let t1 = t + FRESH;
        assert_eq!(lookup(&r, x, t1).unwrap(), addr(1, 443));
        assert_eq!(r.inner.lookups.load(Relaxed), 2);
        // Not asked again before RETRY.
        assert_eq!(lookup(&r, x, t1 + RETRY / 2).unwrap(), addr(1, 443));
        assert_eq!(r.inner.lookups.load(Relaxed), 2);
        assert_eq!(lookup(&r, x, t1 + RETRY).unwrap(), addr(1, 443));
        assert_eq!(r.inner.lookups.load(Relaxed), 3);
        // Too old: the failure shows, and the entry is gone.
        assert!(matches!(
            lookup(&r, x, t + STALE_LIMIT),
            Err(ureq::Error::HostNotFound)
        ));
        r.inner.fail.store(false, Relaxed);
        assert_eq!(lookup(&r, x, t + STALE_LIMIT).unwrap(), addr(5, 443));
    }

    #[test]
    fn a_first_failure_is_not_remembered() {
        let r = CachingResolver::new(Counting::default());
        let t = Instant::now();
        let x = "https://xray.ap-south-1.amazonaws.com/";
        r.inner.fail.store(true, Relaxed);
        assert!(lookup(&r, x, t).is_err());
        r.inner.fail.store(false, Relaxed);
        assert_eq!(lookup(&r, x, t).unwrap(), addr(2, 443));
    }

    #[test]
    fn remembers_a_bounded_number_of_hosts() {
        let r = CachingResolver::new(Counting::default());
        let t = Instant::now();
        for i in 0..(MAX_HOSTS as u32 + 4) {
            let uri = format!("https://h{i}.example/");
            lookup(&r, &uri, t + Duration::from_secs(i.into())).unwrap();
        }
        assert_eq!(
            r.entries
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len(),
            MAX_HOSTS
        );
        // The most recent host is still cached; the first was forgotten.
        let before = r.inner.lookups.load(Relaxed);
        let last = format!("https://h{}.example/", MAX_HOSTS + 3);
        lookup(&r, &last, t + Duration::from_secs(20)).unwrap();
        assert_eq!(r.inner.lookups.load(Relaxed), before);
        lookup(&r, "https://h0.example/", t + Duration::from_secs(20)).unwrap();
        assert_eq!(r.inner.lookups.load(Relaxed), before + 1);
    }
}
