//! The YAML config file, with the real binary: the AWS daemon's shipped files load, every error
//! names the file and the key and exits 1, and flag > `-c` file > discovered `./cfg.yaml` >
//! default holds for every key of contract §2.

use xrayd_kit as support;

use std::collections::HashMap;
use std::time::Duration;

use support::{
    Daemon, TempDir, local_sink_args, sdk_datagram, send_datagrams, small_segment, wait_for_file,
};

/// The cfg.yaml the AWS daemon's Docker image installs as `/etc/amazon/xray/cfg.yaml`
/// (aws-xray-daemon `pkg/cfg.yaml`): Version 2 with every key.
const SHIPPED_V2: &str = r#"# Maximum buffer size in MB (minimum 3). Choose 0 to use 1% of host memory.
TotalBufferSizeMB: 0
# Maximum number of concurrent calls to AWS X-Ray to upload segment documents.
Concurrency: 8
# Send segments to AWS X-Ray service in a specific region
Region: ""
# Change the X-Ray service endpoint to which the daemon sends segment documents.
Endpoint: ""
Socket:
  # Change the address and port on which the daemon listens for UDP packets containing segment documents.
  UDPAddress: "127.0.0.1:2000"
  # Change the address and port on which the daemon listens for HTTP requests to proxy to AWS X-Ray.
  TCPAddress: "127.0.0.1:2000"
Logging:
  LogRotation: true
  # Change the log level, from most verbose to least: dev, debug, info, warn, error, prod (default).
  LogLevel: "prod"
  # Output logs to the specified file path.
  LogPath: ""
# Turn on local mode to skip EC2 instance metadata check.
LocalMode: false
# Amazon Resource Name (ARN) of the AWS resource running the daemon.
ResourceARN: ""
# Assume an IAM role to upload segments to a different account.
RoleARN: ""
# Disable TLS certificate verification.
NoVerifySSL: false
# Upload segments to AWS X-Ray through a proxy.
ProxyAddress: ""
# Daemon configuration file format version.
Version: 2
"#;

/// The older daemon's file (aws-xray-daemon `daemon/cfg.yaml`): Version 1, no TCPAddress.
const SHIPPED_V1: &str = r#"# Maximum buffer size in MB (minimum 3). Choose 0 to use 1% of host memory.
TotalBufferSizeMB: 0
# Maximum number of concurrent calls to AWS X-Ray to upload segment documents.
Concurrency: 8
# Send segments to AWS X-Ray service in a specific region
Region: ""
# Change the X-Ray service endpoint to which the daemon sends segment documents.
Endpoint: ""
Socket:
  # Change the address and port on which the daemon listens for UDP packets containing segment documents.
  UDPAddress: "127.0.0.1:2000"
Logging:
  LogRotation: true
  # Change the log level, from most verbose to least: dev, debug, info, warn, error, prod (default).
  LogLevel: "prod"
  # Output logs to the specified file path.
  LogPath: ""
# Turn on local mode to skip EC2 instance metadata check.
LocalMode: false
# Amazon Resource Name (ARN) of the AWS resource running the daemon.
ResourceARN: ""
# Assume an IAM role to upload segments to a different account.
RoleARN: ""
# Disable TLS certificate verification.
NoVerifySSL: false
# Upload segments to AWS X-Ray through a proxy.
ProxyAddress: ""
# Daemon configuration file format version.
Version: 1"#;

/// `--print-config` output as `Key` / `Section.Key` → value (strings unquoted).
fn printed(stdout: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut section = String::new();
    for line in stdout.lines().filter(|l| !l.starts_with('#')) {
        let (k, v) = line.split_once(':').expect("key: value");
        let v = v.trim();
        if let Some(sub) = k.strip_prefix("  ") {
            out.insert(format!("{section}.{sub}"), unquote(v));
        } else if v.is_empty() {
            section = k.to_string();
        } else {
            out.insert(k.to_string(), unquote(v));
        }
    }
    out
}

fn unquote(v: &str) -> String {
    if v.starts_with('"') {
        serde_json::from_str(v).expect("a quoted string")
    } else {
        v.to_string()
    }
}

/// Runs `--print-config` with `args` in `dir` (exit 0 expected).
fn effective(dir: &TempDir, args: &[&str], envs: &[(&str, &str)]) -> HashMap<String, String> {
    let mut a = vec!["--print-config"];
    a.extend_from_slice(args);
    let r = Daemon::run(dir.path(), &a, envs);
    assert_eq!(r.code, Some(0), "{args:?}: {r:?}");
    printed(&r.stdout)
}

