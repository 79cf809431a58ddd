//! The report's content, built from the runs: the headline rows, the tables and the charts of
//! each section. Used by the HTML page and summary.md alike.

use std::fmt::Write;

use crate::chart::{Bar, Bars, Chart, Kind, Lines, Paint, Rgb, Series};
use crate::html::{escape, status_html};
use crate::model::{self, device, device_rgb, fmt, paint, primary, short_label};
use crate::schema::{Case, Run, Status};

/// A case of one run.
#[derive(Clone, Copy)]
pub struct Entry<'a> {
    pub run: &'a Run,
    pub case: &'a Case,
}

/// One comparison of the headline.
#[derive(Debug, Clone)]
pub struct Headline {
    pub run_label: String,
    pub case: String,
    pub baseline_case: String,
    pub axis: String,
    pub baseline: String,
    pub metric: String,
    pub ratio: f64,
    pub lo: f64,
    pub hi: f64,
    pub significant: bool,
    pub verdict: &'static str,
    pub warnings: Vec<String>,
    /// The id of the chart that shows both cases.
    pub chart: String,
}

pub struct Builder<'a> {
    runs: &'a [Run],
    baseline: Option<&'a Run>,
    pub charts: Vec<Chart>,
    /// Workload names in first-seen order.
    workloads: Vec<String>,
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

const PIO: Rgb = Rgb(0x8c, 0x56, 0x4b);
const MMIO: Rgb = Rgb(0xcc, 0x79, 0xa7);
const IN_KERNEL: Rgb = Rgb(0x56, 0xb4, 0xe9);

fn solid(rgb: Rgb) -> Paint {
    Paint::Series { rgb, faded: false }
}

impl<'a> Builder<'a> {
    pub fn new(runs: &'a [Run], baseline: Option<&'a Run>) -> Self {
        let mut workloads: Vec<String> = Vec::new();
        for c in runs.iter().flat_map(|r| &r.cases) {
            if !workloads.contains(&c.params.workload.name) {
                workloads.push(c.params.workload.name.clone());
            }
        }
        Builder {
            runs,
            baseline,
            charts: Vec::new(),
            workloads,
        }
    }

    /// How a run is named in labels: `host @ rev7`, with its run id when that is ambiguous.
    fn tag(&self, run: &Run) -> String {
        let short = short_run(run);
        if self.runs.iter().filter(|r| short_run(r) == short).count() > 1 {
            format!("{short} {}", run.run_id)
        } else {
            short
        }
    }

    fn many(&self) -> bool {
        self.runs.len() > 1
    }

