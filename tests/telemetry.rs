//! Telemetry (PutTelemetryRecords) against a loopback fake X-Ray, with the real binary: every
//! counter of contract §7 adds up exactly after a known mix of outcomes, records survive an outage,
//! the identity comes from the environment or instance metadata, and the local sink logs records.

use xrayd_kit as support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::{
    Behaviour, Daemon, FakeConfig, FakeXray, RecordedRequest, TempDir, local_sink_args,
    sdk_datagram, send_datagrams, small_segment,
};

const SECS: fn(u64) -> Duration = Duration::from_secs;

const ACCESS_KEY: &str = "AKIDTELEMETRYTEST";
const SECRET_KEY: &str = "telemetry/Test+Secret0123456789EXAMPLE";

/// The fake X-Ray (and instance metadata) of these tests: it knows the telemetry test key and
/// closes every connection after its answer, so that while it is down every call is refused.
fn start_fake() -> FakeXray {
    FakeXray::start_with(FakeConfig {
        credentials: vec![(ACCESS_KEY.to_string(), SECRET_KEY.to_string())],
        close_connections: true,
        ..FakeConfig::default()
    })
}

/// A PutTraceSegments answer that comes later than the daemon's upload timeout (3 s here): the
/// fake waits 4 s, then closes the connection without answering.
fn timeout() -> Behaviour {
    Behaviour::delay(Duration::from_secs(4), Behaviour::CloseConnection)
}

/// Sums of the records of PutTelemetryRecords bodies.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Totals {
    records: usize,
    received: u64,
    sent: u64,
    spillover: u64,
    rejected: u64,
    timeout: u64,
    refused: u64,
    http4xx: u64,
    http5xx: u64,
    unknown_host: u64,
    other: u64,
}

impl Totals {
    fn add_record(&mut self, r: &serde_json::Value) {
        let n = |v: &serde_json::Value| v.as_u64().expect("a count");
        let e = &r["BackendConnectionErrors"];
        self.records += 1;
        self.received += n(&r["SegmentsReceivedCount"]);
        self.sent += n(&r["SegmentsSentCount"]);
        self.spillover += n(&r["SegmentsSpilloverCount"]);
        self.rejected += n(&r["SegmentsRejectedCount"]);
        self.timeout += n(&e["TimeoutCount"]);
        self.refused += n(&e["ConnectionRefusedCount"]);
        self.http4xx += n(&e["HTTPCode4XXCount"]);
        self.http5xx += n(&e["HTTPCode5XXCount"]);
        self.unknown_host += n(&e["UnknownHostCount"]);
        self.other += n(&e["OtherCount"]);
    }

    /// The sums over every record of these requests (answered 200 only: failed calls are resent).
    fn of(requests: &[RecordedRequest]) -> Totals {
        let mut t = Totals::default();
        for req in requests.iter().filter(|r| r.succeeded()) {
            for r in req.json()["TelemetryRecords"].as_array().expect("records") {
                t.add_record(r);
            }
        }
        t
    }
}

fn args<'a>(endpoint: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "-b",
        "127.0.0.1:0",
        "-t",
        "127.0.0.1:0",
        "-n",
        "us-east-1",
        "--endpoint",
        endpoint,
        "-l",
        "debug",
    ];
    a.extend_from_slice(extra);
    a
}

fn creds<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut e = vec![
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
    ];
    e.extend_from_slice(extra);
    e
}

/// Requests answered with `behaviour`.
fn count(reqs: &[RecordedRequest], behaviour: &Behaviour) -> u64 {
    reqs.iter()
        .filter(|r| r.behaviour.as_ref() == Some(behaviour))
        .count() as u64
}

