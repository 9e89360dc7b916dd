//! Running the daemon under test: its command line from a template, started through the kit's
//! process runner ([`Proc`]: pinned to the daemon's CPUs, output to a log file), waiting for its UDP
//! socket, SIGTERM and the `Final counts:` line.

use std::io;
use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use xrayd_kit::{Proc, SpawnOptions};

use super::procfs;

/// Arguments appended to a daemon command that has no `{udp}` placeholder: xrayd's (and the AWS
/// daemon's) flags, plus xrayd's `--endpoint`.
pub const DEFAULT_ARGS: &str = "-b {udp} -t 127.0.0.1:0 -o -n us-east-1 --endpoint {endpoint}";

/// Dummy credentials given to the daemon (the fake does not check signatures).
pub const ACCESS_KEY: &str = "AKIDBENCHMARK0000000";
pub const SECRET_KEY: &str = "bench/Secret+0123456789EXAMPLEKEYxxxxxxxx";

/// What the placeholders of a daemon command stand for in one step.
#[derive(Debug, Clone)]
pub struct Placeholders {
    /// `{udp}` (`127.0.0.1:PORT`) and `{udp_port}`.
    pub udp_port: u16,
    /// `{tcp}` (`127.0.0.1:PORT`).
    pub tcp_port: u16,
    /// `{endpoint}` (`http://127.0.0.1:PORT`) and `{endpoint_port}`.
    pub endpoint: String,
    /// `{config}`: where [`write_config`] put the daemon's configuration file.
    pub config: PathBuf,
    /// The fake X-Ray serves HTTPS with a self-signed certificate: the daemon is told not to
    /// verify it (`--no-verify-ssl` appended with [`DEFAULT_ARGS`], `NoVerifySSL` in the file).
    pub no_verify_ssl: bool,
}

/// Whether `template` asks for a configuration file (`{config}`).
pub fn wants_config(template: &str) -> bool {
    template.contains("{config}")
}

/// Writes a Version 2 X-Ray daemon configuration (`cfg.yaml`) for the step at `p.config`: what
/// the AWS daemon needs to upload to the fake X-Ray (it has no endpoint flag). Its log level is
/// `error`, so that neither daemon formats a line per batch in a benchmark.
pub fn write_config(p: &Placeholders) -> io::Result<()> {
    let endpoint = &p.endpoint;
    let mut yaml = format!(
        "# Written by xrayd bench for one run: the daemon uploads to the bench's fake X-Ray.\n\
         Version: 2\n\
         Endpoint: \"{endpoint}\"\n\
         Region: \"us-east-1\"\n\
         LocalMode: true\n\
         Logging:\n  LogLevel: \"error\"\n"
    );
    if p.no_verify_ssl {
        yaml.push_str("NoVerifySSL: true\n");
    }
    std::fs::write(&p.config, yaml)
}

/// The daemon's argv for one run: `template` split on whitespace (no quoting), with the
/// [`Placeholders`] replaced. A template without `{udp}` names an xrayd-compatible program (and
/// extra arguments); [`DEFAULT_ARGS`] are appended to it.
pub fn command_line(template: &str, p: &Placeholders) -> Vec<String> {
    let full = if template.contains("{udp}") || template.contains("{udp_port}") {
        template.to_string()
    } else if p.no_verify_ssl {
        format!("{template} {DEFAULT_ARGS} --no-verify-ssl")
    } else {
        format!("{template} {DEFAULT_ARGS}")
    };
    let endpoint_port = p.endpoint.rsplit(':').next().unwrap_or_default();
    let config = p.config.to_string_lossy();
    full.split_whitespace()
        .map(|w| {
            w.replace("{udp}", &format!("127.0.0.1:{}", p.udp_port))
                .replace("{udp_port}", &p.udp_port.to_string())
                .replace("{tcp}", &format!("127.0.0.1:{}", p.tcp_port))
                .replace("{endpoint}", &p.endpoint)
                .replace("{endpoint_port}", endpoint_port)
                .replace("{config}", &config)
        })
        .collect()
}

