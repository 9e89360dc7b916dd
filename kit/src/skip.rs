//! The one way a test skips: [`skip`] says `SKIPPED: <test>: <why>` where it is seen (straight to
//! the process's stderr, which the test harness does not capture) and appends the same line to
//! the file named by `XRAYD_SKIP_LOG`, when set, so that a run can count its skips;
//! [`run_or_skip`] turns a missing prerequisite into a skip, or into a failure under
//! `XRAYD_REQUIRE_E2E=1`.

use std::io::Write;

/// Reports that `test` is skipped because of `why` (see the module doc).
pub fn skip(test: &str, why: &str) {
    let line = format!("SKIPPED: {test}: {why}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Some(path) = std::env::var_os("XRAYD_SKIP_LOG").filter(|p| !p.is_empty()) {
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = appended {
            let _ = writeln!(
                std::io::stderr(),
                "cannot append to XRAYD_SKIP_LOG {}: {e}",
                std::path::Path::new(&path).display()
            );
        }
    }
}

/// True if nothing is `missing`; otherwise skips `test` and returns false, or panics under
/// `XRAYD_REQUIRE_E2E=1`.
pub fn run_or_skip(test: &str, missing: Option<String>) -> bool {
    let Some(reason) = missing else {
        return true;
    };
    if std::env::var("XRAYD_REQUIRE_E2E").as_deref() == Ok("1") {
        panic!("{test}: XRAYD_REQUIRE_E2E=1 but {reason}");
    }
    skip(test, &reason);
    false
}
