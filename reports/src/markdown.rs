//! summary.md: the headline table with links to the PNGs and every case's primary figure,
//! for a pull-request comment or a CI job summary (kept under GitHub's 1 MiB limit).

use std::fmt::Write;

use crate::chart::Chart;
use crate::model::{self, fmt, primary};
use crate::schema::{Run, Status};
use crate::sections::Headline;

/// GitHub's job-summary limit is 1 MiB; stay below with room for a footer.
pub const LIMIT: usize = 1_000_000;

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

pub fn render(
    runs: &[Run],
    headline: &[Headline],
    charts: &[Chart],
    png_dir: &str,
    title: &str,
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# {}\n", cell(title));
    for run in runs {
        let state = if run.finished {
            "finished".to_string()
        } else {
            format!(
                "**incomplete**{}",
                run.interrupted
                    .as_deref()
                    .map(|r| format!(" ({})", cell(r)))
                    .unwrap_or_default()
            )
        };
        let _ = writeln!(
            md,
            "- `{}` {} on {} ({}, guest kernel code {}), {}, {} cases × {} repetitions",
            cell(&run.scenario.name),
            cell(&run.label()),
            cell(&run.environment.host.cpu_model),
            cell(&run.environment.kvm.flavour),
            if run.environment.kvm.cpl0_native {
                "native"
            } else {
                "emulated"
            },
            state,
            run.cases.len(),
            run.scenario.run.repetitions
        );
        if run.environment.kvm.emulated_host {
            md.push_str("  - **Not real timings**: measured inside the emulated AMD-V host (QEMU-TCG, `bench --host emulated`); these results check function, not speed.\n");
        }
    }
    md.push_str("\n## Headline\n\n");
    if headline.is_empty() {
        md.push_str("No comparison in this run.\n");
    } else {
        md.push_str("| case | over | metric | ratio | 95% interval | verdict | notes | chart |\n|---|---|---|--:|--:|---|---|---|\n");
        for r in headline {
            let _ = writeln!(
                md,
                "| `{}` | {}={} | {} {} | ×{:.2} | [{:.2}, {:.2}] | {}{} | {} | [png]({png_dir}/{}.png) |",
                cell(&r.case),
                cell(&r.axis),
                cell(&r.baseline),
                cell(&r.metric),
                model::direction(&r.metric).arrow(),
                r.ratio,
                r.lo,
                r.hi,
                r.verdict,
                if r.significant { " (significant)" } else { "" },
                cell(&r.warnings.join("; ")),
                r.chart
            );
        }
    }
    let mut cases = String::from("\n## Cases\n\n| case | status | metric | median | 95% interval | CV | n |\n|---|---|---|--:|--:|--:|--:|\n");
    let mut cut = 0usize;
    for run in runs {
        for c in &run.cases {
            let m = primary(&c.params.workload.name);
            let s = c.stats.get(m);
            let status = match &c.status {
                Status::Ok => "ok".to_string(),
                Status::Pending => format!(
                    "pending ({}/{})",
                    c.repetitions.len(),
                    run.scenario.run.repetitions
                ),
                Status::Failed { reason, .. } => format!("**failed**: {}", cell(reason)),
            };
            let row = format!(
                "| `{}` | {} | {} {} | {} | {} | {} | {} |\n",
                cell(&c.id),
                status,
                m,
                model::direction(m).arrow(),
                s.map_or("–".into(), |s| fmt(m, s.median)),
                s.map_or("–".into(), |s| format!(
                    "[{}, {}]",
                    fmt(m, s.ci95_median.0),
                    fmt(m, s.ci95_median.1)
                )),
                s.and_then(|s| s.cv)
                    .map_or("–".into(), |cv| format!("{:.1}%", cv * 100.0)),
                s.map_or(c.repetitions.len(), |s| s.n)
            );
            if md.len() + cases.len() + row.len() > LIMIT - 20_000 {
                cut += 1;
            } else {
                cases.push_str(&row);
            }
        }
    }
    md.push_str(&cases);
    if cut > 0 {
        let _ = writeln!(
            md,
            "\n{cut} more cases are in report.html (left out to stay under 1 MiB)."
        );
    }
    md.push_str("\n## Charts\n\n");
    for c in charts {
        let line = format!("- [{}]({png_dir}/{}.png)\n", cell(&c.title), c.id);
        if md.len() + line.len() > LIMIT - 200 {
            md.push_str("- (more charts in report.html)\n");
            break;
        }
        md.push_str(&line);
    }
    md.push_str("\nThe full report, with latency distributions, per-repetition values, the exit-cost explanation and the environment, is `report.html`.\n");
    md
}
