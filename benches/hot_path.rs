//! Benchmarks of the per-segment hot path: validation (simd-json, compared with serde_json on the
//! same bodies), the ingest → batcher queue (alone and under contention), request-body encoding
//! (and JSON escaping alone), formatting a log line, and SigV4 signing.
//!
//! `cargo bench --bench hot_path` runs everything in a few minutes on 2 cores;
//! `cargo bench --bench hot_path -- --test` runs each benchmark once (smoke test);
//! `cargo bench --bench hot_path -- validate` runs one group.

use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use simd_json::prelude::*;
use xrayd::aws::credentials::{Credentials, StaticProvider};
use xrayd::aws::sigv4::{CachedSigner, Scope, sign_headers};
use xrayd::batch::Batcher;
use xrayd::budget::{EvictOldest, Stage};
use xrayd::ingest::datagram::{Validator, Verdict};
use xrayd::json::escape_json_string;
use xrayd::queue::bounded;
use xrayd::segment::Segment;
use xrayd::stats::Stats;
use xrayd::xray::client::{ClientConfig, XrayClient, xray_timestamp};
use xrayd::xray::segments::put_trace_segments_body;

const HEADER: &str = "{\"format\":\"json\",\"version\":1}\n";

/// A segment document shaped like the AWS X-Ray SDK for Python's output (`json.dumps` spacing,
/// http block, annotations, metadata, subsegments), padded to exactly `size` bytes.
fn segment_doc(size: usize, seed: u64) -> String {
    let trace = format!(
        "1-6b080b26-{:024x}",
        seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 8
    );
    let id = format!("{:016x}", seed.wrapping_mul(0x2545_f491_4f6c_dd1d));
    let subsegment = |i: u64| {
        format!(
            concat!(
                "{{\"id\": \"{:016x}\", \"name\": \"dynamodb-{}\", \"start_time\": 1795689254.080141, ",
                "\"parent_id\": \"{}\", \"in_progress\": false, \"http\": {{\"response\": {{\"status\": 200}}}}, ",
                "\"annotations\": {{\"op\": \"PutItem\"}}, \"metadata\": {{\"default\": {{\"table\": \"orders\"}}}}, ",
                "\"aws\": {{\"operation\": \"PutItem\", \"region\": \"us-east-1\", \"retries\": 0}}, ",
                "\"trace_id\": \"{}\", \"type\": \"subsegment\", \"namespace\": \"aws\", \"end_time\": 1795689254.080165}}"
            ),
            seed ^ (i + 1),
            i,
            id,
            trace
        )
    };
    let build = |subs: u64, pad: usize| {
        let subsegments: Vec<String> = (0..subs).map(subsegment).collect();
        format!(
            concat!(
                "{{\"id\": \"{id}\", \"name\": \"checkout-service\", \"start_time\": 1795689254.080081, ",
                "\"in_progress\": false, \"http\": {{\"request\": {{\"url\": \"https://shop.example.com/cart/checkout?id=42\", ",
                "\"method\": \"POST\", \"user_agent\": \"Mozilla/5.0 (X11; Linux x86_64)\", \"client_ip\": \"203.0.113.7\"}}, ",
                "\"response\": {{\"status\": 200}}}}, \"annotations\": {{\"customer\": \"c-1234\", \"cart_size\": 7, ",
                "\"premium\": true}}, \"metadata\": {{\"app\": {{\"note\": \"{pad}\"}}}}, \"aws\": {{\"xray\": ",
                "{{\"sdk\": \"X-Ray for Python\", \"sdk_version\": \"2.15.0\"}}}}, \"subsegments\": [{subs}], ",
                "\"trace_id\": \"{trace}\", \"service\": {{\"runtime\": \"CPython\", \"runtime_version\": \"3.11.7\"}}, ",
                "\"end_time\": 1795689254.0805497}}"
            ),
            id = id,
            pad = "x".repeat(pad),
            subs = subsegments.join(", "),
            trace = trace,
        )
    };
    let mut subs = 0;
    while build(subs + 1, 0).len() <= size {
        subs += 1;
    }
    let base = build(subs, 0).len();
    assert!(base <= size, "segment skeleton exceeds {size} bytes");
    let doc = build(subs, size - base);
    assert_eq!(doc.len(), size);
    doc
}

fn datagram(doc: &str) -> Vec<u8> {
    format!("{HEADER}{doc}").into_bytes()
}

