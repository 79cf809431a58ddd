//! The results store: `results/<run-id>/results.json`, one versioned document per run
//! (schema in docs/results.md). [`ResultsWriter`] rewrites it atomically after every
//! repetition, so an interrupted run keeps what it finished; [`load`] reads it back and
//! refuses other schema versions. Reports read only this document.

mod environment;
mod time;
mod writer;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use environment::{collect as collect_environment, Environment, Host, KvmInfo, Revision};
pub use time::{rfc3339, run_id};
pub use writer::{create_run_dir, write_atomic, ResultsWriter, RESULTS_FILE};

use crate::scenario::{CaseParams, ComparisonPair, Scenario};
use crate::session::Timeline;
use crate::stats::{self, BootstrapOptions, Ratio, Summary};

/// The version of the document this vmbench writes and reads. Bump it on any change that an
/// older reader would misread (renamed or retyped fields); added optional fields do not
/// need a bump.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not valid JSON", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{} is not a vmbench results file: it has no schema_version", path.display())]
    NotResults { path: PathBuf },
    #[error(
        "{} has schema_version {found}, but this vmbench reads version {SCHEMA_VERSION}; \
         use the vmbench that wrote it (its revision is in environment.vmbench)",
        path.display()
    )]
    SchemaVersion {
        path: PathBuf,
        found: serde_json::Value,
    },
    #[error("{} does not match results schema version {SCHEMA_VERSION}", path.display())]
    Schema {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot serialize the results")]
    Serialize(#[source] serde_json::Error),
    #[error("no case `{0}` in this run")]
    UnknownCase(String),
}

/// One run: everything needed to interpret and reproduce its figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResults {
    pub schema_version: u32,
    pub run_id: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    /// When the document was last written, RFC 3339, UTC.
    pub updated_at: String,
    /// Every scheduled repetition ran (cases may still have failed).
    pub finished: bool,
    /// Why the run stopped early, when it could say (Ctrl-C, a fatal error). A run that was
    /// killed or crashed has `finished: false` and no reason.
    pub interrupted: Option<String>,
    pub environment: Environment,
    /// The expanded scenario, with its source path, sha256 and overrides.
    pub scenario: Scenario,
    /// The manifests of the images the guests booted (images::manifest, as JSON).
    #[serde(default)]
    pub images: Vec<serde_json::Value>,
    pub calibration: Option<Calibration>,
    pub cases: Vec<CaseResult>,
    #[serde(default)]
    pub comparisons: Vec<Comparison>,
    /// The exact command line that produced the run (argv, program first); absent in files
    /// written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_line: Option<Vec<String>>,
    /// Set by an A/B run (`bench --ab`): repetitions 0 and 3 of every four (A B B A) ran on
    /// this build, the others on the build described here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ab: Option<AbRun>,
}

/// The other build of an A/B run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbRun {
    pub other_binary: String,
    /// Its `--version` line.
    pub other_version: String,
    /// The git revision it was built from (`--ab-rev`).
    pub other_revision: Option<String>,
    /// The run-one protocol version both spoke.
    pub protocol: u32,
}

/// A short calibration run at the start: this host's exit costs, to read the figures by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// E.g. `pio_exit_ns`, `mmio_exit_ns`, `ioeventfd_write_ns` (medians).
    pub figures: BTreeMap<String, f64>,
    /// The probe workload that measured them.
    pub probe_exec: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseResult {
    pub id: String,
    pub params: CaseParams,
    pub probe_exec: String,
    pub status: CaseStatus,
    pub repetitions: Vec<Repetition>,
    /// Per metric, over the repetitions' values of that metric.
    #[serde(default)]
    pub stats: BTreeMap<String, Summary>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum CaseStatus {
    /// Not all of its repetitions have run yet (those that have are in `repetitions`).
    Pending,
    Ok,
    /// The guest hung, crashed or reported an error; the run went on without this case.
    Failed {
        reason: String,
        console_tail: Vec<String>,
    },
}

/// One boot of a guest running the case's workload.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Repetition {
    /// Repetition number (0-based, as in the schedule).
    pub index: u32,
    /// Every raw sample, by name (e.g. `latency_ns`), in measurement order; or every k-th of
    /// them where `sample_strides` says k.
    #[serde(default)]
    pub samples: BTreeMap<String, Vec<f64>>,
    /// Where `samples` keeps only every k-th sample, k by name (the probe under QEMU, whose
    /// records cost an exit a byte, sends at most 8192). The percentiles in `metrics` are over
    /// every sample all the same.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sample_strides: BTreeMap<String, u64>,
    /// Derived figures of this repetition (`ops_per_sec`, `gbit_per_sec`, `latency_ns_p50`,
    /// `exits_per_op`, `peer_frames_received`...): what statistics and comparisons use.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    #[serde(default)]
    pub exits: Exits,
    #[serde(default)]
    pub cpu: CpuTime,
    #[serde(default)]
    pub boot: BootTimeline,
    /// Wall time of the whole repetition, boot to teardown.
    #[serde(default)]
    pub wall_secs: f64,
    /// What ran the guest's code: `kvm`, or QEMU's `tcg` (absent in older results).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accel: Option<String>,
}

