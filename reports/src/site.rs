//! `vmbench report --site DIR`: a static site, an index of every run and one page per run
//! (each a full report with its PNGs), plus one page per scenario run more than once, with
//! the history of each case. Plain files: GitHub Pages or any web server serves them.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use crate::html::escape;
use crate::schema::{Run, Status};
use crate::{render, ReportError, Written};

/// What the site holds.
#[derive(Debug)]
pub struct Site {
    pub index: PathBuf,
    pub pages: Vec<Written>,
}

fn dir_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

pub fn build(
    runs: &[Run],
    dir: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<Site, ReportError> {
    let mut order: Vec<&Run> = runs.iter().collect();
    order.sort_by(|a, b| b.started_at.cmp(&a.started_at));
    let mut pages = Vec::new();
    let mut rows = String::new();
    let mut used: BTreeMap<String, u32> = BTreeMap::new();
    for run in &order {
        let mut name = dir_name(&run.run_id);
        let n = used.entry(name.clone()).or_default();
        *n += 1;
        if *n > 1 {
            name = format!("{name}-{n}");
        }
        progress(&format!("site: run {name}"));
        let w = render(
            std::slice::from_ref(*run),
            None,
            &dir.join("runs").join(&name),
            progress,
        )?;
        pages.push(w);
        let (mut ok, mut failed, mut pending) = (0, 0, 0);
        for c in &run.cases {
            match c.status {
                Status::Ok => ok += 1,
                Status::Failed { .. } => failed += 1,
                Status::Pending => pending += 1,
            }
        }
        let (mut better, mut worse, mut same) = (0, 0, 0);
        for cmp in &run.comparisons {
            let Some(c) = run.case(&cmp.case) else {
                continue;
            };
            if cmp.metric != crate::model::primary(&c.params.workload.name) {
                continue;
            }
            match crate::model::verdict(&cmp.metric, cmp.ratio.ratio, cmp.ratio.significant) {
                "better" => better += 1,
                "worse" => worse += 1,
                _ => same += 1,
            }
        }
        let rev = &run.environment.vmbench.git_revision;
        let _ = write!(
            rows,
            "<tr><td><a href=\"runs/{name}/report.html\">{}</a></td><td>{}</td><td>{}</td><td><code>{}</code>{}</td><td>{}</td><td class=\"n\">{ok} ok{}{}</td><td class=\"n\">{}</td></tr>",
            escape(&run.started_at),
            escape(&run.scenario.name),
            escape(&run.environment.host.hostname),
            escape(rev.get(..10).unwrap_or(rev)),
            if run.environment.vmbench.dirty == Some(true) { "+dirty" } else { "" },
            if run.finished { "finished".to_string() } else { "<b>incomplete</b>".to_string() },
            if failed > 0 { format!(", <b>{failed} failed</b>") } else { String::new() },
            if pending > 0 { format!(", {pending} pending") } else { String::new() },
            if better + worse + same == 0 { "–".to_string() } else { format!("{better} better, {worse} worse, {same} n.s.") },
        );
    }
    let mut by_scenario: BTreeMap<&str, Vec<Run>> = BTreeMap::new();
    for run in runs {
        by_scenario
            .entry(&run.scenario.name)
            .or_default()
            .push(run.clone());
    }
    let mut scen = String::new();
    for (name, mut group) in by_scenario {
        if group.len() < 2 {
            continue;
        }
        group.sort_by(|a, b| a.started_at.cmp(&b.started_at));
        progress(&format!("site: history of {name}"));
        let w = render(
            &group,
            None,
            &dir.join("scenarios").join(dir_name(name)),
            progress,
        )?;
        pages.push(w);
        let _ = write!(
            scen,
            "<li><a href=\"scenarios/{}/report.html\">{}</a>: {} runs, every case's history</li>",
            dir_name(name),
            escape(name),
            group.len()
        );
    }
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><meta name=\"color-scheme\" content=\"light dark\"><title>vmbench runs</title><style>:root{{color-scheme:light dark;--line:#d0d7de}}@media (prefers-color-scheme:dark){{:root{{--line:#30363d;background:#0d1117;color:#e6edf3}}}}body{{font:14px/1.45 system-ui,sans-serif;max-width:1120px;margin:0 auto;padding:18px}}table{{border-collapse:collapse;width:100%}}th,td{{padding:4px 8px;border-bottom:1px solid var(--line);text-align:left}}td.n{{text-align:right}}a{{color:inherit}}</style></head><body><h1>vmbench runs</h1>{}<table><thead><tr><th>started</th><th>scenario</th><th>host</th><th>revision</th><th>state</th><th class=\"n\">cases</th><th class=\"n\">comparisons</th></tr></thead><tbody>{rows}</tbody></table></body></html>\n",
        if scen.is_empty() { String::new() } else { format!("<h2>Scenarios over time</h2><ul>{scen}</ul><h2>Every run</h2>") }
    );
    let index = dir.join("index.html");
    std::fs::write(&index, html).map_err(|source| ReportError::Write {
        path: index.clone(),
        source,
    })?;
    Ok(Site { index, pages })
}
