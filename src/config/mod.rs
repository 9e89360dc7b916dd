//! Settings: flags (and, later, the YAML file) resolved against the environment and host facts.
//!
//! [`resolve`] is pure: it takes the parsed flags, an environment lookup and the host's memory, and
//! returns [`Settings`] or an error naming the flag and what to do.

pub mod flags;

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::log::Level;

/// Smallest budget accepted (the AWS daemon's minimum).
pub const MIN_BUFFER_MB: u64 = 3;

/// Everything the daemon runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub udp_addr: SocketAddr,
    pub tcp_addr: String,
    /// Region from `-n` or the environment; `None` is fine only with a local sink.
    pub region: Option<String>,
    /// Where the region came from (for the start-up line).
    pub region_source: &'static str,
    pub endpoint: Option<String>,
    pub local_mode: bool,
    pub local_sink: Option<String>,
    /// The memory budget in bytes.
    pub budget_bytes: u64,
    pub concurrency: usize,
    pub ingest_workers: usize,
    pub receive_buffer: usize,
    pub shutdown_timeout: Duration,
    pub upload_timeout: Duration,
    pub retry_base_delay: Duration,
    pub retry_max_delay: Duration,
    pub log_level: Level,
    pub log_file: Option<String>,
    pub proxy: Option<String>,
    pub role_arn: Option<String>,
    pub resource_arn: Option<String>,
    pub config_file: Option<String>,
}

/// Facts about the host the defaults depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host {
    /// Physical memory in bytes.
    pub memory_bytes: u64,
    /// The cgroup memory limit in bytes, when one is set.
    pub cgroup_limit_bytes: Option<u64>,
    /// Available cores.
    pub cores: usize,
}

impl Host {
    /// Reads /proc/meminfo and the cgroup limit (v2, else v1).
    pub fn detect() -> Host {
        let memory_bytes = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| {
                        l.split_whitespace()
                            .nth(1)
                            .and_then(|v| v.parse::<u64>().ok())
                    })
            })
            .map(|kb| kb * 1024)
            .unwrap_or(1 << 30);
        let cgroup_limit_bytes = [
            "/sys/fs/cgroup/memory.max",
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
        ]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|&v| v < memory_bytes);
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        Host {
            memory_bytes,
            cgroup_limit_bytes,
            cores,
        }
    }

    /// The default budget: 1 % of host memory, at most a quarter of the cgroup limit, at least 3 MB.
    pub fn default_budget(&self) -> u64 {
        let mut b = self.memory_bytes / 100;
        if let Some(limit) = self.cgroup_limit_bytes {
            b = b.min(limit / 4);
        }
        b.max(MIN_BUFFER_MB * 1024 * 1024)
    }
}

