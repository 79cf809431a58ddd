//! Scenario files (TOML, schema in docs/scenarios.md): what to run, expanded into cases. A
//! scenario sets parameters (guest, engine, VM shape, devices, workload), lists matrix axes
//! whose cartesian product gives the cases, excludes combinations, and names comparisons.
//! Everything here is pure: the runner takes a [`Scenario`] and boots its cases.
//!
//! ```no_run
//! # use vmbench::scenario::{Scenario, Overrides};
//! let mut s = Scenario::load("scenarios/net.toml".as_ref())?;
//! s.apply(&Overrides { repetitions: Some(3), ..Default::default() })?;
//! for slot in s.schedule() {
//!     let case = &s.cases[slot.case];
//!     println!("rep {} {} exec '{}'", slot.repetition, case.id, case.probe_exec());
//! }
//! # Ok::<(), vmbench::scenario::ScenarioError>(())
//! ```

mod error;
mod expand;
mod params;
mod parse;
mod shard;
mod toml_doc;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use error::{Diagnostic, Location, ScenarioError};
pub use params::{
    or_none, BlockIo, CaseParams, DeviceKind, Direction, DiskFormat, DiskKind, EngineKind, Guest,
    NetBackendKind, NicKind, Pattern, Profile, Workload, WorkloadKind, PROBE_EXEC_MAX,
};

pub use shard::Shard;

use crate::session::Limits;
use crate::stats::BootstrapOptions;

/// The longest time a scenario or a flag sets, in seconds (a day).
pub const MAX_SECS: f64 = 86_400.0;
/// The most repetitions per case a scenario or `--repetitions` asks for.
pub const MAX_REPETITIONS: u32 = 100_000;
/// The shortest measurement window: the probe counts in milliseconds.
pub const MIN_DURATION_SECS: f64 = 0.001;

/// How each case is run: the `[run]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSettings {
    /// Repetitions per case; each boots a fresh guest unless `fresh_guest_per_repetition` is
    /// false.
    pub repetitions: u32,
    /// Warm-up before the measurement window, excluded from the figures.
    pub warmup_secs: f64,
    /// The measurement window of windowed workloads (net-*, blk-*).
    pub duration_secs: f64,
    /// From the start of the vCPUs to the guest reporting ready.
    pub ready_timeout_secs: f64,
    /// From ready to the guest's exit.
    pub run_timeout_secs: f64,
    pub fresh_guest_per_repetition: bool,
    /// Seed for random access patterns (passed to the guest) and for bootstrap resampling.
    pub seed: u64,
}

impl Default for RunSettings {
    fn default() -> Self {
        Self {
            repetitions: 5,
            warmup_secs: 0.5,
            duration_secs: 2.0,
            ready_timeout_secs: 10.0,
            run_timeout_secs: 60.0,
            fresh_guest_per_repetition: true,
            seed: 1,
        }
    }
}

impl RunSettings {
    /// Time a windowed workload needs beyond its warm-up and window.
    pub const SLACK_SECS: f64 = 1.0;

    /// The guest session's timeouts.
    pub fn limits(&self) -> Limits {
        Limits {
            ready: secs(self.ready_timeout_secs),
            run: secs(self.run_timeout_secs),
        }
    }

    pub fn warmup(&self) -> Duration {
        secs(self.warmup_secs)
    }

    pub fn duration(&self) -> Duration {
        secs(self.duration_secs)
    }

    /// Bootstrap settings for this run's statistics, seeded with the scenario's seed so that
    /// intervals are reproducible.
    pub fn bootstrap(&self) -> BootstrapOptions {
        BootstrapOptions {
            seed: self.seed,
            ..BootstrapOptions::default()
        }
    }

    fn window(&self) -> params::Window {
        params::Window {
            warmup_ms: (self.warmup_secs * 1e3).round() as u64,
            duration_ms: (self.duration_secs * 1e3).round() as u64,
            seed: self.seed,
        }
    }
}

/// The scenario file a scenario came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFile {
    /// As given to [`Scenario::load`].
    pub path: String,
    /// Of the file's bytes, hex.
    pub sha256: String,
}

/// A matrix axis and its values in file order (a table value is written `k=v,k=v`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Axis {
    pub name: String,
    pub values: Vec<String>,
}

/// A case's value on one axis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coord {
    pub axis: String,
    pub value: String,
}

/// One expanded case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Case {
    /// Stable identifier: the case's axis values in matrix order,
    /// `nic=virtio,workload=net-rr,frame_size=64` (`workload=NAME` without a matrix).
    pub id: String,
    /// Position in the full expansion, stable under `--filter`.
    pub index: usize,
    pub coords: Vec<Coord>,
    pub params: CaseParams,
    probe_exec: String,
}

impl Case {
    /// What the probe runs: `net-rr size=64 profile=linux warmup_ms=500 duration_ms=2000`.
    pub fn probe_exec(&self) -> &str {
        &self.probe_exec
    }

