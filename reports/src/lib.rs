//! vmbench's reports: from results.json files (schema version 1, docs/results.md) to a
//! self-contained `report.html`, a PNG of every chart and `summary.md`. This crate reads only
//! the results files, through its own declaration of the schema ([`schema`]).

pub mod chart;
pub mod cli;
pub mod html;
pub mod markdown;
pub mod model;
pub mod png;
pub mod schema;
mod sections;
pub mod site;
mod svg;

use std::path::{Path, PathBuf};

pub use schema::{load, Run, SchemaError};

/// Where the PNGs go, relative to report.html.
pub const CHART_DIR: &str = "charts";

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Input(#[from] SchemaError),
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Png(#[from] png::PngError),
}

/// What a render wrote.
#[derive(Debug, Clone)]
pub struct Written {
    pub html: PathBuf,
    pub summary: PathBuf,
    pub pngs: Vec<PathBuf>,
    /// The ids of the charts, in page order (each is `<svg id="chart-ID">` in the HTML).
    pub chart_ids: Vec<String>,
    /// Each PNG's size in pixels, in the order of `pngs`.
    pub png_sizes: Vec<(u32, u32)>,
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    std::fs::write(path, bytes).map_err(|source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Renders `runs` (grouped by case id) into `out`: report.html, summary.md, charts/*.png.
/// `progress` hears about long renders.
pub fn render(
    runs: &[Run],
    baseline: Option<&Run>,
    out: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<Written, ReportError> {
    let charts_dir = out.join(CHART_DIR);
    std::fs::create_dir_all(&charts_dir).map_err(|source| ReportError::Write {
        path: charts_dir.clone(),
        source,
    })?;
    let page = html::render(runs, baseline, CHART_DIR);
    let html_path = out.join("report.html");
    write(&html_path, page.html.as_bytes())?;
    let title = html::title(runs);
    let md = markdown::render(runs, &page.headline, &page.charts, CHART_DIR, &title);
    let summary = out.join("summary.md");
    write(&summary, md.as_bytes())?;
    let mut pngs = Vec::new();
    let total = page.charts.len();
    for (i, chart) in page.charts.iter().enumerate() {
        if total > 20 && i % 10 == 0 {
            progress(&format!("report: drawing PNG {}/{total}", i + 1));
        }
        let p = charts_dir.join(format!("{}.png", chart.id));
        png::write(chart, &p)?;
        pngs.push(p);
    }
    Ok(Written {
        html: html_path,
        summary,
        pngs,
        chart_ids: page.charts.iter().map(|c| c.id.clone()).collect(),
        png_sizes: page.charts.iter().map(|c| c.png_size()).collect(),
    })
}

/// The report of one run folder (`DIR/results.json` into `DIR`), as `vmbench bench` does at
/// the end of every run.
pub fn render_run_dir(dir: &Path) -> Result<Written, ReportError> {
    let run = load(&dir.join("results.json"))?;
    render(std::slice::from_ref(&run), None, dir, &mut |_| {})
}
