//! Image recipes: TOML files in `images/recipes/` that declare disks, each either an empty
//! data disk or an ext4 file system made from a directory, written as qcow2 (version 3) or
//! raw. The schema is in docs/images.md; `build` makes the disks with qemu-img and e2fsprogs
//! and caches them by the hash of every input.

mod build;
mod ext4;
mod tools;

use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use build::{build_in, cached};

/// The largest disk a recipe may declare: 1 TiB.
pub const MAX_SIZE_MIB: u64 = 1 << 20;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// qcow2 version 3 (`compat=1.1`).
    #[default]
    Qcow2,
    /// A sparse raw file.
    Raw,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Qcow2 => "qcow2",
            Format::Raw => "raw",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    /// The artifact's name and its file name (`<name>.qcow2` or `<name>.raw`).
    pub name: String,
    /// The virtual size.
    pub size_mib: u64,
    #[serde(default)]
    pub format: Format,
    /// A directory (relative to the recipe file) whose tree becomes an ext4 file system on
    /// the disk; without it the disk is empty (all zeroes).
    pub from_dir: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Must match the file name: `images build NAME` finds `NAME.toml`.
    pub name: String,
    pub description: String,
    #[serde(rename = "disk", default)]
    pub disks: Vec<Disk>,
    /// The file the recipe was read from.
    #[serde(skip)]
    pub path: PathBuf,
    /// Its bytes, which are part of the cache key.
    #[serde(skip)]
    text: String,
}

