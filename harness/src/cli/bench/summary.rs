//! The summary table on stdout: each case's primary figure with its interval, the exits and
//! VMM CPU per operation that explain it, and each comparison as a ratio.

use std::io::Write;
use std::time::Duration;

use crate::results::{CaseStatus, RunResults};

fn fmt_value(metric: &str, v: f64) -> String {
    if metric.ends_with("_ns") {
        format!("{:.2} µs", v / 1e3)
    } else if metric.ends_with("_ms") {
        format!("{v:.2} ms")
    } else if metric == "mbit_per_sec" {
        format!("{v:.1} Mbit/s")
    } else if metric == "ops_per_sec" {
        if v >= 1e6 {
            format!("{:.3} M/s", v / 1e6)
        } else {
            format!("{:.1} k/s", v / 1e3)
        }
    } else {
        format!("{v:.3}")
    }
}

pub fn print(
    doc: &RunResults,
    out: &mut dyn Write,
    measured: Option<Duration>,
    wall: Duration,
) -> std::io::Result<()> {
    writeln!(
        out,
        "\n{} — {}",
        doc.scenario.name, doc.scenario.description
    )?;
    if doc.environment.kvm.emulated_host {
        writeln!(
            out,
            "measured inside the emulated AMD-V host (QEMU-TCG, bench --host emulated): these figures check function and are not real timings"
        )?;
    }
    if let Some(c) = &doc.calibration {
        let f = |k: &str| {
            c.figures
                .get(k)
                .map(|v| format!("{:.1} µs", v / 1e3))
                .unwrap_or_else(|| "-".into())
        };
        writeln!(
            out,
            "this host: {} ({}, guest kernel code {}), exit costs: PIO {}, MMIO {}, ioeventfd {}, interrupt (self-IPI) {}",
            doc.environment.host.cpu_model,
            doc.environment.kvm.flavour,
            if doc.environment.kvm.cpl0_native {
                "native"
            } else {
                "emulated"
            },
            f("pio_exit_ns"),
            f("mmio_exit_ns"),
            f("ioeventfd_write_ns"),
            f("self_ipi_ns")
        )?;
    }
    let w = doc
        .cases
        .iter()
        .map(|c| c.id.len())
        .max()
        .unwrap_or(4)
        .max(4);
    writeln!(
        out,
        "\n{:<w$}  {:>16}  {:>26}  {:>6}  {:>9}  {:>9}  {:>8}  {:>8}  {:>10}  {:>4}",
        "case",
        "median",
        "95% CI of median",
        "CV%",
        "to vmbench",
        "all KVM",
        "kicks",
        "irqs",
        "CPU µs/op",
        "n"
    )?;
    for c in &doc.cases {
        let (metric, _) = super::primary(c.params.workload.kind());
        match &c.status {
            CaseStatus::Failed { reason, .. } => {
                writeln!(out, "{:<w$}  FAILED: {reason}", c.id)?;
                continue;
            }
            CaseStatus::Pending if c.repetitions.is_empty() => {
                writeln!(out, "{:<w$}  not run", c.id)?;
                continue;
            }
            _ => {}
        }
        let Some(s) = c.stats.get(metric) else {
            writeln!(out, "{:<w$}  no {metric} figure", c.id)?;
            continue;
        };
        let med = |m: &str| {
            c.stats
                .get(m)
                .map(|s| format!("{:.2}", s.median))
                .unwrap_or_else(|| "-".into())
        };
        writeln!(
            out,
            "{:<w$}  {:>16}  {:>26}  {:>6}  {:>10}  {:>9}  {:>8}  {:>8}  {:>10}  {:>4}",
            c.id,
            format!("{} {}", fmt_value(metric, s.median), short(metric)),
            format!(
                "[{}, {}]",
                fmt_value(metric, s.ci95_median.0),
                fmt_value(metric, s.ci95_median.1)
            ),
            s.cv.map(|v| format!("{:.1}", v * 100.0))
                .unwrap_or_else(|| "-".into()),
            med("exits_per_op"),
            med("kvm_exits_per_op"),
            med("kicks_per_op"),
            med("interrupts_per_op"),
            med("vmm_cpu_us_per_op"),
            s.n
        )?;
        if c.status == CaseStatus::Pending {
            // Cut short (Ctrl-C): the figures are those of the repetitions it finished.
            writeln!(out, "{:<w$}  (pending: {} repetition(s) ran)", "", s.n)?;
        }
    }
    writeln!(
        out,
        "exits per operation: `to vmbench` are handled by our VMM in user space; `all KVM` is \
         KVM's own counter, which also counts exits the kernel handles itself (ioeventfd kicks)"
    )?;
    writeln!(
        out,
        "kicks and irqs per operation: the device's notifications from the guest (virtio \
         ioeventfd writes) and its interrupts to the guest, over the measured window"
    )?;
    boot_timeline(doc, out, w)?;
    if !doc.comparisons.is_empty() {
        writeln!(
            out,
            "\ncomparisons (case / baseline, ratio of medians, 95% CI):"
        )?;
        for cmp in &doc.comparisons {
            let kind = doc.case(&cmp.case).map(|c| c.params.workload.kind());
            let Some((metric, _)) = kind.map(super::primary) else {
                continue;
            };
            if cmp.metric != metric && cmp.metric != "exits_per_op" {
                continue;
            }
            writeln!(
                out,
                "  {} / {}: {} x{:.2} [{:.2}, {:.2}]{}",
                cmp.case,
                cmp.baseline,
                cmp.metric,
                cmp.ratio.ratio,
                cmp.ratio.ci95.0,
                cmp.ratio.ci95.1,
                if cmp.ratio.significant {
                    ""
                } else {
                    " (not significant)"
                }
            )?;
        }
    }
    for warn in &doc.scenario.warnings {
        writeln!(out, "note: {warn}")?;
    }
    match measured {
        Some(m) => writeln!(
            out,
            "\nwall time {:.1} s, of which {:.1} s inside measurement windows",
            wall.as_secs_f64(),
            m.as_secs_f64()
        )?,
        None => writeln!(out, "\nwall time {:.1} s", wall.as_secs_f64())?,
    }
    Ok(())
}

/// The Linux guests' boot marks, from the engine's start: the kernel's first console line,
/// `Run /init` (the agent starts) and the agent's `ready` (its modules loaded).
fn boot_timeline(doc: &RunResults, out: &mut dyn Write, w: usize) -> std::io::Result<()> {
    let marks = [
        ("boot_kernel_ms", "kernel"),
        ("boot_init_ms", "Run /init"),
        ("boot_total_ms", "agent ready"),
    ];
    let linux: Vec<_> = doc
        .cases
        .iter()
        .filter(|c| c.stats.contains_key("boot_init_ms"))
        .collect();
    if linux.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "\nLinux boot timeline, seconds from the engine's start (median [95% CI]):"
    )?;
    for c in linux {
        let cells: Vec<String> = marks
            .iter()
            .map(|(m, label)| match c.stats.get(*m) {
                Some(s) => format!(
                    "{label} {:.2} [{:.2}, {:.2}]",
                    s.median / 1e3,
                    s.ci95_median.0 / 1e3,
                    s.ci95_median.1 / 1e3
                ),
                None => format!("{label} -"),
            })
            .collect();
        writeln!(out, "  {:<w$}  {}", c.id, cells.join("  "))?;
    }
    Ok(())
}

fn short(metric: &str) -> &'static str {
    match metric {
        "ops_per_sec" => "ops",
        "latency_p50_ns" => "p50",
        "boot_total_ms" => "boot",
        "pio_exit_ns" => "PIO",
        _ => "",
    }
}
