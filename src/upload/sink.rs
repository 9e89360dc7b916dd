//! Where batches go: X-Ray's PutTraceSegments, or the local sink (JSON lines, no AWS needed).

use std::io::Write;
use std::sync::{Mutex, PoisonError};

use super::retry::status_is_retryable;
use crate::aws::error_type::error_type;
use crate::batch::Batch;
use crate::stats::BackendError;
use crate::telemetry::Transport;
use crate::xray::client::XrayClient;
use crate::xray::segments::{Unprocessed, parse_put_response, put_trace_segments_body};

/// What became of one attempt to deliver a batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Accepted; the listed segments were not processed.
    Delivered { unprocessed: Vec<Unprocessed> },
    /// Failed in a way worth retrying.
    Retry { class: BackendError, detail: String },
    /// Refused for good (4xx other than 429).
    Rejected { class: BackendError, detail: String },
    /// Refused as malformed (400 InvalidRequestException, SerializationException,
    /// ValidationException): X-Ray refuses the whole request for one document it cannot read,
    /// so the batch is split to find that document rather than dropped whole.
    Malformed { class: BackendError, detail: String },
}

/// A destination for batches. `scratch` is a reusable buffer for the request body.
pub trait Sink: Send + Sync {
    /// Tries once to deliver `batch`.
    fn deliver(&self, batch: &Batch, scratch: &mut Vec<u8>) -> Delivery;

    /// Where a local sink writes (`stdout` or a path), for the per-batch log line; `None` for
    /// X-Ray, whose line keeps the AWS daemon's wording.
    fn local_destination(&self) -> Option<&str> {
        None
    }
}

/// PutTraceSegments to X-Ray.
pub struct XraySink {
    pub client: XrayClient,
}

impl Sink for XraySink {
    fn deliver(&self, batch: &Batch, scratch: &mut Vec<u8>) -> Delivery {
        scratch.clear();
        put_trace_segments_body(batch.segments.iter().map(|s| s.bytes()), scratch);
        match self.client.put_trace_segments(scratch) {
            Ok(answer) => judge(answer.status, answer.error_type.as_deref(), &answer.body),
            Err(e) if e.retryable => Delivery::Retry {
                class: e.class,
                detail: e.detail,
            },
            Err(e) => Delivery::Rejected {
                class: e.class,
                detail: e.detail,
            },
        }
    }
}

/// Telemetry goes to the same X-Ray client as the segments.
impl Transport for XraySink {
    fn put_telemetry_records(&self, body: &[u8]) -> Result<(), String> {
        self.client.put_telemetry_records(body)
    }
}

/// Turns an HTTP answer into a [`Delivery`].
pub fn judge(status: u16, error_header: Option<&str>, body: &[u8]) -> Delivery {
    if (200..300).contains(&status) {
        // A 2xx whose body is unreadable still means X-Ray took the batch.
        let unprocessed = parse_put_response(body).unwrap_or_else(|e| {
            crate::warn!("PutTraceSegments answered {status} with an unreadable body: {e}");
            Vec::new()
        });
        return Delivery::Delivered { unprocessed };
    }
    let class = if status >= 500 {
        BackendError::Http5xx
    } else {
        BackendError::Http4xx
    };
    let kind = error_type(error_header, body).unwrap_or_else(|| "unknown error".into());
    let detail = format!("HTTP {status} {kind}");
    if status_is_retryable(status) || credentials_may_recover(&kind) {
        Delivery::Retry { class, detail }
    } else if status == 400 && document_may_be_at_fault(&kind) {
        Delivery::Malformed { class, detail }
    } else {
        Delivery::Rejected { class, detail }
    }
}

/// Errors that a credentials refresh or a clock correction cures: the batch itself is fine, so it
/// is kept and retried rather than dropped.
fn credentials_may_recover(error_type: &str) -> bool {
    matches!(
        error_type,
        "ExpiredToken"
            | "ExpiredTokenException"
            | "RequestExpired"
            | "RequestTimeTooSkewed"
            | "InvalidClientTokenId"
    )
}

