//! The container credentials endpoint: ECS task roles (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`,
//! fetched from `169.254.170.2`) and EKS Pod Identity / custom agents
//! (`AWS_CONTAINER_CREDENTIALS_FULL_URI` with an `Authorization` header from
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`, re-read at every fetch, or
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN`).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use super::credentials::{Credentials, CredentialsError};
use super::fetch::{FetchCredentials, credentials_from_json, json_field};
use super::http::{Http, excerpt, redact_url, url_host};

/// Where relative URIs are resolved (ECS).
pub const ECS_CONTAINER_BASE: &str = "http://169.254.170.2";

pub const ENV_RELATIVE_URI: &str = "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI";
pub const ENV_FULL_URI: &str = "AWS_CONTAINER_CREDENTIALS_FULL_URI";
pub const ENV_AUTH_TOKEN: &str = "AWS_CONTAINER_AUTHORIZATION_TOKEN";
pub const ENV_AUTH_TOKEN_FILE: &str = "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE";

/// Where the `Authorization` header value comes from.
enum AuthToken {
    None,
    Static(String),
    File(PathBuf),
}

/// Fetches from the container endpoint.
pub struct ContainerFetch {
    http: Http,
    url: String,
    auth: AuthToken,
    description: String,
}

impl fmt::Debug for ContainerFetch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContainerFetch")
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

impl ContainerFetch {
    /// From the environment; `Ok(None)` when neither URI variable is set. The relative URI wins
    /// over the full URI, as in the SDKs. `relative_base` is normally [`ECS_CONTAINER_BASE`].
    pub fn from_env(
        env: &dyn Fn(&str) -> Option<String>,
        relative_base: &str,
        timeout: Duration,
    ) -> Result<Option<ContainerFetch>, CredentialsError> {
        let get = |k: &str| {
            env(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let (url, description) = if let Some(rel) = get(ENV_RELATIVE_URI) {
            let sep = if rel.starts_with('/') { "" } else { "/" };
            let base = relative_base.trim_end_matches('/');
            (
                format!("{base}{sep}{rel}"),
                format!("the container endpoint {base} ({ENV_RELATIVE_URI})"),
            )
        } else if let Some(full) = get(ENV_FULL_URI) {
            check_full_uri(&full).map_err(|why| {
                CredentialsError(format!(
                    "{ENV_FULL_URI} = {} cannot be used: {why}",
                    redact_url(&full)
                ))
            })?;
            let shown = full.split(['?', '#']).next().unwrap_or(&full).to_string();
            (
                full.clone(),
                format!("the container endpoint {shown} ({ENV_FULL_URI})"),
            )
        } else {
            return Ok(None);
        };
        let auth = match (get(ENV_AUTH_TOKEN_FILE), get(ENV_AUTH_TOKEN)) {
            (Some(file), _) => AuthToken::File(PathBuf::from(file)),
            (None, Some(token)) => AuthToken::Static(token),
            (None, None) => AuthToken::None,
        };
        let http = Http::new(timeout, None).map_err(CredentialsError)?;
        Ok(Some(ContainerFetch {
            http,
            url,
            auth,
            description,
        }))
    }

    /// For log lines: which endpoint.
    pub fn description(&self) -> &str {
        &self.description
    }
}

/// Full URIs over plain http must point at the container agent addresses or loopback.
fn check_full_uri(uri: &str) -> Result<(), String> {
    let lower = uri.to_ascii_lowercase();
    let https = lower.starts_with("https://");
    if !https && !lower.starts_with("http://") {
        return Err("use an http:// or https:// URL".into());
    }
    let authority = uri
        .split_once("://")
        .map(|(_, r)| r.split(['/', '?', '#']).next().unwrap_or(""))
        .unwrap_or("");
    if authority.contains('@') {
        return Err("user info is not allowed in the URL".into());
    }
    let host = url_host(uri).ok_or("the URL has no host")?;
    if https {
        return Ok(());
    }
    let allowed = host.eq_ignore_ascii_case("localhost")
        || match host.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => {
                v4.is_loopback()
                    || v4.octets() == [169, 254, 170, 2]
                    || v4.octets() == [169, 254, 170, 23]
            }
            Ok(IpAddr::V6(v6)) => {
                v6.is_loopback() || v6 == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x23)
            }
            Err(_) => false,
        };
    if allowed {
        Ok(())
    } else {
        Err(format!(
            "over http only loopback, 169.254.170.2, 169.254.170.23 or [fd00:ec2::23] are allowed (host {host:?}); use https for other hosts"
        ))
    }
}