    /// This case's value on `axis`.
    pub fn coord(&self, axis: &str) -> Option<&str> {
        self.coords
            .iter()
            .find(|c| c.axis == axis)
            .map(|c| c.value.as_str())
    }
}

/// `compare = [{ axis = "nic", baseline = "e1000" }]`: each case is divided by the case that
/// differs from it only in having the baseline value on that axis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComparisonSpec {
    pub axis: String,
    pub baseline: String,
    /// Metrics to compare; empty means every metric both cases have.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<String>,
}

/// Two cases to compare: `case` over `baseline_case`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComparisonPair {
    pub axis: String,
    /// The baseline value on `axis`.
    pub baseline: String,
    pub baseline_case: String,
    pub case: String,
    pub metrics: Vec<String>,
}

/// Command-line overrides for quick runs, applied after expansion.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Overrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repetitions: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<f64>,
    /// Keeps the cases whose id contains it, or matches it as a glob (`*`, `?`) when it has
    /// wildcards; `|` separates alternatives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Keeps this runner's share of the cases (`--shard I/N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
}

/// One slot of the run order: which case, which repetition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub repetition: u32,
    /// Index into [`Scenario::cases`].
    pub case: usize,
}

/// An expanded scenario, ready to run and to be recorded in a results file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub source: SourceFile,
    pub run: RunSettings,
    pub axes: Vec<Axis>,
    pub comparisons: Vec<ComparisonSpec>,
    /// The cases to run (after exclusions and `--filter`), in expansion order.
    pub cases: Vec<Case>,
    /// Cases the matrix gave before `--filter`.
    pub expanded_cases: usize,
    /// Combinations removed by `[[exclude]]`.
    pub excluded: usize,
    #[serde(default)]
    pub overrides: Overrides,
    /// Things worth saying that do not stop the run (an exclusion that matches nothing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Scenario {
    /// Reads, checks and expands a scenario file. Errors name the file, line and column.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let read = crate::input::read_regular(path, crate::input::MAX_SCENARIO_BYTES)
            .and_then(|b| String::from_utf8(b).map_err(std::io::Error::other));
        let text = read.map_err(|source| ScenarioError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&path.display().to_string(), &text)
    }

    /// Checks and expands scenario text; `file` names it in messages and in [`SourceFile`].
    pub fn parse(file: &str, text: &str) -> Result<Scenario, ScenarioError> {
        let mut r = toml_doc::Reader::new(file, text);
        let Some(root) = r.parse() else {
            return Err(ScenarioError::Invalid(r.diags));
        };
        let spec = parse::parse(&mut r, root.get_ref());
        if !r.diags.is_empty() {
            return Err(ScenarioError::Invalid(r.diags));
        }
        let Some(x) = expand::expand(&mut r, &spec) else {
            return Err(ScenarioError::Invalid(r.diags));
        };
        let name = spec.name.clone().unwrap_or_else(|| {
            Path::new(file)
                .file_stem()
                .map_or_else(|| file.to_string(), |s| s.to_string_lossy().into_owned())
        });
        Ok(Scenario {
            name,
            description: spec.description,
            source: SourceFile {
                path: file.to_string(),
                sha256: sha256_hex(text.as_bytes()),
            },
            run: spec.run,
            axes: x.axes,
            comparisons: x.comparisons,
            expanded_cases: x.cases.len(),
            cases: x.cases,
            excluded: x.excluded,
            overrides: Overrides::default(),
            warnings: x.warnings,
        })
    }

    /// Applies command-line overrides: repetitions and duration replace the scenario's, the
    /// filter keeps matching cases. Recorded in [`Scenario::overrides`].
    pub fn apply(&mut self, o: &Overrides) -> Result<(), ScenarioError> {
        let mut run = self.run.clone();
        if let Some(n) = o.repetitions {
            if n == 0 || n > MAX_REPETITIONS {
                return Err(ScenarioError::Override(format!(
                    "--repetitions {n} is out of range; use 1 to {MAX_REPETITIONS}"
                )));
            }
            run.repetitions = n;
        }
        if let Some(d) = o.duration_secs {
            if !(d.is_finite() && (MIN_DURATION_SECS..=MAX_SECS).contains(&d)) {
                return Err(ScenarioError::Override(format!(
                    "--duration {d} is out of range; use {MIN_DURATION_SECS} to {MAX_SECS} seconds (the probe counts whole milliseconds)"
                )));
            }
            run.duration_secs = d;
            if self
                .cases
                .iter()
                .any(|c| c.params.workload.kind() == WorkloadKind::Iperf3)
            {
                if let Some((problem, _)) = expand::iperf3_window(&run).into_iter().next() {
                    return Err(ScenarioError::Override(format!(
                        "--duration {d}: {problem} in {}; use whole seconds",
                        self.source.path
                    )));
                }
            }
            let needed = run.warmup_secs + d + RunSettings::SLACK_SECS;
            let windowed = self
                .cases
                .iter()
                .any(|c| c.params.workload.kind().is_windowed());
            if windowed && run.run_timeout_secs < needed {
                return Err(ScenarioError::Override(format!(
                    "--duration {d} does not fit in run_timeout_secs = {} of {} (warm-up {} s and {} s to set up and tear down come on top)",
                    run.run_timeout_secs, self.source.path, run.warmup_secs, RunSettings::SLACK_SECS
                )));
            }
        }
        let cases = match &o.filter {
            None => self.cases.clone(),
            Some(pattern) if pattern.split('|').any(str::is_empty) => {
                return Err(ScenarioError::Override(format!(
                    "--filter '{pattern}' has an empty alternative, which would match every case; write PATTERN or A|B with text on both sides of each |"
                )));
            }
            Some(pattern) => {
                let kept: Vec<Case> = self
                    .cases
                    .iter()
                    .filter(|c| matches_filter(pattern, &c.id))
                    .cloned()
                    .collect();
                if kept.is_empty() {
                    let examples: Vec<&str> =
                        self.cases.iter().take(3).map(|c| c.id.as_str()).collect();
                    return Err(ScenarioError::Override(format!(
                        "--filter '{pattern}' matches none of the {} cases; ids look like: {}",
                        self.cases.len(),
                        examples.join("; ")
                    )));
                }
                kept
            }
        };
        let cases = match o.shard {
            None => cases,
            Some(shard) => {
                let n = cases.len();
                let kept = shard.select(cases, &run);
                if kept.is_empty() {
                    return Err(ScenarioError::Override(format!(
                        "--shard {shard}: only {n} case(s) to share, so shard {} has none; use at most {n} shards",
                        shard.index
                    )));
                }
                kept
            }
        };
        let window = run.window();
        self.cases = cases
            .into_iter()
            .map(|mut c| {
                c.probe_exec = c.params.probe_exec(window);
                c
            })
            .collect();
        self.run = run;
        self.overrides = o.clone();
        Ok(())
    }

    pub fn case(&self, id: &str) -> Option<&Case> {
        self.cases.iter().find(|c| c.id == id)
    }

    /// The run order: `repetitions` rounds, each running every case once (A B C, A B C...),
    /// so that machine drift hits every case alike.
    pub fn schedule(&self) -> Vec<Slot> {
        (0..self.run.repetitions)
            .flat_map(|r| self.round(r))
            .collect()
    }

    /// Round `repetition` of the schedule; adaptive sampling asks for rounds beyond
    /// `run.repetitions` with it. Each round starts one case later than the one before
    /// (A B C, B C A, C A B), so no case always runs first.
    pub fn round(&self, repetition: u32) -> Vec<Slot> {
        let n = self.cases.len();
        (0..n)
            .map(|k| Slot {
                repetition,
                case: (k + repetition as usize) % n,
            })
            .collect()
    }

    /// For each comparison, each case paired with the case that differs only in having the
    /// baseline value on the comparison's axis (both must be among [`Scenario::cases`]).
    pub fn comparison_pairs(&self) -> Vec<ComparisonPair> {
        let mut pairs = Vec::new();
        for cmp in &self.comparisons {
            let others = |c: &Case| -> Vec<Coord> {
                c.coords
                    .iter()
                    .filter(|k| k.axis != cmp.axis)
                    .cloned()
                    .collect()
            };
            for case in &self.cases {
                if case.coord(&cmp.axis).is_none_or(|v| v == cmp.baseline) {
                    continue;
                }
                let key = others(case);
                let base = self.cases.iter().find(|b| {
                    b.coord(&cmp.axis) == Some(cmp.baseline.as_str()) && others(b) == key
                });
                if let Some(base) = base {
                    pairs.push(ComparisonPair {
                        axis: cmp.axis.clone(),
                        baseline: cmp.baseline.clone(),
                        baseline_case: base.id.clone(),
                        case: case.id.clone(),
                        metrics: cmp.metrics.clone(),
                    });
                }
            }
        }
        pairs
    }
}

/// `pattern` is one or more alternatives separated by `|`; an alternative with `*` or `?`
/// is a glob over the whole id, otherwise a substring of it.
pub fn matches_filter(pattern: &str, id: &str) -> bool {
    pattern.split('|').any(|alt| {
        if alt.contains(['*', '?']) {
            glob(alt.as_bytes(), id.as_bytes())
        } else {
            id.contains(alt)
        }
    })
}

/// `*` matches any run of characters, `?` one; iterative with one backtrack point, so it is
/// linear in practice and never recursive.
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Parsed values are in range; settings that came from elsewhere (a results file) saturate
/// rather than panic.
fn secs(x: f64) -> Duration {
    Duration::try_from_secs_f64(x.max(0.0)).unwrap_or(Duration::MAX)
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
