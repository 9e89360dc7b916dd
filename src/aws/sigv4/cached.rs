//! SigV4 for the upload hot path: the signing key derived once per day, region, service and
//! secret key, and the canonical request hashed as it is written, with no allocation.
//!
//! Byte-identical to [`super::sign_headers`] (aws-sigv4 with default settings) for the requests it
//! accepts: a plain path (unreserved characters and single slashes, no query), lower-case header
//! names, header values and session token of printable ASCII already in normal form. Anything else
//! is signed by aws-sigv4 itself, so no request is signed differently from before.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use super::{Scope, SignError, sign_headers};
use crate::aws::credentials::Credentials;

/// Most headers a request may bring to the fast path (`x-amz-date` and the token come on top).
const MAX_HEADERS: usize = 6;

/// A signer for one scope, keeping the last signing key it derived. Cheap to share between threads.
pub struct CachedSigner {
    scope: Scope,
    key: Mutex<Option<SigningKey>>,
    derivations: AtomicU64,
}

/// A derived signing key and what it was derived from.
struct SigningKey {
    /// `YYYYMMDD` of the signing time.
    date: [u8; 8],
    /// The secret access key it comes from (credentials are refreshed under a running daemon).
    secret: String,
    mac: HmacKey,
}

impl CachedSigner {
    /// A signer for `scope`, with no key yet.
    pub fn new(scope: Scope) -> Self {
        CachedSigner {
            scope,
            key: Mutex::new(None),
            derivations: AtomicU64::new(0),
        }
    }

    /// How many signing keys were derived so far (one per day and credentials change).
    pub fn key_derivations(&self) -> u64 {
        self.derivations.load(Ordering::Relaxed)
    }

    /// [`sign_headers`] for this signer's scope, with the same result.
    pub fn sign(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        creds: &Credentials,
        time: SystemTime,
    ) -> Result<Vec<(&'static str, String)>, SignError> {
        match self.sign_fast(method, url, headers, body, creds, time) {
            Some(signed) => Ok(signed),
            None => sign_headers(method, url, headers, body, creds, &self.scope, time),
        }
    }

    /// The fast path; `None` for a request outside its shape.
    fn sign_fast(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        creds: &Credentials,
        time: SystemTime,
    ) -> Option<Vec<(&'static str, String)>> {
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
            return None;
        }
        let path = plain_path(url)?;
        let stamp = DateTime::of(time)?;
        let date_time = stamp.as_str();
        let token = creds.session_token();
        if token.is_some_and(|t| !t.bytes().all(|b| (0x20..0x7f).contains(&b))) {
            return None;
        }
        if headers.len() > MAX_HEADERS {
            return None;
        }
        let mut all = [("", ""); MAX_HEADERS + 2];
        for (slot, &(name, value)) in all.iter_mut().zip(headers) {
            if !plain_name(name) || !plain_value(value) {
                return None;
            }
            *slot = (name, value);
        }
        let mut n = headers.len();
        all[n] = ("x-amz-date", date_time);
        n += 1;
        if let Some(t) = token {
            all[n] = ("x-amz-security-token", t);
            n += 1;
        }
        let all = &mut all[..n];
        all.sort_unstable_by(|a, b| a.0.cmp(b.0));
        if all.windows(2).any(|w| w[0].0 == w[1].0) {
            return None;
        }

        // The canonical request, hashed as it is written.
        let mut creq = Sha256::new();
        for part in [method, "\n", path, "\n\n"] {
            creq.update(part.as_bytes());
        }
        for (name, value) in all.iter() {
            for part in [*name, ":", *value, "\n"] {
                creq.update(part.as_bytes());
            }
        }
        creq.update(b"\n");
        let mut signed_headers = String::with_capacity(96);
        for (i, (name, _)) in all.iter().enumerate() {
            if i > 0 {
                signed_headers.push(';');
            }
            signed_headers.push_str(name);
        }
        creq.update(signed_headers.as_bytes());
        creq.update(b"\n");
        creq.update(hex(&Sha256::digest(body)));
        let creq_hash = hex(&creq.finalize());

        // The string to sign, MACed as it is written.
        let region = self.scope.region.as_str();
        let service = self.scope.service;
        let date = &date_time.as_bytes()[..8];
        let signature = self.with_key(date, creds.secret_access_key(), |key| {
            hex(&key.mac(&[
                b"AWS4-HMAC-SHA256\n",
                date_time.as_bytes(),
                b"\n",
                date,
                b"/",
                region.as_bytes(),
                b"/",
                service.as_bytes(),
                b"/aws4_request\n",
                &creq_hash,
            ]))
        });

