//! Logging with the real binary: the AWS daemon's line format and levels, JSON lines, the log file
//! with rotation (and `Logging.LogRotation: false`), and a log output that fails or stalls never
//! stopping ingest.

use xrayd_kit as support;

use std::time::{Duration, Instant};

use support::{
    Daemon, TempDir, daemon::udp_unread_bytes, local_sink_args, sdk_datagram, send_datagrams,
    small_segment, wait_for_file,
};

const LEVELS: [&str; 5] = ["Trace", "Debug", "Info", "Warn", "Error"];

/// `<RFC 3339 local time, seconds> [Level] message`: the level, or a description of the problem.
fn check_text_line(line: &str) -> Result<&str, String> {
    let (time, rest) = line.split_once(' ').ok_or("no space")?;
    let b = time.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    let ok_base = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    let zone = &time[19.min(time.len())..];
    let ok_zone = zone == "Z"
        || (zone.len() == 6
            && (zone.starts_with('+') || zone.starts_with('-'))
            && zone.as_bytes()[3] == b':');
    if !(ok_base && ok_zone) {
        return Err(format!("bad time {time:?}"));
    }
    let level = rest
        .strip_prefix('[')
        .and_then(|r| r.split_once("] "))
        .map(|(l, _)| l)
        .ok_or("no [Level]")?;
    if !LEVELS.contains(&level) {
        return Err(format!("bad level {level:?}"));
    }
    Ok(level)
}

/// Waits for the start-up line in the log file `log` and returns the UDP address it names.
fn udp_addr_from_log_file(log: &str) -> std::net::SocketAddr {
    let text = wait_for_file(
        log,
        |t| t.contains("Listening for segments on UDP "),
        "start-up",
    );
    let line = text
        .lines()
        .find(|l| l.contains("Listening for segments"))
        .unwrap();
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn lines_follow_the_aws_daemon_format_and_prod_is_info() {
    let dir = TempDir::new("log-format");
    let sink = dir.file("segments.jsonl");
    let mut d = Daemon::spawn_at(dir.path(), &local_sink_args(&sink, &["-l", "prod"]), &[]);
    let udp = d.udp_addr();
    send_datagrams(
        udp,
        &[b"junk".to_vec(), sdk_datagram(&small_segment(1, 100))],
        Duration::ZERO,
    );
    d.line(
        "Wrote batch of 1 segments to the local sink",
        Duration::from_secs(10),
    );
    assert!(d.stop().success());
    let lines = d.lines();
    for l in &lines {
        let level = check_text_line(l).unwrap_or_else(|e| panic!("{e}: {l:?}"));
        assert!(level != "Debug" && level != "Trace", "prod = info: {l}");
        assert!(l.contains("Z ["), "TZ=UTC gives Z: {l}");
    }
    for start in [
        "[Info] Initializing xrayd ",
        "[Info] Using buffer memory limit of ",
        "[Info] Listening for segments on UDP ",
        "[Warn] Rejected a datagram of 4 bytes: missing header or segment",
        "[Info] Got shutdown signal: terminated",
        "[Info] Final counts: ",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(start)),
            "{start:?} in\n{}",
            d.log()
        );
    }

    // Local time with an offset outside UTC.
    let mut d = Daemon::spawn_at(
        dir.path(),
        &local_sink_args(&sink, &[]),
        &[("TZ", "<+0530>-5:30")],
    );
    let l = d.line("Initializing xrayd", Duration::from_secs(10));
    assert!(l.contains("+05:30 [Info] "), "{l}");
    check_text_line(&l).unwrap();
    assert!(d.stop().success());
}

#[test]
fn debug_and_dev_levels_and_silent() {
    let dir = TempDir::new("log-levels");
    let sink = dir.file("segments.jsonl");
    for level in ["debug", "dev"] {
        let mut d = Daemon::spawn_at(dir.path(), &local_sink_args(&sink, &["-l", level]), &[]);
        send_datagrams(d.udp_addr(), &[b"junk".to_vec()], Duration::ZERO);
        d.line(
            "[Debug] Rejected datagram (no_newline)",
            Duration::from_secs(10),
        );
        assert!(d.stop().success());
    }
    let mut d = Daemon::spawn_at(dir.path(), &local_sink_args(&sink, &["-l", "silent"]), &[]);
    assert!(d.stop().success());
    assert!(d.lines().is_empty(), "silent: {}", d.log());
}

