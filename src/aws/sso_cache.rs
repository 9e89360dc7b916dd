//! The IAM Identity Center (SSO) token cache that `aws sso login` writes: where a profile's file is
//! (`~/.aws/sso/cache/<sha1 hex>.json`), reading the access token and its refresh material, the
//! expiry decisions, and writing a refreshed token back the way the SDKs do (same keys, the file's
//! permissions kept, replaced atomically).
//!
//! The cache key follows the SDKs: aws-sdk-go-v2 `credentials/ssocreds`
//! (`StandardCachedTokenFilepath(key)`: `~/.aws/sso/cache/` + lowercase hex SHA-1 of the key +
//! `.json`, the key being the `sso_session` name when the profile has one and the `sso_start_url`
//! otherwise) and botocore `utils.py SSOTokenLoader._generate_cache_key` (the session name if
//! given, else the start URL, SHA-1 hex of its UTF-8 bytes). The file's fields are those of
//! aws-sdk-go-v2 `sso_cached_token.go` and the AWS CLI: `accessToken`, `expiresAt` (RFC 3339),
//! `refreshToken`, `clientId`, `clientSecret`, `registrationExpiresAt`, plus any others (kept
//! untouched on write-back).

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use simd_json::prelude::*;
use simd_json::{OwnedValue, StaticNode};

use super::credentials::CredentialsError;
use super::fetch::parse_expiration;

/// A token this close to its expiry is refreshed when it can be (the 5 minutes of the Rust and
/// JavaScript SDKs' SSO token providers); it is still used while it lasts when it cannot.
pub const REFRESH_WINDOW: Duration = Duration::from_secs(300);

/// The string whose SHA-1 names the cache file: the session name for the `sso_session` form,
/// the start URL for the legacy form.
pub fn cache_key(session_name: Option<&str>, start_url: &str) -> String {
    let input = session_name.unwrap_or(start_url);
    sha1_smol::Sha1::from(input.as_bytes()).digest().to_string()
}

/// `$HOME/.aws/sso/cache/<cache_key>.json`.
pub fn cache_file(home: &Path, session_name: Option<&str>, start_url: &str) -> PathBuf {
    home.join(".aws")
        .join("sso")
        .join("cache")
        .join(format!("{}.json", cache_key(session_name, start_url)))
}

/// A token read from the cache. Debug never shows the token, refresh token or client secret.
#[derive(Clone)]
pub struct CachedToken {
    pub access_token: String,
    pub expires_at: SystemTime,
    pub refresh_token: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub registration_expires_at: Option<SystemTime>,
    /// The whole document, for write-back.
    document: OwnedValue,
}

impl fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedToken")
            .field("expires_at", &self.expires_at)
            .field("refreshable_material", &self.refresh_token.is_some())
            .field("registration_expires_at", &self.registration_expires_at)
            .finish_non_exhaustive()
    }
}

/// What to do with a cached token at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenState {
    /// Valid beyond the refresh window: use it.
    Fresh,
    /// Still valid, but within the refresh window: refresh if possible, else use it.
    ExpiresSoon,
    /// Expired: refresh, or fail.
    Expired,
}

impl CachedToken {
    /// Where the token stands at `now`.
    pub fn state(&self, now: SystemTime) -> TokenState {
        if self.expires_at <= now {
            TokenState::Expired
        } else if self.expires_at <= now + REFRESH_WINDOW {
            TokenState::ExpiresSoon
        } else {
            TokenState::Fresh
        }
    }

    /// True when the cache holds what OIDC `CreateToken` needs (refresh token, client id and
    /// secret) and the client registration, if its expiry is recorded, has not expired.
    pub fn refreshable(&self, now: SystemTime) -> bool {
        self.refresh_token.is_some()
            && self.client_id.is_some()
            && self.client_secret.is_some()
            && self.registration_expires_at.is_none_or(|t| t > now)
    }