impl Recipe {
    /// Where a disk's `from_dir` is on this machine.
    pub fn source_dir(&self, disk: &Disk) -> Option<PathBuf> {
        let base = self.path.parent().unwrap_or(Path::new("."));
        disk.from_dir.as_ref().map(|d| base.join(d))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no image `{name}`: vmbench builds `probe` and the recipes in {dir}: {known}")]
    Unknown {
        name: String,
        dir: String,
        known: String,
    },
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}:{line}:{column}: {message}; the recipe schema is in docs/images.md")]
    Parse {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: `{key}` {problem}")]
    Invalid {
        path: String,
        key: String,
        problem: String,
    },
    #[error("{path}: disk `{disk}`: cannot read from_dir {dir}")]
    FromDir {
        path: String,
        disk: String,
        dir: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: disk `{disk}`: {entry} in from_dir is {what}; only regular files and directories with plain names can go into the image")]
    FromDirEntry {
        path: String,
        disk: String,
        entry: String,
        what: String,
    },
    #[error("cannot find {tool} in PATH, /usr/sbin or /sbin: install {package} (apt-get install {package})")]
    ToolMissing { tool: String, package: String },
    #[error("cannot run {tool}")]
    Tool {
        tool: String,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    ToolFailed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("cannot write the image cache {path}")]
    Cache {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// The shipped recipes: `images/recipes/`.
pub fn recipes_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes")
}

/// The recipe files (`*.toml`) in `dir`, sorted.
pub fn paths(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let read_err = |e| Error::Read {
        path: dir.display().to_string(),
        source: e,
    };
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(read_err)? {
        let p = e.map_err(read_err)?.path();
        if p.extension().is_some_and(|x| x == "toml") && p.is_file() {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// The file of the shipped recipe called `name`.
pub fn find(name: &str) -> Result<PathBuf, Error> {
    let dir = recipes_dir();
    let path = dir.join(format!("{name}.toml"));
    if valid_name(name) && path.is_file() {
        return Ok(path);
    }
    let known: Vec<String> = paths(&dir)?
        .iter()
        .filter_map(|p| Some(p.file_stem()?.to_string_lossy().into_owned()))
        .collect();
    Err(Error::Unknown {
        name: name.into(),
        dir: dir.display().to_string(),
        known: if known.is_empty() {
            "(none)".into()
        } else {
            known.join(", ")
        },
    })
}

/// Builds (or reuses) the shipped recipe `name` in the image cache.
pub fn build(name: &str, progress: &mut dyn FnMut(&str)) -> Result<crate::Manifest, Error> {
    let recipe = load(&find(name)?)?;
    build_in(&recipe, &crate::cache_dir(), progress)
}

/// Reads and checks a recipe file.
pub fn load(path: &Path) -> Result<Recipe, Error> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Error::Read {
        path: shown.clone(),
        source: e,
    })?;
    let mut recipe: Recipe = toml::from_str(&text).map_err(|e| {
        let (line, column) = line_column(&text, e.span().map_or(0, |s| s.start));
        Error::Parse {
            path: shown.clone(),
            line,
            column,
            message: e.message().trim().to_string(),
        }
    })?;
    recipe.path = path.to_path_buf();
    recipe.text = text;
    validate(&recipe)?;
    Ok(recipe)
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// Names become file and directory names in the cache.
fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && !s.starts_with(['.', '-'])
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

const NAME_RULE: &str =
    "use 1 to 64 letters, digits, '-', '_' or '.', not starting with '.' or '-'";

fn validate(r: &Recipe) -> Result<(), Error> {
    let invalid = |key: String, problem: String| Error::Invalid {
        path: r.path.display().to_string(),
        key,
        problem,
    };
    if !valid_name(&r.name) {
        return Err(invalid(
            "name".into(),
            format!("= {:?} is not a valid name; {NAME_RULE}", r.name),
        ));
    }
    if r.name == "probe" || r.name == "linux" {
        return Err(invalid(
            "name".into(),
            format!(
                "= {:?} is taken by a built-in image; choose another name",
                r.name
            ),
        ));
    }
    let stem = r.path.file_stem().map(|s| s.to_string_lossy().into_owned());
    if stem.as_deref() != Some(r.name.as_str()) {
        return Err(invalid(
            "name".into(),
            format!(
                "= {:?} does not match the file name; rename the file to {}.toml or set name = {:?}",
                r.name,
                r.name,
                stem.unwrap_or_default()
            ),
        ));
    }
    if r.disks.is_empty() {
        return Err(invalid(
            "disk".into(),
            "is missing: a recipe declares at least one [[disk]]".into(),
        ));
    }
    for (i, d) in r.disks.iter().enumerate() {
        if !valid_name(&d.name) {
            return Err(invalid(
                format!("disk[{i}].name"),
                format!("= {:?} is not a valid name; {NAME_RULE}", d.name),
            ));
        }
        if r.disks[..i].iter().any(|o| o.name == d.name) {
            return Err(invalid(
                format!("disk[{i}].name"),
                format!(
                    "= {:?} is used by an earlier disk; disk names must differ",
                    d.name
                ),
            ));
        }
        if !(1..=MAX_SIZE_MIB).contains(&d.size_mib) {
            return Err(invalid(
                format!("disk[{i}].size_mib"),
                format!(
                    "= {} (disk `{}`) is out of range; use 1 to {MAX_SIZE_MIB}",
                    d.size_mib, d.name
                ),
            ));
        }
        if let Some(dir) = &d.from_dir {
            if !dir.is_relative() || dir.as_os_str().is_empty() {
                return Err(invalid(
                    format!("disk[{i}].from_dir"),
                    format!(
                        "= {:?} (disk `{}`) must be a path relative to the recipe file",
                        dir.display().to_string(),
                        d.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(name: &str, text: &str) -> Result<Recipe, Error> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        load(&path)
    }

    #[test]
    fn defaults_to_qcow2() {
        let r = load_text(
            "a",
            "name = \"a\"\ndescription = \"d\"\n[[disk]]\nname = \"x\"\nsize_mib = 4\n",
        )
        .unwrap();
        assert_eq!(r.disks[0].format, Format::Qcow2);
        assert_eq!(r.disks[0].from_dir, None);
    }

    #[test]
    fn unknown_key_names_key_file_and_line() {
        let e = load_text(
            "a",
            "name = \"a\"\ndescription = \"d\"\n[[disk]]\nname = \"x\"\nsise_mib = 4\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("sise_mib") && e.contains("a.toml:5:1"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let base = "name = \"a\"\ndescription = \"d\"\n[[disk]]\nname = \"x\"\n";
        for (extra, key) in [
            ("size_mib = 0\n", "disk[0].size_mib"),
            ("size_mib = 4\nformat = \"vmdk\"\n", "vmdk"),
            ("size_mib = 4\nfrom_dir = \"/etc\"\n", "disk[0].from_dir"),
        ] {
            let e = load_text("a", &format!("{base}{extra}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key) && e.contains("a.toml"), "{e}");
        }
        let e = load_text(
            "b",
            "name = \"a\"\ndescription = \"d\"\n[[disk]]\nname = \"x\"\nsize_mib = 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`name`") && e.contains("file name"), "{e}");
        let e = load_text("a", "name = \"a\"\ndescription = \"d\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`disk`"), "{e}");
        let e = load_text(
            "a",
            "name = \"a\"\ndescription = \"d\"\n[[disk]]\nname = \"x\"\nsize_mib = 1\n[[disk]]\nname = \"x\"\nsize_mib = 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("disk[1].name"), "{e}");
    }

    #[test]
    fn shipped_recipes_load() {
        let paths = paths(&recipes_dir()).unwrap();
        assert!(paths.len() >= 2);
        for p in paths {
            load(&p).unwrap();
        }
    }
}
