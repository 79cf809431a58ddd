//! What the end-to-end tests share: the probe image, temporary directories, booting a
//! configured machine to the end of its session, and (on_qemu.rs) booting the probe on QEMU.
#![allow(dead_code)] // each test file uses its own part

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use vmbench::record::Record;
use vmbench::session::{self, Limits, Outcome};
use vmm::{Machine, MachineConfig};

mod on_qemu;
#[allow(unused_imports)] // the QEMU tests use these, the others do not
pub use on_qemu::*;

/// The probe ELF, built (or found in the cache) once per test binary.
pub fn probe() -> PathBuf {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            let m = images::probe::build(&mut |_| {}).expect("the probe builds");
            m.artifacts[0].path.clone()
        })
        .clone()
}

/// The linux image's manifest (kernel, initramfs with the agent), built or found in the
/// cache once per test binary.
pub fn linux_image() -> &'static images::manifest::Manifest {
    static IMAGE: OnceLock<images::manifest::Manifest> = OnceLock::new();
    IMAGE.get_or_init(|| {
        images::linux::build(&images::linux::Options::default(), &mut |p| {
            eprintln!("{p}")
        })
        .unwrap_or_else(|e| panic!("the linux image builds: {e}"))
    })
}

/// The path of the artifact `name` in manifest `m`.
pub fn artifact(m: &images::manifest::Manifest, name: &str) -> PathBuf {
    m.artifacts
        .iter()
        .find(|a| a.name == name)
        .unwrap_or_else(|| panic!("the manifest of {} has {name}", m.image))
        .path
        .clone()
}

/// The guest-visible contents of the qcow2 image `img`, as `qemu-img convert` (not vmbench)
/// reads them, through the raw file `scratch`.
pub fn qcow2_contents(img: &Path, scratch: &Path) -> Vec<u8> {
    qemu_img(&[
        "convert".as_ref(),
        "-f".as_ref(),
        "qcow2".as_ref(),
        "-O".as_ref(),
        "raw".as_ref(),
        img.as_os_str(),
        scratch.as_os_str(),
    ]);
    std::fs::read(scratch).unwrap_or_else(|e| panic!("reading {}: {e}", scratch.display()))
}

/// A directory under the system temp dir, removed on drop when the test passed (kept after
/// a failure, to look at).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("vmbench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("creating the scratch directory");
        TempDir(p)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A sparse file of `bytes` at `path` (a raw disk image).
pub fn sized_file(path: &Path, bytes: u64) {
    std::fs::File::create(path)
        .and_then(|f| f.set_len(bytes))
        .expect("creating the raw image");
}

/// Runs qemu-img and returns its stdout; fails the test if it is missing or fails.
pub fn qemu_img<S: AsRef<OsStr> + std::fmt::Debug>(args: &[S]) -> String {
    let out = std::process::Command::new("qemu-img")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run qemu-img ({e}): install it with `apt-get install qemu-utils`")
        });
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "qemu-img {args:?} {}: {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Builds the machine and runs its session (10 s to ready, 60 s to finish).
pub fn run(cfg: &MachineConfig) -> Outcome {
    let mut m = Machine::new(cfg).unwrap_or_else(|e| panic!("machine {cfg:?}: {e}"));
    let limits = Limits {
        ready: Duration::from_secs(10),
        run: Duration::from_secs(60),
    };
    session::run(&mut m, &limits, |_| {}).expect("the machine runs")
}

/// The workload's `result` record.
pub fn result<'a>(out: &'a Outcome, name: &str) -> &'a Record {
    out.records_of("result")
        .map(|t| &t.record)
        .find(|r| r.get("name") == Some(name))
        .unwrap_or_else(|| panic!("no result {name} in {:?} {:?}", out.records, out.ending))
}

/// A device's (or back-end's) counter at the end of the session.
pub fn counter(out: &Outcome, dev: &str, name: &str) -> u64 {
    out.device_counters[dev][name]
}

/// The network namespaces this test process created and has not removed.
pub fn our_namespaces() -> Vec<String> {
    let me = format!("-{}-", std::process::id());
    vmm::backend::net::netns::list()
        .expect("ip netns list")
        .into_iter()
        .filter(|n| n.starts_with("vmbench") && n.contains(&me))
        .collect()
}

/// How a device's interrupts must reach Linux's driver, checked on the agent's `irq` records
/// (its `/proc/interrupts` lines for the device under test, docs/agent.md).
#[derive(Clone, Copy, Debug)]
pub enum Delivery {
    /// virtio: every line an MSI-X vector (an MSI chip), interrupts taken.
    Msix,
    /// e1000: a wired PCI interrupt (INTx) routed through the IO-APIC, interrupts taken.
    IoApic,
    /// PIIX IDE in legacy mode: ISA IRQ 14 (or 15) on the IO-APIC, interrupts taken.
    Ide,
}

/// Asserts that the `irq` records among `records` show `how`; `context` (the console) goes
/// into the message.
pub fn assert_delivery<'a>(
    records: impl IntoIterator<Item = &'a Record>,
    how: Delivery,
    context: &str,
) {
    let irqs: Vec<&Record> = records.into_iter().filter(|r| r.kind == "irq").collect();
    let shown: Vec<String> = irqs.iter().map(|r| r.to_string()).collect();
    let shown = shown.join("\n");
    assert!(!irqs.is_empty(), "no irq record ({how:?}):\n{context}");
    let chip = |r: &Record| r.get("chip").unwrap_or("").to_string();
    let count = |r: &&Record| r.get_u64("count").unwrap_or(0);
    let lines: Vec<&Record> = match how {
        Delivery::Msix => {
            for r in &irqs {
                assert!(chip(r).contains("MSI"), "{how:?}: {r}\n{shown}");
                assert_eq!(r.get("mode"), Some("msix"), "{how:?}: {r}\n{shown}");
            }
            irqs.clone()
        }
        Delivery::IoApic => {
            for r in &irqs {
                assert_eq!(chip(r), "IO-APIC", "{how:?}: {r}\n{shown}");
                assert_eq!(r.get("mode"), Some("line"), "{how:?}: {r}\n{shown}");
            }
            irqs.clone()
        }
        Delivery::Ide => {
            let legacy: Vec<&Record> = irqs
                .iter()
                .copied()
                .filter(|r| matches!(r.get_u64("irq"), Some(14 | 15)))
                .collect();
            for r in &legacy {
                assert_eq!(chip(r), "IO-APIC", "{how:?}: {r}\n{shown}");
                assert_eq!(r.get("mode"), Some("line"), "{how:?}: {r}\n{shown}");
            }
            legacy
        }
    };
    let total: u64 = lines.iter().map(count).sum();
    assert!(total > 0, "{how:?}: no interrupt taken:\n{shown}");
}

/// Runs `vmbench bench ARGS` from the project root (where scenarios name the images they need
/// relative to); returns its standard output, having checked that it exited 0.
pub fn bench_ok<S: AsRef<OsStr>>(args: &[S]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vmbench"))
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .arg("bench")
        .args(args)
        .output()
        .expect("run vmbench bench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
