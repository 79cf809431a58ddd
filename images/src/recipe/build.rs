//! Making a recipe's disks: the cache key over every input, then the disks in a staging
//! directory beside the cache entry, renamed into place once complete with its manifest, so
//! a crash or a concurrent build never leaves a half-built entry that looks whole.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::ext4::{self, Ext4};
use super::tools::{os_args, Tool};
use super::{Disk, Error, Format, Recipe};
use crate::manifest::{hex, sha256_file, Artifact, Manifest};

/// Part of the cache key: bump it when the commands below change what they produce.
const BUILDER: &str = "vmbench recipe builder 1";

/// Everything a build depends on, found before deciding whether to build.
struct Inputs {
    hash: String,
    tools: Tools,
    /// For each disk, the tree of its `from_dir`.
    trees: Vec<Option<Vec<ext4::Entry>>>,
}

#[derive(Default)]
struct Tools {
    qemu_img: Option<Tool>,
    mke2fs: Option<Tool>,
    debugfs: Option<Tool>,
    versions: Vec<(String, String)>,
}

impl Tools {
    /// Finds the tools this recipe needs and asks their versions.
    fn for_recipe(r: &Recipe) -> Result<Tools, Error> {
        let mut t = Tools::default();
        if r.disks.iter().any(|d| d.format == Format::Qcow2) {
            let q = Tool::locate("qemu-img", "qemu-utils")?;
            t.versions.push((q.name.into(), q.version("--version")?));
            t.qemu_img = Some(q);
        }
        if r.disks.iter().any(|d| d.from_dir.is_some()) {
            let m = Tool::locate("mke2fs", "e2fsprogs")?;
            let d = Tool::locate("debugfs", "e2fsprogs")?;
            t.versions.push((m.name.into(), m.version("-V")?));
            t.versions.push((d.name.into(), d.version("-V")?));
            t.mke2fs = Some(m);
            t.debugfs = Some(d);
        }
        Ok(t)
    }
}

