//! The dependency directions of the source tree, read from the sources: the X-Ray client and the
//! AWS plumbing do not depend on the upload stage, and the counters depend on no pipeline stage.
//! Comments are not dependencies and are skipped.

use std::fs;
use std::path::{Path, PathBuf};

fn sources(path: &str) -> Vec<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    if p.is_file() {
        return vec![p];
    }
    let mut files: Vec<PathBuf> = fs::read_dir(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .map(|e| e.unwrap().path())
        .filter(|f| f.extension().is_some_and(|x| x == "rs"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no sources in {path}");
    files
}

/// Lines of code (not comments) in `paths` that mention any of `needles`.
fn offending(paths: &[&str], needles: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for file in paths.iter().flat_map(|p| sources(p)) {
        let text = fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            if needles.iter().any(|needle| line.contains(needle)) {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn nothing_beside_the_pipeline_depends_on_the_upload_stage() {
    let found = offending(
        &[
            "src/aws",
            "src/proxy",
            "src/xray",
            "src/telemetry.rs",
            "src/json.rs",
            "src/stats.rs",
        ],
        &["crate::upload", "super::upload"],
    );
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn the_counters_depend_on_no_pipeline_stage() {
    let found = offending(
        &["src/stats.rs"],
        &[
            "crate::ingest",
            "crate::queue",
            "crate::batch",
            "crate::upload",
            "crate::proxy",
        ],
    );
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn the_aws_plumbing_does_not_depend_on_xray() {
    let found = offending(&["src/aws"], &["crate::xray"]);
    assert!(found.is_empty(), "{found:#?}");
}
