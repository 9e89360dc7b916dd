//! Settings: flags and the YAML config file resolved against the environment and host facts.
//!
//! [`resolve_with`] is pure: it takes the parsed flags, the parsed config files, an environment
//! lookup and the host's memory, and returns [`Settings`] or an error naming the flag (or the file
//! and key) and what to do. Precedence: flag > `-c` file > discovered file > environment > default.

pub mod args;
mod duration;
pub mod file;
pub mod flags;

pub use duration::parse_duration;

pub use file::FileConfig;

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::log::{Format as LogFormat, Level};

/// Smallest budget accepted (the AWS daemon's minimum).
pub const MIN_BUFFER_MB: u64 = 3;

/// Size at which the log file is rotated (the AWS daemon's 50 MB).
pub const LOG_ROTATE_BYTES: u64 = 50 * 1024 * 1024;

/// Interval between telemetry records (the AWS daemon's 60 s).
pub const TELEMETRY_INTERVAL: Duration = Duration::from_secs(60);

/// Hidden test knob: rotate the log file at this many bytes instead of 50 MB.
pub const ENV_LOG_ROTATE_BYTES: &str = "XRAYD_LOG_ROTATE_BYTES";

/// Hidden test knob: telemetry interval in milliseconds instead of 60 s.
pub const ENV_TELEMETRY_INTERVAL_MS: &str = "XRAYD_TELEMETRY_INTERVAL_MS";

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
    /// `--log-format`: text lines (the AWS daemon's) or JSON lines.
    pub log_format: LogFormat,
    pub log_file: Option<String>,
    /// `Logging.LogRotation`: rotate the log file, keeping one rolled file `<file>.1`.
    pub log_rotation: bool,
    /// Size at which the log file is rotated (50 MB; test knob `XRAYD_LOG_ROTATE_BYTES`).
    pub log_rotate_bytes: u64,
    pub proxy: Option<String>,
    /// `NoVerifySSL`: do not verify X-Ray's TLS certificate.
    pub no_verify_ssl: bool,
    /// Forward every X-Ray path through the TCP port (`--proxy-allow-all`).
    pub proxy_allow_all: bool,
    /// `/readyz` fails after uploads have failed this long.
    pub ready_failure_threshold: Duration,
    pub role_arn: Option<String>,
    pub resource_arn: Option<String>,
    /// The `-c` file, if given.
    pub config_file: Option<String>,
    /// Every config file read, highest precedence first.
    pub config_files: Vec<String>,
    /// Problems found in discovered config files (unknown keys), to log at start-up.
    pub config_warnings: Vec<String>,
    /// Interval between telemetry records (60 s; test knob `XRAYD_TELEMETRY_INTERVAL_MS`).
    pub telemetry_interval: Duration,
}

/// Looks for a region beyond flags, files and `AWS_REGION`/`AWS_DEFAULT_REGION` (profile, ECS
/// metadata file, IMDS); the `bool` is local mode. See [`crate::aws::region`].
pub type RegionFinder =
    fn(&dyn Fn(&str) -> Option<String>, bool) -> crate::aws::region::RegionLookup;

/// Facts about the host the defaults depend on.
#[derive(Debug, Clone, Copy)]
pub struct Host {
    /// Physical memory in bytes.
    pub memory_bytes: u64,
    /// The cgroup memory limit in bytes, when one is set.
    pub cgroup_limit_bytes: Option<u64>,
    /// Available cores.
    pub cores: usize,
    /// The last region steps, which read files and metadata services: only consulted when
    /// nothing else named a region. `None` in tests of the pure resolution.
    pub find_region: Option<RegionFinder>,
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
            find_region: Some(crate::aws::region::lookup_region_extra),
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

/// Resolves settings from parsed flags, the environment and host facts (no config file).
pub fn resolve(
    f: &flags::Parsed,
    env: &dyn Fn(&str) -> Option<String>,
    host: &Host,
) -> Result<Settings, ConfigError> {
    resolve_with(f, &[], env, host)
}

/// The layers a setting can come from: the command line, then the config files in order.
struct Layers<'a> {
    flags: &'a flags::Parsed,
    files: &'a [FileConfig],
}

