//! The STS answer reader (`parse_sts_answer`, `xml_value`, `decode_entities`) never panics and never
//! lets a secret reach an error message.
//!
//! Input: first byte picks the HTTP status (even: 200, else 400/403/500/503), the rest is the XML
//! (lossy UTF-8). The web-identity token `SEKRITwebtoken0123` is passed as a secret to scrub. On a
//! 200 the `SecretAccessKey` and `SessionToken` values of the answer must not appear in the error
//! either (unless the same text is also in the non-secret `Expiration`, which errors may quote).
//! Also: an entity-escaped string always decodes back to itself through `xml_value`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xrayd::aws::sts::{decode_entities, parse_sts_answer, xml_value};

const TOKEN: &str = "SEKRITwebtoken0123";
/// Every fixed word an error message may hold (a value equal to a piece of it proves nothing).
const TEMPLATE: &str = "STS AssumeRoleWithWebIdentity for arn:aws:iam::123456789012:role/r: the \
    answer holds no <Credentials> bytes) the answer has no AccessKeyId SecretAccessKey SessionToken \
    Expiration is not an RFC 3339 timestamp";

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let status = match sel % 10 {
        0 | 2 | 4 | 6 | 8 => 200,
        1 => 400,
        3 => 403,
        5 => 500,
        7 => 503,
        _ => 404,
    };
    let xml = String::from_utf8_lossy(rest);
    let what = "STS AssumeRoleWithWebIdentity for arn:aws:iam::123456789012:role/r";
    let res = parse_sts_answer(status, &xml, "sts-web-identity", what, &[TOKEN]);
    match res {
        Ok(c) => {
            assert_eq!(status, 200);
            assert!(!c.access_key_id().is_empty());
            assert!(!c.secret_access_key().is_empty());
            assert!(c.session_token().is_some_and(|t| !t.is_empty()));
            assert!(c.expiry().is_some());
        }
        Err(e) => {
            let msg = &e.0;
            assert!(!msg.contains(TOKEN), "token leaked: {msg:?}");
            if status == 200 {
                let block = xml_value(&xml, "Credentials").unwrap_or_default();
                let expiration = xml_value(&block, "Expiration").unwrap_or_default();
                for tag in ["SecretAccessKey", "SessionToken"] {
                    if let Some(v) = xml_value(&block, tag) {
                        let v = v.trim();
                        if v.len() >= 8 && !expiration.contains(v) && !TEMPLATE.contains(v) {
                            assert!(!msg.contains(v), "{tag} value {v:?} leaked into {msg:?}");
                        }
                    }
                }
            }
        }
    }
    // xml_value on arbitrary tags never panics.
    let _ = xml_value(&xml, "Code");
    let _ = xml_value(&xml, "");
    let _ = decode_entities(&xml);
    // Escape / decode round trip through a well-formed element.
    if !xml.contains("]]>") {
        let wrapped = format!("<R><V>{}</V></R>", escape(&xml));
        assert_eq!(
            xml_value(&wrapped, "V").as_deref(),
            Some(&*xml),
            "{wrapped:?}"
        );
    }
    // Text without '&' decodes to itself.
    if !xml.contains('&') {
        assert_eq!(decode_entities(&xml), xml);
    }
});