/// VM exits during the measurement window.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Exits {
    pub by_reason: BTreeMap<String, u64>,
    pub by_device: BTreeMap<String, u64>,
    /// The exits the devices that count them by register saw (e1000, PIIX IDE), as
    /// `"DEVICE read:REG"` / `"DEVICE write:REG"`; registers not accessed are left out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_register: BTreeMap<String, u64>,
    /// `total`, each reason, each device (prefixed `device:`) and each register (prefixed
    /// `register:`) divided by the operations.
    pub per_op: BTreeMap<String, f64>,
    /// KVM's own counters where the host kernel offers them (binary stats), by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kvm: BTreeMap<String, u64>,
}

impl Exits {
    /// Counts from the VMM, with per-operation ratios when `ops` is positive.
    pub fn from_counts(exits: &vmm::exits::VcpuExits, ops: u64) -> Exits {
        let mut per_op = BTreeMap::new();
        if ops > 0 {
            let per = |n: u64| n as f64 / ops as f64;
            per_op.insert("total".to_string(), per(exits.total()));
            for (k, &n) in &exits.by_reason {
                per_op.insert(k.clone(), per(n));
            }
            for (k, &n) in &exits.by_device {
                per_op.insert(format!("device:{k}"), per(n));
            }
        }
        Exits {
            by_reason: exits.by_reason.clone(),
            by_device: exits.by_device.clone(),
            by_register: BTreeMap::new(),
            per_op,
            kvm: BTreeMap::new(),
        }
    }

    /// Adds the register counts among the devices' counters over the same window (the
    /// counters named `read:REG` and `write:REG`, each one exit), with their per-operation
    /// ratios.
    pub fn with_registers(mut self, devices: &vmm::counters::DeviceCounters, ops: u64) -> Exits {
        for (device, counters) in devices {
            for (name, &n) in counters {
                if n > 0 && (name.starts_with("read:") || name.starts_with("write:")) {
                    let key = format!("{device} {name}");
                    if ops > 0 {
                        self.per_op
                            .insert(format!("register:{key}"), n as f64 / ops as f64);
                    }
                    self.by_register.insert(key, n);
                }
            }
        }
        self
    }
}

/// Host CPU time of the VMM's threads during the repetition.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct CpuTime {
    pub user_s: f64,
    pub sys_s: f64,
}

/// The boot timeline in milliseconds (see [`Timeline`]); `None` where a mark was not reached.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct BootTimeline {
    pub setup_ms: Option<f64>,
    pub first_instruction_ms: Option<f64>,
    pub ready_ms: Option<f64>,
    pub total_ms: Option<f64>,
    /// A Linux guest's first console line (the kernel's banner), from the engine's start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_ms: Option<f64>,
    /// A Linux guest's `Run /init` (the agent starts), from the engine's start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_ms: Option<f64>,
}

impl From<&Timeline> for BootTimeline {
    fn from(t: &Timeline) -> Self {
        BootTimeline {
            setup_ms: t.setup_ms(),
            first_instruction_ms: t.first_instruction_ms(),
            ready_ms: t.ready_ms(),
            total_ms: t.total_ms(),
            kernel_ms: t.kernel_ms(),
            init_ms: t.init_ms(),
        }
    }
}

/// `case` over `baseline_case` for one metric: ratio of medians with its bootstrap interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub axis: String,
    pub baseline: String,
    pub baseline_case: String,
    pub case: String,
    pub metric: String,
    pub ratio: Ratio,
}