        let access_key = creds.access_key_id();
        let mut authorization = String::with_capacity(
            120 + access_key.len() + region.len() + service.len() + signed_headers.len(),
        );
        for part in [
            "AWS4-HMAC-SHA256 Credential=",
            access_key,
            "/",
            &date_time[..8],
            "/",
            region,
            "/",
            service,
            "/aws4_request, SignedHeaders=",
            &signed_headers,
            ", Signature=",
            std::str::from_utf8(&signature).ok()?,
        ] {
            authorization.push_str(part);
        }
        let mut out = Vec::with_capacity(3);
        out.push(("x-amz-date", date_time.to_string()));
        out.push(("authorization", authorization));
        if let Some(t) = token {
            out.push(("x-amz-security-token", t.to_string()));
        }
        Some(out)
    }

    /// Runs `f` with the signing key of `date` and `secret`, derived only when either changed.
    fn with_key<T>(&self, date: &[u8], secret: &str, f: impl FnOnce(&HmacKey) -> T) -> T {
        let mut cached = self.key.lock();
        let fresh = cached
            .as_ref()
            .is_none_or(|k| k.date != date || k.secret != secret);
        if fresh {
            self.derivations.fetch_add(1, Ordering::Relaxed);
            let mut k = HmacKey::new(&[b"AWS4", secret.as_bytes()]).mac(&[date]);
            for part in [
                self.scope.region.as_bytes(),
                self.scope.service.as_bytes(),
                b"aws4_request",
            ] {
                k = HmacKey::new(&[&k]).mac(&[part]);
            }
            let mut d = [0u8; 8];
            d.copy_from_slice(date);
            *cached = Some(SigningKey {
                date: d,
                secret: secret.to_string(),
                mac: HmacKey::new(&[&k]),
            });
        }
        // A copy of the key's two hash states, so that the lock is not held while MACing.
        let key = cached
            .as_ref()
            .map(|k| k.mac.clone())
            .expect("key set above");
        drop(cached);
        f(&key)
    }
}

/// HMAC-SHA256 with its key's inner and outer blocks already hashed.
#[derive(Clone)]
struct HmacKey {
    inner: Sha256,
    outer: Sha256,
}

impl HmacKey {
    /// The key is the concatenation of `parts`.
    fn new(parts: &[&[u8]]) -> Self {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut block = [0u8; 64];
        if len > 64 {
            let mut h = Sha256::new();
            parts.iter().for_each(|p| h.update(p));
            block[..32].copy_from_slice(&h.finalize());
        } else {
            let mut at = 0;
            for p in parts {
                block[at..at + p.len()].copy_from_slice(p);
                at += p.len();
            }
        }
        let mut inner = Sha256::new();
        inner.update(block.map(|b| b ^ 0x36));
        let mut outer = Sha256::new();
        outer.update(block.map(|b| b ^ 0x5c));
        HmacKey { inner, outer }
    }

    /// The MAC of the concatenation of `parts`.
    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut inner = self.inner.clone();
        parts.iter().for_each(|p| inner.update(p));
        let mut outer = self.outer.clone();
        outer.update(inner.finalize());
        let mut out = [0u8; 32];
        out.copy_from_slice(&outer.finalize());
        out
    }
}

/// Lower-case hexadecimal of a SHA-256.
fn hex(bytes: &[u8]) -> [u8; 64] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (i, b) in bytes.iter().take(32).enumerate() {
        out[2 * i] = DIGITS[(b >> 4) as usize];
        out[2 * i + 1] = DIGITS[(b & 15) as usize];
    }
    out
}

/// The path of `url` when aws-sigv4 would sign it unchanged: `/` and non-empty segments of
/// unreserved characters other than `.`, no query or fragment.
fn plain_path(url: &str) -> Option<&str> {
    let rest = &url[url.find("://")? + 3..];
    let path = &rest[rest.find('/')?..];
    let segments_ok = path == "/"
        || path[1..].split('/').all(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'~')
        });
    segments_ok.then_some(path)
}

/// A header name aws-sigv4 signs as given: lower-case token characters, not one it adds itself
/// or leaves unsigned.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !matches!(
            name,
            "authorization"
                | "user-agent"
                | "x-amzn-trace-id"
                | "transfer-encoding"
                | "x-amz-date"
                | "x-amz-security-token"
                | "x-amz-content-sha256"
        )
}

/// A header value aws-sigv4 leaves unchanged: printable ASCII with no leading, trailing or
/// doubled space.
fn plain_value(value: &str) -> bool {
    value.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !value.starts_with(' ')
        && !value.ends_with(' ')
        && !value.contains("  ")
}

/// `YYYYMMDDTHHMMSSZ` (UTC), written without allocating.
struct DateTime([u8; 16]);

