//! RFC 8259 grammar check of a segment document: is it JSON text whose top-level value is an
//! object? Nothing is decoded.
//!
//! simd-json decides first (see [`super::datagram`]); this module decides when simd-json refuses
//! a body, because simd-json also refuses some valid JSON that SDKs send: escapes of lone UTF-16
//! surrogates (`"\ud83d"`, what `JSON.stringify` makes of half an emoji), numbers beyond the f64
//! range (`1e400`) and nesting of 1,024 levels or more. Here any `\uXXXX` is an escape, a number is
//! only its syntax, and depth is bounded only by the input's length.
//!
//! The check is one pass over the bytes with a bit per open container (no recursion, so no input
//! can exhaust the stack): linear time, and for 64 KB at most 8 KB of container bits. On failure
//! it names the rule broken and the byte offset where it was found.

use std::fmt;

/// A rule of the JSON grammar that a document breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The document ends inside a value, or before one.
    UnexpectedEnd,
    /// A byte that cannot start or continue anything here.
    UnexpectedCharacter,
    /// Something after the top-level object.
    TrailingContent,
    /// The top-level value is not an object.
    NotAnObject,
    /// A string without its closing quote.
    UnterminatedString,
    /// A backslash not followed by `" \ / b f n r t` or `u` and four hex digits.
    InvalidEscape,
    /// A byte below 0x20 inside a string (it must be escaped).
    ControlCharacterInString,
    /// Bytes that are not UTF-8.
    InvalidUtf8,
    /// A number outside `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    InvalidNumber,
    /// Something that starts like `true`, `false` or `null` but is not.
    InvalidLiteral,
}

impl Rule {
    /// A short description (log lines).
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::UnexpectedEnd => "unexpected end",
            Rule::UnexpectedCharacter => "unexpected character",
            Rule::TrailingContent => "trailing content",
            Rule::NotAnObject => "not an object",
            Rule::UnterminatedString => "unterminated string",
            Rule::InvalidEscape => "invalid escape",
            Rule::ControlCharacterInString => "control character in string",
            Rule::InvalidUtf8 => "invalid UTF-8",
            Rule::InvalidNumber => "invalid number",
            Rule::InvalidLiteral => "invalid literal",
        }
    }
}

/// Where and why a document is not a JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation {
    pub rule: Rule,
    /// Byte offset in the document of the first byte that breaks the rule (its length when the
    /// document ends too early).
    pub offset: usize,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.rule.as_str(), self.offset)
    }
}

/// What the parser expects next.
#[derive(Clone, Copy)]
enum Expect {
    /// A value (after `:` or `,` in an array).
    Value,
    /// A value or `]` (just after `[`).
    ValueOrClose,
    /// A key or `}` (just after `{`).
    KeyOrClose,
    /// A key (after `,` in an object).
    Key,
    /// `:` after a key.
    Colon,
    /// `,` or the closing bracket of the innermost container, after a value.
    CommaOrClose,
}

/// Open containers, innermost last: one bit each (1 = object).
struct Containers {
    words: Vec<u64>,
    depth: usize,
}

impl Containers {
    fn push(&mut self, object: bool) {
        let (word, bit) = (self.depth / 64, self.depth % 64);
        if word == self.words.len() {
            self.words.push(0);
        }
        if object {
            self.words[word] |= 1 << bit;
        } else {
            self.words[word] &= !(1 << bit);
        }
        self.depth += 1;
    }

    /// Whether the innermost container is an object (`None`: no container is open).
    fn innermost_is_object(&self) -> Option<bool> {
        let top = self.depth.checked_sub(1)?;
        Some(self.words[top / 64] & (1 << (top % 64)) != 0)
    }
}

