//! IAM Identity Center (SSO) profiles end to end: a real `xrayd` with a hermetic HOME holding
//! `~/.aws/config` and the token cache `aws sso login` leaves in `~/.aws/sso/cache/`, a fake SSO
//! portal and OIDC service (`AWS_ENDPOINT_URL_SSO`, `AWS_ENDPOINT_URL_SSO_OIDC`) that check the
//! bearer token and the refresh request, and a fake X-Ray that accepts only uploads signed with
//! the role credentials the portal issued.
//!
//! Covered: the `sso_session` form and the legacy form (each with its cache key); an expired
//! token refreshed with OIDC `CreateToken` and written back with the file's mode kept; an expired
//! token that cannot be refreshed, a missing or malformed cache file, and a portal answering
//! 401/403, each a clear error that says to run `aws sso login`; and no token, secret or full key
//! id anywhere in the daemon's output. In process (the chain's provider, no daemon): role
//! credentials refreshed ahead of their expiry like every source's, and a token within the
//! refresh window used as it is while OIDC cannot refresh it, refreshed once OIDC can.
//!
//! The cache file names are the SHA-1 of the session name / start URL, computed here with
//! `sha1sum` rather than by the code under test.

use xrayd_kit as support;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use support::capture::Captured;
use support::sso::{Portal, SsoFake, SsoIdentities};
use support::{
    Answer, Daemon, Env, FakeXray, RecordedRequest, TempDir, poll, rfc3339_in, segment_id,
    send_segments, small_segment,
};
use xrayd::aws::credentials::{
    CacheConfig, ChainOptions, Credentials, ProvideCredentials, build_provider_with,
};
use xrayd::log::{Format, Level, Output};

const REGION: &str = "us-east-1";
const SESSION: &str = "my-sso";
/// `printf %s my-sso | sha1sum`
const SESSION_CACHE: &str = "0ad374308c5a4e22f723adf10145eafad7c4031c.json";
const START_URL: &str = "https://d-abc123.awsapps.com/start";
/// `printf %s https://d-abc123.awsapps.com/start | sha1sum` (also the AWS SDKs' test vector).
const START_URL_CACHE: &str = "40a89917e3175433e361b710a9d43528d7f1890a.json";
const ACCOUNT: &str = "111122223333";
const ROLE: &str = "XrayWriter";

const ACCESS_TOKEN: &str = "sso-access-token-aGVsbG8td29ybGQ";
const NEW_ACCESS_TOKEN: &str = "sso-new-access-token-cmVmcmVzaGVk";
const REFRESH_TOKEN: &str = "sso-refresh-token-b2xkLXJlZnJlc2g";
const NEW_REFRESH_TOKEN: &str = "sso-new-refresh-token-bmV3LXJlZnJlc2g";
const CLIENT_ID: &str = "sso-client-id-Y2xpZW50";
const CLIENT_SECRET: &str = "sso-client-secret-c2VjcmV0LXNlY3JldA";

const ROLE_KEY: &str = "ASIASSOROLE0000001";
const ROLE_SECRET: &str = "sso-role-secret-key-cm9sZS1zZWNyZXQ";
const ROLE_TOKEN: &str = "sso-role-session-token-cm9sZS10b2tlbg";

/// Everything that must never reach the daemon's output.
const SECRETS: &[&str] = &[
    ACCESS_TOKEN,
    NEW_ACCESS_TOKEN,
    REFRESH_TOKEN,
    NEW_REFRESH_TOKEN,
    CLIENT_SECRET,
    ROLE_SECRET,
    ROLE_TOKEN,
    ROLE_KEY,
];

fn assert_no_secret(log: &str) {
    for s in SECRETS {
        assert!(!log.contains(s), "{s:?} leaked into the output:\n{log}");
    }
}

// ---------------------------------------------------------------------------------------------
// Files in the hermetic HOME

const SESSION_PROFILE: &str = "[profile dev]\nsso_session = my-sso\nsso_account_id = 111122223333\n\
    sso_role_name = XrayWriter\nregion = us-east-1\n\n[sso-session my-sso]\n\
    sso_start_url = https://d-abc123.awsapps.com/start\nsso_region = us-east-1\n\
    sso_registration_scopes = sso:account:access\n";

