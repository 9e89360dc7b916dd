//! The PutTraceSegments wire format: request bodies out, answers in.
//!
//! Each document travels as a JSON string holding the segment's exact text, so the body is built by
//! escaping bytes straight into one buffer: no parse, no re-encoding, no intermediate copies.

use simd_json::prelude::*;

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

/// Escapes `raw` (valid UTF-8) as the inside of a JSON string.
pub fn escape_json_string(raw: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(raw.len() + raw.len() / 8 + 8);
    let mut start = 0;
    for (i, &b) in raw.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&raw[start..i]);
        if esc.is_empty() {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 15) as usize],
            ]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&raw[start..]);
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

/// Reads the AWS error type of a failed answer (`x-amzn-ErrorType` header, else `__type`), without
/// any namespace prefix or suffix.
pub fn error_type(header: Option<&str>, body: &[u8]) -> Option<String> {
    let clean = |s: &str| {
        let s = s.split(':').next().unwrap_or(s);
        s.rsplit('#').next().unwrap_or(s).to_string()
    };
    if let Some(h) = header.filter(|h| !h.is_empty()) {
        return Some(clean(h));
    }
    if let Some(code) = xml_code(body) {
        return Some(clean(code));
    }
    let mut copy = body.to_vec();
    let v = simd_json::to_borrowed_value(&mut copy).ok()?;
    v.get("__type").and_then(|t| t.as_str()).map(clean)
}

/// The `<Code>` of an XML error answer (some X-Ray-compatible servers answer errors in XML).
fn xml_code(body: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(body).ok()?;
    if !text.trim_start().starts_with('<') {
        return None;
    }
    let start = text.find("<Code>")? + "<Code>".len();
    let len = text[start..].find("</Code>")?;
    Some(text[start..start + len].trim()).filter(|c| !c.is_empty() && c.len() < 128)
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
    fn reads_ids_and_error_types() {
        assert_eq!(
            segment_ids(br#"{"trace_id":"1-5f-abc","id":"70de5b6f19ff9a0a","name":"x"}"#),
            ("1-5f-abc".into(), "70de5b6f19ff9a0a".into())
        );
        assert_eq!(segment_ids(b"not json"), (String::new(), String::new()));
        assert_eq!(
            error_type(Some("ThrottledException:http://x/"), b""),
            Some("ThrottledException".into())
        );
        assert_eq!(
            error_type(None, br#"{"__type":"com.amazon#InvalidRequestException"}"#),
            Some("InvalidRequestException".into())
        );
        assert_eq!(error_type(None, b"oops"), None);
        assert_eq!(
            error_type(
                None,
                b"<ErrorResponse><Error><Code>SignatureDoesNotMatch</Code></Error></ErrorResponse>"
            ),
            Some("SignatureDoesNotMatch".into())
        );
        assert_eq!(error_type(None, b"<x><Code></Code></x>"), None);
    }
}
