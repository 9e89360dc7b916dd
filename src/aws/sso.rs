//! IAM Identity Center (SSO) profiles: the plan of an SSO profile ([`SsoSpec`], both the
//! `sso_session` form and the legacy form), and [`SsoFetch`], which takes the access token from
//! the token cache `aws sso login` writes (see [`super::sso_cache`]), refreshes it with OIDC
//! `CreateToken` when the `sso_session` form allows it, and exchanges it for role credentials
//! with the portal's `GetRoleCredentials`, as aws-sdk-go-v2 `credentials/ssocreds` does.
//!
//! Neither the access token, the refresh token, the client secret nor the role credentials ever
//! reach a log line or an error: answers are quoted only as short excerpts with those values
//! blanked out.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use simd_json::prelude::*;

use super::credentials::{Credentials, CredentialsError};
use super::endpoint::{resolve_sso_oidc_endpoint, resolve_sso_portal_endpoint};
use super::error_type::error_type;
use super::fetch::{FetchCredentials, json_field, parse_answer, string_field};
use super::http::{Http, excerpt, form_encode, proxy_for, redact_url};
use super::sso_cache::{self, CachedToken, TokenState};

/// The settings of an SSO profile, resolved from either form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsoSpec {
    /// The profile that holds the SSO settings (the one to `aws sso login` with).
    pub profile: String,
    /// `sso_session` (the `[sso-session NAME]` form); `None` for the legacy form.
    pub session: Option<String>,
    pub start_url: String,
    /// `sso_region`: where the portal and OIDC endpoints are.
    pub region: String,
    pub account_id: String,
    pub role_name: String,
}

impl SsoSpec {
    /// For the start-up line (no secret: account ids and role names are not).
    pub fn describe(&self) -> String {
        let via = match &self.session {
            Some(s) => format!("sso-session `{s}`"),
            None => format!("start URL {}", self.start_url),
        };
        format!(
            "IAM Identity Center (SSO) role {} in account {} via {via} ({})",
            self.role_name, self.account_id, self.region
        )
    }

    /// The token cache file under `home`.
    pub fn cache_file(&self, home: &Path) -> PathBuf {
        sso_cache::cache_file(home, self.session.as_deref(), &self.start_url)
    }
}

/// Fetches role credentials for an [`SsoSpec`].
pub struct SsoFetch {
    spec: SsoSpec,
    cache_path: PathBuf,
    portal_url: String,
    portal: Http,
    oidc_url: String,
    oidc: Http,
    /// A refreshed token whose write-back failed: used while it is newer than the file's.
    memo: Mutex<Option<CachedToken>>,
}

impl fmt::Debug for SsoFetch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SsoFetch")
            .field("spec", &self.spec)
            .field("cache_path", &self.cache_path)
            .field("portal_url", &self.portal_url)
            .field("oidc_url", &self.oidc_url)
            .finish_non_exhaustive()
    }
}

impl SsoFetch {
    /// The fetcher of `spec`: the cache file under `$HOME`, the portal and OIDC endpoints for
    /// `sso_region` (or `AWS_ENDPOINT_URL_SSO` / `AWS_ENDPOINT_URL_SSO_OIDC` /
    /// `AWS_ENDPOINT_URL`), reached through `proxy` unless `NO_PROXY` says otherwise.
    pub fn new(
        spec: &SsoSpec,
        env: &dyn Fn(&str) -> Option<String>,
        timeout: Duration,
        proxy: Option<&str>,
    ) -> Result<SsoFetch, CredentialsError> {
        let home = env("HOME").filter(|h| !h.trim().is_empty()).ok_or_else(|| {
            CredentialsError(format!(
                "profile `{}` uses IAM Identity Center (SSO), but HOME is not set: cannot find the SSO token cache",
                spec.profile
            ))
        })?;
        let portal_url = resolve_sso_portal_endpoint(env, &spec.region)
            .map_err(|e| CredentialsError(format!("SSO portal endpoint: {e}")))?
            .url;
        let oidc_url = resolve_sso_oidc_endpoint(env, &spec.region)
            .map_err(|e| CredentialsError(format!("SSO OIDC endpoint: {e}")))?
            .url;
        let no_proxy = env("NO_PROXY")
            .or_else(|| env("no_proxy"))
            .filter(|v| !v.trim().is_empty());
        let agent = |url: &str| {
            Http::new(timeout, proxy_for(url, proxy, no_proxy.as_deref())).map_err(CredentialsError)
        };
        Ok(SsoFetch {
            spec: spec.clone(),
            cache_path: spec.cache_file(Path::new(&home)),
            portal: agent(&portal_url)?,
            oidc: agent(&oidc_url)?,
            portal_url,
            oidc_url,
            memo: Mutex::new(None),
        })
    }

