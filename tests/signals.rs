//! Signals other than the shutdown ones, with the real xrayd against FakeXray.
//!
//! - SIGHUP (logrotate's `postrotate kill -HUP` after moving the file away): the daemon keeps
//!   running, lines after it go to a fresh file at the `-f` path, and segments keep flowing.
//! - SIGUSR1 logs the counts so far; SIGUSR2 and SIGPIPE are survived: none of them ends the
//!   process, and the final counts still come at SIGTERM with everything delivered.
//! - SIGQUIT (the stop signal some process managers use) shuts down like SIGTERM: buffered
//!   segments are delivered and the final counts logged, instead of a core dump.

use xrayd_kit as support;

use support::daemon::Daemon;
use support::{FakeXray, make_segment, parse_listening_line, poll_until, secs, send_segments};

fn docs(range: std::ops::Range<u64>) -> Vec<String> {
    range.map(|i| make_segment(i, 200)).collect()
}

/// The log file's text once `pred` holds for it (20 s at most).
fn wait_for_file(path: &std::path::Path, what: &str, pred: impl Fn(&str) -> bool) -> String {
    poll_until(
        secs(20),
        || {
            format!(
                "{what} in {}: {:?}",
                path.display(),
                std::fs::read_to_string(path)
            )
        },
        || std::fs::read_to_string(path).ok().filter(|t| pred(t)),
    )
}

#[test]
fn sighup_reopens_the_log_file_and_keeps_running() {
    let fake = FakeXray::start();
    let dir = support::daemon::scratch_dir();
    let log = dir.join("xrayd.log");
    let rolled = dir.join("xrayd.log.1");
    let log_arg = log.to_string_lossy().into_owned();
    let mut d = Daemon::for_fake(&fake, &["-l", "info", "-f", &log_arg], &[]);
    let text = wait_for_file(&log, "start-up line", |t| {
        t.contains("Listening for segments on UDP ")
    });
    let udp = text
        .lines()
        .find_map(parse_listening_line)
        .expect("UDP address");
    send_segments(udp, &docs(0..10));
    assert!(fake.wait_for_documents(10, secs(20)), "{}", fake.summary());
    wait_for_file(&log, "first batch line", |t| {
        t.contains("Successfully sent")
    });

    std::fs::rename(&log, &rolled).expect("move the log away");
    d.signal(libc::SIGHUP);
    wait_for_file(&log, "reopen line", |t| {
        t.contains("Got SIGHUP: reopened the log file")
    });
    assert!(d.is_running(), "SIGHUP ended the daemon");
    send_segments(udp, &docs(10..20));
    assert!(fake.wait_for_documents(20, secs(20)), "{}", fake.summary());
    wait_for_file(&log, "second batch line", |t| {
        t.contains("Successfully sent")
    });
    assert!(d.is_running());

    d.sigterm();
    assert!(d.wait_exit(secs(20)).success());
    let new = std::fs::read_to_string(&log).unwrap();
    let old = std::fs::read_to_string(&rolled).unwrap();
    assert!(new.contains("Final counts: received=20 "), "{new}");
    assert!(
        old.contains("Listening for segments") && !old.contains("Final counts"),
        "{old}"
    );
    assert_eq!(fake.delivered_count(), 20);
}

#[test]
fn sigusr1_logs_the_counts_and_usr2_and_pipe_do_not_stop_the_daemon() {
    let fake = FakeXray::start();
    let mut d = Daemon::for_fake(&fake, &["-l", "info"], &[]);
    let udp = d.udp_addr();
    send_segments(udp, &docs(0..5));
    assert!(fake.wait_for_documents(5, secs(20)), "{}", fake.summary());
    // The counts are updated once the answer is read: wait for the batch line first.
    d.wait_for_line("Successfully sent", secs(20))
        .expect("batch line");
    d.signal(libc::SIGUSR1);
    let line = d
        .wait_for_line("Got SIGUSR1: counts: ", secs(20))
        .unwrap_or_else(|| panic!("no SIGUSR1 line:\n{}", d.log()));
    let counts =
        support::parse_final_counts(&line.replace("Got SIGUSR1: counts:", "Final counts:"))
            .expect("counts");
    assert_eq!((counts["received"], counts["sent"]), (5, 5), "{line}");
    for sig in [libc::SIGUSR2, libc::SIGPIPE] {
        d.signal(sig);
    }
    d.wait_for_line("Got signal 12: ignored", secs(20))
        .unwrap_or_else(|| panic!("no SIGUSR2 line:\n{}", d.log()));
    assert!(d.is_running(), "a signal ended the daemon:\n{}", d.log());
    send_segments(udp, &docs(5..10));
    assert!(fake.wait_for_documents(10, secs(20)), "{}", fake.summary());
    d.sigterm();
    assert!(d.wait_exit(secs(20)).success());
    assert_eq!(d.final_counts()["sent"], 10);
}

#[test]
fn sigquit_shuts_down_cleanly_delivering_what_is_buffered() {
    let fake = FakeXray::start();
    let mut d = Daemon::for_fake(&fake, &["-l", "info"], &[]);
    let udp = d.udp_addr();
    send_segments(udp, &docs(0..5));
    // Received, still in the batcher (a batch waits up to a second for more).
    poll_until(
        secs(20),
        || d.log(),
        || {
            d.signal(libc::SIGUSR1);
            d.wait_for_line("received=5 ", secs(1))
        },
    );
    d.signal(libc::SIGQUIT);
    let status = d.wait_exit(secs(20));
    assert!(status.success(), "{status:?}\n{}", d.log());
    assert!(
        d.wait_for_line("Got shutdown signal: quit", secs(5))
            .is_some()
    );
    assert_eq!(d.final_counts()["sent"], 5);
    assert_eq!(fake.delivered_count(), 5);
}
