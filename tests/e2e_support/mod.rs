//! Support for the end-to-end tests against `moto_server` and the real X-Ray SDKs
//! (`credentials_e2e`, `moto_e2e`, `sdk_conformance`).
//!
//! - The prerequisites: the tests run when python3 has the modules they need and `moto_server` is
//!   on PATH (and, for the Node SDK, `node` with `tests/node/node_modules` installed); otherwise
//!   they skip through the kit's skip report (`SKIPPED: <test>: <why>` on stderr), unless
//!   `XRAYD_REQUIRE_E2E=1` is set (CI), in which case they fail with that reason.
//! - Python and Node scripts run with a deadline ([`run_script`], [`run_node`]) in a hermetic
//!   environment (no ambient AWS settings), through the kit's child processes.
//! - A signature-verifying `moto_server` ([`start_moto`], [`moto_setup`]) and BatchGetTraces
//!   through boto3 ([`get_traces`]).
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use xrayd_kit::{Proc, Ran, hermetic_command, poll, run_or_skip, run_to_end};

pub const E2E_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e");
/// The Node project of the SDK tests: `package.json`, the committed lockfile, and the scripts.
pub const NODE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node");
pub const REGION: &str = "us-east-1";
/// Unauthenticated actions moto must allow: CreateUser, PutUserPolicy, CreateAccessKey.
pub const MOTO_NO_AUTH_ACTIONS: u32 = 3;
/// moto parses every document with Python's recursive `json.loads`; with the default recursion
/// limit a document nested about 1,000 levels deep (which X-Ray takes) makes moto answer the
/// whole PutTraceSegments call with a 500 after storing the documents before it.
pub const MOTO_RECURSION_LIMIT: u32 = 20_000;

pub const MOTO_START_TIMEOUT: Duration = Duration::from_secs(30);
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

/// Why python3 cannot import `modules`, if it cannot.
pub fn missing_python_modules(modules: &[&str]) -> Option<String> {
    let list = modules
        .iter()
        .map(|m| format!("'{m}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let probe = format!(
        "import importlib.util, sys\n\
         missing = [m for m in ({list},) if importlib.util.find_spec(m) is None]\n\
         print(' '.join(missing))\n\
         sys.exit(1 if missing else 0)"
    );
    match Command::new("python3").args(["-c", &probe]).output() {
        Err(e) => Some(format!("python3 cannot be run: {e}")),
        Ok(out) if !out.status.success() => {
            let missing = String::from_utf8_lossy(&out.stdout).trim().to_string();
            Some(if missing.is_empty() {
                format!(
                    "python3 probe failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            } else {
                format!("python3 lacks module(s): {missing}")
            })
        }
        Ok(_) => None,
    }
}

/// Why the end-to-end prerequisites (python3 with `modules`, `moto_server`) are not met, if they
/// are not.
pub fn missing_prerequisite(modules: &[&str]) -> Option<String> {
    if let Some(reason) = missing_python_modules(modules) {
        return Some(reason);
    }
    match Command::new("moto_server")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Err(e) => Some(format!("moto_server cannot be run: {e}")),
        Ok(s) if !s.success() => Some(format!("`moto_server --help` failed: {s}")),
        Ok(_) => None,
    }
}

/// Why the Node SDK cannot be run, if it cannot: `node` must run and `tests/node/node_modules`
/// must hold the exact `aws-xray-sdk-core` version `tests/node/package.json` pins (installed by
/// `npm ci --prefix tests/node`).
pub fn missing_node_prerequisite() -> Option<String> {
    let manifest = Path::new(NODE_DIR).join("package.json");
    let pinned = std::fs::read_to_string(&manifest)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| {
            v["dependencies"]["aws-xray-sdk-core"]
                .as_str()
                .map(String::from)
        });
    let Some(pinned) = pinned else {
        return Some(format!(
            "{} does not pin aws-xray-sdk-core",
            manifest.display()
        ));
    };
    let probe = "process.stdout.write(require('aws-xray-sdk-core/package.json').version)";
    match Command::new("node")
        .args(["-e", probe])
        .current_dir(NODE_DIR)
        .output()
    {
        Err(e) => Some(format!("node cannot be run: {e}")),
        Ok(out) if !out.status.success() => Some(format!(
            "node cannot load aws-xray-sdk-core (run `npm ci --prefix tests/node`): {}",
            first_error_line(&String::from_utf8_lossy(&out.stderr))
        )),
        Ok(out) if String::from_utf8_lossy(&out.stdout) != pinned => Some(format!(
            "tests/node/node_modules has aws-xray-sdk-core {}, package.json pins {pinned} \
             (run `npm ci --prefix tests/node`)",
            String::from_utf8_lossy(&out.stdout)
        )),
        Ok(_) => None,
    }
}