fn validate(c: &mut Criterion) {
    let mut group = c.benchmark_group("validate");
    for (label, size) in [("1KB", 1024), ("8KB", 8 * 1024)] {
        let dgram = datagram(&segment_doc(size, 1));
        group.throughput(Throughput::Bytes(dgram.len() as u64));
        let mut validator = Validator::new();
        assert!(matches!(
            validator.check(&dgram, false),
            Verdict::Accepted(_)
        ));
        group.bench_function(format!("xrayd_simd_json/{label}"), |b| {
            b.iter(|| {
                let verdict = validator.check(black_box(&dgram), false);
                black_box(matches!(verdict, Verdict::Accepted(_)))
            })
        });
        group.bench_function(format!("serde_json_value/{label}"), |b| {
            b.iter(|| {
                let d = black_box(&dgram[..]);
                let nl = d.iter().position(|&b| b == b'\n').unwrap();
                let v: serde_json::Value = serde_json::from_slice(&d[nl + 1..]).unwrap();
                black_box(v.is_object())
            })
        });
        // simd-json building a value tree (what an owned parse would cost), for scale.
        let mut scratch = Vec::with_capacity(dgram.len());
        group.bench_function(format!("simd_json_borrowed_value/{label}"), |b| {
            b.iter(|| {
                let d = black_box(&dgram[..]);
                let nl = d.iter().position(|&b| b == b'\n').unwrap();
                scratch.clear();
                scratch.extend_from_slice(&d[nl + 1..]);
                let v = simd_json::to_borrowed_value(&mut scratch).unwrap();
                black_box(v.is_object())
            })
        });
        // A lone surrogate escape: simd-json refuses it, the grammar check accepts it (the
        // fallback's cost on top of simd-json's failed attempt).
        let lone =
            datagram(&segment_doc(size, 1).replacen("\"note\": \"", "\"note\": \"\\ud83d", 1));
        assert!(matches!(
            validator.check(&lone, false),
            Verdict::Accepted(_)
        ));
        group.bench_function(format!("xrayd_grammar_fallback/{label}"), |b| {
            b.iter(|| {
                let verdict = validator.check(black_box(&lone), false);
                black_box(matches!(verdict, Verdict::Accepted(_)))
            })
        });
    }
    group.finish();
}

/// Nothing is held outside the ring in these benchmarks.
struct NoOlder;

impl EvictOldest for NoOlder {
    fn evict_oldest(&self, _: Stage) -> Option<Segment> {
        None
    }
}

const QUEUE_SLOTS: usize = 4096;
const QUEUE_BUDGET: u64 = 64 << 20;

