//! The gate's report as a terminal table and as Markdown (a pull-request comment or a job
//! summary). Both list every row: baseline, current, change, interval, adjusted p, verdict and
//! why.

use std::io::{self, Write};

use super::{Outcome, Report, Row, Verdict};

fn fig(x: Option<f64>) -> String {
    match x {
        None => "-".into(),
        Some(v) if v.abs() >= 1000.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.3}"),
    }
}

fn change(r: &Row) -> String {
    r.change_pct().map_or("-".into(), |c| format!("{c:+.1}%"))
}

fn interval(r: &Row) -> String {
    r.interval.map_or("-".into(), |(lo, hi)| {
        format!("[{:+.1}%, {:+.1}%]", (lo - 1.0) * 100.0, (hi - 1.0) * 100.0)
    })
}

fn p(r: &Row) -> String {
    r.p_adjusted.map_or("-".into(), |p| format!("{p:.4}"))
}

fn verdict(v: Verdict) -> &'static str {
    match v {
        Verdict::Regression => "REGRESSION",
        Verdict::Improved => "improved",
        Verdict::Pass => "pass",
        Verdict::Inconclusive => "inconclusive",
    }
}

fn headline(r: &Report) -> String {
    let outcome = match r.outcome {
        Outcome::Pass => "pass",
        Outcome::Regression => "REGRESSION",
        Outcome::Inconclusive => "inconclusive",
    };
    format!(
        "gate: {outcome} ({} regression, {} inconclusive, {} pass, {} improved; threshold {}%, alpha {} family-wise, Holm over {} tests)",
        r.count(Verdict::Regression),
        r.count(Verdict::Inconclusive),
        r.count(Verdict::Pass),
        r.count(Verdict::Improved),
        r.threshold_pct,
        r.alpha,
        r.rows.iter().filter(|x| x.p.is_some()).count()
    )
}

pub fn table(r: &Report, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "baseline {}\ncurrent  {}", r.baseline, r.current)?;
    let head = [
        "case", "metric", "baseline", "current", "change", "interval", "p(adj)", "verdict",
    ];
    let cells: Vec<[String; 8]> = r
        .rows
        .iter()
        .map(|x| {
            [
                x.case.clone(),
                x.metric.clone(),
                fig(x.baseline_median),
                fig(x.current_median),
                change(x),
                interval(x),
                p(x),
                verdict(x.verdict).to_string(),
            ]
        })
        .collect();
    let mut w = head.map(str::len);
    for c in &cells {
        for (i, s) in c.iter().enumerate() {
            w[i] = w[i].max(s.len());
        }
    }
    let line = |out: &mut dyn Write, c: &[String]| -> io::Result<()> {
        for (i, s) in c.iter().enumerate() {
            if i < 2 || i == 7 {
                write!(out, "{:<width$}  ", s, width = w[i])?;
            } else {
                write!(out, "{:>width$}  ", s, width = w[i])?;
            }
        }
        writeln!(out)
    };
    line(out, &head.map(String::from))?;
    for (c, x) in cells.iter().zip(&r.rows) {
        line(out, c)?;
        writeln!(out, "    why: {}", x.why)?;
    }
    for n in &r.notes {
        writeln!(out, "note: {n}")?;
    }
    writeln!(out, "{}", headline(r))
}

pub fn markdown(r: &Report, out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "### vmbench gate: {}\n",
        headline(r).trim_start_matches("gate: ")
    )?;
    writeln!(out, "Baseline `{}`, current `{}`.\n", r.baseline, r.current)?;
    writeln!(
        out,
        "| case | metric | baseline | current | change | 95% interval | adjusted p | verdict | why |"
    )?;
    writeln!(out, "|---|---|---:|---:|---:|---:|---:|---|---|")?;
    for x in &r.rows {
        let v = match x.verdict {
            Verdict::Regression => "**REGRESSION**",
            other => verdict(other),
        };
        writeln!(
            out,
            "| `{}` | {} | {} | {} | {} | {} | {} | {} | {} |",
            x.case,
            x.metric,
            fig(x.baseline_median),
            fig(x.current_median),
            change(x),
            interval(x),
            p(x),
            v,
            x.why.replace('|', "\\|")
        )?;
    }
    for n in &r.notes {
        writeln!(out, "\n> {}", n.replace('|', "\\|"))?;
    }
    Ok(())
}