impl RunResults {
    /// A new run's document: every case of `scenario` pending, nothing measured yet.
    pub fn new(run_id: String, environment: Environment, scenario: Scenario) -> RunResults {
        let now = rfc3339(std::time::SystemTime::now());
        let cases = scenario
            .cases
            .iter()
            .map(|c| CaseResult {
                id: c.id.clone(),
                params: c.params.clone(),
                probe_exec: c.probe_exec().to_string(),
                status: CaseStatus::Pending,
                repetitions: Vec::new(),
                stats: BTreeMap::new(),
            })
            .collect();
        RunResults {
            schema_version: SCHEMA_VERSION,
            run_id,
            started_at: now.clone(),
            updated_at: now,
            finished: false,
            interrupted: None,
            environment,
            scenario,
            images: Vec::new(),
            calibration: None,
            cases,
            comparisons: Vec::new(),
            command_line: None,
            ab: None,
        }
    }

    pub fn case(&self, id: &str) -> Option<&CaseResult> {
        self.cases.iter().find(|c| c.id == id)
    }

    pub fn case_mut(&mut self, id: &str) -> Result<&mut CaseResult, ResultsError> {
        self.cases
            .iter_mut()
            .find(|c| c.id == id)
            .ok_or_else(|| ResultsError::UnknownCase(id.to_string()))
    }

    /// Ratios for each pair and metric (the pair's metrics, or every metric both cases have),
    /// over the cases' per-repetition values. Pairs whose cases are missing or failed are
    /// skipped, as are metrics that cannot be compared (a zero or negative baseline).
    pub fn compare(&self, pairs: &[ComparisonPair], opts: &BootstrapOptions) -> Vec<Comparison> {
        let mut out = Vec::new();
        for pair in pairs {
            let (Some(case), Some(base)) = (self.case(&pair.case), self.case(&pair.baseline_case))
            else {
                continue;
            };
            if case.is_failed() || base.is_failed() {
                continue;
            }
            let metrics: Vec<String> = if pair.metrics.is_empty() {
                let theirs = base.metric_names();
                case.metric_names().intersection(&theirs).cloned().collect()
            } else {
                pair.metrics.clone()
            };
            for metric in metrics {
                let (a, b) = (case.metric_values(&metric), base.metric_values(&metric));
                if let Ok(ratio) = stats::ratio_of_medians(&a, &b, opts) {
                    out.push(Comparison {
                        axis: pair.axis.clone(),
                        baseline: pair.baseline.clone(),
                        baseline_case: pair.baseline_case.clone(),
                        case: pair.case.clone(),
                        metric,
                        ratio,
                    });
                }
            }
        }
        out
    }
}

impl CaseResult {
    pub fn is_failed(&self) -> bool {
        matches!(self.status, CaseStatus::Failed { .. })
    }

    /// Names of the metrics any repetition reported.
    pub fn metric_names(&self) -> BTreeSet<String> {
        self.repetitions
            .iter()
            .flat_map(|r| r.metrics.keys().cloned())
            .collect()
    }

    /// The values of `metric` across repetitions, in repetition order.
    pub fn metric_values(&self, metric: &str) -> Vec<f64> {
        self.repetitions
            .iter()
            .filter_map(|r| r.metrics.get(metric).copied())
            .collect()
    }

    /// Recomputes `stats` from the repetitions; a metric with a NaN or infinite value is left
    /// out rather than summarized wrongly.
    pub fn update_stats(&mut self, opts: &BootstrapOptions) {
        self.stats = self
            .metric_names()
            .into_iter()
            .filter_map(|m| {
                let s = stats::summarize(&self.metric_values(&m), opts).ok()?;
                Some((m, s))
            })
            .collect();
    }
}

/// Reads a results file, checking its schema version before anything else so that a file
/// from another vmbench gets a clear message rather than a field-level parse error.
pub fn load(path: &Path) -> Result<RunResults, ResultsError> {
    let bytes = std::fs::read(path).map_err(|source| ResultsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &bytes)
}

/// Parses the bytes of a results file read from `path` (named in errors); what [`load`] does
/// once it has the bytes, and what the fuzz target feeds.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<RunResults, ResultsError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|source| ResultsError::Json {
            path: path.to_path_buf(),
            source,
        })?;
    match value.get("schema_version") {
        None => {
            return Err(ResultsError::NotResults {
                path: path.to_path_buf(),
            })
        }
        Some(v) if v.as_u64() == Some(u64::from(SCHEMA_VERSION)) => {}
        Some(v) => {
            return Err(ResultsError::SchemaVersion {
                path: path.to_path_buf(),
                found: v.clone(),
            })
        }
    }
    serde_json::from_value(value).map_err(|source| ResultsError::Schema {
        path: path.to_path_buf(),
        source,
    })
}
