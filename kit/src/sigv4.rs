//! An independent AWS Signature Version 4 verifier (header-based signatures).
//!
//! It recomputes the canonical request, the string to sign and the signing key
//! chain from what was received on the wire, with the hand-written SHA-256 /
//! HMAC of `crypto.rs`, and compares with the `Authorization` header.

use super::crypto::{hex, hmac_sha256, sha256_hex};
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Outcome of a signature check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigCheck {
    Ok,
    /// A required header is absent (lower-case name).
    MissingHeader(String),
    /// The Authorization header (or x-amz-date) cannot be parsed.
    Malformed(String),
    /// The access key id is not in the verifier's credentials map.
    UnknownKey(String),
    WrongService {
        expected: String,
        got: String,
    },
    WrongRegion {
        expected: String,
        got: String,
    },
    /// The credential scope's date is not the date of x-amz-date.
    DateMismatch {
        scope_date: String,
        amz_date: String,
    },
    /// x-amz-date is further from the verifier's clock than allowed.
    Stale {
        skew_secs: i64,
    },
    /// x-amz-content-sha256 does not match the body received.
    PayloadHashMismatch {
        header: String,
        actual: String,
    },
    /// Everything parsed, but the signature differs.
    Mismatch {
        expected: String,
        got: String,
    },
}

impl SigCheck {
    pub fn is_ok(&self) -> bool {
        matches!(self, SigCheck::Ok)
    }
}

/// A request as received, before any interpretation.
#[derive(Debug, Clone, Copy)]
pub struct WireRequest<'a> {
    pub method: &'a str,
    /// Path exactly as on the request line (before `?`).
    pub path: &'a str,
    /// Query string exactly as on the request line (after `?`, may be empty).
    pub query: &'a str,
    /// Headers in received order, names in any case.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

/// The parsed `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key_id: String,
    pub date: String,
    pub region: String,
    pub service: String,
    pub terminator: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

/// Verifies SigV4 header signatures for one region and service.
#[derive(Debug, Clone)]
pub struct Verifier {
    pub region: String,
    pub service: String,
    /// access key id -> secret access key
    pub keys: HashMap<String, String>,
    /// Reject x-amz-date further than this from now (AWS uses 15 minutes).
    pub max_skew: Option<Duration>,
}

impl Verifier {
    pub fn new(region: &str, service: &str) -> Self {
        Verifier {
            region: region.to_string(),
            service: service.to_string(),
            keys: HashMap::new(),
            max_skew: None,
        }
    }

    pub fn with_key(mut self, access_key_id: &str, secret: &str) -> Self {
        self.keys
            .insert(access_key_id.to_string(), secret.to_string());
        self
    }

    pub fn with_max_skew(mut self, skew: Duration) -> Self {
        self.max_skew = Some(skew);
        self
    }

    pub fn verify(&self, req: &WireRequest<'_>) -> SigCheck {
        let Some(auth_value) = header(req.headers, "authorization") else {
            return SigCheck::MissingHeader("authorization".into());
        };
        let auth = match parse_authorization(auth_value) {
            Ok(a) => a,
            Err(e) => return SigCheck::Malformed(e),
        };
        let Some(amz_date) = header(req.headers, "x-amz-date") else {
            return SigCheck::MissingHeader("x-amz-date".into());
        };
        let amz_date = amz_date.trim();
        let Some(request_time) = amz_date_to_unix(amz_date) else {
            return SigCheck::Malformed(format!("bad x-amz-date {amz_date:?}"));
        };
        let Some(secret) = self.keys.get(&auth.access_key_id) else {
            return SigCheck::UnknownKey(auth.access_key_id);
        };
        if auth.service != self.service {
            return SigCheck::WrongService {
                expected: self.service.clone(),
                got: auth.service,
            };
        }
        if auth.region != self.region {
            return SigCheck::WrongRegion {
                expected: self.region.clone(),
                got: auth.region,
            };
        }
        if auth.terminator != "aws4_request" {
            return SigCheck::Malformed(format!("scope terminator {:?}", auth.terminator));
        }
        if !amz_date.starts_with(&auth.date) || auth.date.len() != 8 {
            return SigCheck::DateMismatch {
                scope_date: auth.date,
                amz_date: amz_date.to_string(),
            };
        }
        let mut sorted = auth.signed_headers.clone();
        sorted.sort();
        sorted.dedup();
        if sorted != auth.signed_headers
            || auth
                .signed_headers
                .iter()
                .any(|h| h.is_empty() || *h != h.to_ascii_lowercase())
        {
            return SigCheck::Malformed(format!(
                "SignedHeaders not sorted lower-case unique: {:?}",
                auth.signed_headers
            ));
        }
        if !auth.signed_headers.iter().any(|h| h == "host") {
            return SigCheck::Malformed("host is not signed".into());
        }
        for name in &auth.signed_headers {
            if header(req.headers, name).is_none() {
                return SigCheck::MissingHeader(name.clone());
            }
        }
        let actual_hash = sha256_hex(req.body);
        if let Some(claimed) = header(req.headers, "x-amz-content-sha256")
            && claimed.trim() != actual_hash
        {
            return SigCheck::PayloadHashMismatch {
                header: claimed.trim().to_string(),
                actual: actual_hash,
            };
        }
        if let Some(max) = self.max_skew {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock after 1970")
                .as_secs() as i64;
            let skew = request_time - now;
            if skew.unsigned_abs() > max.as_secs() {
                return SigCheck::Stale { skew_secs: skew };
            }
        }
        let signed: Vec<&str> = auth.signed_headers.iter().map(|s| s.as_str()).collect();
        let creq = canonical_request(req, &signed, &actual_hash);
        let scope = format!(
            "{}/{}/{}/aws4_request",
            auth.date, auth.region, auth.service
        );
        let sts = string_to_sign(amz_date, &scope, &creq);
        let key = signing_key(secret, &auth.date, &auth.region, &auth.service);
        let expected = hex(&hmac_sha256(&key, sts.as_bytes()));
        if expected == auth.signature {
            SigCheck::Ok
        } else {
            SigCheck::Mismatch {
                expected,
                got: auth.signature,
            }
        }
    }
}

