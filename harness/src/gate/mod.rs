//! `vmbench gate`: does the current run regress against the baseline? Per case and metric,
//! the ratio of medians with its bootstrap interval (`stats::ratio_of_medians`) and a one-sided
//! permutation test on the per-repetition values, p-values adjusted across the whole family
//! with Holm's method. A case fails only when its adjusted p is below alpha *and* its interval
//! lies wholly beyond the threshold in the metric's bad direction. docs/ci.md explains the
//! choices.

pub mod env;
mod export;
pub mod noise;
mod output;
pub mod permutation;

#[cfg(test)]
pub(crate) mod synthetic;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use crate::cli::bench::primary;
use crate::exitcode::{Failed, Inconclusive};
use crate::results::{self, CaseResult, CaseStatus, RunResults};
use crate::stats::{self, BootstrapOptions};

pub use env::{differences, host_fingerprint};
pub use noise::NoiseFloors;

/// Fewer repetitions than this on either side cannot support a verdict.
pub const MIN_REPETITIONS: usize = 3;

/// `--threshold`: a percentage, checked where parsed as [`evaluate`] checks it.
const THRESHOLD: crate::cli::num::FloatRange =
    crate::cli::num::FloatRange::open(0.0, 100.0, "percent");
/// `--alpha`: a probability, above 0 and below 1.
const ALPHA: crate::cli::num::FloatRange =
    crate::cli::num::FloatRange::open(0.0, 1.0, "probability");

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The baseline results.json.
    #[arg(long, required_unless_present_any = ["aa", "ab"], conflicts_with_all = ["aa", "ab"])]
    pub baseline: Option<PathBuf>,
    /// The results.json to judge against the baseline.
    #[arg(long, required_unless_present_any = ["aa", "ab"], conflicts_with_all = ["aa", "ab"])]
    pub current: Option<PathBuf>,
    /// A/B: gate the results of `bench --ab` (or `--ab-rev`): the other build is the
    /// baseline, this build the current.
    #[arg(long, value_name = "RESULTS", conflicts_with = "aa")]
    pub ab: Option<PathBuf>,
    /// A/A: gate the two halves of one run against each other, repetitions taken in the
    /// order A B B A (as `bench --aa` runs them): what the gate says when nothing changed.
    #[arg(long, value_name = "RESULTS")]
    pub aa: Option<PathBuf>,
    /// Smallest change, in percent, that counts as a regression.
    #[arg(long, value_name = "PCT", default_value_t = 5.0, value_parser = crate::cli::num::float(THRESHOLD))]
    pub threshold: f64,
    /// Family-wise error rate: the chance that a run with no regression fails the gate.
    #[arg(long, value_name = "A", default_value_t = 0.05, value_parser = crate::cli::num::float(ALPHA))]
    pub alpha: f64,
    /// Also gate on this metric (repeatable); the primary metric of each case always counts.
    #[arg(long = "metric", value_name = "NAME")]
    pub metrics: Vec<String>,
    /// Exit 3 when any case is inconclusive, and refuse thresholds below the noise floor.
    #[arg(long)]
    pub strict: bool,
    /// Compare files from different hosts, scenario files or guest images anyway.
    #[arg(long)]
    pub allow_env_mismatch: bool,
    /// Noise floors to use (default: results/noise/<host fingerprint>.json, if it exists).
    #[arg(long, value_name = "FILE", conflicts_with = "no_noise_floors")]
    pub noise: Option<PathBuf>,
    /// Use the threshold as given, whatever noise floors were measured.
    #[arg(long)]
    pub no_noise_floors: bool,
    /// Print the verdicts as JSON.
    #[arg(long)]
    pub json: bool,
    /// Print a Markdown table (for a pull-request comment or a job summary).
    #[arg(long)]
    pub markdown: bool,
    /// Also write github-action-benchmark JSON: FILE-bigger.json (customBiggerIsBetter) and
    /// FILE-smaller.json (customSmallerIsBetter) from the current run.
    #[arg(long, value_name = "PREFIX")]
    pub github_benchmark: Option<PathBuf>,
    /// Also write the current run in Bencher Metric Format (value, lower_value, upper_value).
    #[arg(long, value_name = "FILE")]
    pub bencher: Option<PathBuf>,
    /// Also write JUnit XML: a test case per case and metric, a regression as a failure.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("--threshold must be a percentage between 0 and 100, got {0}")]
    Threshold(f64),
    #[error("--alpha must be strictly between 0 and 1, got {0}")]
    Alpha(f64),
    #[error("--metric {0}: cannot tell whether bigger or smaller is better; gate on metrics named *_per_sec, *_ns, *_ms, *_per_op or exits*")]
    UnknownDirection(String),
    #[error("the runs are not comparable ({0}); compare runs of one host, scenario file and image set, or pass --allow-env-mismatch")]
    EnvMismatch(String),
    #[error("no case is in both runs (baseline has {baseline}, current has {current} cases); were they made from the same scenario?")]
    NothingInCommon { baseline: usize, current: usize },
    #[error("--strict: the threshold {threshold}% is below the measured noise floor of {cases}; raise --threshold or add repetitions")]
    BelowNoiseFloor { threshold: f64, cases: String },
}

