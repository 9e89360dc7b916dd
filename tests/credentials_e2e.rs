//! The seed's scenario end to end: a real `xrayd` process whose only AWS configuration is
//! `AWS_WEB_IDENTITY_TOKEN_FILE`, `AWS_ROLE_ARN` and `AWS_REGION` (plus `AWS_ENDPOINT_URL`
//! pointing at a loopback service) gets temporary credentials from STS
//! `AssumeRoleWithWebIdentity` and uploads segments signed with them.
//!
//! - Against a loopback fake (always runs): the fake STS issues known credentials; the fake X-Ray
//!   checks every call's key id, `x-amz-security-token` and signature against them; no log line
//!   contains the secret or the session token.
//! - Against `moto_server` (needs python3 + boto3 + moto; prints `SKIPPED: why` otherwise, unless
//!   `XRAYD_REQUIRE_E2E=1`): moto verifies signatures (`INITIAL_NO_AUTH_ACTION_COUNT`), including
//!   the session token of the assumed role and the role's IAM policy; the segments come back
//!   through BatchGetTraces.
//!
//! Every wait is bounded; child processes are killed on drop.

mod e2e_support;
use xrayd_kit as support;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::sigv4::auth_key_id;
use support::{Answer, Daemon, FakeXray, RecordedRequest, TempDir, poll, send_segments, sts_ok};

const REGION: &str = "us-east-1";

// ---------------------------------------------------------------------------------------------
// Processes

/// Starts xrayd with `env` and nothing from the host (the kit's clean environment: no AWS
/// settings, no profile files, instance metadata disabled) and waits for its UDP address.
fn start_xrayd(env: &[(&str, &str)]) -> (Daemon, SocketAddr) {
    let d = Daemon::spawn(
        &["-b", "127.0.0.1:0", "-t", "127.0.0.1:0", "-o", "-n", REGION],
        env,
    );
    let addr = d.udp_addr();
    (d, addr)
}

// ---------------------------------------------------------------------------------------------
// Segments

fn hex(n: u128, width: usize) -> String {
    format!("{n:0width$x}")
}

fn random_u128() -> u128 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let mut x =
        nanos ^ (u128::from(std::process::id()) << 64) ^ 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// (trace id, segment id, document) for `n` segments of one trace each.
fn segments(n: usize) -> Vec<(String, String, String)> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    (0..n)
        .map(|i| {
            let r = random_u128().wrapping_add(i as u128 * 0x1_0000_0001);
            let trace = format!(
                "1-{}-{}",
                hex(u128::from(now.as_secs() as u32), 8),
                hex(r & ((1u128 << 96) - 1), 24)
            );
            let id = hex((r >> 32) as u64 as u128 | 1, 16);
            let start = now.as_secs_f64();
            let doc = format!(
                "{{\"name\":\"xrayd-credentials-e2e\",\"id\":\"{id}\",\"trace_id\":\"{trace}\",\"start_time\":{start:.3},\"end_time\":{:.3},\"annotations\":{{\"n\":{i}}}}}",
                start + 0.25
            );
            (trace, id, doc)
        })
        .collect()
}

fn send(addr: SocketAddr, docs: &[(String, String, String)]) {
    let docs: Vec<&str> = docs.iter().map(|(_, _, doc)| doc.as_str()).collect();
    send_segments(addr, &docs);
}

// ---------------------------------------------------------------------------------------------
// Against a loopback fake STS + X-Ray

const FAKE_KEY: &str = "ASIAE2EFAKE00001";
const FAKE_SECRET: &str = "e2e-fake-secret-Zm9vYmFy";
const FAKE_TOKEN: &str = "e2e-fake-session-token-YmF6cXV4";
const JWT: &str = "eyJhbGciOiJSUzI1NiJ9.e2e-irsa-jwt.c2lnbmF0dXJl";