#[test]
fn json_lines_parse_as_json() {
    let dir = TempDir::new("log-json");
    let sink = dir.file("segments.jsonl");
    let mut d = Daemon::spawn_at(
        dir.path(),
        &local_sink_args(&sink, &["-l", "debug", "--log-format", "json"]),
        &[
            ("XRAYD_TELEMETRY_INTERVAL_MS", "100"),
            ("TZ", "<+0530>-5:30"),
        ],
    );
    let udp = d.udp_addr();
    send_datagrams(
        udp,
        &[
            b"bad \"quoted\"\n\x01\xff".to_vec(),
            sdk_datagram(&small_segment(1, 100)),
        ],
        Duration::ZERO,
    );
    d.line("Telemetry record", Duration::from_secs(10));
    assert!(d.stop().success());
    let mut with_fields = 0;
    for l in d.lines() {
        let v: serde_json::Value =
            serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l:?}"));
        let time = v["time"].as_str().expect("time");
        assert!(time.ends_with("+05:30") && time.len() == 29, "{time}");
        assert!(
            ["trace", "debug", "info", "warn", "error"]
                .contains(&v["level"].as_str().expect("level"))
        );
        assert!(v["message"].is_string());
        if let Some(f) = v.get("fields") {
            assert!(f.is_object());
            with_fields += 1;
        }
    }
    assert!(with_fields > 0, "telemetry records carry fields");
    assert!(
        d.log()
            .contains(r#""message":"Listening for segments on UDP "#)
    );
}

/// Lines that make the log grow: each rejected datagram is dumped at debug.
fn junk(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("junk datagram number {i:05} {}", "z".repeat(60)).into_bytes())
        .collect()
}

#[test]
fn the_log_file_rotates_keeping_one_rolled_file_and_keeps_writing() {
    let dir = TempDir::new("log-rotate");
    let sink = dir.file("segments.jsonl");
    let log = dir.file("xrayd.log");
    let mut d = Daemon::spawn_at(
        dir.path(),
        &local_sink_args(&sink, &["-l", "debug", "-f", &log]),
        &[("XRAYD_LOG_ROTATE_BYTES", "4096")],
    );
    let udp = udp_addr_from_log_file(&log);
    send_datagrams(udp, &junk(200), Duration::from_micros(200));
    let rolled = format!("{log}.1");
    wait_for_file(&rolled, |t| !t.is_empty(), "rolled file");
    // Keeps writing after rotating.
    send_datagrams(udp, &[sdk_datagram(&small_segment(1, 100))], Duration::ZERO);
    wait_for_file(&sink, |t| t.lines().count() == 1, "segment delivered");
    assert!(d.stop().success());
    assert!(
        d.lines().is_empty(),
        "everything went to the file: {}",
        d.log()
    );

    let current = std::fs::read_to_string(&log).unwrap();
    let old = std::fs::read_to_string(&rolled).unwrap();
    assert!(
        old.len() <= 4096 && old.len() > 2048,
        "rolled size {}",
        old.len()
    );
    assert!(current.len() <= 4096, "current size {}", current.len());
    assert!(current.contains("[Info] Final counts: "), "{current}");
    assert!(!dir.join("xrayd.log.2").exists(), "one rolled file only");
    for l in old.lines().chain(current.lines()) {
        check_text_line(l).unwrap_or_else(|e| panic!("{e}: {l:?}"));
    }
}

#[test]
fn log_rotation_false_in_the_config_file_disables_rotation() {
    let dir = TempDir::new("log-no-rotate");
    let sink = dir.file("segments.jsonl");
    let log = dir.file("xrayd.log");
    dir.write(
        "cfg.yaml",
        &format!(
            "Version: 2\nLogging:\n  LogRotation: false\n  LogLevel: debug\n  LogPath: {log}\n"
        ),
    );
    let mut d = Daemon::spawn_at(
        dir.path(),
        &local_sink_args(&sink, &[]),
        &[("XRAYD_LOG_ROTATE_BYTES", "4096")],
    );
    let udp = udp_addr_from_log_file(&log);
    send_datagrams(udp, &junk(100), Duration::from_micros(200));
    wait_for_file(
        &log,
        |t| t.matches("Rejected datagram (").count() == 100,
        "every line in one file",
    );
    assert!(d.stop().success());
    assert!(std::fs::metadata(&log).unwrap().len() > 3 * 4096);
    assert!(!dir.join("xrayd.log.1").exists());
}

/// xrayd at `-l debug` writing to `sink`, with its stdout (the log) left unread.
fn spawn_debug_stdout_unread(dir: &TempDir, sink: &str) -> Daemon {
    Daemon::spawn_at_stdout_unread(dir.path(), &local_sink_args(sink, &["-l", "debug"]), &[])
}