    /// The portal base URL, for the start-up line.
    pub fn portal_url(&self) -> &str {
        &self.portal_url
    }

    /// The token cache file this profile reads.
    pub fn cache_path(&self) -> &Path {
        &self.cache_path
    }

    /// A usable access token: the cached one, refreshed first when it expires within
    /// [`sso_cache::REFRESH_WINDOW`] and the `sso_session` form allows it.
    fn access_token(&self) -> Result<String, CredentialsError> {
        let now = SystemTime::now();
        let hint = sso_cache::login_hint(&self.spec.profile);
        let path = self.cache_path.display().to_string();
        let mut cached = sso_cache::read(&self.cache_path, &self.spec.profile)?;
        {
            let memo = self.memo.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(m) = memo.as_ref().filter(|m| m.expires_at > cached.expires_at) {
                cached = m.clone();
            }
        }
        let state = cached.state(now);
        if state == TokenState::Fresh {
            return Ok(cached.access_token);
        }
        let refreshable = self.spec.session.is_some() && cached.refreshable(now);
        if refreshable {
            match self.create_token(&cached, now) {
                Ok(fresh) => {
                    match sso_cache::write_back(&self.cache_path, &fresh) {
                        Ok(()) => {
                            crate::info!(
                                "Refreshed the SSO access token of profile `{}` and wrote it back to {path}",
                                self.spec.profile
                            );
                            *self.memo.lock().unwrap_or_else(PoisonError::into_inner) = None;
                        }
                        Err(e) => {
                            crate::warn!(
                                "Refreshed the SSO access token of profile `{}` but could not write it back: {e}; keeping it in memory",
                                self.spec.profile
                            );
                            *self.memo.lock().unwrap_or_else(PoisonError::into_inner) =
                                Some(fresh.clone());
                        }
                    }
                    return Ok(fresh.access_token);
                }
                Err(e) if state == TokenState::ExpiresSoon => {
                    crate::warn!(
                        "Cannot refresh the SSO access token of profile `{}` yet: {e}; using the current one until it expires",
                        self.spec.profile
                    );
                    return Ok(cached.access_token);
                }
                Err(e) => {
                    return Err(CredentialsError(format!(
                        "the SSO access token in {path} has expired and could not be refreshed: {e}; {hint}"
                    )));
                }
            }
        }
        if state == TokenState::ExpiresSoon {
            return Ok(cached.access_token);
        }
        let ago = now
            .duration_since(cached.expires_at)
            .unwrap_or_default()
            .as_secs();
        let why = if self.spec.session.is_none() {
            "a profile with sso_start_url in it (no sso_session) cannot refresh it".to_string()
        } else {
            format!(
                "it cannot be refreshed: {}",
                cached.not_refreshable_because(now)
            )
        };
        Err(CredentialsError(format!(
            "the SSO access token in {path} expired {ago} s ago and {why}; {hint}"
        )))
    }

