//! Running the daemon under test: its command line from a template, start-up pinned to a core,
//! waiting for its UDP socket, SIGTERM and the `Final counts:` line.

use std::fs::File;
use std::io;
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::procfs;

/// Arguments appended to a daemon command that has no `{udp}` placeholder: xrayd's (and the AWS
/// daemon's) flags, plus xrayd's `--endpoint`.
pub const DEFAULT_ARGS: &str = "-b {udp} -t 127.0.0.1:0 -o -n us-east-1 --endpoint {endpoint}";

/// Dummy credentials given to the daemon (the fake does not check signatures).
pub const ACCESS_KEY: &str = "AKIDBENCHMARK0000000";
pub const SECRET_KEY: &str = "bench/Secret+0123456789EXAMPLEKEYxxxxxxxx";

/// The daemon's argv for one run: `template` split on whitespace (no quoting), with `{udp}`
/// (`127.0.0.1:PORT`), `{udp_port}`, `{endpoint}` (`http://127.0.0.1:PORT`) and `{endpoint_port}`
/// replaced. A template without `{udp}` names an xrayd-compatible program (and extra arguments);
/// [`DEFAULT_ARGS`] are appended to it.
pub fn command_line(template: &str, udp_port: u16, endpoint: &str) -> Vec<String> {
    let full = if template.contains("{udp}") || template.contains("{udp_port}") {
        template.to_string()
    } else {
        format!("{template} {DEFAULT_ARGS}")
    };
    let endpoint_port = endpoint.rsplit(':').next().unwrap_or_default();
    full.split_whitespace()
        .map(|w| {
            w.replace("{udp}", &format!("127.0.0.1:{udp_port}"))
                .replace("{udp_port}", &udp_port.to_string())
                .replace("{endpoint}", endpoint)
                .replace("{endpoint_port}", endpoint_port)
        })
        .collect()
}

/// `key=value` pairs of the daemon's `Final counts:` line (xrayd), last one in the log.
pub fn parse_final_counts(log: &str) -> Vec<(String, u64)> {
    let Some(line) = log.lines().rev().find(|l| l.contains("Final counts:")) else {
        return Vec::new();
    };
    let rest = &line[line.find("Final counts:").unwrap_or(0) + "Final counts:".len()..];
    rest.split_whitespace()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// A free loopback UDP port (bound and released; another process could take it meanwhile).
pub fn free_udp_port() -> io::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running daemon.
pub struct Daemon {
    child: Child,
    /// Its process id.
    pub pid: u32,
    /// Where its stdout and stderr go.
    pub log_path: PathBuf,
}

impl Daemon {
    /// Starts `argv` with stdout and stderr in `log_path`, from a thread pinned to `cpus` so the
    /// daemon and all its threads inherit the affinity (unpinned when `cpus` is empty).
    pub fn spawn(argv: &[String], cpus: &[usize], log_path: PathBuf) -> io::Result<Daemon> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty daemon command"))?;
        let log = File::create(&log_path)?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_REGION", "us-east-1")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_ENDPOINT_URL_XRAY")
            .env_remove("AWS_PROFILE");
        let cpus = cpus.to_vec();
        let child = std::thread::scope(|s| {
            s.spawn(move || {
                if !cpus.is_empty() {
                    super::sys::pin_current_thread(&cpus)?;
                }
                cmd.spawn()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("spawning thread panicked")))
        })?;
        Ok(Daemon {
            pid: child.id(),
            child,
            log_path,
        })
    }

    /// Waits until a UDP socket is bound to `port` (seen in /proc/net/udp). Fails when the daemon
    /// exits or `timeout` passes.
    pub fn wait_listening(&mut self, port: u16, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if procfs::udp_socket_drops(port).is_some() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "the daemon exited ({status}) before listening on UDP port {port}; its output:\n{}",
                    self.log_tail(20)
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the daemon did not listen on UDP port {port} within {timeout:?}; its output:\n{}",
                    self.log_tail(20)
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last `n` lines of its output.
    pub fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// SIGTERM, then SIGKILL after `grace`. Returns the exit status (None if killed) and the log.
    pub fn stop(mut self, grace: Duration) -> (Option<ExitStatus>, String) {
        let _ = super::sys::terminate(self.pid);
        let deadline = Instant::now() + grace;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break None;
                }
            }
        };
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        (status, log)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_expand() {
        assert_eq!(
            command_line("/bin/xrayd -l warn", 2000, "http://127.0.0.1:4566"),
            [
                "/bin/xrayd",
                "-l",
                "warn",
                "-b",
                "127.0.0.1:2000",
                "-t",
                "127.0.0.1:0",
                "-o",
                "-n",
                "us-east-1",
                "--endpoint",
                "http://127.0.0.1:4566"
            ]
        );
        assert_eq!(
            command_line(
                "taskset -c 1 xray -b {udp} -c cfg-{endpoint_port}.yaml -x {udp_port}",
                2001,
                "http://127.0.0.1:9"
            ),
            [
                "taskset",
                "-c",
                "1",
                "xray",
                "-b",
                "127.0.0.1:2001",
                "-c",
                "cfg-9.yaml",
                "-x",
                "2001"
            ]
        );
    }

    #[test]
    fn final_counts() {
        let log = "2024-01-01T00:00:00Z [Info] Got shutdown signal: terminated\n\
                   2024-01-01T00:00:00Z [Info] Final counts: received=10 rejected=0 spillover=2 sent=8\n\
                   2024-01-01T00:00:00Z [Info] Shutdown finished\n";
        let c = parse_final_counts(log);
        assert_eq!(c.len(), 4);
        assert_eq!(c[2], ("spillover".to_string(), 2));
        assert!(parse_final_counts("nothing").is_empty());
    }

    #[test]
    fn runs_and_stops_a_process() {
        let dir = std::env::temp_dir().join(format!("xrayd-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let argv: Vec<String> = ["sh", "-c", "echo started; trap 'echo Final counts: a=1; exit 0' TERM; while true; do sleep 0.01; done"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut d = Daemon::spawn(&argv, &[], dir.join("log")).unwrap();
        assert!(d.alive());
        assert!(d.wait_listening(1, Duration::from_millis(50)).is_err());
        std::thread::sleep(Duration::from_millis(100));
        let (status, log) = d.stop(Duration::from_secs(5));
        assert!(status.is_some_and(|s| s.success()), "{status:?} {log}");
        assert_eq!(parse_final_counts(&log), [("a".to_string(), 1)]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