impl Layers<'_> {
    /// The value for a flag (by long name) and where it came from, e.g. `-n/--region` or
    /// `Region in /etc/amazon/xray/cfg.yaml`. Empty values count as not given.
    fn get(&self, long: &str) -> Option<(String, String)> {
        if let Some(v) = non_empty(self.flags.get(long).map(str::to_string)) {
            return Some((v, flag_label(long)));
        }
        self.files.iter().find_map(|f| {
            f.get(long)
                .map(|(key, v)| (v.to_string(), format!("{key} in {}", f.path)))
        })
    }

    fn value(&self, long: &str) -> Option<String> {
        self.get(long).map(|(v, _)| v)
    }

    /// A boolean: the flag (`-o`, `-o=false`), else the files, else `default`.
    fn boolean(&self, long: &str, default: bool) -> bool {
        self.value(long).map_or(default, |v| v == "true")
    }
}

/// How a flag is named in messages: `-n/--region`, or `--endpoint` for long-only flags.
pub fn flag_label(long: &str) -> String {
    match flags::FLAGS.iter().find(|f| f.long == long) {
        Some(flags::Flag {
            short: Some(short), ..
        }) => format!("-{short}/--{long}"),
        _ => format!("--{long}"),
    }
}

/// Resolves settings from parsed flags, config files (highest precedence first: the `-c` file,
/// then the discovered one), the environment and host facts.
pub fn resolve_with(
    f: &flags::Parsed,
    files: &[FileConfig],
    env: &dyn Fn(&str) -> Option<String>,
    host: &Host,
) -> Result<Settings, ConfigError> {
    let layers = Layers { flags: f, files };
    let get = |k: &str| layers.value(k);
    let number = |k: &str, min: u64| -> Result<Option<u64>, ConfigError> {
        match layers.get(k) {
            None => Ok(None),
            Some((v, from)) => match v.trim().parse::<u64>() {
                Ok(n) if n >= min => Ok(Some(n)),
                _ => err(format!(
                    "{from}: {v:?} is not a whole number of at least {min}"
                )),
            },
        }
    };
    let duration = |k: &str, default: Duration| -> Result<Duration, ConfigError> {
        match layers.get(k) {
            None => Ok(default),
            Some((v, from)) => parse_duration(&v).map_err(|_| {
                ConfigError(format!(
                    "{from}: {v:?} is not a duration; use e.g. 10s or 500ms"
                ))
            }),
        }
    };
    let hidden_number = |var: &str, min: u64| -> Result<Option<u64>, ConfigError> {
        match non_empty(env(var)) {
            None => Ok(None),
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if n >= min => Ok(Some(n)),
                _ => err(format!(
                    "{var}: {v:?} is not a whole number of at least {min}"
                )),
            },
        }
    };

    let budget_bytes = match number("buffer-memory", 0)? {
        None | Some(0) => host.default_budget(),
        Some(mb) if mb < MIN_BUFFER_MB => {
            let from = layers
                .get("buffer-memory")
                .map(|(_, f)| f)
                .unwrap_or_default();
            return err(format!(
                "{from}: {mb} MB is too small; use at least {MIN_BUFFER_MB} MB"
            ));
        }
        Some(mb) => mb.saturating_mul(1024 * 1024),
    };
    let (region, region_source) = match layers.get("region") {
        Some((r, from)) if from.starts_with('-') => (Some(r), "-n/--region"),
        Some((r, _)) => (Some(r), "Region in the config file"),
        None => match non_empty(env("AWS_REGION")) {
            Some(r) => (Some(r), "AWS_REGION"),
            None => match non_empty(env("AWS_DEFAULT_REGION")) {
                Some(r) => (Some(r), "AWS_DEFAULT_REGION"),
                None => (None, "none"),
            },
        },
    };
    let local_sink = get("local-sink");
    let mut tried_elsewhere = String::new();
    let (region, region_source) = match (region, host.find_region) {
        (None, Some(find)) if local_sink.is_none() => {
            let found = find(env, layers.boolean("local-mode", false));
            for t in &found.tried {
                tried_elsewhere.push_str(", ");
                tried_elsewhere.push_str(t);
            }
            match found.region {
                Some((r, from)) => (Some(r), from),
                None => (None, region_source),
            }
        }
        (r, _) => (r, region_source),
    };
    if let Some(r) = &region
        && let Err(e) = crate::aws::endpoint::validate_region(r)
    {
        // The message shows a bounded, escaped excerpt of the value.
        return err(format!("the region from {region_source}: {e}"));
    }
    if region.is_none() && local_sink.is_none() {
        let file = if files.is_empty() {
            String::new()
        } else {
            format!(
                ", Region in {}",
                files
                    .iter()
                    .map(|f| f.path.as_str())
                    .collect::<Vec<_>>()
                    .join(" and ")
            )
        };
        return err(format!(
            "Cannot find a region: looked at -n/--region{file}, AWS_REGION, AWS_DEFAULT_REGION{tried_elsewhere}. \
             Set one of them (e.g. -n us-east-1), or use --local-sink to run without AWS"
        ));
    }
    let log_level = match layers.get("log-level") {
        None => Level::Info,
        Some((l, from)) => Level::parse(&l).ok_or_else(|| {
            ConfigError(format!(
                "{from}: unknown level {l:?}; use dev, debug, info, prod, warn, error or silent"
            ))
        })?,
    };
    let log_format = match layers.get("log-format") {
        None => LogFormat::Text,
        Some((v, from)) => LogFormat::parse(&v).ok_or_else(|| {
            ConfigError(format!(
                "{from}: unknown log format {v:?}; use text or json"
            ))
        })?,
    };
    let proxy = get("proxy-address")
        .or_else(|| non_empty(env("HTTPS_PROXY")))
        .or_else(|| non_empty(env("https_proxy")));
    if let Some(p) = &proxy
        && let Err(e) = ureq::Proxy::new(p)
    {
        // Checked here so that no later message quotes it: it may hold a password.
        return err(format!(
            "proxy address {}: {e}",
            crate::log::excerpt(&crate::aws::http::redact_url(p), 200)
        ));
    }
    let retry_base_delay = duration("retry-base-delay", Duration::from_millis(200))?;
    let retry_max_delay =
        duration("retry-max-delay", Duration::from_secs(30))?.max(retry_base_delay);
    let udp = layers
        .get("bind")
        .unwrap_or_else(|| ("127.0.0.1:2000".into(), flag_label("bind")));
    Ok(Settings {
        udp_addr: parse_addr(&udp.1, &udp.0)?,
        tcp_addr: get("bind-tcp").unwrap_or_else(|| "127.0.0.1:2000".into()),
        region,
        region_source,
        endpoint: get("endpoint"),
        local_mode: layers.boolean("local-mode", false),
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
        log_format,
        log_file: get("log-file"),
        log_rotation: layers.boolean("log-rotation", true),
        log_rotate_bytes: hidden_number(ENV_LOG_ROTATE_BYTES, 1)?.unwrap_or(LOG_ROTATE_BYTES),
        proxy,
        no_verify_ssl: layers.boolean("no-verify-ssl", false),
        proxy_allow_all: layers.boolean("proxy-allow-all", false),
        ready_failure_threshold: duration("ready-failure-threshold", Duration::from_secs(300))?,
        role_arn: get("role-arn"),
        resource_arn: get("resource-arn"),
        config_file: get_flag(f, "config"),
        config_files: files.iter().map(|f| f.path.clone()).collect(),
        config_warnings: files.iter().flat_map(|f| f.warnings.clone()).collect(),
        telemetry_interval: hidden_number(ENV_TELEMETRY_INTERVAL_MS, 10)?
            .map_or(TELEMETRY_INTERVAL, Duration::from_millis),
    })
}