/// `key=value` pairs of the daemon's `Final counts:` line (xrayd), last one in the log, in the
/// line's order (the kit reads the line).
pub fn parse_final_counts(log: &str) -> Vec<(String, u64)> {
    let Some((line, counts)) = log
        .lines()
        .rev()
        .find_map(|l| Some((l, xrayd_kit::parse_final_counts(l)?)))
    else {
        return Vec::new();
    };
    line.split_whitespace()
        .filter_map(|word| {
            let key = word.split_once('=')?.0;
            Some((key.to_string(), *counts.get(key)?))
        })
        .collect()
}

/// A free loopback UDP port (bound and released; another process could take it meanwhile).
pub fn free_udp_port() -> io::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A free loopback TCP port (bound and released, as [`free_udp_port`]).
pub fn free_tcp_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running daemon (killed on drop).
pub struct Daemon {
    proc: Proc,
    /// Its process id.
    pub pid: u32,
    /// Where its stdout and stderr go.
    pub log_path: PathBuf,
}

impl Daemon {
    /// Starts `argv` with stdout and stderr in `log_path`, pinned to `cpus` (with all its
    /// threads; unpinned when `cpus` is empty).
    pub fn spawn(argv: &[String], cpus: &[usize], log_path: PathBuf) -> io::Result<Daemon> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty daemon command"))?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_REGION", "us-east-1")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_ENDPOINT_URL_XRAY")
            .env_remove("AWS_PROFILE");
        let how = SpawnOptions {
            log_file: Some(log_path.clone()),
            cpus: cpus.to_vec(),
            ..SpawnOptions::default()
        };
        let proc = Proc::try_spawn(program, &mut cmd, &how)?;
        Ok(Daemon {
            pid: proc.pid(),
            proc,
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
            if let Some(status) = self.proc.exited() {
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
        self.proc.is_running()
    }

    /// The last `n` lines of its output.
    pub fn log_tail(&self, n: usize) -> String {
        let lines = self.proc.lines();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// SIGTERM, then SIGKILL after `grace`. Returns the exit status (None if killed) and the log.
    pub fn stop(mut self, grace: Duration) -> (Option<ExitStatus>, String) {
        let status = self.proc.terminate(grace);
        (status, self.proc.log())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn places(udp_port: u16, endpoint: &str) -> Placeholders {
        Placeholders {
            udp_port,
            tcp_port: 2100,
            endpoint: endpoint.to_string(),
            config: PathBuf::from("/tmp/run/cfg.yaml"),
            no_verify_ssl: false,
        }
    }

    #[test]
    fn templates_expand() {
        assert_eq!(
            command_line("/bin/xrayd -l warn", &places(2000, "http://127.0.0.1:4566")),
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
                &places(2001, "http://127.0.0.1:9")
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
    fn the_aws_daemon_gets_a_config_file_and_a_tcp_address() {
        let t = "aws-xray-daemon -o -n us-east-1 -c {config} -b {udp} -t {tcp}";
        assert!(wants_config(t) && !wants_config("xrayd -b {udp}"));
        assert_eq!(
            command_line(t, &places(2002, "http://127.0.0.1:4566")).join(" "),
            "aws-xray-daemon -o -n us-east-1 -c /tmp/run/cfg.yaml -b 127.0.0.1:2002 -t 127.0.0.1:2100"
        );
        let dir = std::env::temp_dir().join(format!("xrayd-bench-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut p = places(2002, "http://127.0.0.1:4566");
        p.config = dir.join("cfg.yaml");
        write_config(&p).unwrap();
        let text = std::fs::read_to_string(&p.config).unwrap();
        p.no_verify_ssl = true;
        p.endpoint = "https://127.0.0.1:4566".into();
        write_config(&p).unwrap();
        let https = std::fs::read_to_string(&p.config).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            https.contains("Endpoint: \"https://127.0.0.1:4566\"\n"),
            "{https}"
        );
        assert!(https.ends_with("\nNoVerifySSL: true\n"), "{https}");
        assert!(
            command_line("xrayd", &p).ends_with(&["--no-verify-ssl".to_string()]),
            "xrayd-compatible programs are told not to verify"
        );
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "Version: 2",
                "Endpoint: \"http://127.0.0.1:4566\"",
                "Region: \"us-east-1\"",
                "LocalMode: true",
                "Logging:",
                "  LogLevel: \"error\""
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