#[test]
fn a_closed_log_output_does_not_stop_the_daemon() {
    let dir = TempDir::new("log-closed");
    let sink = dir.file("segments.jsonl");
    let mut d = spawn_debug_stdout_unread(&dir, &sink);
    // Nobody reads stdout any more: every log write fails (EPIPE).
    drop(d.unread_stdout.take());
    let addr = d.udp_socket(Duration::from_secs(10)).expect("UDP socket");
    send_datagrams(addr, &junk(50), Duration::ZERO);
    let docs: Vec<Vec<u8>> = (0..3)
        .map(|i| sdk_datagram(&small_segment(i, 100)))
        .collect();
    send_datagrams(addr, &docs, Duration::ZERO);
    wait_for_file(
        &sink,
        |t| t.lines().count() == 3,
        "segments still delivered",
    );
    assert!(d.stop().success(), "{}", d.log());
    assert!(
        d.log().contains("[Error] Cannot write the log: "),
        "the failure is reported on stderr: {}",
        d.log()
    );
}

#[test]
fn a_stalled_log_output_never_blocks_ingest() {
    let dir = TempDir::new("log-stalled");
    let sink = dir.file("segments.jsonl");
    // stdout is a pipe nobody reads: it fills after 64 KiB and the log writer blocks.
    let mut d = spawn_debug_stdout_unread(&dir, &sink);
    let addr = d.udp_socket(Duration::from_secs(10)).expect("UDP socket");
    // Far more log lines than the pipe (64 KiB) and the log queue hold; paced so that the kernel
    // keeps the datagrams.
    for chunk in junk(20_000).chunks(500) {
        send_datagrams(addr, chunk, Duration::ZERO);
        // Pacing is the scenario: 5 ms between chunks of 500 datagrams.
        std::thread::sleep(Duration::from_millis(5));
    }
    // The daemon has read every junk datagram (its socket holds none) before the segments go.
    support::poll_until(
        Duration::from_secs(10),
        || format!("junk still unread: {:?}", udp_unread_bytes(addr.port())),
        || (udp_unread_bytes(addr.port()) == Some(0)).then_some(()),
    );
    let docs: Vec<Vec<u8>> = (0..5)
        .map(|i| sdk_datagram(&small_segment(i, 100)))
        .collect();
    let sent = Instant::now();
    send_datagrams(addr, &docs, Duration::from_millis(2));
    wait_for_file(&sink, |t| t.lines().count() == 5, "segments delivered");
    assert!(sent.elapsed() < Duration::from_secs(5));
    let stopping = Instant::now();
    assert!(d.stop().success(), "{}", d.log());
    assert!(
        stopping.elapsed() < Duration::from_secs(8),
        "shutdown does not wait for the stalled log forever"
    );
}

/// X-Ray names unprocessed segments by the ids it was sent (or any text it likes): an id holding a
/// newline and a fake time stamp must not become a line of its own, nor may ESC reach a terminal.
#[test]
fn ids_and_messages_from_x_ray_cannot_forge_log_lines() {
    use support::{Behaviour, FakeXray, make_segment, send_segments};
    let answer = serde_json::json!({ "UnprocessedTraceSegments": [{
        "Id": "abc\n2026-01-01T00:00:00Z [Error] forged\u{1b}[31m",
        "ErrorCode": "Bad\u{1b}]0;title\u{7}",
        "Message": "m\r\n[Info] forged too\u{2028}\u{202e}"
    }]})
    .to_string();
    for format in ["text", "json"] {
        let fake = FakeXray::start();
        fake.set_default(Behaviour::Status(200, answer.clone()));
        let mut d = support::Daemon::for_fake(&fake, &["--log-format", format], &[]);
        let udp = if format == "json" {
            let line = d
                .wait_for_line("Listening for segments", Duration::from_secs(10))
                .expect("start-up line");
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            support::parse_listening_line(v["message"].as_str().unwrap()).unwrap()
        } else {
            d.udp_addr()
        };
        send_segments(udp, &[make_segment(1, 200)]);
        assert!(
            d.wait_for_line("Unprocessed segment", Duration::from_secs(20))
                .is_some(),
            "{}",
            d.log()
        );
        d.sigterm();
        assert!(d.wait_exit(Duration::from_secs(20)).success());
        let log = d.log();
        assert!(
            !log.contains(['\u{1b}', '\u{7}', '\r', '\u{2028}', '\u{202e}']),
            "{log:?}"
        );
        for line in d.lines() {
            if line.contains("forged") {
                assert!(
                    line.contains("Unprocessed segment"),
                    "forged line: {line:?}"
                );
            }
            if format == "json" {
                let v: serde_json::Value =
                    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
                if v["message"]
                    .as_str()
                    .unwrap()
                    .contains("Unprocessed segment:")
                {
                    assert!(v["message"].as_str().unwrap().contains("\n2026-01-01"));
                }
            }
        }
    }
}