const LEGACY_PROFILE: &str = "[profile dev]\nsso_start_url = https://d-abc123.awsapps.com/start\n\
    sso_region = us-east-1\nsso_account_id = 111122223333\nsso_role_name = XrayWriter\n";

/// A HOME with `~/.aws/config` and an empty `~/.aws/sso/cache/`.
fn home(config: &str) -> TempDir {
    let dir = TempDir::new("sso-home");
    std::fs::create_dir_all(dir.join(".aws/sso/cache")).unwrap();
    std::fs::write(dir.join(".aws/config"), config).unwrap();
    dir
}

/// A cache document as the AWS CLI writes it; `expires_in` seconds from now (negative: expired).
fn cache_doc(access_token: &str, expires_in: i64, refreshable: bool) -> String {
    let mut v = serde_json::json!({
        "startUrl": START_URL,
        "region": REGION,
        "accessToken": access_token,
        "expiresAt": rfc3339_in(expires_in),
    });
    if refreshable {
        v["refreshToken"] = REFRESH_TOKEN.into();
        v["clientId"] = CLIENT_ID.into();
        v["clientSecret"] = CLIENT_SECRET.into();
        v["registrationExpiresAt"] = rfc3339_in(90 * 86400).into();
    }
    v.to_string()
}

fn write_cache(home: &TempDir, name: &str, text: &str, mode: u32) -> PathBuf {
    let p = home.join(&format!(".aws/sso/cache/{name}"));
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

// ---------------------------------------------------------------------------------------------
// Fakes

/// The identities of these tests, as the fake SSO portal and OIDC service expect and issue them.
fn identities() -> SsoIdentities {
    SsoIdentities {
        account: ACCOUNT.into(),
        role: ROLE.into(),
        role_key: ROLE_KEY.into(),
        role_secret: ROLE_SECRET.into(),
        role_token: ROLE_TOKEN.into(),
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
        refresh_token: REFRESH_TOKEN.into(),
        new_access_token: NEW_ACCESS_TOKEN.into(),
        new_refresh_token: NEW_REFRESH_TOKEN.into(),
    }
}

/// Texts a fake collects while it answers.
type Collected = Arc<Mutex<Vec<String>>>;

/// A fake X-Ray accepting only calls signed with the role credentials; the upload bodies and
/// what it found wrong.
fn xray_for_role_credentials() -> (FakeXray, Collected, Collected) {
    let uploaded = Arc::new(Mutex::new(Vec::<String>::new()));
    let problems = Arc::new(Mutex::new(Vec::<String>::new()));
    let (u, p) = (uploaded.clone(), problems.clone());
    let fake = FakeXray::serve(move |r: &RecordedRequest| {
        if let Err(why) = r.signed_by(ROLE_KEY, ROLE_SECRET, Some(ROLE_TOKEN)) {
            p.lock()
                .unwrap()
                .push(format!("{} {}: {why}", r.method, r.path));
            return Answer::aws_error(403, "InvalidSignatureException", "bad signature");
        }
        if r.path == "/TraceSegments" {
            u.lock().unwrap().push(r.text());
            return Answer::json(200, r#"{"UnprocessedTraceSegments":[]}"#);
        }
        Answer::json(200, "{}")
    });
    (fake, uploaded, problems)
}

/// xrayd with `home` as HOME (the default `~/.aws/config`), `AWS_PROFILE=dev`, X-Ray at `xray`,
/// the SSO portal and OIDC at `sso`.
fn start_xrayd(home: &Path, xray: &str, sso: &str) -> (Daemon, SocketAddr) {
    let d = Daemon::spawn_at(
        home,
        &[
            "-b",
            "127.0.0.1:0",
            "-t",
            "127.0.0.1:0",
            "-o",
            "-n",
            REGION,
            "-l",
            "debug",
            "--endpoint",
            xray,
        ],
        &[
            ("AWS_CONFIG_FILE", ""),
            ("AWS_SHARED_CREDENTIALS_FILE", ""),
            ("AWS_PROFILE", "dev"),
            ("AWS_ENDPOINT_URL_SSO", sso),
            ("AWS_ENDPOINT_URL_SSO_OIDC", sso),
        ],
    );
    let addr = d.udp_addr();
    (d, addr)
}

/// Sends three segments and waits until the fake X-Ray has all of them; stops the daemon and
/// returns its output.
fn upload_three(mut xrayd: Daemon, addr: SocketAddr, uploaded: &Collected) -> String {
    let docs: Vec<String> = (0..3).map(|i| small_segment(0x550 + i, 200)).collect();
    send_segments(addr, &docs);
    let all_there = poll(Duration::from_secs(30), || {
        let bodies = uploaded.lock().unwrap().join("\n");
        (0..3)
            .all(|i| bodies.contains(&segment_id(0x550 + i)))
            .then_some(())
    });
    let status = xrayd.terminate(Duration::from_secs(20));
    let log = xrayd.log();
    assert!(all_there.is_some(), "segments not uploaded:\n{log}");
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?}\n{log}"
    );
    log
}

