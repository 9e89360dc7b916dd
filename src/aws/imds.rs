//! EC2 instance metadata, IMDSv2 only: a session token from `PUT /latest/api/token` first, then
//! GETs carrying it. Short timeouts (about 1 s) so that start-up off EC2 is not slowed.

use std::time::Duration;

use super::credentials::{Credentials, CredentialsError};
use super::fetch::{FetchCredentials, credentials_from_json, json_field};
use super::http::{Http, excerpt, redact_url};

/// The usual IPv4 endpoint.
pub const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
/// The IPv6 endpoint (`AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6`).
pub const IPV6_ENDPOINT: &str = "http://[fd00:ec2::254]";
pub const ENV_ENDPOINT: &str = "AWS_EC2_METADATA_SERVICE_ENDPOINT";
pub const ENV_ENDPOINT_MODE: &str = "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE";
pub const ENV_DISABLED: &str = "AWS_EC2_METADATA_DISABLED";
/// Default timeout of each IMDS call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

const TOKEN_PATH: &str = "/latest/api/token";
const TOKEN_TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
const CREDENTIALS_PATH: &str = "/latest/meta-data/iam/security-credentials/";
const REGION_PATH: &str = "/latest/meta-data/placement/region";

/// True when `AWS_EC2_METADATA_DISABLED` is `true` (any case).
pub fn is_disabled(env: &dyn Fn(&str) -> Option<String>) -> bool {
    env(ENV_DISABLED).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// The IMDS base URL: `AWS_EC2_METADATA_SERVICE_ENDPOINT`, else by endpoint mode (IPv4 default).
pub fn endpoint_from_env(env: &dyn Fn(&str) -> Option<String>) -> String {
    if let Some(e) = env(ENV_ENDPOINT).filter(|v| !v.trim().is_empty()) {
        return e.trim().trim_end_matches('/').to_string();
    }
    match env(ENV_ENDPOINT_MODE) {
        Some(m) if m.trim().eq_ignore_ascii_case("ipv6") => IPV6_ENDPOINT.to_string(),
        _ => DEFAULT_ENDPOINT.to_string(),
    }
}

/// An IMDSv2 client.
#[derive(Debug, Clone)]
pub struct ImdsClient {
    http: Http,
    base: String,
}

impl ImdsClient {
    /// A client for `base` (no trailing slash) with `timeout` per call.
    pub fn new(base: &str, timeout: Duration) -> Result<ImdsClient, CredentialsError> {
        let lower = base.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return Err(CredentialsError(format!(
                "{ENV_ENDPOINT} = {} is not an http(s) URL; write it like http://169.254.169.254",
                redact_url(base)
            )));
        }
        Ok(ImdsClient {
            http: Http::new(timeout, None).map_err(CredentialsError)?,
            base: base.trim_end_matches('/').to_string(),
        })
    }

    /// From the environment; `Ok(None)` when IMDS is disabled.
    pub fn from_env(
        env: &dyn Fn(&str) -> Option<String>,
        timeout: Duration,
    ) -> Result<Option<ImdsClient>, CredentialsError> {
        if is_disabled(env) {
            return Ok(None);
        }
        ImdsClient::new(&endpoint_from_env(env), timeout).map(Some)
    }

    /// The base URL.
    pub fn endpoint(&self) -> &str {
        &self.base
    }

    fn token(&self) -> Result<String, String> {
        let url = format!("{}{TOKEN_PATH}", self.base);
        let reply = self
            .http
            .call("PUT", &url, &[(TOKEN_TTL_HEADER, "21600")], None)
            .map_err(|e| {
                format!(
                    "EC2 instance metadata at {}: the IMDSv2 token request failed: {e} (not on EC2? \
                     in a container on EC2 the instance's metadata hop limit must be at least 2)",
                    self.base
                )
            })?;
        if reply.status != 200 {
            return Err(format!(
                "EC2 instance metadata at {}: the IMDSv2 token request answered HTTP {}",
                self.base, reply.status
            ));
        }
        let token = reply.text().trim().to_string();
        if token.is_empty() || token.contains(['\r', '\n']) {
            return Err(format!(
                "EC2 instance metadata at {}: the IMDSv2 token answer is unusable",
                self.base
            ));
        }
        Ok(token)
    }

    fn get_with(&self, token: &str, path: &str) -> Result<Vec<u8>, String> {
        let url = format!("{}{path}", self.base);
        let reply = self
            .http
            .call("GET", &url, &[(TOKEN_HEADER, token)], None)
            .map_err(|e| format!("EC2 instance metadata GET {path}: {e}"))?;
        if reply.status != 200 {
            return Err(format!(
                "EC2 instance metadata GET {path} answered HTTP {}{}",
                reply.status,
                if reply.status == 404 && path.starts_with(CREDENTIALS_PATH) {
                    " (does the instance have an IAM instance profile?)"
                } else {
                    ""
                }
            ));
        }
        Ok(reply.body)
    }

    /// `GET path` with a fresh session token; the body as text.
    pub fn get(&self, path: &str) -> Result<String, String> {
        let token = self.token()?;
        self.get_with(&token, path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// The instance's region (`placement/region`).
    pub fn region(&self) -> Result<String, String> {
        let r = self.get(REGION_PATH)?.trim().to_string();
        if r.is_empty() || !r.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(format!(
                "EC2 instance metadata {REGION_PATH} answered an unusable region {:?}",
                excerpt(&r)
            ));
        }
        Ok(r)
    }

    /// The role credentials of the instance profile.
    pub fn role_credentials(&self) -> Result<Credentials, CredentialsError> {
        let token = self.token().map_err(CredentialsError)?;
        let roles = self
            .get_with(&token, CREDENTIALS_PATH)
            .map_err(CredentialsError)?;
        let roles = String::from_utf8_lossy(&roles);
        let role = roles
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .ok_or_else(|| {
                CredentialsError(
                    "EC2 instance metadata lists no IAM role (attach an instance profile)".into(),
                )
            })?
            .to_string();
        if role.contains(['/', '?', '#', '%']) || role.contains("..") {
            return Err(CredentialsError(format!(
                "EC2 instance metadata returned an unusable role name {:?}",
                excerpt(&role)
            )));
        }
        let body = self
            .get_with(&token, &format!("{CREDENTIALS_PATH}{role}"))
            .map_err(CredentialsError)?;
        if let Some(code) = json_field(&body, "Code").filter(|c| c != "Success") {
            return Err(CredentialsError(format!(
                "EC2 instance metadata credentials for role {role}: Code {}",
                excerpt(&code)
            )));
        }
        credentials_from_json(
            &body,
            "Token",
            "imds",
            &format!("EC2 instance metadata credentials for role {role}"),
        )
    }
}

/// Instance profile credentials through IMDSv2.
#[derive(Debug, Clone)]
pub struct ImdsFetch(pub ImdsClient);

impl FetchCredentials for ImdsFetch {
    fn fetch(&self) -> Result<Credentials, CredentialsError> {
        self.0.role_credentials()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_and_disable_switches() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(endpoint_from_env(&env(&[])), DEFAULT_ENDPOINT);
        assert_eq!(
            endpoint_from_env(&env(&[(ENV_ENDPOINT_MODE, "IPv6")])),
            IPV6_ENDPOINT
        );
        assert_eq!(
            endpoint_from_env(&env(&[(ENV_ENDPOINT, "http://127.0.0.1:9/")])),
            "http://127.0.0.1:9"
        );
        assert!(is_disabled(&env(&[(ENV_DISABLED, "TRUE")])));
        assert!(!is_disabled(&env(&[(ENV_DISABLED, "1")])));
        assert!(
            ImdsClient::from_env(&env(&[(ENV_DISABLED, "true")]), DEFAULT_TIMEOUT)
                .unwrap()
                .is_none()
        );
        assert!(ImdsClient::new("169.254.169.254", DEFAULT_TIMEOUT).is_err());
    }
}
