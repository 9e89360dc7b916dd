//! What every credential source implements: one blocking fetch, plus the parsers they share.
//!
//! Fetchers are called only from the refresher thread of a
//! [`CachingProvider`](super::cache::CachingProvider), never from the UDP path or an uploader.

use std::time::SystemTime;

use simd_json::prelude::*;

use super::credentials::{Credentials, CredentialsError};

/// A source that can be asked, slowly, for fresh credentials.
pub trait FetchCredentials: Send + Sync {
    /// Fetches credentials now (network calls, files, processes). The error never holds a secret.
    fn fetch(&self) -> Result<Credentials, CredentialsError>;
}

/// Credentials known up front (environment variables, static profile keys).
#[derive(Debug, Clone)]
pub struct StaticFetch(pub Credentials);

impl FetchCredentials for StaticFetch {
    fn fetch(&self) -> Result<Credentials, CredentialsError> {
        Ok(self.0.clone())
    }
}

impl<T: FetchCredentials + ?Sized> FetchCredentials for Box<T> {
    fn fetch(&self) -> Result<Credentials, CredentialsError> {
        (**self).fetch()
    }
}

impl<T: FetchCredentials + ?Sized> FetchCredentials for std::sync::Arc<T> {
    fn fetch(&self) -> Result<Credentials, CredentialsError> {
        (**self).fetch()
    }
}

/// Parses an RFC 3339 / ISO 8601 timestamp such as `2026-01-02T03:04:05Z`, with optional fractional
/// seconds and a numeric offset.
pub fn parse_expiration(s: &str) -> Result<SystemTime, String> {
    let s = s.trim();
    let ts: jiff::Timestamp = s
        .parse()
        // The value is not quoted back: a malformed answer could carry anything in that field.
        .map_err(|_| {
            format!(
                "Expiration is not an RFC 3339 timestamp ({} characters)",
                s.chars().count()
            )
        })?;
    Ok(SystemTime::from(ts))
}

/// Reads the JSON credentials document of the container endpoint, IMDS (`Token`) or a
/// `credential_process` (`SessionToken`): `AccessKeyId`, `SecretAccessKey`, the token field,
/// optional `Expiration`. `what` names the source in error messages; the document's content is
/// never quoted (it holds secrets).
pub fn credentials_from_json(
    body: &[u8],
    token_field: &str,
    provider_name: &'static str,
    what: &str,
) -> Result<Credentials, CredentialsError> {
    let mut copy = body.to_vec();
    let v = parse_answer(&mut copy, what)?;
    if v.as_object().is_none() {
        return Err(CredentialsError(format!(
            "{what}: the answer is not a JSON object"
        )));
    }
    let field = |k: &str| string_field(&v, k);
    let id = field("AccessKeyId")
        .ok_or_else(|| CredentialsError(format!("{what}: the answer has no AccessKeyId")))?;
    let secret = field("SecretAccessKey")
        .ok_or_else(|| CredentialsError(format!("{what}: the answer has no SecretAccessKey")))?;
    let token = field(token_field);
    let expiry = match field("Expiration") {
        Some(e) => {
            Some(parse_expiration(&e).map_err(|m| CredentialsError(format!("{what}: {m}")))?)
        }
        None => None,
    };
    Ok(Credentials::new(id, secret, token, expiry, provider_name))
}

/// Parses a credentials answer (`copy` is the scratch copy simd-json works in). The error names
/// `what` and the answer's size, never its content: it holds secrets.
pub fn parse_answer<'a>(
    copy: &'a mut [u8],
    what: &str,
) -> Result<simd_json::BorrowedValue<'a>, CredentialsError> {
    let len = copy.len();
    simd_json::to_borrowed_value(copy).map_err(|_| {
        CredentialsError(format!(
            "{what}: the answer is not a JSON document ({len} bytes)"
        ))
    })
}

/// The trimmed string field `key` of a credentials answer's object, if present and not empty.
pub fn string_field(object: &simd_json::BorrowedValue<'_>, key: &str) -> Option<String> {
    object
        .get(key)
        .and_then(|x| x.as_str())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// A string field of a JSON object, for non-secret fields (`Code`, `Message`, `Version`...).
pub fn json_field(body: &[u8], key: &str) -> Option<String> {
    let mut copy = body.to_vec();
    let v = simd_json::to_borrowed_value(&mut copy).ok()?;
    let x = v.get(key)?;
    if let Some(s) = x.as_str() {
        return Some(s.to_string());
    }
    if let Some(n) = x.as_i64() {
        return Some(n.to_string());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn expiration_formats() {
        let t = parse_expiration("2026-01-02T03:04:05Z").unwrap();
        assert_eq!(t, UNIX_EPOCH + Duration::from_secs(1_767_323_045));
        assert_eq!(parse_expiration("2026-01-02T03:04:05.000Z").unwrap(), t);
        assert_eq!(parse_expiration("2026-01-02T04:04:05+01:00").unwrap(), t);
        assert!(parse_expiration("tomorrow").is_err());
        // A malformed answer may carry anything in that field: it is never quoted back.
        let e = parse_expiration("SEKRIT-token-material").unwrap_err();
        assert!(!e.contains("SEKRIT"), "{e}");
    }

    #[test]
    fn json_document_is_read_and_never_quoted() {
        let c = credentials_from_json(
            br#"{"AccessKeyId":"ASIAX","SecretAccessKey":"sec","Token":"tok","Expiration":"2030-01-01T00:00:00Z"}"#,
            "Token",
            "container",
            "container endpoint",
        )
        .unwrap();
        assert_eq!(c.access_key_id(), "ASIAX");
        assert_eq!(c.session_token(), Some("tok"));
        assert!(c.expiry().is_some());
        let e = credentials_from_json(
            br#"{"AccessKeyId":"ASIAX","SecretAccessKey":"very-secret"}x"#,
            "Token",
            "container",
            "container endpoint",
        )
        .unwrap_err();
        assert!(!e.0.contains("very-secret"), "{e}");
        let e = credentials_from_json(
            br#"{"SecretAccessKey":"very-secret"}"#,
            "Token",
            "container",
            "container endpoint",
        )
        .unwrap_err();
        assert!(e.0.contains("AccessKeyId") && !e.0.contains("very-secret"));
    }
}
