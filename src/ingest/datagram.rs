//! Datagram validation: the pure heart of ingest.
//!
//! A datagram is a header line, `\n`, then one segment document. The header is parsed as JSON
//! (`{"format":"json","version":1}`, any spelling and key order); the body must be a JSON object of at
//! most [`MAX_DOCUMENT_BYTES`]. Valid bodies are returned as a borrowed slice of the input, so the bytes
//! that reach X-Ray are exactly the bytes the application sent.

use simd_json::{Node, StaticNode};

/// X-Ray's limit for one segment document.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

/// Why a datagram was not accepted. Each reason has its own counter in [`crate::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// No `\n`, or nothing after it.
    MissingHeaderOrSegment,
    /// The header is not JSON, or not `format` = json / `version` = 1.
    BadHeader,
    /// The body is not a JSON object (syntax error, invalid UTF-8, or another JSON type).
    BadJson,
    /// The body exceeds X-Ray's 64 KB limit, or the datagram was truncated by the receive buffer.
    TooLarge,
}

impl Rejection {
    /// All reasons, in the order used by counters and reports.
    pub const ALL: [Rejection; 4] = [
        Rejection::MissingHeaderOrSegment,
        Rejection::BadHeader,
        Rejection::BadJson,
        Rejection::TooLarge,
    ];

    /// Short machine name (metrics labels, log summaries).
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::MissingHeaderOrSegment => "no_newline",
            Rejection::BadHeader => "bad_header",
            Rejection::BadJson => "bad_json",
            Rejection::TooLarge => "too_large",
        }
    }

    /// Index into per-reason counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Outcome of validating one datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// The datagram was empty: ignored and not counted, like the AWS daemon.
    Empty,
    /// A valid document: the exact body bytes.
    Accepted(&'a [u8]),
    /// Rejected for the given reason.
    Rejected(Rejection),
}

/// The header every SDK we know sends, in its two spellings: recognised without parsing.
const CANONICAL_HEADERS: [&[u8]; 2] = [
    br#"{"format":"json","version":1}"#,
    br#"{"format": "json", "version": 1}"#,
];

/// Validates datagrams, reusing its scratch buffer, simd-json buffers and tape across calls
/// (simd-json parses in place, so the exact input is never touched).
pub struct Validator {
    scratch: Vec<u8>,
    buffers: simd_json::Buffers,
    tape: simd_json::Tape<'static>,
}

impl Default for Validator {
    fn default() -> Self {
        Self::new()
    }
}

impl Validator {
    /// A validator with scratch space for the largest document.
    pub fn new() -> Self {
        Validator {
            scratch: Vec::with_capacity(MAX_DOCUMENT_BYTES + simd_json::INPUT_PADDING),
            buffers: simd_json::Buffers::new(MAX_DOCUMENT_BYTES),
            tape: simd_json::Tape::null(),
        }
    }

