//! Writing results.json so that a reader (or a crash) never sees half a file: each write goes
//! to a temporary file in the same directory, is fsynced, renamed over the old file (atomic
//! within a file system, rename(2)), and the directory is fsynced so the rename survives a
//! power cut.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{rfc3339, Calibration, CaseStatus, Comparison, Repetition, ResultsError, RunResults};
use crate::stats::BootstrapOptions;

pub const RESULTS_FILE: &str = "results.json";

/// Writes `bytes` to `path` atomically: readers see the old content or the new, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Creates `base/<run_id>` (or `base/<run_id>-2`, `-3`... if taken) and returns it with the
/// id actually used.
pub fn create_run_dir(base: &Path, run_id: &str) -> Result<(PathBuf, String), ResultsError> {
    fs::create_dir_all(base).map_err(|source| ResultsError::Write {
        path: base.to_path_buf(),
        source,
    })?;
    for n in 1u32..=1000 {
        let id = if n == 1 {
            run_id.to_string()
        } else {
            format!("{run_id}-{n}")
        };
        let dir = base.join(&id);
        match fs::create_dir(&dir) {
            Ok(()) => return Ok((dir, id)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(source) => return Err(ResultsError::Write { path: dir, source }),
        }
    }
    Err(ResultsError::Write {
        path: base.join(run_id),
        source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, "1000 runs with this id"),
    })
}

/// Holds a run's document and rewrites `DIR/results.json` after every change.
#[derive(Debug)]
pub struct ResultsWriter {
    path: PathBuf,
    doc: RunResults,
}

impl ResultsWriter {
    /// Creates `dir` if needed and writes the initial document (every case pending).
    pub fn create(dir: &Path, doc: RunResults) -> Result<Self, ResultsError> {
        fs::create_dir_all(dir).map_err(|source| ResultsError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut w = ResultsWriter {
            path: dir.join(RESULTS_FILE),
            doc,
        };
        w.write()?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn results(&self) -> &RunResults {
        &self.doc
    }

    /// Records one finished repetition of `case_id`. Non-finite samples and metrics cannot be
    /// stored in JSON; they are left out and named in the repetition's `metrics` as
    /// `dropped_non_finite` (a count) so that the omission is visible.
    pub fn add_repetition(
        &mut self,
        case_id: &str,
        mut rep: Repetition,
    ) -> Result<(), ResultsError> {
        let mut dropped = 0usize;
        for values in rep.samples.values_mut() {
            let before = values.len();
            values.retain(|x| x.is_finite());
            dropped += before - values.len();
        }
        let before = rep.metrics.len();
        rep.metrics.retain(|_, x| x.is_finite());
        dropped += before - rep.metrics.len();
        if dropped > 0 {
            rep.metrics
                .insert("dropped_non_finite".into(), dropped as f64);
        }
        self.doc.case_mut(case_id)?.repetitions.push(rep);
        self.write()
    }

    /// Marks `case_id` done and computes its statistics.
    pub fn finish_case(
        &mut self,
        case_id: &str,
        opts: &BootstrapOptions,
    ) -> Result<(), ResultsError> {
        let case = self.doc.case_mut(case_id)?;
        case.status = CaseStatus::Ok;
        case.update_stats(opts);
        self.write()
    }

    /// Marks `case_id` failed; the repetitions it finished stay in the document.
    pub fn fail_case(
        &mut self,
        case_id: &str,
        reason: &str,
        console_tail: Vec<String>,
    ) -> Result<(), ResultsError> {
        self.doc.case_mut(case_id)?.status = CaseStatus::Failed {
            reason: reason.to_string(),
            console_tail,
        };
        self.write()
    }

    pub fn set_calibration(&mut self, c: Calibration) -> Result<(), ResultsError> {
        self.doc.calibration = Some(c);
        self.write()
    }

    pub fn set_images(&mut self, manifests: Vec<serde_json::Value>) -> Result<(), ResultsError> {
        self.doc.images = manifests;
        self.write()
    }

    pub fn set_comparisons(&mut self, c: Vec<Comparison>) -> Result<(), ResultsError> {
        self.doc.comparisons = c;
        self.write()
    }

    /// Any other change, then a write.
    pub fn update(&mut self, f: impl FnOnce(&mut RunResults)) -> Result<(), ResultsError> {
        f(&mut self.doc);
        self.write()
    }

    /// Records why the run stops early (`finished` stays false), and gives each case cut
    /// short with repetitions finished the statistics of those (it stays pending). Call from
    /// the Ctrl-C path.
    pub fn interrupt(&mut self, reason: &str, opts: &BootstrapOptions) -> Result<(), ResultsError> {
        self.doc.interrupted = Some(reason.to_string());
        for c in &mut self.doc.cases {
            if c.status == CaseStatus::Pending && !c.repetitions.is_empty() {
                c.update_stats(opts);
            }
        }
        self.write()
    }

    /// Marks the run finished and returns the final document.
    pub fn finish(mut self) -> Result<RunResults, ResultsError> {
        self.doc.finished = true;
        self.doc.interrupted = None;
        self.write()?;
        Ok(self.doc)
    }

    fn write(&mut self) -> Result<(), ResultsError> {
        self.doc.updated_at = rfc3339(SystemTime::now());
        let json = serde_json::to_vec_pretty(&self.doc).map_err(ResultsError::Serialize)?;
        write_atomic(&self.path, &json).map_err(|source| ResultsError::Write {
            path: self.path.clone(),
            source,
        })
    }
}