/// Errors that one unreadable document in a batch causes for the whole request.
fn document_may_be_at_fault(error_type: &str) -> bool {
    matches!(
        error_type,
        "InvalidRequestException" | "SerializationException" | "ValidationException"
    )
}

/// Writes each segment as one JSON line to a file or stdout, in the same batches.
pub struct LocalSink {
    out: Mutex<Box<dyn Write + Send>>,
    destination: String,
}

impl LocalSink {
    /// A sink writing to `out`, which the log calls `destination`.
    pub fn new(out: Box<dyn Write + Send>, destination: &str) -> Self {
        LocalSink {
            out: Mutex::new(out),
            destination: destination.to_string(),
        }
    }
}

impl Sink for LocalSink {
    fn local_destination(&self) -> Option<&str> {
        Some(&self.destination)
    }

    fn deliver(&self, batch: &Batch, scratch: &mut Vec<u8>) -> Delivery {
        scratch.clear();
        for s in &batch.segments {
            // A raw newline can only be JSON whitespace, so replacing it keeps the document valid
            // and its meaning unchanged while keeping one document per line.
            scratch.extend(
                s.bytes()
                    .iter()
                    .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
            );
            scratch.push(b'\n');
        }
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        match out.write_all(scratch).and_then(|_| out.flush()) {
            Ok(()) => Delivery::Delivered {
                unprocessed: Vec::new(),
            },
            Err(e) => Delivery::Retry {
                class: BackendError::Other,
                detail: format!("local sink: {e}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Batcher;
    use crate::segment::Segment;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    #[test]
    fn judges_answers() {
        assert_eq!(
            judge(200, None, b"{}"),
            Delivery::Delivered {
                unprocessed: vec![]
            }
        );
        assert_eq!(
            judge(200, None, b"garbage"),
            Delivery::Delivered {
                unprocessed: vec![]
            }
        );
        match judge(200, None, br#"{"UnprocessedTraceSegments":[{"Id":"a"}]}"#) {
            Delivery::Delivered { unprocessed } => assert_eq!(unprocessed[0].id, "a"),
            d => panic!("{d:?}"),
        }
        assert_eq!(
            judge(429, Some("ThrottledException"), b""),
            Delivery::Retry {
                class: BackendError::Http4xx,
                detail: "HTTP 429 ThrottledException".into()
            }
        );
        assert!(matches!(
            judge(503, None, b"x"),
            Delivery::Retry {
                class: BackendError::Http5xx,
                ..
            }
        ));
        assert_eq!(
            judge(400, None, br#"{"__type":"InvalidRequestException"}"#),
            Delivery::Malformed {
                class: BackendError::Http4xx,
                detail: "HTTP 400 InvalidRequestException".into()
            }
        );
        assert!(matches!(
            judge(400, Some("SerializationException"), b""),
            Delivery::Malformed { .. }
        ));
        assert!(matches!(
            judge(403, Some("AccessDeniedException"), b""),
            Delivery::Rejected { .. }
        ));
    }

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn local_sink_writes_one_line_per_segment() {
        let buf = Shared::default();
        let sink = LocalSink::new(Box::new(buf.clone()), "a buffer");
        let mut b = Batcher::new(2, Duration::from_secs(1));
        b.push(Segment::new(br#"{"a":1}"#), Instant::now());
        let batch = b
            .push(Segment::new(b"{\n\"b\":\"x\\ny\"\r\n}"), Instant::now())
            .unwrap();
        assert_eq!(
            sink.deliver(&batch, &mut Vec::new()),
            Delivery::Delivered {
                unprocessed: vec![]
            }
        );
        assert_eq!(
            &*buf.0.lock().unwrap_or_else(PoisonError::into_inner),
            b"{\"a\":1}\n{ \"b\":\"x\\ny\"  }\n"
        );
    }
}