/// `text` with every occurrence of `secret` replaced by `***`.
fn without_secret(text: &str, secret: Option<&str>) -> String {
    match secret.map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => text.replace(t, "***"),
        None => text.to_string(),
    }
}

impl FetchCredentials for ContainerFetch {
    fn fetch(&self) -> Result<Credentials, CredentialsError> {
        let what = &self.description;
        let token = match &self.auth {
            AuthToken::None => None,
            AuthToken::Static(t) => Some(t.clone()),
            AuthToken::File(path) => {
                let t = std::fs::read_to_string(path).map_err(|e| {
                    CredentialsError(format!(
                        "cannot read the container authorization token file {} ({ENV_AUTH_TOKEN_FILE}): {e}",
                        path.display()
                    ))
                })?;
                Some(t.trim().to_string())
            }
        };
        if token.as_deref().is_some_and(|t| t.contains(['\r', '\n'])) {
            return Err(CredentialsError(
                "the container authorization token contains a line break".into(),
            ));
        }
        let mut headers = vec![("accept", "application/json")];
        if let Some(t) = token.as_deref().filter(|t| !t.is_empty()) {
            headers.push(("authorization", t));
        }
        let reply = self
            .http
            .call("GET", &self.url, &headers, None)
            .map_err(|e| CredentialsError(format!("{what}: {e}")))?;
        if reply.status != 200 {
            let code = json_field(&reply.body, "Code");
            let message =
                json_field(&reply.body, "Message").or_else(|| json_field(&reply.body, "message"));
            // A bounded, single-line excerpt; an endpoint echoing the token we sent must not
            // put it in a log line.
            let detail = [code, message]
                .into_iter()
                .flatten()
                .map(|s| excerpt(&without_secret(&s, token.as_deref())))
                .collect::<Vec<_>>()
                .join(": ");
            return Err(CredentialsError(format!(
                "{what} answered HTTP {}{}{detail}",
                reply.status,
                if detail.is_empty() { "" } else { ": " }
            )));
        }
        credentials_from_json(&reply.body, "Token", "container", what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_uri_hosts() {
        for ok in [
            "http://127.0.0.1:8080/creds",
            "http://127.1.2.3/creds",
            "http://localhost/x",
            "http://[::1]:9/x",
            "http://169.254.170.2/v2/credentials/abc",
            "http://169.254.170.23/v1/credentials",
            "http://[fd00:ec2::23]/v1/credentials",
            "https://creds.example.com/x",
        ] {
            assert!(check_full_uri(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://10.0.0.1/creds",
            "http://169.254.169.254/latest",
            "http://[fd00:ec2::24]/x",
            "http://creds.example.com/x",
            "ftp://127.0.0.1/x",
            "http://user:pw@127.0.0.1/x",
            "127.0.0.1/x",
        ] {
            assert!(check_full_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn relative_uri_wins_and_token_never_shows() {
        let env = |k: &str| match k {
            ENV_RELATIVE_URI => Some("v2/credentials/id".to_string()),
            ENV_FULL_URI => Some("http://10.0.0.1/x".to_string()),
            ENV_AUTH_TOKEN => Some("super-secret-token".to_string()),
            _ => None,
        };
        let f = ContainerFetch::from_env(&env, "http://127.0.0.1:1", Duration::from_secs(1))
            .unwrap()
            .unwrap();
        assert_eq!(f.url, "http://127.0.0.1:1/v2/credentials/id");
        let dbg = format!("{f:?}");
        assert!(!dbg.contains("super-secret-token"), "{dbg}");
        let none = |_: &str| None;
        assert!(
            ContainerFetch::from_env(&none, ECS_CONTAINER_BASE, Duration::from_secs(1))
                .unwrap()
                .is_none()
        );
    }
}
