//! The KVM side of the VMM: opening /dev/kvm, the VM with its memory slots and in-kernel
//! interrupt controller, and the vCPUs. All `unsafe` of the VMM lives here.

pub mod irq;
pub mod memory;
pub mod stats;
pub mod vcpu;

use std::io;

use kvm_ioctls::{Cap, Kvm, VmFd};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} does not exist: this host has no KVM (load kvm_intel or kvm_amd, or enable nested virtualization for this VM)")]
    NoKvm(String),
    #[error("no permission to open {0}: run as root or add this user to the 'kvm' group")]
    KvmPermission(String),
    #[error("cannot open the KVM device")]
    OpenKvm(#[source] io::Error),
    #[error("KVM API version {0} is not the stable version 12")]
    ApiVersion(i32),
    #[error("KVM lacks a capability vmbench needs: {0:?}")]
    MissingCap(Cap),
    #[error("cannot create the VM")]
    CreateVm(#[source] kvm_ioctls::Error),
    #[error("cannot create the in-kernel interrupt controller")]
    IrqChip(#[source] kvm_ioctls::Error),
    #[error("cannot map {0} MiB of guest memory: {1}")]
    MapMemory(u64, String),
    #[error("cannot register guest memory with KVM")]
    MemorySlot(#[source] kvm_ioctls::Error),
    #[error("cannot read KVM's supported CPUID")]
    Cpuid(#[source] kvm_ioctls::Error),
    #[error("cannot create the in-kernel PIT")]
    Pit(#[source] kvm_ioctls::Error),
    #[error("cannot set the TSS address")]
    TssAddr(#[source] kvm_ioctls::Error),
    #[error("cannot register an ioeventfd")]
    IoEvent(#[source] kvm_ioctls::Error),
}

fn io_err(e: kvm_ioctls::Error) -> io::Error {
    io::Error::from_raw_os_error(e.errno())
}

/// The KVM device: `/dev/kvm`, or `$VMBENCH_KVM_DEVICE` (tests use it to check the errors).
pub fn device_path() -> std::path::PathBuf {
    std::env::var_os("VMBENCH_KVM_DEVICE")
        .map(Into::into)
        .unwrap_or_else(|| "/dev/kvm".into())
}

/// Opens the KVM device and checks what vmbench relies on, with errors that say what to do.
pub fn open() -> Result<Kvm, Error> {
    let path = device_path();
    let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::NoKvm(path.display().to_string()))?;
    let kvm = Kvm::new_with_path(&cpath).map_err(|e| match e.errno() {
        libc::ENOENT | libc::ENXIO | libc::ENODEV => Error::NoKvm(path.display().to_string()),
        libc::EACCES | libc::EPERM => Error::KvmPermission(path.display().to_string()),
        _ => Error::OpenKvm(io_err(e)),
    })?;
    let v = kvm.get_api_version();
    if v != 12 {
        return Err(Error::ApiVersion(v));
    }
    for cap in [
        Cap::UserMemory,
        Cap::Irqchip,
        Cap::Ioeventfd,
        Cap::ImmediateExit,
    ] {
        if !kvm.check_extension(cap) {
            return Err(Error::MissingCap(cap));
        }
    }
    Ok(kvm)
}

/// Creates a VM with an in-kernel LAPIC/IOAPIC/PIC (needed for irqfd and MSI later).
pub fn create_vm(kvm: &Kvm) -> Result<VmFd, Error> {
    let vm = kvm.create_vm().map_err(Error::CreateVm)?;
    vm.create_irq_chip().map_err(Error::IrqChip)?;
    Ok(vm)
}

/// What a Linux guest needs besides the irqchip: the in-kernel PIT (its timer check and
/// calibration use IRQ 0; the speaker port is a dummy) and, for VT-x's real-mode support when
/// the kernel starts its application processors, a TSS area at the top of the 32-bit space.
pub fn prepare_for_linux(vm: &VmFd) -> Result<(), Error> {
    vm.set_tss_address(0xfffb_d000).map_err(Error::TssAddr)?;
    let pit = kvm_bindings::kvm_pit_config {
        flags: kvm_bindings::KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit).map_err(Error::Pit)
}

/// What this host's KVM is, for results and for choosing how to run guests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostKvm {
    /// "kvm-intel", "kvm-amd", "kvm-pvm", or "unknown".
    pub flavour: String,
    /// Guest kernel-mode (CPL0) code runs natively (false on KVM-PVM, where it is emulated).
    pub cpl0_native: bool,
    /// This host is itself a guest (the hypervisor CPUID bit is set).
    pub nested: bool,
}

/// Looks at the loaded KVM modules and CPUID to tell which KVM this is.
pub fn host_kvm() -> HostKvm {
    let modules = std::fs::read_to_string("/proc/modules").unwrap_or_default();
    let has = |m: &str| modules.lines().any(|l| l.split(' ').next() == Some(m));
    let sys = |m: &str| std::path::Path::new("/sys/module").join(m).exists();
    let flavour = if has("kvm_pvm") || sys("kvm_pvm") {
        "kvm-pvm"
    } else if has("kvm_intel") || sys("kvm_intel") {
        "kvm-intel"
    } else if has("kvm_amd") || sys("kvm_amd") {
        "kvm-amd"
    } else {
        "unknown"
    };
    // CPUID.1:ECX bit 31 is set by hypervisors for their guests.
    let nested = std::arch::x86_64::__cpuid(1).ecx & (1 << 31) != 0;
    HostKvm {
        flavour: flavour.to_string(),
        cpl0_native: flavour != "kvm-pvm",
        nested,
    }
}
