//! What the figures mean: each workload's primary metric and its better direction, units,
//! devices and their colours, percentiles, the CDF downsampling, the ratio against a
//! baseline, and the exit-cost model of the "why" panel.

use crate::chart::{Paint, Rgb};
use crate::schema::{Case, Params, Run, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

impl Better {
    pub fn arrow(self) -> &'static str {
        match self {
            Better::Higher => "↑",
            Better::Lower => "↓",
        }
    }

    pub fn words(self) -> &'static str {
        match self {
            Better::Higher => "higher is better",
            Better::Lower => "lower is better",
        }
    }
}

/// Rates are better high; times, counts per operation and CPU are better low.
pub fn direction(metric: &str) -> Better {
    if metric.ends_with("_per_sec") {
        Better::Higher
    } else {
        Better::Lower
    }
}

/// The metric a workload is judged by (the same choice as the terminal summary).
pub fn primary(workload: &str) -> &'static str {
    match workload {
        "net-rr" | "ping" => "latency_p50_ns",
        "hello" => "boot_total_ms",
        "calibrate" => "pio_exit_ns",
        _ => "ops_per_sec",
    }
}

/// How a metric is shown: multiply by `scale`, then append `unit`.
pub struct Unit {
    pub scale: f64,
    pub unit: &'static str,
    pub name: &'static str,
}

pub fn unit(metric: &str) -> Unit {
    let (scale, unit, name) = match metric {
        "ops_per_sec" => (1.0, "ops/s", "operations per second"),
        "gbit_per_sec" => (1.0, "Gbit/s", "throughput"),
        "mb_per_sec" => (1.0, "MB/s", "throughput"),
        "exits_per_op" => (1.0, "exits/op", "exits to vmbench per operation"),
        "kvm_exits_per_op" => (1.0, "exits/op", "all KVM exits per operation"),
        "kicks_per_op" => (1.0, "kicks/op", "guest notifications per operation"),
        "interrupts_per_op" => (1.0, "irqs/op", "device interrupts per operation"),
        "vmm_cpu_us_per_op" => (1.0, "µs/op", "VMM CPU per operation"),
        "latency_p50_ns" => (1e-3, "µs", "median latency"),
        "boot_total_ms" => (1.0, "ms", "boot to ready"),
        "pio_exit_ns" => (1e-3, "µs", "PIO exit round trip"),
        "self_ipi_ns" => (1e-3, "µs", "interrupt round trip (self-IPI)"),
        m if m.ends_with("_ns") => (1e-3, "µs", "time"),
        m if m.ends_with("_ms") => (1.0, "ms", "time"),
        _ => (1.0, "", "value"),
    };
    Unit { scale, unit, name }
}

/// `v` of `metric` in its unit, to 3-4 significant digits.
pub fn fmt(metric: &str, v: f64) -> String {
    let u = unit(metric);
    format!("{} {}", num(v * u.scale), u.unit)
        .trim_end()
        .to_string()
}

/// A number to about four significant digits, grouped in thousands.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.3} M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1} k", v / 1e3)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The device a case exercises: `e1000`, `virtio-net`, `ide`, `virtio-blk` or `none`.
pub fn device(p: &Params) -> String {
    match (p.nic.as_str(), p.disk.as_str()) {
        ("virtio", _) => "virtio-net".into(),
        (nic, _) if nic != "none" => nic.into(),
        (_, "virtio") => "virtio-blk".into(),
        (_, disk) if disk != "none" => disk.into(),
        _ => "none".into(),
    }
}

/// One colour per device in every chart (Okabe-Ito, readable for colour-blind readers).
pub fn device_rgb(device: &str) -> Rgb {
    match device {
        "e1000" => Rgb(0xe6, 0x9f, 0x00),
        "virtio-net" => Rgb(0x00, 0x72, 0xb2),
        "ide" => Rgb(0xd5, 0x5e, 0x00),
        "virtio-blk" => Rgb(0x00, 0x9e, 0x73),
        "none" => Rgb(0x88, 0x88, 0x88),
        other => {
            let h = other
                .bytes()
                .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
            [
                Rgb(0xcc, 0x79, 0xa7),
                Rgb(0x56, 0xb4, 0xe9),
                Rgb(0x6a, 0x3d, 0x9a),
            ][h as usize % 3]
        }
    }
}

/// The case's series paint: its device's colour, half-transparent on QEMU.
pub fn paint(c: &Case) -> Paint {
    Paint::Series {
        rgb: device_rgb(&device(&c.params)),
        faded: c.params.engine == "qemu",
    }
}

/// The `k`-th variant of a device colour, for several cases of one device in one chart: the
/// same hue, darker or lighter.
pub fn shaded(p: Paint, k: usize) -> Paint {
    let Paint::Series { rgb, faded } = p else {
        return p;
    };
    let mix = |c: u8, to: f64, t: f64| (f64::from(c) + (to - f64::from(c)) * t).round() as u8;
    let (to, t) = match k % 5 {
        0 => (0.0, 0.0),
        1 => (0.0, 0.35),
        2 => (255.0, 0.4),
        3 => (0.0, 0.6),
        _ => (255.0, 0.65),
    };
    Paint::Series {
        rgb: Rgb(mix(rgb.0, to, t), mix(rgb.1, to, t), mix(rgb.2, to, t)),
        faded,
    }
}

