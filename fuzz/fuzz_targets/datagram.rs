//! Datagram validation: properties, not only "no panic".
//!
//! For every input, checked twice (as sent, and as the body behind the canonical header):
//! - `Accepted(body)` ⇒ `body` is exactly the bytes after the first `\n`, at most 64 KiB, and
//!   serde_json parses it as a JSON object;
//! - behind the canonical header `{"format":"json","version":1}`, a non-empty body of at most
//!   64 KiB is accepted if and only if serde_json parses it as an object (simd-json and serde_json
//!   agree), with the exceptions listed in [`serde_comparable`] and [`known_divergence`];
//! - a truncated datagram is `Empty` (no bytes) or `Rejected(TooLarge)`;
//! - a fresh `Validator` and one reused across every input of the run give the same verdict
//!   (no state leaks between datagrams).
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use xrayd::ingest::datagram::{MAX_DOCUMENT_BYTES, Rejection, Validator, Verdict};

const HEADER: &[u8] = b"{\"format\":\"json\",\"version\":1}\n";

/// serde_json's default recursion limit is 128 nested arrays/objects; simd-json's is higher. Bodies
/// nested deeper than this are left out of the agreement check (X-Ray SDKs never nest that deep).
const MAX_COMPARABLE_DEPTH: usize = 120;

thread_local! {
    static REUSED: RefCell<Validator> = RefCell::new(Validator::new());
    /// Whether the product rejects integers beyond 64 bits (probed once, see [`known_divergence`]).
    static REJECTS_BIG_INTEGERS: bool = matches!(
        Validator::new().check(b"{\"format\":\"json\",\"version\":1}\n{\"n\":18446744073709551616}", false),
        Verdict::Rejected(_)
    );
}

fuzz_target!(|data: &[u8]| {
    check_one(data);
    if data.len() <= MAX_DOCUMENT_BYTES {
        let mut framed = Vec::with_capacity(HEADER.len() + data.len());
        framed.extend_from_slice(HEADER);
        framed.extend_from_slice(data);
        check_one(&framed);
    }
});

fn check_one(data: &[u8]) {
    let fresh = Validator::new().check(data, false);
    let (truncated, reused) = REUSED.with(|v| {
        let mut v = v.borrow_mut();
        // Re-owned so the borrow of `v` can end; compared by value below.
        let truncated = owned(&v.check(data, true));
        (truncated, owned(&v.check(data, false)))
    });
    assert_eq!(
        owned(&fresh),
        reused,
        "fresh and reused validators disagree"
    );

    // Truncated datagrams are never accepted.
    match truncated {
        Ok(None) => assert!(data.is_empty(), "Empty verdict for non-empty input"),
        Err(r) => assert_eq!(r, Rejection::TooLarge, "truncated but {r:?}"),
        Ok(Some(_)) => panic!("truncated datagram accepted"),
    }

    let after_newline = data
        .iter()
        .position(|&b| b == b'\n')
        .map(|nl| &data[nl + 1..]);

    match &fresh {
        Verdict::Empty => assert!(data.is_empty(), "Empty verdict for non-empty input"),
        Verdict::Accepted(body) => {
            let body: &[u8] = body;
            let expected = after_newline.expect("accepted without a newline");
            assert_eq!(
                body, expected,
                "body is not the bytes after the first newline"
            );
            assert!(
                std::ptr::eq(body.as_ptr(), expected.as_ptr()),
                "body is not borrowed from the datagram"
            );
            assert!(!body.is_empty() && body.len() <= MAX_DOCUMENT_BYTES);
            if serde_comparable(body) {
                assert!(
                    serde_object(body),
                    "accepted, but serde_json does not parse it as an object: {:?}",
                    String::from_utf8_lossy(body)
                );
            }
        }
        Verdict::Rejected(reason) => {
            // No newline, or nothing after it, is exactly MissingHeaderOrSegment.
            let missing = after_newline.is_none_or(<[u8]>::is_empty);
            assert_eq!(
                *reason == Rejection::MissingHeaderOrSegment,
                missing,
                "{reason:?} for a datagram with{} a body",
                if missing { "out" } else { "" }
            );
        }
    }

    // Agreement with serde_json behind the canonical header.
    if let Some(body) = data.strip_prefix(HEADER)
        && !body.is_empty()
        && body.len() <= MAX_DOCUMENT_BYTES
        && serde_comparable(body)
    {
        if serde_object(body) {
            if !known_divergence(body, &fresh) {
                assert_eq!(
                    fresh,
                    Verdict::Accepted(body),
                    "serde_json parses an object that was not accepted: {:?}",
                    String::from_utf8_lossy(body)
                );
            }
        } else {
            assert_eq!(
                fresh,
                Verdict::Rejected(Rejection::BadJson),
                "serde_json rejects a body that simd-json accepted: {:?}",
                String::from_utf8_lossy(body)
            );
        }
    }
}

/// A known difference between simd-json and serde_json that is tolerated while it lasts.
///
/// simd-json (without its `big-int-as-float` feature) rejects integer literals outside the i64/u64
/// range with `InvalidNumber`; RFC 8259 allows them, serde_json accepts them (as floats), and the
/// Python SDK emits them verbatim for big ints in metadata (seed `sdk-bigint-metadata`). The tolerance switches itself off as soon as the
/// product accepts such integers, so a later regression is caught.
fn known_divergence(body: &[u8], verdict: &Verdict<'_>) -> bool {
    *verdict == Verdict::Rejected(Rejection::BadJson)
        && REJECTS_BIG_INTEGERS.with(|r| *r)
        && has_integer_beyond_64_bits(body)
}

/// Whether an integer literal outside strings does not fit i64 or u64.
fn has_integer_beyond_64_bits(body: &[u8]) -> bool {
    let (mut i, mut in_string, mut escaped) = (0, false, false);
    while i < body.len() {
        let b = body[i];
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        if b == b'"' {
            in_string = true;
            i += 1;
            continue;
        }
        if b == b'-' || b.is_ascii_digit() {
            let start = i;
            while i < body.len()
                && matches!(body[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
            {
                i += 1;
            }
            let token = std::str::from_utf8(&body[start..i]).unwrap_or("");
            let integer = !token.contains(['.', 'e', 'E']);
            if integer && token.parse::<i64>().is_err() && token.parse::<u64>().is_err() {
                return true;
            }
            continue;
        }
        i += 1;
    }
    false
}

fn owned(v: &Verdict<'_>) -> Result<Option<Vec<u8>>, Rejection> {
    match v {
        Verdict::Empty => Ok(None),
        Verdict::Accepted(b) => Ok(Some(b.to_vec())),
        Verdict::Rejected(r) => Err(*r),
    }
}

fn serde_object(body: &[u8]) -> bool {
    matches!(
        serde_json::from_slice::<serde_json::Value>(body),
        Ok(serde_json::Value::Object(_))
    )
}

/// Whether serde_json's verdict is a fair reference for `body`. Known, legitimate differences:
/// - nesting deeper than serde_json's recursion limit (see [`MAX_COMPARABLE_DEPTH`]).
fn serde_comparable(body: &[u8]) -> bool {
    nesting_depth(body) <= MAX_COMPARABLE_DEPTH
}

/// Maximum nesting of `[`/`{` outside strings (exact for valid JSON, an estimate otherwise).
fn nesting_depth(body: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}
