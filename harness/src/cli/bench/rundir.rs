//! The run directory (`--out`, or `results/<run-id>/`): locked while a run writes it, refused
//! when it already holds results unless `--replace` says to overwrite them, and its scratch
//! disks named per process so that they can be told apart and those of dead runs removed.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::results::RESULTS_FILE;

/// The lock file inside a run directory.
pub const LOCK_FILE: &str = ".vmbench.lock";
/// Scratch disks are `scratch-<pid>-<name>.<format>`.
const SCRATCH: &str = "scratch-";

/// Held for the whole run: the run directory's lock (an flock, released when dropped or
/// when the process dies, however it dies).
#[derive(Debug)]
pub struct RunDir {
    pub path: PathBuf,
    _lock: File,
}

impl RunDir {
    /// Locks `dir` (created if missing) for this run. A directory another run holds is
    /// refused, naming that run's pid; one that holds a results.json is refused unless
    /// `replace`. Scratch disks left there by dead runs are removed.
    pub fn lock(dir: &Path, replace: Replace) -> anyhow::Result<RunDir> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let lock_path = dir.join(LOCK_FILE);
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .with_context(|| format!("cannot open {}", lock_path.display()))?;
        match f.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = f.read_to_string(&mut pid);
                bail!(
                    "results directory {} is in use by another vmbench run (pid {}); wait for it, or choose another --out",
                    dir.display(),
                    pid.trim()
                );
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", lock_path.display()))
            }
        }
        let _ = f.set_len(0);
        let _ = f.rewind();
        let _ = write!(f, "{}", std::process::id());
        let results = dir.join(RESULTS_FILE);
        if results.exists() && replace == Replace::No {
            bail!(
                "{} already holds results ({}); pass --replace to overwrite them, or choose another --out",
                dir.display(),
                results.display()
            );
        }
        remove_stale_scratch(dir);
        Ok(RunDir {
            path: dir.to_path_buf(),
            _lock: f,
        })
    }
}

/// Whether a run may overwrite the results already in its directory (`bench --replace`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replace {
    No,
    Yes,
}

/// The name (without extension) of this process's scratch disk `name`.
pub fn scratch_name(name: &str) -> String {
    format!("{SCRATCH}{}-{name}", std::process::id())
}

/// Removes the scratch disks in `dir` whose process is gone (a run killed with -9); returns
/// how many.
pub fn remove_stale_scratch(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(SCRATCH))
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !alive(pid) && std::fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Whether process `pid` exists (its /proc entry does).
pub fn alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`RunDir::lock`] just after the holder let go: another test of this binary forking
    /// while the lock was held holds a copy of its file description, and so the lock, until
    /// that child's exec closes it; wait that moment out.
    fn lock_after_release(dir: &Path, replace: Replace) -> anyhow::Result<RunDir> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match RunDir::lock(dir, replace) {
                Err(e)
                    if e.to_string().contains("in use by another vmbench run")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                r => return r,
            }
        }
    }

    #[test]
    fn a_locked_directory_is_refused_and_results_need_replace() {
        let dir = tempfile::tempdir().unwrap();
        let held = RunDir::lock(dir.path(), Replace::No).unwrap();

        let busy = RunDir::lock(dir.path(), Replace::Yes)
            .unwrap_err()
            .to_string();
        assert!(busy.contains("in use by another vmbench run"), "{busy}");
        assert!(busy.contains(&std::process::id().to_string()), "{busy}");
        drop(held);

        std::fs::write(dir.path().join(RESULTS_FILE), "{}").unwrap();
        let full = lock_after_release(dir.path(), Replace::No)
            .unwrap_err()
            .to_string();
        assert!(full.contains("pass --replace"), "{full}");
        assert!(lock_after_release(dir.path(), Replace::Yes).is_ok());
    }

    #[test]
    fn scratch_disks_of_dead_runs_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        // A pid above the kernel's pid_max (4194304) never exists.
        let dead = dir.path().join("scratch-99999999-disk-0.raw");
        let mine = dir.path().join(format!("{}.raw", scratch_name("disk-0")));
        let other = dir.path().join("disk.raw");
        for p in [&dead, &mine, &other] {
            std::fs::write(p, b"x").unwrap();
        }

        assert_eq!(remove_stale_scratch(dir.path()), 1);
        assert!(!dead.exists() && mine.exists() && other.exists());
    }
}
