//! Where credentials come from: the provider seam, the environment provider and static providers.
//!
//! Uploads ask a [`ProvideCredentials`] for credentials before each signed call. The full AWS chain
//! (profiles, web identity, container, IMDS, assume-role) plugs in behind the same trait: build it
//! with [`build_provider`] (see [`super::chain`]); the region steps after the environment are
//! [`resolve_region_extra`] (see [`super::region`]).

use std::fmt;

pub use aws_credential_types::Credentials;

pub use super::cache::{CacheConfig, CachingProvider};
pub use super::chain::{ChainOptions, build_provider, build_provider_with};
pub use super::region::{RegionLookup, lookup_region_extra, resolve_region_extra};

/// Why no credentials are available. Never carries a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialsError(pub String);

impl fmt::Display for CredentialsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CredentialsError {}

/// A source of AWS credentials. Implementations must be cheap to call (cache what they fetch) and
/// must never block the UDP path: only uploader and proxy threads call them.
pub trait ProvideCredentials: Send + Sync {
    /// Current credentials, or why there are none.
    fn credentials(&self) -> Result<Credentials, CredentialsError>;
    /// A short name of the source, for the start-up line (e.g. `environment`).
    fn source(&self) -> &str;
}

/// Static credentials from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`.
#[derive(Debug, Clone)]
pub struct EnvironmentProvider {
    creds: Credentials,
}

impl EnvironmentProvider {
    /// Reads the variables through `env`; `None` when the key id or secret is missing or empty.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Option<Self> {
        let get = |k: &str| env(k).filter(|v| !v.is_empty());
        let id = get("AWS_ACCESS_KEY_ID")?;
        let secret = get("AWS_SECRET_ACCESS_KEY")?;
        let token = get("AWS_SESSION_TOKEN");
        Some(EnvironmentProvider {
            creds: Credentials::new(id, secret, token, None, "environment"),
        })
    }
}

impl ProvideCredentials for EnvironmentProvider {
    fn credentials(&self) -> Result<Credentials, CredentialsError> {
        Ok(self.creds.clone())
    }
    fn source(&self) -> &str {
        "environment"
    }
}

/// Credentials that never change (static profile keys); `source` is a short name.
#[derive(Debug, Clone)]
pub struct StaticProvider {
    creds: Credentials,
    name: &'static str,
}

impl StaticProvider {
    pub fn new(creds: Credentials, name: &'static str) -> Self {
        StaticProvider { creds, name }
    }
}

impl ProvideCredentials for StaticProvider {
    fn credentials(&self) -> Result<Credentials, CredentialsError> {
        Ok(self.creds.clone())
    }
    fn source(&self) -> &str {
        self.name
    }
}

/// Nothing in the chain is configured: every call fails with the reason (which names every place
/// looked at). `source` is `none`.
#[derive(Debug, Clone)]
pub struct UnavailableCredentials {
    reason: String,
}

impl UnavailableCredentials {
    pub fn new(reason: impl Into<String>) -> Self {
        UnavailableCredentials {
            reason: reason.into(),
        }
    }
}

impl ProvideCredentials for UnavailableCredentials {
    fn credentials(&self) -> Result<Credentials, CredentialsError> {
        Err(CredentialsError(self.reason.clone()))
    }
    fn source(&self) -> &str {
        "none"
    }
}

/// Used when nothing provided credentials: every call fails with a message saying what to set.
#[derive(Debug, Default)]
pub struct NoCredentials;

impl ProvideCredentials for NoCredentials {
    fn credentials(&self) -> Result<Credentials, CredentialsError> {
        Err(CredentialsError(
            "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into(),
        ))
    }
    fn source(&self) -> &str {
        "none"
    }
}

/// The key id as it may appear in logs: its first 4 characters at most.
pub fn redacted_key_id(id: &str) -> String {
    let shown: String = id.chars().take(4).collect();
    format!("{shown}****")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn environment_needs_id_and_secret() {
        assert!(EnvironmentProvider::from_env(&env(&[("AWS_ACCESS_KEY_ID", "AKID")])).is_none());
        assert!(
            EnvironmentProvider::from_env(&env(&[
                ("AWS_ACCESS_KEY_ID", "AKID"),
                ("AWS_SECRET_ACCESS_KEY", "")
            ]))
            .is_none()
        );
        let p = EnvironmentProvider::from_env(&env(&[
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
            ("AWS_SESSION_TOKEN", "tok"),
        ]))
        .unwrap();
        let c = p.credentials().unwrap();
        assert_eq!(c.access_key_id(), "AKID");
        assert_eq!(c.secret_access_key(), "s3cr3t");
        assert_eq!(c.session_token(), Some("tok"));
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let p = EnvironmentProvider::from_env(&env(&[
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "very-secret-value"),
            ("AWS_SESSION_TOKEN", "secret-token"),
        ]))
        .unwrap();
        let dbg = format!("{p:?} {:?}", p.credentials());
        assert!(
            !dbg.contains("very-secret-value") && !dbg.contains("secret-token"),
            "{dbg}"
        );
        assert_eq!(redacted_key_id("AKIDEXAMPLE"), "AKID****");
        assert_eq!(redacted_key_id("ab"), "ab****");
    }
}