    /// Why [`CachedToken::refreshable`] is false, for the error message (never a value).
    pub fn not_refreshable_because(&self, now: SystemTime) -> &'static str {
        if self.refresh_token.is_none() {
            "the cache holds no refreshToken"
        } else if self.client_id.is_none() || self.client_secret.is_none() {
            "the cache holds no client registration (clientId, clientSecret)"
        } else if self.registration_expires_at.is_some_and(|t| t <= now) {
            "the client registration has expired (registrationExpiresAt)"
        } else {
            "it is refreshable"
        }
    }

    /// The token after an OIDC `CreateToken` answer: new access token and expiry, and the new
    /// refresh token when the answer holds one.
    pub fn refreshed(
        &self,
        access_token: String,
        expires_at: SystemTime,
        refresh_token: Option<String>,
    ) -> CachedToken {
        let mut t = self.clone();
        t.access_token = access_token;
        t.expires_at = expires_at;
        if let Some(r) = refresh_token {
            t.refresh_token = Some(r);
        }
        if let Some(obj) = t.document.as_object_mut() {
            obj.insert(
                "accessToken".into(),
                OwnedValue::from(t.access_token.clone()),
            );
            obj.insert("expiresAt".into(), OwnedValue::from(rfc3339(t.expires_at)));
            if let Some(r) = &t.refresh_token {
                obj.insert("refreshToken".into(), OwnedValue::from(r.clone()));
            }
        }
        t
    }

    /// The document as written back: every field read, with the refreshed ones replaced.
    pub fn to_json(&self) -> String {
        self.document.encode()
    }
}

/// `t` as RFC 3339 UTC with whole seconds (`2026-01-02T03:04:05Z`), as aws-sdk-go-v2 writes
/// `expiresAt`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let secs = i64::try_from(secs).unwrap_or(i64::MAX);
    match jiff::Timestamp::from_second(secs) {
        Ok(ts) => ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Err(_) => "9999-12-31T23:59:59Z".to_string(),
    }
}

/// What to tell the user to run.
pub fn login_hint(profile: &str) -> String {
    format!("run `aws sso login --profile {profile}`")
}

/// Reads and checks the cache file. Errors name the file and what is wrong, never a value from it.
pub fn read(path: &Path, profile: &str) -> Result<CachedToken, CredentialsError> {
    let shown = path.display();
    let mut bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CredentialsError(format!(
                "the SSO token cache file {shown} does not exist (not logged in); {}",
                login_hint(profile)
            )));
        }
        Err(e) => {
            return Err(CredentialsError(format!(
                "cannot read the SSO token cache file {shown}: {e}"
            )));
        }
    };
    parse(&mut bytes).map_err(|why| {
        CredentialsError(format!(
            "the SSO token cache file {shown} is malformed: {why}; {}",
            login_hint(profile)
        ))
    })
}

/// Parses a cache document (the buffer is used as scratch space).
pub fn parse(bytes: &mut [u8]) -> Result<CachedToken, String> {
    let len = bytes.len();
    let document = simd_json::to_owned_value(bytes)
        .map_err(|_| format!("it is not a JSON document ({len} bytes)"))?;
    if document.as_object().is_none() {
        return Err("it is not a JSON object".into());
    }
    let string = |key: &str| -> Result<Option<String>, String> {
        match document.get(key) {
            None | Some(OwnedValue::Static(StaticNode::Null)) => Ok(None),
            Some(v) => match v.as_str() {
                Some(s) if s.trim().is_empty() => Ok(None),
                Some(s) => Ok(Some(s.trim().to_string())),
                None => Err(format!("{key} is not a string")),
            },
        }
    };
    let time = |key: &str| -> Result<Option<SystemTime>, String> {
        match string(key)? {
            None => Ok(None),
            // The value is not quoted back; parse_expiration names the field "Expiration".
            Some(s) => parse_expiration(&s)
                .map(Some)
                .map_err(|_| format!("{key} is not an RFC 3339 timestamp")),
        }
    };
    let access_token = string("accessToken")?.ok_or("it has no accessToken")?;
    let expires_at = time("expiresAt")?.ok_or("it has no expiresAt")?;
    Ok(CachedToken {
        access_token,
        expires_at,
        refresh_token: string("refreshToken")?,
        client_id: string("clientId")?,
        client_secret: string("clientSecret")?,
        registration_expires_at: time("registrationExpiresAt")?,
        document,
    })
}

