//! Shared by the report tests: the checked-in results files and rendering them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use reports::{load, render, Run, Written};

pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

pub fn run(name: &str) -> Run {
    load(&data(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Renders `names` (with `baseline`) into a fresh directory; returns it, what was written
/// and the HTML.
pub fn rendered(names: &[&str], baseline: Option<&str>) -> (tempfile::TempDir, Written, String) {
    let runs: Vec<Run> = names.iter().map(|n| run(n)).collect();
    let base = baseline.map(run);
    let dir = tempfile::tempdir().expect("temp dir");
    let w = render(&runs, base.as_ref(), dir.path(), &mut |_| {}).expect("render");
    let html = std::fs::read_to_string(&w.html).expect("report.html");
    (dir, w, html)
}
