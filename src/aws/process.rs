//! `credential_process`: run the configured command through `sh -c` and read the JSON it prints
//! (`Version` 1, `AccessKeyId`, `SecretAccessKey`, optional `SessionToken` and `Expiration`).
//!
//! The command line, its output and its error output are never quoted in messages (they may hold
//! secrets): only the program name, the exit status and what is wrong with the document.

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
        let out_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(o) = out.as_mut() {
                let _ = o.take(MAX_OUTPUT).read_to_end(&mut buf);
                // Drain the rest so the child never blocks on a full pipe.
                let _ = std::io::copy(o, &mut std::io::sink());
            }
            buf
        });
        let err_reader = std::thread::spawn(move || {
            if let Some(e) = err.as_mut() {
                let _ = std::io::copy(e, &mut std::io::sink());
            }
        });
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
                    kill_group(child.id());
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(CredentialsError(format!(
                        "{what}: did not finish within {} s and was killed",
                        self.timeout.as_secs()
                    )));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => {
                    kill_group(child.id());
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(CredentialsError(format!("{what}: cannot wait for it: {e}")));
                }
            }
        };
        let stdout = out_reader.join().unwrap_or_default();
        let _ = err_reader.join();
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
}
