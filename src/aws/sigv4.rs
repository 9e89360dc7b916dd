//! SigV4 signing of outbound requests with aws-sigv4, synchronously.

use std::fmt;
use std::time::SystemTime;

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
    use std::time::{Duration, UNIX_EPOCH};

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
