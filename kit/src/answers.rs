//! What the fake AWS endpoint says: the free-form [`Answer`] of a handler or a per-path override,
//! and the bodies of the services it plays besides PutTraceSegments: the sampling APIs
//! (GetSamplingRules, SamplingTargets), STS (AssumeRole, AssumeRoleWithWebIdentity, errors) and
//! the container / instance-metadata credential documents.

use std::time::{SystemTime, UNIX_EPOCH};

/// One answer of the fake: status, Content-Type and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Answer {
        Answer {
            status,
            content_type: content_type.to_string(),
            body: body.into(),
        }
    }
    pub fn text(status: u16, body: &str) -> Answer {
        Answer::new(status, "text/plain", body)
    }
    pub fn json(status: u16, body: &str) -> Answer {
        Answer::new(status, "application/json", body)
    }
    pub fn xml(status: u16, body: &str) -> Answer {
        Answer::new(status, "text/xml", body)
    }
    /// An AWS JSON error: `{"__type":<kind>,"message":<message>}`.
    pub fn aws_error(status: u16, kind: &str, message: &str) -> Answer {
        Answer::json(
            status,
            &serde_json::json!({ "__type": kind, "message": message }).to_string(),
        )
    }
}

/// The `__type` X-Ray gives an error status: 429 throttling, other 4xx invalid requests, the
/// rest internal failures.
pub fn error_kind(status: u16) -> &'static str {
    match status {
        429 => "ThrottledException",
        400..=499 => "InvalidRequestException",
        _ => "InternalFailure",
    }
}

/// `GetSamplingRules` answer of the fake by default: one rule.
pub const DEFAULT_RULES: &str = r#"{"SamplingRuleRecords":[{"SamplingRule":{"RuleName":"Default","RuleARN":"arn:aws:xray:us-east-1:123456789012:sampling-rule/Default","ResourceARN":"*","Priority":10000,"FixedRate":0.05,"ReservoirSize":1,"ServiceName":"*","ServiceType":"*","Host":"*","HTTPMethod":"*","URLPath":"*","Version":1,"Attributes":{},"Boost":{"NewField":"passed through"}},"CreatedAt":0,"ModifiedAt":1}]}"#;

/// `SamplingStatisticSummaries` answer by default: none.
pub const EMPTY_SUMMARIES: &str = r#"{"SamplingStatisticSummaries":[]}"#;

/// `SamplingTargets` answer by default: one target per reported rule (rate 0, quota 0, valid for
/// a minute).
pub fn sampling_targets(request_body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(request_body).unwrap_or_default();
    let now = unix_now();
    let docs: Vec<serde_json::Value> = v["SamplingStatisticsDocuments"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|d| {
            serde_json::json!({
                "RuleName": d["RuleName"],
                "FixedRate": 0.0,
                "ReservoirQuota": 0,
                "ReservoirQuotaTTL": now + 60,
                "Interval": 10
            })
        })
        .collect();
    serde_json::json!({
        "SamplingTargetDocuments": docs,
        "LastRuleModification": 0,
        "UnprocessedStatistics": []
    })
    .to_string()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// RFC 3339 (UTC, seconds) of now + `secs`.
pub fn rfc3339_in(secs: i64) -> String {
    let ts = jiff::Timestamp::from_second(unix_now() + secs).expect("a valid timestamp");
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// An STS success answer for `action` (`AssumeRole` / `AssumeRoleWithWebIdentity`).
pub fn sts_ok(action: &str, key: &str, secret: &str, token: &str, expires_in: i64) -> Answer {
    let exp = rfc3339_in(expires_in);
    Answer::xml(
        200,
        &format!(
            "<{action}Response xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  <{action}Result>\n    <Credentials>\n      <AccessKeyId>{key}</AccessKeyId>\n      <SecretAccessKey>{secret}</SecretAccessKey>\n      <SessionToken>{token}</SessionToken>\n      <Expiration>{exp}</Expiration>\n    </Credentials>\n    <AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/r/s</Arn><AssumedRoleId>AROA:s</AssumedRoleId></AssumedRoleUser>\n  </{action}Result>\n  <ResponseMetadata><RequestId>1</RequestId></ResponseMetadata>\n</{action}Response>"
        ),
    )
}

/// An STS error answer.
pub fn sts_error(status: u16, code: &str, message: &str) -> Answer {
    Answer::xml(
        status,
        &format!(
            "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>2</RequestId></ErrorResponse>"
        ),
    )
}

/// A container / IMDS style JSON credentials document.
pub fn creds_json(key: &str, secret: &str, token: &str, expires_in: i64) -> String {
    format!(
        "{{\"Code\":\"Success\",\"Type\":\"AWS-HMAC\",\"AccessKeyId\":\"{key}\",\"SecretAccessKey\":\"{secret}\",\"Token\":\"{token}\",\"Expiration\":\"{}\",\"LastUpdated\":\"{}\"}}",
        rfc3339_in(expires_in),
        rfc3339_in(0)
    )
}

/// Decodes `a=b&c=d%20e` (`+` as space), as STS reads its form bodies.
pub fn form_decode(s: &str) -> std::collections::HashMap<String, String> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (form_unescape(k), form_unescape(v))
        })
        .collect()
}

fn form_unescape(s: &str) -> String {
    let plus_as_space = s.replace('+', " ");
    String::from_utf8_lossy(&super::sigv4::percent_decode(&plus_as_space)).into_owned()
}
