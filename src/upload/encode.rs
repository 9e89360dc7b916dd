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
///
/// Segment text is full of quotes, so escaping is frequent: output is assembled in a small stack
/// buffer and appended in large pieces; words of eight plain bytes are copied at once, others byte
/// by byte through a lookup table.
pub fn escape_json_string(raw: &[u8], out: &mut Vec<u8>) {
    const CHUNK: usize = 1024;
    out.reserve(raw.len() + raw.len() / 8 + 8);
    let mut buf = [0u8; CHUNK];
    let mut n = 0;
    let mut words = raw.chunks_exact(8);
    for chunk in words.by_ref() {
        if n + 8 * 6 > CHUNK {
            out.extend_from_slice(&buf[..n]);
            n = 0;
        }
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        if needs_escape(word) {
            for &b in chunk {
                n = put_escaped(&mut buf, n, b);
            }
        } else {
            buf[n..n + 8].copy_from_slice(chunk);
            n += 8;
        }
    }
    if n + 8 * 6 > CHUNK {
        out.extend_from_slice(&buf[..n]);
        n = 0;
    }
    for &b in words.remainder() {
        n = put_escaped(&mut buf, n, b);
    }
    out.extend_from_slice(&buf[..n]);
}

/// What follows the backslash for each byte: 0 = no escape, `u` = `\u00XX`.
static ESCAPES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = b'u';
        c += 1;
    }
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t[b'\n' as usize] = b'n';
    t[b'\r' as usize] = b'r';
    t[b'\t' as usize] = b't';
    t[0x08] = b'b';
    t[0x0c] = b'f';
    t
};

/// Writes `b`, escaped if needed, at `buf[n..]` (room for 6 bytes is guaranteed by the caller);
/// returns the new length.
#[inline(always)]
fn put_escaped(buf: &mut [u8], n: usize, b: u8) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match ESCAPES[b as usize] {
        0 => {
            buf[n] = b;
            n + 1
        }
        b'u' => {
            buf[n..n + 6].copy_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 15) as usize],
            ]);
            n + 6
        }
        e => {
            buf[n] = b'\\';
            buf[n + 1] = e;
            n + 2
        }
    }
}

/// True if any of the eight bytes is a control byte, `"` or `\` (SWAR: "has a byte less than n"
/// and "has a zero byte" on the word XOR-ed with the repeated character).
#[inline]
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    (below_space | has_zero(word ^ (ONES * b'"' as u64)) | has_zero(word ^ (ONES * b'\\' as u64)))
        != 0
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
    fn escaping_matches_a_json_encoder_for_every_byte_position() {
        // Every special byte at every offset within and across 8-byte words.
        let specials = [
            b'"', b'\\', b'\n', b'\r', b'\t', 0x08, 0x0c, 0x00, 0x01, 0x1f, b'a', 0x7f,
        ];
        for len in 0..20 {
            for pos in 0..len {
                for &sp in &specials {
                    let mut raw = vec![b'x'; len];
                    raw[pos] = sp;
                    let mut out = Vec::new();
                    escape_json_string(&raw, &mut out);
                    let want = serde_json::to_string(std::str::from_utf8(&raw).unwrap()).unwrap();
                    let decoded: String =
                        serde_json::from_slice(&[b"\"", &out[..], b"\""].concat()).unwrap();
                    assert_eq!(
                        decoded.as_bytes(),
                        &raw[..],
                        "len {len} pos {pos} byte {sp:#x}"
                    );
                    assert_eq!(
                        out.len() + 2,
                        want.len(),
                        "len {len} pos {pos} byte {sp:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn escaping_a_long_tail_after_a_full_buffer() {
        // Regression (found by the encode fuzz target): the stack buffer was not flushed before
        // the last partial word, so escapes there could run past its end.
        for len in 900..2100 {
            let mut raw = vec![b'a'; len];
            let tail = len - len % 8;
            for b in &mut raw[tail..] {
                *b = 0x01;
            }
            let mut out = Vec::new();
            escape_json_string(&raw, &mut out);
            let decoded: String =
                serde_json::from_slice(&[b"\"", &out[..], b"\""].concat()).unwrap();
            assert_eq!(decoded.as_bytes(), &raw[..], "len {len}");
        }
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
