//! Datagram validation: properties, not only "no panic".
//!
//! For every input, checked twice (as sent, and as the body behind the canonical header):
//! - `Accepted(body)` ⇒ `body` is exactly the bytes after the first `\n`, at most 64 KiB, and
//!   JSON text with an object at the top (RFC 8259, the oracle in `rfc8259.rs`);
//! - behind the canonical header `{"format":"json","version":1}`, a non-empty body of at most
//!   64 KiB is accepted if and only if the oracle says it is an object, and whenever serde_json
//!   parses it as an object (serde_json is stricter than the RFC: it refuses escaped lone
//!   surrogates, numbers beyond f64 and nesting past 128 levels, all of which X-Ray SDKs can send);
//! - a truncated datagram is `Empty` (no bytes) or `Rejected(TooLarge)`;
//! - a fresh `Validator` and one reused across every input of the run give the same verdict
//!   (no state leaks between datagrams).
#![no_main]

#[path = "rfc8259.rs"]
mod rfc8259;

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use xrayd::ingest::datagram::{MAX_DOCUMENT_BYTES, Rejection, Validator, Verdict};

const HEADER: &[u8] = b"{\"format\":\"json\",\"version\":1}\n";

thread_local! {
    static REUSED: RefCell<Validator> = RefCell::new(Validator::new());
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
            assert_ne!(
                rfc8259::is_object_text(body),
                Some(false),
                "accepted, but it is not JSON text with an object at the top: {:?}",
                String::from_utf8_lossy(body)
            );
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

    // Agreement with RFC 8259 (and serde_json where it accepts) behind the canonical header.
    if let Some(body) = data.strip_prefix(HEADER)
        && !body.is_empty()
        && body.len() <= MAX_DOCUMENT_BYTES
    {
        let accepted = fresh == Verdict::Accepted(body);
        if !accepted {
            assert_eq!(fresh, Verdict::Rejected(Rejection::BadJson));
        }
        if let Some(valid) = rfc8259::is_object_text(body) {
            assert_eq!(
                accepted,
                valid,
                "RFC 8259 says {}: {:?}",
                if valid { "valid" } else { "invalid" },
                String::from_utf8_lossy(body)
            );
        }
        if serde_object(body) {
            assert!(
                accepted,
                "serde_json parses an object that was not accepted: {:?}",
                String::from_utf8_lossy(body)
            );
        }
    }
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
