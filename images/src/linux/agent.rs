//! Builds the guest agent (`images/agent/`): its own cargo invocation for the host target with
//! `+crt-static`, so the agent is one static binary and the flag never reaches the host crates.

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot run {tool}: is the Rust toolchain installed?")]
    Tool {
        tool: String,
        #[source]
        source: std::io::Error,
    },
    #[error("building the agent failed ({status}):\n{stderr}")]
    Build { status: String, stderr: String },
    #[error("cannot read the agent sources or its build in {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The agent's target: the host's x86-64 Linux (glibc, linked statically).
pub const TARGET: &str = "x86_64-unknown-linux-gnu";

pub fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("agent")
}

/// The rustflags of the agent's build (hashed into the image's key).
pub fn rustflags() -> Vec<String> {
    vec!["-C".into(), "target-feature=+crt-static".into()]
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Builds the agent in `target_dir`; returns the binary's bytes.
pub fn build(target_dir: &Path) -> Result<Vec<u8>, Error> {
    let mut flags = rustflags();
    // Keep the build directory (which differs between caches) out of the binary.
    flags.push(format!(
        "--remap-path-prefix={}=/vmbench-agent-build",
        target_dir.display()
    ));
    let out = Command::new(cargo())
        .args(["build", "--release", "--locked", "--target", TARGET])
        .arg("--manifest-path")
        .arg(source_dir().join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
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
    let bin = target_dir.join(TARGET).join("release/vmbench-agent");
    std::fs::read(&bin).map_err(|e| Error::Io {
        path: bin.display().to_string(),
        source: e,
    })
}