/// The id without its `workload=` coordinate (charts are per workload already).
pub fn short_label(id: &str) -> String {
    let parts: Vec<&str> = id
        .split(',')
        .filter(|p| !p.starts_with("workload="))
        .collect();
    if parts.is_empty() {
        id.to_string()
    } else {
        parts.join(",")
    }
}

/// Linear-interpolated quantile of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (i, frac) = (pos.floor() as usize, pos - pos.floor());
    let next = sorted[(i + 1).min(sorted.len() - 1)];
    sorted[i] + (next - sorted[i]) * frac
}

pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    s.sort_by(f64::total_cmp);
    quantile(&s, 0.5)
}

/// `", one in k"` when a repetition of the case kept only every k-th raw sample of `name`
/// (the largest k), else nothing.
pub fn subsampled(c: &Case, name: &str) -> String {
    c.repetitions
        .iter()
        .filter_map(|r| r.sample_strides.get(name).copied())
        .max()
        .filter(|&k| k > 1)
        .map(|k| format!(", one in {k}"))
        .unwrap_or_default()
}

/// Every sample of `name` over the case's repetitions, sorted.
pub fn pooled(c: &Case, name: &str) -> Vec<f64> {
    let mut all: Vec<f64> = c
        .repetitions
        .iter()
        .flat_map(|r| r.samples.get(name).into_iter().flatten().copied())
        .filter(|x| x.is_finite())
        .collect();
    all.sort_by(f64::total_cmp);
    all
}

/// At most ~250 points of the empirical CDF of sorted samples: even steps in probability,
/// denser in the tail so that p99.9 keeps its shape. Exact percentiles are computed from all
/// samples, not from these points.
pub fn cdf_points(sorted: &[f64]) -> Vec<(f64, f64)> {
    if sorted.is_empty() {
        return Vec::new();
    }
    let mut qs: Vec<f64> = (0..=200).map(|i| f64::from(i) / 200.0).collect();
    for k in 1..=40 {
        qs.push(0.99 + 0.0099 * f64::from(k) / 40.0);
    }
    qs.push(0.9999);
    qs.sort_by(f64::total_cmp);
    qs.dedup();
    qs.into_iter().map(|q| (quantile(sorted, q), q)).collect()
}

/// The change of `metric` from `base` to `case`: ratio of medians of the per-repetition
/// values with a 95 % bootstrap interval (2,000 resamples, fixed seed: reproducible).
pub fn change(case: &[f64], base: &[f64]) -> Option<(f64, f64, f64)> {
    let (mc, mb) = (median(case), median(base));
    if !(mc.is_finite() && mb.is_finite() && mb > 0.0) {
        return None;
    }
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let mut ratios = Vec::with_capacity(2000);
    for _ in 0..2000 {
        let a: Vec<f64> = (0..case.len()).map(|_| case[next(case.len())]).collect();
        let b: Vec<f64> = (0..base.len()).map(|_| base[next(base.len())]).collect();
        let (ma, mb) = (median(&a), median(&b));
        if mb > 0.0 {
            ratios.push(ma / mb);
        }
    }
    ratios.sort_by(f64::total_cmp);
    Some((mc / mb, quantile(&ratios, 0.025), quantile(&ratios, 0.975)))
}

/// The verdict on a ratio of `metric`.
pub fn verdict(metric: &str, ratio: f64, significant: bool) -> &'static str {
    if !significant {
        return "no significant difference";
    }
    match (direction(metric), ratio > 1.0) {
        (Better::Higher, true) | (Better::Lower, false) => "better",
        (Better::Higher, false) | (Better::Lower, true) => "worse",
    }
}

/// Warnings on a case's figures: high spread, too few repetitions, no convergence.
pub fn warnings(run: &Run, c: &Case) -> Vec<String> {
    let mut out = Vec::new();
    match &c.status {
        Status::Pending => out.push(format!(
            "pending: {} of {} repetitions ran",
            c.repetitions.len(),
            run.scenario.run.repetitions
        )),
        Status::Failed { .. } => out.push("failed".into()),
        Status::Ok => {}
    }
    if let Some(s) = c.stats.get(primary(&c.params.workload.name)) {
        if let Some(cv) = s.cv {
            if cv > 0.10 {
                out.push(format!("CV {:.0}% (noisy)", cv * 100.0));
            }
        }
        if s.n < 3 {
            out.push(format!("n={}", s.n));
        }
    }
    if run
        .scenario
        .warnings
        .iter()
        .any(|w| w.contains("--target-ci") && w.contains(&c.id))
    {
        out.push("not converged (--target-ci)".into());
    }
    out
}

