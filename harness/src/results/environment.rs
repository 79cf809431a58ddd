//! What a result was measured on: the host (kernel, CPU, memory, from /proc), its KVM (which
//! flavour, whether guest kernel code runs natively, nested or not, capabilities), the
//! vmbench revision and the probe binary. Parsers are pure; `collect` does the reading.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use kvm_ioctls::Cap;
use serde::{Deserialize, Serialize};
use vmm::process::DieWithParent;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub host: Host,
    pub kvm: KvmInfo,
    pub vmbench: Revision,
    /// Of the probe ELF the guests booted; `None` for runs without the probe.
    pub probe_sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Host {
    pub hostname: String,
    /// `uname -r`.
    pub kernel_release: String,
    /// `uname -v`.
    pub kernel_version: String,
    pub arch: String,
    pub cpu_model: String,
    /// Logical CPUs (the processor entries of /proc/cpuinfo).
    pub cores: usize,
    pub memory_mib: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KvmInfo {
    /// `kvm-intel`, `kvm-amd`, `kvm-pvm` or `unknown`.
    pub flavour: String,
    /// Guest kernel-mode code runs natively; false on KVM-PVM, where it is emulated and
    /// Linux-guest figures mean little.
    pub cpl0_native: bool,
    /// This host is itself a guest.
    pub nested: bool,
    /// This host is the emulated AMD-V host (`--host emulated`: QEMU-TCG `-cpu max` with KVM
    /// in it): everything ran, translated by TCG, so the figures check function and are not
    /// real timings. Added within version 1 (absent: false).
    #[serde(default)]
    pub emulated_host: bool,
    pub api_version: Option<i32>,
    pub max_vcpus: Option<usize>,
    /// Capabilities vmbench uses or that explain its figures, by kvm-ioctls name.
    pub capabilities: BTreeMap<String, bool>,
    /// Why /dev/kvm could not be opened, if it could not.
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revision {
    /// The crate version.
    pub version: String,
    /// `git rev-parse HEAD` of the source tree, or `unknown`.
    pub git_revision: String,
    /// Uncommitted changes to tracked files; `None` when git could not tell.
    pub dirty: Option<bool>,
}

/// Capabilities recorded in every result.
const CAPS: &[Cap] = &[
    Cap::Irqchip,
    Cap::UserMemory,
    Cap::Ioeventfd,
    Cap::Irqfd,
    Cap::ImmediateExit,
    Cap::SignalMsi,
    Cap::SplitIrqchip,
    Cap::CoalescedMmio,
    Cap::CoalescedPio,
    Cap::TscDeadlineTimer,
    Cap::TscControl,
    Cap::GetTscKhz,
    Cap::Xsave,
    Cap::X2ApicApi,
    Cap::ReadonlyMem,
    Cap::Pit2,
];

/// Reads everything; never fails: what cannot be read is recorded as unknown.
pub fn collect(probe_sha256: Option<String>) -> Environment {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let line = |p: &str| {
        let s = read(p).trim().to_string();
        if s.is_empty() {
            "unknown".to_string()
        } else {
            s
        }
    };
    let (cpu_model, cores) = parse_cpuinfo(&read("/proc/cpuinfo"));
    let cores = if cores == 0 {
        std::thread::available_parallelism().map_or(0, |n| n.get())
    } else {
        cores
    };
    // /proc/sys/kernel holds what uname(2) returns, without unsafe FFI in the harness.
    let host = Host {
        hostname: line("/proc/sys/kernel/hostname"),
        kernel_release: line("/proc/sys/kernel/osrelease"),
        kernel_version: line("/proc/sys/kernel/version"),
        arch: std::env::consts::ARCH.to_string(),
        cpu_model,
        cores,
        memory_mib: parse_meminfo_mib(&read("/proc/meminfo")).unwrap_or(0),
    };
    Environment {
        kvm: kvm_info(&host.cpu_model),
        host,
        vmbench: revision(Path::new(env!("CARGO_MANIFEST_DIR"))),
        probe_sha256,
    }
}

fn kvm_info(cpu_model: &str) -> KvmInfo {
    let h = vmm::kvm::host_kvm();
    let mut info = KvmInfo {
        flavour: h.flavour,
        cpl0_native: h.cpl0_native,
        nested: h.nested,
        emulated_host: crate::emulated::inside(cpu_model),
        api_version: None,
        max_vcpus: None,
        capabilities: BTreeMap::new(),
        error: None,
    };
    match vmm::kvm::open() {
        Ok(kvm) => {
            info.api_version = Some(kvm.get_api_version());
            info.max_vcpus = Some(kvm.get_max_vcpus());
            info.capabilities = CAPS
                .iter()
                .map(|&c| (format!("{c:?}"), kvm.check_extension(c)))
                .collect();
        }
        Err(e) => info.error = Some(e.to_string()),
    }
    info
}

/// The git revision of the tree at `dir` and whether tracked files differ from it.
pub fn revision(dir: &Path) -> Revision {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .die_with_parent()
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let rev = git(&["rev-parse", "HEAD"]);
    let dirty = rev
        .as_ref()
        .and_then(|_| git(&["status", "--porcelain", "--untracked-files=no"]))
        .map(|s| !s.is_empty());
    Revision {
        version: env!("CARGO_PKG_VERSION").to_string(),
        git_revision: rev.unwrap_or_else(|| "unknown".to_string()),
        dirty,
    }
}

/// The first `model name` and the number of `processor` entries.
pub(crate) fn parse_cpuinfo(text: &str) -> (String, usize) {
    let mut model = None;
    let mut count = 0;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key.trim() {
            "processor" => count += 1,
            "model name" if model.is_none() => model = Some(value.trim().to_string()),
            _ => {}
        }
    }
    (model.unwrap_or_else(|| "unknown".to_string()), count)
}

/// `MemTotal` in MiB.
pub(crate) fn parse_meminfo_mib(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") | None => Some(n / 1024),
        _ => None,
    }
}
