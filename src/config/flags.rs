//! The daemon's command-line flags ([`FLAGS`]) and its `-h` text ([`usage`]), parsed by the
//! shared parser in [`super::args`] (Go `flag` spellings, as the AWS daemon's).
//!
//! Order, kept by a test: the AWS daemon's flags in the order of its own `-h`, then xrayd's own
//! (long names only) in alphabetical order.

pub use super::args::{Flag, FlagError, Kind, Parsed};

/// Width of the `-h` text, in columns.
pub const USAGE_WIDTH: usize = 100;

/// The AWS daemon's flags, in the order of its `-h` (the first entries of [`FLAGS`]).
pub const AWS_FLAGS: &[&str] = &[
    "resource-arn",
    "local-mode",
    "buffer-memory",
    "region",
    "bind",
    "bind-tcp",
    "role-arn",
    "config",
    "log-file",
    "log-level",
    "proxy-address",
    "version",
    "help",
];

/// Every flag the daemon accepts: the AWS daemon's, then xrayd's long-only ones.
pub const FLAGS: &[Flag] = &[
    Flag::value("resource-arn", "ARN", "Amazon Resource Name (ARN) of the AWS resource running the daemon (sent with telemetry).").short("a"),
    Flag::switch("local-mode", "Don't check for EC2/ECS metadata (region, hostname, instance id).").short("o"),
    Flag::value("buffer-memory", "MB", "Memory budget in MB for buffered segments (minimum 3). Default: 1% of host memory, at most a quarter of the cgroup limit.").short("m"),
    Flag::value("region", "REGION", "Send segments to X-Ray in this region.").short("n"),
    Flag::value("bind", "ADDR", "UDP address to receive segments on. Default: 127.0.0.1:2000.").short("b"),
    Flag::value("bind-tcp", "ADDR", "TCP address of the sampling proxy, which also serves /healthz, /readyz and /metrics. Default: 127.0.0.1:2000.").short("t"),
    Flag::value("role-arn", "ARN", "Assume this IAM role to upload segments to a different account.").short("r"),
    Flag::value("config", "FILE", "Load a YAML configuration file.").short("c"),
    Flag::value("log-file", "FILE", "Write logs to this file instead of stdout.").short("f"),
    Flag::value("log-level", "LEVEL", "Log level: dev, debug, info, prod (= info), warn, error, silent. Default: prod.").short("l"),
    Flag::value("proxy-address", "URL", "Outbound HTTPS proxy for calls to AWS.").short("p"),
    Flag::switch("version", "Print the version and exit.").short("v"),
    Flag::switch("help", "Print this help and exit.").short("h"),
    Flag::value("concurrency", "N", "Concurrent uploads to X-Ray. Default: 8."),
    Flag::value("endpoint", "URL", "X-Ray endpoint URL (default: from the region, or AWS_ENDPOINT_URL_XRAY / AWS_ENDPOINT_URL)."),
    Flag::value("ingest-workers", "N", "Threads reading the UDP socket. Default: 1 per 2 cores (at least 1, at most 4)."),
    Flag::value("local-sink", "PATH", "Write segments as JSON lines to PATH ('-' = stdout) instead of uploading; needs no AWS account."),
    Flag::value("log-format", "FORMAT", "Log line format: text (the AWS daemon's) or json (one JSON object per line: time, level, message, fields). Default: text."),
    Flag::switch("log-rotation", "Rotate the log file at 50 MB, keeping one rolled file <file>.1 (config Logging.LogRotation). Default: true; --log-rotation=false disables it."),
    Flag::switch("no-verify-ssl", "Do not verify X-Ray's TLS certificate (config NoVerifySSL). Unsafe; for test endpoints only."),
    Flag::switch("print-config", "Print the effective configuration (flags, config files, environment, defaults) as a cfg.yaml and exit."),
    Flag::switch("proxy-allow-all", "Forward every X-Ray API path through the TCP port, not only the sampling APIs (GetSamplingRules, SamplingTargets, SamplingStatisticSummaries)."),
    Flag::value("ready-failure-threshold", "DURATION", "GET /readyz fails once uploads to X-Ray have been failing for longer than this. Default: 5m."),
    Flag::value("receive-buffer", "BYTES", "UDP socket receive buffer to ask the kernel for (Linux doubles it for bookkeeping). Default: 4194304 (8 MiB effective)."),
    Flag::value("retry-base-delay", "DURATION", "Backoff before the first retry of a failed upload (doubles each time, with jitter). Default: 200ms."),
    Flag::value("retry-max-delay", "DURATION", "Upper bound of the retry backoff. Default: 30s."),
    Flag::value("shutdown-timeout", "DURATION", "On SIGINT/SIGTERM, time allowed to deliver what is buffered (e.g. 10s, 500ms). Default: 10s."),
    Flag::value("upload-timeout", "DURATION", "Timeout of one upload call to X-Ray. Default: 10s."),
];

/// Parses the daemon's `args` (without the program name).
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Parsed, FlagError> {
    super::args::parse(FLAGS, args)
}

/// The usage text printed by `-h` and after a flag error.
pub fn usage() -> String {
    format!(
        "Usage: xrayd [OPTIONS]
       xrayd health [--tcp ADDR] [--ready] [--timeout DURATION]
       xrayd bench [OPTIONS]
       xrayd demo [--address HOST:PORT]

Receives X-Ray segments on a UDP address (-b) and uploads them to AWS X-Ray in batches.
The TCP address (-t) serves the sampling proxy and also GET /healthz, /readyz and /metrics.

Subcommands:
  health  Probe /healthz (or /readyz with --ready) on the TCP address; exit 0 when it answers 200.
  bench   The load and benchmark harness (see xrayd bench -h).
  demo    Send one demo segment to a running xrayd, to see it work.

Options (the AWS daemon's, then xrayd's own in alphabetical order):
{}",
        super::args::options_help(FLAGS, USAGE_WIDTH)
    )
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

    #[test]
    fn usage_fits_in_100_columns() {
        let u = usage();
        for line in u.lines() {
            assert!(line.chars().count() <= USAGE_WIDTH, "too wide: {line:?}");
            assert_eq!(line, line.trim_end(), "trailing blanks: {line:?}");
        }
        for sub in [
            "xrayd health [--tcp ADDR] [--ready] [--timeout DURATION]",
            "xrayd bench [OPTIONS]",
            "xrayd demo [--address HOST:PORT]",
            "/healthz, /readyz and /metrics",
        ] {
            assert!(u.contains(sub), "{sub:?} missing from\n{u}");
        }
    }

    #[test]
    fn flags_are_in_the_documented_order() {
        let longs: Vec<&str> = FLAGS.iter().map(|f| f.long).collect();
        assert_eq!(&longs[..AWS_FLAGS.len()], AWS_FLAGS);
        assert!(FLAGS[..AWS_FLAGS.len()].iter().all(|f| f.short.is_some()));
        let own = &longs[AWS_FLAGS.len()..];
        let mut sorted = own.to_vec();
        sorted.sort();
        assert_eq!(own, &sorted[..], "xrayd's own flags are sorted");
        assert!(FLAGS[AWS_FLAGS.len()..].iter().all(|f| f.short.is_none()));
        // The usage lists them in the same order.
        let u = usage();
        let at: Vec<usize> = longs
            .iter()
            .map(|l| u.find(&format!("--{l}")).unwrap())
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{u}");
    }
}
