//! The daemon runner: the real xrayd binary started in a hermetic scratch directory (no host AWS
//! settings), its output collected ([`Proc`]), readiness (the UDP address from the log or from
//! `/proc`, the TCP address), metrics scraped, signals, a graceful stop and the final counts.

use super::fake_xray::{FakeXray, TEST_ACCESS_KEY, TEST_REGION, TEST_SECRET_KEY};
use super::metrics::{Exposition, scrape};
use super::process::{Proc, Ran, run_to_end};
pub use super::tempdir::scratch_dir;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

/// Start-up line that reports the bound UDP address.
pub const LISTENING_PREFIX: &str = "Listening for segments on UDP ";
/// Start-up line that reports the bound TCP address.
pub const PROXY_PREFIX: &str = "Starting proxy http server on ";
/// Shutdown line with the final counters.
pub const FINAL_COUNTS_PREFIX: &str = "Final counts:";

/// A running xrayd, killed on drop. Every [`Proc`] method (output lines, waits on them,
/// signals, exit) applies to it.
pub struct Daemon {
    proc: Proc,
    workdir: PathBuf,
    /// Whether the working directory is the daemon's own, removed on drop.
    owns_workdir: bool,
}

impl Deref for Daemon {
    type Target = Proc;
    fn deref(&self) -> &Proc {
        &self.proc
    }
}

impl DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut Proc {
        &mut self.proc
    }
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

