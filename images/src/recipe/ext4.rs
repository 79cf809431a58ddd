//! An ext4 file system made from a directory, the same bytes on every run and every machine
//! with the same e2fsprogs: `mke2fs -d` with a fixed clock (E2FSPROGS_FAKE_TIME, and
//! SOURCE_DATE_EPOCH for e2fsprogs ≥ 1.47.1), a UUID and directory hash seed derived from the
//! disk's name, and our own mke2fs.conf instead of the host's; then a debugfs pass that sets
//! every inode's owner, mode and times, which `mke2fs -d` copies from the host files (the
//! host's ctime cannot be set from user space, so it cannot be fixed before).

use std::ffi::OsString;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::tools::{os_args, Tool};
use super::Error;

/// The clock of every build: 2000-01-01T00:00:00Z.
pub(super) const EPOCH: u64 = 946_684_800;

/// Debian's defaults, pinned so that the host's /etc/mke2fs.conf cannot change the result.
pub(super) const MKE2FS_CONF: &str = include_str!("mke2fs.conf");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Dir,
    File { executable: bool },
}

/// One thing under `from_dir`: its path relative to it (`/`-separated) and kind.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    pub rel: String,
    pub kind: Kind,
}

pub(super) enum WalkError {
    Io { rel: String, source: io::Error },
    Unsupported { rel: String, what: &'static str },
}

/// The tree under `root`, sorted by path, feeding every path, kind and content to `h`.
pub(super) fn walk(root: &Path, h: &mut Sha256) -> Result<Vec<Entry>, WalkError> {
    let meta = std::fs::metadata(root).map_err(|source| WalkError::Io {
        rel: String::new(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(WalkError::Io {
            rel: String::new(),
            source: io::ErrorKind::NotADirectory.into(),
        });
    }
    let mut out = Vec::new();
    walk_into(root, "", h, &mut out)?;
    Ok(out)
}

fn walk_into(dir: &Path, rel: &str, h: &mut Sha256, out: &mut Vec<Entry>) -> Result<(), WalkError> {
    let io_err = |rel: &str| {
        let rel = rel.to_string();
        move |source| WalkError::Io { rel, source }
    };
    let mut entries = std::fs::read_dir(dir)
        .and_then(|d| d.collect::<Result<Vec<_>, _>>())
        .map_err(io_err(rel))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        let child = match name.to_str() {
            Some(n) if rel.is_empty() => n.to_string(),
            Some(n) => format!("{rel}/{n}"),
            None => {
                return Err(WalkError::Unsupported {
                    rel: format!("{rel}/{}", name.to_string_lossy()),
                    what: "a name that is not UTF-8",
                })
            }
        };
        if child.contains(['"', '\\']) || child.chars().any(char::is_control) {
            return Err(WalkError::Unsupported {
                rel: child,
                what: "a name with a quote, backslash or control character",
            });
        }
        let meta = e.metadata().map_err(io_err(&child))?; // does not follow symlinks
        let kind = if meta.is_dir() {
            Kind::Dir
        } else if meta.is_file() {
            Kind::File {
                executable: meta.permissions().mode() & 0o111 != 0,
            }
        } else if meta.is_symlink() {
            return Err(WalkError::Unsupported {
                rel: child,
                what: "a symbolic link",
            });
        } else {
            return Err(WalkError::Unsupported {
                rel: child,
                what: "a special file",
            });
        };
        h.update((child.len() as u64).to_le_bytes());
        h.update(child.as_bytes());
        match kind {
            Kind::Dir => h.update([b'd']),
            Kind::File { executable } => {
                h.update([if executable { b'x' } else { b'f' }]);
                let data = std::fs::read(e.path()).map_err(io_err(&child))?;
                h.update((data.len() as u64).to_le_bytes());
                h.update(&data);
            }
        }
        out.push(Entry {
            rel: child.clone(),
            kind,
        });
        if kind == Kind::Dir {
            walk_into(&e.path(), &child, h, out)?;
        }
    }
    Ok(())
}

/// A UUID (version 4 layout) derived from `seed`, so it is fixed per disk but differs
/// between disks a guest may see together.
fn derived_uuid(seed: &str) -> String {
    let d = Sha256::digest(seed.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = crate::manifest::hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

/// The debugfs commands that give every inode a fixed owner (root), mode and times.
fn normalize_script(tree: &[Entry]) -> String {
    let mut s = String::new();
    let root = std::iter::once(("/".to_string(), 0o040755));
    let rest = tree.iter().map(|e| {
        let mode = match e.kind {
            Kind::Dir => 0o040755,
            Kind::File { executable: true } => 0o100755,
            Kind::File { executable: false } => 0o100644,
        };
        (format!("/{}", e.rel), mode)
    });
    for (path, mode) in root.chain(rest) {
        for (field, value) in [
            ("uid", "0".to_string()),
            ("gid", "0".to_string()),
            ("mode", format!("0{mode:o}")),
            ("atime", format!("@{EPOCH}")),
            ("mtime", format!("@{EPOCH}")),
            ("ctime", format!("@{EPOCH}")),
        ] {
            s.push_str(&format!("set_inode_field \"{path}\" {field} {value}\n"));
        }
    }
    s
}

pub(super) struct Ext4<'a> {
    pub mke2fs: &'a Tool,
    pub debugfs: &'a Tool,
    /// Scratch space for the configuration and the debugfs script.
    pub work: &'a Path,
}

impl Ext4<'_> {
    /// Formats `image`, an existing file of the disk's size, with the tree under `src`
    /// (`tree`, as `walk` found it). `seed` names the disk; its identifiers derive from it.
    pub fn make(&self, image: &Path, src: &Path, tree: &[Entry], seed: &str) -> Result<(), Error> {
        let cache_err = |e| Error::Cache {
            path: self.work.display().to_string(),
            source: e,
        };
        let conf = self.work.join("mke2fs.conf");
        std::fs::write(&conf, MKE2FS_CONF).map_err(cache_err)?;
        let env: Vec<(&str, OsString)> = vec![
            ("E2FSPROGS_FAKE_TIME", EPOCH.to_string().into()),
            ("SOURCE_DATE_EPOCH", EPOCH.to_string().into()),
            ("MKE2FS_CONFIG", conf.into_os_string()),
            // scandir's alphasort follows the locale: fix the order of directory entries.
            ("LC_ALL", "C".into()),
            ("TZ", "UTC".into()),
        ];
        let uuid = derived_uuid(&format!("vmbench ext4 uuid {seed}"));
        let hash_seed = derived_uuid(&format!("vmbench ext4 hash_seed {seed}"));
        self.mke2fs.run(
            &os_args![
                "-t",
                "ext4",
                "-d",
                src,
                "-F",
                "-q",
                "-U",
                uuid,
                "-E",
                format!("hash_seed={hash_seed}"),
                image
            ],
            &env,
        )?;
        let script = self.work.join("normalize.debugfs");
        std::fs::write(&script, normalize_script(tree)).map_err(cache_err)?;
        let args = os_args!["-w", "-f", script, image];
        let stderr = self.debugfs.run(&args, &env)?;
        // debugfs exits 0 when a command fails and says so on stderr, after its banner.
        let problems: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with("debugfs "))
            .collect();
        if !problems.is_empty() {
            return Err(Error::ToolFailed {
                command: self.debugfs.command_line(&args),
                status: "exit status: 0".into(),
                stderr: problems.join("\n"),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_uuids_are_fixed_and_distinct() {
        let a = derived_uuid("x");
        assert_eq!(a, derived_uuid("x"));
        assert_ne!(a, derived_uuid("y"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }

    #[test]
    fn script_covers_root_and_every_entry() {
        let tree = [
            Entry {
                rel: "a".into(),
                kind: Kind::Dir,
            },
            Entry {
                rel: "a/run.sh".into(),
                kind: Kind::File { executable: true },
            },
        ];
        let s = normalize_script(&tree);
        assert!(s.contains("set_inode_field \"/\" mode 040755\n"));
        assert!(s.contains("set_inode_field \"/a/run.sh\" mode 0100755\n"));
        assert!(s.contains(&format!("set_inode_field \"/a\" ctime @{EPOCH}\n")));
    }
}
