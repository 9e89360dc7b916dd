//! Run the real xrayd binary with captured output.

use super::fake_xray::{FakeXray, TEST_ACCESS_KEY, TEST_REGION, TEST_SECRET_KEY};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Start-up line that reports the bound UDP address.
pub const LISTENING_PREFIX: &str = "Listening for segments on UDP ";
/// Shutdown line with the final counters.
pub const FINAL_COUNTS_PREFIX: &str = "Final counts:";

static WORKDIR_COUNTER: AtomicUsize = AtomicUsize::new(0);

type Lines = Arc<(Mutex<Vec<String>>, Condvar)>;

/// A running xrayd, killed on drop.
pub struct Daemon {
    child: Child,
    lines: Lines,
    readers: Vec<JoinHandle<()>>,
    workdir: PathBuf,
    exit: Option<ExitStatus>,
}

/// A fresh, empty scratch directory (removed by the Daemon that uses it).
pub fn scratch_dir() -> PathBuf {
    let n = WORKDIR_COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("xrayd-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

fn reader_thread(name: &str, src: impl Read + Send + 'static, lines: Lines) -> JoinHandle<()> {
    let echo = std::env::var_os("XRAYD_TEST_ECHO").is_some();
    let tag = name.to_string();
    std::thread::Builder::new()
        .name(format!("xrayd-{name}"))
        .spawn(move || {
            let mut r = BufReader::new(src);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                            buf.pop();
                        }
                        let line = String::from_utf8_lossy(&buf).into_owned();
                        if echo {
                            eprintln!("[xrayd {tag}] {line}");
                        }
                        let (m, c) = &*lines;
                        m.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                        c.notify_all();
                    }
                }
            }
        })
        .expect("spawn reader")
}