    /// Validates one datagram. `truncated` says the receive buffer was too small for it.
    pub fn check<'a>(&mut self, datagram: &'a [u8], truncated: bool) -> Verdict<'a> {
        if datagram.is_empty() {
            return Verdict::Empty;
        }
        if truncated {
            return Verdict::Rejected(Rejection::TooLarge);
        }
        let Some(nl) = memchr_newline(datagram) else {
            return Verdict::Rejected(Rejection::MissingHeaderOrSegment);
        };
        let (header, body) = (&datagram[..nl], &datagram[nl + 1..]);
        if body.is_empty() {
            return Verdict::Rejected(Rejection::MissingHeaderOrSegment);
        }
        if !self.header_ok(header) {
            return Verdict::Rejected(Rejection::BadHeader);
        }
        if body.len() > MAX_DOCUMENT_BYTES {
            return Verdict::Rejected(Rejection::TooLarge);
        }
        if !self.is_json_object(body) {
            return Verdict::Rejected(Rejection::BadJson);
        }
        Verdict::Accepted(body)
    }

    fn header_ok(&mut self, header: &[u8]) -> bool {
        // Headers are tiny; anything long is not a header an SDK sends.
        if header.len() > 1024 {
            return false;
        }
        if CANONICAL_HEADERS.contains(&header) {
            return true;
        }
        self.with_tape(header, header_fields_ok).unwrap_or(false)
    }

    fn is_json_object(&mut self, body: &[u8]) -> bool {
        self.with_tape(body, |tape| {
            matches!(tape.first(), Some(Node::Object { .. }))
        })
        .unwrap_or(false)
    }

    /// Parses `input` (copied into the padded scratch buffer) into a simd-json tape and applies `f`.
    fn with_tape<R>(&mut self, input: &[u8], f: impl FnOnce(&[Node<'_>]) -> R) -> Option<R> {
        self.scratch.clear();
        self.scratch.extend_from_slice(input);
        self.scratch
            .resize(input.len() + simd_json::INPUT_PADDING, b' ');
        let mut tape = std::mem::replace(&mut self.tape, simd_json::Tape::null()).reset();
        let parsed = simd_json::fill_tape_padded(
            &mut self.scratch,
            input.len(),
            &mut self.buffers,
            &mut tape,
        );
        let result = parsed.ok().map(|()| f(&tape.0));
        self.tape = tape.reset();
        result
    }
}

/// Applies the header rules to a parsed tape: an object with `format` equal to `json` ignoring case
/// and `version` the integer 1. Later duplicate keys win; other keys are ignored.
fn header_fields_ok(tape: &[Node<'_>]) -> bool {
    let Some(Node::Object { len, .. }) = tape.first() else {
        return false;
    };
    let mut format_ok = false;
    let mut version_ok = false;
    let mut i = 1;
    for _ in 0..*len {
        let Some(Node::String(key)) = tape.get(i) else {
            return false;
        };
        let value_index = i + 1;
        let Some(value) = tape.get(value_index) else {
            return false;
        };
        match *key {
            "format" => {
                format_ok = matches!(value, Node::String(s) if s.eq_ignore_ascii_case("json"))
            }
            "version" => {
                version_ok = matches!(
                    value,
                    Node::Static(StaticNode::I64(1)) | Node::Static(StaticNode::U64(1))
                )
            }
            _ => {}
        }
        i = value_index + node_width(tape, value_index);
    }
    format_ok && version_ok
}

/// Number of tape entries taken by the value starting at `index`.
fn node_width(tape: &[Node<'_>], index: usize) -> usize {
    match tape.get(index) {
        Some(Node::Object { count, .. }) | Some(Node::Array { count, .. }) => count + 1,
        _ => 1,
    }
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(d: &[u8]) -> Verdict<'_> {
        Validator::new().check(d, false)
    }

    const BODY: &str = r#"{"name":"svc","id":"70de5b6f19ff9a0a","trace_id":"1-581cf771-a006649127e371903a2de979","start_time":1.5,"end_time":2.5}"#;

    #[test]
    fn header_table() {
        let cases: &[(&str, bool)] = &[
            (r#"{"format":"json","version":1}"#, true),
            (r#"{"format": "json", "version": 1}"#, true),
            (r#"{ "version" : 1 , "format" : "json" }"#, true),
            (r#"{"format":"JSON","version":1}"#, true),
            (
                r#"{"format":"Json","version":1,"extra":{"a":[1,2,{"b":3}]}}"#,
                true,
            ),
            (r#"{"format":"json","version":1}   "#, true),
            ("{\"format\":\"json\",\"version\":1}\r", true),
            (r#"{"format":"json","version":"1"}"#, false),
            (r#"{"format":"json","version":1.0}"#, false),
            (r#"{"format":"json","version":2}"#, false),
            (r#"{"format":"json","version":-1}"#, false),
            (r#"{"format":"xml","version":1}"#, false),
            (r#"{"format":"json"}"#, false),
            (r#"{"version":1}"#, false),
            (r#"{"Format":"json","Version":1}"#, false),
            (r#"{"format":"json","version":1}x"#, false),
            (r#"{"format":"json","version":1}{}"#, false),
            (r#"{"format":"json","version":1"#, false),
            (r#"["format","json"]"#, false),
            (r#""json""#, false),
            ("", false),
            ("null", false),
            (r#"{"format":"json","version":1,"format":"xml"}"#, false),
            (r#"{"format":"xml","version":1,"format":"json"}"#, true),
        ];
        for (header, ok) in cases {
            let d = format!("{header}\n{BODY}");
            let got = check(d.as_bytes());
            if *ok {
                assert_eq!(got, Verdict::Accepted(BODY.as_bytes()), "header {header:?}");
            } else {
                assert_eq!(
                    got,
                    Verdict::Rejected(Rejection::BadHeader),
                    "header {header:?}"
                );
            }
        }
    }

    #[test]
    fn split_at_first_newline_and_keep_body_exact() {
        let body = "{\n \"name\" : \"a\\nb\",\r\n\"id\":\"x\" }\n";
        let d = format!("{{\"format\":\"json\",\"version\":1}}\n{body}");
        assert_eq!(check(d.as_bytes()), Verdict::Accepted(body.as_bytes()));
    }

    #[test]
    fn missing_parts() {
        assert_eq!(check(b""), Verdict::Empty);
        let r = Verdict::Rejected(Rejection::MissingHeaderOrSegment);
        assert_eq!(check(br#"{"format":"json","version":1}"#), r);
        assert_eq!(check(b"{\"format\":\"json\",\"version\":1}\n"), r);
        assert_eq!(check(b"\n"), r);
        assert_eq!(check(BODY.as_bytes()), r);
    }

    #[test]
    fn body_must_be_a_json_object() {
        let h = "{\"format\":\"json\",\"version\":1}\n";
        for bad in [
            "[1,2]",
            "\"str\"",
            "42",
            "null",
            "{",
            "{\"a\":1}}",
            "{\"a\":1} {}",
            "{'a':1}",
            "{\"a\":tru}",
        ] {
            let d = format!("{h}{bad}");
            assert_eq!(
                check(d.as_bytes()),
                Verdict::Rejected(Rejection::BadJson),
                "{bad}"
            );
        }
        let mut d = h.as_bytes().to_vec();
        d.extend_from_slice(b"{\"a\":\"\xff\xfe\"}");
        assert_eq!(check(&d), Verdict::Rejected(Rejection::BadJson));
        let d = format!("{h}{{}}");
        assert_eq!(check(d.as_bytes()), Verdict::Accepted(b"{}"));
    }

    #[test]
    fn integers_beyond_64_bits_are_valid_json() {
        // SDKs put big numbers in metadata (Python: 2**64); the document is valid JSON.
        for n in [
            "18446744073709551616",
            "-9223372036854775809",
            "123456789012345678901234567890",
        ] {
            let d = format!("{{\"format\":\"json\",\"version\":1}}\n{{\"n\":{n}}}");
            let body = format!("{{\"n\":{n}}}");
            assert_eq!(
                check(d.as_bytes()),
                Verdict::Accepted(body.as_bytes()),
                "{n}"
            );
        }
    }

    #[test]
    fn size_limit() {
        let h = "{\"format\":\"json\",\"version\":1}\n";
        let pad = |n: usize| format!("{{\"p\":\"{}\"}}", "x".repeat(n - 8));
        let exact = pad(MAX_DOCUMENT_BYTES);
        assert_eq!(exact.len(), MAX_DOCUMENT_BYTES);
        let d = format!("{h}{exact}");
        assert_eq!(check(d.as_bytes()), Verdict::Accepted(exact.as_bytes()));
        let over = format!("{h}{}", pad(MAX_DOCUMENT_BYTES + 1));
        assert_eq!(
            check(over.as_bytes()),
            Verdict::Rejected(Rejection::TooLarge)
        );
        let ok = format!("{h}{BODY}");
        let mut v = Validator::new();
        assert_eq!(
            v.check(ok.as_bytes(), true),
            Verdict::Rejected(Rejection::TooLarge)
        );
    }

    #[test]
    fn validator_is_reusable_after_errors() {
        let mut v = Validator::new();
        let good = format!("{{\"format\":\"json\",\"version\":1}}\n{BODY}");
        for _ in 0..3 {
            assert_eq!(
                v.check(b"{\"format\":\"json\",\"version\":1}\n{", false),
                Verdict::Rejected(Rejection::BadJson)
            );
            assert_eq!(
                v.check(good.as_bytes(), false),
                Verdict::Accepted(BODY.as_bytes())
            );
        }
    }
}
