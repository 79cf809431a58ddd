//! Noise floors: how large a change an A/A comparison (the same build against itself,
//! interleaved) shows on this host for each case. A run with `bench --aa` is split into two
//! halves by repetition in the order A B B A (repetitions 0 and 3 of every four are A), each
//! case's A/A ratio gets its bootstrap interval, and the floor is the interval's larger
//! distance from 1, in percent. Floors are stored per host fingerprint in
//! `results/noise/<fingerprint>.json`, per scenario file sha256 inside (docs/ci.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{direction_of, host_fingerprint};
use crate::cli::bench::primary;
use crate::results::{self, RunResults};
use crate::stats::{self, BootstrapOptions};

/// Where noise floors live, relative to the working directory like `results/<run-id>/`.
pub const NOISE_DIR: &str = "results/noise";

#[derive(Debug, thiserror::Error)]
pub enum NoiseError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a noise-floor file", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{} holds floors of host {found}, but this run's host fingerprint is {expected}", path.display())]
    OtherHost {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "an A/A run needs at least 6 repetitions per case (3 a side, A B B A), this one has {0}"
    )]
    TooFewRepetitions(u32),
}

/// The file: one host, many scenarios.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NoiseStore {
    pub fingerprint: String,
    /// The host facts the fingerprint was made of, for people reading the file.
    pub host: serde_json::Value,
    /// By scenario file sha256.
    pub scenarios: BTreeMap<String, ScenarioFloors>,
}

/// The floors of one scenario file on one host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScenarioFloors {
    pub scenario: String,
    pub path: String,
    /// The A/A run they came from.
    pub run_id: String,
    pub measured_at: String,
    /// Repetitions on each side of the A/A comparison: floors shrink as this grows.
    pub repetitions_per_side: usize,
    /// Case id -> metric -> floor in percent.
    pub floors: BTreeMap<String, BTreeMap<String, f64>>,
}

/// The floors the gate uses for one host and scenario (empty when none were measured).
#[derive(Debug, Clone, Default)]
pub struct NoiseFloors {
    source: Option<(PathBuf, ScenarioFloors)>,
}

impl NoiseFloors {
    /// The floors for `scenario_sha` in `path`, which must be for host `fingerprint`; none
    /// when the file has no entry for that scenario.
    pub fn load(path: &Path, fingerprint: &str, scenario_sha: &str) -> Result<Self, NoiseError> {
        let store = read_store(path)?;
        if store.fingerprint != fingerprint {
            return Err(NoiseError::OtherHost {
                path: path.to_path_buf(),
                found: store.fingerprint,
                expected: fingerprint.to_string(),
            });
        }
        Ok(NoiseFloors {
            source: store
                .scenarios
                .get(scenario_sha)
                .cloned()
                .map(|s| (path.to_path_buf(), s)),
        })
    }

    pub fn from_scenario(path: PathBuf, floors: ScenarioFloors) -> Self {
        NoiseFloors {
            source: Some((path, floors)),
        }
    }

    pub fn get(&self, case: &str, metric: &str) -> Option<f64> {
        self.source
            .as_ref()?
            .1
            .floors
            .get(case)?
            .get(metric)
            .copied()
    }

    /// A line for the report saying which floors were used.
    pub fn describe(&self) -> Option<String> {
        let (p, s) = self.source.as_ref()?;
        Some(format!(
            "noise floors from {} (A/A run {}, {} repetitions per side)",
            p.display(),
            s.run_id,
            s.repetitions_per_side
        ))
    }
}

/// `results/noise/<fingerprint>.json`.
pub fn default_path(fingerprint: &str) -> PathBuf {
    Path::new(NOISE_DIR).join(format!("{fingerprint}.json"))
}

