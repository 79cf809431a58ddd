//! The test-host image: an initramfs that turns QEMU-TCG (`-cpu max`, which emulates AMD-V
//! with nested paging) into a KVM host for vmbench, where this machine's own KVM cannot run
//! guest kernel code. It holds busybox, the Debian kernel's KVM modules (`irqbypass`, `kvm`,
//! `ccp`, `kvm-amd`) and its 9p modules, vmbench's own binary with its shared-library closure
//! (found with `ldd`), `ip` and `iperf3` for the TAP back-end the same way, and an `/init`
//! that loads them, mounts the host's work directory (9p,
//! tag `work`), runs vmbench once per command in `/work/args` (one argument a line, commands
//! separated by an empty line) and prints each one's exit status. The kernel is the linux image's; guest images reach it through the share.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::linux::cpio::{Node, Tree};
use crate::linux::{self, io_err, modules, Error, Lock};
use crate::manifest::{hex, sha256_file, sha256_hex, Artifact, Manifest};

/// What the outer kernel loads, in order of purpose (the closure puts dependencies first).
pub const HOST_MODULES: &[(&str, &[&str])] = &[
    ("KVM on AMD-V", &["irqbypass", "kvm", "ccp", "kvm_amd"]),
    (
        "the 9p share with the host",
        &["virtio_pci", "9pnet_virtio", "9p"],
    ),
    ("the TAP back-end", &["tun"]),
];

/// Programs vmbench runs on the host side of a TAP back-end (`ip` for the network namespace,
/// the TAP and its addresses; `iperf3` for the iperf3 workload's server), taken from this
/// machine's PATH with their shared libraries, as vmbench itself is.
/// Each with the Debian package that has it.
pub const HOST_PROGRAMS: &[(&str, &str)] = &[("ip", "iproute2"), ("iperf3", "iperf3")];

/// QEMU, for scenarios that run guests on `engine = "qemu"` in the emulated host (QEMU-KVM on
/// the emulated host's kvm-amd), with the firmware it loads for x86 guests from its data
/// directory: qboot (vmbench's QEMU engine boots with it), the option ROMs of direct Linux,
/// PVH and multiboot boot, the TPR-patching ROM, and SeaBIOS for QEMU without qboot.
pub const QEMU_PROGRAM: (&str, &str) = ("qemu-system-x86_64", "qemu-system-x86");
pub const QEMU_FIRMWARE: &[&str] = &[
    "qboot.rom",
    "bios-256k.bin",
    "linuxboot.bin",
    "linuxboot_dma.bin",
    "pvh.bin",
    "multiboot.bin",
    "multiboot_dma.bin",
    "kvmvapic.bin",
];
/// Where the firmware goes: QEMU's built-in data directory on Debian.
const QEMU_DATA: &str = "usr/share/qemu";

/// Bumped when what the builder does changes (part of the cache key).
const BUILDER: &str = "test-host-3";

/// The line `/init` prints before each vmbench command (`... running N vmbench ARGS`), and the
/// one with its exit status (`... exit N STATUS`).
pub const MARK_RUN: &str = "vmbench-host: running";
pub const MARK_EXIT: &str = "vmbench-host: exit";

const INIT: &str = r#"#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs run /run
# Loopback: QEMU's NIC reaches vmbench's in-process peer over a UDP link on it.
ip link set lo up
echo "vmbench-host: loading modules"
while read -r m; do
    insmod "/lib/modules/host/$m" || echo "vmbench-host: insmod $m failed"
done < /lib/modules/host/order
[ -e /dev/kvm ] || echo "vmbench-host: no /dev/kvm after loading kvm_amd"
mkdir -p /work
if ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 work /work; then
    echo "vmbench-host: cannot mount the work share"
    poweroff -f