/// The `xrayd` binary of the cargo profile the running executable belongs to.
fn built_binary() -> String {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe
        .parent()
        .expect("executable has a directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("xrayd");
    assert!(
        bin.exists(),
        "{} is missing: build the daemon first (cargo build), or set XRAYD_TEST_BIN",
        bin.display()
    );
    bin.to_string_lossy().into_owned()
}

impl Daemon {
    /// Path of the binary under test: `XRAYD_TEST_BIN` when set (to measure a release or static
    /// binary with the same scenarios, e.g. the memory cases of `faults`), otherwise the `xrayd`
    /// that cargo built beside the running test executable (`target/<profile>/deps/<test>` runs,
    /// `target/<profile>/xrayd` is the daemon).
    pub fn bin() -> &'static str {
        static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        BIN.get_or_init(|| {
            std::env::var("XRAYD_TEST_BIN")
                .ok()
                .filter(|b| !b.is_empty())
                .unwrap_or_else(built_binary)
        })
    }

    /// Start xrayd with `args`, a clean environment (no host AWS settings: HOME,
    /// AWS_CONFIG_FILE and AWS_SHARED_CREDENTIALS_FILE point into a scratch
    /// directory that is also the working directory, IMDS disabled) plus `envs`.
    pub fn spawn(args: &[&str], envs: &[(&str, &str)]) -> Daemon {
        Self::spawn_in(scratch_dir(), args, envs)
    }

    /// Like `spawn`, in a given working directory (which the Daemon removes on drop).
    pub fn spawn_in(workdir: PathBuf, args: &[&str], envs: &[(&str, &str)]) -> Daemon {
        let mut cmd = Command::new(Self::bin());
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &workdir)
            .env("AWS_CONFIG_FILE", workdir.join("no-such-aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                workdir.join("no-such-aws-credentials"),
            )
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_BACKTRACE", "1")
            .current_dir(&workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", Self::bin()));
        let lines: Lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        let readers = vec![
            reader_thread("stdout", out, lines.clone()),
            reader_thread("stderr", err, lines.clone()),
        ];
        Daemon {
            child,
            lines,
            readers,
            workdir,
            exit: None,
        }
    }

    /// Start xrayd against `fake` with the standard test command line
    /// (`-b 127.0.0.1:0 -t 127.0.0.1:0 -n us-east-1 -o --endpoint <fake> -l debug`,
    /// test credentials in the environment) plus `extra_args` (a `-l`/`--log-level`
    /// there replaces `-l debug`) and `extra_envs`.
    pub fn for_fake(fake: &FakeXray, extra_args: &[&str], extra_envs: &[(&str, &str)]) -> Daemon {
        Self::for_fake_with_level(fake, Some("debug"), extra_args, extra_envs)
    }

    /// Like `for_fake`, with `-l <level>` (or no `-l` at all for `None`, to get
    /// the default level) unless `extra_args` has its own `-l`.
    pub fn for_fake_with_level(
        fake: &FakeXray,
        level: Option<&str>,
        extra_args: &[&str],
        extra_envs: &[(&str, &str)],
    ) -> Daemon {
        Self::for_endpoint_with_level(&fake.endpoint(), level, extra_args, extra_envs)
    }

    /// Like `for_fake_with_level`, against any endpoint URL.
    pub fn for_endpoint_with_level(
        endpoint: &str,
        level: Option<&str>,
        extra_args: &[&str],
        extra_envs: &[(&str, &str)],
    ) -> Daemon {
        let mut args: Vec<&str> = vec![
            "-b",
            "127.0.0.1:0",
            "-t",
            "127.0.0.1:0",
            "-n",
            TEST_REGION,
            "-o",
            "--endpoint",
            endpoint,
        ];
        let has_level = extra_args.iter().any(|a| {
            let a = a.trim_start_matches('-');
            a == "l" || a == "log-level" || a.starts_with("l=") || a.starts_with("log-level=")
        });
        if let (false, Some(level)) = (has_level, level) {
            args.extend(["-l", level]);
        }
        args.extend_from_slice(extra_args);
        let mut envs: Vec<(&str, &str)> = vec![
            ("AWS_ACCESS_KEY_ID", TEST_ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", TEST_SECRET_KEY),
        ];
        envs.extend_from_slice(extra_envs);
        Self::spawn(&args, &envs)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    /// Every output line so far (stdout and stderr interleaved as read).
    pub fn lines(&self) -> Vec<String> {
        self.lines
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The whole output so far, one string.
    pub fn log(&self) -> String {
        self.lines().join("\n")
    }

    /// Number of lines containing `substr`.
    pub fn count_lines(&self, substr: &str) -> usize {
        self.lines().iter().filter(|l| l.contains(substr)).count()
    }

    /// Wait until `pred` holds on the output lines.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&[String]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let (m, c) = &*self.lines;
        let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if pred(&g) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let wait = (deadline - now).min(Duration::from_millis(100));
            g = c.wait_timeout(g, wait).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// First line containing `substr`, waiting up to `timeout`.
    pub fn wait_for_line(&self, substr: &str, timeout: Duration) -> Option<String> {
        self.wait_for_line_from(0, substr, timeout)
    }

    /// First line at index >= `from` containing `substr`.
    pub fn wait_for_line_from(
        &self,
        from: usize,
        substr: &str,
        timeout: Duration,
    ) -> Option<String> {
        let found = std::cell::RefCell::new(None);
        self.wait_for(timeout, |lines| {
            match lines.iter().skip(from).find(|l| l.contains(substr)) {
                Some(l) => {
                    *found.borrow_mut() = Some(l.clone());
                    true
                }
                None => false,
            }
        });
        found.into_inner()
    }

    /// Wait until at least `n` lines contain `substr`.
    pub fn wait_for_count(&self, substr: &str, n: usize, timeout: Duration) -> bool {
        self.wait_for(timeout, |lines| {
            lines.iter().filter(|l| l.contains(substr)).count() >= n
        })
    }

    /// The UDP address from `Listening for segments on UDP <addr>` (waits up to 10 s).
    pub fn udp_addr(&self) -> SocketAddr {
        let line = self
            .wait_for_line(LISTENING_PREFIX, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("no '{LISTENING_PREFIX}' line; output:\n{}", self.log()));
        parse_listening_line(&line).unwrap_or_else(|| panic!("cannot parse address from {line:?}"))
    }

    /// Send a signal to the daemon.
    pub fn signal(&self, sig: i32) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) with our own child's pid (not yet reaped: `self.child`
        // still owns it) and a valid signal number has no memory-safety effects.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
    }

    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    pub fn sigint(&self) {
        self.signal(libc::SIGINT);
    }

    /// Exit status if the daemon exited within `timeout`.
    pub fn try_wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.exit {
            return Some(s);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.exit = Some(s);
                // Let the readers drain the pipes.
                for h in self.readers.drain(..) {
                    let _ = h.join();
                }
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Exit status; panics (after killing it) if the daemon is still running
    /// after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match self.try_wait_exit(timeout) {
            Some(s) => s,
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "xrayd did not exit within {timeout:?}; output:\n{}",
                    self.log()
                );
            }
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.exit.is_none() && matches!(self.child.try_wait(), Ok(None))
    }

    /// N of every `Successfully sent batch of N segments (S.sss seconds)` line.
    pub fn sent_batch_sizes(&self) -> Vec<usize> {
        self.lines()
            .iter()
            .filter_map(|l| parse_sent_batch_line(l))
            .collect()
    }

    /// Counters of the `Final counts: k=v ...` line (waits up to 10 s for it).
    pub fn final_counts(&self) -> HashMap<String, u64> {
        let line = self
            .wait_for_line(FINAL_COUNTS_PREFIX, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("no '{FINAL_COUNTS_PREFIX}' line; output:\n{}", self.log()));
        parse_final_counts(&line)
            .unwrap_or_else(|| panic!("cannot parse final counts from {line:?}"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for h in self.readers.drain(..) {
            let _ = h.join();
        }
        if std::thread::panicking() {
            let lines = self.lines();
            let skip = lines.len().saturating_sub(300);
            eprintln!(
                "---- xrayd output (last {} of {} lines) ----",
                lines.len() - skip,
                lines.len()
            );
            for l in &lines[skip..] {
                eprintln!("{l}");
            }
            eprintln!(
                "---- end of xrayd output; workdir {} ----",
                self.workdir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.workdir);
        }
    }
}

/// The address after `Listening for segments on UDP ` (first word after it).
pub fn parse_listening_line(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(LISTENING_PREFIX)? + LISTENING_PREFIX.len()..];
    let word = rest.split_whitespace().next()?;
    word.trim_end_matches([',', '.', ';']).parse().ok()
}

/// `... Final counts: received=3 rejected=0 ...` -> map.
pub fn parse_final_counts(line: &str) -> Option<HashMap<String, u64>> {
    let rest = &line[line.find(FINAL_COUNTS_PREFIX)? + FINAL_COUNTS_PREFIX.len()..];
    let mut map = HashMap::new();
    for word in rest.split_whitespace() {
        let (k, v) = word.split_once('=')?;
        map.insert(k.to_string(), v.trim_end_matches(',').parse().ok()?);
    }
    if map.is_empty() { None } else { Some(map) }
}

/// `... Successfully sent batch of N segments (S.sss seconds)` -> N, checking
/// the seconds have exactly three decimals.
pub fn parse_sent_batch_line(line: &str) -> Option<usize> {
    const P: &str = "Successfully sent batch of ";
    let rest = &line[line.find(P)? + P.len()..];
    let (n, rest) = rest.split_once(" segments (")?;
    let secs = rest.strip_suffix(" seconds)")?;
    let (whole, frac) = secs.split_once('.')?;
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || frac.len() != 3
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    n.parse().ok()
}
