//! `GET /metrics`: every counter of [`Stats`] in the Prometheus text exposition format (0.0.4).
//!
//! Names follow Prometheus conventions: `xrayd_` prefix, `_total` for counters, base units
//! (seconds, bytes). Label values are bounded sets (rejection reasons, error classes, known
//! paths, HTTP statuses).

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::ingest::datagram::Rejection;
use crate::stats::{BackendError, Stats};

/// `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Values that are not counters of [`Stats`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Extra {
    /// The memory budget for buffered segments.
    pub budget_bytes: u64,
    /// What `/readyz` answers now, from the two values below (read once, so that a scrape shows
    /// the readiness together with the inputs it was decided on).
    pub ready: bool,
    /// UDP ingest is running.
    pub ingest_running: bool,
    /// How long deliveries have been failing without a success in between.
    pub upload_failing_for: Option<Duration>,
}

/// Escapes a label value (`\`, `"` and newlines).
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    header(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// A float as Prometheus writes it (`+Inf` for infinity).
fn float(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

/// Renders the exposition.
pub fn render(stats: &Stats, extra: &Extra) -> String {
    let s = stats.snapshot();
    let mut out = String::with_capacity(4096);
    let o = &mut out;
    header(
        o,
        "xrayd_build_info",
        "gauge",
        "Always 1; the version label names the running xrayd.",
    );
    let _ = writeln!(
        o,
        "xrayd_build_info{{version=\"{}\"}} 1",
        escape_label(crate::VERSION)
    );
    single(
        o,
        "xrayd_segments_received_total",
        "counter",
        "Non-empty UDP datagrams received.",
        s.received,
    );
    header(
        o,
        "xrayd_segments_rejected_total",
        "counter",
        "Datagrams rejected at ingest, by reason.",
    );
    for r in Rejection::ALL {
        let _ = writeln!(
            o,
            "xrayd_segments_rejected_total{{reason=\"{}\"}} {}",
            r.as_str(),
            s.rejected(r)
        );
    }
    single(
        o,
        "xrayd_segments_spillover_total",
        "counter",
        "Segments dropped (oldest first) to stay within the memory budget.",
        s.spillover,
    );
    single(
        o,
        "xrayd_segments_sent_total",
        "counter",
        "Segments X-Ray accepted (not listed as unprocessed).",
        s.sent,
    );
    single(
        o,
        "xrayd_segments_unprocessed_total",
        "counter",
        "Segments X-Ray returned as UnprocessedTraceSegments.",
        s.unprocessed,
    );
    single(
        o,
        "xrayd_segments_refused_total",
        "counter",
        "Segments dropped because X-Ray refused their batch with a non-retryable error.",
        s.rejected_by_xray,
    );
    single(
        o,
        "xrayd_segments_dropped_at_shutdown_total",
        "counter",
        "Segments still buffered when the shutdown deadline passed.",
        s.dropped_at_shutdown,
    );
    single(
        o,
        "xrayd_batches_sent_total",
        "counter",
        "PutTraceSegments calls X-Ray answered with 2xx.",
        s.batches_sent,
    );
    single(
        o,
        "xrayd_upload_retries_total",
        "counter",
        "Upload attempts that failed and will be retried.",
        s.retries,
    );
    header(
        o,
        "xrayd_upload_errors_total",
        "counter",
        "Failed calls to X-Ray, by class (as in PutTelemetryRecords' BackendConnectionErrors).",
    );
    for b in BackendError::ALL {
        let _ = writeln!(
            o,
            "xrayd_upload_errors_total{{class=\"{}\"}} {}",
            b.as_str(),
            s.backend_errors(b)
        );
    }
    single(
        o,
        "xrayd_buffered_bytes",
        "gauge",
        "Bytes of segments held (queued, batched, in flight or awaiting retry).",
        s.bytes_held,
    );
    single(
        o,
        "xrayd_buffered_segments",
        "gauge",
        "Segments held (queued, batched, in flight or awaiting retry).",
        s.segments_held,
    );
    single(
        o,
        "xrayd_buffer_budget_bytes",
        "gauge",
        "Memory budget for held segments.",
        extra.budget_bytes,
    );
    single(
        o,
        "xrayd_batches_in_flight",
        "gauge",
        "Batches being delivered right now.",
        stats.batches_in_flight.load(Relaxed),
    );
    let h = stats.upload_latency();
    header(
        o,
        "xrayd_upload_duration_seconds",
        "histogram",
        "Duration of delivery attempts (PutTraceSegments calls or local sink writes), failed ones included.",
    );
    for (le, n) in &h.buckets {
        let _ = writeln!(
            o,
            "xrayd_upload_duration_seconds_bucket{{le=\"{}\"}} {n}",
            float(*le)
        );
    }
    let _ = writeln!(
        o,
        "xrayd_upload_duration_seconds_sum {}",
        float(h.sum_seconds)
    );
    let _ = writeln!(o, "xrayd_upload_duration_seconds_count {}", h.count);
    single(
        o,
        "xrayd_upload_failing_seconds",
        "gauge",
        "How long deliveries have been failing without a success in between (0 when the last one succeeded).",
        float(
            extra
                .upload_failing_for
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
        ),
    );
    single(
        o,
        "xrayd_credential_refreshes_total",
        "counter",
        "Credentials fetched or refreshed successfully.",
        stats.credential_refreshes.load(Relaxed),
    );
    single(
        o,
        "xrayd_credential_refresh_errors_total",
        "counter",
        "Credential fetches or refreshes that failed.",
        stats.credential_refresh_errors.load(Relaxed),
    );
    header(
        o,
        "xrayd_proxy_requests_total",
        "counter",
        "Requests answered on the TCP port, by path (known paths; others are \"other\", unreadable requests \"invalid\") and status.",
    );
    for ((path, status), n) in stats.proxy_requests() {
        let _ = writeln!(
            o,
            "xrayd_proxy_requests_total{{path=\"{}\",status=\"{status}\"}} {n}",
            escape_label(path)
        );
    }
    single(
        o,
        "xrayd_ingest_running",
        "gauge",
        "1 while UDP ingest is running.",
        u8::from(extra.ingest_running),
    );
    single(
        o,
        "xrayd_ready",
        "gauge",
        "1 when /readyz answers 200.",
        u8::from(extra.ready),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histogram_and_labels() {
        let st = Stats::default();
        st.received.fetch_add(7, Relaxed);
        st.add_rejected(Rejection::BadJson, 2);
        st.add_backend_error(BackendError::Timeout);
        st.upload_started();
        st.upload_finished(Duration::from_millis(20), true);
        st.add_proxy_request("/SamplingTargets", 200);
        let text = render(
            &st,
            &Extra {
                budget_bytes: 3 << 20,
                ready: true,
                ingest_running: true,
                upload_failing_for: Some(Duration::from_millis(1500)),
            },
        );
        for line in [
            "xrayd_segments_received_total 7",
            "xrayd_segments_rejected_total{reason=\"bad_json\"} 2",
            "xrayd_segments_rejected_total{reason=\"too_large\"} 0",
            "xrayd_upload_errors_total{class=\"timeout\"} 1",
            "xrayd_buffer_budget_bytes 3145728",
            "xrayd_upload_duration_seconds_bucket{le=\"0.01\"} 0",
            "xrayd_upload_duration_seconds_bucket{le=\"0.025\"} 1",
            "xrayd_upload_duration_seconds_bucket{le=\"+Inf\"} 1",
            "xrayd_upload_duration_seconds_count 1",
            "xrayd_proxy_requests_total{path=\"/SamplingTargets\",status=\"200\"} 1",
            "xrayd_ready 1",
            // Readiness inputs as the scrape decided on them, not read again.
            "xrayd_ingest_running 1",
            "xrayd_upload_failing_seconds 1.5",
            "# TYPE xrayd_upload_duration_seconds histogram",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Every sample line belongs to a declared family.
        let mut families = Vec::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                families.push(rest.split(' ').next().unwrap().to_string());
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap();
                assert!(
                    families.iter().any(|f| name == f
                        || name
                            .strip_prefix(f.as_str())
                            .is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s))),
                    "{l}"
                );
            }
        }
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
