//! Command-line flags, parsed the way Go's `flag` package does (what the AWS daemon uses):
//! `-x` and `--x` are the same, values as `-x v` or `-x=v`, booleans take no value (`-o`, `-o=true`),
//! and parsing stops at the first argument that is not a flag.

use std::collections::HashMap;
use std::fmt;

/// Whether a flag takes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Value,
}

/// One flag: its short and long names, kind, value name and help text.
#[derive(Debug)]
pub struct Flag {
    pub short: Option<&'static str>,
    pub long: &'static str,
    pub kind: Kind,
    pub value_name: &'static str,
    pub help: &'static str,
}

const fn flag(
    short: Option<&'static str>,
    long: &'static str,
    kind: Kind,
    value_name: &'static str,
    help: &'static str,
) -> Flag {
    Flag {
        short,
        long,
        kind,
        value_name,
        help,
    }
}

use Kind::{Bool, Value};

/// Every flag the daemon accepts: the AWS daemon's, then xrayd's long-only ones.
pub const FLAGS: &[Flag] = &[
    flag(
        Some("a"),
        "resource-arn",
        Value,
        "ARN",
        "Amazon Resource Name (ARN) of the AWS resource running the daemon (sent with telemetry).",
    ),
    flag(
        Some("o"),
        "local-mode",
        Bool,
        "",
        "Don't check for EC2/ECS metadata (region, hostname, instance id).",
    ),
    flag(
        Some("m"),
        "buffer-memory",
        Value,
        "MB",
        "Memory budget in MB for buffered segments (minimum 3). Default: 1% of host memory, at most a quarter of the cgroup limit.",
    ),
    flag(
        Some("n"),
        "region",
        Value,
        "REGION",
        "Send segments to X-Ray in this region.",
    ),
    flag(
        Some("b"),
        "bind",
        Value,
        "ADDR",
        "UDP address to receive segments on. Default: 127.0.0.1:2000.",
    ),
    flag(
        Some("t"),
        "bind-tcp",
        Value,
        "ADDR",
        "TCP address of the sampling proxy. Default: 127.0.0.1:2000.",
    ),
    flag(
        Some("r"),
        "role-arn",
        Value,
        "ARN",
        "Assume this IAM role to upload segments to a different account.",
    ),
    flag(
        Some("c"),
        "config",
        Value,
        "FILE",
        "Load a YAML configuration file.",
    ),
    flag(
        Some("f"),
        "log-file",
        Value,
        "FILE",
        "Write logs to this file instead of stdout.",
    ),
    flag(
        Some("l"),
        "log-level",
        Value,
        "LEVEL",
        "Log level: dev, debug, info, prod (= info), warn, error, silent. Default: prod.",
    ),
    flag(
        Some("p"),
        "proxy-address",
        Value,
        "URL",
        "Outbound HTTPS proxy for calls to AWS.",
    ),
    flag(
        Some("v"),
        "version",
        Bool,
        "",
        "Print the version and exit.",
    ),
    flag(Some("h"), "help", Bool, "", "Print this help and exit."),
    flag(
        None,
        "endpoint",
        Value,
        "URL",
        "X-Ray endpoint URL (default: from the region, or AWS_ENDPOINT_URL_XRAY / AWS_ENDPOINT_URL).",
    ),
    flag(
        None,
        "local-sink",
        Value,
        "PATH",
        "Write segments as JSON lines to PATH ('-' = stdout) instead of uploading; needs no AWS account.",
    ),
    flag(
        None,
        "concurrency",
        Value,
        "N",
        "Concurrent uploads to X-Ray. Default: 8.",
    ),
    flag(
        None,
        "receive-buffer",
        Value,
        "BYTES",
        "UDP socket receive buffer to ask the kernel for (Linux doubles it for bookkeeping). Default: 4194304 (8 MiB effective).",
    ),
    flag(
        None,
        "ingest-workers",
        Value,
        "N",
        "Threads reading the UDP socket. Default: 1 per 2 cores (at least 1, at most 4).",
    ),
    flag(
        None,
        "shutdown-timeout",
        Value,
        "DURATION",
        "On SIGINT/SIGTERM, time allowed to deliver what is buffered (e.g. 10s, 500ms). Default: 10s.",
    ),
    flag(
        None,
        "upload-timeout",
        Value,
        "DURATION",
        "Timeout of one upload call to X-Ray. Default: 10s.",
    ),
    flag(
        None,
        "retry-base-delay",
        Value,
        "DURATION",
        "Backoff before the first retry of a failed upload (doubles each time, with jitter). Default: 200ms.",
    ),
    flag(
        None,
        "log-format",
        Value,
        "FORMAT",
        "Log line format: text (the AWS daemon's) or json (one JSON object per line: time, level, message, fields). Default: text.",
    ),
    flag(
        None,
        "log-rotation",
        Bool,
        "",
        "Rotate the log file at 50 MB, keeping one rolled file <file>.1 (config Logging.LogRotation). Default: true; --log-rotation=false disables it.",
    ),
    flag(
        None,
        "no-verify-ssl",
        Bool,
        "",
        "Do not verify X-Ray's TLS certificate (config NoVerifySSL). Unsafe; for test endpoints only.",
    ),
    flag(
        None,
        "proxy-allow-all",
        Bool,
        "",
        "Forward every X-Ray API path through the TCP port, not only the sampling APIs (GetSamplingRules, SamplingTargets, SamplingStatisticSummaries).",
    ),
    flag(
        None,
        "ready-failure-threshold",
        Value,
        "DURATION",
        "GET /readyz fails once uploads to X-Ray have been failing for longer than this. Default: 5m.",
    ),
    flag(
        None,
        "print-config",
        Bool,
        "",
        "Print the effective configuration (flags, config files, environment, defaults) as a cfg.yaml and exit.",
    ),
    flag(
        None,
        "retry-max-delay",
        Value,
        "DURATION",
        "Upper bound of the retry backoff. Default: 30s.",
    ),
];

