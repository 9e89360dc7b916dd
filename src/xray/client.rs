//! The X-Ray client: [`crate::aws::signed::SignedClient`] for the `xray` service, with the
//! `X-Amzn-Xray-Timestamp` header X-Ray expects, and X-Ray's calls by name.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ureq::unversioned::resolver::{DefaultResolver, Resolver};

use crate::aws::credentials::ProvideCredentials;
use crate::aws::error_type::error_type;
pub use crate::aws::signed::{Answer, CallError};
use crate::aws::signed::{SignedClient, SignedConfig, Signing};
use crate::aws::sigv4::Scope;

/// Client settings.
#[derive(Clone)]
pub struct ClientConfig {
    /// Base URL, e.g. `https://xray.us-east-1.amazonaws.com` (no trailing slash).
    pub endpoint: String,
    /// Signing region.
    pub region: String,
    /// Full `User-Agent` value.
    pub user_agent: String,
    /// Whole-call timeout.
    pub timeout: Duration,
    /// Outbound HTTPS proxy, if any.
    pub proxy: Option<String>,
    /// Idle connections kept for reuse.
    pub max_idle: usize,
    /// Skip TLS certificate verification (`NoVerifySSL`; loudly warned at start-up).
    pub no_verify_ssl: bool,
}

/// The client. Cheap to share between threads.
pub struct XrayClient {
    inner: SignedClient,
}

impl XrayClient {
    /// Builds the client; fails on an unusable endpoint or proxy.
    pub fn new(
        cfg: &ClientConfig,
        credentials: Arc<dyn ProvideCredentials>,
    ) -> Result<Self, String> {
        Self::with_resolver(cfg, credentials, DefaultResolver::default())
    }

    /// [`XrayClient::new`] with another host lookup under the cache (tests point names at
    /// loopback with it).
    pub fn with_resolver(
        cfg: &ClientConfig,
        credentials: Arc<dyn ProvideCredentials>,
        resolver: impl Resolver,
    ) -> Result<Self, String> {
        let signed = SignedConfig {
            endpoint: cfg.endpoint.clone(),
            scope: Scope {
                region: cfg.region.clone(),
                service: "xray",
            },
            service_name: "X-Ray",
            time_header: Some(("x-amzn-xray-timestamp", xray_timestamp)),
            user_agent: cfg.user_agent.clone(),
            timeout: cfg.timeout,
            proxy: cfg.proxy.clone(),
            max_idle: cfg.max_idle,
            no_verify_ssl: cfg.no_verify_ssl,
        };
        Ok(XrayClient {
            inner: SignedClient::new(&signed, credentials, resolver)?,
        })
    }

    /// The base URL calls go to.
    pub fn endpoint(&self) -> &str {
        self.inner.endpoint()
    }

    /// Signs and POSTs `body` to `path` (e.g. `/TraceSegments`) and reads the whole answer,
    /// correcting the signing clock once if X-Ray says it is off (see [`SignedClient::post`]).
    pub fn post(&self, path: &str, body: &[u8]) -> Result<Answer, CallError> {
        self.inner.post(path, body)
    }

    /// PutTraceSegments with a body from [`super::segments::put_trace_segments_body`].
    /// Signed by [`crate::aws::sigv4::CachedSigner`]: the same signature as every other call's,
    /// for less work on the path every batch takes.
    pub fn put_trace_segments(&self, body: &[u8]) -> Result<Answer, CallError> {
        self.inner
            .post_signed("/TraceSegments", body, Signing::Cached)
    }

    /// PutTelemetryRecords with a body from [`super::telemetry_records::encode`]; `Err` says
    /// why it failed (`HTTP 403 AccessDeniedException`, or the transport error).
    pub fn put_telemetry_records(&self, body: &[u8]) -> Result<(), String> {
        match self.post("/TelemetryRecords", body) {
            Ok(a) if (200..300).contains(&a.status) => Ok(()),
            Ok(a) => Err(format!(
                "HTTP {} {}",
                a.status,
                error_type(a.error_type.as_deref(), &a.body).unwrap_or_else(|| "error".into())
            )),
            Err(e) => Err(e.detail),
        }
    }
}

/// `X-Amzn-Xray-Timestamp`: Unix seconds with 9 decimals.
pub fn xray_timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_has_nine_decimals() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        assert_eq!(xray_timestamp(t), "1700000000.000000005");
    }
}
