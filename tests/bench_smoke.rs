//! Smoke test of `xrayd bench`: about a second at a low rate against a real xrayd process, through
//! the real harness path (load generator, fake X-Ray, /proc measurements, JSON report). It checks
//! that the report is complete and that every segment arrived exactly once; it asserts nothing
//! about speed.

use std::process::Command;

const XRAYD: &str = env!("CARGO_BIN_EXE_xrayd");

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

/// Runs `xrayd bench ARGS`: through the binary once it routes the subcommand, else in-process
/// with the binary as the daemon under test.
fn run_bench(args: Vec<String>) -> String {
    let wired = Command::new(XRAYD)
        .args(["bench", "--help"])
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains("--rates")
        });
    if wired {
        let out = Command::new(XRAYD)
            .arg("bench")
            .args(&args)
            .output()
            .expect("run xrayd bench");
        assert!(
            out.status.success(),
            "xrayd bench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8 report")
    } else {
        let mut args = args;
        args.extend(["--daemon-cmd".to_string(), XRAYD.to_string()]);
        xrayd::bench::run_to_json(args).expect("bench run")
    }
}

#[test]
fn bench_against_xrayd_delivers_everything_once() {
    let json = run_bench(bench_args(&[]));
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
    let json = run_bench(bench_args(&[
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
}