fn get_flag(f: &flags::Parsed, long: &str) -> Option<String> {
    non_empty(f.get(long).map(str::to_string))
}

/// The effective settings as a cfg.yaml (`--print-config`): every key of the contract's table,
/// after flags, config files, environment and defaults were applied.
pub fn render(s: &Settings) -> String {
    let opt = |v: &Option<String>| crate::json::json_string(v.as_deref().unwrap_or(""));
    let files = if s.config_files.is_empty() {
        "none".to_string()
    } else {
        s.config_files.join(", ")
    };
    format!(
        "# Effective xrayd configuration (flags > -c file > discovered file > environment > defaults)\n\
         # Config files read: {files}\n\
         TotalBufferSizeMB: {mb}\n\
         Concurrency: {concurrency}\n\
         Endpoint: {endpoint}\n\
         Region: {region}\n\
         Socket:\n  UDPAddress: {udp}\n  TCPAddress: {tcp}\n\
         Logging:\n  LogRotation: {rotation}\n  LogLevel: {level}\n  LogPath: {path}\n\
         LocalMode: {local}\n\
         ResourceARN: {resource}\n\
         RoleARN: {role}\n\
         NoVerifySSL: {noverify}\n\
         ProxyAddress: {proxy}\n\
         Version: 2\n",
        mb = s.budget_bytes / (1024 * 1024),
        concurrency = s.concurrency,
        endpoint = opt(&s.endpoint),
        region = opt(&s.region),
        udp = crate::json::json_string(&s.udp_addr.to_string()),
        tcp = crate::json::json_string(&s.tcp_addr),
        rotation = s.log_rotation,
        level = crate::json::json_string(s.log_level.name()),
        path = opt(&s.log_file),
        local = s.local_mode,
        resource = opt(&s.resource_arn),
        role = opt(&s.role_arn),
        noverify = s.no_verify_ssl,
        // The proxy's user name and password are never shown.
        proxy = opt(&s.proxy.as_deref().map(crate::aws::http::redact_url)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const HOST: Host = Host {
        memory_bytes: 24 << 30,
        cgroup_limit_bytes: None,
        cores: 2,
        find_region: None,
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
            find_region: None,
        };
        assert_eq!(small.default_budget(), 16 << 20);
        let tiny = Host {
            memory_bytes: 100 << 20,
            cgroup_limit_bytes: None,
            cores: 1,
            find_region: None,
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

    fn file(path: &str, origin: file::Origin, body: &str) -> FileConfig {
        file::parse(path, &format!("Version: 2\n{body}"), origin).unwrap()
    }

    fn run_with(args: &[&str], files: &[FileConfig], env: &[(&str, &str)]) -> Settings {
        let f = flags::parse(args.iter().map(|s| s.to_string())).unwrap();
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        resolve_with(&f, files, &move |k| env.get(k).cloned(), &HOST).unwrap()
    }

    /// For every key of the contract's table: flag > `-c` file > discovered file > default.
    #[test]
    fn precedence_on_every_key() {
        type Show = fn(&Settings) -> String;
        let cases: &[(&str, &str, [&str; 3], &str, Show)] = &[
            ("-m", "TotalBufferSizeMB", ["10", "20", "30"], "245", |s| {
                (s.budget_bytes >> 20).to_string()
            }),
            ("--concurrency", "Concurrency", ["2", "3", "4"], "8", |s| {
                s.concurrency.to_string()
            }),
            (
                "--endpoint",
                "Endpoint",
                ["http://f", "http://c", "http://a"],
                "",
                |s| s.endpoint.clone().unwrap_or_default(),
            ),
            ("-n", "Region", ["f-1", "c-1", "a-1"], "env-1", |s| {
                s.region.clone().unwrap_or_default()
            }),
            (
                "-b",
                "Socket.UDPAddress",
                ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"],
                "127.0.0.1:2000",
                |s| s.udp_addr.to_string(),
            ),
            (
                "-t",
                "Socket.TCPAddress",
                ["h:1", "h:2", "h:3"],
                "127.0.0.1:2000",
                |s| s.tcp_addr.clone(),
            ),
            (
                "-l",
                "Logging.LogLevel",
                ["error", "warn", "debug"],
                "info",
                |s| s.log_level.name().to_string(),
            ),
            ("-f", "Logging.LogPath", ["/f", "/c", "/a"], "", |s| {
                s.log_file.clone().unwrap_or_default()
            }),
            ("-a", "ResourceARN", ["arn:f", "arn:c", "arn:a"], "", |s| {
                s.resource_arn.clone().unwrap_or_default()
            }),
            ("-r", "RoleARN", ["arn:f", "arn:c", "arn:a"], "", |s| {
                s.role_arn.clone().unwrap_or_default()
            }),
            (
                "-p",
                "ProxyAddress",
                ["http://f", "http://c", "http://a"],
                "",
                |s| s.proxy.clone().unwrap_or_default(),
            ),
        ];
        let yaml = |key: &str, v: &str| match key.split_once('.') {
            Some((section, k)) => format!("{section}:\n  {k}: \"{v}\"\n"),
            None if v.parse::<u64>().is_ok() => format!("{key}: {v}\n"),
            None => format!("{key}: \"{v}\"\n"),
        };
        let env = [("AWS_REGION", "env-1")];
        for (flag, key, [fv, cv, av], default, show) in cases {
            let c = file("/c.yaml", file::Origin::Explicit, &yaml(key, cv));
            let a = file("cfg.yaml", file::Origin::Discovered, &yaml(key, av));
            let flag_arg = [*flag, *fv];
            assert_eq!(
                show(&run_with(&flag_arg, &[c.clone(), a.clone()], &env)),
                *fv,
                "{key}: flag"
            );
            assert_eq!(
                show(&run_with(&[], &[c, a.clone()], &env)),
                *cv,
                "{key}: -c file"
            );
            assert_eq!(
                show(&run_with(&[], &[a], &env)),
                *av,
                "{key}: discovered file"
            );
            assert_eq!(show(&run_with(&[], &[], &env)), *default, "{key}: default");
        }
        // Booleans: an explicit false is kept at every level.
        type ShowBool = fn(&Settings) -> bool;
        let bools: &[(&str, &str, bool, ShowBool)] = &[
            ("--local-mode", "LocalMode", false, |s| s.local_mode),
            ("--log-rotation", "Logging.LogRotation", true, |s| {
                s.log_rotation
            }),
            ("--no-verify-ssl", "NoVerifySSL", false, |s| s.no_verify_ssl),
        ];
        for (flag, key, default, show) in bools {
            let yaml = |v: bool| match key.split_once('.') {
                Some((section, k)) => format!("{section}:\n  {k}: {v}\n"),
                None => format!("{key}: {v}\n"),
            };
            for v in [true, false] {
                let c = file("/c.yaml", file::Origin::Explicit, &yaml(!v));
                let a = file("cfg.yaml", file::Origin::Discovered, &yaml(v));
                let arg = format!("{flag}={v}");
                assert_eq!(
                    show(&run_with(&[&arg], &[c.clone(), a.clone()], &env)),
                    v,
                    "{key}: flag"
                );
                assert_eq!(
                    show(&run_with(&[], &[c, a.clone()], &env)),
                    !v,
                    "{key}: -c file"
                );
                assert_eq!(
                    show(&run_with(&[], &[a], &env)),
                    v,
                    "{key}: discovered file"
                );
            }
            assert_eq!(show(&run_with(&[], &[], &env)), *default, "{key}: default");
        }
    }

    #[test]
    fn file_values_are_checked_and_named() {
        let f = |body: &str| vec![file("/etc/x.yaml", file::Origin::Explicit, body)];
        let flags = flags::parse(Vec::<String>::new()).unwrap();
        let err = |files: Vec<FileConfig>| {
            resolve_with(&flags, &files, &|_| None, &HOST)
                .unwrap_err()
                .0
        };
        assert_eq!(
            err(f("Region: r\nTotalBufferSizeMB: 2\n")),
            "TotalBufferSizeMB in /etc/x.yaml: 2 MB is too small; use at least 3 MB"
        );
        assert!(
            err(f("Region: r\nLogging:\n  LogLevel: loud\n"))
                .starts_with("Logging.LogLevel in /etc/x.yaml: unknown level \"loud\"")
        );
        assert!(
            err(f("Region: r\nSocket:\n  UDPAddress: nonsense\n")).starts_with(
                "Socket.UDPAddress in /etc/x.yaml: \"nonsense\" is not a valid address"
            )
        );
        let e = err(f("Concurrency: 2\n"));
        assert!(
            e.contains("-n/--region, Region in /etc/x.yaml, AWS_REGION"),
            "{e}"
        );
        let s = run_with(&[], &f("Region: r\n"), &[("AWS_REGION", "env")]);
        assert_eq!(
            (s.region.as_deref(), s.region_source),
            (Some("r"), "Region in the config file")
        );
        assert_eq!(s.config_files, vec!["/etc/x.yaml"]);
    }

    #[test]
    fn hidden_knobs_and_log_format() {
        let s = run_with(&["-n", "r"], &[], &[]);
        assert_eq!(
            (s.log_format, s.log_rotate_bytes, s.telemetry_interval),
            (LogFormat::Text, LOG_ROTATE_BYTES, TELEMETRY_INTERVAL)
        );
        let s = run_with(
            &["-n", "r", "--log-format", "JSON"],
            &[],
            &[
                (ENV_LOG_ROTATE_BYTES, "4096"),
                (ENV_TELEMETRY_INTERVAL_MS, "250"),
            ],
        );
        assert_eq!(
            (s.log_format, s.log_rotate_bytes, s.telemetry_interval),
            (LogFormat::Json, 4096, Duration::from_millis(250))
        );
        assert!(
            run(&["-n", "r", "--log-format", "xml"], &[])
                .unwrap_err()
                .0
                .contains("--log-format: unknown log format \"xml\"")
        );
        assert!(run(&["-n", "r"], &[(ENV_TELEMETRY_INTERVAL_MS, "soon")]).is_err());
    }

    #[test]
    fn printed_config_reads_back_as_the_same_settings() {
        let args = [
            "-n",
            "eu-west-1",
            "-m",
            "12",
            "--concurrency",
            "5",
            "--endpoint",
            "http://e:1",
            "-b",
            "127.0.0.1:3000",
            "-t",
            "0.0.0.0:3001",
            "-l",
            "warn",
            "-f",
            "/tmp/a \"b\".log",
            "-o",
            "-a",
            "arn:r",
            "-p",
            "http://p:1",
            "--log-rotation=false",
            "--no-verify-ssl",
        ];
        let s = run_with(&args, &[], &[]);
        let text = render(&s);
        let back = file::parse("printed.yaml", &text, file::Origin::Explicit).unwrap();
        let s2 = run_with(&[], &[back], &[]);
        assert_eq!(
            render(&s2),
            text.replace("Config files read: none", "Config files read: printed.yaml")
        );
        assert!(
            text.contains("LogPath: \"/tmp/a \\\"b\\\".log\"\n"),
            "{text}"
        );
    }
}