/// `-b 127.0.0.1:0 -t 127.0.0.1:0 --local-sink <sink>` followed by `extra`.
pub fn local_sink_args<'a>(sink: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "-b",
        "127.0.0.1:0",
        "-t",
        "127.0.0.1:0",
        "--local-sink",
        sink,
    ];
    a.extend_from_slice(extra);
    a
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

    /// A command for the binary with a clean environment: only PATH from the host; HOME and the
    /// working directory are `dir`; AWS_CONFIG_FILE and AWS_SHARED_CREDENTIALS_FILE point to
    /// files that do not exist there; instance metadata disabled; TZ=UTC; then `envs` (a value
    /// of "" removes the variable).
    pub fn command(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(Self::bin());
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir)
            .env("AWS_CONFIG_FILE", dir.join("no-such-aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                dir.join("no-such-aws-credentials"),
            )
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("TZ", "UTC")
            .env("RUST_BACKTRACE", "1")
            .current_dir(dir);
        for (k, v) in envs {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        cmd
    }

    /// Runs the binary in `dir` to completion (it must exit within 20 s): for `--print-config`,
    /// `-h`, refused configurations.
    pub fn run(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Ran {
        run_to_end(
            &format!("xrayd {args:?}"),
            &mut Self::command(dir, args, envs),
            Duration::from_secs(20),
        )
    }

    /// Start xrayd with `args` and the clean environment of [`Daemon::command`] plus `envs`, in
    /// a scratch directory of its own (removed on drop unless the test fails).
    pub fn spawn(args: &[&str], envs: &[(&str, &str)]) -> Daemon {
        Self::spawn_in(scratch_dir(), args, envs)
    }

    /// Like `spawn`, in a given working directory (which the Daemon removes on drop).
    pub fn spawn_in(workdir: PathBuf, args: &[&str], envs: &[(&str, &str)]) -> Daemon {
        let mut d = Self::start(&workdir, args, envs, true);
        d.owns_workdir = true;
        d
    }

    /// Like `spawn`, in the caller's directory `dir` (left in place).
    pub fn spawn_at(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Daemon {
        Self::start(dir, args, envs, true)
    }

    /// Like `spawn_at`, with stdout piped and never read (a stalled log consumer): only stderr
    /// lines are collected.
    pub fn spawn_at_stdout_unread(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Daemon {
        Self::start(dir, args, envs, false)
    }

    fn start(dir: &Path, args: &[&str], envs: &[(&str, &str)], read_stdout: bool) -> Daemon {
        let proc = Proc::spawn_with("xrayd", &mut Self::command(dir, args, envs), read_stdout);
        Daemon {
            proc,
            workdir: dir.to_path_buf(),
            owns_workdir: false,
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
        let has_level = extra_args.iter().any(|a| {
            let a = a.trim_start_matches('-');
            a == "l" || a == "log-level" || a.starts_with("l=") || a.starts_with("log-level=")
        });
        let mut args: Vec<&str> = Vec::new();
        if let (false, Some(level)) = (has_level, level) {
            args.extend(["-l", level]);
        }
        args.extend_from_slice(extra_args);
        let mut envs: Vec<(&str, &str)> = vec![
            ("AWS_ACCESS_KEY_ID", TEST_ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", TEST_SECRET_KEY),
        ];
        envs.extend_from_slice(extra_envs);
        Self::for_endpoint_with(endpoint, &args, &envs)
    }

    /// xrayd against `endpoint` with both ports on loopback (`-o`, test region) at the default
    /// log level, `extra` arguments, and the test credentials in the environment when `creds`.
    pub fn for_endpoint(endpoint: &str, extra: &[&str], creds: bool) -> Daemon {
        let envs: &[(&str, &str)] = if creds {
            &[
                ("AWS_ACCESS_KEY_ID", TEST_ACCESS_KEY),
                ("AWS_SECRET_ACCESS_KEY", TEST_SECRET_KEY),
            ]
        } else {
            &[]
        };
        Self::for_endpoint_with(endpoint, extra, envs)
    }

    /// xrayd with `-b 127.0.0.1:0 -t 127.0.0.1:0 -n us-east-1 -o --endpoint <endpoint>`, then
    /// `extra`, in the clean environment plus `envs` (no credentials unless there).
    pub fn for_endpoint_with(endpoint: &str, extra: &[&str], envs: &[(&str, &str)]) -> Daemon {
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
        args.extend_from_slice(extra);
        Self::spawn(&args, envs)
    }

    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    /// The UDP address from `Listening for segments on UDP <addr>` (waits up to 10 s).
    pub fn udp_addr(&self) -> SocketAddr {
        let line = self
            .wait_for_line(LISTENING_PREFIX, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("no '{LISTENING_PREFIX}' line; output:\n{}", self.log()));
        parse_listening_line(&line).unwrap_or_else(|| panic!("cannot parse address from {line:?}"))
    }

    /// The TCP address from `Starting proxy http server on <addr>` (waits up to 10 s).
    pub fn tcp_addr(&self) -> SocketAddr {
        let line = self
            .wait_for_line(PROXY_PREFIX, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("no '{PROXY_PREFIX}' line; output:\n{}", self.log()));
        parse_proxy_line(&line).unwrap_or_else(|| panic!("cannot parse address from {line:?}"))
    }

    /// `/metrics` of the TCP port, parsed.
    pub fn metrics(&self) -> Exposition {
        scrape(self.tcp_addr())
    }

    /// The address of the daemon's UDP socket, read from `/proc` once the socket exists (`None`
    /// if the daemon exits or `timeout` passes first). Needs no log line, unlike
    /// [`Daemon::udp_addr`].
    pub fn udp_socket(&mut self, timeout: Duration) -> Option<SocketAddr> {
        let pid = self.pid();
        let mut running = true;
        super::wait::poll(timeout, || {
            if let Some(addr) = udp_socket_of(pid) {
                return Some(Some(addr));
            }
            running = self.proc.is_running();
            (!running).then_some(None)
        })
        .flatten()
    }

    /// SIGTERM, then the exit status (within 20 s). The daemon installs its signal handlers
    /// before it opens its UDP socket, and a SIGTERM before that would kill it: waits for the
    /// socket first.
    pub fn stop(&mut self) -> ExitStatus {
        let _ = self.udp_socket(Duration::from_secs(10));
        if self.is_running() {
            self.sigterm();
        }
        self.wait_exit(Duration::from_secs(20))
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
        self.proc.kill();
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
        } else if self.owns_workdir {
            let _ = std::fs::remove_dir_all(&self.workdir);
        }
    }
}

/// The first UDP socket (IPv4 or IPv6) among `pid`'s open files, as a loopback address with its
/// port.
fn udp_socket_of(pid: u32) -> Option<SocketAddr> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let s = l.to_string_lossy().into_owned();
            s.strip_prefix("socket:[")
                .map(|s| s.trim_end_matches(']').to_string())
        })
        .collect();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(table) = std::fs::read_to_string(table) else {
            continue;
        };
        for row in table.lines().skip(1) {
            let cols: Vec<&str> = row.split_whitespace().collect();
            if cols.len() > 9 && inodes.iter().any(|i| i == cols[9]) {
                let port = u16::from_str_radix(cols[1].rsplit(':').next()?, 16).ok()?;
                return Some(SocketAddr::from(([127, 0, 0, 1], port)));
            }
        }
    }
    None
}