/// Which way a metric gets worse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Throughput: a drop is a regression.
    BiggerIsBetter,
    /// Latency, exits and CPU per operation, boot time: a rise is a regression.
    SmallerIsBetter,
}

/// The direction of a metric named on the command line, from its name.
pub fn direction_of(metric: &str) -> Option<Direction> {
    if metric.ends_with("per_sec") {
        Some(Direction::BiggerIsBetter)
    } else if metric.ends_with("_ns")
        || metric.ends_with("_ms")
        || metric.ends_with("_per_op")
        || metric.starts_with("exits")
        || metric.starts_with("latency")
    {
        Some(Direction::SmallerIsBetter)
    } else {
        None
    }
}

/// What the gate was asked.
#[derive(Debug, Clone)]
pub struct GateOptions {
    pub threshold_pct: f64,
    pub alpha: f64,
    pub metrics: Vec<String>,
    pub strict: bool,
    pub allow_env_mismatch: bool,
    pub bootstrap: BootstrapOptions,
}

impl Default for GateOptions {
    fn default() -> Self {
        GateOptions {
            threshold_pct: 5.0,
            alpha: 0.05,
            metrics: Vec::new(),
            strict: false,
            allow_env_mismatch: false,
            bootstrap: BootstrapOptions::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Beyond the threshold in the bad direction, with adjusted p below alpha.
    Regression,
    /// Beyond the threshold in the good direction.
    Improved,
    /// The interval rules out a regression as large as the threshold.
    Pass,
    /// The data cannot tell: too few repetitions, or noise wider than the threshold.
    Inconclusive,
}

/// One case and metric.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub case: String,
    pub metric: String,
    pub direction: Direction,
    pub n_baseline: usize,
    pub n_current: usize,
    pub baseline_median: Option<f64>,
    pub current_median: Option<f64>,
    /// current / baseline medians.
    pub ratio: Option<f64>,
    /// Bootstrap interval of the ratio.
    pub interval: Option<(f64, f64)>,
    /// One-sided permutation p-value for "worse", before and after Holm's adjustment.
    pub p: Option<f64>,
    pub p_adjusted: Option<f64>,
    /// The threshold applied to this row: the requested one, or the noise floor if larger.
    pub threshold_pct: f64,
    pub noise_floor_pct: Option<f64>,
    pub verdict: Verdict,
    pub why: String,
}

impl Row {
    /// The change in percent, `(ratio - 1) * 100`.
    pub fn change_pct(&self) -> Option<f64> {
        self.ratio.map(|r| (r - 1.0) * 100.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Regression,
    Inconclusive,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub baseline: String,
    pub current: String,
    pub threshold_pct: f64,
    pub alpha: f64,
    /// The multiple-comparison adjustment used.
    pub correction: &'static str,
    pub rows: Vec<Row>,
    /// Cases in only one run, environment differences that were allowed, noise-floor notes.
    pub notes: Vec<String>,
    pub outcome: Outcome,
}

impl Report {
    pub fn count(&self, v: Verdict) -> usize {
        self.rows.iter().filter(|r| r.verdict == v).count()
    }
}

/// A row before the family-wide adjustment.
struct Pending {
    row: Row,
    min_attainable_p: Option<f64>,
}

/// Judges `current` against `baseline`. Pure: no I/O.
pub fn evaluate(
    baseline: &RunResults,
    current: &RunResults,
    opts: &GateOptions,
    floors: &NoiseFloors,
) -> Result<Report, GateError> {
    if !(opts.threshold_pct > 0.0 && opts.threshold_pct < 100.0) {
        return Err(GateError::Threshold(opts.threshold_pct));
    }
    if !(opts.alpha > 0.0 && opts.alpha < 1.0) {
        return Err(GateError::Alpha(opts.alpha));
    }
    for m in &opts.metrics {
        if direction_of(m).is_none() {
            return Err(GateError::UnknownDirection(m.clone()));
        }
    }
    let mut notes = Vec::new();
    let diffs = differences(baseline, current);
    if !diffs.is_empty() {
        if !opts.allow_env_mismatch {
            return Err(GateError::EnvMismatch(diffs.join("; ")));
        }
        notes.push(format!(
            "compared despite environment differences (--allow-env-mismatch): {}",
            diffs.join("; ")
        ));
    }
    let common = current
        .cases
        .iter()
        .filter(|c| baseline.case(&c.id).is_some())
        .count();
    if common == 0 {
        return Err(GateError::NothingInCommon {
            baseline: baseline.cases.len(),
            current: current.cases.len(),
        });
    }
    for c in &baseline.cases {
        if current.case(&c.id).is_none() {
            notes.push(format!("case {} is only in the baseline", c.id));
        }
    }

    let mut pending = Vec::new();
    let mut below_floor = Vec::new();
    for cur in &current.cases {
        let Some(base) = baseline.case(&cur.id) else {
            notes.push(format!("case {} is only in the current run", cur.id));
            continue;
        };
        let (primary_metric, bigger) = primary(cur.params.workload.kind());
        let mut metrics = vec![(
            primary_metric.to_string(),
            if bigger {
                Direction::BiggerIsBetter
            } else {
                Direction::SmallerIsBetter
            },
        )];
        for m in &opts.metrics {
            if !metrics.iter().any(|(n, _)| n == m) {
                // Checked above.
                if let Some(d) = direction_of(m) {
                    metrics.push((m.clone(), d));
                }
            }
        }
        for (metric, direction) in metrics {
            let floor = floors.get(&cur.id, &metric);
            let threshold_pct = match floor {
                Some(f) if f > opts.threshold_pct => {
                    below_floor.push(format!("{} {metric} ({f:.1}%)", cur.id));
                    f
                }
                _ => opts.threshold_pct,
            };
            let spec = RowSpec {
                metric,
                direction,
                threshold_pct,
                floor,
                seed: opts.bootstrap.seed ^ (pending.len() as u64).wrapping_mul(0x9e37_79b9),
            };
            pending.push(compare(base, cur, spec, &opts.bootstrap));
        }
    }
    if !below_floor.is_empty() {
        if opts.strict {
            return Err(GateError::BelowNoiseFloor {
                threshold: opts.threshold_pct,
                cases: below_floor.join(", "),
            });
        }
        notes.push(format!(
            "--threshold {}% is below this host's measured noise floor for {}; those rows use their floor",
            opts.threshold_pct,
            below_floor.join(", ")
        ));
    }

    // Holm over every row that has a p-value: the whole family of comparisons.
    let tested: Vec<usize> = (0..pending.len())
        .filter(|&i| pending[i].row.p.is_some())
        .collect();
    let ps: Vec<f64> = tested.iter().filter_map(|&i| pending[i].row.p).collect();
    let adjusted = permutation::holm(&ps);
    for (&i, &a) in tested.iter().zip(&adjusted) {
        pending[i].row.p_adjusted = Some(a);
    }
    let family = ps.len();
    let rows: Vec<Row> = pending
        .into_iter()
        .map(|p| decide(p, opts.alpha, family))
        .collect();
    let outcome = if rows.iter().any(|r| r.verdict == Verdict::Regression) {
        Outcome::Regression
    } else if rows.iter().any(|r| r.verdict == Verdict::Inconclusive) {
        Outcome::Inconclusive
    } else {
        Outcome::Pass
    };
    Ok(Report {
        baseline: baseline.run_id.clone(),
        current: current.run_id.clone(),
        threshold_pct: opts.threshold_pct,
        alpha: opts.alpha,
        correction: "holm",
        rows,
        notes,
        outcome,
    })
}

/// What one row compares, and how.
struct RowSpec {
    metric: String,
    direction: Direction,
    threshold_pct: f64,
    floor: Option<f64>,
    /// For the permutation test's random arrangements (large groups only).
    seed: u64,
}

/// Everything but the verdict of one row (that needs the family's adjusted p-values).
fn compare(
    base: &CaseResult,
    cur: &CaseResult,
    spec: RowSpec,
    bootstrap: &BootstrapOptions,
) -> Pending {
    let RowSpec {
        metric,
        direction,
        threshold_pct,
        floor,
        seed,
    } = spec;
    let metric = metric.as_str();
    let (b, c) = (base.metric_values(metric), cur.metric_values(metric));
    let median = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        (!s.is_empty()).then(|| stats::percentile(&s, 50.0))
    };
    let mut row = Row {
        case: cur.id.clone(),
        metric: metric.to_string(),
        direction,
        n_baseline: b.len(),
        n_current: c.len(),
        baseline_median: median(&b),
        current_median: median(&c),
        ratio: None,
        interval: None,
        p: None,
        p_adjusted: None,
        threshold_pct,
        noise_floor_pct: floor,
        verdict: Verdict::Inconclusive,
        why: String::new(),
    };
    let mut min_attainable_p = None;
    if let CaseStatus::Failed { reason, .. } = &cur.status {
        row.verdict = Verdict::Regression;
        row.why = format!("the case failed in the current run: {reason}");
    } else if let CaseStatus::Failed { reason, .. } = &base.status {
        row.why = format!("the case failed in the baseline run: {reason}");
    } else if b.is_empty() || c.is_empty() {
        row.why = format!("{metric} was not measured in both runs");
    } else {
        match stats::ratio_of_medians(&c, &b, bootstrap) {
            Err(e) => row.why = format!("cannot compare {metric}: {e}"),
            Ok(r) => {
                row.ratio = Some(r.ratio);
                row.interval = Some(r.ci95);
                if b.len() < MIN_REPETITIONS || c.len() < MIN_REPETITIONS {
                    row.why = format!(
                        "too few repetitions ({} baseline, {} current): at least {MIN_REPETITIONS} each",
                        b.len(),
                        c.len()
                    );
                } else {
                    let larger_is_bad = direction == Direction::SmallerIsBetter;
                    if let Some(p) = permutation::one_sided(&b, &c, larger_is_bad, seed) {
                        row.p = Some(p.p);
                        min_attainable_p = Some(p.min_attainable);
                    }
                }
            }
        }
    }
    Pending {
        row,
        min_attainable_p,
    }
}

/// The verdict of a row with its adjusted p-value in place.
fn decide(p: Pending, alpha: f64, family: usize) -> Row {
    let mut row = p.row;
    let (Some((lo, hi)), Some(adj)) = (row.interval, row.p_adjusted) else {
        return row;
    };
    let t = row.threshold_pct / 100.0;
    let pct = |x: f64| (x - 1.0) * 100.0;
    let interval = format!("[{:+.1}%, {:+.1}%]", pct(lo), pct(hi));
    // The interval's bad end and good end, as changes where positive means worse.
    let (worst, best) = match row.direction {
        Direction::BiggerIsBetter => (1.0 - lo, 1.0 - hi),
        Direction::SmallerIsBetter => (hi - 1.0, lo - 1.0),
    };
    let line = row.threshold_pct;
    if best > t {
        if adj < alpha {
            row.verdict = Verdict::Regression;
            row.why = format!("interval {interval} lies beyond the {line:.1}% threshold and adjusted p {adj:.4} < {alpha}");
        } else {
            row.verdict = Verdict::Inconclusive;
            let min = p.min_attainable_p.unwrap_or(0.0);
            row.why = format!(
                "interval {interval} lies beyond the {line:.1}% threshold but adjusted p {adj:.4} >= {alpha}"
            );
            if min * family as f64 >= alpha {
                row.why += &format!(
                    " ({}+{} repetitions cannot reach p < {alpha}/{family}: add repetitions)",
                    row.n_baseline, row.n_current
                );
            }
        }
    } else if -worst > t {
        row.verdict = Verdict::Improved;
        row.why = format!(
            "improved: interval {interval} lies beyond the {line:.1}% threshold on the good side"
        );
    } else if worst <= t {
        row.verdict = Verdict::Pass;
        row.why = format!("interval {interval} rules out a {line:.1}% regression");
    } else {
        row.verdict = Verdict::Inconclusive;
        row.why = format!(
            "interval {interval} crosses the {line:.1}% line: the noise is wider than the threshold (add repetitions)"
        );
    }
    row
}

/// The command: load, compare, print, export, and map the outcome to an exit code.
pub fn run(args: Args) -> anyhow::Result<()> {
    let (baseline, current, names) = match (&args.aa, &args.baseline, &args.current) {
        _ if args.ab.is_some() => {
            let path = args.ab.as_deref().unwrap_or(Path::new(""));
            let doc = results::load(path)?;
            let Some(ab) = doc.ab.clone() else {
                anyhow::bail!(
                    "--ab {}: not an A/B run (made without bench --ab); use --aa for an A/A run or --baseline and --current",
                    path.display()
                );
            };
            let (this, other) = noise::split_ab(&doc);
            let other_name = ab.other_revision.unwrap_or(ab.other_binary);
            (
                other,
                this,
                (
                    format!("{} (other build {other_name})", path.display()),
                    format!("{} (this build)", path.display()),
                ),
            )
        }
        (Some(path), _, _) => {
            let doc = results::load(path)?;
            if doc.scenario.run.repetitions < 4 {
                anyhow::bail!(
                    "--aa {}: the run has {} repetitions per case; an A/A split (A B B A) needs at least 4",
                    path.display(),
                    doc.scenario.run.repetitions
                );
            }
            let (a, b) = noise::split_aa(&doc);
            let name = |side: &str| format!("{} (side {side})", path.display());
            (a, b, (name("A"), name("B")))
        }
        (None, Some(b), Some(c)) => (
            results::load(b)?,
            results::load(c)?,
            (b.display().to_string(), c.display().to_string()),
        ),
        _ => anyhow::bail!("give --baseline and --current, or --aa"),
    };
    for (doc, name) in [(&baseline, &names.0), (&current, &names.1)] {
        if doc.environment.kvm.emulated_host {
            anyhow::bail!(
                "{name}: measured inside the emulated AMD-V host (bench --host emulated), where timings are not real; the gate compares timings, so gate runs made on a host with hardware virtualization (or without --host emulated)"
            );
        }
    }
    let opts = GateOptions {
        threshold_pct: args.threshold,
        alpha: args.alpha,
        metrics: args.metrics.clone(),
        strict: args.strict,
        allow_env_mismatch: args.allow_env_mismatch,
        bootstrap: current.scenario.run.bootstrap(),
    };
    let floors = if args.no_noise_floors {
        NoiseFloors::default()
    } else {
        load_floors(args.noise.as_deref(), &current)?
    };
    let mut report = evaluate(&baseline, &current, &opts, &floors)?;
    (report.baseline, report.current) = names;
    if let Some(note) = floors.describe() {
        report.notes.push(note);
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        println!();
    } else if args.markdown {
        output::markdown(&report, &mut out)?;
    } else {
        output::table(&report, &mut out)?;
    }
    if let Some(prefix) = &args.github_benchmark {
        export::github_benchmark(&current, prefix)?;
    }
    if let Some(path) = &args.bencher {
        export::bencher(&current, path)?;
    }
    if let Some(path) = &args.junit {
        export::junit(&report, path)?;
    }
    match report.outcome {
        Outcome::Regression => Err(Failed(format!(
            "{} regression(s) beyond the threshold",
            report.count(Verdict::Regression)
        ))
        .into()),
        Outcome::Inconclusive if args.strict => Err(Inconclusive(format!(
            "--strict: {} comparison(s) inconclusive",
            report.count(Verdict::Inconclusive)
        ))
        .into()),
        Outcome::Inconclusive | Outcome::Pass => Ok(()),
    }
}

/// The noise floors for the current run's host and scenario: from `path`, or from the default
/// store when it exists.
fn load_floors(path: Option<&Path>, current: &RunResults) -> anyhow::Result<NoiseFloors> {
    let fingerprint = host_fingerprint(&current.environment);
    let sha = &current.scenario.source.sha256;
    match path {
        Some(p) => NoiseFloors::load(p, &fingerprint, sha)
            .with_context(|| format!("cannot use the noise floors in {}", p.display())),
        None => {
            let p = noise::default_path(&fingerprint);
            if p.exists() {
                NoiseFloors::load(&p, &fingerprint, sha)
                    .with_context(|| format!("cannot use the noise floors in {}", p.display()))
            } else {
                Ok(NoiseFloors::default())
            }
        }
    }
}