/// The first line of `text` that names an error (node prints the source location first), or
/// else its first line.
fn first_error_line(text: &str) -> &str {
    let mut lines = text.lines();
    let error = lines.clone().find(|l| l.contains("Error"));
    error.or(lines.next()).unwrap_or_default().trim()
}

/// True if `test` should run (python3 with `modules` and `moto_server` are there); prints
/// `SKIPPED` (or panics under `XRAYD_REQUIRE_E2E=1`).
pub fn e2e_enabled(test: &str, modules: &[&str]) -> bool {
    run_or_skip(test, missing_prerequisite(modules))
}

/// `e2e_enabled`, and the Node SDK installed as well.
pub fn node_e2e_enabled(test: &str, modules: &[&str]) -> bool {
    run_or_skip(
        test,
        missing_prerequisite(modules).or_else(missing_node_prerequisite),
    )
}

// ---------------------------------------------------------------------------------------------
// Scripts

/// What a script printed.
pub type ScriptOutput = Ran;

/// Runs `python3 tests/e2e/<script> args...` with a deadline.
pub fn run_script(script: &str, args: &[&str], env: &[(&str, &str)], cwd: &Path) -> ScriptOutput {
    let mut cmd = Command::new("python3");
    cmd.arg(Path::new(E2E_DIR).join(script)).args(args);
    cmd.env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONIOENCODING", "utf-8");
    run(script, cmd, env, cwd)
}

/// Runs `node tests/node/<script> args...` with a deadline.
pub fn run_node(script: &str, args: &[&str], env: &[(&str, &str)], cwd: &Path) -> ScriptOutput {
    let mut cmd = Command::new("node");
    cmd.arg(Path::new(NODE_DIR).join(script)).args(args);
    run(script, cmd, env, cwd)
}