/// Checks that `doc` is JSON text (RFC 8259) whose top-level value is an object.
pub fn check_object(doc: &[u8]) -> Result<(), Violation> {
    let fail = |rule, offset| Err(Violation { rule, offset });
    let mut i = skip_whitespace(doc, 0);
    match doc.get(i) {
        Some(b'{') => {}
        None => return fail(Rule::UnexpectedEnd, i),
        Some(b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => {
            return fail(Rule::NotAnObject, i);
        }
        Some(_) => return fail(Rule::UnexpectedCharacter, i),
    }
    let mut open = Containers {
        words: Vec::new(),
        depth: 0,
    };
    open.push(true);
    i += 1;
    let mut expect = Expect::KeyOrClose;
    loop {
        i = skip_whitespace(doc, i);
        let Some(&b) = doc.get(i) else {
            return fail(Rule::UnexpectedEnd, i);
        };
        match expect {
            Expect::KeyOrClose | Expect::Key => match b {
                b'"' => {
                    i = string(doc, i)?;
                    expect = Expect::Colon;
                }
                b'}' if matches!(expect, Expect::KeyOrClose) => {
                    i = close(&mut open, i);
                    if open.depth == 0 {
                        break;
                    }
                    expect = Expect::CommaOrClose;
                }
                _ => return fail(Rule::UnexpectedCharacter, i),
            },
            Expect::Colon => {
                if b != b':' {
                    return fail(Rule::UnexpectedCharacter, i);
                }
                i += 1;
                expect = Expect::Value;
            }
            Expect::CommaOrClose => {
                let object = open.innermost_is_object() == Some(true);
                match b {
                    b',' => {
                        i += 1;
                        expect = if object { Expect::Key } else { Expect::Value };
                    }
                    b'}' if object => {
                        i = close(&mut open, i);
                        if open.depth == 0 {
                            break;
                        }
                    }
                    b']' if !object => i = close(&mut open, i),
                    _ => return fail(Rule::UnexpectedCharacter, i),
                }
            }
            Expect::Value | Expect::ValueOrClose => {
                let may_close = matches!(expect, Expect::ValueOrClose);
                expect = Expect::CommaOrClose;
                match b {
                    b'{' => {
                        open.push(true);
                        i += 1;
                        expect = Expect::KeyOrClose;
                    }
                    b'[' => {
                        open.push(false);
                        i += 1;
                        expect = Expect::ValueOrClose;
                    }
                    b']' if may_close => i = close(&mut open, i),
                    b'"' => i = string(doc, i)?,
                    b'-' | b'0'..=b'9' => i = number(doc, i)?,
                    b't' => i = literal(doc, i, b"true")?,
                    b'f' => i = literal(doc, i, b"false")?,
                    b'n' => i = literal(doc, i, b"null")?,
                    _ => return fail(Rule::UnexpectedCharacter, i),
                }
            }
        }
    }
    let end = skip_whitespace(doc, i);
    if end < doc.len() {
        return fail(Rule::TrailingContent, end);
    }
    Ok(())
}

/// Closes the innermost container at `i` (its closing bracket); returns the offset after it.
fn close(open: &mut Containers, i: usize) -> usize {
    open.depth -= 1;
    i + 1
}

fn skip_whitespace(doc: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = doc.get(i) {
        i += 1;
    }
    i
}

/// A string starting with the quote at `start`; returns the offset after its closing quote.
fn string(doc: &[u8], start: usize) -> Result<usize, Violation> {
    let fail = |rule, offset| Err(Violation { rule, offset });
    let mut i = start + 1;
    loop {
        let Some(&b) = doc.get(i) else {
            return fail(Rule::UnterminatedString, start);
        };
        match b {
            b'"' => return Ok(i + 1),
            b'\\' => match doc.get(i + 1) {
                None => return fail(Rule::UnterminatedString, start),
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                Some(b'u') => {
                    for k in i + 2..i + 6 {
                        match doc.get(k) {
                            Some(h) if h.is_ascii_hexdigit() => {}
                            None => return fail(Rule::UnterminatedString, start),
                            Some(_) => return fail(Rule::InvalidEscape, i),
                        }
                    }
                    i += 6;
                }
                Some(_) => return fail(Rule::InvalidEscape, i),
            },
            0x00..=0x1f => return fail(Rule::ControlCharacterInString, i),
            0x20..=0x7f => i += 1,
            _ => i += utf8_sequence(doc, i)?,
        }
    }
}

/// The length of the UTF-8 sequence of a non-ASCII scalar value starting at `i` (Unicode, table
/// 3-7: no overlong forms, no surrogates, nothing above U+10FFFF).
fn utf8_sequence(doc: &[u8], i: usize) -> Result<usize, Violation> {
    let invalid = Err(Violation {
        rule: Rule::InvalidUtf8,
        offset: i,
    });
    let (len, second) = match doc[i] {
        0xc2..=0xdf => (2, 0x80..=0xbf),
        0xe0 => (3, 0xa0..=0xbf),
        0xe1..=0xec | 0xee..=0xef => (3, 0x80..=0xbf),
        0xed => (3, 0x80..=0x9f),
        0xf0 => (4, 0x90..=0xbf),
        0xf1..=0xf3 => (4, 0x80..=0xbf),
        0xf4 => (4, 0x80..=0x8f),
        _ => return invalid,
    };
    if !doc.get(i + 1).is_some_and(|b| second.contains(b)) {
        return invalid;
    }
    for k in i + 2..i + len {
        if !doc.get(k).is_some_and(|b| (0x80..=0xbf).contains(b)) {
            return invalid;
        }
    }
    Ok(len)
}

/// A number starting at `start`; returns the offset after it.
fn number(doc: &[u8], start: usize) -> Result<usize, Violation> {
    let digit = |k: usize| doc.get(k).is_some_and(u8::is_ascii_digit);
    let digits = |mut k: usize| -> Result<usize, Violation> {
        if !digit(k) {
            return Err(Violation {
                rule: if k < doc.len() {
                    Rule::InvalidNumber
                } else {
                    Rule::UnexpectedEnd
                },
                offset: k,
            });
        }
        while digit(k) {
            k += 1;
        }
        Ok(k)
    };
    let mut i = start;
    if doc[i] == b'-' {
        i += 1;
    }
    if doc.get(i) == Some(&b'0') {
        i += 1;
        if digit(i) {
            return Err(Violation {
                rule: Rule::InvalidNumber,
                offset: i,
            });
        }
    } else {
        i = digits(i)?;
    }
    if doc.get(i) == Some(&b'.') {
        i = digits(i + 1)?;
    }
    if let Some(b'e' | b'E') = doc.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = doc.get(i) {
            i += 1;
        }
        i = digits(i)?;
    }
    Ok(i)
}