/// Writes `token` back to `path` as aws-sdk-go-v2 `storeCachedToken` does: into a temporary file
/// beside it with the permissions of the file it replaces, then renamed over it (readers never see
/// half a file).
pub fn write_back(path: &Path, token: &CachedToken) -> Result<(), String> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mode = std::fs::metadata(path)
        .map_err(|e| format!("cannot stat {}: {e}", path.display()))?
        .permissions()
        .mode()
        & 0o7777;
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".tmp-{nanos}"));
    let tmp = PathBuf::from(tmp_name);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        // The umask may have narrowed the mode at creation.
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("cannot set the mode of {}: {e}", tmp.display()))?;
        let mut text = token.to_json();
        text.push('\n');
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, path).map_err(|e| format!("cannot replace {}: {e}", path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{"startUrl":"https://d-123.awsapps.com/start","region":"eu-west-1",
        "accessToken":"AT-secret","expiresAt":"2030-01-01T00:00:00Z","refreshToken":"RT-secret",
        "clientId":"cid","clientSecret":"CS-secret","registrationExpiresAt":"2031-01-01T00:00:00Z"}"#;

    fn at(s: &str) -> SystemTime {
        parse_expiration(s).unwrap()
    }

    #[test]
    fn cache_key_is_the_sha1_of_the_session_name_else_the_start_url() {
        // The start-URL vectors are those of the AWS SDKs' own token-cache tests (Java v2
        // `SsoTokenFileLoader`, .NET `SSOTokenManagerTests`).
        assert_eq!(
            cache_key(None, "https://d-abc123.awsapps.com/start"),
            "40a89917e3175433e361b710a9d43528d7f1890a"
        );
        assert_eq!(
            cache_key(None, "https://vanity.example.com"),
            "7ed69759fe20aa3027c01db4b744e1437b0c8f4f"
        );
        // The session name wins over the start URL (sha1("admin") from `sha1sum`).
        assert_eq!(
            cache_key(Some("admin"), "https://d-abc123.awsapps.com/start"),
            "d033e22ae348aeb5660fc2140aec35850c4da997"
        );
        assert_eq!(
            cache_key(Some("admin"), "ignored"),
            cache_key(Some("admin"), "https://other")
        );
        assert_eq!(
            cache_key(Some(""), "x"),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
        let f = cache_file(
            Path::new("/home/u"),
            None,
            "https://d-abc123.awsapps.com/start",
        );
        assert_eq!(
            f,
            PathBuf::from("/home/u/.aws/sso/cache/40a89917e3175433e361b710a9d43528d7f1890a.json")
        );
    }

    #[test]
    fn parse_reads_the_fields_and_debug_hides_the_secrets() {
        let t = parse(&mut DOC.as_bytes().to_vec()).unwrap();
        assert_eq!(t.access_token, "AT-secret");
        assert_eq!(t.expires_at, at("2030-01-01T00:00:00Z"));
        assert_eq!(t.client_id.as_deref(), Some("cid"));
        assert_eq!(t.registration_expires_at, Some(at("2031-01-01T00:00:00Z")));
        let dbg = format!("{t:?}");
        assert!(!dbg.contains("secret"), "{dbg}");
    }

    #[test]
    fn malformed_documents_are_named_without_their_values() {
        for (doc, want) in [
            ("not json AT-secret", "not a JSON document"),
            ("[1]", "not a JSON object"),
            (r#"{"expiresAt":"2030-01-01T00:00:00Z"}"#, "no accessToken"),
            (r#"{"accessToken":"AT-secret"}"#, "no expiresAt"),
            (
                r#"{"accessToken":"AT-secret","expiresAt":"AT-secret-date"}"#,
                "expiresAt is not an RFC 3339",
            ),
            (
                r#"{"accessToken":5,"expiresAt":"2030-01-01T00:00:00Z"}"#,
                "accessToken is not a string",
            ),
        ] {
            let e = parse(&mut doc.as_bytes().to_vec()).unwrap_err();
            assert!(e.contains(want), "{doc}: {e}");
            assert!(!e.contains("AT-secret"), "{e}");
        }
    }

    #[test]
    fn expiry_decisions() {
        let t = parse(&mut DOC.as_bytes().to_vec()).unwrap();
        let exp = t.expires_at;
        assert_eq!(t.state(exp - Duration::from_secs(3600)), TokenState::Fresh);
        assert_eq!(
            t.state(exp - Duration::from_secs(60)),
            TokenState::ExpiresSoon
        );
        assert_eq!(t.state(exp), TokenState::Expired);
        assert_eq!(t.state(exp + Duration::from_secs(1)), TokenState::Expired);

        let now = exp + Duration::from_secs(10);
        assert!(t.refreshable(now));
        let reg_expired = at("2031-01-01T00:00:01Z");
        assert!(!t.refreshable(reg_expired));
        assert!(
            t.not_refreshable_because(reg_expired)
                .contains("registration has expired")
        );
        let mut no_rt = t.clone();
        no_rt.refresh_token = None;
        assert!(!no_rt.refreshable(now));
        assert!(no_rt.not_refreshable_because(now).contains("refreshToken"));
        let mut no_client = t.clone();
        no_client.client_secret = None;
        assert!(!no_client.refreshable(now));
        assert!(no_client.not_refreshable_because(now).contains("clientId"));
        let mut no_reg = t.clone();
        no_reg.registration_expires_at = None;
        assert!(no_reg.refreshable(now));
    }

    #[test]
    fn refreshed_token_keeps_every_other_field_and_the_file_mode() {
        use std::os::unix::fs::PermissionsExt;
        let t = parse(&mut DOC.as_bytes().to_vec()).unwrap();
        let new_exp = at("2032-05-06T07:08:09Z");
        let r = t.refreshed("AT-new".into(), new_exp, Some("RT-new".into()));
        let dir = std::env::temp_dir().join(format!("xrayd-sso-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tok.json");
        std::fs::write(&path, DOC).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_back(&path, &r).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        let back = read(&path, "dev").unwrap();
        assert_eq!(back.access_token, "AT-new");
        assert_eq!(back.expires_at, new_exp);
        assert_eq!(back.refresh_token.as_deref(), Some("RT-new"));
        assert_eq!(back.client_secret.as_deref(), Some("CS-secret"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(r#""expiresAt":"2032-05-06T07:08:09Z""#),
            "{text}"
        );
        assert!(
            text.contains(r#""startUrl":"https://d-123.awsapps.com/start""#),
            "{text}"
        );
        // No temporary file left behind.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        // Without a new refresh token the old one stays.
        let r2 = t.refreshed("AT-2".into(), new_exp, None);
        assert_eq!(r2.refresh_token.as_deref(), Some("RT-secret"));
        let e = read(&dir.join("missing.json"), "dev").unwrap_err();
        assert!(
            e.0.contains("does not exist") && e.0.contains("aws sso login --profile dev"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rfc3339_whole_seconds_utc() {
        assert_eq!(
            rfc3339(at("2026-01-02T03:04:05.900Z")),
            "2026-01-02T03:04:05Z"
        );
        assert_eq!(
            rfc3339(at("2026-01-02T04:04:05+01:00")),
            "2026-01-02T03:04:05Z"
        );
    }
}
