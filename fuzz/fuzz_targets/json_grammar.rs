//! Differential check of what ingest accepts against RFC 8259, for every input used as a segment
//! body behind the canonical header:
//! - the full `Validator` accepts the body (byte-exact, borrowed) if and only if the oracle in
//!   `rfc8259.rs` (recursive descent from the RFC's ABNF, `std::str::from_utf8` for UTF-8) says it
//!   is JSON text with an object at the top; whatever simd-json accepts or refuses;
//! - `ingest::grammar::check_object` alone agrees with the oracle too;
//! - a `BadJson` rejection carries a violation whose offset lies within the body, and the grammar
//!   check reports the same one when simd-json refused the body.
//!
//! Bodies nested deeper than the oracle's guard are compared only for "no panic".
#![no_main]

#[path = "rfc8259.rs"]
mod rfc8259;

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use xrayd::ingest::datagram::{MAX_DOCUMENT_BYTES, Rejection, Validator, Verdict};
use xrayd::ingest::grammar;

const HEADER: &[u8] = b"{\"format\":\"json\",\"version\":1}\n";

thread_local! {
    static VALIDATOR: RefCell<Validator> = RefCell::new(Validator::new());
}

fuzz_target!(|body: &[u8]| {
    if body.is_empty() || body.len() > MAX_DOCUMENT_BYTES {
        return;
    }
    let mut datagram = Vec::with_capacity(HEADER.len() + body.len());
    datagram.extend_from_slice(HEADER);
    datagram.extend_from_slice(body);

    let grammar = grammar::check_object(body);
    let oracle = rfc8259::is_object_text(body);
    VALIDATOR.with(|v| {
        let mut v = v.borrow_mut();
        let verdict = v.check(&datagram, false);
        let accepted = match verdict {
            Verdict::Accepted(got) => {
                assert!(
                    std::ptr::eq(got, &datagram[HEADER.len()..]),
                    "the accepted body is not the datagram's own bytes"
                );
                assert_eq!(v.violation(), None);
                true
            }
            Verdict::Rejected(Rejection::BadJson) => {
                let violation = v.violation().expect("BadJson without a violation");
                assert!(violation.offset <= body.len(), "{violation:?}");
                if let Err(g) = grammar {
                    assert_eq!(
                        g, violation,
                        "the validator and the grammar disagree on why"
                    );
                }
                false
            }
            other => panic!("{other:?} for a body of {} bytes", body.len()),
        };
        if let Some(valid) = oracle {
            assert_eq!(
                accepted,
                valid,
                "Validator {} but RFC 8259 says {}: {:?}",
                if accepted { "accepts" } else { "rejects" },
                if valid { "valid" } else { "invalid" },
                String::from_utf8_lossy(body)
            );
            assert_eq!(
                grammar.is_ok(),
                valid,
                "grammar {grammar:?} but RFC 8259 says {}: {:?}",
                if valid { "valid" } else { "invalid" },
                String::from_utf8_lossy(body)
            );
        }
        if accepted {
            assert_eq!(grammar, Ok(()), "accepted but the grammar says {grammar:?}");
        }
    });
});
