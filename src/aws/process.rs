//! `credential_process`: run the configured command through `sh -c` and read the JSON it prints
//! (`Version` 1, `AccessKeyId`, `SecretAccessKey`, optional `SessionToken` and `Expiration`).
//!
//! The command line, its output and its error output are never quoted in messages (they may hold
//! secrets): only the program name, the exit status and what is wrong with the document.
//!
//! The timeout covers the whole run. The command runs in its own process group; at the deadline
//! the whole group is killed. Like the AWS SDKs, the answer is what the command wrote by the time
//! it exited: a background process it left behind holding stdout open is not waited for (beyond
//! [`EXIT_GRACE`]); its process group is killed so that the pipe closes and nothing lingers.

use std::fmt;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::credentials::{Credentials, CredentialsError};
use super::fetch::{FetchCredentials, credentials_from_json, json_field};

/// How long a `credential_process` may run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest output read.
const MAX_OUTPUT: u64 = 1024 * 1024;
/// How long stdout may stay open after the command exited (held by something it started).
pub const EXIT_GRACE: Duration = Duration::from_millis(500);

/// Runs a `credential_process` command.
pub struct ProcessFetch {
    command: String,
    timeout: Duration,
    description: String,
}

impl fmt::Debug for ProcessFetch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessFetch")
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

/// The program part of a command line (what may be shown).
pub fn program_name(command: &str) -> String {
    let first = command.split_whitespace().next().unwrap_or("");
    first.trim_matches(['"', '\'']).chars().take(120).collect()
}

impl ProcessFetch {
    /// `profile` names the profile the command came from (for messages).
    pub fn new(command: &str, profile: &str, timeout: Duration) -> ProcessFetch {
        ProcessFetch {
            command: command.to_string(),
            timeout,
            description: format!(
                "credential_process `{}` of profile `{profile}`",
                program_name(command)
            ),
        }
    }

    /// Which program of which profile.
    pub fn description(&self) -> &str {
        &self.description
    }
}

/// SIGKILL to the process group led by our child `pid`.
fn kill_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) on the process group our own, not yet reaped, child leads.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

/// Has our child `pid` exited? Leaves it unreaped (a zombie), so that its pid, which is also its
/// process group's id, cannot be reused before [`kill_group`] is done with it.
fn exited(pid: u32) -> std::io::Result<bool> {
    // SAFETY: all-zero is a valid siginfo_t (plain integers and unions of them).
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid(2) on our own child with a valid out pointer; WNOWAIT leaves it unreaped.
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: waitid filled `info` (si_pid stays 0 when the child has not exited).
    Ok(unsafe { info.si_pid() } != 0)
}

