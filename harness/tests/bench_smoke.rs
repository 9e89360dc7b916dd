//! Smoke test of the benchmark harness: about a second at a low rate against a real xrayd process,
//! through the real harness path (load generator, fake X-Ray, /proc measurements, JSON report),
//! run as `xrayd bench` and as `xrayd-bench`. It checks that the report is complete and that every
//! segment arrived exactly once; it asserts nothing about speed. The daemon binary is the one the
//! kit finds (`cargo build` builds it beside the harness; `XRAYD_TEST_BIN` names another).

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Output};

use xrayd_kit::Daemon;

const HARNESS: &str = env!("CARGO_BIN_EXE_xrayd-bench");

fn bench_args(extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--rates",
        "2000",
        "--duration",
        "1s",
        "--idle",
        "200ms",
        "--drain-idle",
        "5s",
        "--drain-timeout",
        "20s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// PATH with the harness's directory first, so that `xrayd bench` finds `xrayd-bench` even when
/// the daemon under test (`XRAYD_TEST_BIN`) lives elsewhere.
fn path_with_harness() -> OsString {
    let dir = Path::new(HARNESS).parent().expect("harness directory");
    let rest = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&rest)))
        .expect("PATH")
}

/// The JSON report on stdout of a successful run.
fn report(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 report")
}

/// Runs `xrayd bench ARGS`, as users do: the daemon runs the harness, which measures that daemon.
fn run_xrayd_bench(args: Vec<String>) -> String {
    let out = Command::new(Daemon::bin())
        .arg("bench")
        .args(&args)
        .env("PATH", path_with_harness())
        .output()
        .expect("run xrayd bench");
    report("xrayd bench", out)
}

/// Runs `xrayd-bench ARGS` directly. It measures the xrayd beside it, which is the daemon under
/// test unless `XRAYD_TEST_BIN` names another: that one is given with `--daemon-cmd`.
fn run_harness(args: Vec<String>) -> String {
    let mut cmd = Command::new(HARNESS);
    cmd.args(&args).env_remove("XRAYD_BENCH_DAEMON");
    if Path::new(Daemon::bin()) != Path::new(HARNESS).with_file_name("xrayd") {
        cmd.args(["--daemon-cmd", Daemon::bin()]);
    }
    report("xrayd-bench", cmd.output().expect("run xrayd-bench"))
}

/// Runs `xrayd-bench ARGS` directly, the daemon named in `ARGS`.
fn run_harness_with(args: Vec<String>) -> String {
    let out = Command::new(HARNESS)
        .args(&args)
        .env_remove("XRAYD_BENCH_DAEMON")
        .output()
        .expect("run xrayd-bench");
    report("xrayd-bench", out)
}