fn read_store(path: &Path) -> Result<NoiseStore, NoiseError> {
    let bytes = std::fs::read(path).map_err(|source| NoiseError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| NoiseError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Whether repetition `index` belongs to side A in the order A B B A.
pub fn is_side_a(index: u32) -> bool {
    matches!(index % 4, 0 | 3)
}

/// The two halves of an A/A run, each a results document of its own (same environment and
/// scenario), so that `gate` can compare them like any two runs.
pub fn split_aa(doc: &RunResults) -> (RunResults, RunResults) {
    let half = |want_a: bool| {
        let mut d = doc.clone();
        d.run_id = format!("{}-{}", doc.run_id, if want_a { "a" } else { "b" });
        for c in &mut d.cases {
            c.repetitions.retain(|r| is_side_a(r.index) == want_a);
        }
        d.comparisons.clear();
        d
    };
    (half(true), half(false))
}

/// The two builds of an A/B run (`bench --ab`): (this build, the other build). A case that
/// failed on the other build (its reason says so) counts as failed there only.
pub fn split_ab(doc: &RunResults) -> (RunResults, RunResults) {
    let (mut this, other) = split_aa(doc);
    for c in &mut this.cases {
        if let results::CaseStatus::Failed { reason, .. } = &c.status {
            if reason.starts_with(crate::cli::bench::OTHER_BUILD_FAILED) {
                c.status = results::CaseStatus::Ok;
            }
        }
    }
    (this, other)
}

/// Each case's floor for its primary metric and every metric with a known direction.
pub fn floors_from_aa(
    doc: &RunResults,
    opts: &BootstrapOptions,
) -> Result<ScenarioFloors, NoiseError> {
    let reps = doc.scenario.run.repetitions;
    if (reps as usize) < 2 * super::MIN_REPETITIONS {
        return Err(NoiseError::TooFewRepetitions(reps));
    }
    let (a, b) = split_aa(doc);
    let mut floors = BTreeMap::new();
    let mut per_side = usize::MAX;
    for (ca, cb) in a.cases.iter().zip(&b.cases) {
        if ca.is_failed() {
            continue;
        }
        let (main, _) = primary(ca.params.workload.kind());
        let mut by_metric = BTreeMap::new();
        for m in ca.metric_names() {
            if m != main && direction_of(&m).is_none() {
                continue;
            }
            let (va, vb) = (ca.metric_values(&m), cb.metric_values(&m));
            per_side = per_side.min(va.len().min(vb.len()));
            if let Ok(r) = stats::ratio_of_medians(&vb, &va, opts) {
                let floor = (1.0 - r.ci95.0).max(r.ci95.1 - 1.0).max(0.0) * 100.0;
                by_metric.insert(m, floor);
            }
        }
        floors.insert(ca.id.clone(), by_metric);
    }
    Ok(ScenarioFloors {
        scenario: doc.scenario.name.clone(),
        path: doc.scenario.source.path.clone(),
        run_id: doc.run_id.clone(),
        measured_at: doc.updated_at.clone(),
        repetitions_per_side: if per_side == usize::MAX { 0 } else { per_side },
        floors,
    })
}

/// Adds (or replaces) `floors` for the run's scenario in the store of its host at `path`
/// (default: [`default_path`]); returns the path written.
pub fn store(
    doc: &RunResults,
    floors: ScenarioFloors,
    path: Option<&Path>,
) -> Result<PathBuf, NoiseError> {
    let fingerprint = host_fingerprint(&doc.environment);
    let path = path.map_or_else(|| default_path(&fingerprint), Path::to_path_buf);
    let mut store = if path.exists() {
        read_store(&path)?
    } else {
        NoiseStore::default()
    };
    if !store.fingerprint.is_empty() && store.fingerprint != fingerprint {
        return Err(NoiseError::OtherHost {
            path,
            found: store.fingerprint,
            expected: fingerprint,
        });
    }
    store.fingerprint = fingerprint;
    store.host = serde_json::to_value(&doc.environment.host).unwrap_or_default();
    store
        .scenarios
        .insert(doc.scenario.source.sha256.clone(), floors);
    let write_err = |source| NoiseError::Write {
        path: path.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(write_err)?;
    }
    let bytes =
        serde_json::to_vec_pretty(&store).map_err(|e| write_err(std::io::Error::other(e)))?;
    results::write_atomic(&path, &bytes).map_err(write_err)?;
    Ok(path)
}