/// Waits for the daemon to report a credentials failure containing `needle`; stops it and
/// returns that line and the whole output.
fn credentials_error(mut xrayd: Daemon, needle: &str) -> (String, String) {
    let line = xrayd.wait_for_line(needle, Duration::from_secs(20));
    xrayd.terminate(Duration::from_secs(20));
    let log = xrayd.log();
    let line = line.unwrap_or_else(|| panic!("no line containing {needle:?}:\n{log}"));
    (line, log)
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn sso_session_profile_role_credentials_sign_uploads() {
    let home = home(SESSION_PROFILE);
    let doc = cache_doc(ACCESS_TOKEN, 3600, true);
    let cache = write_cache(&home, SESSION_CACHE, &doc, 0o600);
    let sso = SsoFake::start(&identities(), Portal::Accept(ACCESS_TOKEN));
    let (xray, uploaded, xray_problems) = xray_for_role_credentials();
    let (xrayd, addr) = start_xrayd(home.path(), &xray.url(), &sso.url());
    let log = upload_three(xrayd, addr, &uploaded);

    assert!(
        xray_problems.lock().unwrap().is_empty(),
        "{xray_problems:?}\n{log}"
    );
    assert!(sso.problems().is_empty(), "{:?}\n{log}", sso.problems());
    assert_eq!(
        sso.calls("/federation/credentials"),
        1,
        "cached role credentials\n{log}"
    );
    assert_eq!(
        sso.calls("/token"),
        0,
        "a fresh token is not refreshed\n{log}"
    );
    assert_eq!(
        std::fs::read_to_string(&cache).unwrap(),
        doc,
        "cache untouched"
    );
    // The start-up line names the source and the cache file; the key id shows 4 characters.
    assert!(
        log.contains("IAM Identity Center (SSO) role XrayWriter in account 111122223333")
            && log.contains(&format!("sso-session `{SESSION}`"))
            && log.contains(SESSION_CACHE),
        "{log}"
    );
    assert!(log.contains("key id ASIA****"), "{log}");
    assert_no_secret(&log);
}

#[test]
fn legacy_profile_reads_the_cache_keyed_by_the_start_url() {
    let home = home(LEGACY_PROFILE);
    // A file under the session-name key must not be used by the legacy form.
    write_cache(
        &home,
        SESSION_CACHE,
        &cache_doc("wrong-token-xyz", 3600, false),
        0o600,
    );
    write_cache(
        &home,
        START_URL_CACHE,
        &cache_doc(ACCESS_TOKEN, 3600, false),
        0o600,
    );
    let sso = SsoFake::start(&identities(), Portal::Accept(ACCESS_TOKEN));
    let (xray, uploaded, xray_problems) = xray_for_role_credentials();
    let (xrayd, addr) = start_xrayd(home.path(), &xray.url(), &sso.url());
    let log = upload_three(xrayd, addr, &uploaded);

    assert!(
        xray_problems.lock().unwrap().is_empty(),
        "{xray_problems:?}\n{log}"
    );
    assert!(sso.problems().is_empty(), "{:?}\n{log}", sso.problems());
    assert!(log.contains(&format!("start URL {START_URL}")), "{log}");
    assert!(log.contains(START_URL_CACHE), "{log}");
    assert_no_secret(&log);
}

#[test]
fn expired_token_is_refreshed_with_oidc_and_written_back_with_its_mode() {
    let home = home(SESSION_PROFILE);
    let cache = write_cache(
        &home,
        SESSION_CACHE,
        &cache_doc(ACCESS_TOKEN, -60, true),
        0o640,
    );
    let sso = SsoFake::start(&identities(), Portal::Accept(NEW_ACCESS_TOKEN));
    let (xray, uploaded, xray_problems) = xray_for_role_credentials();
    let (xrayd, addr) = start_xrayd(home.path(), &xray.url(), &sso.url());
    let log = upload_three(xrayd, addr, &uploaded);

    assert!(
        xray_problems.lock().unwrap().is_empty(),
        "{xray_problems:?}\n{log}"
    );
    assert!(sso.problems().is_empty(), "{:?}\n{log}", sso.problems());
    assert_eq!(sso.calls("/token"), 1, "{log}");
    assert!(log.contains("Refreshed the SSO access token"), "{log}");

    // Written back: new token, refresh token and expiry; every other field kept; mode kept.
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640, "the cache file's mode");
    let back: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cache).unwrap()).unwrap();
    assert_eq!(back["accessToken"], NEW_ACCESS_TOKEN);
    assert_eq!(back["refreshToken"], NEW_REFRESH_TOKEN);
    assert_eq!(back["clientId"], CLIENT_ID);
    assert_eq!(back["clientSecret"], CLIENT_SECRET);
    assert_eq!(back["startUrl"], START_URL);
    assert_eq!(back["region"], REGION);
    assert!(back["registrationExpiresAt"].is_string(), "{back}");
    let expires = back["expiresAt"].as_str().unwrap();
    let expires: jiff::Timestamp = expires.parse().expect("expiresAt is RFC 3339");
    let left = expires.as_second() - jiff::Timestamp::now().as_second();
    assert!(
        (28000..=28800).contains(&left),
        "expiresAt {expires} ({left} s left)"
    );
    let leftovers: Vec<_> = std::fs::read_dir(home.join(".aws/sso/cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "temporary files left: {leftovers:?}");
    assert_no_secret(&log);
}

#[test]
fn expired_token_that_cannot_be_refreshed_says_to_log_in_again() {
    // sso_session form without a refresh token.
    let home_a = home(SESSION_PROFILE);
    write_cache(
        &home_a,
        SESSION_CACHE,
        &cache_doc(ACCESS_TOKEN, -60, false),
        0o600,
    );
    let sso = SsoFake::start(&identities(), Portal::Accept(ACCESS_TOKEN));
    let (xray, _uploaded, _) = xray_for_role_credentials();
    let (xrayd, _) = start_xrayd(home_a.path(), &xray.url(), &sso.url());
    let (line, log) = credentials_error(xrayd, "aws sso login --profile dev");
    assert!(
        line.contains("expired")
            && line.contains("no refreshToken")
            && line.contains(SESSION_CACHE),
        "{line}"
    );
    assert_no_secret(&log);

    // The legacy form never refreshes, even with refresh material in the cache.
    let home_b = home(LEGACY_PROFILE);
    write_cache(
        &home_b,
        START_URL_CACHE,
        &cache_doc(ACCESS_TOKEN, -60, true),
        0o600,
    );
    let (xrayd, _) = start_xrayd(home_b.path(), &xray.url(), &sso.url());
    let (line, log) = credentials_error(xrayd, "aws sso login --profile dev");
    assert!(
        line.contains("expired") && line.contains("cannot refresh"),
        "{line}"
    );
    assert_no_secret(&log);

    // An expired client registration: not refreshable either.
    let home_c = home(SESSION_PROFILE);
    let mut doc: serde_json::Value =
        serde_json::from_str(&cache_doc(ACCESS_TOKEN, -60, true)).unwrap();
    doc["registrationExpiresAt"] = rfc3339_in(-3600).into();
    write_cache(&home_c, SESSION_CACHE, &doc.to_string(), 0o600);
    let (xrayd, _) = start_xrayd(home_c.path(), &xray.url(), &sso.url());
    let (line, log) = credentials_error(xrayd, "aws sso login --profile dev");
    assert!(line.contains("registration has expired"), "{line}");
    assert_no_secret(&log);

    assert_eq!(sso.calls("/token"), 0, "no refresh attempted");
    assert_eq!(
        sso.calls("/federation/credentials"),
        0,
        "no expired token sent"
    );
}

#[test]
fn missing_or_malformed_cache_files_are_clear_errors() {
    let sso = SsoFake::start(&identities(), Portal::Accept(ACCESS_TOKEN));
    let (xray, _uploaded, _) = xray_for_role_credentials();

    let home_a = home(SESSION_PROFILE);
    let (xrayd, _) = start_xrayd(home_a.path(), &xray.url(), &sso.url());
    let (line, log) = credentials_error(xrayd, "aws sso login --profile dev");
    assert!(
        line.contains("does not exist") && line.contains(SESSION_CACHE),
        "{line}"
    );
    assert_no_secret(&log);

    let home_b = home(SESSION_PROFILE);
    write_cache(
        &home_b,
        SESSION_CACHE,
        &format!("{{\"accessToken\":\"{ACCESS_TOKEN}\",\"expiresAt\":"),
        0o600,
    );
    let (xrayd, _) = start_xrayd(home_b.path(), &xray.url(), &sso.url());
    let (line, log) = credentials_error(xrayd, "is malformed");
    assert!(
        line.contains("not a JSON document") && line.contains("aws sso login"),
        "{line}"
    );
    assert_no_secret(&log);

    let home_c = home(SESSION_PROFILE);
    write_cache(
        &home_c,
        SESSION_CACHE,
        &format!("{{\"accessToken\":\"{ACCESS_TOKEN}\"}}"),
        0o600,
    );
    let (xrayd, _) = start_xrayd(home_c.path(), &xray.url(), &sso.url());
    let (line, log) = credentials_error(xrayd, "is malformed");
    assert!(line.contains("no expiresAt"), "{line}");
    assert_no_secret(&log);

    assert_eq!(sso.calls("/federation/credentials"), 0);
}

#[test]
fn portal_refusals_401_and_403_are_clear_errors() {
    for status in [401u16, 403] {
        let home = home(SESSION_PROFILE);
        write_cache(
            &home,
            SESSION_CACHE,
            &cache_doc(ACCESS_TOKEN, 3600, true),
            0o600,
        );
        let sso = SsoFake::start(&identities(), Portal::Refuse(status));
        let (xray, _uploaded, _) = xray_for_role_credentials();
        let (xrayd, _) = start_xrayd(home.path(), &xray.url(), &sso.url());
        let (line, log) = credentials_error(xrayd, "refused the SSO access token");
        let kind = if status == 401 {
            "UnauthorizedException"
        } else {
            "ForbiddenException"
        };
        assert!(
            line.contains(&format!("HTTP {status}: {kind}"))
                && line.contains("aws sso login --profile dev")
                && line.contains("XrayWriter"),
            "{line}"
        );
        assert!(sso.calls("/federation/credentials") >= 1);
        assert_no_secret(&log);
    }
}

// ---------------------------------------------------------------------------------------------
// In process: the chain's provider

/// Every line the in-process tests log lands here (not on the terminal), to be checked for
/// secrets.
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

fn fast_opts() -> ChainOptions {
    log_buffer();
    ChainOptions {
        sts_timeout: Duration::from_secs(5),
        cache: CacheConfig {
            refresh_before_expiry: Duration::from_secs(300),
            min_refresh_interval: Duration::from_millis(100),
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_millis(400),
        },
        ..ChainOptions::default()
    }
}

/// The chain for profile `dev` of `home`, the portal at `portal`, OIDC at `oidc`.
fn provider(home: &TempDir, portal: &str, oidc: &str) -> (Arc<dyn ProvideCredentials>, String) {
    let env = Env::hermetic()
        .set("HOME", &home.path().display().to_string())
        .set("AWS_CONFIG_FILE", &home.file(".aws/config"))
        .set("AWS_PROFILE", "dev")
        .set("AWS_ENDPOINT_URL_SSO", portal)
        .set("AWS_ENDPOINT_URL_SSO_OIDC", oidc);
    build_provider_with(&env.lookup(), REGION, None, None, &fast_opts())
        .unwrap_or_else(|e| panic!("build_provider: {e}"))
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

#[test]
fn role_credentials_are_refreshed_before_they_expire() {
    let home = home(SESSION_PROFILE);
    write_cache(
        &home,
        SESSION_CACHE,
        &cache_doc(ACCESS_TOKEN, 3600, true),
        0o600,
    );
    let calls = Arc::new(Mutex::new(0u32));
    let c = calls.clone();
    // Role credentials that last 4 s: the cache refreshes them at half their remaining life.
    let portal = FakeXray::serve(move |r: &RecordedRequest| {
        if r.header("x-amz-sso_bearer_token") != Some(ACCESS_TOKEN) {
            return Answer::aws_error(401, "UnauthorizedException", "bad token");
        }
        let mut n = c.lock().unwrap();
        *n += 1;
        let expiration = (std::time::SystemTime::now() + Duration::from_secs(4))
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        Answer::json(
            200,
            &serde_json::json!({"roleCredentials": {
                "accessKeyId": format!("ASIAROTATING{n:06}"),
                "secretAccessKey": ROLE_SECRET,
                "sessionToken": ROLE_TOKEN,
                "expiration": expiration,
            }})
            .to_string(),
        )
    });
    let (p, desc) = provider(&home, &portal.url(), "http://127.0.0.1:9");
    assert!(desc.contains("IAM Identity Center (SSO)"), "{desc}");
    let first = creds_eventually(&p);
    assert_eq!(first.access_key_id(), "ASIAROTATING000001");
    assert!(first.expiry().is_some());
    let rotated = poll(Duration::from_secs(15), || {
        p.credentials()
            .ok()
            .filter(|c| c.access_key_id() != "ASIAROTATING000001")
    });
    assert!(
        rotated.is_some(),
        "never refreshed; {} portal calls",
        calls.lock().unwrap()
    );
    assert_no_secret(&log_text());
}

#[test]
fn a_token_in_the_refresh_window_is_used_while_oidc_is_down_then_refreshed() {
    // Expires in 2 minutes: inside the 5-minute refresh window, not yet expired.
    let home = home(SESSION_PROFILE);
    let doc = cache_doc(ACCESS_TOKEN, 120, true);
    let cache = write_cache(&home, SESSION_CACHE, &doc, 0o600);

    // OIDC unreachable (nothing listens on the discard port): the current token still works.
    let sso = SsoFake::start(&identities(), Portal::Accept(ACCESS_TOKEN));
    let (p, _) = provider(&home, &sso.url(), "http://127.0.0.1:9");
    assert_eq!(creds_eventually(&p).access_key_id(), ROLE_KEY);
    assert_eq!(
        std::fs::read_to_string(&cache).unwrap(),
        doc,
        "cache untouched"
    );
    drop(p);

    // OIDC up: the token is refreshed ahead of its expiry and the new one is used.
    let sso = SsoFake::start(&identities(), Portal::Accept(NEW_ACCESS_TOKEN));
    let (p, _) = provider(&home, &sso.url(), &sso.url());
    assert_eq!(creds_eventually(&p).access_key_id(), ROLE_KEY);
    assert!(sso.problems().is_empty(), "{:?}", sso.problems());
    assert_eq!(sso.calls("/token"), 1);
    let back: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cache).unwrap()).unwrap();
    assert_eq!(back["accessToken"], NEW_ACCESS_TOKEN);
    let log = log_text();
    assert!(
        log.contains("Cannot refresh the SSO access token of profile `dev` yet")
            && log.contains("Refreshed the SSO access token of profile `dev`"),
        "{log}"
    );
    assert_no_secret(&log);
}
