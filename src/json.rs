//! JSON text helpers: one string escaper, on bytes ([`escape_json_string`], fast enough for the
//! segment documents of every upload, see [`crate::xray::segments`]) and on text for logs,
//! telemetry, proxy answers, reports and printed configuration.

/// `s` as a JSON string literal, quotes included.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_json_string(&mut out, s);
    out
}

/// Appends `s` as a JSON string literal, quotes included.
pub fn push_json_string(out: &mut String, s: &str) {
    let mut bytes = Vec::with_capacity(s.len() + 2);
    bytes.push(b'"');
    escape_json_string(s.as_bytes(), &mut bytes);
    bytes.push(b'"');
    // Escapes are ASCII and every other byte is copied from valid UTF-8, so this never loses text.
    out.push_str(&String::from_utf8_lossy(&bytes));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_a_json_parser() {
        for s in [
            "",
            "plain",
            "q\"uo\\te",
            "line\nbreak\ttab\r",
            "\u{1}\u{1f}",
            "é € 𝄞",
        ] {
            let lit = json_string(s);
            let back: String = serde_json::from_str(&lit).unwrap();
            assert_eq!(back, s);
        }
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
}
