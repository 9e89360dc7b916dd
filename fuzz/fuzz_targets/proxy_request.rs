//! HTTP request parsing of the TCP port: properties, not only "no panic".
//!
//! For every input (with small limits so that they are reached):
//! - a complete request consumes at most the input, its body is within the limit, and its path
//!   is the target up to `?`;
//! - every strict prefix of a complete request is "incomplete" (`Ok(None)`): a request is never
//!   taken before all its bytes arrived, whatever the read boundaries;
//! - parsing the consumed bytes alone gives the same request (the parser does not look past it);
//! - the two-step API (`parse_head` + `parse_body`) and `parse_request` agree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xrayd::proxy::http::{Limits, parse_body, parse_head, parse_request};

const LIMITS: Limits = Limits {
    max_head: 2048,
    max_headers: 16,
    max_body: 1024,
};

fuzz_target!(|data: &[u8]| {
    let whole = parse_request(data, &LIMITS);
    if let Ok(Some((req, n))) = &whole {
        let n = *n;
        assert!(n <= data.len());
        assert!(req.body.len() <= LIMITS.max_body);
        assert!(req.head.len <= n);
        assert_eq!(req.head.path(), req.head.target.split('?').next().unwrap());
        for k in [0, n / 3, n / 2, n.saturating_sub(1)] {
            if k < n {
                assert_eq!(
                    parse_request(&data[..k], &LIMITS),
                    Ok(None),
                    "prefix {k} of {n}"
                );
            }
        }
        assert_eq!(
            parse_request(&data[..n], &LIMITS),
            Ok(Some((req.clone(), n)))
        );
    }
    // Two steps agree with one.
    let stepped = match parse_head(data, &LIMITS) {
        Ok(Some(head)) => match parse_body(head.body, &data[head.len..], &LIMITS) {
            Ok(Some((body, m))) => Ok(Some((head.len + m, body))),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        },
        Ok(None) => Ok(None),
        Err(e) => Err(e),
    };
    let one = whole.map(|o| o.map(|(r, n)| (n, r.body)));
    assert_eq!(one, stepped);
});
