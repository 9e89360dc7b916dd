//! JSON text helpers: one string escaper for logs, telemetry, proxy answers, reports and printed
//! configuration (segment documents use the same escaper on bytes, in [`crate::upload::encode`]).

use crate::upload::encode::escape_json_string;

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
}
