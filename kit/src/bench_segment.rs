//! Benchmark segments: a realistic document of a chosen size whose `id` carries the step and a
//! sequence number and whose `start_time` is the send time, patched in place per datagram (the
//! harness's load generator); and the fast scan [`FastXray`](crate::FastXray) uses to read them
//! back out of a `PutTraceSegments` body.

/// The datagram header every X-Ray SDK sends.
pub const HEADER: &[u8] = b"{\"format\":\"json\",\"version\":1}\n";

/// Bits of a segment id that hold the sequence number; the bits above hold the step.
pub const SEQ_BITS: u32 = 48;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;

/// Width of a patched timestamp: `SSSSSSSSSS.UUUUUU`.
pub const TIME_WIDTH: usize = 17;

const ID_MARK: &[u8] = b"IIIIIIIIIIIIIIII";
const TIME_MARK: &[u8] = b"1000000000.000000";

/// Segment id of datagram `seq` of step `step`.
pub fn make_id(step: u16, seq: u64) -> u64 {
    (u64::from(step) << SEQ_BITS) | (seq & SEQ_MASK)
}

/// Step and sequence number of a segment id.
pub fn split_id(id: u64) -> (u16, u64) {
    ((id >> SEQ_BITS) as u16, id & SEQ_MASK)
}

/// A datagram template with the byte offsets to patch.
#[derive(Debug, Clone)]
pub struct Template {
    /// The whole datagram (header, newline, document), exactly `size` bytes.
    pub bytes: Vec<u8>,
    id_at: Vec<usize>,
    time_at: Vec<usize>,
}

impl Template {
    /// A datagram of exactly `size` bytes, or an error naming the smallest possible size.
    pub fn new(size: usize) -> Result<Template, String> {
        let id = std::str::from_utf8(ID_MARK).unwrap_or_default();
        let t = std::str::from_utf8(TIME_MARK).unwrap_or_default();
        let core = format!(
            "{{\"name\":\"checkout-service\",\"id\":\"{id}\",\"trace_id\":\"1-5f84c7a1-00000000{id}\",\"start_time\":{t},\"end_time\":{t}"
        );
        let tail = format!(
            ",\"annotations\":{{\"bench_seq\":\"{id}\"}},\"metadata\":{{\"default\":{{\"query\":\""
        );
        const END: &str = "\"}}}";
        // What a real SDK adds, kept while it fits the requested size.
        const EXTRAS: [&str; 3] = [
            ",\"http\":{\"request\":{\"method\":\"GET\",\"url\":\"https://shop.example.com/api/v1/cart/items?page=2\",\"client_ip\":\"10.0.12.34\",\"user_agent\":\"Mozilla/5.0 (X11; Linux x86_64)\"},\"response\":{\"status\":200,\"content_length\":1432}}",
            ",\"aws\":{\"xray\":{\"sdk\":\"X-Ray for Go\",\"sdk_version\":\"1.8.4\"},\"ec2\":{\"instance_id\":\"i-0abcd1234ef567890\",\"availability_zone\":\"us-east-1a\"}}",
            ",\"origin\":\"AWS::EC2::Instance\"",
        ];
        let min = HEADER.len() + core.len() + tail.len() + END.len();
        if size < min {
            return Err(format!("--size must be at least {min} bytes"));
        }
        let mut doc = core;
        let mut room = size - min;
        for extra in EXTRAS {
            if extra.len() <= room {
                doc.push_str(extra);
                room -= extra.len();
            }
        }
        doc.push_str(&tail);
        const FILLER: &str =
            "SELECT id, sku, qty, price FROM cart_items WHERE cart_id = ? ORDER BY added_at DESC; ";
        doc.extend(FILLER.chars().cycle().take(room));
        doc.push_str(END);
        let mut bytes = HEADER.to_vec();
        bytes.extend_from_slice(doc.as_bytes());
        debug_assert_eq!(bytes.len(), size);
        let id_at = find_all(&bytes, ID_MARK);
        let time_at = find_all(&bytes, TIME_MARK);
        Ok(Template {
            bytes,
            id_at,
            time_at,
        })
    }