/// Bytes waiting in the receive queue of the UDP socket bound to `port` (IPv4 or IPv6), from
/// `/proc/net/udp*`; `None` when there is no such socket.
pub fn udp_unread_bytes(port: u16) -> Option<u64> {
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(table) = std::fs::read_to_string(table) else {
            continue;
        };
        for row in table.lines().skip(1) {
            let cols: Vec<&str> = row.split_whitespace().collect();
            let local_port = cols
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) {
                return cols
                    .get(4)
                    .and_then(|q| q.split(':').nth(1))
                    .and_then(|rx| u64::from_str_radix(rx, 16).ok());
            }
        }
    }
    None
}

/// The server side of the TCP connections to `port` (accepted or still in the backlog), from
/// `/proc/net/tcp`: how many, and how many bytes they hold that the server has not read yet.
pub fn server_side(port: u16) -> (usize, u64) {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let mut n = 0;
    let mut unread = 0;
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let local_port = f
            .get(1)
            .and_then(|a| a.split(':').nth(1))
            .and_then(|p| u16::from_str_radix(p, 16).ok());
        // 01: established (0A is the listener, whose queue counts connections, not bytes).
        if local_port != Some(port) || f.get(3) != Some(&"01") {
            continue;
        }
        n += 1;
        unread += f
            .get(4)
            .and_then(|q| q.split(':').nth(1))
            .and_then(|rx| u64::from_str_radix(rx, 16).ok())
            .unwrap_or(0);
    }
    (n, unread)
}

/// Parses `Starting proxy http server on <addr>`.
pub fn parse_proxy_line(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(PROXY_PREFIX)? + PROXY_PREFIX.len()..];
    rest.split_whitespace()
        .next()?
        .trim_end_matches([',', '.', ';', '"', '}'])
        .parse()
        .ok()
}

/// The address after `Listening for segments on UDP ` (first word after it).
pub fn parse_listening_line(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(LISTENING_PREFIX)? + LISTENING_PREFIX.len()..];
    let word = rest.split_whitespace().next()?;
    word.trim_end_matches([',', '.', ';', '"', '}'])
        .parse()
        .ok()
}

/// `... Final counts: received=3 rejected=0 ...` -> map.
pub fn parse_final_counts(line: &str) -> Option<HashMap<String, u64>> {
    let rest = &line[line.find(FINAL_COUNTS_PREFIX)? + FINAL_COUNTS_PREFIX.len()..];
    // Lenient: words that are not `k=<number>` (JSON punctuation after the message) are skipped.
    let map: HashMap<String, u64> = rest
        .split_whitespace()
        .filter_map(|word| {
            let (k, v) = word.split_once('=')?;
            Some((
                k.to_string(),
                v.trim_end_matches([',', '"', '}']).parse().ok()?,
            ))
        })
        .collect();
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
