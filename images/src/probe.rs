//! Builds the probe: its own cargo invocation for the host target with a linker script and
//! no C runtime, so the flags never reach the host crates. Cached by the hash of its sources,
//! the flags and the toolchain version (remembered, not asked of rustc on every start:
//! `toolchain.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::manifest::{hex, sha256_file, Artifact, Manifest};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the probe sources in {path}")]
    Sources {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run {tool}: is the Rust toolchain installed?")]
    Tool {
        tool: String,
        #[source]
        source: std::io::Error,
    },
    #[error("building the probe failed (cargo exit {status}):\n{stderr}")]
    Build { status: String, stderr: String },
    #[error("cannot store the probe in the image cache {path}")]
    Cache {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Where the probe's crate and the ABI crate it shares with the VMM live.
pub fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("probe")
}

fn abi_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("probe-abi")
}

pub use crate::cache_dir;

fn rustflags(linker_script: &Path) -> Vec<String> {
    vec![
        "-C".into(),
        "link-arg=-nostartfiles".into(),
        "-C".into(),
        "link-arg=-nostdlib".into(),
        "-C".into(),
        "link-arg=-static".into(),
        "-C".into(),
        format!("link-arg=-T{}", linker_script.display()),
        "-C".into(),
        "relocation-model=static".into(),
        // Interrupts arrive on the interrupted stack (irq.rs): nothing may live below RSP.
        "-C".into(),
        "no-redzone=y".into(),
    ]
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn tool_version(tool: &str, arg: &str) -> Result<String, Error> {
    let out = Command::new(tool)
        .arg(arg)
        .output()
        .map_err(|e| Error::Tool {
            tool: tool.into(),
            source: e,
        })?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Every file under `dir` except build output, sorted, as (relative path, contents).
pub(crate) fn collect(
    dir: &Path,
    rel: &str,
    out: &mut Vec<(String, Vec<u8>)>,
) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "target" || name.starts_with('.') || name == "Cargo.lock" {
            continue;
        }
        let path = e.path();
        let r = format!("{rel}/{name}");
        if e.file_type()?.is_dir() {
            collect(&path, &r, out)?;
        } else {
            out.push((r, std::fs::read(&path)?));
        }
    }
    Ok(())
}

fn input_hash(flags: &[String], rustc: &str) -> Result<String, Error> {
    let mut files = Vec::new();
    for (dir, rel) in [(source_dir(), "probe"), (abi_dir(), "probe-abi")] {
        collect(&dir, rel, &mut files).map_err(|e| Error::Sources {
            path: dir.display().to_string(),
            source: e,
        })?;
    }
    let mut h = Sha256::new();
    for (name, data) in &files {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((data.len() as u64).to_le_bytes());
        h.update(data);
    }
    // The linker script path is in the flags; hash the flags without it so the cache does not
    // depend on where the checkout is.
    for f in flags.iter().filter(|f| !f.starts_with("link-arg=-T")) {
        h.update(f.as_bytes());
    }
    h.update(rustc.as_bytes());
    Ok(hex(&h.finalize()))
}

/// The probe's cache key and where its build lives.
struct Key {
    flags: Vec<String>,
    rustc: String,
    hash: String,
    dir: PathBuf,
}

fn key() -> Result<Key, Error> {
    let flags = rustflags(&source_dir().join("probe.ld"));
    let rustc = crate::toolchain::rustc_version(&cache_dir()).map_err(|e| Error::Tool {
        tool: "rustc".into(),
        source: e,
    })?;
    let hash = input_hash(&flags, &rustc)?;
    let dir = cache_dir().join(format!("probe-{}", &hash[..16]));
    Ok(Key {
        flags,
        rustc,
        hash,
        dir,
    })
}

fn reuse(hash: &str, dir: &Path) -> Option<Manifest> {
    Manifest::load(&dir.join("manifest.json")).filter(|m| m.input_hash == hash && m.verify())
}

/// The probe's manifest if the cache holds a build of the current sources, without building.
pub fn cached() -> Result<Option<Manifest>, Error> {
    let k = key()?;
    Ok(reuse(&k.hash, &k.dir))
}

/// Builds the probe if its inputs changed; returns its manifest. `progress` hears about a
/// build (which takes a while the first time).
pub fn build(progress: &mut dyn FnMut(&str)) -> Result<Manifest, Error> {
    let src = source_dir();
    let Key {
        flags,
        rustc,
        hash: key,
        dir,
    } = key()?;
    let manifest_path = dir.join("manifest.json");
    if let Some(m) = reuse(&key, &dir) {
        return Ok(m);
    }
    // One build at a time across processes (parallel tests, two terminals): the others wait,
    // then find the finished image.
    let lock_err = |e| Error::Cache {
        path: cache_dir().display().to_string(),
        source: e,
    };
    std::fs::create_dir_all(cache_dir()).map_err(lock_err)?;
    let lock = std::fs::File::create(cache_dir().join("probe.lock")).map_err(lock_err)?;
    lock.lock().map_err(lock_err)?;
    if let Some(m) = Manifest::load(&manifest_path) {
        if m.input_hash == key && m.verify() {
            return Ok(m);
        }
    }
    progress("building the probe guest (cargo, release)");
    let target_dir = cache_dir().join("probe-build");
    let out = Command::new(cargo())
        .args(["build", "--release", "--locked", "--manifest-path"])
        .arg(src.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("RUSTFLAGS")
        .env("CARGO_ENCODED_RUSTFLAGS", flags.join("\u{1f}"))
        .output()
        .map_err(|e| Error::Tool {
            tool: cargo(),
            source: e,
        })?;
    if !out.status.success() {
        return Err(Error::Build {
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    let cache_err = |e| Error::Cache {
        path: dir.display().to_string(),
        source: e,
    };
    std::fs::create_dir_all(&dir).map_err(cache_err)?;
    let elf = dir.join("probe.elf");
    let tmp = dir.join("probe.elf.tmp");
    std::fs::copy(target_dir.join("release/probe"), &tmp).map_err(cache_err)?;
    std::fs::rename(&tmp, &elf).map_err(cache_err)?;
    let sha256 = sha256_file(&elf).map_err(cache_err)?;
    let bytes = std::fs::metadata(&elf).map_err(cache_err)?.len();
    let m = Manifest {
        image: "probe".into(),
        input_hash: key,
        tools: vec![
            ("rustc".into(), rustc),
            ("cargo".into(), tool_version(&cargo(), "-V")?),
        ],
        artifacts: vec![Artifact {
            name: "probe.elf".into(),
            path: elf,
            sha256,
            bytes,
        }],
        inputs: Vec::new(),
    };
    m.store(&manifest_path).map_err(cache_err)?;
    Ok(m)
}
