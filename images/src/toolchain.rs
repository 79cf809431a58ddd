//! The Rust toolchain's version, for cache keys, without running the toolchain on every start.
//!
//! `rustc -V` costs ~20 ms (a rustup proxy resolving a toolchain, then rustc itself), which
//! was a third of `vmbench boot`'s whole wall time. As cargo does (`.rustc_info.json`), the
//! answer is remembered under a fingerprint of what decides it: the `rustc` that `PATH` (or
//! `$RUSTC`) resolves to, the directory it runs from, rustup's toolchain selection
//! (`RUSTUP_TOOLCHAIN`, its settings file) and the installed toolchains' compilers. When any of
//! them changes, rustc runs again.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::UNIX_EPOCH;

use crate::manifest::hex;

/// The output of `rustc -V`, from the memo in `memo_dir` when the toolchain is unchanged.
pub fn rustc_version(memo_dir: &Path) -> std::io::Result<String> {
    let memo = fingerprint().map(|fp| (memo_dir.join(format!("rustc-version-{fp}")), fp));
    if let Some((path, _)) = &memo {
        if let Ok(v) = std::fs::read_to_string(path) {
            if !v.is_empty() {
                return Ok(v);
            }
        }
    }
    let out = Command::new(rustc()).arg("-V").output()?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if let (Some((path, fp)), true) = (memo, out.status.success() && !version.is_empty()) {
        // A failed write only costs the next start another rustc run.
        let tmp = memo_dir.join(format!(".rustc-version-{fp}.{}", std::process::id()));
        if std::fs::create_dir_all(memo_dir).is_ok() && std::fs::write(&tmp, &version).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
    Ok(version)
}

fn rustc() -> PathBuf {
    std::env::var_os("RUSTC")
        .map(PathBuf::from)
        .unwrap_or_else(|| "rustc".into())
}

/// Where `PATH` finds `name` (or `name` itself when it has a directory part).
fn which(name: &Path) -> Option<PathBuf> {
    if name.components().count() > 1 {
        return Some(name.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Identity of a file's current contents as the file system sees it: size, mtime, inode.
fn stamp(path: &Path, h: &mut impl Hasher) {
    use std::os::unix::fs::MetadataExt;
    path.hash(h);
    if let Ok(m) = std::fs::metadata(path) {
        (m.len(), m.ino(), m.mtime(), m.mtime_nsec()).hash(h);
        if let Ok(t) = m.modified() {
            t.duration_since(UNIX_EPOCH).ok().hash(h);
        }
    }
}

/// A fingerprint of everything that selects the compiler, or None when `rustc` is not found
/// (then rustc runs and reports why).
fn fingerprint() -> Option<String> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let exe = which(&rustc())?;
    stamp(&exe, &mut h);
    let real = std::fs::canonicalize(&exe).ok()?;
    stamp(&real, &mut h);
    // rustup proxies pick a toolchain by environment, settings and rust-toolchain files
    // found from the working directory.
    std::env::var_os("RUSTUP_TOOLCHAIN").hash(&mut h);
    std::env::current_dir().ok().hash(&mut h);
    let rustup_home = std::env::var_os("RUSTUP_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".rustup")));
    if let Some(home) = rustup_home {
        stamp(&home.join("settings.toml"), &mut h);
        if let Ok(dir) = std::fs::read_dir(home.join("toolchains")) {
            let mut toolchains: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
            toolchains.sort();
            for t in toolchains {
                stamp(&t.join("bin/rustc"), &mut h);
            }
        }
    }
    if let Ok(cwd) = std::env::current_dir() {
        for dir in cwd.ancestors() {
            for f in ["rust-toolchain", "rust-toolchain.toml"] {
                stamp(&dir.join(f), &mut h);
            }
        }
    }
    Some(hex(&h.finish().to_le_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memo_answers_what_rustc_answers() {
        let dir = tempfile::tempdir().unwrap();
        let first = rustc_version(dir.path()).unwrap();
        assert!(first.starts_with("rustc "), "{first}");
        let memos: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(memos.len(), 1, "one memo written");
        // The second answer comes from the memo: make it recognisable to prove it.
        std::fs::write(memos[0].path(), "rustc 0.0.0-memo").unwrap();
        assert_eq!(rustc_version(dir.path()).unwrap(), "rustc 0.0.0-memo");
    }
}
