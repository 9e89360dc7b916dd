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
/// Segment text has a quote every few bytes and almost never a control character, so the work is
/// organised around quotes: the input is read eight bytes at a time and each word is stored
/// whole; for each `"` or `\` in it (found by SWAR, exactly), a backslash is stored in front of it
/// and the rest of the word after it again, one place further on. Only a word holding a control
/// byte goes byte by byte through a table. Output is assembled in a stack buffer with room for
/// the worst case of a block and appended one block at a time.
pub fn escape_json_string(raw: &[u8], out: &mut Vec<u8>) {
    out.reserve(raw.len() + raw.len() / 4 + 16);
    let mut buf = [0u8; BUF];
    for block in raw.chunks(BLOCK) {
        let n = escape_block(block, &mut buf);
        out.extend_from_slice(&buf[..n]);
    }
}

/// Input bytes escaped per block: at most 6 output bytes each, plus the up to 23 bytes a word's
/// stores reach past its output, fit in [`BUF`].
const BLOCK: usize = 160;
const BUF: usize = 1024;
const _: () = assert!(6 * BLOCK + 24 <= BUF);

/// Escapes `raw` (at most [`BLOCK`] bytes) into `dst`; returns the output length. Bytes of `dst`
/// past it may hold leftovers of the speculative stores.
#[inline]
fn escape_block(raw: &[u8], dst: &mut [u8; BUF]) -> usize {
    let mut n = 0;
    let mut words = raw.chunks_exact(8);
    for chunk in words.by_ref() {
        let chunk: [u8; 8] = chunk.try_into().unwrap_or([0; 8]);
        let word = u64::from_le_bytes(chunk);
        dst[n..n + 8].copy_from_slice(&chunk);
        if control_bytes(word) != 0 {
            for b in chunk {
                n = put_escaped(dst, n, b);
            }
            continue;
        }
        // `at` moves one place further for each backslash inserted so far.
        let mut at = n;
        let mut quotes = quotes_and_backslashes(word);
        while quotes != 0 {
            let k = (quotes.trailing_zeros() / 8) as usize;
            dst[at + k] = b'\\';
            dst[at + k + 1..at + k + 9].copy_from_slice(&(word >> (8 * k)).to_le_bytes());
            at += 1;
            quotes &= quotes - 1;
        }
        n = at + 8;
    }
    for &b in words.remainder() {
        n = put_escaped(dst, n, b);
    }
    n
}

/// For each byte: the bytes to write (low two bytes, the second one only if the length says so)
/// and the length (bits 16..): 1 = as it is, 2 = backslash and a letter, 6 = `\u00XX`.
static ESCAPES: [u32; 256] = {
    const fn two(letter: u8) -> u32 {
        b'\\' as u32 | (letter as u32) << 8 | 2 << 16
    }
    let mut t = [0u32; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = if c < 0x20 {
            6 << 16
        } else {
            c as u32 | 1 << 16
        };
        c += 1;
    }
    t[b'"' as usize] = two(b'"');
    t[b'\\' as usize] = two(b'\\');
    t[b'\n' as usize] = two(b'n');
    t[b'\r' as usize] = two(b'r');
    t[b'\t' as usize] = two(b't');
    t[0x08] = two(b'b');
    t[0x0c] = two(b'f');
    t
};

/// Writes `b`, escaped if needed, at `dst[n..]` (the caller guarantees room for 6 bytes); returns
/// the new length.
#[inline(always)]
fn put_escaped(dst: &mut [u8; BUF], n: usize, b: u8) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let e = ESCAPES[b as usize];
    let len = (e >> 16) as usize;
    if len == 6 {
        dst[n..n + 6].copy_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[(b >> 4) as usize],
            HEX[(b & 15) as usize],
        ]);
    } else {
        dst[n..n + 2].copy_from_slice(&(e as u16).to_le_bytes());
    }
    n + len
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;
const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;

/// The high bit of each byte of `word` below 0x20, and no other bit. Exact (no carry crosses a
/// byte): the low seven bits plus 0x60 reach 0x80 exactly when they are 0x20 or more.
#[inline(always)]
fn control_bytes(word: u64) -> u64 {
    !(((word & LOW7) + ONES * 0x60) | word) & HIGH
}

/// The high bit of each byte of `word` that is `"` or `\`, and no other bit (exact zero-byte test
/// on the word XOR-ed with the repeated character).
#[inline(always)]
fn quotes_and_backslashes(word: u64) -> u64 {
    let zero = |v: u64| !(((v & LOW7) + LOW7) | v) & HIGH;
    zero(word ^ (ONES * b'"' as u64)) | zero(word ^ (ONES * b'\\' as u64))
}

/// The previous escaper, kept as the reference for tests: a different algorithm (a word without
/// anything to escape copied whole, other words byte by byte) that must give identical output.
#[cfg(test)]
mod reference {
    /// The escaper as it was before the quote-oriented one: the reference its output must match.
    ///
    /// Segment text is full of quotes, so escaping is frequent: output is assembled in a small stack
    /// buffer and appended in large pieces; words of eight plain bytes are copied at once, others byte
    /// by byte through a lookup table.
    pub(super) fn escape_json_string(raw: &[u8], out: &mut Vec<u8>) {
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
        (below_space
            | has_zero(word ^ (ONES * b'"' as u64))
            | has_zero(word ^ (ONES * b'\\' as u64)))
            != 0
    }
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

    /// The quote-oriented escaper against the reference on inputs that take every path: all byte
    /// values, UTF-8 text, long plain runs, runs of quotes, backslashes and control bytes, and
    /// pseudo-random mixtures of the bytes that matter (including those a carry-based SWAR test
    /// confuses: `#` after `"`, `]` after `\`, space after a control byte), each from several
    /// offsets and cut at several lengths, appended to existing output.
    #[test]
    fn output_matches_the_reference_escaper() {
        let mut inputs: Vec<Vec<u8>> = vec![
            (0..=255u8).collect(),
            (0..=255u8).rev().collect(),
            "é € 𝄞 \u{2028} 注文 \"q\" \\ café\u{1}"
                .repeat(40)
                .into_bytes(),
            vec![b'x'; 5000],
            vec![b'"'; 1000],
            vec![b'\\'; 999],
            vec![0x01; 777],
            b"{\"id\": \"8f53\", \"name\": \"a\\\"b\", \"n\": 1.5}\n\t".repeat(60),
        ];
        let alphabet = [
            b'"', b'\\', b'a', b' ', b':', 0x00, 0x1f, b'\n', 0x7f, 0x80, 0xc3, 0xa9, 0xff, b'#',
            b']', b'!',
        ];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for len in [1, 7, 8, 9, 15, 16, 17, 159, 160, 161, 319, 320, 1000, 4099] {
            for _ in 0..8 {
                let input = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        if x.is_multiple_of(3) {
                            (x >> 32) as u8
                        } else {
                            alphabet[(x >> 40) as usize % alphabet.len()]
                        }
                    })
                    .collect();
                inputs.push(input);
            }
        }
        let mut compared = 0;
        for input in &inputs {
            for start in 0..input.len().min(17) {
                let rest = &input[start..];
                for end in [rest.len(), rest.len() / 2, rest.len().min(23)] {
                    let raw = &rest[..end];
                    let mut want = b"prefix".to_vec();
                    reference::escape_json_string(raw, &mut want);
                    let mut got = b"prefix".to_vec();
                    escape_json_string(raw, &mut got);
                    assert_eq!(got, want, "input {raw:?}");
                    compared += 1;
                }
            }
        }
        assert!(compared > 3000, "{compared}");
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