impl DateTime {
    /// `None` before 1970 or after 9999.
    fn of(t: SystemTime) -> Option<DateTime> {
        let secs = t.duration_since(UNIX_EPOCH).ok()?.as_secs();
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (y, m, d) = civil_from_days(days);
        if y > 9999 {
            return None;
        }
        let mut out = *b"00000000T000000Z";
        let mut put = |at: usize, width: usize, mut v: u64| {
            for i in (at..at + width).rev() {
                out[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, y);
        put(4, 2, m);
        put(6, 2, d);
        put(9, 2, rem / 3600);
        put(11, 2, rem / 60 % 60);
        put(13, 2, rem % 60);
        Some(DateTime(out))
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

/// Year, month, day of a day count since 1970-01-01 (proleptic Gregorian; H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn scope(region: &str) -> Scope {
        Scope {
            region: region.into(),
            service: "xray",
        }
    }

    fn creds(id: &str, secret: &str, token: Option<&str>) -> Credentials {
        Credentials::new(id, secret, token.map(String::from), None, "test")
    }

    /// xorshift64*, for reproducible variety.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn text(&mut self, len: usize, alphabet: &[u8]) -> String {
            (0..len)
                .map(|_| alphabet[(self.next() % alphabet.len() as u64) as usize] as char)
                .collect()
        }
    }

    #[test]
    fn dates_match_the_calendar() {
        let at = |s: u64| {
            DateTime::of(UNIX_EPOCH + Duration::from_secs(s))
                .unwrap()
                .as_str()
                .to_string()
        };
        assert_eq!(at(0), "19700101T000000Z");
        assert_eq!(at(1_440_938_160), "20150830T123600Z");
        assert_eq!(at(951_782_399), "20000228T235959Z");
        assert_eq!(at(951_782_400), "20000229T000000Z");
        assert_eq!(at(4_107_542_400), "21000301T000000Z");
        assert_eq!(at(1_796_329_185), "20261203T201945Z");
        assert!(DateTime::of(UNIX_EPOCH - Duration::from_secs(1)).is_none());
    }

