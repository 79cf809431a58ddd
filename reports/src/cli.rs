//! `vmbench report RESULTS.json... [--out DIR] [--baseline RESULTS.json] [--site DIR]`.

use std::path::PathBuf;

use anyhow::{bail, Context};

use crate::{load, render, site};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// results.json files (several: grouped by case id, labelled by host and revision).
    #[arg(required = true, value_name = "RESULTS.json")]
    pub results: Vec<PathBuf>,
    /// Where to write report.html, summary.md and charts/ (default: the results file's
    /// folder for one file, ./report for several).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// A run to compare every case against (same case ids).
    #[arg(long, value_name = "RESULTS.json")]
    pub baseline: Option<PathBuf>,
    /// Build a static site instead: DIR/index.html listing every run, one page per run.
    #[arg(long, value_name = "DIR", conflicts_with = "out")]
    pub site: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut runs = Vec::new();
    for p in &args.results {
        runs.push(load(p)?);
    }
    let baseline = match &args.baseline {
        Some(p) => Some(load(p)?),
        None => None,
    };
    let mut progress = |m: &str| eprintln!("{m}");
    if let Some(dir) = &args.site {
        if baseline.is_some() {
            bail!("--baseline applies to one report, not to --site; drop one of them");
        }
        let s = site::build(&runs, dir, &mut progress)
            .with_context(|| format!("cannot build the site in {}", dir.display()))?;
        for page in &s.pages {
            println!("{}", page.html.display());
        }
        println!("{}", s.index.display());
        return Ok(());
    }
    let out = match (&args.out, args.results.as_slice()) {
        (Some(d), _) => d.clone(),
        (None, [one]) => one
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), PathBuf::from),
        (None, _) => PathBuf::from("report"),
    };
    let w = render(&runs, baseline.as_ref(), &out, &mut progress)
        .with_context(|| format!("cannot render the report in {}", out.display()))?;
    println!("{}", w.html.display());
    println!("{}", w.summary.display());
    println!(
        "{} ({} PNGs)",
        out.join(crate::CHART_DIR).display(),
        w.pngs.len()
    );
    Ok(())
}
