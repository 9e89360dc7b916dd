//! Every credential source of the chain against loopback fakes or real temp files: STS web
//! identity (unsigned form POST, XML answer, error XML), AssumeRole (signed, `xray-daemon`, on top
//! of the chain and in profile chains), IMDSv2 (a fake that refuses token-less GETs), the container
//! endpoint (token file re-read), `credential_process`, profiles; precedence between sources;
//! expiry-driven refresh; a failed refresh keeping the old credentials; the region steps; and no
//! secret in any error, Debug output or log line.

use xrayd_kit as support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use support::capture::Captured;
use support::sigv4::{auth_key_id, auth_scope};
use support::{
    Answer, Env, FakeXray, RecordedRequest, TempDir, creds_json, poll, sts_error, sts_ok,
};
use xrayd::aws::credentials::{
    CacheConfig, ChainOptions, Credentials, ProvideCredentials, build_provider_with,
    lookup_region_extra, resolve_region_extra,
};
use xrayd::log::{Format, Level, Output};

const ROLE: &str = "arn:aws:iam::123456789012:role/xray-writer";

// ---------------------------------------------------------------------------------------------
// Log capture: every line any test logs lands here, so tests can check that no secret did.

fn log_buffer() -> &'static Captured {
    static LOG: OnceLock<Captured> = OnceLock::new();
    LOG.get_or_init(|| {
        let captured = Captured::default();
        xrayd::log::init(
            Level::Trace,
            Format::Text,
            Output::Writer(captured.writer()),
        )
        .expect("log init");
        captured
    })
}

fn log_text() -> String {
    let captured = log_buffer();
    xrayd::log::flush(Duration::from_secs(2));
    captured.text()
}