    /// The fast path gives aws-sigv4's exact headers for many varied PutTraceSegments requests:
    /// times over three centuries (leap days and day ends included), bodies, tokens, hosts,
    /// regions, credentials.
    #[test]
    fn signs_byte_identically_to_aws_sigv4() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let key_chars = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        let secret_chars = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/";
        let token_chars = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/=";
        let regions = ["us-east-1", "eu-west-3", "ap-southeast-2", "us-gov-west-1"];
        let hosts = [
            "xray.us-east-1.amazonaws.com",
            "127.0.0.1:4566",
            "localhost:2000",
            "xray.cn-north-1.amazonaws.com.cn",
        ];
        for i in 0..2000 {
            let region = regions[i % regions.len()];
            let host = hosts[(i / 4) % hosts.len()];
            let signer = CachedSigner::new(scope(region));
            let id = format!("AKIA{}", rng.text(16, key_chars));
            let secret = rng.text(40, secret_chars);
            let token_len = 20 + (rng.next() % 400) as usize;
            let token = (i % 3 != 0).then(|| rng.text(token_len, token_chars));
            let c = creds(&id, &secret, token.as_deref());
            let secs = match i % 4 {
                0 => rng.next() % 4_102_444_800,              // up to 2100
                1 => (rng.next() % 50_000) * 86_400 + 86_399, // last second of a day
                2 => (rng.next() % 50_000) * 86_400,          // first second of a day
                _ => 1_796_329_185 + rng.next() % 1_000_000,
            };
            let t = UNIX_EPOCH + Duration::new(secs, (rng.next() % 1_000_000_000) as u32);
            let body: Vec<u8> = (0..(rng.next() % 3000)).map(|_| rng.next() as u8).collect();
            let stamp = crate::xray::client::xray_timestamp(t);
            let path = ["/TraceSegments", "/TelemetryRecords", "/a/b-c/d_e~f"][i % 3];
            let url = format!("http{}://{host}{path}", if i % 2 == 0 { "s" } else { "" });
            let headers = [
                ("host", host),
                ("content-type", "application/json"),
                ("x-amzn-xray-timestamp", stamp.as_str()),
            ];
            let n = [3, 2, 1][i % 3];
            let want =
                sign_headers("POST", &url, &headers[..n], &body, &c, &scope(region), t).unwrap();
            let got = signer
                .sign_fast("POST", &url, &headers[..n], &body, &c, t)
                .expect("a request of the fast path's shape");
            assert_eq!(got, want, "request {i}");
            // Again with the cached key.
            let again = signer
                .sign("POST", &url, &headers[..n], &body, &c, t)
                .unwrap();
            assert_eq!(again, want, "request {i}, cached key");
            assert_eq!(signer.key_derivations(), 1);
        }
    }

    /// Requests outside the fast path's shape are signed by aws-sigv4, as before.
    #[test]
    fn falls_back_outside_its_shape() {
        let signer = CachedSigner::new(scope("us-east-1"));
        let c = creds("AKIDEXAMPLE", "secret", Some("TOKEN"));
        let t = UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        let cases: &[(&str, &[(&str, &str)])] = &[
            ("https://h/a?b=c", &[("host", "h")]),
            ("https://h/a//b", &[("host", "h")]),
            ("https://h/a/./b", &[("host", "h")]),
            ("https://h/a%20b", &[("host", "h")]),
            ("https://h/a", &[("Host", "h")]),
            ("https://h/a", &[("host", " h")]),
            ("https://h/a", &[("host", "h"), ("x", "a  b")]),
            ("https://h/a", &[("host", "h"), ("user-agent", "u")]),
            ("https://h/a", &[("host", "h"), ("host", "g")]),
        ];
        for (url, headers) in cases {
            assert!(
                signer
                    .sign_fast("POST", url, headers, b"{}", &c, t)
                    .is_none(),
                "{url} {headers:?}"
            );
            assert_eq!(
                signer.sign("POST", url, headers, b"{}", &c, t),
                sign_headers("POST", url, headers, b"{}", &c, &scope("us-east-1"), t),
                "{url} {headers:?}"
            );
        }
        let odd_token = creds("AKIDEXAMPLE", "secret", Some("tok\u{e9}n"));
        assert!(
            signer
                .sign_fast("POST", "https://h/a", &[("host", "h")], b"", &odd_token, t)
                .is_none()
        );
    }

    fn signature(h: &[(&'static str, String)]) -> String {
        let auth = &h.iter().find(|(n, _)| *n == "authorization").unwrap().1;
        auth.rsplit("Signature=").next().unwrap().to_string()
    }

    /// The cached key follows the credentials: refreshed credentials sign with their own key.
    #[test]
    fn cached_key_changes_with_the_credentials() {
        let signer = CachedSigner::new(scope("us-east-1"));
        let t = UNIX_EPOCH + Duration::from_secs(1_796_329_185);
        let headers = [("host", "xray.us-east-1.amazonaws.com")];
        let url = "https://xray.us-east-1.amazonaws.com/TraceSegments";
        let sign = |c: &Credentials| signer.sign("POST", url, &headers, b"{}", c, t).unwrap();
        let reference =
            |c: &Credentials| sign_headers("POST", url, &headers, b"{}", c, &scope("us-east-1"), t);
        let old = creds("ASIAOLD", "old-secret", Some("old-token"));
        let new = creds("ASIANEW", "new-secret", Some("new-token"));
        let first = sign(&old);
        assert_eq!(Ok(first.clone()), reference(&old));
        assert_eq!(sign(&old), first);
        assert_eq!(signer.key_derivations(), 1);
        let refreshed = sign(&new);
        assert_eq!(Ok(refreshed.clone()), reference(&new));
        assert_ne!(signature(&refreshed), signature(&first));
        assert_eq!(signer.key_derivations(), 2);
        // Only the secret matters to the key: a new key id with the same secret keeps it, but
        // signs with the new id.
        let renamed = creds("ASIAOTHER", "new-secret", Some("new-token"));
        assert_eq!(Ok(sign(&renamed)), reference(&renamed));
        assert_eq!(signer.key_derivations(), 2);
    }

    /// The cached key follows the date: the first request of a new UTC day derives the new key.
    #[test]
    fn cached_key_changes_with_the_date() {
        let signer = CachedSigner::new(scope("eu-west-1"));
        let c = creds(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
        );
        let headers = [("host", "xray.eu-west-1.amazonaws.com")];
        let url = "https://xray.eu-west-1.amazonaws.com/TraceSegments";
        let midnight = 1_796_342_400; // 2026-12-04T00:00:00Z
        let mut last = String::new();
        for (secs, derivations) in [
            (midnight - 3600, 1),
            (midnight - 1, 1),
            (midnight, 2),
            (midnight + 7200, 2),
            (midnight - 1, 3), // the clock corrected back over midnight
        ] {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            let got = signer.sign("POST", url, &headers, b"{}", &c, t).unwrap();
            let want =
                sign_headers("POST", url, &headers, b"{}", &c, &scope("eu-west-1"), t).unwrap();
            assert_eq!(got, want, "at {secs}");
            assert_ne!(signature(&got), last);
            last = signature(&got);
            assert_eq!(signer.key_derivations(), derivations, "at {secs}");
        }
    }
}
