//! The kernel modules the image's devices need, and everything they depend on, resolved from
//! each module's own `.modinfo` (`depends=`, and `softdep=pre:` where present): Debian's
//! kernel package ships no modules.dep.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::elf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{package} has no lib/modules/<version>/ directory: is it a kernel image package?")]
    NoModules { package: String },
    #[error(
        "module {module} (for the {device}) is not in {package}: use Debian's generic kernel \
         flavour (linux-image-<abi>-amd64; the cloud flavour lacks e1000 and ata_piix), \
         `vmbench images lock linux --kernel linux-image-<abi>-amd64`"
    )]
    Missing {
        module: String,
        device: String,
        package: String,
    },
    #[error("cannot read the module {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the module {path} is not a kernel module")]
    Elf {
        path: String,
        #[source]
        source: elf::Error,
    },
    #[error("cannot decompress {path} with {tool} (install xz-utils / zstd)")]
    Decompress { path: String, tool: String },
}

/// The image's devices and the modules each needs (Linux's own drivers).
pub const DEVICES: &[(&str, &[&str])] = &[
    ("e1000 NIC", &["e1000"]),
    ("virtio-net NIC", &["virtio_pci", "virtio_net"]),
    ("PIIX IDE disk", &["ata_piix", "sd_mod"]),
    ("virtio-blk disk", &["virtio_pci", "virtio_blk"]),
];

/// A module to put in the image, uncompressed.
pub struct Module {
    pub name: String,
    pub data: Vec<u8>,
    pub depends: Vec<String>,
}

/// The modules of an unpacked kernel package, by name (`-` spelled `_`, as the kernel does).
pub struct Index {
    pub release: String,
    files: BTreeMap<String, PathBuf>,
    builtin: BTreeSet<String>,
}

fn norm(name: &str) -> String {
    name.replace('-', "_")
}

fn walk(dir: &Path, out: &mut BTreeMap<String, PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        if e.file_type()?.is_dir() {
            walk(&p, out)?;
        } else {
            let n = e.file_name().to_string_lossy().into_owned();
            for ext in [".ko", ".ko.xz", ".ko.zst"] {
                if let Some(stem) = n.strip_suffix(ext) {
                    out.insert(norm(stem), p.clone());
                }
            }
        }
    }
    Ok(())
}

impl Index {
    /// Indexes `root/lib/modules/<release>/` of the unpacked `package`.
    pub fn new(root: &Path, package: &str) -> Result<Index, Error> {
        let base = root.join("lib/modules");
        let release = std::fs::read_dir(&base)
            .ok()
            .and_then(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .min()
            })
            .ok_or_else(|| Error::NoModules {
                package: package.into(),
            })?;
        let dir = base.join(&release);
        let mut files = BTreeMap::new();
        walk(&dir, &mut files).map_err(|e| Error::Read {
            path: dir.display().to_string(),
            source: e,
        })?;
        let builtin = std::fs::read_to_string(dir.join("modules.builtin"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.rsplit('/').next())
            .map(|f| norm(f.trim_end_matches(".ko")))
            .collect();
        Ok(Index {
            release,
            files,
            builtin,
        })
    }

    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        let Some(path) = self.files.get(name) else {
            return Ok(None);
        };
        let shown = path.display().to_string();
        let tool = match path.extension().and_then(|e| e.to_str()) {
            Some("xz") => "xz",
            Some("zst") => "zstd",
            _ => {
                return std::fs::read(path).map(Some).map_err(|e| Error::Read {
                    path: shown,
                    source: e,
                })
            }
        };
        let out = Command::new(tool)
            .args(["-d", "-c"])
            .arg(path)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .ok_or_else(|| Error::Decompress {
                path: shown,
                tool: tool.into(),
            })?;
        Ok(Some(out.stdout))
    }

    /// The modules every device of [`DEVICES`] needs with their dependencies, dependencies
    /// first; a module that is neither a file nor built in is an error naming the device.
    pub fn closure(&self, package: &str) -> Result<Vec<Module>, Error> {
        self.closure_of(DEVICES, package)
    }

    /// The modules each of `wants` (a purpose and its modules) needs, dependencies first.
    pub fn closure_of(
        &self,
        wants: &[(&str, &[&str])],
        package: &str,
    ) -> Result<Vec<Module>, Error> {
        let mut done = BTreeSet::new();
        let mut out = Vec::new();
        for (device, wanted) in wants {
            for m in *wanted {
                self.visit(m, device, package, &mut done, &mut out)?;
            }
        }
        Ok(out)
    }

    fn visit(
        &self,
        name: &str,
        device: &str,
        package: &str,
        done: &mut BTreeSet<String>,
        out: &mut Vec<Module>,
    ) -> Result<(), Error> {
        let name = norm(name);
        if !done.insert(name.clone()) || self.builtin.contains(&name) {
            return Ok(());
        }
        let Some(data) = self.read(&name)? else {
            return Err(Error::Missing {
                module: name,
                device: device.into(),
                package: package.into(),
            });
        };
        let elf_err = |e| Error::Elf {
            path: self.files[&name].display().to_string(),
            source: e,
        };
        let mut depends: Vec<String> = elf::modinfo(&data, "depends")
            .map_err(elf_err)?
            .iter()
            .flat_map(|d| d.split(','))
            .filter(|d| !d.is_empty())
            .map(norm)
            .collect();
        // `softdep=pre: a b post: c`: the `pre` modules must be there first (a crypto
        // implementation, say); those the package lacks are optional by definition.
        for s in elf::modinfo(&data, "softdep").map_err(elf_err)? {
            let mut pre = false;
            for w in s.split_ascii_whitespace() {
                match w {
                    "pre:" => pre = true,
                    "post:" => pre = false,
                    m if pre && self.files.contains_key(&norm(m)) => depends.push(norm(m)),
                    _ => {}
                }
            }
        }
        for d in &depends {
            self.visit(d, device, package, done, out)?;
        }
        out.push(Module {
            name,
            data,
            depends,
        });
        Ok(())
    }
}
