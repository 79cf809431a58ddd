//! Formats other CI tools read: github-action-benchmark's `customBiggerIsBetter` and
//! `customSmallerIsBetter` JSON (an array of `{name, unit, value, range, extra}`), Bencher's
//! Metric Format (`{benchmark: {measure: {value, lower_value, upper_value}}}`), and JUnit XML
//! (one test case per gated case and metric; a regression is a failure, an inconclusive row
//! is skipped).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::json;

use super::{direction_of, Direction, Report, Verdict};
use crate::cli::bench::primary;
use crate::results::{CaseResult, RunResults};

/// The metrics worth exporting for a case: its primary one and every one with a known
/// direction that it measured.
fn exported(c: &CaseResult) -> Vec<(String, Direction)> {
    let (main, bigger) = primary(c.params.workload.kind());
    let mut out = vec![(
        main.to_string(),
        if bigger {
            Direction::BiggerIsBetter
        } else {
            Direction::SmallerIsBetter
        },
    )];
    for m in c.stats.keys() {
        if m != main {
            if let Some(d) = direction_of(m) {
                out.push((m.clone(), d));
            }
        }
    }
    out.retain(|(m, _)| c.stats.contains_key(m));
    out
}

fn unit(metric: &str) -> &'static str {
    if metric.ends_with("per_sec") {
        "ops/s"
    } else if metric.ends_with("_ns") {
        "ns"
    } else if metric.ends_with("_ms") {
        "ms"
    } else {
        "per op"
    }
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// `PREFIX-bigger.json` and `PREFIX-smaller.json` for github-action-benchmark.
pub fn github_benchmark(doc: &RunResults, prefix: &Path) -> anyhow::Result<()> {
    let mut bigger = Vec::new();
    let mut smaller = Vec::new();
    for c in doc.cases.iter().filter(|c| !c.is_failed()) {
        for (m, d) in exported(c) {
            let s = &c.stats[&m];
            let entry = json!({
                "name": format!("{} {m}", c.id),
                "unit": unit(&m),
                "value": s.median,
                "range": format!("± {}", (s.ci95_median.1 - s.ci95_median.0) / 2.0),
                "extra": format!("median of {} repetitions; 95% interval [{}, {}]", s.n, s.ci95_median.0, s.ci95_median.1),
            });
            match d {
                Direction::BiggerIsBetter => bigger.push(entry),
                Direction::SmallerIsBetter => smaller.push(entry),
            }
        }
    }
    let name = |suffix: &str| PathBuf::from(format!("{}-{suffix}.json", prefix.display()));
    write(&name("bigger"), &serde_json::to_vec_pretty(&bigger)?)?;
    write(&name("smaller"), &serde_json::to_vec_pretty(&smaller)?)
}

/// Bencher Metric Format: benchmark (case id) -> measure (metric) -> value and bounds.
pub fn bencher(doc: &RunResults, path: &Path) -> anyhow::Result<()> {
    let mut out: BTreeMap<String, BTreeMap<String, serde_json::Value>> = BTreeMap::new();
    for c in doc.cases.iter().filter(|c| !c.is_failed()) {
        for (m, _) in exported(c) {
            let s = &c.stats[&m];
            out.entry(c.id.clone()).or_default().insert(
                m.replace('_', "-"),
                json!({ "value": s.median, "lower_value": s.ci95_median.0, "upper_value": s.ci95_median.1 }),
            );
        }
    }
    write(path, &serde_json::to_vec_pretty(&out)?)
}

fn xml(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".into(),
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '"' => "&quot;".into(),
            '\'' => "&apos;".into(),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => " ".into(),
            c => c.to_string(),
        })
        .collect()
}

/// JUnit XML of the gate's verdicts.
pub fn junit(r: &Report, path: &Path) -> anyhow::Result<()> {
    let failures = r.count(Verdict::Regression);
    let skipped = r.count(Verdict::Inconclusive);
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    s += &format!(
        "<testsuites name=\"vmbench gate\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\">\n",
        r.rows.len()
    );
    s += &format!(
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\" errors=\"0\">\n",
        xml(&format!("gate {} vs {}", r.current, r.baseline)),
        r.rows.len()
    );
    for row in &r.rows {
        s += &format!(
            "    <testcase classname=\"vmbench.{}\" name=\"{}\">",
            xml(&row.metric),
            xml(&row.case)
        );
        match row.verdict {
            Verdict::Regression => {
                s += &format!(
                    "<failure message=\"{}\" type=\"regression\">{}</failure>",
                    xml(&row.why),
                    xml(&format!(
                        "baseline {:?}, current {:?}, adjusted p {:?}",
                        row.baseline_median, row.current_median, row.p_adjusted
                    ))
                );
            }
            Verdict::Inconclusive => s += &format!("<skipped message=\"{}\"/>", xml(&row.why)),
            Verdict::Pass | Verdict::Improved => {
                s += &format!("<system-out>{}</system-out>", xml(&row.why));
            }
        }
        s += "</testcase>\n";
    }
    s += "  </testsuite>\n</testsuites>\n";
    write(path, s.as_bytes())
}
