//! Support for the end-to-end tests against `moto_server` and the real X-Ray SDKs
//! (`credentials_e2e`, `moto_e2e`, `sdk_conformance`).
//!
//! - The skip policy: the tests run when python3 has the modules they need and `moto_server` is on
//!   PATH (and, for the Node SDK, `node` with `tests/node/node_modules` installed); otherwise they
//!   print `SKIPPED: <why>` and pass, unless `XRAYD_REQUIRE_E2E=1` is set (CI), in which case they
//!   fail with that reason.
//! - A child process with collected output ([`Proc`]), scripts run with a deadline
//!   ([`run_script`], [`run_node`]) in a hermetic environment (no ambient AWS settings).
//! - A signature-verifying `moto_server` ([`start_moto`], [`moto_setup`]) and BatchGetTraces
//!   through boto3 ([`get_traces`]).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

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

/// True if nothing is missing; otherwise prints `SKIPPED: <test>: <why>` and returns false, or
/// panics under `XRAYD_REQUIRE_E2E=1`.
pub fn run_or_skip(test: &str, missing: Option<String>) -> bool {
    let Some(reason) = missing else {
        return true;
    };
    if std::env::var("XRAYD_REQUIRE_E2E").as_deref() == Ok("1") {
        panic!("{test}: XRAYD_REQUIRE_E2E=1 but {reason}");
    }
    // Straight to the stderr handle: unlike eprintln!, this is not swallowed by the test
    // harness's output capture, so the skip shows in a plain `cargo test`.
    let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {reason}");
    false
}

/// A child process whose stdout and stderr lines are collected; killed on drop.
pub struct Proc {
    name: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        let out: Box<dyn Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn Read + Send> = Box::new(child.stderr.take().unwrap());
        for stream in [out, err] {
            let lines = Arc::clone(&lines);
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    match line {
                        Ok(l) => lines.lock().unwrap().push(l),
                        Err(_) => break,
                    }
                }
            }));
        }
        Proc {
            name: name.to_string(),
            child,
            lines,
            readers,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Every line so far, under a header naming the process.
    pub fn log(&self) -> String {
        format!("--- {} output ---\n{}", self.name, self.lines().join("\n"))
    }

    pub fn log_tail(&self, n: usize) -> String {
        let lines = self.lines();
        let start = lines.len().saturating_sub(n);
        format!(
            "--- last {} of {} lines of {} ---\n{}",
            lines.len() - start,
            lines.len(),
            self.name,
            lines[start..].join("\n")
        )
    }

    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Polls `pred` over the collected lines until it returns `Some`, the process exits or the
    /// timeout passes.
    pub fn wait_for<T>(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&[String]) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = pred(&self.lines()) {
                return Some(v);
            }
            if Instant::now() >= deadline || self.exited().is_some() {
                // One last look: the readers may have caught up.
                std::thread::sleep(Duration::from_millis(100));
                return pred(&self.lines());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The first line containing `needle`, waiting as `wait_for` does.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> Option<String> {
        self.wait_for(timeout, |lines| {
            lines.iter().find(|l| l.contains(needle)).cloned()
        })
    }

    /// SIGTERM, then wait (bounded); SIGKILL if it does not exit in time.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.exited() {
            return Some(status);
        }
        // SAFETY: plain kill(2) on our own child's pid, which has not been reaped yet.
        unsafe {
            libc::kill(self.pid(), libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                self.join_readers();
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.join_readers();
        None
    }

    fn join_readers(&mut self) {
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scripts

pub struct ScriptOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl ScriptOutput {
    /// The last stdout line parsed as JSON, panicking with everything the script said if it
    /// failed or printed none.
    pub fn json(&self, name: &str) -> Value {
        assert!(
            self.status.success(),
            "{name} failed ({}):\n{}\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        let last = self.stdout.lines().last().unwrap_or_default();
        serde_json::from_str(last).unwrap_or_else(|e| {
            panic!(
                "{name}: last stdout line is not JSON ({e}):\n{}\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

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
    hermetic_env(&mut cmd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err_t.join().unwrap_or_default();
            panic!("{name} did not finish within {SCRIPT_TIMEOUT:?}; stderr:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    ScriptOutput {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    }
}

/// Removes ambient AWS configuration and proxies, so that only what the test sets is used.
pub fn hermetic_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let Some(k) = key.to_str() else { continue };
        let upper = k.to_ascii_uppercase();
        if upper.starts_with("AWS_") || upper.ends_with("_PROXY") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("AWS_CONFIG_FILE", "/nonexistent/xrayd-e2e/config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/xrayd-e2e/credentials",
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost");
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// A scratch directory under cargo's per-target tmp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("moto-e2e-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
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
        hermetic_env(&mut cmd);
        cmd.env(
            "INITIAL_NO_AUTH_ACTION_COUNT",
            MOTO_NO_AUTH_ACTIONS.to_string(),
        )
        .env("PYTHONDONTWRITEBYTECODE", "1");
        let mut proc = Proc::spawn("moto_server", &mut cmd);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + MOTO_START_TIMEOUT;
        // A bare TCP connect does not reach moto's action counter.
        while Instant::now() < deadline && proc.exited().is_none() {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Moto { proc, port };
            }
            std::thread::sleep(Duration::from_millis(100));
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
    assert!(
        run.status.success(),
        "get_traces.py failed ({}):\n{}\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
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