impl FetchCredentials for ProcessFetch {
    fn fetch(&self) -> Result<Credentials, CredentialsError> {
        let what = &self.description;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(&self.command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout kills whatever the shell started too.
            .process_group(0)
            .spawn()
            .map_err(|e| CredentialsError(format!("{what}: cannot start it: {e}")))?;
        let mut out = child.stdout.take();
        let mut err = child.stderr.take();
        let (out_tx, out_rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(o) = out.as_mut() {
                let _ = o.take(MAX_OUTPUT).read_to_end(&mut buf);
                // Drain the rest so the child never blocks on a full pipe.
                let _ = std::io::copy(o, &mut std::io::sink());
            }
            let _ = out_tx.send(buf);
        });
        // Not waited for: it ends when the pipe closes.
        std::thread::spawn(move || {
            if let Some(e) = err.as_mut() {
                let _ = std::io::copy(e, &mut std::io::sink());
            }
        });
        let deadline = Instant::now() + self.timeout;
        let pid = child.id();
        let give_up = |child: &mut std::process::Child, msg: String| {
            kill_group(pid);
            let _ = child.kill();
            let _ = child.wait();
            Err(CredentialsError(msg))
        };
        loop {
            match exited(pid) {
                Ok(true) => break,
                Ok(false) if Instant::now() >= deadline => {
                    return give_up(
                        &mut child,
                        format!(
                            "{what}: did not finish within {} s and was killed",
                            self.timeout.as_secs()
                        ),
                    );
                }
                Ok(false) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => return give_up(&mut child, format!("{what}: cannot wait for it: {e}")),
            }
        }
        // Exited, not yet reaped: its pid still names its process group. What it wrote is in the
        // pipe; a process it left behind may hold the pipe open.
        let grace = EXIT_GRACE.min(deadline.saturating_duration_since(Instant::now()));
        let stdout = match out_rx.recv_timeout(grace) {
            Ok(buf) => buf,
            Err(_) => {
                kill_group(pid);
                out_rx
                    .recv_timeout(Duration::from_secs(5))
                    .unwrap_or_default()
            }
        };
        let status = match child.wait() {
            Ok(status) => status,
            Err(e) => return Err(CredentialsError(format!("{what}: cannot wait for it: {e}"))),
        };
        if !status.success() {
            return Err(CredentialsError(format!("{what}: exited with {status}")));
        }
        match json_field(&stdout, "Version").as_deref() {
            Some("1") => {}
            Some(v) => {
                return Err(CredentialsError(format!(
                    "{what}: unsupported Version {:?} (only 1 is defined)",
                    v.chars().take(10).collect::<String>()
                )));
            }
            None => {
                return Err(CredentialsError(format!(
                    "{what}: its output is not a JSON object with \"Version\": 1 ({} bytes)",
                    stdout.len()
                )));
            }
        }
        credentials_from_json(&stdout, "SessionToken", "process", what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_and_parses() {
        let f = ProcessFetch::new(
            r#"printf '{"Version":1,"AccessKeyId":"AKIDP","SecretAccessKey":"shh","SessionToken":"t"}'"#,
            "p",
            Duration::from_secs(10),
        );
        let c = f.fetch().unwrap();
        assert_eq!(c.access_key_id(), "AKIDP");
        assert_eq!(c.session_token(), Some("t"));
        assert_eq!(c.expiry(), None);
    }

    #[test]
    fn failures_never_quote_output() {
        let f = ProcessFetch::new(
            "echo leaked-secret; echo more-secret >&2; exit 3",
            "p",
            Duration::from_secs(10),
        );
        let e = f.fetch().unwrap_err();
        assert!(
            e.0.contains("exited with") && !e.0.contains("secret"),
            "{e}"
        );
        let f = ProcessFetch::new(
            r#"echo '{"Version":2,"SecretAccessKey":"leaked-secret"}'"#,
            "p",
            Duration::from_secs(10),
        );
        let e = f.fetch().unwrap_err();
        assert!(e.0.contains("Version") && !e.0.contains("secret\""), "{e}");
        let f = ProcessFetch::new("sleep 5", "p", Duration::from_millis(200));
        let e = f.fetch().unwrap_err();
        assert!(e.0.contains("killed"), "{e}");
        assert_eq!(
            program_name("\"/opt/bin/creds\" --password x"),
            "/opt/bin/creds"
        );
    }

    /// A scratch file path for a test.
    fn scratch(name: &str) -> String {
        let p = std::env::temp_dir().join(format!("xrayd-process-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p.to_string_lossy().into_owned()
    }

    /// Waits (10 s at most) until the process whose pid `file` holds is gone (or a zombie of
    /// someone else's), then says whether it is.
    fn gone(file: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid: i32 = loop {
            if let Some(p) = std::fs::read_to_string(file)
                .ok()
                .and_then(|t| t.trim().parse().ok())
            {
                break p;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        while Instant::now() < deadline {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            if stat.is_empty() || state.starts_with('Z') {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[test]
    fn a_background_child_holding_stdout_does_not_hold_up_the_answer() {
        let pid_file = scratch("held");
        let f = ProcessFetch::new(
            &format!(
                r#"printf '{{"Version":1,"AccessKeyId":"AKIDBG","SecretAccessKey":"s"}}'; sleep 40 & echo $! > {pid_file}"#
            ),
            "p",
            Duration::from_secs(30),
        );
        let started = Instant::now();
        let c = f.fetch().unwrap();
        let took = started.elapsed();
        assert_eq!(c.access_key_id(), "AKIDBG");
        assert!(took < Duration::from_secs(15), "took {took:?}");
        assert!(gone(&pid_file), "the background sleep is left running");
        let _ = std::fs::remove_file(&pid_file);
    }

    #[test]
    fn a_command_that_never_exits_is_killed_with_everything_it_started() {
        let pid_file = scratch("never");
        let f = ProcessFetch::new(
            &format!("sleep 300 & echo $! > {pid_file}; sleep 300"),
            "p",
            Duration::from_secs(1),
        );
        let started = Instant::now();
        let e = f.fetch().unwrap_err();
        assert!(e.0.contains("did not finish within 1 s"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(15));
        assert!(gone(&pid_file), "the background sleep is left running");
        let _ = std::fs::remove_file(&pid_file);
    }
}