fn epoch_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Good, malformed and over-budget datagrams; a refused connection, 429s, 500s and timeouts:
/// the records' sums match what happened, bucket by bucket.
#[test]
fn every_counter_adds_up_exactly() {
    let dir = TempDir::new("telemetry-mix");
    let fake = start_fake();
    let endpoint = fake.endpoint();
    let mut d = Daemon::spawn_at(
        dir.path(),
        &args(
            &endpoint,
            &[
                "-o",
                "-m",
                "3",
                "--concurrency",
                "1",
                "--retry-base-delay",
                "2s",
                "--retry-max-delay",
                "2s",
                // Long enough that only the scripted delays time out, even on a loaded machine
                // (a batch of 50 x 30 KB goes to a debug-build fake).
                "--upload-timeout",
                "3s",
                "-a",
                "arn:aws:ec2:us-east-1:123456789012:instance/i-0fake",
            ],
        ),
        &creds(&[
            ("XRAYD_TELEMETRY_INTERVAL_MS", "200"),
            ("AWS_HOSTNAME", "test-host.example"),
            ("AWS_INSTANCE_ID", "i-0fake"),
        ]),
    );
    let udp = d.udp_addr();

    // No record before the first datagram: the absence is checked over more than three
    // telemetry intervals (200 ms), so this wait is the scenario.
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        fake.telemetry_requests().is_empty(),
        "telemetry before any datagram"
    );

    // 1. Exactly one refused connection: X-Ray is down for the first attempt, back before the retry
    //    (the retry waits at least half the 2 s base delay).
    fake.down();
    send_datagrams(udp, &[sdk_datagram(&small_segment(1, 200))], Duration::ZERO);
    d.line("Sending batch of 1 segments failed", SECS(10));
    fake.up();
    assert!(
        fake.wait_for(SECS(10), |f| f.delivered_count() == 1),
        "{}",
        d.log()
    );

    // 2. One batch of 3 meets two throttles, two server errors and two timeouts, then goes in.
    fake.set_script(vec![
        Behaviour::status(429),
        Behaviour::status(429),
        Behaviour::status(500),
        Behaviour::status(500),
        timeout(),
        timeout(),
    ]);
    let three: Vec<Vec<u8>> = (2..5)
        .map(|i| sdk_datagram(&small_segment(i, 300)))
        .collect();
    send_datagrams(udp, &three, Duration::ZERO);
    assert!(
        fake.wait_for(SECS(60), |f| f.delivered_count() == 4),
        "{}",
        d.log()
    );

    // 3. Malformed datagrams of every kind.
    let malformed: Vec<Vec<u8>> = vec![
        b"no newline at all".to_vec(),
        b"{\"format\":\"json\",\"version\":1}\n".to_vec(),
        b"{\"format\":\"xml\",\"version\":1}\n{}".to_vec(),
        b"{\"format\":\"json\",\"version\":2}\n{}".to_vec(),
        b"{\"format\":\"json\",\"version\":1}\n[1,2]".to_vec(),
        b"{\"format\":\"json\",\"version\":1}\n{not json".to_vec(),
    ];
    send_datagrams(udp, &malformed, Duration::from_millis(1));
    assert!(
        d.wait_for(SECS(10), |l| l
            .iter()
            .filter(|l| l.contains("Rejected datagram ("))
            .count()
            == malformed.len()),
        "{}",
        d.log()
    );

    // 4. More than the 3 MB budget arrives while X-Ray answers 500: the oldest spill over.
    fake.set_default(Behaviour::status(500));
    let big: Vec<Vec<u8>> = (100..250)
        .map(|i| sdk_datagram(&small_segment(i, 30_000)))
        .collect();
    send_datagrams(udp, &big, Duration::from_millis(2));
    d.line("Segment buffer full", SECS(10));
    assert!(
        fake.wait_for(SECS(20), |f| count(&f.requests(), &Behaviour::status(500))
            >= 4)
    );
    fake.set_default(Behaviour::Ok);
    let good = 1 + three.len() + big.len();

    // 5. Shutdown drains the rest and sends the final record.
    let stopping = Instant::now();
    assert!(d.stop().success(), "{}", d.log());
    let fc = d.final_counts();
    assert_eq!(fc["dropped_at_shutdown"], 0, "{fc:?}");
    assert_eq!(fc["unprocessed"], 0, "{fc:?}");

    let segs = fake.requests();
    let telemetry = fake.telemetry_requests();
    assert!(
        telemetry
            .iter()
            .any(|r| r.received_at >= stopping && r.succeeded()),
        "the final record is sent at shutdown"
    );
    let delivered = fake.delivered_count() as u64;
    let expected = Totals {
        records: 0,
        received: (good + malformed.len()) as u64,
        sent: delivered,
        spillover: good as u64 - delivered,
        rejected: malformed.len() as u64,
        timeout: count(&segs, &timeout()),
        refused: 1,
        http4xx: count(&segs, &Behaviour::status(429)),
        http5xx: count(&segs, &Behaviour::status(500)),
        unknown_host: 0,
        other: 0,
    };
    let mut got = Totals::of(&telemetry);
    assert!(got.records >= 2);
    got.records = 0;
    assert_eq!(got, expected, "telemetry sums vs what happened");
    assert!(expected.spillover > 0, "the budget was exceeded");
    assert_eq!((expected.timeout, expected.http4xx), (2, 2));
    assert!(expected.http5xx >= 4, "scripted 500s plus the outage");
    // The shutdown line agrees (one owner of every counter).
    assert_eq!(fc["sent"], got.sent);
    assert_eq!(fc["spillover"], got.spillover);
    assert_eq!(fc["rejected"], got.rejected);
    assert_eq!(fc["backend_connection_refused"], 1);

    // Every call is signed, carries the identity, and at most 10 records.
    for r in &telemetry {
        assert!(
            r.header("authorization")
                .is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256 Credential=AKIDTELEMETRYTEST/")),
            "{:?}",
            r.headers
        );
        let v = r.json();
        assert_eq!(v["EC2InstanceId"], "i-0fake");
        assert_eq!(v["Hostname"], "test-host.example");
        assert_eq!(
            v["ResourceARN"],
            "arn:aws:ec2:us-east-1:123456789012:instance/i-0fake"
        );
        let records = v["TelemetryRecords"].as_array().unwrap();
        assert!((1..=10).contains(&records.len()));
        for rec in records {
            assert!(rec["Timestamp"].as_f64().unwrap() > 1.6e9);
        }
    }
}

