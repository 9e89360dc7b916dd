//! The command-line parser never panics on any argument vector (the input split on NUL bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use xrayd::config::flags::{FLAGS, parse};

fuzz_target!(|data: &[u8]| {
    let args: Vec<String> = if data.is_empty() {
        Vec::new()
    } else {
        data.split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    };
    if let Ok(parsed) = parse(args.clone()) {
        // Only known flags come out, and nothing is invented or lost after them.
        for key in parsed.values.keys() {
            assert!(FLAGS.iter().any(|f| f.long == *key), "unknown flag {key:?}");
        }
        assert!(parsed.rest.len() <= args.len());
        let at = args.len() - parsed.rest.len();
        assert_eq!(
            &args[at..],
            &parsed.rest[..],
            "rest is not the tail of the arguments"
        );
    }
});