/// Runs `cmd` in `cwd` with a hermetic environment plus `env`, collecting its output; panics if
/// it does not finish within [`SCRIPT_TIMEOUT`].
pub fn run(name: &str, mut cmd: Command, env: &[(&str, &str)], cwd: &Path) -> ScriptOutput {
    cmd.current_dir(cwd);
    hermetic_command(&mut cmd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_to_end(name, &mut cmd, SCRIPT_TIMEOUT)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

// ---------------------------------------------------------------------------------------------
// moto

pub struct Moto {
    pub proc: Proc,
    pub port: u16,
}

impl Moto {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// `moto_server -H 127.0.0.1 -p PORT` (its entry point, run by python3 with a higher recursion
/// limit: [`MOTO_RECURSION_LIMIT`]) with `INITIAL_NO_AUTH_ACTION_COUNT=3`, once it listens.
pub fn start_moto(cwd: &Path) -> Moto {
    start_moto_with(cwd, MOTO_NO_AUTH_ACTIONS)
}

/// Like [`start_moto`], letting `no_auth_actions` actions through unauthenticated.
pub fn start_moto_with(cwd: &Path, no_auth_actions: u32) -> Moto {
    let entry = format!(
        "import sys; sys.setrecursionlimit({MOTO_RECURSION_LIMIT}); \
         sys.argv[0] = 'moto_server'; from moto.server import main; sys.exit(main())"
    );
    let mut last_failure = String::new();
    for _attempt in 0..3 {
        let port = free_port();
        let mut cmd = Command::new("python3");
        cmd.args(["-c", &entry, "-H", "127.0.0.1", "-p", &port.to_string()])
            .current_dir(cwd);
        hermetic_command(&mut cmd);
        cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", no_auth_actions.to_string())
            .env("PYTHONDONTWRITEBYTECODE", "1");
        let mut proc = Proc::spawn("moto_server", &mut cmd);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // A bare TCP connect does not reach moto's action counter.
        let listening = poll(MOTO_START_TIMEOUT, || {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                Some(true)
            } else {
                proc.exited().map(|_| false)
            }
        });
        if listening == Some(true) {
            return Moto { proc, port };
        }
        last_failure = proc.log_tail(20);
        drop(proc);
    }
    panic!("moto_server did not start listening\n{last_failure}");
}

#[derive(Clone)]
pub struct Creds {
    pub key_id: String,
    pub secret: String,
}

/// Creates the IAM user, its `xray:*` policy and an access key within moto's unauthenticated
/// allowance; the script itself also checks that a wrong secret is refused afterwards.
pub fn moto_setup(moto: &Moto, cwd: &Path) -> Creds {
    let out = run_script(
        "moto_setup.py",
        &[&moto.port.to_string(), "--region", REGION],
        &[],
        cwd,
    );
    assert!(
        out.status.success(),
        "moto_setup.py failed ({}):\n{}\n{}\n{}",
        out.status,
        out.stdout,
        out.stderr,
        moto.proc.log_tail(20)
    );
    let v: Value = serde_json::from_str(out.stdout.trim()).expect("moto_setup.py output is JSON");
    assert_eq!(
        v["InitialNoAuthActionCount"].as_u64(),
        Some(u64::from(MOTO_NO_AUTH_ACTIONS)),
        "moto_setup.py spends a different number of unauthenticated calls than moto allows"
    );
    Creds {
        key_id: v["AccessKeyId"].as_str().expect("AccessKeyId").to_string(),
        secret: v["SecretAccessKey"]
            .as_str()
            .expect("SecretAccessKey")
            .to_string(),
    }
}

pub struct Fetched {
    /// (trace id, segment id, document)
    pub segments: Vec<(String, String, String)>,
    pub unprocessed: Vec<String>,
}

/// BatchGetTraces for the trace ids of `ids_file` (a JSON list of objects with a `trace_id`).
pub fn get_traces(moto: &Moto, creds: &Creds, ids_file: &Path, cwd: &Path) -> Fetched {
    let endpoint = moto.endpoint();
    let run = run_script(
        "get_traces.py",
        &[
            "--endpoint",
            &endpoint,
            "--region",
            REGION,
            "--access-key-id",
            &creds.key_id,
            "--secret-access-key",
            &creds.secret,
            "--ids-from",
            ids_file.to_str().unwrap(),
        ],
        &[],
        cwd,
    );
    run.success("get_traces.py");
    let v: Value = serde_json::from_str(run.stdout.trim()).expect("get_traces.py output is JSON");
    let segments = v["Segments"]
        .as_array()
        .expect("Segments")
        .iter()
        .map(|s| {
            (
                s["TraceId"].as_str().unwrap_or_default().to_string(),
                s["Id"].as_str().unwrap_or_default().to_string(),
                s["Document"]
                    .as_str()
                    .expect("Document is a string")
                    .to_string(),
            )
        })
        .collect();
    let unprocessed = v["UnprocessedTraceIds"]
        .as_array()
        .expect("UnprocessedTraceIds")
        .iter()
        .map(|s| s.as_str().unwrap_or_default().to_string())
        .collect();
    Fetched {
        segments,
        unprocessed,
    }
}

/// Byte offset of the first difference between two strings.
pub fn first_difference(a: &str, b: &str) -> usize {
    a.bytes()
        .zip(b.bytes())
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}

/// Up to 40 bytes either side of `at`, quoted.
pub fn excerpt(s: &str, at: usize) -> String {
    let bytes = s.as_bytes();
    let start = at.saturating_sub(40);
    let end = (at + 40).min(bytes.len());
    format!("{:?}", String::from_utf8_lossy(&bytes[start..end]))
}