/// While PutTelemetryRecords fails, records are kept and later arrive, ten per call.
#[test]
fn records_survive_an_outage_and_arrive_later() {
    let dir = TempDir::new("telemetry-outage");
    let fake = start_fake();
    let endpoint = fake.endpoint();
    let mut d = Daemon::spawn_at(
        dir.path(),
        &args(&endpoint, &["-o"]),
        // An outage of ~3 s makes ~20 records: ten per call twice over, and room to spare before
        // the 30 kept records overflow on a slow machine.
        &creds(&[("XRAYD_TELEMETRY_INTERVAL_MS", "150")]),
    );
    let udp = d.udp_addr();
    send_datagrams(udp, &[sdk_datagram(&small_segment(1, 100))], Duration::ZERO);
    assert!(fake.wait_for(SECS(10), |f| {
        f.telemetry_requests().iter().any(|r| r.succeeded())
    }));

    fake.set_telemetry_default(Behaviour::status(503));
    let outage_start = SystemTime::now();
    for i in 2..7 {
        send_datagrams(udp, &[sdk_datagram(&small_segment(i, 100))], Duration::ZERO);
        // Pacing is the scenario: an outage of ~2 s, with traffic all along.
        std::thread::sleep(Duration::from_millis(400));
    }
    assert!(fake.wait_for(SECS(10), |f| f.delivered_count() == 6));
    let outage_end = SystemTime::now();
    let recovered = Instant::now();
    fake.set_telemetry_default(Behaviour::Ok);
    assert!(
        fake.wait_for(SECS(10), |f| f
            .telemetry_requests()
            .iter()
            .any(|r| r.received_at > recovered && r.succeeded())),
        "{}",
        d.log()
    );
    assert!(d.stop().success());

    let reqs = fake.telemetry_requests();
    let failed = reqs.iter().filter(|r| !r.succeeded()).count();
    assert!(failed >= 5, "calls failed during the outage: {failed}");
    // Records made during the outage arrived after it, oldest first, at most ten per call.
    let mut late = 0;
    let mut last_ts = 0.0;
    for r in reqs.iter().filter(|r| r.succeeded()) {
        let records = r.json()["TelemetryRecords"].as_array().unwrap().clone();
        assert!(records.len() <= 10);
        for rec in &records {
            let ts = rec["Timestamp"].as_f64().unwrap();
            assert!(ts >= last_ts, "records in order");
            last_ts = ts;
            if ts > epoch_secs(outage_start) && ts < epoch_secs(outage_end) {
                assert!(r.received_at > recovered);
                late += 1;
            }
        }
    }
    assert!(late >= 10, "records of the outage delivered later: {late}");
    assert!(
        reqs.iter()
            .filter(|r| r.succeeded())
            .any(|r| r.json()["TelemetryRecords"].as_array().unwrap().len() == 10),
        "a backlog goes out ten records per call"
    );
    let t = Totals::of(&reqs);
    assert_eq!((t.received, t.sent, t.rejected, t.spillover), (6, 6, 0, 0));
}

