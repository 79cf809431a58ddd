//! report.html: one self-contained page (inline CSS and SVG, no script, no fetched font),
//! light and dark by `prefers-color-scheme`. Sections in the order a reader needs them:
//! headline, bars, latency, repetitions, why, boot, engines, history, failures, environment.

use std::fmt::Write;

use crate::chart::Chart;
use crate::model;
use crate::schema::{Case, Run, Status};
use crate::sections;
use crate::svg;

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = r#"
:root{--bg:#f6f8fa;--fg:#212529;--mu:#5f6368;--gr:#e2e4e7;--chart-bg:#ffffff;--card:#eef1f4;--line:#d0d7de;--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;color-scheme:light dark}
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--fg:#e6edf3;--mu:#9da7b3;--gr:#2d333b;--chart-bg:#161b22;--card:#1c2128;--line:#30363d;--ok:#3fb950;--bad:#f85149;--warn:#d29922}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
header,nav,main{max-width:1120px;margin:0 auto;padding:0 18px}
header{padding-top:18px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:34px 0 8px;padding-top:8px;border-top:1px solid var(--line)}h3{font-size:15px;margin:18px 0 6px}
.sub{color:var(--mu);margin:0 0 8px}
nav{font-size:13px;color:var(--mu)}nav a{margin-right:12px}
a{color:inherit}
table{border-collapse:collapse;width:100%;margin:6px 0 12px;font-variant-numeric:tabular-nums}
th,td{padding:4px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{font-weight:600;color:var(--mu);font-size:12px}
td.n,th.n{text-align:right;white-space:nowrap}
.wide{overflow-x:auto}
td.id{min-width:240px;font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px;word-break:break-all}
.chart{display:block;width:100%;max-width:1000px;height:auto;margin:8px 0 18px;border:1px solid var(--line);border-radius:6px}
.c-bg{fill:var(--chart-bg)}.c-fg{fill:var(--fg)}.c-mu{fill:var(--mu)}.c-gr{fill:var(--gr)}
.s-bg{stroke:var(--chart-bg)}.s-fg{stroke:var(--fg)}.s-mu{stroke:var(--mu)}.s-gr{stroke:var(--gr)}
.better{color:var(--ok);font-weight:600}.worse{color:var(--bad);font-weight:600}.same{color:var(--mu)}
.warn{color:var(--warn)}.failed{color:var(--bad);font-weight:600}.pending{color:var(--warn);font-weight:600}
.banner{border:1px solid var(--warn);border-left:6px solid var(--warn);background:var(--card);padding:8px 12px;margin:10px 0;border-radius:4px}
.note{color:var(--mu);font-size:13px}
pre{background:var(--card);border:1px solid var(--line);border-radius:4px;padding:8px;overflow:auto;font-size:12px;line-height:1.35}
code{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px}
.pill{display:inline-block;border:1px solid var(--line);border-radius:10px;padding:0 7px;font-size:12px;margin:1px 2px 1px 0}
"#;

/// What a rendered page holds besides its HTML: the charts (for the PNGs) and the headline
/// rows (for summary.md).
pub struct Page {
    pub html: String,
    pub charts: Vec<Chart>,
    pub headline: Vec<sections::Headline>,
}

/// Renders the page for `runs` (several runs are grouped by case id), with `baseline` if given.
/// `png_dir` is the charts' folder relative to the page, for the PNG links.
pub fn render(runs: &[Run], baseline: Option<&Run>, png_dir: &str) -> Page {
    let mut b = sections::Builder::new(runs, baseline);
    let mut body = String::new();
    let headline = b.headline();
    let title = title(runs);

    let _ = write!(body, "<header><h1>{}</h1>", escape(&title));
    for run in runs {
        let _ = write!(
            body,
            "<p class=\"sub\">{} — {}: {} cases, {} × {} s windows · {} · started {}</p>",
            escape(&run.scenario.name),
            escape(&run.scenario.description),
            run.cases.len(),
            run.scenario.run.repetitions,
            run.scenario.run.duration_secs,
            escape(&run.label()),
            escape(&run.started_at)
        );
        if !run.finished {
            let why = run
                .interrupted
                .clone()
                .unwrap_or_else(|| "the run was killed or is still going".into());
            let _ = write!(
                body,
                "<div class=\"banner\"><strong>Incomplete run.</strong> {} (last written {}). Cases not finished are marked pending.</div>",
                escape(&why),
                escape(&run.updated_at)
            );
        }
        if run.environment.kvm.emulated_host {
            let _ = write!(
                body,
                "<div class=\"banner\"><strong>Not real timings.</strong> Measured inside the emulated AMD-V host (QEMU-TCG with KVM in it, <code>bench --host emulated</code>): every instruction of host and guest was translated by TCG. These results check that the devices work under real drivers; their figures say nothing about speed.</div>"
            );
        }
        if !run.environment.kvm.cpl0_native {
            let _ = write!(
                body,
                "<div class=\"banner\">On this host ({}) guest kernel code is emulated, not native: exits cost {} and more than on bare-metal KVM; compare ratios, not absolute figures, across hosts.</div>",
                escape(&run.environment.kvm.flavour),
                run.calibration
                    .as_ref()
                    .and_then(|c| c.figures.get("pio_exit_ns"))
                    .map_or("tens of µs".into(), |v| model::fmt("pio_exit_ns", *v))
            );
        }
    }
    if let Some(base) = baseline {
        let _ = write!(
            body,
            "<p class=\"sub\">Baseline: {} ({})</p>",
            escape(&base.label()),
            escape(&base.scenario.name)
        );
    }
    body.push_str("</header><nav><a href=\"#headline\">Headline</a><a href=\"#cases\">Cases</a><a href=\"#bars\">By workload</a><a href=\"#latency\">Latency</a><a href=\"#repetitions\">Repetitions</a><a href=\"#why\">Why</a><a href=\"#boot\">Boot</a><a href=\"#engines\">Engines</a><a href=\"#history\">History</a><a href=\"#failures\">Failures</a><a href=\"#environment\">Environment</a></nav><main>");

    headline_section(&mut body, &headline, png_dir);
    b.cases_table(&mut body);
    section(
        &mut body,
        "bars",
        "By workload: the primary metric per configuration",
    );
    body.push_str("<p class=\"note\">Bars are medians over repetitions; whiskers the 95 % bootstrap interval of the median. One colour per device in every chart; QEMU's cases are drawn lighter.</p>");
    for chart in b.bar_charts() {
        push_chart(&mut body, &mut b.charts, chart, png_dir);
    }
    section(&mut body, "latency", "Latency distributions");
    let cdfs = b.cdf_charts();
    if cdfs.is_empty() {
        body.push_str("<p class=\"note\">No case recorded raw latency samples.</p>");
    } else {
        body.push_str("<p class=\"note\">Empirical CDFs of every raw sample of every repetition (log x); p50, p99 and p99.9 marked, computed from all samples. Curves are drawn from at most 250 quantiles per case.</p>");
    }
    for chart in cdfs {
        push_chart(&mut body, &mut b.charts, chart, png_dir);
    }
    section(
        &mut body,
        "repetitions",
        "Each repetition, in the order it ran",
    );
    body.push_str("<p class=\"note\">Every repetition is a fresh guest; cases ran interleaved (A B C, B C A, ...). A trend across repetitions is drift of the host, not of the case. Values marked * are Tukey outliers.</p>");
    let (charts, tables) = b.repetition_charts();
    for chart in charts {
        push_chart(&mut body, &mut b.charts, chart, png_dir);
    }
    body.push_str(&tables);
    section(
        &mut body,
        "why",
        "Why: exits per operation × what an exit costs here",
    );
    let (charts, text) = b.why();
    body.push_str(&text);
    for chart in charts {
        push_chart(&mut body, &mut b.charts, chart, png_dir);
    }
    section(&mut body, "boot", "Boot timeline");
    let (chart, text) = b.boot();
    body.push_str(&text);
    if let Some(chart) = chart {
        push_chart(&mut body, &mut b.charts, chart, png_dir);
    }
    section(
        &mut body,
        "engines",
        "Engines side by side: our device against QEMU's",
    );
    let (chart, text) = b.engines();
    body.push_str(&text);
    if let Some(chart) = chart {
        push_chart(&mut body, &mut b.charts, chart, png_dir);
    }
    section(&mut body, "history", "History across runs");
    let hist = b.history();
    if hist.is_empty() {
        body.push_str("<p class=\"note\">One run of each case: give <code>vmbench report</code> several results files of the same scenario for a history per case.</p>");
    }
    for chart in hist {
        push_chart(&mut body, &mut b.charts, chart, png_dir);
    }
    section(&mut body, "failures", "Failed and pending cases");
    b.failures(&mut body);
    section(&mut body, "environment", "Environment and command line");
    for run in runs {
        environment(&mut body, run);
    }
    body.push_str("</main>");

    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><meta name=\"color-scheme\" content=\"light dark\"><title>{}</title><style>{CSS}</style></head><body>{body}</body></html>\n",
        escape(&title)
    );
    Page {
        html,
        charts: b.charts,
        headline,
    }
}

pub fn title(runs: &[Run]) -> String {
    let mut names: Vec<&str> = runs.iter().map(|r| r.scenario.name.as_str()).collect();
    names.dedup();
    match runs {
        [one] => format!(
            "vmbench {} on {}",
            one.scenario.name, one.environment.host.hostname
        ),
        _ => format!("vmbench {} — {} runs", names.join(", "), runs.len()),
    }
}

fn section(body: &mut String, id: &str, title: &str) {
    let _ = write!(body, "<h2 id=\"{id}\">{}</h2>", escape(title));
}

fn push_chart(body: &mut String, charts: &mut Vec<Chart>, chart: Chart, png_dir: &str) {
    let _ = write!(
        body,
        "<figure id=\"fig-{id}\" style=\"margin:0\">{}<figcaption class=\"note\"><a href=\"{png_dir}/{id}.png\">PNG</a> ({} × {} px)</figcaption></figure>",
        svg::render(&chart),
        chart.png_size().0,
        chart.png_size().1,
        id = escape(&chart.id),
    );
    charts.push(chart);
}

fn headline_section(body: &mut String, rows: &[sections::Headline], png_dir: &str) {
    section(body, "headline", "Headline: every comparison of the run");
    if rows.is_empty() {
        body.push_str("<p class=\"note\">This run declares no comparison (a scenario's <code>[[compare]]</code>), or its compared cases failed; each case's figures are in the table below.</p>");
        return;
    }
    body.push_str("<table><thead><tr><th>case</th><th>over baseline</th><th>metric</th><th class=\"n\">ratio</th><th class=\"n\">95% interval</th><th>verdict</th><th>notes</th></tr></thead><tbody>");
    for r in rows {
        let class = match r.verdict {
            "better" => "better",
            "worse" => "worse",
            _ => "same",
        };
        let _ = write!(
            body,
            "<tr><td class=\"id\">{}</td><td>{} = {}</td><td>{} <span title=\"{}\">{}</span></td><td class=\"n\">×{:.2}</td><td class=\"n\">[{:.2}, {:.2}]</td><td class=\"{class}\">{}{}</td><td class=\"warn\">{} <a href=\"{png_dir}/{}.png\">chart</a></td></tr>",
            escape(&r.case),
            escape(&r.axis),
            escape(&r.baseline),
            escape(&r.metric),
            model::direction(&r.metric).words(),
            model::direction(&r.metric).arrow(),
            r.ratio,
            r.lo,
            r.hi,
            r.verdict,
            if r.significant { " (significant)" } else { "" },
            escape(&r.warnings.join("; ")),
            escape(&r.chart),
        );
    }
    body.push_str("</tbody></table><p class=\"note\">Ratio = median of the case over median of the baseline case, per-repetition values; interval by bootstrap; significant when it excludes 1. ↑ higher is better, ↓ lower is better.</p>");
}

/// Shell-style quoting of argv for display.
pub fn shell_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+%".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn environment(body: &mut String, run: &Run) {
    let e = &run.environment;
    let _ = write!(body, "<h3>{}</h3><table><tbody>", escape(&run.label()));
    let mut row = |k: &str, v: String| {
        let _ = write!(body, "<tr><th>{}</th><td>{}</td></tr>", escape(k), v);
    };
    row(
        "command line",
        match &run.command_line {
            Some(argv) => format!("<code>{}</code>", escape(&shell_line(argv))),
            None => "<span class=\"warn\">not recorded (written by a vmbench before it was)</span>"
                .into(),
        },
    );
    row(
        "run",
        format!(
            "{} · started {} · last written {} · {}",
            escape(&run.run_id),
            escape(&run.started_at),
            escape(&run.updated_at),
            if run.finished {
                "finished".to_string()
            } else {
                format!(
                    "<span class=\"pending\">incomplete</span>{}",
                    run.interrupted
                        .as_deref()
                        .map(|r| format!(": {}", escape(r)))
                        .unwrap_or_default()
                )
            }
        ),
    );
    row(
        "host",
        escape(&format!(
            "{} · {} · {} logical CPUs · {} MiB · Linux {} ({})",
            e.host.hostname,
            e.host.cpu_model,
            e.host.cores,
            e.host.memory_mib,
            e.host.kernel_release,
            e.host.arch
        )),
    );
    row(
        "KVM",
        escape(&format!(
            "{} · guest kernel code {} · {}{}",
            e.kvm.flavour,
            if e.kvm.cpl0_native {
                "native"
            } else {
                "emulated"
            },
            if e.kvm.nested {
                "nested (this host is a guest)"
            } else {
                "not nested"
            },
            e.kvm
                .error
                .as_deref()
                .map(|x| format!(" · error: {x}"))
                .unwrap_or_default()
        )),
    );
    row(
        "vmbench",
        escape(&format!(
            "{} · revision {} · {}",
            e.vmbench.version,
            e.vmbench.git_revision,
            match e.vmbench.dirty {
                Some(true) => "dirty (uncommitted changes)",
                Some(false) => "clean",
                None => "dirty flag unknown",
            }
        )),
    );
    row(
        "probe sha256",
        format!(
            "<code>{}</code>",
            escape(e.probe_sha256.as_deref().unwrap_or("none"))
        ),
    );
    for img in &run.images {
        let name = img.get("image").and_then(|v| v.as_str()).unwrap_or("image");
        let shas: Vec<String> = img
            .get("artifacts")
            .and_then(|a| a.as_array())
            .into_iter()
            .flatten()
            .map(|a| {
                format!(
                    "{} {}",
                    a.get("name").and_then(|v| v.as_str()).unwrap_or("?"),
                    a.get("sha256").and_then(|v| v.as_str()).unwrap_or("?")
                )
            })
            .collect();
        row(
            &format!("image {name}"),
            format!("<code>{}</code>", escape(&shas.join(", "))),
        );
    }
    row(
        "scenario",
        escape(&format!(
            "{} (sha256 {}) · {} repetitions, {} s warm-up, {} s windows · overrides {}",
            run.scenario.source.path,
            run.scenario.source.sha256,
            run.scenario.run.repetitions,
            run.scenario.run.warmup_secs,
            run.scenario.run.duration_secs,
            run.scenario.overrides
        )),
    );
    row(
        "calibration",
        match &run.calibration {
            Some(c) => escape(&format!(
                "{} ({})",
                c.figures
                    .iter()
                    .map(|(k, v)| format!("{k} {}", model::fmt(k, *v)))
                    .collect::<Vec<_>>()
                    .join(" · "),
                c.probe_exec
            )),
            None => {
                "<span class=\"warn\">none: this run did not calibrate exit costs</span>".into()
            }
        },
    );
    for w in &run.scenario.warnings {
        row("note", escape(w));
    }
    body.push_str("</tbody></table>");
}

/// The status cell of a case.
pub fn status_html(run: &Run, c: &Case) -> String {
    match &c.status {
        Status::Ok => "ok".into(),
        Status::Pending => format!(
            "<span class=\"pending\">pending</span> ({}/{})",
            c.repetitions.len(),
            run.scenario.run.repetitions
        ),
        Status::Failed { .. } => "<span class=\"failed\">failed</span>".into(),
    }
}