#[test]
fn irsa_web_identity_credentials_sign_uploads_to_a_fake() {
    let dir = TempDir::new("e2e-fake");
    let token_file = dir.create("token", &format!("{JWT}\n"));
    let problems = Arc::new(Mutex::new(Vec::<String>::new()));
    let uploaded = Arc::new(Mutex::new(Vec::<String>::new()));
    let fake = {
        let problems = problems.clone();
        let uploaded = uploaded.clone();
        FakeXray::serve(move |r: &RecordedRequest| {
            if r.path == "/" {
                let form = r.form();
                if form.get("Action").map(String::as_str) == Some("AssumeRoleWithWebIdentity")
                    && form.get("WebIdentityToken").map(String::as_str) == Some(JWT)
                    && r.header("authorization").is_none()
                {
                    return sts_ok(
                        "AssumeRoleWithWebIdentity",
                        FAKE_KEY,
                        FAKE_SECRET,
                        FAKE_TOKEN,
                        3600,
                    );
                }
                problems
                    .lock()
                    .unwrap()
                    .push(format!("bad STS call {form:?}"));
                return Answer::xml(
                    400,
                    "<ErrorResponse><Error><Code>Bad</Code></Error></ErrorResponse>",
                );
            }
            // Every X-Ray call must be signed with the STS-issued temporary credentials.
            let auth = r.header("authorization").unwrap_or("");
            let check = if auth_key_id(auth).as_deref() != Some(FAKE_KEY) {
                Err(format!("key id {:?}", auth_key_id(auth)))
            } else if r.header("x-amz-security-token") != Some(FAKE_TOKEN) {
                Err("missing or wrong x-amz-security-token".to_string())
            } else if !auth.contains("/us-east-1/xray/aws4_request") {
                Err(format!("scope in {auth}"))
            } else {
                r.signed_by(FAKE_KEY, FAKE_SECRET, Some(FAKE_TOKEN))
            };
            if let Err(why) = check {
                problems
                    .lock()
                    .unwrap()
                    .push(format!("{} {}: {why}", r.method, r.path));
                return Answer::json(403, "{\"__type\":\"InvalidSignatureException\"}");
            }
            if r.path == "/TraceSegments" {
                uploaded.lock().unwrap().push(r.text());
                return Answer::json(200, "{\"UnprocessedTraceSegments\":[]}");
            }
            Answer::json(200, "{}")
        })
    };
    let token_path = token_file.display().to_string();
    let url = fake.url();
    let (mut xrayd, addr) = start_xrayd(&[
        ("AWS_WEB_IDENTITY_TOKEN_FILE", &token_path),
        ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/xray-irsa"),
        ("AWS_REGION", REGION),
        ("AWS_ENDPOINT_URL", &url),
    ]);
    let docs = segments(3);
    send(addr, &docs);
    let all_there = poll(Duration::from_secs(30), || {
        let bodies = uploaded.lock().unwrap().join("\n");
        docs.iter()
            .all(|(_, id, _)| bodies.contains(id))
            .then_some(())
    });
    let status = xrayd.terminate(Duration::from_secs(20));
    let log = xrayd.log();
    assert!(
        all_there.is_some(),
        "segments not uploaded\n{log}\nproblems: {problems:?}"
    );
    assert!(problems.lock().unwrap().is_empty(), "{problems:?}\n{log}");
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?}\n{log}"
    );
    assert_eq!(
        fake.count(|r| r.path == "/"),
        1,
        "one STS call (credentials are cached)"
    );
    // The start-up line names the source; the key id shows at most 4 characters.
    assert!(
        log.contains("web identity token file") && log.contains("xray-irsa"),
        "{log}"
    );
    assert!(log.contains("key id ASIA****"), "{log}");
    for secret in [FAKE_SECRET, FAKE_TOKEN, JWT, "e2e-irsa-jwt", FAKE_KEY] {
        assert!(
            !log.contains(secret),
            "{secret:?} leaked into the log:\n{log}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Against moto

/// True if the test should run; prints `SKIPPED` (or panics under `XRAYD_REQUIRE_E2E=1`).
fn e2e_enabled(test: &str) -> bool {
    e2e_support::e2e_enabled(test, &["boto3", "moto"])
}

/// IAM calls moto lets through unauthenticated: CreateRole, PutRolePolicy, CreateUser,
/// PutUserPolicy, CreateAccessKey (setup) + xrayd's unsigned AssumeRoleWithWebIdentity.
const MOTO_NO_AUTH_ACTIONS: u32 = 6;

const SETUP_PY: &str = r#"
import json, sys, boto3
from botocore.config import Config
url = sys.argv[1]
kw = dict(endpoint_url=url, region_name="us-east-1", aws_access_key_id="AKIASETUPXRAYD0000",
          aws_secret_access_key="setup-secret", config=Config(retries={"max_attempts": 1}))
iam = boto3.client("iam", **kw)
trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
         "Principal": {"Federated": "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/XRAYD"},
         "Action": "sts:AssumeRoleWithWebIdentity"}]}
policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "xray:*", "Resource": "*"}]}
role = iam.create_role(RoleName="xrayd-irsa", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
iam.put_role_policy(RoleName="xrayd-irsa", PolicyName="xray", PolicyDocument=json.dumps(policy))
iam.create_user(UserName="xrayd-reader")
iam.put_user_policy(UserName="xrayd-reader", PolicyName="xray", PolicyDocument=json.dumps(policy))
key = iam.create_access_key(UserName="xrayd-reader")["AccessKey"]
print(json.dumps({"RoleArn": role, "AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}))
"#;

const GET_TRACES_PY: &str = r#"
import json, sys, boto3
from botocore.config import Config
from botocore.exceptions import ClientError
url, key, secret = sys.argv[1:4]
ids = sys.argv[4:]
def client(s):
    return boto3.client("xray", endpoint_url=url, region_name="us-east-1", aws_access_key_id=key,
                        aws_secret_access_key=s, config=Config(retries={"max_attempts": 1}))
docs = []
for t in client(secret).batch_get_traces(TraceIds=ids).get("Traces", []):
    docs += [s["Document"] for s in t.get("Segments", [])]
refused = False
try:
    client(secret + "x").batch_get_traces(TraceIds=ids)
except ClientError as e:
    refused = e.response["ResponseMetadata"]["HTTPStatusCode"] == 403
print(json.dumps({"documents": docs, "wrong_secret_refused": refused}))
"#;

fn python(script: &str, args: &[&str], cwd: &std::path::Path) -> String {
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(script).args(args);
    e2e_support::run("python", cmd, &[("PYTHONDONTWRITEBYTECODE", "1")], cwd)
        .success("python")
        .stdout
        .clone()
}

#[test]
fn irsa_web_identity_credentials_sign_uploads_to_moto() {
    if !e2e_enabled("irsa_web_identity_credentials_sign_uploads_to_moto") {
        return;
    }
    let dir = TempDir::new("e2e-moto");
    let moto = e2e_support::start_moto_with(&dir.0, MOTO_NO_AUTH_ACTIONS);
    let port = moto.port;
    let url = format!("http://127.0.0.1:{port}");
    let setup: serde_json::Value =
        serde_json::from_str(python(SETUP_PY, &[&url], &dir.0).trim()).expect("setup JSON");
    let role_arn = setup["RoleArn"].as_str().unwrap().to_string();
    let reader_key = setup["AccessKeyId"].as_str().unwrap().to_string();
    let reader_secret = setup["SecretAccessKey"].as_str().unwrap().to_string();

    let token_file = dir.create("token", &format!("{JWT}\n"));
    let token_path = token_file.display().to_string();
    let (mut xrayd, addr) = start_xrayd(&[
        ("AWS_WEB_IDENTITY_TOKEN_FILE", &token_path),
        ("AWS_ROLE_ARN", &role_arn),
        ("AWS_REGION", REGION),
        ("AWS_ENDPOINT_URL", &url),
    ]);
    let docs = segments(4);
    send(addr, &docs);
    let trace_ids: Vec<&str> = docs.iter().map(|(t, _, _)| t.as_str()).collect();
    let mut last = serde_json::Value::Null;
    let found = poll(Duration::from_secs(60), || {
        let mut args = vec![url.as_str(), reader_key.as_str(), reader_secret.as_str()];
        args.extend(trace_ids.iter().copied());
        let out: serde_json::Value =
            serde_json::from_str(python(GET_TRACES_PY, &args, &dir.0).trim()).ok()?;
        last = out.clone();
        let got = out["documents"].as_array()?.len();
        (got >= docs.len()).then_some(out)
    });
    let status = xrayd.terminate(Duration::from_secs(20));
    let log = xrayd.log();
    let out = found.unwrap_or_else(|| {
        panic!(
            "segments did not come back from moto; last answer {last}\n{log}\n{}",
            moto.proc.log_tail(200)
        )
    });
    // moto checked signatures: a wrong secret is refused, so the accepted uploads were signed
    // with the assumed role's secret and carried its session token (moto rejects assumed-role
    // keys without the matching X-Amz-Security-Token).
    assert_eq!(
        out["wrong_secret_refused"],
        serde_json::Value::Bool(true),
        "{out}"
    );
    let returned: Vec<&str> = out["documents"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d.as_str())
        .collect();
    for (_, _, doc) in &docs {
        assert!(
            returned.contains(&doc.as_str()),
            "{doc} missing from {returned:?}"
        );
    }
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?}\n{log}"
    );
    assert!(
        log.contains("Got AWS credentials from web identity token file"),
        "{log}"
    );
    assert!(
        log.contains("key id ASIA****") || log.contains("key id AKIA****"),
        "{log}"
    );
    assert!(!log.contains(JWT) && !log.contains(&reader_secret), "{log}");
}
