//! The YAML config file parser (`config::file::parse`) never panics, whatever the text; errors
//! come back as `ConfigError`; a discovered file is never stricter than an explicit (`-c`) one; and
//! every value it accepts round-trips: written back as a one-key file (strings double-quoted with
//! every non-printable-ASCII character escaped) it parses to the same flag value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xrayd::config::file::{FileConfig, Origin, parse};

/// A YAML double-quoted scalar holding exactly `s`.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c if (c as u32) <= 0xFFFF => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push_str(&format!("\\U{:08X}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// A file setting only `yaml_key` (possibly `Section.Key`) to `value` (already YAML).
fn one_key_file(yaml_key: &str, value: &str) -> String {
    match yaml_key.split_once('.') {
        Some((section, key)) => format!("Version: 2\n{section}:\n  {key}: {value}\n"),
        None => format!("Version: 2\n{yaml_key}: {value}\n"),
    }
}

fn check_round_trip(cfg: &FileConfig) {
    for (yaml_key, long, value) in &cfg.values {
        let literal = match *long {
            "log-rotation" | "local-mode" | "no-verify-ssl" => {
                assert!(value == "true" || value == "false", "{long}={value:?}");
                value.clone()
            }
            "buffer-memory" | "concurrency" => {
                let n: u32 = value.parse().unwrap_or_else(|_| panic!("{long}={value:?}"));
                assert!(n > 0, "{long}=0 must mean 'not set'");
                value.clone()
            }
            _ => {
                assert!(
                    !value.trim().is_empty(),
                    "{long}: blank text must mean 'not set'"
                );
                quoted(value)
            }
        };
        let text = one_key_file(yaml_key, &literal);
        let again = parse("roundtrip.yaml", &text, Origin::Explicit)
            .unwrap_or_else(|e| panic!("re-parse of {text:?} failed: {e}"));
        assert_eq!(again.values.len(), 1, "{text:?} -> {again:?}");
        assert_eq!(
            again.get(long),
            Some((*yaml_key, value.as_str())),
            "round trip of {yaml_key}={value:?} via {text:?}"
        );
        assert_eq!(again.version, 2);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let explicit = parse("fuzz.yaml", text, Origin::Explicit);
    let discovered = parse("fuzz.yaml", text, Origin::Discovered);
    if let Err(e) = &explicit {
        assert!(!e.0.is_empty(), "an error says something");
    }
    if let Ok(cfg) = &explicit {
        assert!(cfg.version == 1 || cfg.version == 2, "{cfg:?}");
        assert!(
            cfg.warnings.iter().all(|w| !w.contains("unknown key")),
            "{cfg:?}"
        );
        let d = discovered
            .as_ref()
            .unwrap_or_else(|e| panic!("explicit ok but discovered failed: {e}"));
        assert_eq!(d.values, cfg.values);
        check_round_trip(cfg);
    }
    if let Ok(cfg) = &discovered {
        check_round_trip(cfg);
    }
});
