//! A fake AWS IAM Identity Center (SSO): the portal's `GetRoleCredentials`
//! (`GET /federation/credentials`, checked for its bearer token, account and role, and that it is
//! not SigV4-signed) and OIDC `CreateToken` (`POST /token`, the refresh-token grant, checked for its
//! client and refresh token), served by one [`FakeXray`] endpoint. What it finds wrong is kept for
//! the test to assert on, since the daemon only sees an error answer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::answers::Answer;
use super::fake_xray::{FakeXray, RecordedRequest};

/// The identities the fake expects and issues.
#[derive(Clone, Debug)]
pub struct SsoIdentities {
    /// `sso_account_id` of the profile.
    pub account: String,
    /// `sso_role_name` of the profile.
    pub role: String,
    /// Role credentials the portal issues.
    pub role_key: String,
    pub role_secret: String,
    pub role_token: String,
    /// The client registration and refresh token OIDC expects, and the tokens it issues.
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
    pub new_access_token: String,
    pub new_refresh_token: String,
}

/// How the fake portal answers.
#[derive(Clone, Copy, Debug)]
pub enum Portal {
    /// Role credentials for `token`, 401 for any other token.
    Accept(&'static str),
    /// This status (an `UnauthorizedException` / `ForbiddenException`) whatever the token.
    Refuse(u16),
}

/// The fake portal + OIDC service, and what it found wrong.
pub struct SsoFake {
    fake: FakeXray,
    problems: Arc<Mutex<Vec<String>>>,
}

impl SsoFake {
    /// Starts the fake for the identities in `ids`, the portal answering as `portal` says.
    pub fn start(ids: &SsoIdentities, portal: Portal) -> SsoFake {
        let ids = ids.clone();
        let problems = Arc::new(Mutex::new(Vec::<String>::new()));
        let p = problems.clone();
        let fake = FakeXray::serve(move |r: &RecordedRequest| {
            let problem = |why: String| {
                p.lock().unwrap().push(why);
            };
            match (r.method.as_str(), r.path.as_str()) {
                ("GET", "/federation/credentials") => {
                    if !(r.query.contains(&format!("account_id={}", ids.account))
                        && r.query.contains(&format!("role_name={}", ids.role)))
                    {
                        problem(format!("GetRoleCredentials query {:?}", r.query));
                    }
                    if r.header("authorization").is_some() {
                        problem("GetRoleCredentials is signed".into());
                    }
                    let bearer = r.header("x-amz-sso_bearer_token");
                    match portal {
                        Portal::Accept(token) if bearer == Some(token) => {
                            let expiration = (std::time::SystemTime::now()
                                + Duration::from_secs(3600))
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap()
                            .as_millis() as u64;
                            Answer::json(
                                200,
                                &serde_json::json!({"roleCredentials": {
                                    "accessKeyId": ids.role_key,
                                    "secretAccessKey": ids.role_secret,
                                    "sessionToken": ids.role_token,
                                    "expiration": expiration,
                                }})
                                .to_string(),
                            )
                        }
                        Portal::Accept(_) => {
                            problem("GetRoleCredentials with a wrong bearer token".into());
                            Answer::aws_error(
                                401,
                                "UnauthorizedException",
                                "Session token not found or invalid",
                            )
                        }
                        Portal::Refuse(401) => Answer::aws_error(
                            401,
                            "UnauthorizedException",
                            "Session token not found or invalid",
                        ),
                        Portal::Refuse(status) => Answer::aws_error(
                            status,
                            "ForbiddenException",
                            "No access to this role",
                        ),
                    }
                }
                ("POST", "/token") => {
                    let body = r.json();
                    let want = serde_json::json!({
                        "clientId": ids.client_id,
                        "clientSecret": ids.client_secret,
                        "grantType": "refresh_token",
                        "refreshToken": ids.refresh_token,
                    });
                    if body != want {
                        problem(format!("CreateToken body {body}"));
                        return Answer::json(
                            400,
                            r#"{"error":"invalid_grant","error_description":"bad"}"#,
                        );
                    }
                    Answer::json(
                        200,
                        &serde_json::json!({
                            "accessToken": ids.new_access_token,
                            "tokenType": "Bearer",
                            "expiresIn": 28800,
                            "refreshToken": ids.new_refresh_token,
                        })
                        .to_string(),
                    )
                }
                (m, path) => {
                    problem(format!("unexpected {m} {path}"));
                    Answer::text(404, "not found")
                }
            }
        });
        SsoFake { fake, problems }
    }

    /// The endpoint to give the daemon (`AWS_ENDPOINT_URL_SSO`, `AWS_ENDPOINT_URL_SSO_OIDC`).
    pub fn url(&self) -> String {
        self.fake.url()
    }

    /// The underlying endpoint (its recorded requests).
    pub fn endpoint(&self) -> &FakeXray {
        &self.fake
    }

    /// Calls received on `path` (`/federation/credentials`, `/token`).
    pub fn calls(&self, path: &str) -> usize {
        self.fake.count(|r| r.path == path)
    }

    /// What the fake found wrong in the calls it received (empty when all were as expected).
    pub fn problems(&self) -> Vec<String> {
        self.problems.lock().unwrap().clone()
    }
}
