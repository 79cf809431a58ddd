//! The linux image: a Debian kernel (the generic flavour) and an initramfs holding the kernel
//! modules of vmbench's devices, busybox, iperf3 with its libraries and vmbench's guest agent
//! as `/init`. Built from the Debian packages of the lock (`images/linux.lock`), fetched with
//! the ordinary apt tools; the same lock gives the same bytes (docs/images.md).

pub mod agent;
pub mod apt;
pub mod cpio;
pub mod elf;
pub mod lock;
pub mod modules;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::manifest::{hex, sha256_file, sha256_hex, Artifact, Manifest};
use apt::Apt;
use cpio::{Node, Tree};
pub use lock::{Lock, Package};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Lock(#[from] lock::Error),
    #[error(transparent)]
    Apt(#[from] apt::Error),
    #[error(transparent)]
    Modules(#[from] modules::Error),
    #[error(transparent)]
    Agent(#[from] agent::Error),
    #[error(
        "the Debian mirror no longer has {name} {version} (locked in {lock}); run \
         `vmbench images lock linux` to lock the versions it has now"
    )]
    Gone {
        name: String,
        version: String,
        lock: String,
    },
    #[error("the Debian mirror has no package {name}; its generic kernels are: {offered}")]
    NoKernel { name: String, offered: String },
    #[error("the Debian mirror has no package {name}")]
    NoPackage { name: String },
    #[error(
        "{name} {version}: the downloaded .deb has SHA-256 {got} but the lock {lock} says \
         {want}; the mirror's package changed: check it, then `vmbench images lock linux`"
    )]
    Hash {
        name: String,
        version: String,
        got: String,
        want: String,
        lock: String,
    },
    #[error("cannot extract vmlinux from {package}'s bzImage: {why}")]
    Vmlinux { package: String, why: String },
    #[error("cannot unpack {deb} with dpkg-deb: {stderr}")]
    Unpack { deb: String, stderr: String },
    #[error("{what} is not in the package {package}")]
    NotInPackage { what: String, package: String },
    #[error("{file} needs {lib}, which none of the locked packages provides")]
    Library { file: String, lib: String },
    /// A program the test host takes from this machine, or its libraries, cannot be had.
    #[error("the emulated host needs {what} from this machine: {why}")]
    FromHost { what: String, why: String },
    #[error("{path} is not a usable ELF file")]
    Elf {
        path: String,
        #[source]
        source: elf::Error,
    },
    #[error("cannot write {path}")]
    Cache {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Cache {
        path: path.display().to_string(),
        source: e,
    }
}

/// Where the build reads its lock and writes its cache.
#[derive(Clone, Debug)]
pub struct Options {
    pub lock: PathBuf,
    pub cache: PathBuf,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            lock: lock_path(),
            cache: crate::cache_dir(),
        }
    }
}

/// The checked-in lock, `images/linux.lock`.
pub fn lock_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("linux.lock")
}

/// The workloads the agent runs (`images/agent/src/main.rs`, `WORKLOADS`), for refusing an
/// unknown one when a scenario loads instead of in the guest.
pub const AGENT_WORKLOADS: &[&str] = &[
    "hello",
    "blk-pattern",
    "blk-read",
    "blk-write",
    "net-rr",
    "net-tx",
    "net-rx",
    "ping",
    "tcp-stream",
    "iperf3",
];

/// The packages besides the kernel: busybox, iperf3 and the libraries iperf3 links.
const USERLAND: &[&str] = &[
    "busybox-static",
    "iperf3",
    "libiperf0",
    "libc6",
    "libssl3",
    "libsctp1",
];

/// Bumped when what the builder does changes (part of the cache key).
const BUILDER: &str = "linux-1";
/// Every time in the initramfs: 2000-01-01T00:00:00Z, as the recipes use.
pub(crate) const EPOCH: u32 = 946_684_800;
/// Where shared libraries go; Debian's ld.so searches it.
const LIBDIR: &str = "lib/x86_64-linux-gnu";

fn deb_file(debs: &Path, p: &Package) -> PathBuf {
    debs.join(format!(
        "{}_{}_{}.deb",
        p.name,
        p.version.replace(':', "%3a"),
        p.arch
    ))
}

