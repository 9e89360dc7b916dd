//! Child processes of the tests: [`Proc`], a running process whose stdout and stderr lines are
//! collected as they come (waits on them are woken by each line, not by polling), signalled,
//! stopped and killed on drop; and [`run_to_end`], a short command run to completion with a
//! deadline. The daemon runner, moto and the SDK scripts are all run through them.

use std::io::{BufRead, BufReader, Read};
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

/// A running child process with its output lines collected; killed on drop.
pub struct Proc {
    name: String,
    child: Child,
    out: Shared,
    readers: Vec<JoinHandle<()>>,
    exit: Option<ExitStatus>,
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
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let out: Shared = Arc::new((
            Mutex::new(Output {
                lines: Vec::new(),
                open_streams: if read_stdout { 2 } else { 1 },
            }),
            Condvar::new(),
        ));
        let mut readers = vec![reader_thread(
            format!("{name} stderr"),
            child.stderr.take().expect("stderr"),
            out.clone(),
        )];
        let mut unread_stdout = None;
        let stdout = child.stdout.take().expect("stdout");
        if read_stdout {
            readers.push(reader_thread(format!("{name} stdout"), stdout, out.clone()));
        } else {
            unread_stdout = Some(stdout);
        }
        Proc {
            name: name.to_string(),
            child,
            out,
            readers,
            exit: None,
            unread_stdout,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every output line so far (stdout and stderr interleaved as read).
    pub fn lines(&self) -> Vec<String> {
        lock(&self.out).lines.clone()
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
    /// ends (the process exited), or `timeout` passes.
    pub fn wait_map<T>(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&[String]) -> Option<T>,
    ) -> Option<T> {
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