/// No secret in the log, nor in any of `texts`.
fn assert_clean(texts: &[String], secrets: &[&str]) {
    let log = log_text();
    for s in secrets {
        assert!(!log.contains(s), "secret {s:?} in the log:\n{log}");
        for t in texts {
            assert!(!t.contains(s), "secret {s:?} in {t:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn fast_opts() -> ChainOptions {
    log_buffer();
    ChainOptions {
        sts_timeout: Duration::from_secs(5),
        imds_timeout: Duration::from_secs(1),
        container_timeout: Duration::from_secs(2),
        process_timeout: Duration::from_secs(10),
        cache: CacheConfig {
            refresh_before_expiry: Duration::from_secs(300),
            min_refresh_interval: Duration::from_millis(100),
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_millis(400),
        },
        ..ChainOptions::default()
    }
}

fn build(env: &Env, region: &str, role: Option<&str>) -> (Arc<dyn ProvideCredentials>, String) {
    build_with(env, region, role, None, &fast_opts())
}

fn build_with(
    env: &Env,
    region: &str,
    role: Option<&str>,
    proxy: Option<&str>,
    opts: &ChainOptions,
) -> (Arc<dyn ProvideCredentials>, String) {
    match build_provider_with(&env.lookup(), region, role, proxy, opts) {
        Ok(built) => built,
        Err(e) => panic!("build_provider failed: {e}"),
    }
}

fn creds_eventually(p: &Arc<dyn ProvideCredentials>) -> Credentials {
    let mut last = String::new();
    poll(Duration::from_secs(15), || match p.credentials() {
        Ok(c) => Some(c),
        Err(e) => {
            last = e.0;
            None
        }
    })
    .unwrap_or_else(|| panic!("no credentials within 15 s; last error: {last}"))
}

fn error_eventually(p: &Arc<dyn ProvideCredentials>, needle: &str) -> String {
    let mut last = String::new();
    poll(Duration::from_secs(15), || match p.credentials() {
        Err(e) if e.0.contains(needle) => Some(e.0),
        Err(e) => {
            last = e.0;
            None
        }
        Ok(c) => {
            last = format!("Ok({})", c.access_key_id());
            None
        }
    })
    .unwrap_or_else(|| panic!("no error mentioning {needle:?} within 15 s; last: {last}"))
}

/// Replaces a file atomically (write + rename), as kubelet does with projected tokens.
fn replace_file(path: &std::path::Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A fake STS answering AssumeRoleWithWebIdentity with numbered keys (`{prefix}{n}`, n from 1),
/// recording the token of each call.
fn web_identity_sts(prefix: &'static str, expires_in: i64) -> (FakeXray, Arc<Mutex<Vec<String>>>) {
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let seen = tokens.clone();
    let server = FakeXray::serve(move |r| {
        let form = r.form();
        if form.get("Action").map(String::as_str) != Some("AssumeRoleWithWebIdentity") {
            return sts_error(400, "InvalidAction", "unexpected action");
        }
        let mut t = seen.lock().unwrap();
        t.push(form.get("WebIdentityToken").cloned().unwrap_or_default());
        let n = t.len();
        sts_ok(
            "AssumeRoleWithWebIdentity",
            &format!("{prefix}{n}"),
            &format!("wi-secret-{n}"),
            &format!("wi-session-token-{n}"),
            expires_in,
        )
    });
    (server, tokens)
}

// ---------------------------------------------------------------------------------------------
// Web identity (IRSA)

#[test]
fn web_identity_posts_an_unsigned_form_and_reads_the_xml_answer() {
    let dir = TempDir::new("wi");
    let token_file = dir.create("token", "eyJhbGciOiJSUzI1NiJ9.irsa-token-one\n");
    let (sts, _) = web_identity_sts("ASIAWEBID000", 3600);
    let env = Env::hermetic()
        .web_identity(&token_file, ROLE)
        .set("AWS_ENDPOINT_URL_STS", &sts.url());
    let (p, desc) = build(&env, "us-west-2", None);
    assert_eq!(p.source(), "web-identity");
    assert!(desc.contains(&token_file.display().to_string()), "{desc}");
    assert!(desc.contains(ROLE) && desc.contains(&sts.url()), "{desc}");
    let c = creds_eventually(&p);
    assert_eq!(c.access_key_id(), "ASIAWEBID0001");
    assert_eq!(c.secret_access_key(), "wi-secret-1");
    assert_eq!(c.session_token(), Some("wi-session-token-1"));
    let left = c
        .expiry()
        .unwrap()
        .duration_since(SystemTime::now())
        .unwrap();
    assert!(left > Duration::from_secs(3500), "{left:?}");

    let reqs = sts.seen();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    let r = &reqs[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/"));
    assert!(r.header("authorization").is_none(), "must be unsigned");
    assert!(r.header("x-amz-security-token").is_none());
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/x-www-form-urlencoded"),
        "{r:?}"
    );
    let form = r.form();
    let expect = [
        ("Action", "AssumeRoleWithWebIdentity"),
        ("Version", "2011-06-15"),
        ("RoleArn", ROLE),
        ("RoleSessionName", "xray-daemon"),
        ("WebIdentityToken", "eyJhbGciOiJSUzI1NiJ9.irsa-token-one"),
    ];
    assert_eq!(form.len(), expect.len(), "{form:?}");
    for (k, v) in expect {
        assert_eq!(form.get(k).map(String::as_str), Some(v), "{k}");
    }
    assert_clean(
        &[desc],
        &["wi-secret-1", "wi-session-token-1", "irsa-token-one"],
    );
}

#[test]
fn web_identity_session_name_comes_from_the_environment() {
    let dir = TempDir::new("wi-name");
    let token_file = dir.create("token", "tok");
    let (sts, _) = web_identity_sts("ASIANAMED000", 3600);
    let env = Env::hermetic()
        .web_identity(&token_file, ROLE)
        .set("AWS_ROLE_SESSION_NAME", "my pod/session")
        .set("AWS_ENDPOINT_URL", &sts.url());
    let (p, _) = build(&env, "us-east-1", None);
    creds_eventually(&p);
    let form = sts.seen()[0].form();
    assert_eq!(form["RoleSessionName"], "my pod/session");
}

#[test]
fn sts_error_xml_becomes_a_clear_error_without_the_token() {
    let dir = TempDir::new("wi-err");
    let token_file = dir.create("token", "secret-jwt-value-123");
    let sts = FakeXray::serve(|r| {
        // Echo the token in the message to prove it gets scrubbed.
        let token = r
            .form()
            .get("WebIdentityToken")
            .cloned()
            .unwrap_or_default();
        sts_error(
            400,
            "InvalidIdentityToken",
            &format!("Couldn&apos;t retrieve verification key for token {token}"),
        )
    });
    let env = Env::hermetic()
        .web_identity(&token_file, ROLE)
        .set("AWS_ENDPOINT_URL_STS", &sts.url());
    let (p, _) = build(&env, "us-east-1", None);
    let e = error_eventually(&p, "InvalidIdentityToken");
    assert!(e.contains("HTTP 400"), "{e}");
    assert!(e.contains("Couldn't retrieve verification key"), "{e}");
    assert!(
        e.contains("AssumeRoleWithWebIdentity") && e.contains(ROLE),
        "{e}"
    );
    assert_clean(&[e], &["secret-jwt-value-123"]);
}

#[test]
fn web_identity_token_file_missing_is_a_clear_error() {
    let (sts, _) = web_identity_sts("ASIANOFILE00", 3600);
    let env = Env::hermetic()
        .set("AWS_WEB_IDENTITY_TOKEN_FILE", "/nonexistent/xrayd/token")
        .set("AWS_ROLE_ARN", ROLE)
        .set("AWS_ENDPOINT_URL_STS", &sts.url());
    let (p, _) = build(&env, "us-east-1", None);
    let e = error_eventually(&p, "/nonexistent/xrayd/token");
    assert!(e.contains("web identity token file"), "{e}");
    assert_eq!(sts.seen().len(), 0);
    // The token file without a role is a configuration error at start-up.
    let env = Env::hermetic().set("AWS_WEB_IDENTITY_TOKEN_FILE", "/x");
    let e = build_provider_with(&env.lookup(), "us-east-1", None, None, &fast_opts())
        .err()
        .expect("error");
    assert!(e.0.contains("AWS_ROLE_ARN"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Expiry-driven refresh, token re-read, failures

#[test]
fn expiring_credentials_are_refreshed_and_the_token_file_is_re_read() {
    let dir = TempDir::new("wi-refresh");
    let token_file = dir.create("token", "jwt-generation-1");
    let (sts, tokens) = web_identity_sts("ASIAROTATE00", 3);
    let env = Env::hermetic()
        .web_identity(&token_file, ROLE)
        .set("AWS_ENDPOINT_URL_STS", &sts.url());
    let (p, _) = build(&env, "us-east-1", None);
    let first = creds_eventually(&p);
    assert_eq!(first.access_key_id(), "ASIAROTATE001");
    // EKS rotates the projected token: the next refresh must send the new one.
    replace_file(&token_file, "jwt-generation-2\n");
    let switched_at = tokens.lock().unwrap().len();
    let refreshed = poll(Duration::from_secs(10), || {
        let t = tokens.lock().unwrap().clone();
        let c = p.credentials().ok()?;
        (t.len() > switched_at && c.access_key_id() != "ASIAROTATE001").then_some((t, c))
    })
    .expect("a refresh with the new token within 10 s");
    let (t, c) = refreshed;
    assert!(
        t[switched_at..].iter().all(|x| x == "jwt-generation-2"),
        "{t:?}"
    );
    assert!(
        t[..switched_at].iter().all(|x| x == "jwt-generation-1"),
        "{t:?}"
    );
    assert!(c.access_key_id().starts_with("ASIAROTATE00"));
    // Short-lived credentials keep being refreshed ahead of expiry, and callers are never
    // without valid credentials meanwhile.
    let before = tokens.lock().unwrap().len();
    for _ in 0..40 {
        let c = p.credentials().expect("always valid credentials");
        assert!(c.expiry().unwrap() > SystemTime::now());
        // Sampling over 4 s is the scenario: callers are served all along.
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        tokens.lock().unwrap().len() >= before + 2,
        "refreshes continue"
    );
}

#[test]
fn a_failed_refresh_keeps_valid_old_credentials_then_recovers() {
    let dir = TempDir::new("wi-fail");
    let token_file = dir.create("token", "jwt");
    let healthy = Arc::new(AtomicBool::new(true));
    let calls = Arc::new(AtomicU32::new(0));
    let sts = {
        let healthy = healthy.clone();
        let calls = calls.clone();
        FakeXray::serve(move |_| {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            if healthy.load(Ordering::SeqCst) {
                if n == 1 {
                    sts_ok(
                        "AssumeRoleWithWebIdentity",
                        "ASIAOLD00001",
                        "old-secret",
                        "old-token",
                        4,
                    )
                } else {
                    sts_ok(
                        "AssumeRoleWithWebIdentity",
                        "ASIANEW00001",
                        "new-secret",
                        "new-token",
                        3600,
                    )
                }
            } else {
                sts_error(503, "ServiceUnavailable", "try again later")
            }
        })
    };
    let env = Env::hermetic()
        .web_identity(&token_file, ROLE)
        .set("AWS_ENDPOINT_URL_STS", &sts.url());
    let (p, _) = build(&env, "us-east-1", None);
    let old = creds_eventually(&p);
    healthy.store(false, Ordering::SeqCst);
    assert_eq!(old.access_key_id(), "ASIAOLD00001");
    let expiry = old.expiry().unwrap();
    // Refreshes start failing while the old credentials are still valid: they keep being served.
    poll(Duration::from_secs(10), || {
        (calls.load(Ordering::SeqCst) >= 3).then_some(())
    })
    .expect("refresh attempts");
    if SystemTime::now() + Duration::from_millis(200) < expiry {
        assert_eq!(p.credentials().unwrap().access_key_id(), "ASIAOLD00001");
    }
    // Once they expire, the error says so and why the refresh failed.
    let e = error_eventually(&p, "expired");
    assert!(e.contains("ServiceUnavailable"), "{e}");
    // STS comes back: the retries (with backoff) pick up new credentials.
    healthy.store(true, Ordering::SeqCst);
    let c = poll(Duration::from_secs(10), || {
        p.credentials()
            .ok()
            .filter(|c| c.access_key_id() == "ASIANEW00001")
    })
    .expect("recovered");
    assert_eq!(c.session_token(), Some("new-token"));
    assert_clean(
        &[e],
        &["old-secret", "old-token", "new-secret", "new-token"],
    );
    assert!(log_text().contains("keeping the current ones"));
}

// ---------------------------------------------------------------------------------------------
// AssumeRole

/// A fake STS for AssumeRole that knows which keys may assume which role, verifies each signature
/// (service `sts`, region `eu-west-1`) and the session token, and answers with the next keys.
struct RoleStep {
    role: &'static str,
    signer_key: &'static str,
    signer_secret: &'static str,
    signer_token: Option<&'static str>,
    session_name: &'static str,
    external_id: Option<&'static str>,
    issue: (&'static str, &'static str, &'static str),
}

fn assume_role_sts(steps: Vec<RoleStep>) -> (FakeXray, Arc<Mutex<Vec<String>>>) {
    let problems = Arc::new(Mutex::new(Vec::new()));
    let seen = problems.clone();
    let server = FakeXray::serve(move |r: &RecordedRequest| {
        let form = r.form();
        let fail = |why: String| {
            seen.lock().unwrap().push(why.clone());
            sts_error(403, "AccessDenied", &why)
        };
        if form.get("Action").map(String::as_str) != Some("AssumeRole") {
            return fail(format!("action {:?}", form.get("Action")));
        }
        let role = form.get("RoleArn").cloned().unwrap_or_default();
        let Some(step) = steps.iter().find(|s| s.role == role) else {
            return fail(format!("unknown role {role}"));
        };
        let auth = r.header("authorization").unwrap_or("");
        if auth_key_id(auth).as_deref() != Some(step.signer_key) {
            return fail(format!("{role}: signed by {:?}", auth_key_id(auth)));
        }
        let scope = auth_scope(auth).unwrap_or_default();
        if !scope.ends_with("/eu-west-1/sts/aws4_request") {
            return fail(format!("{role}: scope {scope}"));
        }
        if r.header("x-amz-security-token") != step.signer_token {
            return fail(format!("{role}: wrong session token"));
        }
        if let Err(why) = r.signed_by(step.signer_key, step.signer_secret, step.signer_token) {
            return fail(format!("{role}: bad signature: {why}"));
        }
        if form.get("RoleSessionName").map(String::as_str) != Some(step.session_name)
            || form.get("ExternalId").map(String::as_str) != step.external_id
            || form.get("Version").map(String::as_str) != Some("2011-06-15")
        {
            return fail(format!("{role}: form {form:?}"));
        }
        sts_ok("AssumeRole", step.issue.0, step.issue.1, step.issue.2, 3600)
    });
    (server, problems)
}

#[test]
fn role_arn_is_assumed_on_top_of_the_chain_as_xray_daemon() {
    let role = "arn:aws:iam::123456789012:role/xray-upload";
    let (sts, problems) = assume_role_sts(vec![RoleStep {
        role,
        signer_key: "AKIDENVBASE01",
        signer_secret: "env-base-secret",
        signer_token: Some("env-base-token"),
        session_name: "xray-daemon",
        external_id: None,
        issue: ("ASIAASSUMED01", "assumed-secret", "assumed-token"),
    }]);
    let env = Env::hermetic()
        .set("AWS_ACCESS_KEY_ID", "AKIDENVBASE01")
        .set("AWS_SECRET_ACCESS_KEY", "env-base-secret")
        .set("AWS_SESSION_TOKEN", "env-base-token")
        .set("AWS_ENDPOINT_URL_STS", &sts.url());
    let (p, desc) = build(&env, "eu-west-1", Some(role));
    assert_eq!(p.source(), "assume-role");
    assert!(
        desc.contains(role) && desc.contains("xray-daemon"),
        "{desc}"
    );
    assert!(desc.contains("the environment"), "{desc}");
    let c = creds_eventually(&p);
    assert_eq!(c.access_key_id(), "ASIAASSUMED01");
    assert_eq!(c.session_token(), Some("assumed-token"));
    assert!(problems.lock().unwrap().is_empty(), "{problems:?}");
    assert_eq!(sts.seen().len(), 1);
    assert_clean(
        &[desc],
        &[
            "env-base-secret",
            "env-base-token",
            "assumed-secret",
            "assumed-token",
        ],
    );
}

#[test]
fn role_arn_uses_the_regional_sts_endpoint_through_the_proxy() {
    // A loopback "proxy" records the CONNECT target: the regional STS host, reached via -p.
    let proxy = FakeXray::serve(|_| Answer::text(403, "no"));
    let role = "arn:aws:iam::123456789012:role/xray-upload";
    let env = Env::hermetic()
        .set("AWS_ACCESS_KEY_ID", "AKIDPROXY0001")
        .set("AWS_SECRET_ACCESS_KEY", "proxy-test-secret");
    let (p, desc) = build_with(
        &env,
        "ap-northeast-1",
        Some(role),
        Some(&proxy.url()),
        &fast_opts(),
    );
    assert!(
        desc.contains("https://sts.ap-northeast-1.amazonaws.com/"),
        "{desc}"
    );
    poll(Duration::from_secs(10), || {
        proxy
            .seen()
            .iter()
            .find(|r| r.method == "CONNECT")
            .map(|r| r.path.clone())
    })
    .filter(|target| target == "sts.ap-northeast-1.amazonaws.com:443")
    .expect("a CONNECT to the regional STS endpoint");
    let e = p.credentials().unwrap_err();
    assert_clean(&[e.0, desc], &["proxy-test-secret"]);
}

#[test]
fn profile_assume_role_chain_with_source_profiles() {
    let dir = TempDir::new("profile-chain");
    let config = dir.create(
        "config",
        "[profile middle]\nrole_arn = arn:aws:iam::123456789012:role/middle\nsource_profile = base\n\n\
         [profile top]\nrole_arn = arn:aws:iam::123456789012:role/top\nsource_profile = middle\n\
         role_session_name = top-session\nexternal_id = ext-42\nregion = eu-west-1\n",
    );
    let credentials = dir.create(
        "credentials",
        "[base]\naws_access_key_id = AKIDBASE0001\naws_secret_access_key = base-secret\n",
    );
    let (sts, problems) = assume_role_sts(vec![
        RoleStep {
            role: "arn:aws:iam::123456789012:role/middle",
            signer_key: "AKIDBASE0001",
            signer_secret: "base-secret",
            signer_token: None,
            session_name: "xray-daemon",
            external_id: None,
            issue: ("ASIAMIDDLE01", "middle-secret", "middle-token"),
        },
        RoleStep {
            role: "arn:aws:iam::123456789012:role/top",
            signer_key: "ASIAMIDDLE01",
            signer_secret: "middle-secret",
            signer_token: Some("middle-token"),
            session_name: "top-session",
            external_id: Some("ext-42"),
            issue: ("ASIATOP00001", "top-secret", "top-token"),
        },
    ]);
    let env = Env::hermetic()
        .set("AWS_CONFIG_FILE", &config.display().to_string())
        .set(
            "AWS_SHARED_CREDENTIALS_FILE",
            &credentials.display().to_string(),
        )
        .set("AWS_PROFILE", "top")
        .set("AWS_ENDPOINT_URL_STS", &sts.url());
    let (p, desc) = build(&env, "eu-west-1", None);
    assert_eq!(p.source(), "profile");
    assert!(
        desc.contains("profile `top`") && desc.contains("role/middle then"),
        "{desc}"
    );
    let c = creds_eventually(&p);
    assert_eq!(c.access_key_id(), "ASIATOP00001");
    assert_eq!(c.session_token(), Some("top-token"));
    assert!(problems.lock().unwrap().is_empty(), "{problems:?}");
    let roles: Vec<String> = sts
        .seen()
        .iter()
        .map(|r| r.form()["RoleArn"].clone())
        .collect();
    assert_eq!(
        roles,
        [
            "arn:aws:iam::123456789012:role/middle",
            "arn:aws:iam::123456789012:role/top"
        ]
    );
    // The profile's region is a region source.
    assert_eq!(
        resolve_region_extra(&env.lookup(), false),
        Some(("eu-west-1".to_string(), "profile region"))
    );
    assert_clean(
        &[desc],
        &[
            "base-secret",
            "middle-secret",
            "middle-token",
            "top-secret",
            "top-token",
        ],
    );
}

#[test]
fn profile_with_web_identity_token_file() {
    let dir = TempDir::new("profile-wi");
    let token = dir.create("token", "profile-jwt");
    let config = dir.create(
        "config",
        &format!(
            "[default]\nrole_arn = {ROLE}\nweb_identity_token_file = {}\nrole_session_name = from-profile\n",
            token.display()
        ),
    );
    let (sts, tokens) = web_identity_sts("ASIAPROFWI00", 3600);
    let env = Env::hermetic()
        .set("AWS_CONFIG_FILE", &config.display().to_string())
        .set("AWS_ENDPOINT_URL_STS", &sts.url());
    let (p, desc) = build(&env, "us-east-1", None);
    assert_eq!(p.source(), "profile");
    assert!(desc.contains("web identity token file"), "{desc}");
    assert_eq!(creds_eventually(&p).access_key_id(), "ASIAPROFWI001");
    assert_eq!(tokens.lock().unwrap().as_slice(), ["profile-jwt"]);
    assert_eq!(sts.seen()[0].form()["RoleSessionName"], "from-profile");
}

#[test]
fn broken_profiles_are_start_up_errors() {
    let dir = TempDir::new("profile-broken");
    let config = dir.create(
        "config",
        "[profile loop1]\nrole_arn = arn:1\nsource_profile = loop2\n\
         [profile loop2]\nrole_arn = arn:2\nsource_profile = loop1\n",
    );
    let base = Env::hermetic().set("AWS_CONFIG_FILE", &config.display().to_string());
    for (profile, needle) in [("loop1", "loops"), ("nope", "not defined")] {
        let env = base.clone().set("AWS_PROFILE", profile);
        let e = build_provider_with(&env.lookup(), "us-east-1", None, None, &fast_opts())
            .err()
            .unwrap_or_else(|| panic!("{profile} should fail"));
        assert!(e.0.contains(needle), "{profile}: {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// credential_process

#[test]
fn credential_process_runs_a_script_and_reads_its_json() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("process");
    let exp = support::rfc3339_in(3600);
    let script = dir.create(
        "creds.sh",
        &format!(
            "#!/bin/sh\n[ \"$1\" = \"--account\" ] || exit 9\necho '{{\"Version\": 1, \"AccessKeyId\": \"AKIDPROC0001\", \"SecretAccessKey\": \"proc-secret\", \"SessionToken\": \"proc-token\", \"Expiration\": \"{exp}\"}}'\n"
        ),
    );
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let failing = dir.create(
        "fail.sh",
        "#!/bin/sh\necho '{\"SecretAccessKey\": \"leaky-secret\"}'\necho 'leaky-stderr' >&2\nexit 4\n",
    );
    std::fs::set_permissions(&failing, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.create(
        "config",
        &format!(
            "[profile proc]\ncredential_process = {} --account prod\n[profile failing]\ncredential_process = {}\n",
            script.display(),
            failing.display()
        ),
    );
    let env = Env::hermetic()
        .set("AWS_CONFIG_FILE", &config.display().to_string())
        .set("AWS_PROFILE", "proc");
    let (p, desc) = build(&env, "us-east-1", None);
    assert_eq!(p.source(), "profile");
    assert!(
        desc.contains("credential_process") && desc.contains("creds.sh"),
        "{desc}"
    );
    assert!(!desc.contains("--account"), "{desc}");
    let c = creds_eventually(&p);
    assert_eq!(c.access_key_id(), "AKIDPROC0001");
    assert_eq!(c.secret_access_key(), "proc-secret");
    assert_eq!(c.session_token(), Some("proc-token"));
    assert!(c.expiry().is_some());

    let env = env.set("AWS_PROFILE", "failing");
    let (p, _) = build(&env, "us-east-1", None);
    let e = error_eventually(&p, "exited with");
    assert!(e.contains("fail.sh"), "{e}");
    assert_clean(
        &[e],
        &["proc-secret", "proc-token", "leaky-secret", "leaky-stderr"],
    );
}

// ---------------------------------------------------------------------------------------------
// Container endpoint

#[test]
fn container_full_uri_with_a_token_file_re_read_at_every_fetch() {
    let dir = TempDir::new("container");
    let token_file = dir.create("token", "pod-identity-token-1\n");
    let calls = Arc::new(AtomicU32::new(0));
    let server = {
        let token_file = token_file.clone();
        let calls = calls.clone();
        FakeXray::serve(move |r| {
            let current = std::fs::read_to_string(&token_file).unwrap_or_default();
            if r.path != "/v1/credentials" {
                return Answer::json(404, "{\"Code\":\"NotFound\"}");
            }
            if r.header("authorization") != Some(current.trim()) {
                return Answer::json(
                    403,
                    "{\"Code\":\"AccessDenied\",\"Message\":\"invalid token\"}",
                );
            }
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            Answer::json(
                200,
                &creds_json(&format!("ASIACONT{n:04}"), "cont-secret", "cont-token", 2),
            )
        })
    };
    let env = Env::hermetic()
        .set(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            &format!("{}/v1/credentials", server.url()),
        )
        .set(
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            &token_file.display().to_string(),
        )
        .set("AWS_CONTAINER_AUTHORIZATION_TOKEN", "ignored-static-token");
    let (p, desc) = build(&env, "us-east-1", None);
    assert_eq!(p.source(), "container");
    assert!(desc.contains("/v1/credentials"), "{desc}");
    assert_eq!(creds_eventually(&p).access_key_id(), "ASIACONT0001");
    replace_file(&token_file, "pod-identity-token-2\n");
    let switched = server.seen().len();
    poll(Duration::from_secs(10), || {
        let reqs = server.seen();
        reqs[switched..]
            .iter()
            .any(|r| r.header("authorization") == Some("pod-identity-token-2"))
            .then_some(())
    })
    .expect("a fetch with the new token");
    let c = creds_eventually(&p);
    assert!(c.access_key_id().starts_with("ASIACONT"));
    let refused = server.count(|r| {
        !matches!(
            r.header("authorization"),
            Some("pod-identity-token-1" | "pod-identity-token-2")
        )
    });
    assert_eq!(refused, 0, "{:?}", server.seen());
    assert_clean(
        &[desc],
        &[
            "cont-secret",
            "cont-token",
            "pod-identity-token",
            "ignored-static-token",
        ],
    );
}

#[test]
fn container_relative_uri_with_a_static_token() {
    let server = FakeXray::serve(|r| {
        if r.path == "/v2/credentials/0f1e2d" && r.header("authorization") == Some("static-auth") {
            Answer::json(
                200,
                &creds_json("ASIAECS00001", "ecs-secret", "ecs-token", 3600),
            )
        } else {
            Answer::json(403, "{\"Code\":\"AccessDenied\",\"Message\":\"no\"}")
        }
    });
    let env = Env::hermetic()
        .set(
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "/v2/credentials/0f1e2d",
        )
        .set("AWS_CONTAINER_AUTHORIZATION_TOKEN", "static-auth");
    let opts = ChainOptions {
        container_base: server.url(),
        ..fast_opts()
    };
    let (p, desc) = build_with(&env, "us-east-1", None, None, &opts);
    assert_eq!(p.source(), "container");
    assert!(!desc.contains("0f1e2d"), "{desc}");
    assert_eq!(creds_eventually(&p).access_key_id(), "ASIAECS00001");
}

/// An error answer is quoted as a short single-line excerpt, without the token it may echo.
#[test]
fn a_container_error_answer_is_bounded_escaped_and_never_echoes_the_token() {
    let server = FakeXray::serve(|r| {
        let echoed = r.header("authorization").unwrap_or("").to_string();
        let body = serde_json::json!({
            "Code": "AccessDenied\n[Error] forged\u{1b}[31m",
            "Message": format!("token {echoed} rejected {}", "x".repeat(100_000)),
        });
        Answer::json(403, &body.to_string())
    });
    let env = Env::hermetic()
        .set(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            &format!("{}/creds", server.url()),
        )
        .set("AWS_CONTAINER_AUTHORIZATION_TOKEN", "SECRET-AUTH-TOKEN");
    let (p, _) = build(&env, "us-east-1", None);
    let e = error_eventually(&p, "HTTP 403");
    assert!(!e.contains("SECRET-AUTH-TOKEN"), "{e}");
    assert!(e.contains("token *** rejected"), "{e}");
    assert!(e.len() < 1000, "{} bytes", e.len());
    assert!(!e.contains(['\n', '\u{1b}']), "{e:?}");
}

#[test]
fn container_errors_and_forbidden_hosts() {
    let server = FakeXray::serve(|_| {
        Answer::json(
            403,
            "{\"Code\":\"AccessDenied\",\"Message\":\"token rejected\"}",
        )
    });
    let env = Env::hermetic().set(
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        &format!("{}/creds", server.url()),
    );
    let (p, _) = build(&env, "us-east-1", None);
    let e = error_eventually(&p, "HTTP 403");
    assert!(e.contains("AccessDenied: token rejected"), "{e}");
    for bad in [
        "http://10.1.2.3/creds",
        "http://169.254.169.254/latest",
        "http://example.com/creds",
    ] {
        let env = Env::hermetic().set("AWS_CONTAINER_CREDENTIALS_FULL_URI", bad);
        let e = build_provider_with(&env.lookup(), "us-east-1", None, None, &fast_opts())
            .err()
            .unwrap_or_else(|| panic!("{bad} must be refused"));
        assert!(
            e.0.contains("169.254.170.23") && e.0.contains("https"),
            "{e}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// IMDSv2

/// An IMDS fake that only serves GETs carrying the session token it handed out with the PUT.
fn imds_fake(region: &'static str) -> FakeXray {
    FakeXray::serve(move |r| {
        const TOKEN: &str = "imds-session-token-xyz";
        if r.method == "PUT" && r.path == "/latest/api/token" {
            return if r.header("x-aws-ec2-metadata-token-ttl-seconds") == Some("21600") {
                Answer::text(200, TOKEN)
            } else {
                Answer::text(400, "missing ttl")
            };
        }
        if r.method != "GET" {
            return Answer::text(405, "");
        }
        if r.header("x-aws-ec2-metadata-token") != Some(TOKEN) {
            return Answer::text(401, "");
        }
        match r.path.as_str() {
            "/latest/meta-data/iam/security-credentials/" => {
                Answer::text(200, "xray-instance-role\n")
            }
            "/latest/meta-data/iam/security-credentials/xray-instance-role" => Answer::json(
                200,
                &creds_json("ASIAIMDS0001", "imds-secret", "imds-token", 3600),
            ),
            "/latest/meta-data/placement/region" => Answer::text(200, region),
            _ => Answer::text(404, ""),
        }
    })
}

#[test]
fn imds_v2_fetches_a_token_first_and_never_gets_refused() {
    let imds = imds_fake("ap-southeast-2");
    // Sanity of the fake: a token-less (IMDSv1) GET is refused.
    let mut s = TcpStream::connect(imds.addr()).unwrap();
    s.write_all(b"GET /latest/meta-data/placement/region HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let refused_before =
        imds.count(|r| r.header("x-aws-ec2-metadata-token").is_none() && r.method == "GET");

    let env = Env::hermetic().unset("AWS_EC2_METADATA_DISABLED").set(
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        &format!("{}/", imds.url()),
    );
    let (p, desc) = build(&env, "us-east-1", None);
    assert_eq!(p.source(), "imds");
    assert!(desc.contains("IMDSv2"), "{desc}");
    let c = creds_eventually(&p);
    assert_eq!(c.access_key_id(), "ASIAIMDS0001");
    assert_eq!(c.session_token(), Some("imds-token"));
    let reqs = imds.seen();
    let ours = &reqs[refused_before..];
    assert_eq!(ours[0].method, "PUT", "{ours:?}");
    assert_eq!(
        imds.count(|r| r.header("x-aws-ec2-metadata-token").is_none() && r.method == "GET"),
        refused_before,
        "no token-less GET"
    );
    // The region step.
    assert_eq!(
        resolve_region_extra(&env.lookup(), false),
        Some(("ap-southeast-2".to_string(), "EC2 instance metadata"))
    );
    let n = imds.seen().len();
    let local = lookup_region_extra(&env.lookup(), true);
    assert_eq!(local.region, None);
    assert!(
        local.tried.iter().any(|t| t.contains("local mode")),
        "{local:?}"
    );
    assert_eq!(imds.seen().len(), n, "local mode must not call IMDS");
    assert_clean(
        &[desc],
        &["imds-secret", "imds-token", "imds-session-token-xyz"],
    );
}

#[test]
fn imds_unreachable_or_disabled() {
    // A closed port: fails fast with a clear message.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let env = Env::hermetic().unset("AWS_EC2_METADATA_DISABLED").set(
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        &format!("http://{closed}"),
    );
    let (p, _) = build(&env, "us-east-1", None);
    let e = error_eventually(&p, "token request failed");
    assert!(e.contains("EC2 instance metadata"), "{e}");
    // Disabled and nothing else configured: no credentials, and the message names every place.
    let (p, desc) = build(&Env::hermetic(), "us-east-1", None);
    assert_eq!(p.source(), "none");
    let e = p.credentials().unwrap_err().0;
    for place in [
        "AWS_ACCESS_KEY_ID",
        "profile `default`",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_EC2_METADATA_DISABLED",
    ] {
        assert!(e.contains(place), "{place}: {e}");
        assert!(desc.contains(place), "{place}: {desc}");
    }
}

// ---------------------------------------------------------------------------------------------
// Precedence

#[test]
fn sources_are_tried_in_sdk_order() {
    let dir = TempDir::new("precedence");
    let credentials = dir.create(
        "credentials",
        "[default]\naws_access_key_id = AKIDPROFILE01\naws_secret_access_key = profile-secret\n",
    );
    let token_file = dir.create("token", "jwt");
    let (sts, _) = web_identity_sts("ASIAWEB00000", 3600);
    let container = FakeXray::serve(|_| {
        Answer::json(
            200,
            &creds_json("ASIACONTAINER", "c-secret", "c-token", 3600),
        )
    });
    let imds = imds_fake("us-east-1");
    let full = Env::hermetic()
        .set("AWS_ACCESS_KEY_ID", "AKIDENV000001")
        .set("AWS_SECRET_ACCESS_KEY", "env-secret")
        .set(
            "AWS_SHARED_CREDENTIALS_FILE",
            &credentials.display().to_string(),
        )
        .web_identity(&token_file, ROLE)
        .set("AWS_ENDPOINT_URL_STS", &sts.url())
        .set(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            &format!("{}/creds", container.url()),
        )
        .unset("AWS_EC2_METADATA_DISABLED")
        .set("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds.url());
    let steps: [(&str, &str, &str); 5] = [
        ("AWS_ACCESS_KEY_ID", "environment", "AKIDENV000001"),
        ("AWS_SHARED_CREDENTIALS_FILE", "profile", "AKIDPROFILE01"),
        (
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "web-identity",
            "ASIAWEB000001",
        ),
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "container",
            "ASIACONTAINER",
        ),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", "imds", "ASIAIMDS0001"),
    ];
    let mut env = full;
    for (remove_after, source, key) in steps {
        let (p, _) = build(&env, "us-east-1", None);
        assert_eq!(p.source(), source);
        assert_eq!(creds_eventually(&p).access_key_id(), key, "{source}");
        env = env.unset(remove_after);
        if remove_after == "AWS_SHARED_CREDENTIALS_FILE" {
            env = env.set("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/creds");
        }
    }
    // Each fetching source was reached only when it was the one picked.
    assert_eq!(sts.seen().len(), 1);
    assert_eq!(container.seen().len(), 1);
    let env = env.set("AWS_EC2_METADATA_DISABLED", "true");
    let (p, _) = build(&env, "us-east-1", None);
    assert_eq!(p.source(), "none");
    assert_clean(
        &[],
        &["env-secret", "profile-secret", "c-secret", "c-token"],
    );
}

// ---------------------------------------------------------------------------------------------
// Region steps

#[test]
fn ecs_metadata_file_region_and_its_failure_modes() {
    let dir = TempDir::new("ecs-meta");
    let good = dir.create(
        "good.json",
        "{\"Cluster\":\"c\",\"TaskARN\":\"arn:aws:ecs:eu-north-1:123456789012:task/c/0123\",\"MetadataFileStatus\":\"READY\"}",
    );
    let no_arn = dir.create(
        "noarn.json",
        "{\"Cluster\":\"c\",\"MetadataFileStatus\":\"NOT_READY\"}",
    );
    let short_arn = dir.create("short.json", "{\"TaskARN\":\"arn:aws\"}");
    let not_json = dir.create("bad.json", "TaskARN=");
    let base = Env::hermetic().set("ECS_ENABLE_CONTAINER_METADATA", "true");
    let env = base
        .clone()
        .set("ECS_CONTAINER_METADATA_FILE", &good.display().to_string());
    assert_eq!(
        resolve_region_extra(&env.lookup(), false),
        Some(("eu-north-1".to_string(), "ECS container metadata file"))
    );
    assert_eq!(
        resolve_region_extra(&env.lookup(), true),
        None,
        "local mode"
    );
    assert_eq!(
        resolve_region_extra(
            &env.clone()
                .set("ECS_ENABLE_CONTAINER_METADATA", "false")
                .lookup(),
            false
        ),
        None
    );
    for (file, needle) in [
        (&no_arn, "no TaskARN"),
        (&short_arn, "holds no region"),
        (&not_json, "not a JSON"),
    ] {
        let env = base
            .clone()
            .set("ECS_CONTAINER_METADATA_FILE", &file.display().to_string());
        let r = lookup_region_extra(&env.lookup(), false);
        assert_eq!(r.region, None);
        assert!(
            r.tried.iter().any(|t| t.contains(needle)),
            "{needle}: {r:?}"
        );
    }
    // The profile region comes first.
    let config = dir.create("config", "[profile eu]\nregion = eu-south-2\n");
    let env = env
        .set("AWS_CONFIG_FILE", &config.display().to_string())
        .set("AWS_PROFILE", "eu");
    assert_eq!(
        resolve_region_extra(&env.lookup(), false),
        Some(("eu-south-2".to_string(), "profile region"))
    );
}