fn deb_field(deb: &Path, field: &str) -> Result<String, Error> {
    let out = Command::new("dpkg-deb")
        .arg("-f")
        .arg(deb)
        .arg(field)
        .output()
        .map_err(|e| Error::Unpack {
            deb: deb.display().to_string(),
            stderr: e.to_string(),
        })?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The package list of a lock for `kernel`, each at the mirror's candidate version, the .debs
/// left in the cache. `kernel` defaults to the current lock's kernel, else to what Debian's
/// `linux-image-amd64` points at.
pub fn lock(
    opts: &Options,
    kernel: Option<&str>,
    progress: &mut dyn FnMut(&str),
) -> Result<Lock, Error> {
    let mut apt = Apt::new(&opts.cache.join("apt"))?;
    progress("updating the package lists (apt-get update, private state)");
    let kernel = match kernel {
        Some(k) => k.to_string(),
        None => match Lock::load(&opts.lock) {
            Ok(l) => l.kernel,
            Err(_) => apt
                .depends("linux-image-amd64")?
                .into_iter()
                .find(|d| d.starts_with("linux-image-"))
                .ok_or_else(|| Error::NoPackage {
                    name: "linux-image-amd64".into(),
                })?,
        },
    };
    let debs = opts.cache.join("debs");
    std::fs::create_dir_all(&debs).map_err(io_err(&debs))?;
    let mut packages = Vec::new();
    for name in std::iter::once(kernel.as_str()).chain(USERLAND.iter().copied()) {
        let Some(version) = apt.candidate(name)? else {
            if name == kernel {
                return Err(Error::NoKernel {
                    name: name.into(),
                    offered: generic_kernels(&mut apt)?.join(", "),
                });
            }
            return Err(Error::NoPackage { name: name.into() });
        };
        progress(&format!("fetching {name} {version}"));
        let tmp = tempfile::Builder::new()
            .prefix(".download-")
            .tempdir_in(&debs)
            .map_err(io_err(&debs))?;
        let got = apt
            .download(name, &version, tmp.path())?
            .ok_or_else(|| Error::NoPackage { name: name.into() })?;
        let p = Package {
            name: name.into(),
            version,
            arch: deb_field(&got, "Architecture")?,
            sha256: sha256_file(&got).map_err(io_err(&got))?,
        };
        let file = deb_file(&debs, &p);
        std::fs::rename(&got, &file).map_err(io_err(&file))?;
        packages.push(p);
    }
    let l = Lock { kernel, packages };
    l.store(&opts.lock)?;
    Ok(l)
}

/// The mirror's kernels of the generic flavour (`linux-image-<abi>-amd64`).
fn generic_kernels(apt: &mut Apt) -> Result<Vec<String>, Error> {
    Ok(apt
        .names("linux-image-")?
        .into_iter()
        .filter(|n| {
            n.strip_prefix("linux-image-")
                .and_then(|r| r.strip_suffix("-amd64"))
                .is_some_and(|abi| abi.starts_with(|c: char| c.is_ascii_digit()))
                && !n.contains("-cloud-")
                && !n.contains("-rt-")
        })
        .collect())
}

/// The .deb of `p` from the cache, or downloaded (`apt` is set up on first need); its SHA-256
/// must be the lock's.
pub(crate) fn fetch(
    apt: &mut Option<Apt>,
    opts: &Options,
    p: &Package,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, Error> {
    let debs = opts.cache.join("debs");
    let file = deb_file(&debs, p);
    if sha256_file(&file).ok().as_deref() == Some(p.sha256.as_str()) {
        return Ok(file);
    }
    std::fs::create_dir_all(&debs).map_err(io_err(&debs))?;
    let apt = match apt {
        Some(a) => a,
        None => {
            progress("updating the package lists (apt-get update, private state)");
            apt.insert(Apt::new(&opts.cache.join("apt"))?)
        }
    };
    progress(&format!("fetching {} {}", p.name, p.version));
    let tmp = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(&debs)
        .map_err(io_err(&debs))?;
    let got = apt
        .download(&p.name, &p.version, tmp.path())?
        .ok_or_else(|| Error::Gone {
            name: p.name.clone(),
            version: p.version.clone(),
            lock: opts.lock.display().to_string(),
        })?;
    let sha = sha256_file(&got).map_err(io_err(&got))?;
    if sha != p.sha256 {
        return Err(Error::Hash {
            name: p.name.clone(),
            version: p.version.clone(),
            got: sha,
            want: p.sha256.clone(),
            lock: opts.lock.display().to_string(),
        });
    }
    std::fs::rename(&got, &file).map_err(io_err(&file))?;
    Ok(file)
}

pub(crate) fn unpack(deb: &Path, into: &Path) -> Result<(), Error> {
    let out = Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(into)
        .output()
        .map_err(|e| Error::Unpack {
            deb: deb.display().to_string(),
            stderr: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(Error::Unpack {
            deb: deb.display().to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// The cache key: the builder, the lock, the devices' modules, the agent's sources and
/// flags and the Rust toolchain.
struct Key {
    hash: String,
    rustc: String,
    dir: PathBuf,
}

fn key(opts: &Options) -> Result<Key, Error> {
    let lock_bytes = std::fs::read(&opts.lock).map_err(|e| lock::Error::Read {
        path: opts.lock.display().to_string(),
        source: e,
    })?;
    let mut files = Vec::new();
    crate::probe::collect(&agent::source_dir(), "agent", &mut files)
        .and_then(|()| {
            crate::probe::collect(
                &Path::new(env!("CARGO_MANIFEST_DIR")).join("probe-abi"),
                "probe-abi",
                &mut files,
            )
        })
        .map_err(|e| agent::Error::Io {
            path: agent::source_dir().display().to_string(),
            source: e,
        })?;
    // The agent's own lock pins its crates; `collect` skips Cargo.lock files.
    let agent_lock = std::fs::read(agent::source_dir().join("Cargo.lock")).unwrap_or_default();
    let rustc = Command::new("rustc")
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .map_err(|e| agent::Error::Tool {
            tool: "rustc".into(),
            source: e,
        })?;
    let mut h = Sha256::new();
    let mut part = |b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    part(BUILDER.as_bytes());
    part(&lock_bytes);
    part(format!("{:?}", modules::DEVICES).as_bytes());
    for (name, data) in &files {
        part(name.as_bytes());
        part(data);
    }
    part(&agent_lock);
    part(agent::rustflags().join(" ").as_bytes());
    part(rustc.as_bytes());
    let hash = hex(&h.finalize());
    let dir = opts.cache.join(format!("linux-{}", &hash[..16]));
    Ok(Key { hash, rustc, dir })
}

fn reuse(dir: &Path, hash: &str) -> Option<Manifest> {
    Manifest::load(&dir.join("manifest.json")).filter(|m| m.input_hash == hash && m.verify())
}

/// The image's manifest if the cache holds a build of the current lock and agent.
pub fn cached(opts: &Options) -> Result<Option<Manifest>, Error> {
    let k = key(opts)?;
    Ok(reuse(&k.dir, &k.hash))
}

/// Builds the image (or reuses it from the cache): `vmlinuz` and `initramfs.cpio.gz`.
pub fn build(opts: &Options, progress: &mut dyn FnMut(&str)) -> Result<Manifest, Error> {
    let lock = Lock::load(&opts.lock)?;
    let k = key(opts)?;
    if let Some(m) = reuse(&k.dir, &k.hash) {
        return Ok(m);
    }
    let cache = &opts.cache;
    std::fs::create_dir_all(cache).map_err(io_err(cache))?;
    // One build at a time across processes; the others then find it finished.
    let guard = std::fs::File::create(cache.join("linux.build-lock")).map_err(io_err(cache))?;
    guard.lock().map_err(io_err(cache))?;
    if let Some(m) = reuse(&k.dir, &k.hash) {
        return Ok(m);
    }
    let mut apt = None;
    let mut debs = Vec::new();
    for p in &lock.packages {
        debs.push((p, fetch(&mut apt, opts, p, progress)?));
    }
    let work = tempfile::Builder::new()
        .prefix(".linux-work-")
        .tempdir_in(cache)
        .map_err(io_err(cache))?;
    progress("unpacking the packages (dpkg-deb)");
    for (p, deb) in &debs {
        unpack(deb, &work.path().join(&p.name))?;
    }
    let root = |name: &str| work.path().join(name);
    let mut tree = Tree::default();
    let mut inputs: Vec<(String, String)> = lock
        .packages
        .iter()
        .map(|p| {
            (
                "deb".to_string(),
                format!("{} {} {} {}", p.name, p.version, p.arch, p.sha256),
            )
        })
        .collect();

    // The kernel and its modules.
    let kroot = root(&lock.kernel);
    // The devices' modules first: a kernel without them is refused before anything else.
    let index = modules::Index::new(&kroot, &lock.kernel)?;
    let mods = index.closure(&lock.kernel)?;
    let vmlinuz = find_vmlinuz(&kroot, &lock.kernel)?;
    progress("extracting vmlinux (xz) for PVH boot");
    let vmlinux = extract_vmlinux(&vmlinuz, &lock.kernel)?;
    let mut order = String::new();
    for m in &mods {
        tree.insert(
            &format!("lib/modules/vmbench/{}.ko", m.name),
            Node::File {
                data: m.data.clone(),
                executable: false,
            },
        );
        order.push_str(&format!("{}.ko\n", m.name));
        inputs.push((
            "module".into(),
            format!("{} depends={}", m.name, m.depends.join(",")),
        ));
    }
    inputs.push(("kernel".into(), index.release.clone()));
    tree.insert(
        "lib/modules/vmbench/order",
        Node::File {
            data: order.into_bytes(),
            executable: false,
        },
    );

    // busybox, iperf3 and its libraries.
    let busybox = read_in(&root("busybox-static"), "bin/busybox", "busybox-static")?;
    tree.insert(
        "bin/busybox",
        Node::File {
            data: busybox,
            executable: true,
        },
    );
    tree.insert("bin/sh", Node::Symlink("busybox".into()));
    let userland: Vec<PathBuf> = USERLAND.iter().map(|n| root(n)).collect();
    let iperf3 = read_in(&root("iperf3"), "usr/bin/iperf3", "iperf3")?;
    add_with_libraries(&mut tree, "usr/bin/iperf3", iperf3, &userland)?;

    // The agent as /init, and what PID 1 needs before devtmpfs.
    progress("building the guest agent (cargo, release, static)");
    let agent_bin = agent::build(&cache.join("agent-build"))?;
    inputs.push(("agent".into(), sha256_hex(&agent_bin)));
    tree.insert(
        "init",
        Node::File {
            data: agent_bin,
            executable: true,
        },
    );
    for d in ["dev", "proc", "sys", "tmp", "root"] {
        tree.insert(d, Node::Dir);
    }
    tree.insert("dev/console", Node::CharDev { major: 5, minor: 1 });

    progress("writing the initramfs (newc cpio, gzip)");
    let initramfs = cpio::gzip(&tree.to_cpio(EPOCH));
    let staging = tempfile::Builder::new()
        .prefix(&format!(".linux-{}.", &k.hash[..16]))
        .tempdir_in(cache)
        .map_err(io_err(cache))?;
    let mut artifacts = Vec::new();
    for (name, data) in [
        ("vmlinuz", vmlinuz),
        ("vmlinux", vmlinux),
        ("initramfs.cpio.gz", initramfs),
    ] {
        let path = staging.path().join(name);
        std::fs::write(&path, &data).map_err(io_err(&path))?;
        artifacts.push(Artifact {
            name: name.into(),
            path: k.dir.join(name),
            sha256: sha256_hex(&data),
            bytes: data.len() as u64,
        });
    }
    let m = Manifest {
        image: "linux".into(),
        input_hash: k.hash.clone(),
        tools: vec![
            ("rustc".into(), k.rustc),
            ("apt-get".into(), Apt::new(&cache.join("apt"))?.version()),
        ],
        artifacts,
        inputs,
    };
    m.store(&staging.path().join("manifest.json"))
        .map_err(io_err(staging.path()))?;
    let staged = staging.keep();
    if std::fs::rename(&staged, &k.dir).is_err() {
        match std::fs::remove_dir_all(&k.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(&k.dir)(e)),
            _ => {}
        }
        std::fs::rename(&staged, &k.dir).map_err(io_err(&k.dir))?;
    }
    Ok(m)
}

fn find_vmlinuz(kroot: &Path, package: &str) -> Result<Vec<u8>, Error> {
    let boot = kroot.join("boot");
    let file = std::fs::read_dir(&boot)
        .ok()
        .and_then(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
                })
                .min()
        })
        .ok_or_else(|| Error::NotInPackage {
            what: "boot/vmlinuz-*".into(),
            package: package.into(),
        })?;
    std::fs::read(&file).map_err(io_err(&file))
}

/// The uncompressed kernel ELF inside a bzImage (Debian compresses it with xz): booted
/// through its PVH entry it skips the decompressor, which takes ~15 s under TCG. It must
/// carry the PVH entry note (`XEN_ELFNOTE_PHYS32_ENTRY`), which `CONFIG_PVH` adds.
fn extract_vmlinux(bzimage: &[u8], package: &str) -> Result<Vec<u8>, Error> {
    let fail = |why: String| Error::Vmlinux {
        package: package.into(),
        why,
    };
    const XZ_MAGIC: &[u8] = b"\xfd7zXZ\x00";
    let start = bzimage
        .windows(XZ_MAGIC.len())
        .position(|w| w == XZ_MAGIC)
        .ok_or_else(|| fail("no xz stream in it (not an xz-compressed kernel)".into()))?;
    let mut child = Command::new("xz")
        .args(["--single-stream", "-d", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run xz ({e}); install xz-utils")))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| fail("xz has no stdin".into()))?;
    let payload = bzimage[start..].to_vec();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        // xz stops reading after the stream; the rest of the bzImage is not its business.
        let _ = stdin.write_all(&payload);
    });
    let out = child
        .wait_with_output()
        .map_err(|e| fail(format!("xz: {e}")))?;
    let _ = writer.join();
    if !out.status.success() {
        return Err(fail(format!(
            "xz failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let vmlinux = out.stdout;
    let notes = elf::section(&vmlinux, ".notes")
        .map_err(|e| fail(format!("the payload is not an ELF kernel: {e}")))?
        .unwrap_or_default();
    if !elf::has_note(notes, "Xen", 18) {
        return Err(fail(
            "the kernel has no PVH entry note (CONFIG_PVH); vmbench boots the ELF kernel \
             through PVH"
                .into(),
        ));
    }
    Ok(vmlinux)
}

/// `path` inside an unpacked package, following symbolic links inside that tree (an absolute
/// target means the package's root, never the host's).
fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let mut p = root.join(path.trim_start_matches('/'));
    for _ in 0..16 {
        let meta = std::fs::symlink_metadata(&p).ok()?;
        if !meta.file_type().is_symlink() {
            return meta.is_file().then_some(p);
        }
        let target = std::fs::read_link(&p).ok()?;
        p = if target.is_absolute() {
            root.join(target.strip_prefix("/").ok()?)
        } else {
            p.parent()?.join(target)
        };
    }
    None
}

pub(crate) fn read_in(root: &Path, path: &str, package: &str) -> Result<Vec<u8>, Error> {
    let file = resolve(root, path).ok_or_else(|| Error::NotInPackage {
        what: path.into(),
        package: package.into(),
    })?;
    std::fs::read(&file).map_err(io_err(&file))
}

/// Adds a program at `path` and its shared-library closure (`DT_NEEDED`, transitively, and the
/// interpreter), each library found in the unpacked `roots` under the multiarch directories.
fn add_with_libraries(
    tree: &mut Tree,
    path: &str,
    data: Vec<u8>,
    roots: &[PathBuf],
) -> Result<(), Error> {
    let mut todo = vec![(path.to_string(), data)];
    let mut seen = BTreeSet::new();
    let mut first = true;
    while let Some((at, bytes)) = todo.pop() {
        let d = elf::dynamic(&bytes).map_err(|e| Error::Elf {
            path: at.clone(),
            source: e,
        })?;
        let mut wanted: Vec<(String, String)> = d
            .needed
            .iter()
            .map(|lib| (lib.clone(), format!("{LIBDIR}/{lib}")))
            .collect();
        if let Some(interp) = d.interp {
            wanted.push((interp.clone(), interp.trim_start_matches('/').to_string()));
        }
        for (lib, dest) in wanted {
            if !seen.insert(dest.clone()) {
                continue;
            }
            let candidates = [
                lib.clone(),
                format!("{LIBDIR}/{lib}"),
                format!("usr/{LIBDIR}/{lib}"),
            ];
            let found = roots.iter().find_map(|r| {
                candidates
                    .iter()
                    .filter(|c| !c.starts_with('/') || lib.starts_with('/'))
                    .find_map(|c| resolve(r, c))
            });
            let file = found.ok_or_else(|| Error::Library {
                file: at.clone(),
                lib: lib.clone(),
            })?;
            let lib_bytes = std::fs::read(&file).map_err(io_err(&file))?;
            todo.push((dest, lib_bytes));
        }
        tree.insert(
            &at,
            Node::File {
                data: bytes,
                executable: first || at.contains("ld-linux"),
            },
        );
        first = false;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The agent's own list and this copy of it name the same workloads.
    #[test]
    fn agent_workloads_match_the_agents_list() {
        let main = std::fs::read_to_string(agent::source_dir().join("src/main.rs"))
            .expect("the agent's main.rs");
        let start = main
            .find("pub const WORKLOADS: &[&str] = &[")
            .expect("the agent's WORKLOADS");
        let list = &main[start..];
        let list = &list[list.find('[').unwrap_or(0)..list.find("];").unwrap_or(0)];
        let names: Vec<&str> = list.split('"').skip(1).step_by(2).collect();
        assert_eq!(names, AGENT_WORKLOADS);
    }
}
