//! STS over ureq: `AssumeRoleWithWebIdentity` (unsigned form POST, IRSA) and `AssumeRole` (SigV4,
//! service `sts`), with a small XML reader for the answers.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use std::sync::{Mutex, PoisonError};

use super::credentials::{Credentials, CredentialsError};
use super::fetch::{FetchCredentials, parse_expiration};
use super::http::{Http, authority, excerpt, form_encode, proxy_for, redact_url};
use super::sigv4::{Scope, sign_headers};

/// STS API version of every call.
const STS_VERSION: &str = "2011-06-15";
const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";
/// The session name xrayd uses when it assumes a role itself.
pub const SESSION_NAME: &str = "xray-daemon";

/// A role to assume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSpec {
    pub role_arn: String,
    pub session_name: String,
    pub external_id: Option<String>,
}

impl RoleSpec {
    /// A role assumed with the session name `xray-daemon`.
    pub fn new(role_arn: &str) -> RoleSpec {
        RoleSpec {
            role_arn: role_arn.to_string(),
            session_name: SESSION_NAME.to_string(),
            external_id: None,
        }
    }
}

/// A client for one STS endpoint.
#[derive(Debug)]
pub struct StsClient {
    http: Http,
    url: String,
    host: String,
    region: String,
}

impl StsClient {
    /// `endpoint` is the base URL (e.g. from `resolve_sts_endpoint`); `region` the signing region.
    /// STS is reached through `proxy` unless `no_proxy` (or a loopback host) says otherwise.
    pub fn new(
        endpoint: &str,
        region: &str,
        timeout: Duration,
        proxy: Option<&str>,
        no_proxy: Option<&str>,
    ) -> Result<StsClient, CredentialsError> {
        let base = endpoint.trim_end_matches('/');
        let host = authority(base).ok_or_else(|| {
            CredentialsError(format!("STS endpoint {} has no host", redact_url(endpoint)))
        })?;
        let http =
            Http::new(timeout, proxy_for(base, proxy, no_proxy)).map_err(CredentialsError)?;
        Ok(StsClient {
            http,
            url: format!("{base}/"),
            host,
            region: region.to_string(),
        })
    }

    /// The URL calls go to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `AssumeRoleWithWebIdentity`: an unsigned form POST carrying the token.
    pub fn assume_role_with_web_identity(
        &self,
        role_arn: &str,
        session_name: &str,
        token: &str,
    ) -> Result<Credentials, CredentialsError> {
        let body = form_encode(&[
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", STS_VERSION),
            ("RoleArn", role_arn),
            ("RoleSessionName", session_name),
            ("WebIdentityToken", token),
        ]);
        let what = format!("STS AssumeRoleWithWebIdentity for {role_arn}");
        let reply = self
            .http
            .call(
                "POST",
                &self.url,
                &[("content-type", FORM_CONTENT_TYPE)],
                Some(body.as_bytes()),
            )
            .map_err(|e| CredentialsError(format!("{what} at {}: {e}", redact_url(&self.url))))?;
        parse_sts_answer(
            reply.status,
            &reply.text(),
            "sts-web-identity",
            &what,
            &[token],
        )
    }

    /// `AssumeRole`, signed with `base` (service `sts`).
    pub fn assume_role(
        &self,
        base: &Credentials,
        role: &RoleSpec,
    ) -> Result<Credentials, CredentialsError> {
        let mut pairs = vec![
            ("Action", "AssumeRole"),
            ("Version", STS_VERSION),
            ("RoleArn", role.role_arn.as_str()),
            ("RoleSessionName", role.session_name.as_str()),
        ];
        if let Some(id) = &role.external_id {
            pairs.push(("ExternalId", id.as_str()));
        }
        let body = form_encode(&pairs);
        let what = format!("STS AssumeRole for {}", role.role_arn);
        let signed = sign_headers(
            "POST",
            &self.url,
            &[
                ("host", self.host.as_str()),
                ("content-type", FORM_CONTENT_TYPE),
            ],
            body.as_bytes(),
            base,
            &Scope {
                region: self.region.clone(),
                service: "sts",
            },
            SystemTime::now(),
        )
        .map_err(|e| CredentialsError(format!("{what}: {e}")))?;
        let mut headers: Vec<(&str, &str)> = vec![("content-type", FORM_CONTENT_TYPE)];
        headers.extend(signed.iter().map(|(k, v)| (*k, v.as_str())));
        let reply = self
            .http
            .call("POST", &self.url, &headers, Some(body.as_bytes()))
            .map_err(|e| CredentialsError(format!("{what} at {}: {e}", redact_url(&self.url))))?;
        let secrets = [base.secret_access_key(), base.session_token().unwrap_or("")];
        parse_sts_answer(
            reply.status,
            &reply.text(),
            "sts-assume-role",
            &what,
            &secrets,
        )
    }
}