fn inputs(r: &Recipe) -> Result<Inputs, Error> {
    let tools = Tools::for_recipe(r)?;
    let mut h = Sha256::new();
    fn field(h: &mut Sha256, bytes: &[u8]) {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    field(&mut h, BUILDER.as_bytes());
    field(&mut h, ext4::MKE2FS_CONF.as_bytes());
    field(&mut h, r.text.as_bytes());
    for (tool, version) in &tools.versions {
        field(&mut h, tool.as_bytes());
        field(&mut h, version.as_bytes());
    }
    let mut trees = Vec::new();
    for d in &r.disks {
        let Some(src) = r.source_dir(d) else {
            trees.push(None);
            continue;
        };
        field(&mut h, d.name.as_bytes());
        let tree = ext4::walk(&src, &mut h).map_err(|e| match e {
            ext4::WalkError::Io { rel, source } => Error::FromDir {
                path: r.path.display().to_string(),
                disk: d.name.clone(),
                dir: if rel.is_empty() {
                    src.clone()
                } else {
                    src.join(rel)
                }
                .display()
                .to_string(),
                source,
            },
            ext4::WalkError::Unsupported { rel, what } => Error::FromDirEntry {
                path: r.path.display().to_string(),
                disk: d.name.clone(),
                entry: src.join(rel).display().to_string(),
                what: what.into(),
            },
        })?;
        trees.push(Some(tree));
    }
    Ok(Inputs {
        hash: hex(&h.finalize()),
        tools,
        trees,
    })
}

fn entry_dir(r: &Recipe, cache: &Path, hash: &str) -> PathBuf {
    cache.join(format!("{}-{}", r.name, &hash[..16]))
}

fn reuse(dir: &Path, hash: &str) -> Option<Manifest> {
    Manifest::load(&dir.join("manifest.json")).filter(|m| m.input_hash == hash && m.verify())
}

/// The recipe's manifest if `cache` holds a verified build of its current inputs.
pub fn cached(r: &Recipe, cache: &Path) -> Result<Option<Manifest>, Error> {
    let hash = inputs(r)?.hash;
    Ok(reuse(&entry_dir(r, cache, &hash), &hash))
}

/// Builds the recipe's disks under `cache` (normally `crate::cache_dir()`), or reuses them
/// when a build of the same inputs is there and its files still have their hashes.
pub fn build_in(
    r: &Recipe,
    cache: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<Manifest, Error> {
    let inputs = inputs(r)?;
    let dest = entry_dir(r, cache, &inputs.hash);
    if let Some(m) = reuse(&dest, &inputs.hash) {
        return Ok(m);
    }
    let cache_err = |p: &Path| {
        let path = p.display().to_string();
        move |source| Error::Cache { path, source }
    };
    std::fs::create_dir_all(cache).map_err(cache_err(cache))?;
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{}-{}.", r.name, &inputs.hash[..16]))
        .tempdir_in(cache)
        .map_err(cache_err(cache))?;
    let work = staging.path().join("work");
    std::fs::create_dir(&work).map_err(cache_err(&work))?;

    let mut artifacts = Vec::new();
    for (d, tree) in r.disks.iter().zip(&inputs.trees) {
        progress(&format!(
            "image {}: making disk `{}` ({} MiB {}{})",
            r.name,
            d.name,
            d.size_mib,
            d.format.extension(),
            if d.from_dir.is_some() { ", ext4" } else { "" }
        ));
        let file = format!("{}.{}", d.name, d.format.extension());
        let built = staging.path().join(&file);
        make_disk(r, d, tree.as_deref(), &inputs.tools, &built, &work)?;
        let meta = std::fs::metadata(&built).map_err(cache_err(&built))?;
        artifacts.push(Artifact {
            name: d.name.clone(),
            path: dest.join(&file),
            sha256: sha256_file(&built).map_err(cache_err(&built))?,
            bytes: meta.len(),
        });
    }
    std::fs::remove_dir_all(&work).map_err(cache_err(&work))?;
    let m = Manifest {
        image: r.name.clone(),
        input_hash: inputs.hash.clone(),
        tools: inputs.tools.versions.clone(),
        artifacts,
        inputs: Vec::new(),
    };
    m.store(&staging.path().join("manifest.json"))
        .map_err(cache_err(staging.path()))?;
    install(staging.path(), &dest, &inputs.hash, m)
}

/// Moves a finished staging directory to its place in the cache. If another build of the
/// same inputs got there first and verifies, its result stands.
fn install(staging: &Path, dest: &Path, hash: &str, m: Manifest) -> Result<Manifest, Error> {
    if std::fs::rename(staging, dest).is_ok() {
        return Ok(m);
    }
    if let Some(theirs) = reuse(dest, hash) {
        return Ok(theirs);
    }
    // A damaged or partial entry: replace it.
    let cache_err = |source| Error::Cache {
        path: dest.display().to_string(),
        source,
    };
    match std::fs::remove_dir_all(dest) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(cache_err(e)),
        _ => {}
    }
    std::fs::rename(staging, dest).map_err(cache_err)?;
    Ok(m)
}

fn make_disk(
    r: &Recipe,
    d: &Disk,
    tree: Option<&[ext4::Entry]>,
    tools: &Tools,
    out: &Path,
    work: &Path,
) -> Result<(), Error> {
    let size = d.size_mib << 20;
    let sparse_file = |p: &Path| {
        std::fs::File::create(p)
            .and_then(|f| f.set_len(size))
            .map_err(|source| Error::Cache {
                path: p.display().to_string(),
                source,
            })
    };
    let qemu_img = || tools.qemu_img.as_ref().expect("found for qcow2 disks");
    match (tree, d.format) {
        (None, Format::Raw) => sparse_file(out),
        (None, Format::Qcow2) => qemu_img()
            .run(
                &os_args![
                    "create",
                    "-q",
                    "-f",
                    "qcow2",
                    "-o",
                    "compat=1.1",
                    out,
                    format!("{}M", d.size_mib)
                ],
                &[],
            )
            .map(drop),
        (Some(tree), format) => {
            let raw = match format {
                Format::Raw => out.to_path_buf(),
                Format::Qcow2 => work.join(format!("{}.raw", d.name)),
            };
            sparse_file(&raw)?;
            let src = r.source_dir(d).expect("a tree comes from from_dir");
            let fs = Ext4 {
                mke2fs: tools.mke2fs.as_ref().expect("found for from_dir"),
                debugfs: tools.debugfs.as_ref().expect("found for from_dir"),
                work,
            };
            fs.make(&raw, &src, tree, &format!("{}/{}", r.name, d.name))?;
            if format == Format::Qcow2 {
                qemu_img().run(
                    &os_args![
                        "convert",
                        "-q",
                        "-f",
                        "raw",
                        "-O",
                        "qcow2",
                        "-o",
                        "compat=1.1",
                        raw,
                        out
                    ],
                    &[],
                )?;
                std::fs::remove_file(&raw).map_err(|source| Error::Cache {
                    path: raw.display().to_string(),
                    source,
                })?;
            }
            Ok(())
        }
    }
}
