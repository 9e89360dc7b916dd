//! Forwarding a sampling call to X-Ray: re-signed with the daemon's credentials, path and body
//! untouched, the upstream's status and body answered.
//!
//! The request to X-Ray is rebuilt from scratch by [`XrayClient::post`]: none of the client's
//! headers are copied (hop-by-hop ones such as `Connection`, but also any `Authorization` or
//! `X-Amz-*` an SDK may send), only what X-Ray needs is sent and signed (`Host`,
//! `Content-Type: application/json`, `X-Amzn-Xray-Timestamp`, `User-Agent`, the SigV4 headers).
//! No compression is added after signing. Connections to X-Ray are kept alive and reused.
//! X-Ray's answer is relayed with its status, `Content-Type`, `x-amzn-ErrorType` and body.

use std::sync::Arc;
use std::time::Duration;

use super::http::Response;
use crate::aws::credentials::ProvideCredentials;
use crate::stats::BackendError;
use crate::xray::client::{ClientConfig, XrayClient};

/// Default time allowed for one forwarded call (connect, send, answer).
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);

/// The signed connection to X-Ray used by the proxy.
pub struct Upstream {
    client: XrayClient,
    credentials: Arc<dyn ProvideCredentials>,
}

impl Upstream {
    /// A client like the uploads' (`cfg`: endpoint, region, user agent, outbound proxy) with its
    /// own connection pool and the proxy's `timeout`.
    pub fn new(
        cfg: &ClientConfig,
        credentials: Arc<dyn ProvideCredentials>,
        timeout: Duration,
    ) -> Result<Upstream, String> {
        let cfg = ClientConfig {
            timeout,
            max_idle: 8,
            ..cfg.clone()
        };
        Ok(Upstream {
            client: XrayClient::new(&cfg, credentials.clone())?,
            credentials,
        })
    }

    /// The X-Ray base URL.
    pub fn endpoint(&self) -> &str {
        self.client.endpoint()
    }

    /// Whether credentials are available now (`Err`: why not, without secrets).
    pub fn credentials_status(&self) -> Result<(), String> {
        self.credentials
            .credentials()
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Signs and forwards `body` to `target` (path and query as the client sent them) and turns
    /// the outcome into the answer for the client.
    pub fn forward(&self, target: &str, body: &[u8]) -> Forwarded {
        // Never forward unsigned: without credentials, answer 503 and say why.
        if let Err(why) = self.credentials_status() {
            return Forwarded {
                response: no_credentials(),
                failure: Some(format!("no credentials: {why}")),
            };
        }
        match self.client.post(target, body) {
            Ok(answer) => {
                // The upstream's own Content-Type (an HTML error page must not be labelled JSON).
                let mut r = Response {
                    status: answer.status,
                    headers: Vec::new(),
                    body: answer.body,
                    close: false,
                };
                if let Some(t) = answer.content_type {
                    r.headers.push(("Content-Type", t));
                }
                if let Some(t) = answer.error_type {
                    r.headers.push(("x-amzn-ErrorType", t));
                }
                Forwarded {
                    response: r,
                    failure: None,
                }
            }
            Err(e) => {
                let (status, kind, what) = if e.class == BackendError::Timeout {
                    (504, "UpstreamTimeout", "did not answer in time")
                } else {
                    (502, "UpstreamUnavailable", "cannot be reached")
                };
                let message = format!("X-Ray at {} {what}: {}", self.endpoint(), e.detail);
                Forwarded {
                    response: Response::aws_error(status, kind, &format!("xrayd: {message}")),
                    failure: Some(message),
                }
            }
        }
    }
}

/// The outcome of a forwarded call.
#[derive(Debug)]
pub struct Forwarded {
    /// What to answer the client: X-Ray's answer, or xrayd's own 502/503/504.
    pub response: Response,
    /// Set when X-Ray gave no answer (for the log; never holds a secret).
    pub failure: Option<String>,
}

/// The answer when there are no credentials to sign with. Fixed: why goes to the log only (it
/// may quote a credentials endpoint's answer, which is not for every client of the port).
pub fn no_credentials() -> Response {
    Response::aws_error(
        503,
        "CredentialsUnavailable",
        "xrayd has no AWS credentials to sign the request with, so it was not forwarded; see the daemon's log for why",
    )
}

/// The answer when xrayd has no X-Ray upstream at all (it writes segments to a local sink).
pub fn no_upstream() -> Response {
    Response::aws_error(
        503,
        "NoUpstream",
        "xrayd runs with --local-sink and has no X-Ray endpoint to forward sampling calls to",
    )
}
