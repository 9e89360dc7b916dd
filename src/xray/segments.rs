//! The PutTraceSegments wire format: request bodies out, answers (`UnprocessedTraceSegments`) in.
//!
//! Each document travels as a JSON string holding the segment's exact text, so the body is built by
//! escaping bytes straight into one buffer: no parse, no re-encoding, no intermediate copies.

use simd_json::prelude::*;

use crate::json::escape_json_string;

/// Appends `{"TraceSegmentDocuments":["…","…"]}` for `docs` to `out`.
pub fn put_trace_segments_body<'a>(docs: impl IntoIterator<Item = &'a [u8]>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"TraceSegmentDocuments\":[");
    for (i, doc) in docs.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        escape_json_string(doc, out);
        out.push(b'"');
    }
    out.extend_from_slice(b"]}");
}

/// One entry of `UnprocessedTraceSegments`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Unprocessed {
    pub id: String,
    pub error_code: String,
    pub message: String,
}

/// Reads the `UnprocessedTraceSegments` of a 2xx answer. An empty body means none; an answer that
/// is not the expected JSON is an error (the caller counts it, the batch was accepted).
pub fn parse_put_response(body: &[u8]) -> Result<Vec<Unprocessed>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let mut copy = body.to_vec();
    let value = simd_json::to_borrowed_value(&mut copy)
        .map_err(|e| format!("response is not JSON: {e}"))?;
    if value.as_object().is_none() {
        return Err("response is not a JSON object".into());
    }
    let Some(list) = value.get("UnprocessedTraceSegments") else {
        return Ok(Vec::new());
    };
    if list.is_null() {
        return Ok(Vec::new());
    }
    let list = list
        .as_array()
        .ok_or("UnprocessedTraceSegments is not a list")?;
    Ok(list
        .iter()
        .map(|u| {
            let field = |k: &str| u.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
            Unprocessed {
                id: field("Id"),
                error_code: field("ErrorCode"),
                message: field("Message"),
            }
        })
        .collect())
}

/// The `trace_id` and `id` of a segment document, read only when they are needed for a log line.
pub fn segment_ids(doc: &[u8]) -> (String, String) {
    let mut copy = doc.to_vec();
    let Ok(v) = simd_json::to_borrowed_value(&mut copy) else {
        return (String::new(), String::new());
    };
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    (field("trace_id"), field("id"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_round_trips_exact_documents() {
        let docs: Vec<&[u8]> = vec![
            br#"{"name":"a","id":"1"}"#,
            b"{\"s\":\"q\\\"uo\\\\te\\n\",\n\t\"u\":\"\xc3\xa9\xe2\x82\xac\"}",
            b"{\"ctl\":\"\x01\x1f\x7f\"}",
        ];
        let mut out = Vec::new();
        put_trace_segments_body(docs.iter().copied(), &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        let list = v["TraceSegmentDocuments"].as_array().unwrap();
        assert_eq!(list.len(), 3);
        for (got, want) in list.iter().zip(&docs) {
            assert_eq!(got.as_str().unwrap().as_bytes(), *want);
        }
        let mut empty = Vec::new();
        put_trace_segments_body(std::iter::empty(), &mut empty);
        assert_eq!(empty, b"{\"TraceSegmentDocuments\":[]}");
    }

    #[test]
    fn reads_unprocessed_segments() {
        let body = br#"{"UnprocessedTraceSegments":[{"Id":"abc","ErrorCode":"InvalidSegment","Message":"bad"},{"Id":"def"}]}"#;
        let u = parse_put_response(body).unwrap();
        assert_eq!(u.len(), 2);
        assert_eq!(
            u[0],
            Unprocessed {
                id: "abc".into(),
                error_code: "InvalidSegment".into(),
                message: "bad".into()
            }
        );
        assert_eq!(u[1].id, "def");
        assert!(parse_put_response(b"").unwrap().is_empty());
        assert!(parse_put_response(b"{}").unwrap().is_empty());
        assert!(
            parse_put_response(br#"{"UnprocessedTraceSegments":[]}"#)
                .unwrap()
                .is_empty()
        );
        assert!(
            parse_put_response(br#"{"UnprocessedTraceSegments":null}"#)
                .unwrap()
                .is_empty()
        );
        assert!(parse_put_response(b"<html>").is_err());
        assert!(parse_put_response(b"[1]").is_err());
        assert!(parse_put_response(br#"{"UnprocessedTraceSegments":5}"#).is_err());
    }

    #[test]
    fn reads_ids() {
        assert_eq!(
            segment_ids(br#"{"trace_id":"1-5f-abc","id":"70de5b6f19ff9a0a","name":"x"}"#),
            ("1-5f-abc".into(), "70de5b6f19ff9a0a".into())
        );
        assert_eq!(segment_ids(b"not json"), (String::new(), String::new()));
    }
}
