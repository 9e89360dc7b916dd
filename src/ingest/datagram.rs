//! Datagram validation: the pure heart of ingest.
//!
//! A datagram is a header line, `\n`, then one segment document. The header is parsed as JSON
//! (`{"format":"json","version":1}`, any spelling and key order); the body must be JSON text (RFC
//! 8259: UTF-8, any grammatically valid value inside) whose top-level value is an object, of at most
//! [`MAX_DOCUMENT_BYTES`]. Valid bodies are returned as a borrowed slice of the input, so the bytes
//! that reach X-Ray are exactly the bytes the application sent.
//!
//! simd-json decides first: it is fast, and every body it accepts as an object is valid JSON. A body
//! it refuses goes to the [`grammar`](super::grammar) check, which decides alone: it accepts the
//! valid JSON simd-json cannot decode (escaped lone surrogates, numbers beyond f64, nesting past
//! 1,024 levels) and says why the rest is invalid ([`Validator::violation`]).

use simd_json::{Node, StaticNode};

use super::grammar::{self, Rule, Violation};
use crate::stats::RejectedCounter;

/// X-Ray's limit for one segment document.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

/// Why a datagram was not accepted. Each reason has its own counter in [`crate::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// No `\n`, or nothing after it.
    MissingHeaderOrSegment,
    /// The header is not JSON, or not `format` = json / `version` = 1.
    BadHeader,
    /// The body is not a JSON object (syntax error, invalid UTF-8, or another JSON type); the rule
    /// broken and where: [`Validator::violation`].
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

    /// Short machine name (metrics labels, log summaries): its counter's.
    pub fn as_str(self) -> &'static str {
        RejectedCounter::from(self).as_str()
    }

    /// Index into per-reason counter arrays (its counter's position in [`RejectedCounter::ALL`]).
    pub fn index(self) -> usize {
        RejectedCounter::from(self) as usize
    }
}

/// Each reason is counted by its own counter in [`crate::stats`].
impl From<Rejection> for RejectedCounter {
    fn from(r: Rejection) -> RejectedCounter {
        match r {
            Rejection::MissingHeaderOrSegment => RejectedCounter::NoNewline,
            Rejection::BadHeader => RejectedCounter::BadHeader,
            Rejection::BadJson => RejectedCounter::BadJson,
            Rejection::TooLarge => RejectedCounter::TooLarge,
        }
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
    /// Why the last body was rejected as [`Rejection::BadJson`].
    violation: Option<Violation>,
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
            violation: None,
        }
    }

    /// Why the datagram of the last [`check`](Self::check) was rejected as [`Rejection::BadJson`]:
    /// the grammar rule its body breaks and the byte offset in the body. `None` after any other
    /// verdict.
    pub fn violation(&self) -> Option<Violation> {
        self.violation
    }

    /// Validates one datagram. `truncated` says the receive buffer was too small for it.
    pub fn check<'a>(&mut self, datagram: &'a [u8], truncated: bool) -> Verdict<'a> {
        self.violation = None;
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
        if let Err(v) = self.json_object(body) {
            self.violation = Some(v);
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

    /// simd-json's verdict where it has one; the grammar's where simd-json refuses the body.
    fn json_object(&mut self, body: &[u8]) -> Result<(), Violation> {
        match self.with_tape(body, |tape| {
            matches!(tape.first(), Some(Node::Object { .. }))
        }) {
            Some(true) => Ok(()),
            Some(false) => Err(Violation {
                rule: Rule::NotAnObject,
                offset: body
                    .iter()
                    .position(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
                    .unwrap_or(0),
            }),
            None => grammar::check_object(body),
        }
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
    fn each_reason_has_its_own_counter_in_order() {
        let counters = Rejection::ALL.map(RejectedCounter::from);
        assert_eq!(counters, RejectedCounter::ALL);
        for (i, r) in Rejection::ALL.into_iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        assert_eq!(
            Rejection::ALL.map(Rejection::as_str),
            ["no_newline", "bad_header", "bad_json", "too_large"]
        );
    }

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

    /// Valid JSON that simd-json refuses: delivered as sent.
    #[test]
    fn valid_json_simd_json_refuses_is_accepted_byte_exact() {
        let h = "{\"format\":\"json\",\"version\":1}\n";
        let deep = |open: &str, close: &str, n: usize| {
            format!("{{\"a\":{}0{}}}", open.repeat(n), close.repeat(n))
        };
        let near_limit = deep("[", "]", (MAX_DOCUMENT_BYTES - 7) / 2);
        assert!(
            near_limit.len() > MAX_DOCUMENT_BYTES - 4 && near_limit.len() <= MAX_DOCUMENT_BYTES
        );
        let bodies = [
            // JS "🚀".slice(0, 1) through JSON.stringify: a lone high surrogate.
            r#"{"name":"svc","annotations":{"s":"\ud83d"}}"#.to_string(),
            r#"{"s":"\ud800"}"#.to_string(),
            r#"{"s":"\udc00"}"#.to_string(),
            r#"{"s":"\udc00\ud800"}"#.to_string(),
            r#"{"n":1e400}"#.to_string(),
            r#"{"n":-1e400}"#.to_string(),
            r#"{"n":1E+400}"#.to_string(),
            deep("[", "]", 5000),
            deep("{\"k\":", "}", 5000),
            near_limit,
        ];
        let mut v = Validator::new();
        for body in &bodies {
            let d = format!("{h}{body}");
            assert_eq!(
                v.check(d.as_bytes(), false),
                Verdict::Accepted(body.as_bytes()),
                "{:.80}",
                body
            );
            assert_eq!(v.violation(), None);
        }
    }

    #[test]
    fn bad_json_says_which_rule_and_where() {
        let h = b"{\"format\":\"json\",\"version\":1}\n";
        let cases: &[(&[u8], Rule, usize)] = &[
            (b"{\"a\":1,}", Rule::UnexpectedCharacter, 7),
            (b"{\"a\":\"x", Rule::UnterminatedString, 5),
            (b"{\"a\":\"\\q\"}", Rule::InvalidEscape, 6),
            (b"{\"a\":\"\t\"}", Rule::ControlCharacterInString, 6),
            (b"{\"a\":\"\xff\"}", Rule::InvalidUtf8, 6),
            (b"{\"a\":01}", Rule::InvalidNumber, 6),
            (b"{\"a\":1} x", Rule::TrailingContent, 8),
            (b" [1]", Rule::NotAnObject, 1),
            (b"\"s\"", Rule::NotAnObject, 0),
            (b"{\"a\":", Rule::UnexpectedEnd, 5),
            (b"{\"a\":nul}", Rule::InvalidLiteral, 8),
        ];
        let mut v = Validator::new();
        for &(body, rule, offset) in cases {
            let d = [&h[..], body].concat();
            assert_eq!(
                v.check(&d, false),
                Verdict::Rejected(Rejection::BadJson),
                "{:?}",
                String::from_utf8_lossy(body)
            );
            assert_eq!(
                v.violation(),
                Some(Violation { rule, offset }),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        // 65,000 open brackets: rejected without exhausting any stack; other reasons carry no rule.
        let d = [&h[..], b"{\"a\":", "[".repeat(65_000).as_bytes()].concat();
        assert_eq!(v.check(&d, false), Verdict::Rejected(Rejection::BadJson));
        assert_eq!(v.violation().map(|x| x.rule), Some(Rule::UnexpectedEnd));
        assert_eq!(
            v.check(b"no newline", false),
            Verdict::Rejected(Rejection::MissingHeaderOrSegment)
        );
        assert_eq!(v.violation(), None);
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
