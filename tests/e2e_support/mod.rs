//! The skip policy shared by the end-to-end tests against `moto_server` (`credentials_e2e`,
//! `moto_e2e`): they run when python3 has the modules they need and `moto_server` is on PATH;
//! otherwise they print `SKIPPED: <why>` and pass, unless `XRAYD_REQUIRE_E2E=1` is set (CI), in
//! which case they fail with that reason. Also a child process with collected output.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Why the end-to-end prerequisites (python3 with `modules`, `moto_server`) are not met, if they
/// are not.
pub fn missing_prerequisite(modules: &[&str]) -> Option<String> {
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
        Err(e) => return Some(format!("python3 cannot be run: {e}")),
        Ok(out) if !out.status.success() => {
            let missing = String::from_utf8_lossy(&out.stdout).trim().to_string();
            return Some(if missing.is_empty() {
                format!(
                    "python3 probe failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            } else {
                format!("python3 lacks module(s): {missing}")
            });
        }
        Ok(_) => {}
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

/// True if `test` should run (python3 with `modules` and `moto_server` are there); prints
/// `SKIPPED` (or panics under `XRAYD_REQUIRE_E2E=1`).
pub fn e2e_enabled(test: &str, modules: &[&str]) -> bool {
    let Some(reason) = missing_prerequisite(modules) else {
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
