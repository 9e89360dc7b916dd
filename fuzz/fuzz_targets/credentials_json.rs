//! The JSON credentials reader of the container endpoint, IMDS and `credential_process`
//! (`credentials_from_json`, `json_field`, `parse_expiration`) never panics and never quotes a
//! secret in an error.
//!
//! Input: the answer body, tried with both token spellings (`Token`, `SessionToken`). Any string
//! value of `SecretAccessKey`, `Token` or `SessionToken` that serde_json sees (8+ characters) must
//! not appear in the error (unless it also is in `Expiration`, the one field an error may quote,
//! or in the fixed text); nor may the marker `SEKRIT`, which the seeds put in every secret field.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xrayd::aws::fetch::{credentials_from_json, json_field, parse_expiration};

const WHAT: &str = "container endpoint http://169.254.170.2/v2/credentials/x";

fn secret_values(data: &[u8]) -> (Vec<String>, String) {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(data)
    else {
        return (Vec::new(), String::new());
    };
    let mut out = Vec::new();
    for k in ["SecretAccessKey", "Token", "SessionToken"] {
        if let Some(serde_json::Value::String(s)) = map.get(k) {
            out.push(s.trim().to_string());
        }
    }
    let exp = match map.get("Expiration") {
        Some(serde_json::Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    (out, exp)
}

/// Words the error messages contain whatever the input: field names and fixed phrases.
const FIXED_TEXT: &[&str] = &[
    "the answer has no AccessKeyId",
    "the answer has no SecretAccessKey",
    "the answer is not a JSON document",
    "the answer is not a JSON object",
    "SessionToken Token Expiration Code Message",
];

fuzz_target!(|data: &[u8]| {
    let (secrets, expiration) = secret_values(data);
    for token_field in ["Token", "SessionToken"] {
        match credentials_from_json(data, token_field, "container", WHAT) {
            Ok(c) => {
                assert!(!c.access_key_id().is_empty());
                assert_eq!(c.access_key_id().trim(), c.access_key_id());
                assert!(!c.secret_access_key().is_empty());
            }
            Err(e) => {
                let full = &e.0;
                assert!(full.starts_with(WHAT), "{full:?}");
                // The one quoted value an error may hold is the (non-secret) Expiration excerpt;
                // cut it out (with duplicate keys simd-json keeps the first, serde_json the last,
                // so it cannot be matched against a parsed value).
                let msg = match (
                    full.find(": Expiration "),
                    full.rfind(" is not an RFC 3339"),
                ) {
                    (Some(a), Some(b)) if a < b => format!("{}{}", &full[..a], &full[b..]),
                    _ => full.clone(),
                };
                for s in &secrets {
                    // Only values that cannot be words of the fixed message text count
                    // ("ccessKey" is a secret the fuzzer picked, and part of "AccessKeyId").
                    if s.len() >= 8
                        && !expiration.contains(s.as_str())
                        && !WHAT.contains(s.as_str())
                        && !FIXED_TEXT.iter().any(|t| t.contains(s.as_str()))
                    {
                        assert!(
                            !msg.contains(s.as_str()),
                            "secret {s:?} leaked into {full:?}"
                        );
                    }
                }
                assert!(!msg.contains("SEKRIT"), "marker leaked into {full:?}");
            }
        }
    }
    let _ = json_field(data, "Code");
    let _ = json_field(data, "Message");
    if let Ok(s) = std::str::from_utf8(data)
        && let Err(m) = parse_expiration(s)
    {
        // The quoted excerpt is bounded.
        assert!(m.len() <= 40 * 10 + 64, "{m:?}");
    }
});