    /// Datagram size.
    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    /// Writes `id` and the timestamp `time` (from [`format_epoch_us`]) into `datagram`, a copy of
    /// the template.
    pub fn patch(&self, datagram: &mut [u8], id: u64, time: &[u8; TIME_WIDTH]) {
        let mut hex = [0u8; 16];
        hex16(id, &mut hex);
        for &at in &self.id_at {
            datagram[at..at + 16].copy_from_slice(&hex);
        }
        for &at in &self.time_at {
            datagram[at..at + TIME_WIDTH].copy_from_slice(time);
        }
    }
}

fn find_all(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = find_sub(&hay[from..], needle) {
        out.push(from + i);
        from += i + needle.len();
    }
    out
}

/// Lower-case 16-digit hex of `v`.
pub fn hex16(v: u64, out: &mut [u8; 16]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, o) in out.iter_mut().enumerate() {
        *o = HEX[((v >> (60 - 4 * i)) & 15) as usize];
    }
}

/// Parses exactly 16 hex digits (either case).
pub fn parse_hex16(s: &[u8]) -> Option<u64> {
    if s.len() != 16 {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &c| {
        let d = (c as char).to_digit(16)?;
        Some(acc << 4 | u64::from(d))
    })
}

/// `SSSSSSSSSS.UUUUUU` for microseconds since the Unix epoch (fixed width until 2286).
pub fn format_epoch_us(us: u64) -> [u8; TIME_WIDTH] {
    let mut out = [b'0'; TIME_WIDTH];
    let (mut secs, mut frac) = (us / 1_000_000, us % 1_000_000);
    for i in (0..10).rev() {
        out[i] = b'0' + (secs % 10) as u8;
        secs /= 10;
    }
    out[10] = b'.';
    for i in (11..TIME_WIDTH).rev() {
        out[i] = b'0' + (frac % 10) as u8;
        frac /= 10;
    }
    out
}

/// Parses a JSON number of seconds since the epoch (`digits[.digits]`) at the start of `s` into
/// microseconds (decimals beyond the sixth are ignored).
pub fn parse_epoch_us(s: &[u8]) -> Option<u64> {
    let int_len = s.iter().take_while(|c| c.is_ascii_digit()).count();
    if int_len == 0 || int_len > 12 {
        return None;
    }
    let secs = s[..int_len]
        .iter()
        .fold(0u64, |a, &c| a * 10 + u64::from(c - b'0'));
    let mut us = 0u64;
    if s.get(int_len) == Some(&b'.') {
        let frac = &s[int_len + 1..];
        let digits = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        for i in 0..6 {
            us = us * 10
                + frac
                    .get(i)
                    .filter(|_| i < digits)
                    .map_or(0, |&c| u64::from(c - b'0'));
        }
    }
    Some(secs * 1_000_000 + us)
}

