//! Builds what vmbench guests boot, cached by content and recorded in a manifest, so a result
//! can say exactly which bytes ran: the probe (`probe`) and the disk images that recipes in
//! `images/recipes/` declare (`recipe`), and the Linux guest (`linux`: a Debian kernel and an
//! initramfs with vmbench's agent, from the packages locked in `images/linux.lock`).

pub mod linux;
pub mod manifest;
pub mod probe;
pub mod recipe;
pub mod test_host;
pub mod toolchain;

use std::path::{Path, PathBuf};

pub use manifest::Manifest;

/// Where the program `name` is on this machine: the first file of that name in PATH, then in
/// /usr/sbin and /sbin (where e2fsprogs and iproute2 live, and which a non-root PATH may lack).
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The image cache: `target/images` of the workspace, or `$VMBENCH_CACHE`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("VMBENCH_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/images"))
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Probe(#[from] probe::Error),
    #[error(transparent)]
    Recipe(#[from] recipe::Error),
    #[error(transparent)]
    Linux(#[from] linux::Error),
}

/// Builds (or reuses from the cache) the image called `name`: `probe`, `linux`, `test-host`
/// or a recipe's name.
pub fn build(name: &str, progress: &mut dyn FnMut(&str)) -> Result<Manifest, Error> {
    match name {
        "probe" => Ok(probe::build(progress)?),
        "linux" => Ok(linux::build(&linux::Options::default(), progress)?),
        "test-host" => {
            // The test host carries the vmbench binary that asks for it.
            let vmbench = std::env::current_exe().map_err(|e| linux::Error::Cache {
                path: "the running vmbench binary".into(),
                source: e,
            })?;
            // QEMU goes in when a command needs it (`bench --host emulated` with QEMU cases).
            let opts = test_host::Options {
                linux: linux::Options::default(),
                vmbench,
                qemu: false,
            };
            Ok(test_host::build(&opts, progress)?.manifest)
        }
        _ => Ok(recipe::build(name, progress)?),
    }
}

/// Whether an image's current inputs have a verified build in the cache.
#[derive(Debug)]
pub enum Status {
    Built(Manifest),
    NotBuilt,
    /// The recipe or its inputs cannot be read; the error says why.
    Broken(String),
}

#[derive(Debug)]
pub struct Entry {
    pub name: String,
    pub description: String,
    pub status: Status,
}

/// Every image vmbench can build, the probe first, then the recipes by name. A recipe that
/// does not load is listed as broken rather than hiding the others.
pub fn list() -> Result<Vec<Entry>, Error> {
    let status = |r: Result<Option<Manifest>, String>| match r {
        Ok(Some(m)) => Status::Built(m),
        Ok(None) => Status::NotBuilt,
        Err(e) => Status::Broken(e),
    };
    let mut out = vec![Entry {
        name: "probe".into(),
        description: "vmbench's own minimal x86-64 guest (no_std Rust)".into(),
        status: status(probe::cached().map_err(|e| error_chain(&e))),
    }];
    out.push(Entry {
        name: "linux".into(),
        description: "a Debian kernel and an initramfs with vmbench's agent (images/linux.lock)"
            .into(),
        status: status(linux::cached(&linux::Options::default()).map_err(|e| error_chain(&e))),
    });
    for path in recipe::paths(&recipe::recipes_dir())? {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let entry = match recipe::load(&path) {
            Ok(r) => Entry {
                status: status(recipe::cached(&r, &cache_dir()).map_err(|e| error_chain(&e))),
                name: r.name,
                description: r.description,
            },
            Err(e) => Entry {
                name: stem,
                description: String::new(),
                status: Status::Broken(error_chain(&e)),
            },
        };
        out.push(entry);
    }
    Ok(out)
}

/// An error and its sources on one line, as the CLI prints them.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