fi
cd /work
n=0
run() {
    n=$((n + 1))
    echo "vmbench-host: running $n vmbench $*"
    /bin/vmbench "$@"
    rc=$?
    sync
    echo "vmbench-host: exit $n $rc"
}
set --
while IFS= read -r a; do
    if [ -z "$a" ]; then
        [ $# -gt 0 ] && run "$@"
        set --
    else
        set -- "$@" "$a"
    fi
done < /work/args
[ $# -gt 0 ] && run "$@"
poweroff -f
"#;

/// Where the build reads its inputs.
#[derive(Clone, Debug)]
pub struct Options {
    pub linux: linux::Options,
    /// The vmbench binary to put in (normally the running one).
    pub vmbench: PathBuf,
    /// Also QEMU ([`QEMU_PROGRAM`], its libraries and [`QEMU_FIRMWARE`]): ~60 MB more, so
    /// only when a command will run a guest on QEMU.
    pub qemu: bool,
}

/// The test host's boot files.
pub struct TestHost {
    pub manifest: Manifest,
    /// The kernel (the linux image's vmlinux, entered through PVH).
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
}

/// The shared libraries `ldd` says `bin` needs, with their paths on this machine.
fn libraries(bin: &Path) -> Result<Vec<PathBuf>, Error> {
    let fail = |why: String| Error::FromHost {
        what: format!("the shared libraries of {}", bin.display()),
        why,
    };
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .map_err(|e| fail(format!("ldd: {e}")))?;
    if !out.status.success() {
        return Err(fail(format!(
            "ldd failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let mut libs = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // `libm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x...)` or `/lib64/ld-linux... (0x...)`
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|w| w.starts_with('/')),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

/// Where the program `name` (from Debian's `package`) is on this machine.
fn find_program(name: &str, package: &str) -> Result<PathBuf, Error> {
    crate::find_program(name).ok_or_else(|| Error::FromHost {
        what: format!("`{name}`"),
        why: format!("it is not installed (Debian: apt-get install {package})"),
    })
}

/// Puts this machine's file `from` into `tree` at `to`, and records it among the inputs as
/// `kind`: `label` (if any), where it came from, its SHA-256.
fn add_host_file(
    tree: &mut Tree,
    inputs: &mut Vec<(String, String)>,
    (kind, label): (&str, &str),
    from: &Path,
    sha: &str,
    to: &str,
    executable: bool,
) -> Result<(), Error> {
    let data = std::fs::read(from).map_err(io_err(from))?;
    let source = format!("{} {sha}", from.display());
    inputs.push((
        kind.into(),
        match label {
            "" => source,
            l => format!("{l} {source}"),
        },
    ));
    tree.insert(to, Node::File { data, executable });
    Ok(())
}

/// The [`QEMU_FIRMWARE`] files this machine's QEMU has, from its data directory (beside its
/// binary, `../share/qemu`, else Debian's `/usr/share/qemu`; links followed): name, path,
/// SHA-256. qboot is required (vmbench's QEMU engine boots with it); the rest are taken where
/// present.
fn qemu_firmware(qemu: &Path) -> Result<Vec<(&'static str, PathBuf, String)>, Error> {
    let dirs: Vec<PathBuf> = qemu
        .parent()
        .and_then(Path::parent)
        .map(|prefix| prefix.join("share/qemu"))
        .into_iter()
        .chain([PathBuf::from("/usr/share/qemu")])
        .collect();
    let mut found = Vec::new();
    for name in QEMU_FIRMWARE {
        let Some(at) = dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()) else {
            if *name == "qboot.rom" {
                return Err(Error::FromHost {
                    what: "QEMU's qboot.rom".into(),
                    why: format!(
                        "it is in none of {dirs:?} (Debian: apt-get install qemu-system-x86)"
                    ),
                });
            }
            continue;
        };
        let sha = sha256_file(&at).map_err(io_err(&at))?;
        found.push((*name, at, sha));
    }
    Ok(found)
}

/// Builds the test host (or reuses it from the cache).
pub fn build(opts: &Options, progress: &mut dyn FnMut(&str)) -> Result<TestHost, Error> {
    let image = linux::build(&opts.linux, progress)?;
    let kernel = image
        .artifacts
        .iter()
        .find(|a| a.name == "vmlinux")
        .map(|a| a.path.clone())
        .ok_or_else(|| Error::NotInPackage {
            what: "vmlinux".into(),
            package: "the linux image".into(),
        })?;
    let lock = Lock::load(&opts.linux.lock)?;
    let vmbench_sha = sha256_file(&opts.vmbench).map_err(io_err(&opts.vmbench))?;
    let mut programs = Vec::new();
    let qemu: &[(&str, &str)] = if opts.qemu { &[QEMU_PROGRAM] } else { &[] };
    for (name, package) in HOST_PROGRAMS.iter().chain(qemu) {
        let at = find_program(name, package)?;
        let sha = sha256_file(&at).map_err(io_err(&at))?;
        programs.push((*name, at, sha));
    }
    let mut libs = libraries(&opts.vmbench)?;
    for (_, at, _) in &programs {
        libs.extend(libraries(at)?);
    }
    libs.sort();
    libs.dedup();
    let mut lib_shas = Vec::new();
    for l in &libs {
        lib_shas.push(sha256_file(l).map_err(io_err(l))?);
    }
    let firmware = match programs.iter().find(|(n, ..)| *n == QEMU_PROGRAM.0) {
        Some((_, at, _)) => qemu_firmware(at)?,
        None => Vec::new(),
    };
    let mut h = Sha256::new();
    let mut part = |b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    part(BUILDER.as_bytes());
    part(image.input_hash.as_bytes());
    part(format!("{HOST_MODULES:?}").as_bytes());
    part(INIT.as_bytes());
    part(vmbench_sha.as_bytes());
    for (name, at, sha) in &programs {
        part(format!("{name} {} {sha}", at.display()).as_bytes());
    }
    for (l, s) in libs.iter().zip(&lib_shas) {
        part(l.display().to_string().as_bytes());
        part(s.as_bytes());
    }
    for (name, _, sha) in &firmware {
        part(format!("{name} {sha}").as_bytes());
    }
    let hash = hex(&h.finalize());
    let cache = &opts.linux.cache;
    let dir = cache.join(format!("test-host-{}", &hash[..16]));
    let done = |m: Manifest| TestHost {
        initramfs: m.artifacts[0].path.clone(),
        manifest: m,
        kernel: kernel.clone(),
    };
    if let Some(m) =
        Manifest::load(&dir.join("manifest.json")).filter(|m| m.input_hash == hash && m.verify())
    {
        return Ok(done(m));
    }

    let mut apt = None;
    let work = tempfile::Builder::new()
        .prefix(".test-host-work-")
        .tempdir_in(cache)
        .map_err(io_err(cache))?;
    let mut tree = Tree::default();
    let mut inputs = vec![
        ("linux-image".to_string(), image.input_hash.clone()),
        ("vmbench".to_string(), vmbench_sha),
    ];
    for name in [lock.kernel.as_str(), "busybox-static"] {
        let p = lock
            .packages
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| Error::NoPackage { name: name.into() })?;
        let deb = linux::fetch(&mut apt, &opts.linux, p, progress)?;
        linux::unpack(&deb, &work.path().join(name))?;
        inputs.push((
            "deb".into(),
            format!("{} {} {} {}", p.name, p.version, p.arch, p.sha256),
        ));
    }
    let kroot = work.path().join(&lock.kernel);
    let index = modules::Index::new(&kroot, &lock.kernel)?;
    let mut order = String::new();
    for m in index.closure_of(HOST_MODULES, &lock.kernel)? {
        order.push_str(&format!("{}.ko\n", m.name));
        inputs.push(("module".into(), m.name.clone()));
        tree.insert(
            &format!("lib/modules/host/{}.ko", m.name),
            Node::File {
                data: m.data,
                executable: false,
            },
        );
    }
    tree.insert(
        "lib/modules/host/order",
        Node::File {
            data: order.into_bytes(),
            executable: false,
        },
    );
    let busybox = linux::read_in(
        &work.path().join("busybox-static"),
        "bin/busybox",
        "busybox-static",
    )?;
    tree.insert(
        "bin/busybox",
        Node::File {
            data: busybox,
            executable: true,
        },
    );
    for applet in ["sh", "mount", "insmod", "mkdir", "cat", "sync", "poweroff"] {
        tree.insert(&format!("bin/{applet}"), Node::Symlink("busybox".into()));
    }
    progress(if opts.qemu {
        "adding vmbench, ip, iperf3, QEMU and their shared libraries"
    } else {
        "adding vmbench, ip, iperf3 and their shared libraries"
    });
    let vmbench = std::fs::read(&opts.vmbench).map_err(io_err(&opts.vmbench))?;
    tree.insert(
        "bin/vmbench",
        Node::File {
            data: vmbench,
            executable: true,
        },
    );
    for (name, at, sha) in &programs {
        let to = format!("bin/{name}");
        add_host_file(
            &mut tree,
            &mut inputs,
            ("program", name),
            at,
            sha,
            &to,
            true,
        )?;
    }
    for (name, at, sha) in &firmware {
        let to = format!("{QEMU_DATA}/{name}");
        add_host_file(
            &mut tree,
            &mut inputs,
            ("firmware", name),
            at,
            sha,
            &to,
            false,
        )?;
    }
    for (l, sha) in libs.iter().zip(lib_shas) {
        let to = l.display().to_string();
        let to = to.trim_start_matches('/');
        add_host_file(&mut tree, &mut inputs, ("library", ""), l, &sha, to, true)?;
    }
    tree.insert(
        "init",
        Node::File {
            data: INIT.as_bytes().to_vec(),
            executable: true,
        },
    );
    for d in ["dev", "proc", "sys", "tmp", "work", "run"] {
        tree.insert(d, Node::Dir);
    }
    tree.insert("dev/console", Node::CharDev { major: 5, minor: 1 });

    progress("writing the test host's initramfs (newc cpio, gzip)");
    let initramfs = linux::cpio::gzip(&tree.to_cpio(linux::EPOCH));
    let staging = tempfile::Builder::new()
        .prefix(&format!(".test-host-{}.", &hash[..16]))
        .tempdir_in(cache)
        .map_err(io_err(cache))?;
    let path = staging.path().join("initramfs.cpio.gz");
    std::fs::write(&path, &initramfs).map_err(io_err(&path))?;
    let m = Manifest {
        image: "test-host".into(),
        input_hash: hash.clone(),
        tools: Vec::new(),
        artifacts: vec![Artifact {
            name: "initramfs.cpio.gz".into(),
            path: dir.join("initramfs.cpio.gz"),
            sha256: sha256_hex(&initramfs),
            bytes: initramfs.len() as u64,
        }],
        inputs,
    };
    m.store(&staging.path().join("manifest.json"))
        .map_err(io_err(staging.path()))?;
    let staged = staging.keep();
    if std::fs::rename(&staged, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&staged, &dir).map_err(io_err(&dir))?;
    }
    Ok(done(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_finds_the_c_library_of_a_dynamic_program() {
        let libs = libraries(Path::new("/bin/sh")).unwrap();

        assert!(
            libs.iter().any(|l| l.to_string_lossy().contains("libc.so")),
            "{libs:?}"
        );
        assert!(libs.iter().all(|l| l.is_absolute()));
    }

    #[test]
    fn host_programs_are_found_or_named_with_the_package_to_install() {
        assert!(find_program("sh", "dash").unwrap().is_absolute());
        let e = find_program("vmbench-no-such-program", "vmbench-pkg")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`vmbench-no-such-program`") && e.contains("apt-get install vmbench-pkg"),
            "{e}"
        );
    }
}
