//! Child processes of the tests and the benchmark harness: [`Proc`], a running process whose
//! stdout and stderr lines are collected as they come (waits on them are woken by each line, not by
//! polling) or written to a file, started from a thread pinned to chosen CPUs when asked
//! ([`pin_current_thread`]), signalled, stopped and killed on drop; and [`run_to_end`], a short
//! command run to completion with a deadline. The daemon runner, the harness's daemon under test,
//! moto and the SDK scripts are all run through them.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The lines read so far, and how many output streams are still open.
struct Output {
    lines: Vec<String>,
    open_streams: usize,
}

type Shared = Arc<(Mutex<Output>, Condvar)>;

fn lock(s: &Shared) -> MutexGuard<'_, Output> {
    s.0.lock().unwrap_or_else(|e| e.into_inner())
}

fn reader_thread(tag: String, src: impl Read + Send + 'static, out: Shared) -> JoinHandle<()> {
    let echo = std::env::var_os("XRAYD_TEST_ECHO").is_some();
    std::thread::Builder::new()
        .name(format!("{tag}-output"))
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
                            eprintln!("[{tag}] {line}");
                        }
                        lock(&out).lines.push(line);
                        out.1.notify_all();
                    }
                }
            }
            lock(&out).open_streams -= 1;
            out.1.notify_all();
        })
        .expect("spawn output reader")
}