    /// OIDC `CreateToken` with the refresh-token grant.
    fn create_token(&self, cached: &CachedToken, now: SystemTime) -> Result<CachedToken, String> {
        let (Some(client_id), Some(client_secret), Some(refresh_token)) = (
            cached.client_id.as_deref(),
            cached.client_secret.as_deref(),
            cached.refresh_token.as_deref(),
        ) else {
            return Err(cached.not_refreshable_because(now).to_string());
        };
        let body = format!(
            "{{\"clientId\":{},\"clientSecret\":{},\"grantType\":\"refresh_token\",\"refreshToken\":{}}}",
            crate::json::json_string(client_id),
            crate::json::json_string(client_secret),
            crate::json::json_string(refresh_token),
        );
        let url = format!("{}/token", self.oidc_url);
        let what = format!("SSO OIDC CreateToken at {}", redact_url(&url));
        let reply = self
            .oidc
            .call(
                "POST",
                &url,
                &[
                    ("content-type", "application/json"),
                    ("accept", "application/json"),
                ],
                Some(body.as_bytes()),
            )
            .map_err(|e| format!("{what}: {e}"))?;
        let secrets = [
            client_secret,
            refresh_token,
            cached.access_token.as_str(),
            client_id,
        ];
        if reply.status != 200 {
            let detail = error_detail(&reply.body, &["error", "error_description"], &secrets);
            return Err(format!("{what} answered HTTP {}{detail}", reply.status));
        }
        let mut copy = reply.body.clone();
        let v = simd_json::to_borrowed_value(&mut copy)
            .map_err(|_| format!("{what}: the answer is not a JSON document"))?;
        let text = |k: &str| {
            v.get(k)
                .and_then(|x| x.as_str())
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let access_token =
            text("accessToken").ok_or(format!("{what}: the answer has no accessToken"))?;
        let expires_in = v
            .get("expiresIn")
            .and_then(|x| x.as_i64().or_else(|| x.as_f64().map(|f| f as i64)))
            .filter(|s| *s > 0)
            .ok_or(format!("{what}: the answer has no positive expiresIn"))?;
        let expires_at = now + Duration::from_secs(expires_in.unsigned_abs());
        Ok(cached.refreshed(access_token, expires_at, text("refreshToken")))
    }

    /// The portal's `GetRoleCredentials`.
    fn role_credentials(&self, token: &str) -> Result<Credentials, CredentialsError> {
        let query = form_encode(&[
            ("account_id", self.spec.account_id.as_str()),
            ("role_name", self.spec.role_name.as_str()),
        ]);
        let url = format!("{}/federation/credentials?{query}", self.portal_url);
        let what = format!(
            "SSO GetRoleCredentials for role {} in account {} at {}",
            self.spec.role_name,
            self.spec.account_id,
            redact_url(&self.portal_url)
        );
        let reply = self
            .portal
            .call(
                "GET",
                &url,
                &[
                    ("x-amz-sso_bearer_token", token),
                    ("accept", "application/json"),
                ],
                None,
            )
            .map_err(|e| CredentialsError(format!("{what}: {e}")))?;
        match reply.status {
            200 => role_credentials_from_json(&reply.body, &what),
            401 | 403 => {
                let detail = error_detail(&reply.body, &["message", "Message"], &[token]);
                Err(CredentialsError(format!(
                    "{what}: the portal refused the SSO access token (HTTP {}{detail}): the SSO session has expired or was revoked, or the role is not assigned to you; {}",
                    reply.status,
                    sso_cache::login_hint(&self.spec.profile)
                )))
            }
            status => {
                let detail = error_detail(&reply.body, &["message", "Message"], &[token]);
                Err(CredentialsError(format!(
                    "{what} answered HTTP {status}{detail}"
                )))
            }
        }
    }
}

impl FetchCredentials for SsoFetch {
    fn fetch(&self) -> Result<Credentials, CredentialsError> {
        let token = self.access_token()?;
        self.role_credentials(&token)
    }
}

/// `: <error type>: <message>` from a JSON error answer, short, single-line, with every secret
/// blanked out; empty when the answer says nothing usable.
fn error_detail(body: &[u8], message_keys: &[&str], secrets: &[&str]) -> String {
    let kind = error_type(None, body);
    let message = message_keys.iter().find_map(|k| json_field(body, k));
    let mut parts: Vec<String> = Vec::new();
    for p in [kind, message].into_iter().flatten() {
        let mut p = p;
        for s in secrets.iter().filter(|s| s.len() >= 4) {
            p = p.replace(s, "***");
        }
        let p = excerpt(&p);
        if !p.is_empty() && !parts.contains(&p) {
            parts.push(p);
        }
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(": {}", parts.join(": "))
    }
}

/// Reads `{"roleCredentials":{"accessKeyId","secretAccessKey","sessionToken","expiration"}}`
/// (`expiration` in milliseconds since the epoch). The document is never quoted.
pub fn role_credentials_from_json(
    body: &[u8],
    what: &str,
) -> Result<Credentials, CredentialsError> {
    let mut copy = body.to_vec();
    let v = parse_answer(&mut copy, what)?;
    let rc = v
        .get("roleCredentials")
        .filter(|r| r.as_object().is_some())
        .ok_or_else(|| CredentialsError(format!("{what}: the answer has no roleCredentials")))?;
    let field = |k: &str| {
        string_field(rc, k)
            .ok_or_else(|| CredentialsError(format!("{what}: the answer has no {k}")))
    };
    let id = field("accessKeyId")?;
    let secret = field("secretAccessKey")?;
    let token = field("sessionToken")?;
    let ms = rc
        .get("expiration")
        .and_then(|x| {
            x.as_u64()
                .or_else(|| x.as_f64().filter(|f| *f > 0.0).map(|f| f as u64))
        })
        .filter(|ms| *ms > 0)
        .ok_or_else(|| CredentialsError(format!("{what}: the answer has no expiration")))?;
    let expiry = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
    Ok(Credentials::new(
        id,
        secret,
        Some(token),
        Some(expiry),
        "sso",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_credentials_answer() {
        let c = role_credentials_from_json(
            br#"{"roleCredentials":{"accessKeyId":"ASIASSO","secretAccessKey":"sec","sessionToken":"tok","expiration":1893456000000}}"#,
            "GetRoleCredentials",
        )
        .unwrap();
        assert_eq!(c.access_key_id(), "ASIASSO");
        assert_eq!(c.session_token(), Some("tok"));
        assert_eq!(
            c.expiry(),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_893_456_000))
        );
        for (doc, want) in [
            (&br#"{"roleCredentials":{"accessKeyId":"A","secretAccessKey":"very-secret","sessionToken":"t"}}"#[..], "no expiration"),
            (br#"{"roleCredentials":{"secretAccessKey":"very-secret"}}"#, "no accessKeyId"),
            (br#"{"other":1}"#, "no roleCredentials"),
            (br#"very-secret"#, "not a JSON document"),
        ] {
            let e = role_credentials_from_json(doc, "GetRoleCredentials").unwrap_err();
            assert!(e.0.contains(want) && !e.0.contains("very-secret"), "{e}");
        }
    }

    #[test]
    fn error_details_are_short_and_scrubbed() {
        assert_eq!(
            error_detail(
                br#"{"__type":"com.amazon#UnauthorizedException","message":"token tok-secret-1 is bad"}"#,
                &["message"],
                &["tok-secret-1"]
            ),
            ": UnauthorizedException: token *** is bad"
        );
        assert_eq!(
            error_detail(
                br#"{"error":"invalid_grant","error_description":"rt-secret-2 expired"}"#,
                &["error", "error_description"],
                &["rt-secret-2"]
            ),
            ": invalid_grant"
        );
        assert_eq!(error_detail(b"", &["message"], &[]), "");
    }

    #[test]
    fn describe_names_no_secret() {
        let s = SsoSpec {
            profile: "dev".into(),
            session: Some("corp".into()),
            start_url: "https://d-1.awsapps.com/start".into(),
            region: "eu-west-1".into(),
            account_id: "111122223333".into(),
            role_name: "Writer".into(),
        };
        assert_eq!(
            s.describe(),
            "IAM Identity Center (SSO) role Writer in account 111122223333 via sso-session `corp` (eu-west-1)"
        );
        assert_eq!(
            s.cache_file(Path::new("/h")),
            PathBuf::from(format!(
                "/h/.aws/sso/cache/{}.json",
                sso_cache::cache_key(Some("corp"), "")
            ))
        );
    }
}