fn fails(dir: &TempDir, args: &[&str], envs: &[(&str, &str)]) -> String {
    let r = Daemon::run(dir.path(), args, envs);
    assert_eq!(r.code, Some(1), "{args:?} should fail: {r:?}");
    assert!(
        r.stderr.starts_with("xrayd: "),
        "errors go to stderr: {r:?}"
    );
    assert!(r.stdout.is_empty(), "{r:?}");
    r.stderr
}

#[test]
fn the_images_shipped_file_loads_with_c_and_when_discovered() {
    let dir = TempDir::new("cfg-shipped");
    let path = dir.write("shipped.yaml", SHIPPED_V2);
    let env = [("AWS_REGION", "us-west-2")];
    let v = effective(&dir, &["-c", &path], &env);
    assert_eq!(v["Socket.UDPAddress"], "127.0.0.1:2000");
    assert_eq!(v["Socket.TCPAddress"], "127.0.0.1:2000");
    assert_eq!(v["Concurrency"], "8");
    assert_eq!(v["Logging.LogLevel"], "info");
    assert_eq!(v["Logging.LogRotation"], "true");
    assert_eq!(v["LocalMode"], "false");
    assert_eq!(v["NoVerifySSL"], "false");
    assert_eq!(
        v["Region"], "us-west-2",
        "\"\" in the file leaves the environment"
    );
    assert_eq!(v["Endpoint"], "");

    // Discovered as ./cfg.yaml in the working directory.
    dir.write("cfg.yaml", SHIPPED_V2);
    let r = Daemon::run(dir.path(), &["--print-config"], &env);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(
        r.stdout.contains("# Config files read: cfg.yaml\n"),
        "{}",
        r.stdout
    );
    assert!(
        r.stderr.is_empty(),
        "no warning for the shipped file: {r:?}"
    );

    // And the daemon runs with it (flags move the sockets off the file's fixed port).
    let sink = dir.file("segments.jsonl");
    let mut d = Daemon::spawn_at(dir.path(), &local_sink_args(&sink, &["-c", &path]), &[]);
    d.line("Using config file ", Duration::from_secs(10));
    d.udp_addr();
    assert!(d.stop().success(), "{}", d.log());
    assert!(d.log().contains(&format!("Using config file {path}")));
    assert!(
        d.log().contains("Using config file cfg.yaml"),
        "both files are layers"
    );
}

#[test]
fn a_version_1_file_loads() {
    let dir = TempDir::new("cfg-v1");
    let path = dir.write("v1.yaml", SHIPPED_V1);
    let v = effective(&dir, &["-c", &path, "-n", "eu-west-1"], &[]);
    assert_eq!(v["Socket.UDPAddress"], "127.0.0.1:2000");
    assert_eq!(v["Concurrency"], "8");
    let path = dir.write(
        "v1-values.yaml",
        "Version: 1\nRegion: ap-south-1\nConcurrency: 3\nSocket:\n  UDPAddress: 127.0.0.1:2999\n",
    );
    let v = effective(&dir, &["-c", &path], &[]);
    assert_eq!(
        (
            v["Region"].as_str(),
            v["Concurrency"].as_str(),
            v["Socket.UDPAddress"].as_str()
        ),
        ("ap-south-1", "3", "127.0.0.1:2999")
    );
}