#[test]
fn bench_against_xrayd_delivers_everything_once() {
    let json = run_xrayd_bench(bench_args(&[]));
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON report");
    assert_eq!(v["tool"], "xrayd bench");
    assert_eq!(v["target"], "xrayd");
    for key in ["machine", "config", "date", "zero_loss_throughput"] {
        assert!(v.get(key).is_some(), "missing {key}: {json}");
    }
    let steps = v["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 1);
    let s = &steps[0];
    for key in [
        "rate",
        "offered",
        "offered_rate",
        "delivered",
        "unprocessed",
        "duplicates",
        "loss",
        "kernel_drops",
        "daemon_drops",
        "cpu_us_per_segment",
        "idle_rss_kib",
        "peak_rss_kib",
        "latency_ms",
        "daemon_counts",
    ] {
        assert!(s.get(key).is_some(), "step lacks {key}: {json}");
    }
    let offered = s["offered"].as_u64().unwrap();
    let delivered = s["delivered"].as_u64().unwrap();
    assert!(offered > 0 && delivered > 0, "{json}");
    assert_eq!(s["duplicates"], 0, "{json}");
    assert_eq!(s["stale"], 0, "{json}");
    assert!(delivered <= offered, "{json}");
    assert!(s["idle_rss_kib"].as_u64().unwrap() > 0, "{json}");
    assert!(s["latency_ms"]["p99"].as_f64().is_some(), "{json}");
    // The CPU is broken down by xrayd's named threads; the groups add up to the total.
    let by_thread = s["cpu_us_per_segment_by_thread"].as_object().unwrap();
    for group in ["xrayd-ingest", "xrayd-batch", "xrayd-upload"] {
        assert!(by_thread.contains_key(group), "no {group}: {json}");
    }
    let sum: f64 = by_thread.values().map(|v| v.as_f64().unwrap()).sum();
    let total = s["cpu_us_per_segment"].as_f64().unwrap();
    assert!(
        (sum - total).abs() <= total * 0.05 + 0.5,
        "{sum} vs {total}: {json}"
    );
    // xrayd's own shutdown line was read back.
    assert_eq!(
        s["daemon_counts"]["received"].as_u64(),
        Some(offered - s["kernel_drops"].as_u64().unwrap_or(0)),
        "{json}"
    );
}

#[test]
fn bench_with_faults_counts_refusals_and_no_duplicates() {
    let json = run_harness(bench_args(&[
        "--count",
        "1000",
        "--fault-500",
        "0.2",
        "--fault-429",
        "0.2",
        "--fault-unprocessed",
        "0.05",
        "--fault-delay",
        "5ms",
    ]));
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON report");
    let s = &v["steps"][0];
    assert_eq!(s["offered"], 1000, "{json}");
    assert!(s["delivered"].as_u64().unwrap() > 0, "{json}");
    assert_eq!(s["duplicates"], 0, "{json}");
    let r = &s["requests"];
    assert!(r["ok"].as_u64().unwrap() > 0, "{json}");
    assert!(s.get("delivered_of_not_refused").is_some(), "{json}");
    assert_eq!(v["config"]["daemon_cmd"], Daemon::bin(), "{json}");
}

/// Without the harness beside it or on PATH, `xrayd bench` says how to build it and fails.
#[test]
fn xrayd_bench_without_the_harness_says_how_to_build_it() {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("lone-xrayd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let lone = dir.join("xrayd");
    if std::fs::hard_link(Daemon::bin(), &lone).is_err() {
        std::fs::copy(Daemon::bin(), &lone).unwrap();
    }
    let out = Command::new(&lone)
        .args(["bench", "--help"])
        .env("PATH", &dir)
        .output()
        .expect("run the lone xrayd");
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(out.stdout.is_empty());
    assert!(
        err.contains("xrayd-bench") && err.contains("cargo build --release -p xrayd-harness"),
        "{err}"
    );
}

/// Checks a one-step report of a daemon run from a `{config}` command: everything offered was
/// delivered once (so the daemon read the fake's endpoint from the written file), from the even
/// load's 16 client sockets.
fn assert_delivered_through_config(json: &str, label: &str) {
    let v: serde_json::Value = serde_json::from_str(json).expect("JSON report");
    assert_eq!(v["target"], label, "{json}");
    assert_eq!(v["config"]["load"], "even", "{json}");
    assert_eq!(v["config"]["clients"], 16, "{json}");
    assert!(
        v["config"]["daemon_cmd"]
            .as_str()
            .is_some_and(|c| c.contains("-c {config}")),
        "{json}"
    );
    let s = &v["steps"][0];
    assert_eq!(s["offered"], 500, "{json}");
    assert_eq!(s["delivered"], 500, "{json}");
    assert_eq!(s["duplicates"], 0, "{json}");
    assert!(s["cpu_us_per_segment"].as_f64().is_some(), "{json}");
}

/// `{config}` writes a Version 2 cfg.yaml naming the fake X-Ray and `{tcp}` a free TCP address:
/// the way to run the AWS daemon, which has no endpoint flag. xrayd reads the same file, so it
/// stands in for it here: its uploads reach the fake only through the Endpoint in that file.
#[test]
fn bench_writes_a_config_file_for_daemons_without_an_endpoint_flag() {
    let cmd = format!(
        "{} -o -n us-east-1 -c {{config}} -b {{udp}} -t {{tcp}}",
        Daemon::bin()
    );
    let json = run_harness_with(bench_args(&[
        "--count",
        "500",
        "--label",
        "stand-in",
        "--daemon-cmd",
        &cmd,
    ]));
    assert_delivered_through_config(&json, "stand-in");
}

/// The AWS X-Ray daemon itself, when this machine has it (`XRAYD_AWS_DAEMON`, else
/// `shared/peers/aws-xray-daemon` in a folder above the repository).
#[test]
fn bench_runs_the_aws_daemon_when_present() {
    let peer = std::env::var_os("XRAYD_AWS_DAEMON")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .ancestors()
                .map(|d| d.join("shared/peers/aws-xray-daemon"))
                .find(|p| p.is_file())
        });
    let missing = match &peer {
        Some(p) if p.is_file() => None,
        _ => Some("no AWS X-Ray daemon (set XRAYD_AWS_DAEMON)".to_string()),
    };
    if !xrayd_kit::run_or_skip("bench_runs_the_aws_daemon_when_present", missing) {
        return;
    }
    let peer = peer.expect("checked above");
    let cmd = format!(
        "{} -o -n us-east-1 -c {{config}} -b {{udp}} -t {{tcp}}",
        peer.display()
    );
    let json = run_harness_with(bench_args(&["--count", "500", "--daemon-cmd", &cmd]));
    assert_delivered_through_config(&json, "aws-xray-daemon");
    // Over HTTPS: NoVerifySSL in the file lets it accept the fake's self-signed certificate.
    let json = run_harness_with(bench_args(&[
        "--count",
        "500",
        "--https",
        "--daemon-cmd",
        &cmd,
    ]));
    assert_delivered_through_config(&json, "aws-xray-daemon");
}

/// `--https`: the fake X-Ray serves TLS with a self-signed certificate, and xrayd (given
/// `--no-verify-ssl` with the default arguments) delivers everything through it.
#[test]
fn bench_over_https_delivers_everything_once() {
    let json = run_harness(bench_args(&["--count", "500", "--https"]));
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON report");
    assert_eq!(v["config"]["https"], true, "{json}");
    let s = &v["steps"][0];
    assert_eq!(s["offered"], 500, "{json}");
    assert_eq!(s["delivered"], 500, "{json}");
    assert_eq!(s["duplicates"], 0, "{json}");
    assert!(s["requests"]["ok"].as_u64().unwrap() > 0, "{json}");
}