/// Pins the calling thread to `cpus`. Threads and processes it starts afterwards inherit the mask.
pub fn pin_current_thread(cpus: &[usize]) -> std::io::Result<()> {
    // A mask of 1024 CPUs, the size of glibc's and musl's cpu_set_t.
    let mut mask = [0u64; 16];
    const _: () =
        assert!(std::mem::size_of::<[u64; 16]>() == std::mem::size_of::<libc::cpu_set_t>());
    for &c in cpus {
        if c >= 1024 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("CPU {c} is out of range"),
            ));
        }
        mask[c / 64] |= 1 << (c % 64);
    }
    // SAFETY: `mask` is a live, initialised 128-byte buffer with the size and layout of
    // cpu_set_t (an array of bits, checked at compile time above); the kernel only reads it.
    // pid 0 means the calling thread.
    let rc = unsafe {
        libc::sched_setaffinity(
            0,
            std::mem::size_of::<libc::cpu_set_t>(),
            (&mask as *const [u64; 16]).cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// How [`Proc::try_spawn`] starts a process, beyond its command.
#[derive(Debug, Clone, Default)]
pub struct SpawnOptions {
    /// Leave stdout piped and never read (kept in [`Proc::unread_stdout`]), so that the child
    /// blocks once the pipe is full.
    pub stdout_unread: bool,
    /// Write stdout and stderr into this file instead of collecting their lines (no reader
    /// threads: the cheapest for a process under measurement). [`Proc::lines`] then reads the
    /// file, and the waits on lines check it once rather than waiting for new ones.
    pub log_file: Option<PathBuf>,
    /// Start the process from a thread pinned to these CPUs, so that the process and all its
    /// threads inherit the affinity (none: not pinned).
    pub cpus: Vec<usize>,
}

/// A running child process with its output lines collected; killed on drop.
pub struct Proc {
    name: String,
    child: Child,
    out: Shared,
    readers: Vec<JoinHandle<()>>,
    exit: Option<ExitStatus>,
    log_file: Option<PathBuf>,
    /// stdout, when the caller asked to leave it unread (a stalled log consumer).
    pub unread_stdout: Option<ChildStdout>,
}

impl Proc {
    /// Starts `cmd` (stdin null, stdout and stderr collected); panics if it cannot start.
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        Self::spawn_with(name, cmd, true)
    }

    /// Like [`Proc::spawn`]; with `read_stdout: false` stdout stays piped and never read (kept
    /// in [`Proc::unread_stdout`]), so that the child blocks once the pipe is full.
    pub fn spawn_with(name: &str, cmd: &mut Command, read_stdout: bool) -> Proc {
        let how = SpawnOptions {
            stdout_unread: !read_stdout,
            ..SpawnOptions::default()
        };
        Self::try_spawn(name, cmd, &how).unwrap_or_else(|e| panic!("cannot start {name}: {e}"))
    }

    /// Starts `cmd` (stdin null) as `how` says; an error, not a panic, if it cannot start.
    pub fn try_spawn(name: &str, cmd: &mut Command, how: &SpawnOptions) -> std::io::Result<Proc> {
        cmd.stdin(Stdio::null());
        match &how.log_file {
            Some(path) => {
                let log = File::create(path)?;
                cmd.stdout(log.try_clone()?).stderr(log);
            }
            None => {
                cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            }
        }
        let mut child = if how.cpus.is_empty() {
            cmd.spawn()?
        } else {
            std::thread::scope(|s| {
                s.spawn(|| {
                    pin_current_thread(&how.cpus)?;
                    cmd.spawn()
                })
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("spawning thread panicked")))
            })?
        };
        let (stderr, stdout) = (child.stderr.take(), child.stdout.take());
        let read_stdout = stdout.is_some() && !how.stdout_unread;
        let out: Shared = Arc::new((
            Mutex::new(Output {
                lines: Vec::new(),
                open_streams: usize::from(stderr.is_some()) + usize::from(read_stdout),
            }),
            Condvar::new(),
        ));
        let mut readers = Vec::new();
        if let Some(stderr) = stderr {
            readers.push(reader_thread(format!("{name} stderr"), stderr, out.clone()));
        }
        let mut unread_stdout = None;
        if let Some(stdout) = stdout {
            if read_stdout {
                readers.push(reader_thread(format!("{name} stdout"), stdout, out.clone()));
            } else {
                unread_stdout = Some(stdout);
            }
        }
        Ok(Proc {
            name: name.to_string(),
            child,
            out,
            readers,
            exit: None,
            log_file: how.log_file.clone(),
            unread_stdout,
        })
    }

    /// The file the output goes to, when it was started with [`SpawnOptions::log_file`].
    pub fn log_file(&self) -> Option<&Path> {
        self.log_file.as_deref()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every output line so far (stdout and stderr interleaved as read, or the log file's lines).
    pub fn lines(&self) -> Vec<String> {
        match &self.log_file {
            Some(path) => std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect(),
            None => lock(&self.out).lines.clone(),
        }
    }

    /// The whole output so far, one string.
    pub fn log(&self) -> String {
        self.lines().join("\n")
    }

    /// The last `n` lines, under a header naming the process.
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

    /// Number of lines containing `substr`.
    pub fn count_lines(&self, substr: &str) -> usize {
        if self.log_file.is_some() {
            return self.lines().iter().filter(|l| l.contains(substr)).count();
        }
        lock(&self.out)
            .lines
            .iter()
            .filter(|l| l.contains(substr))
            .count()
    }

    /// Same as [`Proc::count_lines`].
    pub fn count(&self, substr: &str) -> usize {
        self.count_lines(substr)
    }

    /// Waits until `pred` returns `Some` on the lines (checked at each new line), or the output
    /// ends (the process exited), or `timeout` passes. With a log file, checks the file once.
    pub fn wait_map<T>(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&[String]) -> Option<T>,
    ) -> Option<T> {
        if self.log_file.is_some() {
            return pred(&self.lines());
        }
        let deadline = Instant::now() + timeout;
        let (_, c) = &*self.out;
        let mut g = lock(&self.out);
        loop {
            if let Some(v) = pred(&g.lines) {
                return Some(v);
            }
            let now = Instant::now();
            if now >= deadline || g.open_streams == 0 {
                return None;
            }
            g = c
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits until `pred` holds on the lines, as [`Proc::wait_map`] does.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&[String]) -> bool) -> bool {
        self.wait_map(timeout, |l| pred(l).then_some(())).is_some()
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
        self.wait_map(timeout, |lines| {
            lines
                .iter()
                .skip(from)
                .find(|l| l.contains(substr))
                .cloned()
        })
    }

    /// Waits until at least `n` lines contain `substr`.
    pub fn wait_for_count(&self, substr: &str, n: usize, timeout: Duration) -> bool {
        self.wait_for(timeout, |lines| {
            lines.iter().filter(|l| l.contains(substr)).count() >= n
        })
    }

    /// The first line containing `substr`, waiting up to `timeout`; panics with the output if
    /// there is none.
    pub fn line(&self, substr: &str, timeout: Duration) -> String {
        self.wait_for_line(substr, timeout).unwrap_or_else(|| {
            panic!(
                "no line containing {substr:?} from {}; output:\n{}",
                self.name,
                self.log()
            )
        })
    }

    /// Sends `sig` to the process.
    pub fn signal(&self, sig: i32) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) with our own child's pid (not yet reaped: `self.child` still owns it)
        // and a valid signal number has no memory-safety effects.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
    }

    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    pub fn sigint(&self) {
        self.signal(libc::SIGINT);
    }

    /// The exit status if the process has exited (without waiting).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none()
            && let Ok(Some(s)) = self.child.try_wait()
        {
            self.exit = Some(s);
        }
        self.exit
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.exited().is_none()
    }

    /// Exit status if the process exited within `timeout`, once its output is read to the end.
    pub fn try_wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.exited() {
                self.join_readers();
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            // The end of the output wakes this wait; a child that closed its output early is
            // polled (every 10 ms) for its exit.
            let step = (deadline - Instant::now()).min(Duration::from_millis(10));
            let g = lock(&self.out);
            if g.open_streams == 0 {
                drop(g);
                std::thread::sleep(step);
            } else {
                let _ = self.out.1.wait_timeout(g, step);
            }
        }
    }

    /// Exit status; panics (after killing it) if the process is still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match self.try_wait_exit(timeout) {
            Some(s) => s,
            None => {
                self.kill();
                panic!(
                    "{} did not exit within {timeout:?}; output:\n{}",
                    self.name,
                    self.log()
                );
            }
        }
    }

    /// SIGTERM, then the exit status within `timeout`; SIGKILL (and `None`) if it does not exit
    /// in time.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.exited() {
            self.join_readers();
            return Some(s);
        }
        self.sigterm();
        let s = self.try_wait_exit(timeout);
        if s.is_none() {
            self.kill();
        }
        s
    }

    /// Kills the process (if running) and reaps it.
    pub fn kill(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            if let Ok(s) = self.child.wait() {
                self.exit = Some(s);
            }
        }
        self.unread_stdout.take();
        self.join_readers();
    }

    fn join_readers(&mut self) {
        for h in self.readers.drain(..) {
            let _ = h.join();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a command run to completion printed.
#[derive(Debug)]
pub struct Ran {
    pub status: ExitStatus,
    /// The exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// Panics with everything `name` said unless it exited with success.
    pub fn success(&self, name: &str) -> &Ran {
        assert!(
            self.status.success(),
            "{name} failed ({}):\n{}\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// The last stdout line parsed as JSON, panicking with everything the command said if it
    /// failed or printed none.
    pub fn json(&self, name: &str) -> serde_json::Value {
        self.success(name);
        let last = self.stdout.lines().last().unwrap_or_default();
        serde_json::from_str(last).unwrap_or_else(|e| {
            panic!(
                "{name}: last stdout line is not JSON ({e}):\n{}\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// Runs `cmd` (stdin null) to completion, collecting its output; kills it and panics if it does
/// not finish within `timeout`.
pub fn run_to_end(name: &str, cmd: &mut Command, timeout: Duration) -> Ran {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
    let mut so = child.stdout.take().expect("stdout");
    let mut se = child.stderr.take().expect("stderr");
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let out_t = {
        let done = done_tx.clone();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = so.read_to_string(&mut s);
            drop(done);
            s
        })
    };
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        drop(done_tx);
        s
    });
    // Both readers end when the output closes (normally: the exit); the channel disconnects then.
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        let now = Instant::now();
        if now >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err_t.join().unwrap_or_default();
            panic!("{name} did not finish within {timeout:?}; stderr:\n{stderr}");
        }
        let step = (deadline - now).min(Duration::from_millis(10));
        if let Err(std::sync::mpsc::RecvTimeoutError::Disconnected) = done_rx.recv_timeout(step) {
            // The output is closed, so the exit is imminent; its status has no wake-up of its
            // own: poll for it.
            std::thread::sleep(step);
        }
    };
    Ran {
        status,
        code: status.code(),
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawns_pinned_with_output_in_a_file_or_says_why_not() {
        let dir = crate::TempDir::new("proc");
        let log = dir.join("out.log");
        let cpu = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                let l = s.lines().find(|l| l.starts_with("Cpus_allowed_list:"))?;
                let first = l.split(':').nth(1)?.trim().split([',', '-']).next()?;
                first.parse::<usize>().ok()
            })
            .unwrap_or(0);
        let how = SpawnOptions {
            log_file: Some(log.clone()),
            cpus: vec![cpu],
            ..SpawnOptions::default()
        };
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "grep Cpus_allowed_list /proc/self/status; echo err >&2",
        ]);
        let mut p = Proc::try_spawn("sh", &mut cmd, &how).unwrap();
        assert!(
            p.try_wait_exit(Duration::from_secs(10))
                .is_some_and(|s| s.success())
        );
        assert_eq!(p.log_file(), Some(log.as_path()));
        let lines = p.lines();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].ends_with(&format!("\t{cpu}")), "{lines:?}");
        assert_eq!(p.count("err"), 1);
        assert_eq!(
            p.wait_for_line("err", Duration::ZERO).as_deref(),
            Some("err")
        );
        let missing = Proc::try_spawn(
            "nothing",
            &mut Command::new("/nonexistent/program"),
            &SpawnOptions::default(),
        );
        assert!(missing.is_err());
    }
}
