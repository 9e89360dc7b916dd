//! The IAM Identity Center (SSO) readers: the token cache file (`sso_cache::parse`) and the
//! portal's `GetRoleCredentials` answer (`sso::role_credentials_from_json`) never panic, and no
//! error quotes a token or a secret.
//!
//! Input: one JSON-ish document, given to both readers. The string values of `accessToken`,
//! `refreshToken`, `clientSecret` (cache) and `secretAccessKey`, `sessionToken` (portal answer)
//! that serde_json sees, of 8+ characters, must not appear in an error, nor the marker `SEKRIT`
//! that the seeds put in every secret field.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xrayd::aws::sso::role_credentials_from_json;
use xrayd::aws::sso_cache;

const WHAT: &str = "IAM Identity Center portal https://portal.sso.us-east-1.amazonaws.com";

/// Secret string values at the top level and under `roleCredentials`.
fn secrets(data: &[u8]) -> Vec<String> {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(data)
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut take = |m: &serde_json::Map<String, serde_json::Value>, keys: &[&str]| {
        for k in keys {
            if let Some(serde_json::Value::String(s)) = m.get(*k) {
                out.push(s.trim().to_string());
            }
        }
    };
    take(&map, &["accessToken", "refreshToken", "clientSecret"]);
    if let Some(serde_json::Value::Object(rc)) = map.get("roleCredentials") {
        take(rc, &["secretAccessKey", "sessionToken"]);
    }
    out
}

/// The fixed words of the readers' errors (a secret that happens to be part of them proves nothing).
const FIXED_TEXT: &[&str] = &[
    WHAT,
    "the answer is not a JSON document",
    "the answer has no roleCredentials accessKeyId secretAccessKey sessionToken expiration",
    "it is not a JSON document",
    "it is not a JSON object",
    "it has no accessToken",
    "it has no expiresAt",
    "accessToken expiresAt refreshToken clientId clientSecret registrationExpiresAt",
    " is not a string",
    " is not an RFC 3339 timestamp",
];

fn assert_quiet(error: &str, secrets: &[String]) {
    assert!(!error.contains("SEKRIT"), "{error}");
    let fixed = |s: &str| FIXED_TEXT.iter().any(|t| t.contains(s));
    for s in secrets.iter().filter(|s| s.len() >= 8 && !fixed(s)) {
        assert!(!error.contains(s.as_str()), "secret {s:?} in {error:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let secrets = secrets(data);
    let mut copy = data.to_vec();
    match sso_cache::parse(&mut copy) {
        Ok(token) => assert!(!token.access_token.is_empty()),
        Err(e) => assert_quiet(&e, &secrets),
    }
    match role_credentials_from_json(data, WHAT) {
        Ok(c) => {
            assert!(!c.access_key_id().is_empty());
            assert!(!c.secret_access_key().is_empty());
        }
        Err(e) => assert_quiet(&e.to_string(), &secrets),
    }
});
