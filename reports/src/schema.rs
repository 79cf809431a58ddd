//! The reports' own reading of results.json, schema version 1 (docs/results.md). Only the
//! fields a report shows are declared; serde ignores the rest, so a writer that adds optional
//! fields does not break this reader. Loading checks `schema_version` before anything else.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The schema version this reader understands.
pub const SCHEMA_VERSION: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("{}: is a directory; pass the results.json inside it", path.display())]
    Directory { path: PathBuf },
    #[error("{}: cannot read it", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: is empty; a results file is written whole, so this one was not written by vmbench bench", path.display())]
    Empty { path: PathBuf },
    #[error("{}: is not valid JSON (truncated or not a results file)", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: not a vmbench results file (no schema_version)", path.display())]
    NotResults { path: PathBuf },
    #[error("{}: schema_version {found}, but this report reads version {SCHEMA_VERSION}; render it with the vmbench that wrote it", path.display())]
    Version {
        path: PathBuf,
        found: serde_json::Value,
    },
    #[error("{}: does not match results schema version {SCHEMA_VERSION}", path.display())]
    Schema {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Debug, Clone, Deserialize)]
pub struct Run {
    pub schema_version: u64,
    pub run_id: String,
    pub started_at: String,
    pub updated_at: String,
    pub finished: bool,
    pub interrupted: Option<String>,
    pub environment: Environment,
    pub scenario: Scenario,
    #[serde(default)]
    pub images: Vec<serde_json::Value>,
    pub calibration: Option<Calibration>,
    pub cases: Vec<Case>,
    #[serde(default)]
    pub comparisons: Vec<Comparison>,
    /// argv of the run, program first (optional in version 1).
    #[serde(default)]
    pub command_line: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Environment {
    pub host: Host,
    pub kvm: Kvm,
    pub vmbench: Revision,
    pub probe_sha256: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Host {
    pub hostname: String,
    pub kernel_release: String,
    pub arch: String,
    pub cpu_model: String,
    pub cores: usize,
    pub memory_mib: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Kvm {
    pub flavour: String,
    pub cpl0_native: bool,
    pub nested: bool,
    /// Measured inside the emulated AMD-V host: functional figures, not real timings.
    #[serde(default)]
    pub emulated_host: bool,
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Revision {
    pub version: String,
    pub git_revision: String,
    pub dirty: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub source: Source,
    pub run: RunSettings,
    #[serde(default)]
    pub overrides: serde_json::Value,
    #[serde(default)]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Source {
    pub path: String,
    pub sha256: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RunSettings {
    pub repetitions: u32,
    pub warmup_secs: f64,
    pub duration_secs: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Calibration {
    pub figures: BTreeMap<String, f64>,
    pub probe_exec: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Case {
    pub id: String,
    pub params: Params,
    pub probe_exec: String,
    pub status: Status,
    pub repetitions: Vec<Repetition>,
    #[serde(default)]
    pub stats: BTreeMap<String, Summary>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Params {
    pub engine: String,
    pub nic: String,
    pub disk: String,
    pub workload: Workload,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Workload {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Status {
    Pending,
    Ok,
    Failed {
        reason: String,
        console_tail: Vec<String>,
    },
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Repetition {
    pub index: u32,
    #[serde(default)]
    pub samples: BTreeMap<String, Vec<f64>>,
    /// Where `samples` keeps only every k-th sample (k by name).
    #[serde(default)]
    pub sample_strides: BTreeMap<String, u64>,
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    #[serde(default)]
    pub exits: Exits,
    #[serde(default)]
    pub cpu: Cpu,
    #[serde(default)]
    pub boot: Boot,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Exits {
    #[serde(default)]
    pub by_reason: BTreeMap<String, u64>,
    #[serde(default)]
    pub by_device: BTreeMap<String, u64>,
    #[serde(default)]
    pub per_op: BTreeMap<String, f64>,
    #[serde(default)]
    pub kvm: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Cpu {
    pub user_s: f64,
    pub sys_s: f64,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Boot {
    pub setup_ms: Option<f64>,
    pub first_instruction_ms: Option<f64>,
    pub ready_ms: Option<f64>,
    pub total_ms: Option<f64>,
    /// Linux guests: the kernel's first console line and `Run /init`, from the start.
    #[serde(default)]
    pub kernel_ms: Option<f64>,
    #[serde(default)]
    pub init_ms: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub cv: Option<f64>,
    pub ci95_median: (f64, f64),
    #[serde(default)]
    pub outliers: Vec<usize>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Comparison {
    pub axis: String,
    pub baseline: String,
    pub baseline_case: String,
    pub case: String,
    pub metric: String,
    pub ratio: Ratio,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Ratio {
    pub ratio: f64,
    pub ci95: (f64, f64),
    pub significant: bool,
}

impl Run {
    pub fn case(&self, id: &str) -> Option<&Case> {
        self.cases.iter().find(|c| c.id == id)
    }

    /// `host @ revision`, the label of this run when several are shown together.
    pub fn label(&self) -> String {
        let rev = &self.environment.vmbench.git_revision;
        let short = rev.get(..10).unwrap_or(rev);
        let dirty = if self.environment.vmbench.dirty == Some(true) {
            "+dirty"
        } else {
            ""
        };
        format!(
            "{} @ {short}{dirty} ({})",
            self.environment.host.hostname, self.run_id
        )
    }
}

impl Case {
    /// The values of `metric` over the repetitions, in the order they ran.
    pub fn values(&self, metric: &str) -> Vec<f64> {
        self.repetitions
            .iter()
            .filter_map(|r| r.metrics.get(metric).copied())
            .collect()
    }
}

/// Reads and checks one results file.
pub fn load(path: &Path) -> Result<Run, SchemaError> {
    let p = || path.to_path_buf();
    if path.is_dir() {
        return Err(SchemaError::Directory { path: p() });
    }
    let bytes = std::fs::read(path).map_err(|source| SchemaError::Read { path: p(), source })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(SchemaError::Empty { path: p() });
    }
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|source| SchemaError::Json { path: p(), source })?;
    match value.get("schema_version") {
        None => return Err(SchemaError::NotResults { path: p() }),
        Some(v) if v.as_u64() == Some(SCHEMA_VERSION) => {}
        Some(v) => {
            return Err(SchemaError::Version {
                path: p(),
                found: v.clone(),
            })
        }
    }
    serde_json::from_value(value).map_err(|source| SchemaError::Schema { path: p(), source })
}