/// First header named `name` (case-insensitive).
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The access key id of a SigV4 `Authorization` header value.
pub fn auth_key_id(value: &str) -> Option<String> {
    parse_authorization(value).ok().map(|a| a.access_key_id)
}

/// The credential scope (`date/region/service/aws4_request`) of a SigV4 `Authorization` header
/// value.
pub fn auth_scope(value: &str) -> Option<String> {
    parse_authorization(value)
        .ok()
        .map(|a| format!("{}/{}/{}/{}", a.date, a.region, a.service, a.terminator))
}

/// Parse `AWS4-HMAC-SHA256 Credential=AK/date/region/service/aws4_request,
/// SignedHeaders=a;b, Signature=hex`.
pub fn parse_authorization(value: &str) -> Result<Authorization, String> {
    let value = value.trim();
    let rest = value
        .strip_prefix(ALGORITHM)
        .ok_or_else(|| format!("algorithm is not {ALGORITHM}: {value:?}"))?;
    if !rest.starts_with(' ') {
        return Err(format!("no space after algorithm: {value:?}"));
    }
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(',') {
        let part = part.trim();
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("component without '=': {part:?}"))?;
        match k {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed_headers = Some(v),
            "Signature" => signature = Some(v),
            other => return Err(format!("unknown component {other:?}")),
        }
    }
    let credential = credential.ok_or("no Credential")?;
    let signed_headers = signed_headers.ok_or("no SignedHeaders")?;
    let signature = signature.ok_or("no Signature")?;
    let mut parts: Vec<&str> = credential.rsplitn(5, '/').collect();
    if parts.len() != 5 {
        return Err(format!("bad Credential {credential:?}"));
    }
    parts.reverse();
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("bad Signature {signature:?}"));
    }
    Ok(Authorization {
        access_key_id: parts[0].to_string(),
        date: parts[1].to_string(),
        region: parts[2].to_string(),
        service: parts[3].to_string(),
        terminator: parts[4].to_string(),
        signed_headers: signed_headers.split(';').map(str::to_string).collect(),
        signature: signature.to_string(),
    })
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

/// AWS URI encoding: every byte but the unreserved ones becomes %XX (upper hex).
pub fn uri_encode(bytes: &[u8], keep_slash: bool) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        if is_unreserved(b) || (keep_slash && b == b'/') {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// Decode %XX escapes (invalid escapes are kept literally).
pub fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && b[i + 1].is_ascii_hexdigit()
            && b[i + 2].is_ascii_hexdigit()
        {
            let hexval = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
            out.push(hexval(b[i + 1]) * 16 + hexval(b[i + 2]));
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// RFC 3986 remove_dot_segments, keeping a trailing slash.
fn normalize_path(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    let trailing = path.ends_with('/') || path.ends_with("/.") || path.ends_with("/..");
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut p = String::from("/");
    p.push_str(&out.join("/"));
    if trailing && p.len() > 1 {
        p.push('/');
    }
    p
}

/// Canonical URI for non-S3 services: the normalized wire path, each byte
/// URI-encoded once more (so an on-the-wire `%20` becomes `%2520`, which is
/// what `PercentEncodingMode::Double` of aws-sigv4 and X-Ray expect).
pub fn canonical_uri(path: &str) -> String {
    uri_encode(normalize_path(path).as_bytes(), true)
}

/// Canonical query string: decoded then re-encoded pairs sorted by key, value.
pub fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(k), false),
                uri_encode(&percent_decode(v), false),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Header value for the canonical form: trimmed, inner whitespace runs collapsed.
pub fn canonical_header_value(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The canonical request over `signed_headers` (lower-case, sorted).
pub fn canonical_request(
    req: &WireRequest<'_>,
    signed_headers: &[&str],
    payload_hash: &str,
) -> String {
    let mut s = String::new();
    s.push_str(req.method);
    s.push('\n');
    s.push_str(&canonical_uri(req.path));
    s.push('\n');
    s.push_str(&canonical_query(req.query));
    s.push('\n');
    for name in signed_headers {
        let values: Vec<String> = req
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| canonical_header_value(v))
            .collect();
        s.push_str(name);
        s.push(':');
        s.push_str(&values.join(","));
        s.push('\n');
    }
    s.push('\n');
    s.push_str(&signed_headers.join(";"));
    s.push('\n');
    s.push_str(payload_hash);
    s
}

pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, b"aws4_request")
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `20150830T123600Z` -> Unix seconds.
pub fn amz_date_to_unix(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, se) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se)
}

/// Unix seconds -> `20150830T123600Z`.
pub fn unix_to_amz_date(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86400));
    let r = secs.rem_euclid(86400);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        r / 3600,
        (r / 60) % 60,
        r % 60
    )
}