/// Parsed flags: long name → value (`"true"`/`"false"` for booleans), plus what follows them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub values: HashMap<&'static str, String>,
    pub rest: Vec<String>,
}

impl Parsed {
    /// A flag's value, if given.
    pub fn get(&self, long: &str) -> Option<&str> {
        self.values.get(long).map(String::as_str)
    }

    /// A boolean flag: given and true.
    pub fn is_set(&self, long: &str) -> bool {
        self.get(long) == Some("true")
    }
}

/// A command line that cannot be parsed (exit code 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagError(pub String);

impl fmt::Display for FlagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn lookup(name: &str) -> Option<&'static Flag> {
    FLAGS
        .iter()
        .find(|f| f.long == name || f.short == Some(name))
}

/// Parses `args` (without the program name).
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Parsed, FlagError> {
    let mut out = Parsed::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--" {
            out.rest.extend(args);
            break;
        }
        let Some(body) = arg
            .strip_prefix("--")
            .or_else(|| arg.strip_prefix('-'))
            .filter(|b| !b.is_empty() && !b.starts_with('-'))
        else {
            out.rest.push(arg);
            out.rest.extend(args);
            break;
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let flag = lookup(name)
            .ok_or_else(|| FlagError(format!("flag provided but not defined: -{name}")))?;
        let value = match (flag.kind, inline) {
            (Kind::Bool, None) => "true".to_string(),
            (Kind::Bool, Some(v)) => match v.as_str() {
                "1" | "t" | "T" | "true" | "TRUE" | "True" => "true".into(),
                "0" | "f" | "F" | "false" | "FALSE" | "False" => "false".into(),
                _ => {
                    return Err(FlagError(format!(
                        "invalid boolean value {v:?} for -{name}"
                    )));
                }
            },
            (Kind::Value, Some(v)) => v,
            (Kind::Value, None) => args
                .next()
                .ok_or_else(|| FlagError(format!("flag needs an argument: -{name}")))?,
        };
        out.values.insert(flag.long, value);
    }
    Ok(out)
}

/// The usage text printed by `-h` and after a flag error.
pub fn usage() -> String {
    let mut s = String::from(
        "Usage: xrayd [options]\n       xrayd health [--tcp ADDR]\n       xrayd bench [options]\n\nOptions:\n",
    );
    let left = |f: &Flag| {
        let names = match f.short {
            Some(short) => format!("-{short}, --{}", f.long),
            None => format!("    --{}", f.long),
        };
        if f.value_name.is_empty() {
            names
        } else {
            format!("{names} {}", f.value_name)
        }
    };
    let width = FLAGS.iter().map(|f| left(f).len()).max().unwrap_or(0);
    for f in FLAGS {
        s.push_str(&format!("  {:<width$}  {}\n", left(f), f.help));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Parsed, FlagError> {
        parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn go_style_spellings() {
        for args in [
            &["-n", "eu-west-1"][..],
            &["--n", "eu-west-1"],
            &["-n=eu-west-1"],
            &["--region", "eu-west-1"],
            &["-region=eu-west-1"],
            &["--region=eu-west-1"],
        ] {
            assert_eq!(
                p(args).unwrap().get("region"),
                Some("eu-west-1"),
                "{args:?}"
            );
        }
    }

    #[test]
    fn booleans_take_no_value() {
        let f = p(&["-o", "-n", "r"]).unwrap();
        assert!(f.is_set("local-mode"));
        assert_eq!(f.get("region"), Some("r"));
        assert!(p(&["-o=true"]).unwrap().is_set("local-mode"));
        assert!(!p(&["--local-mode=false"]).unwrap().is_set("local-mode"));
        assert!(p(&["-o=maybe"]).is_err());
    }

    #[test]
    fn errors_and_rest() {
        assert_eq!(
            p(&["-z"]).unwrap_err().0,
            "flag provided but not defined: -z"
        );
        assert_eq!(p(&["-n"]).unwrap_err().0, "flag needs an argument: -n");
        let f = p(&["-l", "debug", "extra", "-o"]).unwrap();
        assert_eq!(f.rest, vec!["extra", "-o"]);
        assert!(!f.is_set("local-mode"));
        let f = p(&["--", "-o"]).unwrap();
        assert_eq!(f.rest, vec!["-o"]);
        assert_eq!(
            p(&["-b", "-1"]).unwrap().get("bind"),
            Some("-1"),
            "a value may start with a dash"
        );
    }

    #[test]
    fn every_flag_is_in_the_usage_once() {
        let u = usage();
        for f in FLAGS {
            assert_eq!(
                u.matches(&format!("--{} ", f.long)).count()
                    + u.matches(&format!("--{}\n", f.long)).count(),
                1,
                "{}",
                f.long
            );
        }
        let mut longs: Vec<_> = FLAGS.iter().map(|f| f.long).collect();
        longs.sort();
        longs.dedup();
        assert_eq!(longs.len(), FLAGS.len());
    }
}
