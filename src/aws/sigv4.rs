//! SigV4 signing of outbound requests with aws-sigv4, synchronously, and the signing clock
//! corrected from AWS's answers. [`CachedSigner`] signs the upload path's requests with the same
//! result and a signing key derived once per day and credentials.

mod cached;

pub use cached::CachedSigner;

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;

use super::credentials::Credentials;

/// What to sign for: signing region and service name (`xray`, `sts`).
#[derive(Debug, Clone)]
pub struct Scope {
    pub region: String,
    pub service: &'static str,
}

/// A request could not be signed (a malformed URL or header). Never carries a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignError(pub String);

impl fmt::Display for SignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot sign request: {}", self.0)
    }
}

impl std::error::Error for SignError {}

/// How far AWS's clock is ahead of ours (negative: behind), in milliseconds, as learnt from the
/// `Date` of an answer refusing a request as signed at the wrong time. Shared by every signer.
static CLOCK_OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// The time to sign with: our clock, corrected by what AWS told us of its own.
pub fn signing_time() -> SystemTime {
    shift(SystemTime::now(), CLOCK_OFFSET_MS.load(Ordering::Relaxed))
}

fn shift(t: SystemTime, ms: i64) -> SystemTime {
    let d = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 { t + d } else { t - d }
}

/// Learns AWS's clock from the `Date` header (`Thu, 03 Dec 2026 20:19:45 GMT`) of an answer that
/// refused a request as too old or too new, as the AWS SDKs do. Returns the offset in seconds and
/// whether it moved by more than a second (news worth a log line); `None` when the header cannot
/// be read.
pub fn correct_clock(date_header: &str, now: SystemTime) -> Option<(i64, bool)> {
    let server = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(date_header.trim())
        .ok()?;
    let ours = jiff::Timestamp::try_from(now).ok()?;
    let offset = server.as_millisecond() - ours.as_millisecond();
    let before = CLOCK_OFFSET_MS.swap(offset, Ordering::Relaxed);
    Some((offset / 1000, (offset - before).abs() > 1000))
}

/// Signs a request and returns the headers to add (`authorization`, `x-amz-date`, and
/// `x-amz-security-token` for temporary credentials). `headers` must be every header that will be
/// sent and signed, including `host`; nothing may be added or changed after signing.
pub fn sign_headers(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    creds: &Credentials,
    scope: &Scope,
    time: SystemTime,
) -> Result<Vec<(&'static str, String)>, SignError> {
    let identity: Identity = creds.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&scope.region)
        .name(scope.service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| SignError(e.to_string()))?
        .into();
    let request = SignableRequest::new(
        method,
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| SignError(e.to_string()))?;
    let (instructions, _signature) = sign(request, &params)
        .map_err(|e| SignError(e.to_string()))?
        .into_parts();
    let (headers, _params) = instructions.into_parts();
    Ok(headers
        .into_iter()
        .map(|h| (h.name(), h.value().to_string()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn learns_the_clock_offset_from_a_date_header() {
        // 2026-12-03T20:19:45Z is 1796329185.
        let ours = UNIX_EPOCH + Duration::from_secs(1_796_329_185 - 1200);
        assert_eq!(
            correct_clock("Thu, 03 Dec 2026 20:19:45 GMT", ours),
            Some((1200, true))
        );
        let signed = signing_time();
        let ahead = signed.duration_since(SystemTime::now()).unwrap_or_default();
        assert!(ahead > Duration::from_secs(1190), "{ahead:?}");
        // The same offset again is no news; garbage changes nothing.
        assert_eq!(
            correct_clock("Thu, 03 Dec 2026 20:19:45 GMT", ours),
            Some((1200, false))
        );
        assert_eq!(correct_clock("yesterday", ours), None);
        // Back in step.
        let now = UNIX_EPOCH + Duration::from_secs(1_796_329_185);
        assert_eq!(
            correct_clock("Thu, 03 Dec 2026 20:19:45 GMT", now),
            Some((0, true))
        );
        let skew = signing_time()
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        assert!(skew < Duration::from_secs(5), "{skew:?}");
    }

    fn creds(token: Option<&str>) -> Credentials {
        Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            token.map(String::from),
            None,
            "test",
        )
    }

    fn scope() -> Scope {
        Scope {
            region: "us-east-1".into(),
            service: "xray",
        }
    }

    fn header<'a>(h: &'a [(&'static str, String)], name: &str) -> Option<&'a str> {
        h.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn signs_with_date_scope_and_signed_headers() {
        let t = UNIX_EPOCH + Duration::from_secs(1_440_938_160); // 2015-08-30T12:36:00Z
        let h = sign_headers(
            "POST",
            "https://xray.us-east-1.amazonaws.com/TraceSegments",
            &[
                ("host", "xray.us-east-1.amazonaws.com"),
                ("content-type", "application/json"),
            ],
            b"{}",
            &creds(None),
            &scope(),
            t,
        )
        .unwrap();
        assert_eq!(header(&h, "x-amz-date"), Some("20150830T123600Z"));
        let auth = header(&h, "authorization").unwrap();
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/xray/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature="), "{auth}");
        assert!(header(&h, "x-amz-security-token").is_none());
        // Deterministic, and sensitive to the body.
        let again = sign_headers(
            "POST",
            "https://xray.us-east-1.amazonaws.com/TraceSegments",
            &[
                ("host", "xray.us-east-1.amazonaws.com"),
                ("content-type", "application/json"),
            ],
            b"{}",
            &creds(None),
            &scope(),
            t,
        )
        .unwrap();
        assert_eq!(header(&again, "authorization"), Some(auth));
        let other = sign_headers(
            "POST",
            "https://xray.us-east-1.amazonaws.com/TraceSegments",
            &[
                ("host", "xray.us-east-1.amazonaws.com"),
                ("content-type", "application/json"),
            ],
            b"{ }",
            &creds(None),
            &scope(),
            t,
        )
        .unwrap();
        assert_ne!(header(&other, "authorization"), Some(auth));
    }

    #[test]
    fn session_token_is_added() {
        let h = sign_headers(
            "POST",
            "http://127.0.0.1:1/TraceSegments",
            &[("host", "127.0.0.1:1")],
            b"",
            &creds(Some("TOKEN")),
            &scope(),
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(header(&h, "x-amz-security-token"), Some("TOKEN"));
        assert!(
            header(&h, "authorization")
                .unwrap()
                .contains("x-amz-security-token")
        );
    }
}