/// Reads an STS answer: on 200 the `<Credentials>` block, otherwise the `<Error>` code and message.
/// Anything in `secrets` is blanked out of the error text, in case an answer echoes it.
pub fn parse_sts_answer(
    status: u16,
    xml: &str,
    provider_name: &'static str,
    what: &str,
    secrets: &[&str],
) -> Result<Credentials, CredentialsError> {
    let scrub = |s: String| {
        let mut s = s;
        for secret in secrets.iter().filter(|x| x.len() >= 4) {
            s = s.replace(secret, "***");
        }
        s
    };
    if status != 200 {
        let code = xml_value(xml, "Code");
        let message = xml_value(xml, "Message");
        let detail = match (code, message) {
            (Some(c), Some(m)) => format!("{}: {}", excerpt(&c), excerpt(&m)),
            (Some(c), None) => excerpt(&c),
            (None, Some(m)) => excerpt(&m),
            (None, None) if xml.trim().is_empty() => "empty answer".to_string(),
            (None, None) => excerpt(xml),
        };
        return Err(CredentialsError(scrub(format!(
            "{what} failed: HTTP {status}: {detail}"
        ))));
    }
    let block = xml_value(xml, "Credentials").ok_or_else(|| {
        CredentialsError(format!(
            "{what}: the answer holds no <Credentials> ({} bytes)",
            xml.len()
        ))
    })?;
    let field = |tag: &str| {
        xml_value(&block, tag)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| CredentialsError(format!("{what}: the answer has no {tag}")))
    };
    let id = field("AccessKeyId")?;
    let secret = field("SecretAccessKey")?;
    let token = field("SessionToken")?;
    let expiry = parse_expiration(&field("Expiration")?)
        .map_err(|e| CredentialsError(format!("{what}: {e}")))?;
    Ok(Credentials::new(
        id,
        secret,
        Some(token),
        Some(expiry),
        provider_name,
    ))
}

/// The decoded text of the first element named `tag` (no namespace prefix), `""` for `<tag/>`.
/// Nested markup inside is returned raw (callers read it again), except CDATA, which is unwrapped
/// when it is the whole content.
pub fn xml_value(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}");
    let mut from = 0;
    while let Some(pos) = xml[from..].find(&open) {
        let start = from + pos;
        let after = start + open.len();
        let rest = &xml[after..];
        let next = rest.chars().next()?;
        if next == '>' || next == '/' || next.is_whitespace() {
            let close_of_open = after + rest.find('>')?;
            if xml[..close_of_open].ends_with('/') {
                return Some(String::new());
            }
            let content_start = close_of_open + 1;
            let close = format!("</{tag}>");
            let end = content_start + xml[content_start..].find(&close)?;
            let raw = &xml[content_start..end];
            let trimmed = raw.trim();
            if let Some(cdata) = trimmed
                .strip_prefix("<![CDATA[")
                .and_then(|s| s.strip_suffix("]]>"))
            {
                return Some(cdata.to_string());
            }
            return Some(if raw.contains('<') {
                raw.to_string()
            } else {
                decode_entities(raw)
            });
        }
        from = after;
    }
    None
}

