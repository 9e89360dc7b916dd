//! The PutTraceSegments body is valid JSON and carries every document back byte for byte.
//!
//! The input is split on 0xFF (a byte that never occurs in UTF-8) into documents; pieces that are
//! not valid UTF-8 are converted lossily, as the encoder's contract is valid UTF-8 input.
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use xrayd::json::escape_json_string;
use xrayd::xray::segments::put_trace_segments_body;

fuzz_target!(|data: &[u8]| {
    let docs: Vec<Cow<'_, str>> = data
        .split(|&b| b == 0xff)
        .map(String::from_utf8_lossy)
        .collect();

    let mut out = Vec::new();
    put_trace_segments_body(docs.iter().map(|d| d.as_bytes()), &mut out);
    let value: serde_json::Value = serde_json::from_slice(&out).unwrap_or_else(|e| {
        panic!(
            "body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&out)
        )
    });
    let list = value
        .get("TraceSegmentDocuments")
        .and_then(|l| l.as_array())
        .expect("TraceSegmentDocuments list");
    assert_eq!(list.len(), docs.len());
    for (got, want) in list.iter().zip(&docs) {
        assert_eq!(got.as_str(), Some(&**want), "document changed in transit");
    }
    // The body holds nothing but the documents: no raw control characters anywhere.
    assert!(!out.iter().any(|&b| b < 0x20), "raw control byte in body");

    // escape_json_string alone, as a JSON string literal.
    for doc in &docs {
        let mut lit = vec![b'"'];
        escape_json_string(doc.as_bytes(), &mut lit);
        lit.push(b'"');
        let back: String = serde_json::from_slice(&lit).expect("escaped string is a JSON string");
        assert_eq!(back, **doc);
    }
});
