//! A/B in one run: `bench SCENARIO --ab OTHER_VMBENCH` (or `--ab-rev REV`, built in a
//! temporary git worktree) runs every case on this build and on the other, interleaved
//! A B B A. The other build is driven through a small, versioned interface (docs/ci.md):
//! `vmbench protocol` prints `{"run_one": 1}`, and `vmbench run-one SCENARIO --case ID
//! --index K [--duration SECS]` boots one guest for one repetition and prints one line of JSON,
//! `{"run_one": 1, "repetition": {...}}` or `{"run_one": 1, "failed": {"reason", "console_tail"}}`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::results::{AbRun, Repetition};
use crate::scenario::Case;

/// How the reason of a case that failed on the other build of an A/B run starts.
pub const OTHER_BUILD_FAILED: &str = "on the other build";

/// The version of the run-one interface this build speaks and expects.
pub const RUN_ONE_PROTOCOL: u32 = 1;

/// What `run-one` prints.
#[derive(Debug, Serialize, Deserialize)]
pub struct RunOneOutput {
    pub run_one: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repetition: Option<Repetition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<RunOneFailure>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RunOneFailure {
    pub reason: String,
    pub console_tail: Vec<String>,
}

/// The other build.
pub struct Other {
    pub binary: PathBuf,
    pub scenario: PathBuf,
    pub duration: Option<f64>,
    pub info: AbRun,
    /// A temporary worktree to remove at the end (`--ab-rev`).
    worktree: Option<(PathBuf, PathBuf)>,
}

impl Other {
    /// Checks that `binary` speaks the run-one protocol; refuses clearly when it is too old.
    pub fn new(binary: &Path, scenario: &Path, duration: Option<f64>) -> anyhow::Result<Other> {
        let out = Command::new(binary)
            .arg("protocol")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("--ab {}: cannot run it", binary.display()))?;
        let spoken = serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v.get("run_one")?.as_u64());
        match spoken {
            Some(v) if v == u64::from(RUN_ONE_PROTOCOL) => {}
            Some(v) => bail!(
                "--ab {}: it speaks run-one protocol {v}, this vmbench speaks {RUN_ONE_PROTOCOL}; use builds of matching protocol",
                binary.display()
            ),
            None => bail!(
                "--ab {}: it does not speak the run-one protocol (no `vmbench protocol` subcommand): it is older than A/B support; compare two separate runs with `vmbench gate` instead",
                binary.display()
            ),
        }
        let version = Command::new(binary)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        Ok(Other {
            binary: binary.to_path_buf(),
            scenario: scenario.to_path_buf(),
            duration,
            info: AbRun {
                other_binary: binary.display().to_string(),
                other_version: version,
                other_revision: None,
                protocol: RUN_ONE_PROTOCOL,
            },
            worktree: None,
        })
    }

    /// Builds `rev` in a temporary git worktree of the repository this vmbench was built
    /// from, then checks it like [`Other::new`].
    pub fn build_rev(rev: &str, scenario: &Path, duration: Option<f64>) -> anyhow::Result<Other> {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("cannot find the source tree")?
            .to_path_buf();
        let git = |args: &[&str]| -> anyhow::Result<String> {
            let out = Command::new("git")
                .arg("-C")
                .arg(&repo)
                .args(args)
                .output()
                .context("cannot run git")?;
            if !out.status.success() {
                bail!(
                    "git {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        };
        let full = git(&["rev-parse", "--verify", &format!("{rev}^{{commit}}")])
            .with_context(|| format!("--ab-rev {rev}: not a revision of {}", repo.display()))?;
        let dir =
            std::env::temp_dir().join(format!("vmbench-ab-{}-{}", &full[..12], std::process::id()));
        let dir_s = dir.display().to_string();
        git(&["worktree", "add", "--detach", &dir_s, &full])
            .with_context(|| format!("--ab-rev {rev}: cannot make a worktree"))?;
        eprintln!("--ab-rev {rev}: building {} in {dir_s}", &full[..12]);
        // A persistent target directory (a CI cache) saves rebuilding the dependencies.
        let target = std::env::var_os("VMBENCH_AB_TARGET_DIR")
            .map_or_else(|| dir.join("target"), PathBuf::from);
        if is_own_target_dir(&target) {
            let _ = git(&["worktree", "remove", "--force", &dir_s]);
            bail!(
                "VMBENCH_AB_TARGET_DIR={} is the target directory of this vmbench build: building \
                 another revision there leaves artifacts cargo then takes as up to date for this \
                 tree's sources; give it a directory of its own",
                target.display()
            );
        }
        let status = Command::new("cargo")
            .args(["build", "--release", "-p", "vmbench"])
            .current_dir(&dir)
            .env("CARGO_TARGET_DIR", &target)
            .stdout(Stdio::null())
            .status()
            .context("cannot run cargo")?;
        if !status.success() {
            let _ = git(&["worktree", "remove", "--force", &dir_s]);
            bail!("--ab-rev {rev}: cargo build failed in {dir_s}");
        }
        // Copied out, so that a shared target directory can be reused at once.
        let binary = dir.join("vmbench-other");
        let checked = std::fs::copy(target.join("release/vmbench"), &binary)
            .with_context(|| format!("--ab-rev {rev}: cannot copy the built vmbench"))
            .and_then(|_| Other::new(&binary, scenario, duration));
        let mut other = match checked {
            Ok(o) => o,
            Err(e) => {
                let _ = git(&["worktree", "remove", "--force", &dir_s]);
                return Err(e);
            }
        };
        other.info.other_revision = Some(full);
        other.worktree = Some((repo, dir));
        Ok(other)
    }

    /// One repetition of `case` on the other build.
    pub fn repetition(&self, case: &Case, index: u32) -> Result<Repetition, (String, Vec<String>)> {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("run-one").arg(&self.scenario).args([
            "--case",
            &case.id,
            "--index",
            &index.to_string(),
        ]);
        if let Some(d) = self.duration {
            cmd.args(["--duration", &d.to_string()]);
        }
        let out = cmd
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| (format!("cannot run the other build: {e}"), vec![]))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let parsed: RunOneOutput = text
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .ok_or_else(|| {
                (
                    format!(
                        "the other build printed no run-one result (exit {:?})",
                        out.status.code()
                    ),
                    text.lines().rev().take(5).map(String::from).collect(),
                )
            })?;
        match (parsed.repetition, parsed.failed) {
            (Some(r), _) => Ok(r),
            (None, Some(f)) => Err((
                format!("{OTHER_BUILD_FAILED}: {}", f.reason),
                f.console_tail,
            )),
            (None, None) => Err((
                "the other build reported neither a repetition nor a failure".into(),
                vec![],
            )),
        }
    }
}

impl Drop for Other {
    fn drop(&mut self) {
        if let Some((repo, dir)) = self.worktree.take() {
            let _ = Command::new("git")
                .arg("-C")
                .arg(&repo)
                .args(["worktree", "remove", "--force"])
                .arg(&dir)
                .output();
        }
    }
}

/// Whether `target` is the cargo target directory this binary was built in
/// (`<target>/release/vmbench`).
fn is_own_target_dir(target: &Path) -> bool {
    let own = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent()?.parent().map(Path::to_path_buf));
    match (
        own.and_then(|o| o.canonicalize().ok()),
        target.canonicalize(),
    ) {
        (Some(o), Ok(t)) => o == t,
        _ => false,
    }
}