    /// Every case of every run, grouped by case id (first-seen order), runs in given order.
    pub fn entries(&self) -> Vec<Entry<'a>> {
        let mut ids: Vec<&str> = Vec::new();
        for c in self.runs.iter().flat_map(|r| &r.cases) {
            if !ids.contains(&c.id.as_str()) {
                ids.push(&c.id);
            }
        }
        let mut out = Vec::new();
        for id in ids {
            for run in self.runs {
                if let Some(case) = run.case(id) {
                    out.push(Entry { run, case });
                }
            }
        }
        out
    }

    fn of_workload(&self, w: &str) -> Vec<Entry<'a>> {
        self.entries()
            .into_iter()
            .filter(|e| e.case.params.workload.name == w)
            .collect()
    }

    /// The case's colour in workload `w`'s charts: its device's, shaded when the device has
    /// several cases there.
    fn shade(&self, w: &str, e: Entry) -> Paint {
        let mut ids: Vec<&str> = Vec::new();
        for x in self.of_workload(w) {
            if device(&x.case.params) == device(&e.case.params)
                && x.case.params.engine == e.case.params.engine
                && !ids.contains(&x.case.id.as_str())
            {
                ids.push(&x.case.id);
            }
        }
        let k = ids.iter().position(|id| *id == e.case.id).unwrap_or(0);
        model::shaded(paint(e.case), k)
    }

    fn label(&self, e: Entry) -> String {
        let l = short_label(&e.case.id);
        let l = if e.case.params.engine == "qemu" && !l.contains("engine=") {
            format!("{l} (QEMU)")
        } else {
            l
        };
        if self.many() {
            format!("{l} · {}", self.tag(e.run))
        } else {
            l
        }
    }

    pub fn headline(&mut self) -> Vec<Headline> {
        let mut rows = Vec::new();
        for run in self.runs {
            for cmp in &run.comparisons {
                let Some(case) = run.case(&cmp.case) else {
                    continue;
                };
                let workload = &case.params.workload.name;
                if cmp.metric != primary(workload) {
                    continue;
                }
                let mut warnings = model::warnings(run, case);
                if let Some(base) = run.case(&cmp.baseline_case) {
                    for w in model::warnings(run, base) {
                        warnings.push(format!("baseline {w}"));
                    }
                }
                rows.push(Headline {
                    run_label: run.label(),
                    case: cmp.case.clone(),
                    baseline_case: cmp.baseline_case.clone(),
                    axis: cmp.axis.clone(),
                    baseline: cmp.baseline.clone(),
                    metric: cmp.metric.clone(),
                    ratio: cmp.ratio.ratio,
                    lo: cmp.ratio.ci95.0,
                    hi: cmp.ratio.ci95.1,
                    significant: cmp.ratio.significant,
                    verdict: model::verdict(&cmp.metric, cmp.ratio.ratio, cmp.ratio.significant),
                    warnings,
                    chart: format!("bars-{}", slug(workload)),
                });
            }
        }
        rows
    }

    /// The change of a case's primary metric against the baseline run's case of the same id.
    pub fn change(&self, e: Entry) -> Option<(f64, f64, f64, &'static str)> {
        let base = self.baseline?.case(&e.case.id)?;
        let m = primary(&e.case.params.workload.name);
        let (r, lo, hi) = model::change(&e.case.values(m), &base.values(m))?;
        let significant = lo > 1.0 || hi < 1.0;
        Some((r, lo, hi, model::verdict(m, r, significant)))
    }

    pub fn cases_table(&self, body: &mut String) {
        let _ = write!(body, "<h2 id=\"cases\">Every case</h2><div class=\"wide\"><table><thead><tr><th>case</th>{}<th>status</th><th>metric</th><th class=\"n\">median</th><th class=\"n\">95% interval</th><th class=\"n\">CV</th><th class=\"n\">n</th><th class=\"n\" title=\"exits handled by vmbench's VMM in user space\">exits to vmbench /op</th><th class=\"n\" title=\"KVM's own exit counter: also the exits the kernel handles itself (ioeventfd kicks, interrupts)\">all KVM exits /op</th><th class=\"n\" title=\"the device's notifications from the guest (virtio ioeventfd writes) over the measured window\">kicks /op</th><th class=\"n\" title=\"the device's interrupts to the guest over the measured window\">interrupts /op</th><th class=\"n\">VMM CPU µs/op</th>{}<th>notes</th></tr></thead><tbody>",
            if self.many() { "<th>run</th>" } else { "" },
            if self.baseline.is_some() { "<th class=\"n\">vs baseline</th>" } else { "" });
        for e in self.entries() {
            let m = primary(&e.case.params.workload.name);
            let s = e.case.stats.get(m);
            let med = |k: &str| {
                let v = e.case.values(k);
                if v.is_empty() {
                    "–".to_string()
                } else {
                    model::num(model::median(&v))
                }
            };
            let _ = write!(body, "<tr><td class=\"id\">{}</td>", escape(&e.case.id));
            if self.many() {
                let _ = write!(body, "<td>{}</td>", escape(&self.tag(e.run)));
            }
            let _ = write!(
                body,
                "<td>{}</td><td>{} {}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>",
                status_html(e.run, e.case),
                escape(m),
                model::direction(m).arrow(),
                s.map_or("–".into(), |s| fmt(m, s.median)),
                s.map_or("–".into(), |s| {
                    let u = model::unit(m).scale;
                    format!("[{}, {}]", model::num(s.ci95_median.0 * u), model::num(s.ci95_median.1 * u))
                }),
                s.and_then(|s| s.cv).map_or("–".into(), |cv| format!("{:.1}%", cv * 100.0)),
                s.map_or(e.case.repetitions.len(), |s| s.n),
                med("exits_per_op"),
                med("kvm_exits_per_op"),
                med("kicks_per_op"),
                med("interrupts_per_op"),
                med("vmm_cpu_us_per_op"),
            );
            if self.baseline.is_some() {
                let cell = match self.change(e) {
                    Some((r, lo, hi, v)) => format!(
                        "<span class=\"{}\">×{r:.2}</span> [{lo:.2}, {hi:.2}] {v}",
                        match v {
                            "better" => "better",
                            "worse" => "worse",
                            _ => "same",
                        }
                    ),
                    None => "not in baseline".into(),
                };
                let _ = write!(body, "<td class=\"n\">{cell}</td>");
            }
            let _ = write!(
                body,
                "<td class=\"warn\">{}</td></tr>",
                escape(&model::warnings(e.run, e.case).join("; "))
            );
        }
        body.push_str("</tbody></table></div><p class=\"note\">Exits are counted twice, honestly: <em>exits to vmbench</em> are those our VMM handles in user space (port and MMIO accesses); <em>all KVM exits</em> is KVM's own counter, which also counts the exits the kernel handles itself — each virtio ioeventfd kick is one. “–” where the host offers no KVM counter.</p>");
    }

    pub fn bar_charts(&self) -> Vec<Chart> {
        let mut out = Vec::new();
        for w in &self.workloads {
            let m = primary(w);
            let bars: Vec<Bar> = self
                .of_workload(w)
                .into_iter()
                .map(|e| {
                    let s = e.case.stats.get(m);
                    let u = model::unit(m).scale;
                    let status = match &e.case.status {
                        Status::Failed { .. } => "failed",
                        Status::Pending if s.is_none() => "pending",
                        _ => "",
                    };
                    Bar {
                        label: self.label(e),
                        segments: s
                            .map(|s| vec![(s.median * u, self.shade(w, e))])
                            .unwrap_or_default(),
                        interval: s.map(|s| (s.ci95_median.0 * u, s.ci95_median.1 * u)),
                        marker: None,
                        value_text: match s {
                            Some(s) if status.is_empty() => fmt(m, s.median),
                            Some(s) => format!("{} ({status})", fmt(m, s.median)),
                            None if status.is_empty() => "no figure".into(),
                            None => status.into(),
                        },
                    }
                })
                .collect();
            if bars.is_empty() {
                continue;
            }
            let u = model::unit(m);
            out.push(Chart {
                id: format!("bars-{}", slug(w)),
                title: format!(
                    "{w}: {} ({}) {}",
                    u.name,
                    model::direction(m).words(),
                    model::direction(m).arrow()
                ),
                kind: Kind::Bars(Bars {
                    x_title: format!("{} [{}], median with 95% interval", u.name, u.unit),
                    legend: self.device_legend(w),
                    bars,
                    marker_name: None,
                }),
            });
        }
        out
    }

    fn device_legend(&self, w: &str) -> Vec<(String, Paint)> {
        let mut legend: Vec<(String, Paint)> = Vec::new();
        for e in self.of_workload(w) {
            let d = device(&e.case.params);
            let name = if e.case.params.engine == "qemu" {
                format!("{d} (QEMU)")
            } else {
                d
            };
            if !legend.iter().any(|(n, _)| *n == name) {
                legend.push((name, paint(e.case)));
            }
        }
        legend
    }

    pub fn cdf_charts(&self) -> Vec<Chart> {
        let mut out = Vec::new();
        for w in &self.workloads {
            let mut series = Vec::new();
            for e in self.of_workload(w) {
                let all = model::pooled(e.case, "latency_ns");
                if all.is_empty() {
                    continue;
                }
                let us = |v: f64| v / 1e3;
                let marks = [(0.5, "p50"), (0.99, "p99"), (0.999, "p99.9")]
                    .iter()
                    .map(|&(q, name)| (us(model::quantile(&all, q)), q, name.to_string()))
                    .collect();
                series.push(Series {
                    name: format!(
                        "{} ({} samples{})",
                        self.label(e),
                        all.len(),
                        model::subsampled(e.case, "latency_ns")
                    ),
                    paint: self.shade(w, e),
                    points: model::cdf_points(&all)
                        .into_iter()
                        .map(|(x, q)| (us(x), q))
                        .collect(),
                    errors: Vec::new(),
                    dots: false,
                    marks,
                });
            }
            if series.is_empty() {
                continue;
            }
            out.push(Chart {
                id: format!("cdf-{}", slug(w)),
                title: format!("{w}: latency distribution (CDF)"),
                kind: Kind::Lines(Lines {
                    x_title: "latency per operation [µs, log scale]".into(),
                    y_title: "fraction of operations ≤ x".into(),
                    x_log: true,
                    x_categories: None,
                    y_from_zero: true,
                    series,
                }),
            });
        }
        out
    }

    /// Per workload, the primary metric by repetition in run order, and every value in tables.
    pub fn repetition_charts(&self) -> (Vec<Chart>, String) {
        let mut charts = Vec::new();
        let mut tables = String::new();
        for w in &self.workloads {
            let m = primary(w);
            let u = model::unit(m);
            let entries = self.of_workload(w);
            let series: Vec<Series> = entries
                .iter()
                .filter(|e| !e.case.values(m).is_empty())
                .map(|e| Series {
                    name: self.label(*e),
                    paint: self.shade(w, *e),
                    points: e
                        .case
                        .values(m)
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (i as f64, v * u.scale))
                        .collect(),
                    errors: Vec::new(),
                    dots: true,
                    marks: Vec::new(),
                })
                .collect();
            let reps = series.iter().map(|s| s.points.len()).max().unwrap_or(0);
            if !series.is_empty() {
                charts.push(Chart {
                    id: format!("reps-{}", slug(w)),
                    title: format!("{w}: {} by repetition, in run order", u.name),
                    kind: Kind::Lines(Lines {
                        x_title: "repetition, in the order it ran".into(),
                        y_title: format!("{} [{}]", u.name, u.unit),
                        x_log: false,
                        x_categories: Some((1..=reps).map(|i| i.to_string()).collect()),
                        y_from_zero: false,
                        series,
                    }),
                });
            }
            let _ = write!(tables, "<h3>{} — {} [{}]</h3><table><thead><tr><th>case</th><th>values in run order (repetition index: value)</th></tr></thead><tbody>", escape(w), escape(m), u.unit);
            for e in &entries {
                let outliers = e
                    .case
                    .stats
                    .get(m)
                    .map(|s| s.outliers.clone())
                    .unwrap_or_default();
                let vals: Vec<String> = e
                    .case
                    .repetitions
                    .iter()
                    .filter_map(|r| r.metrics.get(m).map(|v| (r.index, *v)))
                    .enumerate()
                    .map(|(i, (idx, v))| {
                        format!(
                            "<span class=\"pill\">#{idx}: {}{}</span>",
                            fmt(m, v),
                            if outliers.contains(&i) { " *" } else { "" }
                        )
                    })
                    .collect();
                let _ = write!(
                    tables,
                    "<tr><td class=\"id\">{}</td><td>{}</td></tr>",
                    escape(&self.label(*e)),
                    if vals.is_empty() {
                        status_html(e.run, e.case)
                    } else {
                        vals.join(" ")
                    }
                );
            }
            tables.push_str("</tbody></table>");
        }
        (charts, tables)
    }

    pub fn why(&self) -> (Vec<Chart>, String) {
        let mut charts = Vec::new();
        let mut text = String::new();
        for run in self.runs {
            match &run.calibration {
                Some(c) => {
                    let f = |k: &str| {
                        c.figures
                            .get(k)
                            .map_or("not measured".into(), |v| fmt(k, *v))
                    };
                    let _ = write!(text, "<p>Calibrated on {} at the start of the run: a PIO exit round trip costs <strong>{}</strong>, an MMIO exit <strong>{}</strong>, an ioeventfd write (an exit KVM handles itself) <strong>{}</strong>, an interrupt's round trip to the probe (self-IPI and EOI) <strong>{}</strong>. Each exit per operation below is multiplied by its cost and set against the measured time per operation (the black tick); the bar is the part the exits explain.</p>", escape(&run.label()), f("pio_exit_ns"), f("mmio_exit_ns"), f("ioeventfd_write_ns"), f("self_ipi_ns"));
                }
                None => {
                    let _ = write!(text, "<p class=\"warn\">{}: this run has no calibration, so exits cannot be priced; counts only.</p>", escape(&run.label()));
                }
            }
        }
        text.push_str("<table><thead><tr><th>case</th><th class=\"n\">measured time/op</th><th>exits to vmbench /op, by reason</th><th>by device (busiest registers)</th><th class=\"n\">all KVM exits /op</th><th class=\"n\">in-kernel exits /op</th><th class=\"n\">explained by exits</th><th class=\"n\">VMM CPU /op</th></tr></thead><tbody>");
        for w in &self.workloads {
            let mut bars = Vec::new();
            for e in self.of_workload(w) {
                let Some(why) = model::why(e.run, e.case) else {
                    continue;
                };
                let pairs = |v: &[(String, f64)]| {
                    v.iter()
                        .filter(|(_, n)| *n > 0.0)
                        .map(|(k, n)| format!("{k} {n:.2}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let explained = why.explained_ns();
                let _ = write!(
                    text,
                    "<tr><td class=\"id\">{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{} ({:.0}%)</td><td class=\"n\">{}</td></tr>",
                    escape(&if self.many() {
                        format!("{} · {}", e.case.id, self.tag(e.run))
                    } else {
                        e.case.id.clone()
                    }),
                    fmt("time_ns", why.time_ns),
                    escape(&format!("{:.2} total{}{}", why.vmbench_exits, if why.by_reason.is_empty() { "" } else { ": " }, pairs(&why.by_reason))),
                    escape(&match pairs(&why.by_register[..why.by_register.len().min(6)]) {
                        r if r.is_empty() => pairs(&why.by_device),
                        r => format!("{} ({r})", pairs(&why.by_device)),
                    }),
                    why.kvm_exits.map_or("–".into(), |k| format!("{k:.2}")),
                    why.in_kernel_exits().map_or("–".into(), |k| format!("{k:.2}")),
                    fmt("time_ns", explained),
                    explained / why.time_ns * 100.0,
                    why.cpu_us.map_or("–".into(), |c| format!("{c:.2} µs")),
                );
                bars.push(Bar {
                    label: self.label(e),
                    segments: vec![
                        (why.pio_ns / 1e3, solid(PIO)),
                        (why.mmio_ns / 1e3, solid(MMIO)),
                        (why.in_kernel_ns / 1e3, solid(IN_KERNEL)),
                    ],
                    interval: None,
                    marker: Some(why.time_ns / 1e3),
                    value_text: format!(
                        "{:.0}% of {}",
                        explained / why.time_ns * 100.0,
                        fmt("time_ns", why.time_ns)
                    ),
                });
            }
            if bars.is_empty() {
                continue;
            }
            charts.push(Chart {
                id: format!("why-{}", slug(w)),
                title: format!("{w}: time per operation explained by exits"),
                kind: Kind::Bars(Bars {
                    x_title: "time per operation [µs]".into(),
                    legend: vec![
                        ("PIO exits × PIO cost".into(), solid(PIO)),
                        ("MMIO exits × MMIO cost".into(), solid(MMIO)),
                        ("in-kernel exits × ioeventfd cost".into(), solid(IN_KERNEL)),
                    ],
                    bars,
                    marker_name: Some("measured time per operation".into()),
                }),
            });
        }
        text.push_str("</tbody></table><p class=\"note\">Medians over repetitions. <em>In-kernel exits</em> = all KVM exits − exits to vmbench: ioeventfd kicks and interrupt-related exits KVM handles without returning to our VMM, priced at the calibrated ioeventfd write. What exits do not explain is device and back-end work, guest time and waiting.</p>");
        (charts, text)
    }

    pub fn boot(&self) -> (Option<Chart>, String) {
        let phases: [(&str, Rgb); 7] = [
            ("VMM set-up", Rgb(0x7f, 0x7f, 0x7f)),
            ("start to first instruction", Rgb(0xcc, 0x79, 0xa7)),
            ("first instruction to ready", Rgb(0x6a, 0x3d, 0x9a)),
            ("Linux: to the kernel's first line", Rgb(0x00, 0x72, 0xb2)),
            ("Linux: kernel to Run /init", Rgb(0xe6, 0x9f, 0x00)),
            ("Linux: Run /init to agent ready", Rgb(0x00, 0x9e, 0x73)),
            ("rest", Rgb(0xbb, 0xbb, 0xbb)),
        ];
        let mut bars = Vec::new();
        for e in self.entries() {
            let reps = &e.case.repetitions;
            let med = |f: &dyn Fn(&crate::schema::Boot) -> Option<f64>| {
                let v: Vec<f64> = reps.iter().filter_map(|r| f(&r.boot)).collect();
                if v.is_empty() {
                    None
                } else {
                    Some(model::median(&v))
                }
            };
            let Some(total) = med(&|b| b.total_ms) else {
                continue;
            };
            let setup = med(&|b| b.setup_ms).unwrap_or(0.0);
            let first = med(&|b| b.first_instruction_ms).unwrap_or(0.0);
            let ready = med(&|b| b.ready_ms).unwrap_or(0.0);
            // A Linux guest's console marks (QEMU), from the engine's start.
            let (kernel, init) = match (med(&|b| b.kernel_ms), med(&|b| b.init_ms)) {
                (Some(k), Some(i)) => (k, (i - k).max(0.0)),
                _ => (0.0, 0.0),
            };
            let agent = if kernel > 0.0 {
                (total - kernel - init).max(0.0)
            } else {
                0.0
            };
            let rest = (total - setup - first - ready - kernel - init - agent).max(0.0);
            bars.push(Bar {
                label: if self.many() {
                    format!("{} · {}", e.case.id, self.tag(e.run))
                } else {
                    e.case.id.clone()
                },
                segments: [setup, first, ready, kernel, init, agent, rest]
                    .iter()
                    .zip(phases)
                    .map(|(v, (_, c))| (*v, solid(c)))
                    .collect(),
                interval: None,
                marker: None,
                value_text: fmt("boot_total_ms", total),
            });
        }
        if bars.is_empty() {
            return (
                None,
                "<p class=\"note\">No boot timeline recorded.</p>".into(),
            );
        }
        let text = "<p class=\"note\">From <code>Machine::new</code> to the guest's <code>ready</code> record, medians over repetitions: VMM set-up, starting the vCPU to its first instruction, and the guest's own start-up to ready. (QEMU's probe cases have no inner marks; its Linux guests have the kernel's first console line and <code>Run /init</code>.)</p>".to_string();
        (
            Some(Chart {
                id: "boot".into(),
                title: "Boot timeline per case".into(),
                kind: Kind::Bars(Bars {
                    x_title: "time from VM creation [ms]".into(),
                    legend: phases
                        .iter()
                        .map(|(n, c)| (n.to_string(), solid(*c)))
                        .collect(),
                    bars,
                    marker_name: None,
                }),
            }),
            text,
        )
    }

    pub fn engines(&self) -> (Option<Chart>, String) {
        let mut text = String::new();
        let mut bars = Vec::new();
        for run in self.runs {
            for cmp in run.comparisons.iter().filter(|c| c.axis == "engine") {
                let (Some(a), Some(b)) = (run.case(&cmp.case), run.case(&cmp.baseline_case)) else {
                    continue;
                };
                let m = primary(&a.params.workload.name);
                if cmp.metric != m {
                    continue;
                }
                if text.is_empty() {
                    text.push_str("<table><thead><tr><th>workload · device</th><th>metric</th><th class=\"n\">case</th><th class=\"n\">baseline engine</th><th class=\"n\">ratio [95%]</th><th>verdict</th></tr></thead><tbody>");
                }
                let med = |c: &Case| {
                    c.stats.get(m).map_or("–".into(), |s| {
                        format!(
                            "{} [{}, {}]",
                            fmt(m, s.median),
                            fmt(m, s.ci95_median.0),
                            fmt(m, s.ci95_median.1)
                        )
                    })
                };
                let verdict = model::verdict(m, cmp.ratio.ratio, cmp.ratio.significant);
                let _ = write!(
                    text,
                    "<tr><td>{} · {}</td><td>{m} {}</td><td class=\"n\">{}: {}</td><td class=\"n\">{}: {}</td><td class=\"n\">×{:.2} [{:.2}, {:.2}]</td><td class=\"{}\">{verdict}</td></tr>",
                    escape(&a.params.workload.name),
                    escape(&device(&a.params)),
                    model::direction(m).arrow(),
                    escape(&a.params.engine),
                    med(a),
                    escape(&b.params.engine),
                    med(b),
                    cmp.ratio.ratio,
                    cmp.ratio.ci95.0,
                    cmp.ratio.ci95.1,
                    match verdict { "better" => "better", "worse" => "worse", _ => "same" },
                );
                bars.push(Bar {
                    label: format!(
                        "{} · {} {} / {}",
                        a.params.workload.name,
                        device(&a.params),
                        a.params.engine,
                        b.params.engine
                    ),
                    segments: vec![(
                        cmp.ratio.ratio,
                        Paint::Series {
                            rgb: device_rgb(&device(&a.params)),
                            faded: false,
                        },
                    )],
                    interval: Some(cmp.ratio.ci95),
                    marker: Some(1.0),
                    value_text: format!(
                        "×{:.2} ({})",
                        cmp.ratio.ratio,
                        model::direction(m).words()
                    ),
                });
            }
        }
        if bars.is_empty() {
            return (None, "<p class=\"note\">This run compared no engines; <code>scenarios/engines.toml</code> runs the same workloads on vmbench and on QEMU.</p>".into());
        }
        text.push_str("</tbody></table>");
        (
            Some(Chart {
                id: "engines".into(),
                title: "Engines: ratio of the primary metric, same workload and device".into(),
                kind: Kind::Bars(Bars {
                    x_title: "ratio of medians (case engine / baseline engine), 95% interval"
                        .into(),
                    legend: Vec::new(),
                    bars,
                    marker_name: Some("1 = same".into()),
                }),
            }),
            text,
        )
    }

    /// One chart per case id present in several runs: its median and interval by run.
    pub fn history(&self) -> Vec<Chart> {
        let mut out = Vec::new();
        if !self.many() {
            return out;
        }
        let mut order: Vec<&Run> = self.runs.iter().collect();
        order.sort_by(|a, b| a.started_at.cmp(&b.started_at));
        let mut seen: Vec<String> = Vec::new();
        for e in self.entries() {
            if seen.contains(&e.case.id) {
                continue;
            }
            seen.push(e.case.id.clone());
            let m = primary(&e.case.params.workload.name);
            let u = model::unit(m);
            let runs: Vec<(&Run, &Case)> = order
                .iter()
                .filter_map(|r| r.case(&e.case.id).map(|c| (*r, c)))
                .collect();
            if runs.len() < 2 {
                continue;
            }
            let (mut points, mut errors, mut cats) = (Vec::new(), Vec::new(), Vec::new());
            for (i, (r, c)) in runs.iter().enumerate() {
                cats.push(self.tag(r));
                if let Some(s) = c.stats.get(m) {
                    points.push((i as f64, s.median * u.scale));
                    errors.push(Some((s.ci95_median.0 * u.scale, s.ci95_median.1 * u.scale)));
                }
            }
            out.push(Chart {
                id: format!("history-{}", out.len() + 1),
                title: format!("{}: {} across runs", e.case.id, u.name),
                kind: Kind::Lines(Lines {
                    x_title: "run (host @ revision, oldest first)".into(),
                    y_title: format!("{} [{}]", u.name, u.unit),
                    x_log: false,
                    x_categories: Some(cats),
                    y_from_zero: false,
                    series: vec![Series {
                        name: format!(
                            "median with 95% interval ({} {})",
                            m,
                            model::direction(m).arrow()
                        ),
                        paint: paint(e.case),
                        points,
                        errors,
                        dots: true,
                        marks: Vec::new(),
                    }],
                }),
            });
        }
        out
    }

    pub fn failures(&self, body: &mut String) {
        let mut any = false;
        for e in self.entries() {
            let head = format!(
                "<h3 class=\"id\">{}{}</h3>",
                escape(&e.case.id),
                if self.many() {
                    format!(" · {}", escape(&self.tag(e.run)))
                } else {
                    String::new()
                }
            );
            match &e.case.status {
                Status::Ok => {}
                Status::Failed {
                    reason,
                    console_tail,
                } => {
                    any = true;
                    let _ = write!(body, "{head}<p><span class=\"failed\">failed</span> after {} repetition(s): {}</p><pre>{}</pre>", e.case.repetitions.len(), escape(reason), if console_tail.is_empty() { "(no console output)".to_string() } else { escape(&console_tail.join("\n")) });
                }
                Status::Pending => {
                    any = true;
                    let _ = write!(body, "{head}<p><span class=\"pending\">pending</span>: {} of {} repetitions ran before the run stopped{}.</p>", e.case.repetitions.len(), e.run.scenario.run.repetitions, e.run.interrupted.as_deref().map(|r| format!(" ({})", escape(r))).unwrap_or_default());
                }
            }
        }
        if !any {
            body.push_str("<p>Every case finished.</p>");
        }
    }
}

/// `host @ rev7`, short enough for chart labels.
pub fn short_run(run: &Run) -> String {
    let rev = &run.environment.vmbench.git_revision;
    format!(
        "{} @ {}{}",
        run.environment.host.hostname,
        rev.get(..7).unwrap_or(rev),
        if run.environment.vmbench.dirty == Some(true) {
            "+"
        } else {
            ""
        }
    )
}
