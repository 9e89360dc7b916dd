//! The one duration syntax of the command line, the config file and the benchmark harness:
//! a number with an optional unit, `us` (or `µs`), `ms`, `s` or `m`; a bare number is seconds.

use std::time::Duration;

/// Longest duration accepted (about 31 years): far beyond any timeout, and small enough that
/// adding it to an `Instant` cannot overflow.
const MAX_SECS: f64 = 1e9;

/// Parses `10s`, `500ms`, `1.5s`, `2m`, `100us`, or a plain number of seconds (`2`, `0.5`).
///
/// Errors say what was wrong and what is accepted, e.g. `"5h": unknown unit "h" (use us, ms, s
/// or m)`. Negative, infinite and NaN values are refused, and so is anything from 10^9 seconds on.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(char::is_alphabetic).unwrap_or(s.len()));
    let n: f64 = num.parse().map_err(|_| {
        format!(
            "{s:?} is not a duration: expected a number with an optional unit, e.g. 10s or 500ms"
        )
    })?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "m" => n * 60.0,
        _ => {
            return Err(format!(
                "{s:?} is not a duration: unknown unit {unit:?} (use us, ms, s or m)"
            ));
        }
    };
    if secs.is_nan() || secs < 0.0 {
        return Err(format!("{s:?} is not a duration: it must not be negative"));
    }
    if secs >= MAX_SECS {
        return Err(format!(
            "{s:?} is too long a duration (at most 10^9 seconds)"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_bare_seconds() {
        let ok = |s: &str| parse_duration(s).unwrap();
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("2"), Duration::from_secs(2));
        assert_eq!(ok("1.5"), Duration::from_millis(1500));
        assert_eq!(ok("1m"), Duration::from_secs(60));
        assert_eq!(ok("2m"), Duration::from_secs(120));
        assert_eq!(ok("5s"), Duration::from_secs(5));
        assert_eq!(ok(" 10s "), Duration::from_secs(10));
        assert_eq!(ok("20ms"), Duration::from_millis(20));
        assert_eq!(ok("100us"), Duration::from_micros(100));
        assert_eq!(ok("100µs"), Duration::from_micros(100));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("0"), Duration::ZERO);
    }

    #[test]
    fn refusals_say_why() {
        for bad in ["", "NaN", "inf", "5 parsecs", "5 s", "1e3s", "s"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("is not a duration"), "{bad:?}: {e}");
        }
        assert!(
            parse_duration("5h")
                .unwrap_err()
                .contains("unknown unit \"h\"")
        );
        assert!(parse_duration("-1s").unwrap_err().contains("negative"));
        assert!(
            parse_duration("1000000000")
                .unwrap_err()
                .contains("too long")
        );
        assert!(parse_duration("99999999999999999999999m").is_err());
    }
}
