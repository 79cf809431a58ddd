//! An image manifest: what was built, from which inputs, with which tools, and the hash of
//! every output.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub name: String,
    pub path: PathBuf,
    pub sha256: String,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub image: String,
    /// Hash of every input (sources, build flags, toolchain version): the cache key.
    pub input_hash: String,
    /// Tool versions that produced the image.
    pub tools: Vec<(String, String)>,
    pub artifacts: Vec<Artifact>,
    /// What else went in, as (kind, description): for the linux image every Debian package
    /// (`deb`: name, version, architecture, SHA-256) and kernel module (`module`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<(String, String)>,
}

impl Manifest {
    pub fn load(path: &Path) -> Option<Manifest> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// Writes atomically (temporary file, then rename).
    pub fn store(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(tmp, path)
    }

    /// True if every artifact is still there with the recorded hash.
    pub fn verify(&self) -> bool {
        self.check().is_ok()
    }

    /// The first artifact that is gone or no longer has the recorded hash, and what is wrong
    /// with it, in words that name its path and both hashes.
    pub fn check(&self) -> Result<(), String> {
        for a in &self.artifacts {
            match sha256_file(&a.path) {
                Ok(h) if h == a.sha256 => {}
                Ok(h) => {
                    return Err(format!(
                        "{} of the {} image has SHA-256 {h}, not the recorded {}",
                        a.path.display(),
                        self.image,
                        a.sha256
                    ))
                }
                Err(e) => {
                    return Err(format!(
                        "{} of the {} image cannot be read: {e}",
                        a.path.display(),
                        self.image
                    ))
                }
            }
        }
        Ok(())
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Streams the file through the hash: disks can be large.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut h = Sha256::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut h)?;
    Ok(hex(&h.finalize()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