/// Decodes the five XML entities and numeric character references; unknown ones stay as they are.
pub fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let tail = &rest[amp..];
        let decoded = tail.find(';').filter(|&semi| semi <= 12).and_then(|semi| {
            let name = &tail[1..semi];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => {
                    let num = name.strip_prefix('#')?;
                    let code = match num.strip_prefix(['x', 'X']) {
                        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                        None => num.parse().ok()?,
                    };
                    char::from_u32(code)
                }
            }?;
            Some((c, semi + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &tail[len..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// IRSA: `AssumeRoleWithWebIdentity` with the token read from its file at every fetch (EKS rotates
/// it).
pub struct WebIdentityFetch {
    pub sts: Arc<StsClient>,
    pub role_arn: String,
    pub session_name: String,
    pub token_file: PathBuf,
}

impl FetchCredentials for WebIdentityFetch {
    fn fetch(&self) -> Result<Credentials, CredentialsError> {
        let token = std::fs::read_to_string(&self.token_file).map_err(|e| {
            CredentialsError(format!(
                "cannot read the web identity token file {}: {e}",
                self.token_file.display()
            ))
        })?;
        let token = token.trim();
        if token.is_empty() {
            return Err(CredentialsError(format!(
                "the web identity token file {} is empty",
                self.token_file.display()
            )));
        }
        self.sts
            .assume_role_with_web_identity(&self.role_arn, &self.session_name, token)
    }
}

/// `AssumeRole` on top of base credentials. The base credentials are kept between calls while
/// they stay valid for `base_margin` more, and fetched again otherwise (or after a failure).
pub struct AssumeRoleFetch {
    pub sts: Arc<StsClient>,
    pub role: RoleSpec,
    pub base: Box<dyn FetchCredentials>,
    pub base_margin: Duration,
    base_memo: Mutex<Option<Credentials>>,
}

impl AssumeRoleFetch {
    pub fn new(
        sts: Arc<StsClient>,
        role: RoleSpec,
        base: Box<dyn FetchCredentials>,
        base_margin: Duration,
    ) -> AssumeRoleFetch {
        AssumeRoleFetch {
            sts,
            role,
            base,
            base_margin,
            base_memo: Mutex::new(None),
        }
    }
}

impl FetchCredentials for AssumeRoleFetch {
    fn fetch(&self) -> Result<Credentials, CredentialsError> {
        let cached = {
            let memo = self
                .base_memo
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            memo.clone().filter(|c| {
                c.expiry()
                    .is_none_or(|e| e > SystemTime::now() + self.base_margin)
            })
        };
        let base = match cached {
            Some(c) => c,
            None => {
                let c = self.base.fetch().map_err(|e| {
                    CredentialsError(format!(
                        "base credentials for assuming {}: {e}",
                        self.role.role_arn
                    ))
                })?;
                *self
                    .base_memo
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(c.clone());
                c
            }
        };
        let result = self.sts.assume_role(&base, &self.role);
        if result.is_err() {
            // The base credentials may have been revoked: fetch them again next time.
            *self
                .base_memo
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = None;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:ns:sa</SubjectFromWebIdentityToken>
    <Credentials>
      <SessionToken>tok&amp;en/+=</SessionToken>
      <SecretAccessKey>sec&lt;ret</SecretAccessKey>
      <Expiration>2030-01-01T00:00:00Z</Expiration>
      <AccessKeyId>ASIAEXAMPLE</AccessKeyId>
    </Credentials>
  </AssumeRoleWithWebIdentityResult>
</AssumeRoleWithWebIdentityResponse>"#;

    #[test]
    fn transport_errors_never_show_the_endpoints_user_info() {
        // Port 9 (discard) on loopback: nothing listens, the call fails at once.
        let sts = StsClient::new(
            "http://user:PASS@127.0.0.1:9",
            "us-east-1",
            Duration::from_secs(5),
            None,
            None,
        )
        .unwrap();
        let e = sts
            .assume_role_with_web_identity("arn:aws:iam::1:role/r", "s", "tok")
            .unwrap_err();
        assert!(
            e.0.contains("http://***@127.0.0.1:9/") && !e.0.contains("PASS"),
            "{e}"
        );
    }

    #[test]
    fn reads_credentials_with_entities() {
        let c = parse_sts_answer(200, OK, "x", "STS", &[]).unwrap();
        assert_eq!(c.access_key_id(), "ASIAEXAMPLE");
        assert_eq!(c.secret_access_key(), "sec<ret");
        assert_eq!(c.session_token(), Some("tok&en/+="));
        assert!(c.expiry().is_some());
    }

    #[test]
    fn error_answers_are_clear_and_scrubbed() {
        let xml = r#"<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>bad token eyJhbGciOi &amp; more</Message></Error></ErrorResponse>"#;
        let e = parse_sts_answer(400, xml, "x", "STS call", &["eyJhbGciOi"]).unwrap_err();
        assert_eq!(
            e.0,
            "STS call failed: HTTP 400: InvalidIdentityToken: bad token *** & more"
        );
        let e = parse_sts_answer(503, "", "x", "STS call", &[]).unwrap_err();
        assert!(e.0.contains("HTTP 503: empty answer"), "{e}");
        let e = parse_sts_answer(200, "<x/>", "x", "STS call", &[]).unwrap_err();
        assert!(e.0.contains("no <Credentials>"), "{e}");
    }

    #[test]
    fn xml_reader_edge_cases() {
        assert_eq!(
            xml_value("<a><Codes>1</Codes><Code>2</Code></a>", "Code").unwrap(),
            "2"
        );
        assert_eq!(xml_value("<Code/>", "Code").unwrap(), "");
        assert_eq!(xml_value(r#"<Code a="b">x</Code>"#, "Code").unwrap(), "x");
        assert_eq!(
            xml_value("<Code><![CDATA[a<b]]></Code>", "Code").unwrap(),
            "a<b"
        );
        assert_eq!(xml_value("<Code>unterminated", "Code"), None);
        assert_eq!(decode_entities("&#65;&#x42;&bogus;&"), "AB&bogus;&");
    }
}