/// One repetition's (or a case's median) exit accounting per operation.
#[derive(Debug, Clone, Default)]
pub struct Why {
    /// Measured wall time per operation (1 / ops_per_sec), ns.
    pub time_ns: f64,
    /// Exits to vmbench per op, by reason.
    pub by_reason: Vec<(String, f64)>,
    /// Exits to vmbench per op, by device.
    pub by_device: Vec<(String, f64)>,
    /// Exits per op by register (`"DEVICE read:REG"`), for the devices that count them,
    /// most frequent first.
    pub by_register: Vec<(String, f64)>,
    pub vmbench_exits: f64,
    /// All KVM exits per op (KVM's own counter), where the host offers it.
    pub kvm_exits: Option<f64>,
    /// Cost explained, ns/op: PIO and MMIO exits at their calibrated cost, exits KVM handled
    /// itself (ioeventfd kicks, interrupts) at the ioeventfd cost.
    pub pio_ns: f64,
    pub mmio_ns: f64,
    pub in_kernel_ns: f64,
    pub cpu_us: Option<f64>,
}

impl Why {
    pub fn explained_ns(&self) -> f64 {
        self.pio_ns + self.mmio_ns + self.in_kernel_ns
    }

    pub fn in_kernel_exits(&self) -> Option<f64> {
        self.kvm_exits.map(|k| (k - self.vmbench_exits).max(0.0))
    }
}

/// The "why" figures of a case: medians over its repetitions of the per-op counts, times the
/// run's calibrated costs. `None` without an operation rate or exit counts.
pub fn why(run: &Run, c: &Case) -> Option<Why> {
    let ops = median(&c.values("ops_per_sec"));
    if !(ops.is_finite() && ops > 0.0) {
        return None;
    }
    let reps: Vec<_> = c
        .repetitions
        .iter()
        .filter(|r| !r.exits.per_op.is_empty())
        .collect();
    if reps.is_empty() {
        return None;
    }
    let med_key = |k: &str| {
        let v: Vec<f64> = reps
            .iter()
            .map(|r| r.exits.per_op.get(k).copied().unwrap_or(0.0))
            .collect();
        median(&v)
    };
    let mut keys: Vec<String> = reps
        .iter()
        .flat_map(|r| r.exits.per_op.keys().cloned())
        .collect();
    keys.sort();
    keys.dedup();
    let mut w = Why {
        time_ns: 1e9 / ops,
        vmbench_exits: med_key("total"),
        ..Default::default()
    };
    for k in keys.iter().filter(|k| k.as_str() != "total") {
        if let Some(d) = k.strip_prefix("device:") {
            w.by_device.push((d.to_string(), med_key(k)));
        } else if let Some(r) = k.strip_prefix("register:") {
            w.by_register.push((r.to_string(), med_key(k)));
        } else {
            w.by_reason.push((k.clone(), med_key(k)));
        }
    }
    w.by_register.sort_by(|a, b| b.1.total_cmp(&a.1));
    let kvm = c.values("kvm_exits_per_op");
    if !kvm.is_empty() {
        w.kvm_exits = Some(median(&kvm));
    }
    let cpu = c.values("vmm_cpu_us_per_op");
    if !cpu.is_empty() {
        w.cpu_us = Some(median(&cpu));
    }
    let cost = |k: &str| {
        run.calibration
            .as_ref()
            .and_then(|cal| cal.figures.get(k).copied())
            .unwrap_or(0.0)
    };
    for (reason, n) in &w.by_reason {
        if reason.starts_with("pio") {
            w.pio_ns += n * cost("pio_exit_ns");
        } else if reason.starts_with("mmio") {
            w.mmio_ns += n * cost("mmio_exit_ns");
        }
    }
    w.in_kernel_ns = w.in_kernel_exits().unwrap_or(0.0) * cost("ioeventfd_write_ns");
    Some(w)
}

#[cfg(test)]
mod subsample_tests {
    use super::*;

    #[test]
    fn a_case_whose_raw_samples_were_subsampled_says_by_how_much() {
        let case = |strides: serde_json::Value| -> Case {
            serde_json::from_value(serde_json::json!({
                "id": "engine=qemu,disk=virtio,workload=blk-read",
                "params": {"engine": "qemu", "nic": "none", "disk": "virtio",
                           "workload": {"name": "blk-read"}},
                "probe_exec": "blk-read qd=32",
                "status": {"state": "ok"},
                "repetitions": [
                    {"index": 0, "samples": {"latency_ns": [1.0, 2.0]}, "sample_strides": strides},
                    {"index": 1, "samples": {"latency_ns": [3.0]}}
                ]
            }))
            .unwrap()
        };
        assert_eq!(
            subsampled(&case(serde_json::json!({"latency_ns": 15})), "latency_ns"),
            ", one in 15"
        );
        assert_eq!(subsampled(&case(serde_json::json!({})), "latency_ns"), "");
        assert_eq!(
            subsampled(&case(serde_json::json!({"latency_ns": 1})), "latency_ns"),
            ""
        );
    }
}