fn queue(c: &mut Criterion) {
    let mut group = c.benchmark_group("queue");
    let body = segment_doc(1024, 2).into_bytes();

    // Single thread: push 1,000 pre-built segments, then drain them (release as the batcher would).
    const N: usize = 1000;
    group.throughput(Throughput::Elements(N as u64));
    let stats = Arc::new(Stats::default());
    let (writer, reader) = bounded(QUEUE_SLOTS, QUEUE_BUDGET, stats.clone(), Arc::new(NoOlder));
    group.bench_function("push_pop_1000", |b| {
        b.iter_batched(
            || vec![Segment::new(&body); N],
            |segments| {
                for s in segments {
                    black_box(writer.push(s));
                }
                for s in reader.rx.try_iter() {
                    stats.ledger.release_segment(black_box(s));
                }
            },
            BatchSize::SmallInput,
        )
    });
    assert_eq!(stats.spillover.load(Relaxed), 0);
    drop((writer, reader));

    // The ingest copy included: Segment::new from a received body, push, pop, free.
    group.throughput(Throughput::Elements(1));
    let stats = Arc::new(Stats::default());
    let (writer, reader) = bounded(QUEUE_SLOTS, QUEUE_BUDGET, stats.clone(), Arc::new(NoOlder));
    group.bench_function("copy_push_pop_1KB", |b| {
        b.iter(|| {
            writer.push(Segment::new(black_box(&body)));
            let s = reader.rx.try_recv().unwrap();
            black_box(&s);
            stats.ledger.release_segment(s)
        })
    });
    drop((writer, reader));

    // Contention: 2 producer threads (copy + push) and 1 consumer (pop + release), `iters` segments.
    group.bench_function("contended_2p1c_1KB", |b| {
        b.iter_custom(|iters| {
            let stats = Arc::new(Stats::default());
            let (writer, reader) =
                bounded(QUEUE_SLOTS, QUEUE_BUDGET, stats.clone(), Arc::new(NoOlder));
            let per_producer = iters.div_ceil(2);
            let start = Instant::now();
            std::thread::scope(|scope| {
                for _ in 0..2 {
                    let w = writer.clone();
                    let body = &body;
                    scope.spawn(move || {
                        for _ in 0..per_producer {
                            black_box(w.push(Segment::new(body)));
                        }
                    });
                }
                drop(writer);
                // Ends when both producers are done and the ring is empty.
                for s in reader.rx.iter() {
                    stats.ledger.release_segment(black_box(s));
                }
            });
            start.elapsed()
        })
    });

    // The batcher on top: 50 segments in, one batch out.
    group.throughput(Throughput::Elements(50));
    let now = Instant::now();
    let mut batcher = Batcher::default();
    group.bench_function("batcher_50", |b| {
        b.iter_batched(
            || vec![Segment::new(&body); 50],
            |segments| {
                let mut out = None;
                for s in segments {
                    out = batcher.push(s, now).or(out);
                }
                black_box(out.expect("50 segments close a batch"))
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn fifty_documents() -> Vec<Vec<u8>> {
    (0..50)
        .map(|i| segment_doc(1024, 100 + i).into_bytes())
        .collect()
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    let docs = fifty_documents();
    let total: usize = docs.iter().map(Vec::len).sum();
    group.throughput(Throughput::Bytes(total as u64));
    let mut out = Vec::with_capacity(total * 2);
    group.bench_function("put_trace_segments_body_50x1KB", |b| {
        b.iter(|| {
            out.clear();
            put_trace_segments_body(docs.iter().map(Vec::as_slice), &mut out);
            black_box(out.len())
        })
    });
    group.finish();
}

/// JSON escaping alone, on the documents of one request: realistic segment text (a quote every
/// few bytes, no control characters) and the same with non-ASCII text and escaped quotes in it.
fn escape(c: &mut Criterion) {
    let mut group = c.benchmark_group("escape");
    let docs = fifty_documents();
    let total: usize = docs.iter().map(Vec::len).sum();
    group.throughput(Throughput::Bytes(total as u64));
    let mut out = Vec::with_capacity(total * 2);
    group.bench_function("segments_50x1KB", |b| {
        b.iter(|| {
            out.clear();
            for doc in &docs {
                escape_json_string(black_box(doc), &mut out);
            }
            black_box(out.len())
        })
    });
    let mixed: Vec<Vec<u8>> = docs
        .iter()
        .map(|d| {
            String::from_utf8_lossy(d)
                .replace("checkout-service", "café-kasse-€")
                .replace("PutItem", "Put\\\"Item\\\"\\n")
                .replace("orders", "注文\\t")
                .into_bytes()
        })
        .collect();
    let total: usize = mixed.iter().map(Vec::len).sum();
    group.throughput(Throughput::Bytes(total as u64));
    group.bench_function("segments_non_ascii_50x1KB", |b| {
        b.iter(|| {
            out.clear();
            for doc in &mixed {
                escape_json_string(black_box(doc), &mut out);
            }
            black_box(out.len())
        })
    });
    group.finish();
}

/// Formatting the info line every delivered batch logs (text format, as the AWS daemon's).
fn log_line(c: &mut Criterion) {
    let mut group = c.benchmark_group("log_line");
    group.throughput(Throughput::Elements(1));
    let (n, secs) = (50u64, 0.004_f64);
    group.bench_function("info_batch_sent", |b| {
        b.iter(|| {
            let line = xrayd::log::line(
                xrayd::log::Level::Info,
                &[],
                format_args!(
                    "Successfully sent batch of {} segments ({:.3} seconds)",
                    black_box(n),
                    black_box(secs)
                ),
            );
            black_box(line)
        })
    });
    group.finish();
}

fn bench_credentials() -> Credentials {
    Credentials::new(
        "AKIDEXAMPLE",
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        Some("session-token".to_string()),
        None,
        "bench",
    )
}

fn xray_scope() -> Scope {
    Scope {
        region: "us-east-1".into(),
        service: "xray",
    }
}

const URL: &str = "https://xray.us-east-1.amazonaws.com/TraceSegments";

fn sign(c: &mut Criterion) {
    let mut group = c.benchmark_group("sign");
    let docs = fifty_documents();
    let mut body = Vec::new();
    put_trace_segments_body(docs.iter().map(Vec::as_slice), &mut body);
    group.throughput(Throughput::Bytes(body.len() as u64));
    let creds = bench_credentials();
    let scope = xray_scope();
    let headers = [
        ("host", "xray.us-east-1.amazonaws.com"),
        ("content-type", "application/json"),
    ];
    let time = SystemTime::now();
    let signer = CachedSigner::new(xray_scope());
    group.bench_function("cached_signer_50_docs", |b| {
        b.iter(|| {
            let h = signer
                .sign("POST", URL, &headers, black_box(&body), &creds, time)
                .unwrap();
            black_box(h)
        })
    });
    group.bench_function("sign_headers_50_docs", |b| {
        b.iter(|| {
            let h = sign_headers(
                "POST",
                "https://xray.us-east-1.amazonaws.com/TraceSegments",
                &headers,
                black_box(&body),
                &creds,
                &scope,
                time,
            )
            .unwrap();
            black_box(h)
        })
    });
    group.finish();
}

/// The work of one upload request of 50 × 1 KB documents: the body encoded, the
/// `X-Amzn-Xray-Timestamp` written, the request signed (as the upload path does, and with
/// aws-sigv4 for comparison); then the whole call, HTTP included, to a minimal X-Ray on loopback.
fn request(c: &mut Criterion) {
    let mut group = c.benchmark_group("request");
    let docs = fifty_documents();
    group.throughput(Throughput::Elements(docs.len() as u64));
    let creds = bench_credentials();
    let host = "xray.us-east-1.amazonaws.com";
    let mut body = Vec::with_capacity(128 * 1024);
    let signer = CachedSigner::new(xray_scope());
    let mut encode_and_sign = |cached: bool| {
        body.clear();
        put_trace_segments_body(docs.iter().map(Vec::as_slice), &mut body);
        let now = SystemTime::now();
        let stamp = xray_timestamp(now);
        let headers = [
            ("host", host),
            ("content-type", "application/json"),
            ("x-amzn-xray-timestamp", stamp.as_str()),
        ];
        let signed = if cached {
            signer.sign("POST", URL, &headers, &body, &creds, now)
        } else {
            sign_headers("POST", URL, &headers, &body, &creds, &xray_scope(), now)
        };
        black_box(signed.unwrap());
    };
    group.bench_function("encode_sign_50x1KB_cached", |b| {
        b.iter(|| encode_and_sign(true))
    });
    group.bench_function("encode_sign_50x1KB_aws_sigv4", |b| {
        b.iter(|| encode_and_sign(false))
    });

    let endpoint = minimal_xray();
    let client = XrayClient::new(
        &ClientConfig {
            endpoint,
            region: "us-east-1".into(),
            user_agent: "xrayd-bench".into(),
            timeout: Duration::from_secs(5),
            proxy: None,
            max_idle: 1,
            no_verify_ssl: false,
        },
        Arc::new(StaticProvider::new(creds.clone(), "bench")),
    )
    .expect("client");
    group.bench_function("put_trace_segments_loopback_50x1KB", |b| {
        b.iter(|| {
            body.clear();
            put_trace_segments_body(docs.iter().map(Vec::as_slice), &mut body);
            let answer = client.put_trace_segments(&body).expect("answer");
            assert_eq!(answer.status, 200);
        })
    });
    group.finish();
}

/// An X-Ray on loopback that answers every request on a kept-alive connection with `200 {}`,
/// doing nothing else; its base URL.
fn minimal_xray() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = conn.set_nodelay(true);
                let mut writer = conn.try_clone().expect("clone");
                let mut reader = BufReader::with_capacity(256 * 1024, conn);
                let mut line = String::new();
                let mut body = Vec::new();
                loop {
                    let mut length = 0;
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':')
                            && name.eq_ignore_ascii_case("content-length")
                        {
                            length = value.trim().parse().unwrap_or(0);
                        }
                    }
                    body.resize(length, 0);
                    if reader.read_exact(&mut body).is_err()
                        || writer
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                            .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = validate, queue, encode, escape, log_line, sign, request
}
criterion_main!(benches);