#[test]
fn each_error_names_the_file_and_key_and_exits_1() {
    let dir = TempDir::new("cfg-errors");
    let missing = dir.file("missing.yaml");
    let e = fails(&dir, &["-c", &missing, "-n", "r"], &[]);
    assert_eq!(
        e.trim_end(),
        format!("xrayd: -c/--config: config file {missing} does not exist")
    );

    let cases: &[(&str, &str)] = &[
        (
            "Version: 2\nRegoin: us-east-1\n",
            ": unknown key Regoin; known keys: ",
        ),
        (
            "Version: 2\nregion: us-east-1\n",
            ": unknown key region (keys are case-sensitive and sectioned: did you mean Region?)",
        ),
        (
            "Version: 2\nProxyServer:\n  IdleConnTimeout: 5\n",
            ": unknown key ProxyServer",
        ),
        (
            "Version: 2\nProfile:\n  CPU: x\n",
            ": Profile.CPU is no longer supported; remove it",
        ),
        (
            "Version: 2\nProfile:\n  Memory: x\n",
            ": Profile.Memory is no longer supported",
        ),
        (
            "Version: 2\nSocket:\n  BufferSizeKB: 64\n",
            ": Socket.BufferSizeKB is no longer supported",
        ),
        (
            "Version: 2\nLogging:\n  LogFormat: x\n",
            ": Logging.LogFormat is no longer supported",
        ),
        (
            "Version: 2\nProcessor:\n  BatchProcessorQueueSize: 20\n",
            ": Processor.BatchProcessorQueueSize is no longer supported",
        ),
        (
            "Version: 2\nLogRotation: true\n",
            ": LogRotation is no longer supported; use Logging.LogRotation",
        ),
        (
            "Version: 2\nProcessor:\n  Region: x\n",
            ": Processor.Region is no longer supported; use Region",
        ),
        (
            "Version: 2\nProcessor:\n  Endpoint: x\n",
            ": Processor.Endpoint is no longer supported; use Endpoint",
        ),
        (
            "Version: 2\nProcessor:\n  Routine: 2\n",
            ": Processor.Routine is no longer supported; use Concurrency",
        ),
        (
            "Version: 2\nMemoryLimit: 64\n",
            ": MemoryLimit is no longer supported; use TotalBufferSizeMB",
        ),
        (
            "Version: 2\nConcurrency: eight\n",
            ": Concurrency: expected a whole number (0 for the default), found the string \"eight\"",
        ),
        (
            "Version: 2\nLocalMode: yes please\n",
            ": LocalMode: expected true or false, found the string \"yes please\"",
        ),
        (
            "Version: 2\nSocket: 127.0.0.1:2000\n",
            ": Socket: expected a mapping of keys",
        ),
        (
            "Version: 2\nRegion: [a, b]\n",
            ": Region: expected a string (put it in quotes), found a list",
        ),
        (
            "Region: us-east-1\n",
            ": Version is missing; add \"Version: 2\"",
        ),
        ("", ": Version is missing"),
        ("Version: 3\n", ": Version 3 is not supported; use 1 or 2"),
        (
            "Version: two\n",
            ": Version: expected the number 1 or 2, found the string \"two\"",
        ),
        (
            "Version: 2\nSocket:\n  UDPAddress: [\n",
            ": not valid YAML: ",
        ),
        (
            "Version: 2\nTotalBufferSizeMB: 2\n",
            "TotalBufferSizeMB in ",
        ),
        (
            "Version: 2\nSocket:\n  UDPAddress: not-an-address\n",
            "Socket.UDPAddress in ",
        ),
        (
            "Version: 2\nLogging:\n  LogLevel: chatty\n",
            "Logging.LogLevel in ",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let path = dir.write(&format!("bad{i}.yaml"), text);
        let e = fails(&dir, &["-c", &path, "-n", "us-east-1"], &[]);
        assert!(e.contains(want), "{text:?}: want {want:?} in {e:?}");
        assert!(e.contains(&path), "{text:?}: the file is named: {e}");
    }

    // Several problems: all reported, one per line.
    let path = dir.write(
        "many.yaml",
        "Version: 2\nFoo: 1\nMemoryLimit: 3\nConcurrency: x\n",
    );
    let e = fails(&dir, &["-c", &path, "-n", "r"], &[]);
    assert_eq!(e.lines().count(), 3, "{e}");
}

#[test]
fn a_discovered_file_warns_about_unknown_keys_but_not_about_anything_else() {
    let dir = TempDir::new("cfg-discovered");
    dir.write(
        "cfg.yaml",
        "Version: 2\nFoo: 1\nMemoryLimit: 64\nRegion: eu-north-1\n",
    );
    let r = Daemon::run(dir.path(), &["--print-config"], &[]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(
        r.stderr.contains("config file cfg.yaml: unknown key Foo"),
        "{r:?}"
    );
    assert!(
        r.stderr.contains("MemoryLimit is no longer supported"),
        "{r:?}"
    );
    assert_eq!(printed(&r.stdout)["Region"], "eu-north-1");

    let sink = dir.file("segments.jsonl");
    let mut d = Daemon::spawn_at(dir.path(), &local_sink_args(&sink, &[]), &[]);
    let w = d.line("unknown key Foo", Duration::from_secs(10));
    assert!(
        w.contains("[Warn] config file cfg.yaml: unknown key Foo"),
        "{w}"
    );
    assert!(w.ends_with("(ignored)"), "{w}");
    assert!(d.stop().success());

    // A broken discovered file is still an error.
    dir.write("cfg.yaml", "Version: 9\n");
    let e = fails(&dir, &["-n", "r"], &[]);
    assert!(
        e.contains("config file cfg.yaml: Version 9 is not supported"),
        "{e}"
    );
}

/// flag > `-c` file > discovered `./cfg.yaml` > default, for every key of the table.
#[test]
fn precedence_on_every_key() {
    let dir = TempDir::new("cfg-precedence");
    // (key, flag, values for flag / -c / discovered, default)
    let cases: &[(&str, &str, [&str; 3], &str)] = &[
        ("TotalBufferSizeMB", "-m", ["10", "20", "30"], ""),
        ("Concurrency", "--concurrency", ["2", "3", "4"], "8"),
        (
            "Endpoint",
            "--endpoint",
            ["http://f:1", "http://c:1", "http://a:1"],
            "",
        ),
        ("Region", "-n", ["f-1", "c-1", "a-1"], "env-1"),
        (
            "Socket.UDPAddress",
            "-b",
            ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"],
            "127.0.0.1:2000",
        ),
        (
            "Socket.TCPAddress",
            "-t",
            ["127.0.0.1:4", "127.0.0.1:5", "127.0.0.1:6"],
            "127.0.0.1:2000",
        ),
        ("Logging.LogLevel", "-l", ["error", "warn", "debug"], "info"),
        (
            "Logging.LogPath",
            "-f",
            ["/tmp/f.log", "/tmp/c.log", "/tmp/a.log"],
            "",
        ),
        ("ResourceARN", "-a", ["arn:f", "arn:c", "arn:a"], ""),
        (
            "RoleARN",
            "-r",
            ["arn:role/f", "arn:role/c", "arn:role/a"],
            "",
        ),
        (
            "ProxyAddress",
            "-p",
            ["http://f:3128", "http://c:3128", "http://a:3128"],
            "",
        ),
    ];
    let yaml = |key: &str, v: &str| {
        let value = if v.parse::<u64>().is_ok() {
            v.to_string()
        } else {
            format!("\"{v}\"")
        };
        match key.split_once('.') {
            Some((section, k)) => format!("Version: 2\n{section}:\n  {k}: {value}\n"),
            None => format!("Version: 2\n{key}: {value}\n"),
        }
    };
    let env = [("AWS_REGION", "env-1")];
    for (key, flag, [fv, cv, av], default) in cases {
        let c = dir.write("c.yaml", &yaml(key, cv));
        dir.write("cfg.yaml", &yaml(key, av));
        assert_eq!(
            effective(&dir, &[flag, fv, "-c", &c], &env)[*key],
            *fv,
            "{key}: flag"
        );
        assert_eq!(
            effective(&dir, &["-c", &c], &env)[*key],
            *cv,
            "{key}: -c file"
        );
        assert_eq!(effective(&dir, &[], &env)[*key], *av, "{key}: discovered");
        std::fs::remove_file(dir.join("cfg.yaml")).unwrap();
        let d = effective(&dir, &[], &env)[*key].clone();
        if default.is_empty() && *key == "TotalBufferSizeMB" {
            // 1 % of host memory: whatever it is, none of the layers' values.
            assert!(d.parse::<u64>().unwrap() >= 3 && ![fv, cv, av].contains(&&d.as_str()));
        } else {
            assert_eq!(d, *default, "{key}: default");
        }
    }
    // Booleans: an explicit false is kept at every level.
    for (key, flag, default) in [
        ("LocalMode", "--local-mode", "false"),
        ("Logging.LogRotation", "--log-rotation", "true"),
        ("NoVerifySSL", "--no-verify-ssl", "false"),
    ] {
        let yaml = |v: bool| match key.split_once('.') {
            Some((section, k)) => format!("Version: 2\n{section}:\n  {k}: {v}\n"),
            None => format!("Version: 2\n{key}: {v}\n"),
        };
        for v in [true, false] {
            let c = dir.write("c.yaml", &yaml(!v));
            dir.write("cfg.yaml", &yaml(v));
            let flag_arg = format!("{flag}={v}");
            assert_eq!(
                effective(&dir, &[&flag_arg, "-c", &c], &env)[key],
                v.to_string(),
                "{key}: flag"
            );
            assert_eq!(
                effective(&dir, &["-c", &c], &env)[key],
                (!v).to_string(),
                "{key}: -c file"
            );
            assert_eq!(
                effective(&dir, &[], &env)[key],
                v.to_string(),
                "{key}: discovered"
            );
        }
        std::fs::remove_file(dir.join("cfg.yaml")).unwrap();
        assert_eq!(effective(&dir, &[], &env)[key], default, "{key}: default");
    }
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The running daemon obeys the layers too: its UDP address, log level and log file.
#[test]
fn the_daemon_runs_with_the_layered_values() {
    let dir = TempDir::new("cfg-layered-run");
    let (p_auto, p_c) = (free_udp_port(), free_udp_port());
    let log = dir.file("from-config.log");
    dir.write(
        "cfg.yaml",
        &format!(
            "Version: 2\nSocket:\n  UDPAddress: 127.0.0.1:{p_auto}\n  TCPAddress: 127.0.0.1:0\nLogging:\n  LogLevel: warn\n"
        ),
    );
    let c = dir.write(
        "c.yaml",
        &format!(
            "Version: 1\nSocket:\n  UDPAddress: 127.0.0.1:{p_c}\nLogging:\n  LogLevel: debug\n  LogPath: {log}\n"
        ),
    );
    let sink = dir.file("segments.jsonl");
    // Discovered file: its address; its level (warn) hides the info lines.
    let mut d = Daemon::spawn_at(dir.path(), &["--local-sink", &sink, "-l", "info"], &[]);
    assert_eq!(d.udp_addr().to_string(), format!("127.0.0.1:{p_auto}"));
    assert!(d.stop().success());
    let mut d = Daemon::spawn_at(dir.path(), &["--local-sink", &sink], &[]);
    // Up (its UDP socket open, so every start-up line is written) before it stops.
    d.udp_socket(Duration::from_secs(10)).expect("UDP socket");
    assert!(d.stop().success(), "{}", d.log());
    assert_eq!(
        d.count("[Info]"),
        0,
        "LogLevel warn from ./cfg.yaml: {}",
        d.log()
    );

    // -c beats the discovered file: its address, level and log file.
    let mut d = Daemon::spawn_at(dir.path(), &["-c", &c, "--local-sink", &sink], &[]);
    let wait_for_text = |path: &str, what: &str| {
        wait_for_file(
            path,
            |t| t.contains(what),
            &format!("{what:?} not in the file"),
        )
    };
    wait_for_text(
        &log,
        &format!("Listening for segments on UDP 127.0.0.1:{p_c}"),
    );
    send_datagrams(
        format!("127.0.0.1:{p_c}").parse().unwrap(),
        &[b"not a datagram".to_vec()],
        Duration::ZERO,
    );
    wait_for_text(&log, "[Debug] Rejected datagram");
    assert!(d.stop().success());
    assert!(
        d.lines().is_empty(),
        "everything went to the LogPath file: {}",
        d.log()
    );

    // Flags beat both.
    let flag_log = dir.file("from-flag.log");
    let mut d = Daemon::spawn_at(
        dir.path(),
        &[
            "-c",
            &c,
            "-b",
            "127.0.0.1:0",
            "-f",
            &flag_log,
            "-l",
            "info",
            "--local-sink",
            &sink,
        ],
        &[],
    );
    let text = wait_for_text(&flag_log, "Listening for segments on UDP 127.0.0.1:");
    assert!(!text.contains(&format!("127.0.0.1:{p_c}")), "{text}");
    assert!(d.stop().success());
    let text = std::fs::read_to_string(&flag_log).unwrap();
    assert!(
        !text.contains("[Debug]") && text.contains("Final counts"),
        "{text}"
    );
}

/// `-c` takes only a regular file of at most 1 MiB: a device would be read until memory runs out,
/// a FIFO would block start-up forever, and an empty path is a mistake, not "no file".
#[test]
fn config_files_must_be_regular_files_of_bounded_size() {
    let dir = TempDir::new("cfg-bad-input");
    let fifo = dir.file("fifo.yaml");
    let c_path = std::ffi::CString::new(fifo.clone()).unwrap();
    // SAFETY: mkfifo(3) with a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let big = dir.write(
        "big.yaml",
        &format!("Version: 2\n#{}\n", "x".repeat(2 << 20)),
    );
    let cases: [(&str, &str); 5] = [
        (&fifo, "it is a FIFO, not a regular file"),
        ("/dev/zero", "it is a device, not a regular file"),
        ("/dev/urandom", "it is a device, not a regular file"),
        (
            dir.path().to_str().unwrap(),
            "it is a directory, not a regular file",
        ),
        (&big, "it is larger than the limit of 1048576 bytes"),
    ];
    for (path, why) in cases {
        let e = fails(&dir, &["-c", path, "-n", "us-east-1"], &[]);
        let head = format!("xrayd: -c/--config: cannot read config file {path}: ");
        assert!(e.starts_with(&head) && e.lines().count() == 1, "{e}");
        assert!(e.contains(why), "{path}: {e}");
    }
    for empty in ["", " "] {
        let e = fails(&dir, &["-c", empty, "-n", "us-east-1"], &[]);
        assert_eq!(
            e.trim_end(),
            "xrayd: -c/--config needs a file path (it was given an empty one)"
        );
    }
}

/// A region that is not a region name ends start-up with a bounded, escaped excerpt of it, from a
/// flag, the environment or a file.
#[test]
fn a_huge_or_hostile_region_is_an_error_with_a_bounded_excerpt() {
    let dir = TempDir::new("cfg-region");
    let huge = "a".repeat(100_000);
    let e = fails(&dir, &["-n", &huge], &[]);
    assert!(e.len() < 1000, "{} bytes: {}", e.len(), &e[..300]);
    assert!(
        e.contains("-n/--region") && e.contains("invalid AWS region"),
        "{e}"
    );
    let e = fails(
        &dir,
        &[],
        &[("AWS_REGION", "us-east-1\n[Error] forged\u{1b}[31m")],
    );
    assert!(e.contains("AWS_REGION"), "{e}");
    assert!(!e.contains('\u{1b}') && e.lines().count() == 1, "{e:?}");
    let path = dir.write(
        "hostile.yaml",
        "Version: 2\nRegion: \"eu-west-1\\n[Error] forged \\e[31m\"\nConcurrency: \"\\e]0;x\\a\"\n",
    );
    let e = fails(&dir, &["-c", &path], &[]);
    assert!(!e.contains('\u{1b}') && !e.contains('\u{7}'), "{e:?}");
    assert!(
        e.lines().all(|l| l.starts_with("xrayd: ")),
        "every line is one of xrayd's: {e:?}"
    );
}

/// The outbound proxy's password (from -p, ProxyAddress or HTTPS_PROXY) never reaches
/// --print-config, an error or a log line.
#[test]
fn the_proxy_password_is_never_shown() {
    let dir = TempDir::new("cfg-proxy-secret");
    let flag = effective(
        &dir,
        &["-n", "us-east-1", "-p", "http://user:PASS@127.0.0.1:9"],
        &[],
    );
    assert_eq!(flag["ProxyAddress"], "http://***@127.0.0.1:9");
    let path = dir.write(
        "proxy.yaml",
        "Version: 2\nProxyAddress: \"https://u:PASS@proxy.example:3128/\"\n",
    );
    let file = effective(&dir, &["-n", "us-east-1", "-c", &path], &[]);
    assert_eq!(file["ProxyAddress"], "https://***@proxy.example:3128/");
    for var in ["HTTPS_PROXY", "https_proxy"] {
        let env = effective(&dir, &["-n", "us-east-1"], &[(var, "http://me:PASS@h:1")]);
        assert_eq!(env["ProxyAddress"], "http://***@h:1", "{var}");
    }
    let e = fails(&dir, &["-n", "us-east-1", "-p", "http://u:PASS@[bad"], &[]);
    assert!(
        e.contains("proxy address http://***@[bad") && !e.contains("PASS"),
        "{e}"
    );

    // Running: uploads and telemetry through a proxy that refuses connections.
    let mut d = Daemon::spawn_at(
        dir.path(),
        &[
            "-b",
            "127.0.0.1:0",
            "-t",
            "127.0.0.1:0",
            "-n",
            "us-east-1",
            "-o",
            "-l",
            "dev",
            "-p",
            "http://user:PASS@127.0.0.1:9",
        ],
        &[
            ("AWS_ACCESS_KEY_ID", "AKIDPROXYTEST"),
            ("AWS_SECRET_ACCESS_KEY", "proxy-test-secret"),
            ("XRAYD_TELEMETRY_INTERVAL_MS", "100"),
        ],
    );
    let udp = d.udp_addr();
    send_datagrams(udp, &[sdk_datagram(&small_segment(1, 100))], Duration::ZERO);
    d.line("failed to send", Duration::from_secs(20));
    d.line(
        "Sending batch of 1 segments failed",
        Duration::from_secs(20),
    );
    assert!(d.stop().success());
    assert!(!d.log().contains("PASS"), "{}", d.log());
}