/// Outside local mode, what the environment does not give comes from instance metadata
/// (IMDSv2 against the fake via AWS_EC2_METADATA_SERVICE_ENDPOINT).
#[test]
fn identity_from_environment_then_instance_metadata() {
    let dir = TempDir::new("telemetry-imds");
    let fake = start_fake();
    fake.set_metadata("instance-id", "i-0fromimds");
    fake.set_metadata("hostname", "ip-10-1-2-3.ec2.internal");
    let endpoint = fake.endpoint();
    let mut d = Daemon::spawn_at(
        dir.path(),
        &args(&endpoint, &[]),
        &creds(&[
            ("XRAYD_TELEMETRY_INTERVAL_MS", "100"),
            ("AWS_EC2_METADATA_DISABLED", ""),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &endpoint),
            ("AWS_HOSTNAME", "from-env"),
        ]),
    );
    send_datagrams(
        d.udp_addr(),
        &[sdk_datagram(&small_segment(1, 100))],
        Duration::ZERO,
    );
    assert!(fake.wait_for(SECS(10), |f| !f.telemetry_requests().is_empty()));
    assert!(d.stop().success());
    let v = fake.telemetry_requests()[0].json();
    assert_eq!(v["EC2InstanceId"], "i-0fromimds");
    assert_eq!(v["Hostname"], "from-env", "the environment wins");
    let other = fake.other_requests();
    let token = other
        .iter()
        .find(|r| r.path == "/latest/api/token")
        .expect("IMDSv2 token request");
    assert_eq!(token.method, "PUT");
    assert!(
        token
            .header("x-aws-ec2-metadata-token-ttl-seconds")
            .is_some()
    );
    let get = other
        .iter()
        .find(|r| r.path == "/latest/meta-data/instance-id")
        .expect("instance-id request");
    assert_eq!(get.header("x-aws-ec2-metadata-token"), Some("fake-token"));
}

/// In local mode instance metadata is never asked.
#[test]
fn local_mode_never_asks_instance_metadata() {
    let dir = TempDir::new("telemetry-local-mode");
    let fake = start_fake();
    fake.set_metadata("instance-id", "i-0fromimds");
    let endpoint = fake.endpoint();
    let mut d = Daemon::spawn_at(
        dir.path(),
        &args(&endpoint, &["-o"]),
        &creds(&[
            ("XRAYD_TELEMETRY_INTERVAL_MS", "100"),
            ("AWS_EC2_METADATA_DISABLED", ""),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &endpoint),
        ]),
    );
    send_datagrams(
        d.udp_addr(),
        &[sdk_datagram(&small_segment(1, 100))],
        Duration::ZERO,
    );
    assert!(fake.wait_for(SECS(10), |f| !f.telemetry_requests().is_empty()));
    assert!(d.stop().success());
    let v = fake.telemetry_requests()[0].json();
    assert_eq!(
        (&v["EC2InstanceId"], &v["Hostname"]),
        (&"".into(), &"".into())
    );
    assert!(
        !fake
            .other_requests()
            .iter()
            .any(|r| r.path.starts_with("/latest/")),
        "no instance metadata call in local mode"
    );
}

/// With the local sink, records go to the log at debug (JSON fields here) and nowhere else.
#[test]
fn local_sink_logs_records_at_debug() {
    let dir = TempDir::new("telemetry-local-sink");
    let sink = dir.file("segments.jsonl");
    let mut d = Daemon::spawn_at(
        dir.path(),
        &local_sink_args(&sink, &["-l", "debug", "--log-format", "json"]),
        &[("XRAYD_TELEMETRY_INTERVAL_MS", "100")],
    );
    let udp = d.udp_addr();
    send_datagrams(
        udp,
        &[
            sdk_datagram(&small_segment(1, 100)),
            sdk_datagram(&small_segment(2, 100)),
            b"garbage".to_vec(),
        ],
        Duration::ZERO,
    );
    let sums = |lines: &[String]| -> (u64, u64, u64) {
        let mut t = (0, 0, 0);
        for l in lines
            .iter()
            .filter(|l| l.contains("Telemetry record (local sink: not sent)"))
        {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
            assert_eq!(v["level"], "debug");
            let f = &v["fields"];
            t.0 += f["SegmentsReceivedCount"].as_u64().unwrap();
            t.1 += f["SegmentsSentCount"].as_u64().unwrap();
            t.2 += f["SegmentsRejectedCount"].as_u64().unwrap();
        }
        t
    };
    assert!(d.wait_for(SECS(10), |l| sums(l).0 == 3), "{}", d.log());
    assert!(d.stop().success());
    assert_eq!(sums(&d.lines()), (3, 2, 1));
}

/// At the default level records are not logged.
#[test]
fn local_sink_records_stay_out_of_the_default_log() {
    let dir = TempDir::new("telemetry-local-sink-info");
    let sink = dir.file("segments.jsonl");
    let mut d = Daemon::spawn_at(
        dir.path(),
        &local_sink_args(&sink, &[]),
        &[("XRAYD_TELEMETRY_INTERVAL_MS", "50")],
    );
    send_datagrams(
        d.udp_addr(),
        &[sdk_datagram(&small_segment(1, 100))],
        Duration::ZERO,
    );
    d.line("Wrote batch of 1 segments to the local sink", SECS(10));
    // The absence of records is checked over six telemetry intervals (50 ms): the wait is the
    // scenario.
    std::thread::sleep(Duration::from_millis(300));
    assert!(d.stop().success());
    assert_eq!(d.count("Telemetry record"), 0, "{}", d.log());
}
