//! The error type of a failed AWS answer, wherever the service puts it: the `x-amzn-ErrorType`
//! header, the JSON `__type` field, or the `<Code>` of an XML error (some compatible servers).

use simd_json::prelude::*;

/// Reads the AWS error type of a failed answer (`x-amzn-ErrorType` header, else `<Code>`, else
/// `__type`), without any namespace prefix or suffix.
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
    fn reads_error_types() {
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
