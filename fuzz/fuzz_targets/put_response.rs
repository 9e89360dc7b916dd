//! Reading X-Ray's answers never panics, whatever the bytes.
//!
//! The input is a response body for `parse_put_response` and `error_type(None, ..)`; if it holds a
//! NUL byte, what precedes it is also tried as an `x-amzn-ErrorType` header for the rest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xrayd::aws::error_type::error_type;
use xrayd::xray::segments::{parse_put_response, segment_ids};

fuzz_target!(|data: &[u8]| {
    if let Ok(list) = parse_put_response(data) {
        // Only an object (or nothing) is a valid answer.
        let trimmed = data.trim_ascii();
        assert!(trimmed.is_empty() || trimmed.starts_with(b"{"), "{list:?}");
    }
    let _ = error_type(None, data);
    let _ = segment_ids(data);
    if let Some(nul) = data.iter().position(|&b| b == 0) {
        let header = String::from_utf8_lossy(&data[..nul]);
        let body = &data[nul + 1..];
        let got = error_type(Some(&header), body);
        if !header.is_empty() {
            let t = got.expect("a non-empty header always gives a type");
            assert!(
                !t.contains(':') && !t.contains('#'),
                "{t:?} from {header:?}"
            );
        }
    }
});