/// `word` (`true`, `false` or `null`) at `start`; returns the offset after it.
fn literal(doc: &[u8], start: usize, word: &[u8]) -> Result<usize, Violation> {
    for (k, expected) in word.iter().enumerate() {
        match doc.get(start + k) {
            Some(b) if b == expected => {}
            Some(_) => {
                return Err(Violation {
                    rule: Rule::InvalidLiteral,
                    offset: start + k,
                });
            }
            None => {
                return Err(Violation {
                    rule: Rule::UnexpectedEnd,
                    offset: start + k,
                });
            }
        }
    }
    Ok(start + word.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(doc: &[u8]) {
        assert_eq!(
            check_object(doc),
            Ok(()),
            "{:?}",
            String::from_utf8_lossy(doc)
        );
    }

    #[test]
    fn valid_documents_that_simd_json_refuses() {
        for doc in [
            r#"{"s":"\ud83d"}"#,
            r#"{"s":"\ud800"}"#,
            r#"{"s":"\udc00"}"#,
            r#"{"s":"\udc00\ud800"}"#,
            r#"{"s":"a\uD83Db","t":"\uDE80"}"#,
            r#"{"n":1e400}"#,
            r#"{"n":-1e400}"#,
            r#"{"n":1E+400}"#,
            r#"{"n":1e-400,"m":123456789012345678901234567890e999}"#,
        ] {
            accepts(doc.as_bytes());
        }
    }

    #[test]
    fn valid_json_of_every_kind() {
        for doc in [
            "{}",
            " \t\r\n{ } \t\r\n",
            r#"{"a":[],"b":{},"c":[1,-0,0.5,-1.25e-3,2E+2,3e0,10],"d":[true,false,null]}"#,
            r#"{"":"","\"\\\/\b\f\n\r\t":"\u0000\uFFFF\uabcd"}"#,
            "{\"é\":\"€𝄞\u{10ffff}\u{7f}\"}",
            r#"{"a" : [ { "b" : [ [ ] , { } ] } ] , "c":"d"}"#,
        ] {
            accepts(doc.as_bytes());
        }
    }

    #[test]
    fn nesting_is_bounded_only_by_the_input() {
        for (open, close) in [("[", "]"), ("{\"k\":", "}")] {
            let doc = format!("{{\"a\":{}1{}}}", open.repeat(5000), close.repeat(5000));
            accepts(doc.as_bytes());
        }
        // Close to 64 KB of nesting, and 65,000 unclosed brackets: no stack is exhausted.
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(32_000), "]".repeat(32_000));
        accepts(deep.as_bytes());
        let doc = format!("{{\"a\":{}", "[".repeat(65_000));
        assert_eq!(
            check_object(doc.as_bytes()),
            Err(Violation {
                rule: Rule::UnexpectedEnd,
                offset: doc.len()
            })
        );
        let mixed = format!("{{\"a\":{}", "[{\"k\":".repeat(8_000));
        assert_eq!(
            check_object(mixed.as_bytes()).map_err(|v| v.rule),
            Err(Rule::UnexpectedEnd)
        );
    }

    #[test]
    fn each_rule_with_its_offset() {
        use Rule::*;
        let cases: &[(&[u8], Rule, usize)] = &[
            (b"", UnexpectedEnd, 0),
            (b"   ", UnexpectedEnd, 3),
            (b"{", UnexpectedEnd, 1),
            (b"{\"a\":", UnexpectedEnd, 5),
            (b"{\"a\":[1,", UnexpectedEnd, 8),
            (b"{\"a\":1", UnexpectedEnd, 6),
            (b"{\"a\":tr", UnexpectedEnd, 7),
            (b"{\"a\":1.", UnexpectedEnd, 7),
            (b"{\"a\":\"x", UnterminatedString, 5),
            (b"{\"a\":\"x\\", UnterminatedString, 5),
            (b"{\"a\":\"\\u12", UnterminatedString, 5),
            (b"{\"a\":\"\\x\"}", InvalidEscape, 6),
            (b"{\"a\":\"\\u12G4\"}", InvalidEscape, 6),
            (b"{\"a\":\"\\U1234\"}", InvalidEscape, 6),
            (b"{\"a\":\"\\'\"}", InvalidEscape, 6),
            (b"{\"a\":\"x\ty\"}", ControlCharacterInString, 7),
            (b"{\"a\":\"\n\"}", ControlCharacterInString, 6),
            (b"{\"a\":\"\x00\"}", ControlCharacterInString, 6),
            (b"{\"a\":\"\x1f\"}", ControlCharacterInString, 6),
            (b"{\"a\":\"\xff\"}", InvalidUtf8, 6),
            (b"{\"a\":\"\xc0\xaf\"}", InvalidUtf8, 6),
            (b"{\"a\":\"\xe0\x80\xaf\"}", InvalidUtf8, 6),
            (b"{\"a\":\"\xed\xa0\x80\"}", InvalidUtf8, 6),
            (b"{\"a\":\"\xf4\x90\x80\x80\"}", InvalidUtf8, 6),
            (b"{\"a\":\"\xe2\x82\"}", InvalidUtf8, 6),
            (b"{\"a\":\"\xf0\x9f\x98", InvalidUtf8, 6),
            (b"{\"a\":\"\x80\"}", InvalidUtf8, 6),
            (b"{\"a\":01}", InvalidNumber, 6),
            (b"{\"a\":-01}", InvalidNumber, 7),
            (b"{\"a\":-}", InvalidNumber, 6),
            (b"{\"a\":1.}", InvalidNumber, 7),
            (b"{\"a\":.5}", UnexpectedCharacter, 5),
            (b"{\"a\":1e}", InvalidNumber, 7),
            (b"{\"a\":1e+}", InvalidNumber, 8),
            (b"{\"a\":+1}", UnexpectedCharacter, 5),
            (b"{\"a\":tru}", InvalidLiteral, 8),
            (b"{\"a\":nul1}", InvalidLiteral, 8),
            (b"{\"a\":True}", UnexpectedCharacter, 5),
            (b"{\"a\":1,}", UnexpectedCharacter, 7),
            (b"{\"a\":[1,]}", UnexpectedCharacter, 8),
            (b"{\"a\":[1 2]}", UnexpectedCharacter, 8),
            (b"{\"a\" 1}", UnexpectedCharacter, 5),
            (b"{'a':1}", UnexpectedCharacter, 1),
            (b"{a:1}", UnexpectedCharacter, 1),
            (b"{,}", UnexpectedCharacter, 1),
            (b"{\"a\":1]", UnexpectedCharacter, 6),
            (b"{\"a\":[1}", UnexpectedCharacter, 7),
            (b"{\"a\":1}}", TrailingContent, 7),
            (b"{} {}", TrailingContent, 3),
            (b"{}\x00", TrailingContent, 2),
            (b"{\"a\":1}\x0b", TrailingContent, 7),
            (b"\xef\xbb\xbf{}", UnexpectedCharacter, 0),
            (b"\x0c{}", UnexpectedCharacter, 0),
            (b"{\x0c}", UnexpectedCharacter, 1),
            (b"{\"a\":\xc3\xa9}", UnexpectedCharacter, 5),
            (b"[1,2]", NotAnObject, 0),
            (b" \"s\"", NotAnObject, 1),
            (b"42", NotAnObject, 0),
            (b"-1", NotAnObject, 0),
            (b"null", NotAnObject, 0),
            (b"true", NotAnObject, 0),
            (b"false", NotAnObject, 0),
        ];
        for &(doc, rule, offset) in cases {
            assert_eq!(
                check_object(doc),
                Err(Violation { rule, offset }),
                "{:?}",
                String::from_utf8_lossy(doc)
            );
        }
    }

    #[test]
    fn violations_read_as_rule_and_offset() {
        let v = check_object(b"{\"a\":\"\\x\"}").unwrap_err();
        assert_eq!(v.to_string(), "invalid escape at byte 6");
    }
}
