//! An oracle for "is this JSON text whose top-level value is an object?", written straight from
//! RFC 8259's ABNF as recursive descent, independently of xrayd's own checks (simd-json and
//! `ingest::grammar`, an iterative state machine). UTF-8 is left to `std::str::from_utf8`.
//!
//! ```text
//! JSON-text = ws value ws
//! value     = false / null / true / object / array / number / string
//! object    = begin-object [ member *( value-separator member ) ] end-object
//! member    = string name-separator value
//! array     = begin-array [ value *( value-separator value ) ] end-array
//! number    = [ minus ] int [ frac ] [ exp ]
//! int       = zero / ( digit1-9 *DIGIT );  frac = "." 1*DIGIT;  exp = e [ minus / plus ] 1*DIGIT
//! string    = quotation-mark *char quotation-mark
//! char      = unescaped / escape ( %x22 / %x5C / %x2F / %x62 / %x66 / %x6E / %x72 / %x74 / %x75 4HEXDIG )
//! unescaped = %x20-21 / %x23-5B / %x5D-10FFFF
//! ws        = *( %x20 / %x09 / %x0A / %x0D )
//! ```
//!
//! Recursion is guarded: past [`MAX_DEPTH`] nested values the answer is "unknown" (`None`).

/// Deeper than simd-json's 1,024 levels, so the hand-over between the two checks is compared.
pub const MAX_DEPTH: usize = 2000;

enum Stop {
    Invalid,
    TooDeep,
}

type Step = Result<(), Stop>;

struct Text<'a> {
    s: &'a [u8],
    at: usize,
}

/// `Some(true)` when `body` is JSON text with an object at the top, `Some(false)` when it is not,
/// `None` when it nests deeper than [`MAX_DEPTH`] before the answer is known.
pub fn is_object_text(body: &[u8]) -> Option<bool> {
    if std::str::from_utf8(body).is_err() {
        return Some(false);
    }
    let mut t = Text { s: body, at: 0 };
    t.ws();
    if t.peek() != Some(b'{') {
        return Some(false);
    }
    match t.value(0) {
        Err(Stop::TooDeep) => None,
        Err(Stop::Invalid) => Some(false),
        Ok(()) => {
            t.ws();
            Some(t.at == t.s.len())
        }
    }
}

impl Text<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, b: u8) -> Step {
        if self.eat(b) {
            Ok(())
        } else {
            Err(Stop::Invalid)
        }
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(0x20 | 0x09 | 0x0A | 0x0D)) {
            self.at += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Step {
        match self.peek() {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string(),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.word(b"true"),
            Some(b'f') => self.word(b"false"),
            Some(b'n') => self.word(b"null"),
            _ => Err(Stop::Invalid),
        }
    }

    fn object(&mut self, depth: usize) -> Step {
        if depth > MAX_DEPTH {
            return Err(Stop::TooDeep);
        }
        self.expect(b'{')?;
        self.ws();
        if self.eat(b'}') {
            return Ok(());
        }
        loop {
            self.ws();
            self.string()?;
            self.ws();
            self.expect(b':')?;
            self.ws();
            self.value(depth)?;
            self.ws();
            if self.eat(b'}') {
                return Ok(());
            }
            self.expect(b',')?;
        }
    }

    fn array(&mut self, depth: usize) -> Step {
        if depth > MAX_DEPTH {
            return Err(Stop::TooDeep);
        }
        self.expect(b'[')?;
        self.ws();
        if self.eat(b']') {
            return Ok(());
        }
        loop {
            self.ws();
            self.value(depth)?;
            self.ws();
            if self.eat(b']') {
                return Ok(());
            }
            self.expect(b',')?;
        }
    }

    fn string(&mut self) -> Step {
        self.expect(b'"')?;
        loop {
            match self.peek() {
                None => return Err(Stop::Invalid),
                Some(b'"') => {
                    self.at += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.at += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            self.at += 1
                        }
                        Some(b'u') => {
                            self.at += 1;
                            for _ in 0..4 {
                                if !self.peek().is_some_and(|h| h.is_ascii_hexdigit()) {
                                    return Err(Stop::Invalid);
                                }
                                self.at += 1;
                            }
                        }
                        _ => return Err(Stop::Invalid),
                    }
                }
                // The text is UTF-8 (checked up front): any byte from 0x20 up is part of a char.
                Some(c) if c >= 0x20 => self.at += 1,
                Some(_) => return Err(Stop::Invalid),
            }
        }
    }

    fn digits(&mut self) -> Step {
        let from = self.at;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.at += 1;
        }
        if self.at > from {
            Ok(())
        } else {
            Err(Stop::Invalid)
        }
    }

    fn number(&mut self) -> Step {
        self.eat(b'-');
        if !self.eat(b'0') {
            match self.peek() {
                Some(b'1'..=b'9') => self.digits()?,
                _ => return Err(Stop::Invalid),
            }
        }
        if self.eat(b'.') {
            self.digits()?;
        }
        if self.eat(b'e') || self.eat(b'E') {
            let _ = self.eat(b'+') || self.eat(b'-');
            self.digits()?;
        }
        Ok(())
    }

    fn word(&mut self, w: &[u8]) -> Step {
        if self.s[self.at..].starts_with(w) {
            self.at += w.len();
            Ok(())
        } else {
            Err(Stop::Invalid)
        }
    }
}