/// Position of the first `b` in `hay`, eight bytes at a time.
pub fn find_byte(hay: &[u8], b: u8) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let pattern = LO * u64::from(b);
    let mut i = 0;
    while i + 8 <= hay.len() {
        let mut w = [0u8; 8];
        w.copy_from_slice(&hay[i..i + 8]);
        let v = u64::from_le_bytes(w) ^ pattern;
        let t = v.wrapping_sub(LO) & !v & HI;
        if t != 0 {
            return Some(i + (t.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    hay[i..].iter().position(|&c| c == b).map(|p| i + p)
}

/// Position of the first `needle` in `hay`.
pub fn find_sub(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut from = 0;
    while from + needle.len() <= hay.len() {
        let i = from + find_byte(&hay[from..hay.len() - rest.len()], first)?;
        if hay[i + 1..i + needle.len()] == *rest {
            return Some(i);
        }
        from = i + 1;
    }
    None
}

/// Calls `f` with the raw (still escaped) text of each string in the `TraceSegmentDocuments` list
/// of a request body. Returns how many there were, or an error for a body of another shape.
pub fn for_each_document(body: &[u8], mut f: impl FnMut(&[u8])) -> Result<usize, &'static str> {
    const KEY: &[u8] = b"\"TraceSegmentDocuments\"";
    let at = find_sub(body, KEY).ok_or("no TraceSegmentDocuments")?;
    let mut i = skip_ws(body, at + KEY.len());
    if body.get(i) != Some(&b':') {
        return Err("expected ':'");
    }
    i = skip_ws(body, i + 1);
    if body.get(i) != Some(&b'[') {
        return Err("expected '['");
    }
    i = skip_ws(body, i + 1);
    let mut n = 0;
    if body.get(i) == Some(&b']') {
        return Ok(0);
    }
    loop {
        if body.get(i) != Some(&b'"') {
            return Err("expected a string");
        }
        let start = i + 1;
        let mut j = start;
        let end = loop {
            let q = j + find_byte(&body[j..], b'"').ok_or("unterminated string")?;
            let backslashes = body[start..q]
                .iter()
                .rev()
                .take_while(|&&c| c == b'\\')
                .count();
            if backslashes % 2 == 0 {
                break q;
            }
            j = q + 1;
        };
        f(&body[start..end]);
        n += 1;
        i = skip_ws(body, end + 1);
        match body.get(i) {
            Some(b',') => i = skip_ws(body, i + 1),
            Some(b']') => return Ok(n),
            _ => return Err("expected ',' or ']'"),
        }
    }
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while s.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

/// The segment id and start time (µs since the epoch) of a document as it appears escaped inside
/// a JSON string. Looks at the first `"id"` and `"start_time"` keys, which the benchmark template
/// puts at the top level before anything nested.
pub fn document_fields(escaped: &[u8]) -> Option<(u64, Option<u64>)> {
    const ID: &[u8] = br#"\"id\":\""#;
    const START: &[u8] = br#"\"start_time\":"#;
    let at = find_sub(escaped, ID)? + ID.len();
    let id = parse_hex16(escaped.get(at..at + 16)?)?;
    let start = find_sub(escaped, START).and_then(|s| parse_epoch_us(&escaped[s + START.len()..]));
    Some((id, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_has_the_exact_size_and_patches_in_place() {
        let t = Template::new(1000).unwrap();
        assert_eq!(t.size(), 1000);
        let mut d = t.bytes.clone();
        let id = make_id(3, 0x1234);
        t.patch(&mut d, id, &format_epoch_us(1_700_000_000_123_456));
        assert_eq!(d.len(), 1000);
        let text = std::str::from_utf8(&d).unwrap();
        let (header, doc) = text.split_once('\n').unwrap();
        assert_eq!(header, r#"{"format":"json","version":1}"#);
        let v: serde_json::Value = serde_json::from_str(doc).unwrap();
        assert_eq!(v["id"], "0003000000001234");
        assert_eq!(v["trace_id"], "1-5f84c7a1-000000000003000000001234");
        assert_eq!(v["annotations"]["bench_seq"], "0003000000001234");
        assert_eq!(v["http"]["response"]["status"], 200);
        assert_eq!(v["aws"]["xray"]["sdk"], "X-Ray for Go");
        assert_eq!(v["start_time"].as_f64().unwrap(), 1_700_000_000.123456);
        assert!(Template::new(100).unwrap_err().contains("at least"));
        let min: usize = Template::new(100)
            .unwrap_err()
            .split_whitespace()
            .find_map(|w| w.parse().ok())
            .unwrap();
        assert_eq!(Template::new(min).unwrap().size(), min);
        assert_eq!(Template::new(8000).unwrap().size(), 8000);
    }

    #[test]
    fn ids_carry_step_and_sequence() {
        assert_eq!(split_id(make_id(7, 99)), (7, 99));
        let mut h = [0u8; 16];
        hex16(0x00ab_cdef_0123_4567, &mut h);
        assert_eq!(&h, b"00abcdef01234567");
        assert_eq!(parse_hex16(&h), Some(0x00ab_cdef_0123_4567));
        assert_eq!(
            parse_hex16(b"00ABCDEF01234567"),
            Some(0x00ab_cdef_0123_4567)
        );
        assert_eq!(parse_hex16(b"00abcdef0123456"), None);
        assert_eq!(parse_hex16(b"00abcdef0123456g"), None);
    }

    #[test]
    fn timestamps_round_trip() {
        let t = format_epoch_us(1_700_000_000_000_042);
        assert_eq!(&t, b"1700000000.000042");
        assert_eq!(parse_epoch_us(&t), Some(1_700_000_000_000_042));
        assert_eq!(parse_epoch_us(b"12.5,"), Some(12_500_000));
        assert_eq!(parse_epoch_us(b"12.123456789"), Some(12_123_456));
        assert_eq!(parse_epoch_us(b"12,"), Some(12_000_000));
        assert_eq!(parse_epoch_us(b"x"), None);
    }

    #[test]
    fn find_byte_and_find_sub_agree_with_naive_search() {
        let hay: Vec<u8> = (0..200u32).map(|i| (i * 7 % 13) as u8 + b'a').collect();
        for b in b'a'..=b'n' {
            for start in 0..20 {
                assert_eq!(
                    find_byte(&hay[start..], b),
                    hay[start..].iter().position(|&c| c == b)
                );
            }
        }
        assert_eq!(find_byte(b"", b'x'), None);
        assert_eq!(find_byte(b"\x80\x81\"", b'"'), Some(2));
        assert_eq!(find_sub(b"abcabd", b"abd"), Some(3));
        assert_eq!(find_sub(b"ab", b"abd"), None);
        assert_eq!(find_sub(b"xyz", b""), None);
    }

    #[test]
    fn reads_documents_and_fields_from_a_request_body() {
        let t = Template::new(700).unwrap();
        let mut docs = Vec::new();
        for seq in 0..3 {
            let mut d = t.bytes.clone();
            t.patch(&mut d, make_id(1, seq), &format_epoch_us(1_000_000 + seq));
            docs.push(d[HEADER.len()..].to_vec());
        }
        let strings: Vec<String> = docs
            .iter()
            .map(|d| String::from_utf8(d.clone()).unwrap())
            .collect();
        let body =
            serde_json::to_vec(&serde_json::json!({ "TraceSegmentDocuments": strings })).unwrap();
        let mut got = Vec::new();
        let n = for_each_document(&body, |d| got.push(document_fields(d))).unwrap();
        assert_eq!(n, 3);
        for (seq, g) in got.iter().enumerate() {
            assert_eq!(
                *g,
                Some((make_id(1, seq as u64), Some(1_000_000 + seq as u64)))
            );
        }
        let tricky =
            br#"{"TraceSegmentDocuments" : [ "a\\", "b\"c" ,"{\"id\":\"000000000000000f\"}"]}"#;
        let mut raw = Vec::new();
        assert_eq!(
            for_each_document(tricky, |d| raw.push(d.to_vec())).unwrap(),
            3
        );
        assert_eq!(raw[0], br"a\\");
        assert_eq!(raw[1], br#"b\"c"#);
        assert_eq!(document_fields(&raw[2]), Some((15, None)));
        assert_eq!(document_fields(b"nothing"), None);
        assert_eq!(
            for_each_document(br#"{"TraceSegmentDocuments":[]}"#, |_| {}),
            Ok(0)
        );
        assert!(for_each_document(b"{}", |_| {}).is_err());
        assert!(for_each_document(br#"{"TraceSegmentDocuments":["a"#, |_| {}).is_err());
    }
}