/// A setting that cannot be used (exit code 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// Parses a duration: `10s`, `500ms`, `1.5s`, `2m`, or a plain number of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return None,
    };
    (secs.is_finite() && (0.0..1e9).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

/// Resolves a `host:port` address (IPv4, `[IPv6]:port`, or a name such as `localhost:2000`).
pub fn parse_addr(flag: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    match s.to_socket_addrs().map(|mut it| it.next()) {
        Ok(Some(a)) => Ok(a),
        _ => err(format!(
            "{flag}: {s:?} is not a valid address; use host:port such as 127.0.0.1:2000 or [::1]:2000"
        )),
    }
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

/// Resolves settings from parsed flags, the environment and host facts.
pub fn resolve(
    f: &flags::Parsed,
    env: &dyn Fn(&str) -> Option<String>,
    host: &Host,
) -> Result<Settings, ConfigError> {
    let get = |k: &str| non_empty(f.get(k).map(str::to_string));
    let number = |k: &str, min: u64| -> Result<Option<u64>, ConfigError> {
        match get(k) {
            None => Ok(None),
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if n >= min => Ok(Some(n)),
                _ => err(format!(
                    "--{k}: {v:?} is not a whole number of at least {min}"
                )),
            },
        }
    };
    let duration = |k: &str, default: Duration| -> Result<Duration, ConfigError> {
        match get(k) {
            None => Ok(default),
            Some(v) => parse_duration(&v).ok_or_else(|| {
                ConfigError(format!(
                    "--{k}: {v:?} is not a duration; use e.g. 10s or 500ms"
                ))
            }),
        }
    };

    let budget_bytes = match number("buffer-memory", 0)? {
        None | Some(0) => host.default_budget(),
        Some(mb) if mb < MIN_BUFFER_MB => {
            return err(format!(
                "-m/--buffer-memory: {mb} MB is too small; use at least {MIN_BUFFER_MB} MB"
            ));
        }
        Some(mb) => mb.saturating_mul(1024 * 1024),
    };
    let (region, region_source) = match get("region") {
        Some(r) => (Some(r), "-n/--region"),
        None => match non_empty(env("AWS_REGION")) {
            Some(r) => (Some(r), "AWS_REGION"),
            None => match non_empty(env("AWS_DEFAULT_REGION")) {
                Some(r) => (Some(r), "AWS_DEFAULT_REGION"),
                None => (None, "none"),
            },
        },
    };
    let local_sink = get("local-sink");
    if region.is_none() && local_sink.is_none() {
        return err(
            "Cannot find a region: looked at -n/--region, AWS_REGION and AWS_DEFAULT_REGION. \
             Set one of them (e.g. -n us-east-1), or use --local-sink to run without AWS",
        );
    }
    let log_level = match get("log-level") {
        None => Level::Info,
        Some(l) => Level::parse(&l).ok_or_else(|| ConfigError(format!("-l/--log-level: unknown level {l:?}; use dev, debug, info, prod, warn, error or silent")))?,
    };
    let proxy = get("proxy-address")
        .or_else(|| non_empty(env("HTTPS_PROXY")))
        .or_else(|| non_empty(env("https_proxy")));
    let retry_base_delay = duration("retry-base-delay", Duration::from_millis(200))?;
    let retry_max_delay =
        duration("retry-max-delay", Duration::from_secs(30))?.max(retry_base_delay);
    Ok(Settings {
        udp_addr: parse_addr(
            "-b/--bind",
            get("bind").as_deref().unwrap_or("127.0.0.1:2000"),
        )?,
        tcp_addr: get("bind-tcp").unwrap_or_else(|| "127.0.0.1:2000".into()),
        region,
        region_source,
        endpoint: get("endpoint"),
        local_mode: f.is_set("local-mode"),
        local_sink,
        budget_bytes,
        concurrency: number("concurrency", 0)?
            .filter(|&n| n > 0)
            .unwrap_or(8)
            .min(256) as usize,
        ingest_workers: number("ingest-workers", 1)?
            .map(|n| n.min(64) as usize)
            .unwrap_or((host.cores / 2).clamp(1, 4)),
        receive_buffer: number("receive-buffer", 0)?
            .map(|n| n as usize)
            .unwrap_or(4 * 1024 * 1024),
        shutdown_timeout: duration("shutdown-timeout", Duration::from_secs(10))?,
        upload_timeout: duration("upload-timeout", Duration::from_secs(10))?
            .max(Duration::from_millis(100)),
        retry_base_delay,
        retry_max_delay,
        log_level,
        log_file: get("log-file"),
        proxy,
        role_arn: get("role-arn"),
        resource_arn: get("resource-arn"),
        config_file: get("config"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const HOST: Host = Host {
        memory_bytes: 24 << 30,
        cgroup_limit_bytes: None,
        cores: 2,
    };

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let f = flags::parse(args.iter().map(|s| s.to_string())).unwrap();
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        resolve(&f, &move |k| env.get(k).cloned(), &HOST)
    }

    #[test]
    fn defaults_follow_the_aws_daemon() {
        let s = run(&["-n", "us-east-1"], &[]).unwrap();
        assert_eq!(s.udp_addr, "127.0.0.1:2000".parse().unwrap());
        assert_eq!(s.tcp_addr, "127.0.0.1:2000");
        assert_eq!(s.concurrency, 8);
        assert_eq!(s.log_level, Level::Info);
        assert_eq!(s.budget_bytes, (24u64 << 30) / 100);
        assert_eq!(s.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(s.ingest_workers, 1);
        assert!(!s.local_mode);
    }

    #[test]
    fn region_precedence_and_error() {
        assert_eq!(
            run(&["-n", "eu-west-1"], &[("AWS_REGION", "us-west-2")])
                .unwrap()
                .region
                .as_deref(),
            Some("eu-west-1")
        );
        let s = run(
            &[],
            &[
                ("AWS_REGION", "us-west-2"),
                ("AWS_DEFAULT_REGION", "ap-south-1"),
            ],
        )
        .unwrap();
        assert_eq!(
            (s.region.as_deref(), s.region_source),
            (Some("us-west-2"), "AWS_REGION")
        );
        let s = run(
            &[],
            &[("AWS_REGION", ""), ("AWS_DEFAULT_REGION", "ap-south-1")],
        )
        .unwrap();
        assert_eq!(s.region.as_deref(), Some("ap-south-1"));
        let e = run(&[], &[]).unwrap_err().0;
        assert!(
            e.contains("-n/--region")
                && e.contains("AWS_REGION")
                && e.contains("AWS_DEFAULT_REGION"),
            "{e}"
        );
        assert_eq!(run(&["--local-sink", "-"], &[]).unwrap().region, None);
    }

    #[test]
    fn budget_rules() {
        assert_eq!(
            run(&["-n", "r", "-m", "3"], &[]).unwrap().budget_bytes,
            3 << 20
        );
        assert_eq!(
            run(&["-n", "r", "-m", "0"], &[]).unwrap().budget_bytes,
            (24u64 << 30) / 100
        );
        assert!(
            run(&["-n", "r", "-m", "2"], &[])
                .unwrap_err()
                .0
                .contains("at least 3 MB")
        );
        assert!(run(&["-n", "r", "-m", "lots"], &[]).is_err());
        let small = Host {
            memory_bytes: 24 << 30,
            cgroup_limit_bytes: Some(64 << 20),
            cores: 2,
        };
        assert_eq!(small.default_budget(), 16 << 20);
        let tiny = Host {
            memory_bytes: 100 << 20,
            cgroup_limit_bytes: None,
            cores: 1,
        };
        assert_eq!(tiny.default_budget(), 3 << 20);
    }

    #[test]
    fn values_are_checked() {
        assert!(
            run(&["-n", "r", "-b", "nonsense"], &[])
                .unwrap_err()
                .0
                .contains("-b/--bind")
        );
        assert_eq!(
            run(&["-n", "r", "-b", "[::1]:2001"], &[]).unwrap().udp_addr,
            "[::1]:2001".parse().unwrap()
        );
        assert!(
            run(&["-n", "r", "-l", "loud"], &[])
                .unwrap_err()
                .0
                .contains("--log-level")
        );
        assert!(run(&["-n", "r", "--shutdown-timeout", "soon"], &[]).is_err());
        assert_eq!(
            run(&["-n", "r", "--shutdown-timeout", "1.5s"], &[])
                .unwrap()
                .shutdown_timeout,
            Duration::from_millis(1500)
        );
        assert_eq!(
            run(&["-n", "r", "--concurrency", "0"], &[])
                .unwrap()
                .concurrency,
            8
        );
        assert_eq!(
            run(
                &["-n", "r", "-p", "http://p:3128"],
                &[("HTTPS_PROXY", "http://q")]
            )
            .unwrap()
            .proxy
            .as_deref(),
            Some("http://p:3128")
        );
        assert_eq!(
            run(&["-n", "r"], &[("https_proxy", "http://q")])
                .unwrap()
                .proxy
                .as_deref(),
            Some("http://q")
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration("5h"), None);
        assert_eq!(parse_duration("NaN"), None);
    }
}
