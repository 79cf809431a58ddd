//! vCPU threads: set-up in 64-bit mode at CPL3 (the probe) and the run loop, which dispatches
//! port-I/O and MMIO exits to the buses synchronously on this thread, counts every exit, and
//! turns a guest crash into a report instead of a hang.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Once};
use std::time::Instant;

use kvm_bindings::{
    kvm_fpu, kvm_mp_state, CpuId, KVM_MAX_CPUID_ENTRIES, KVM_MP_STATE_HALTED,
    KVM_MP_STATE_INIT_RECEIVED, KVM_MP_STATE_RUNNABLE, KVM_MP_STATE_UNINITIALIZED,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

use crate::boot::{gdt, Start};
use crate::bus::Bus;
use crate::event::Event;
use crate::exits::{ExitStats, Reason};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create vCPU {0}")]
    Create(u64, #[source] kvm_ioctls::Error),
    #[error("cannot set up vCPU {0}: {1}")]
    Setup(u64, &'static str, #[source] kvm_ioctls::Error),
    #[error("cannot install the vCPU kick signal handler")]
    Signal(#[source] vmm_sys_util::errno::Error),
}

const CR0_PE: u64 = 1;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// RFLAGS.IF: maskable interrupts enabled.
const RFLAGS_IF: u64 = 1 << 9;
/// The probe's RFLAGS: reserved bit 1, IOPL 3 (port I/O at CPL3 on VT-x/AMD-V; KVM-PVM checks
/// the TSS bitmap instead) and IF: the probe cannot execute STI itself (a #GP at CPL3 under
/// KVM-PVM), so interrupts are on from the start and nothing arrives until the probe enables
/// its local APIC (docs/probe.md).
const RFLAGS_IOPL3_IF: u64 = 0x2 | (3 << 12) | RFLAGS_IF;

/// CPUID.1:ECX bit 31: the CPU is a hypervisor's guest.
const CPUID_1_ECX_HYPERVISOR: u32 = 1 << 31;

/// The CPUID KVM supports, as the guest will see it on vCPU `id`.
pub fn cpuid(kvm: &Kvm, id: u64) -> Result<CpuId, super::Error> {
    let mut c = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(super::Error::Cpuid)?;
    for e in c.as_mut_slice() {
        match e.function {
            // Initial APIC ID.
            1 => e.ebx = (e.ebx & 0x00ff_ffff) | ((id as u32) << 24),
            // x2APIC ID in the extended topology leaves.
            0xb | 0x1f => e.edx = id as u32,
            _ => {}
        }
    }
    Ok(c)
}

/// Creates vCPU `id` and puts it in 64-bit mode at CPL3 with IOPL=3 at `start`.
pub fn create(vm: &VmFd, kvm: &Kvm, id: u64, start: &Start) -> Result<VcpuFd, Error> {
    let vcpu = vm.create_vcpu(id).map_err(|e| Error::Create(id, e))?;
    let cpuid = cpuid(kvm, id).map_err(|e| match e {
        super::Error::Cpuid(e) => Error::Setup(id, "cpuid", e),
        _ => Error::Setup(id, "cpuid", kvm_ioctls::Error::new(libc::EINVAL)),
    })?;
    vcpu.set_cpuid2(&cpuid)
        .map_err(|e| Error::Setup(id, "cpuid", e))?;

    let mut sregs = vcpu
        .get_sregs()
        .map_err(|e| Error::Setup(id, "get sregs", e))?;
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    sregs.cr3 = start.cr3;
    sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
    sregs.efer = EFER_LME | EFER_LMA;
    sregs.cs = gdt::USER_CODE.kvm();
    let data = gdt::USER_DATA.kvm();
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = gdt::tss(start.tss).kvm();
    sregs.gdt.base = start.gdt;
    sregs.gdt.limit = (gdt::table(start.tss).len() * 8 - 1) as u16;
    // The IDT boot::setup left with every gate absent: an exception is still a triple fault,
    // which the run loop reports as a crash; the probe fills in the gates it uses.
    sregs.idt.base = probe_abi::layout::IDT;
    sregs.idt.limit = (probe_abi::layout::IDT_SIZE - 1) as u16;
    vcpu.set_sregs(&sregs)
        .map_err(|e| Error::Setup(id, "set sregs", e))?;

    set_initial_fpu(&vcpu, id)?;
    mask_lint(&vcpu, id)?;

    let mut regs = vcpu
        .get_regs()
        .map_err(|e| Error::Setup(id, "get regs", e))?;
    regs.rip = start.rip;
    regs.rsp = start.rsp;
    regs.rbp = 0;
    regs.rdi = start.arg0;
    regs.rsi = start.arg1;
    regs.rflags = RFLAGS_IOPL3_IF;
    vcpu.set_regs(&regs)
        .map_err(|e| Error::Setup(id, "set regs", e))?;
    // With the in-kernel LAPIC, application processors wait for INIT/SIPI; the probe has no
    // BIOS to send them, so every vCPU starts runnable at its entry state.
    vcpu.set_mp_state(kvm_mp_state {
        mp_state: KVM_MP_STATE_RUNNABLE,
    })
    .map_err(|e| Error::Setup(id, "set mp state", e))?;
    Ok(vcpu)
}

/// Local APIC register offsets and the LVT mask bit (SDM vol. 3A, 11.5.1).
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_LVT_MASKED: u32 = 1 << 16;

/// Masks the local APIC's LINT0 and LINT1. KVM resets the boot vCPU's LINT0 to ExtINT,
/// unmasked, which takes the in-kernel PIC's interrupts even while the APIC is software
/// disabled; with IF set from the start (see [`RFLAGS_IOPL3_IF`]) a PIC interrupt would reach
/// an absent gate and end the probe. Its interrupts are the MSIs and IPIs it asks for.
fn mask_lint(vcpu: &VcpuFd, id: u64) -> Result<(), Error> {
    let mut lapic = vcpu
        .get_lapic()
        .map_err(|e| Error::Setup(id, "get lapic", e))?;
    for reg in [APIC_LVT0, APIC_LVT1] {
        let bytes = &mut lapic.regs[reg..reg + 4];
        let v = u32::from_le_bytes([
            bytes[0] as u8,
            bytes[1] as u8,
            bytes[2] as u8,
            bytes[3] as u8,
        ]) | APIC_LVT_MASKED;
        for (b, x) in bytes.iter_mut().zip(v.to_le_bytes()) {
            *b = x as _;
        }
    }
    vcpu.set_lapic(&lapic)
        .map_err(|e| Error::Setup(id, "set lapic", e))
}

/// Creates vCPU `id` of a Linux guest. The boot vCPU (`entry` given) starts at CPL0 in long
/// mode as the 64-bit boot protocol wants: flat `__BOOT_CS`/`__BOOT_DS`, paging on with the
/// identity tables at `cr3`, interrupts off, RSI at the zero page. The others keep KVM's
/// reset state and wait for the kernel's INIT/SIPI.
pub fn create_linux(
    vm: &VmFd,
    kvm: &Kvm,
    id: u64,
    entry: Option<&crate::boot::linux::LinuxEntry>,
) -> Result<VcpuFd, Error> {
    let vcpu = vm.create_vcpu(id).map_err(|e| Error::Create(id, e))?;
    // KVM's supported set, plus CPUID.1:ECX.hypervisor, which KVM leaves to the VMM: with it
    // Linux reads KVM's paravirtual leaves (0x40000000...) and clocks itself with kvm-clock;
    // without it, where the TSC does not calibrate (the emulated host), it falls back to
    // jiffies and every time a workload measures is a multiple of 4 ms.
    let mut cpuid = cpuid(kvm, id).map_err(|e| match e {
        super::Error::Cpuid(e) => Error::Setup(id, "cpuid", e),
        _ => Error::Setup(id, "cpuid", kvm_ioctls::Error::new(libc::EINVAL)),
    })?;
    for e in cpuid.as_mut_slice() {
        if e.function == 1 {
            e.ecx |= CPUID_1_ECX_HYPERVISOR;
        }
    }
    vcpu.set_cpuid2(&cpuid)
        .map_err(|e| Error::Setup(id, "cpuid", e))?;
    let Some(entry) = entry else {
        return Ok(vcpu);
    };
    let mut sregs = vcpu
        .get_sregs()
        .map_err(|e| Error::Setup(id, "get sregs", e))?;
    sregs.cr0 = CR0_PE | CR0_ET | CR0_NE | CR0_PG;
    sregs.cr3 = entry.cr3;
    sregs.cr4 = CR4_PAE;
    sregs.efer = EFER_LME | EFER_LMA;
    sregs.cs = gdt::LINUX_BOOT_CODE.kvm();
    let data = gdt::LINUX_BOOT_DATA.kvm();
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    // A busy 64-bit TSS at 0 (VT-x checks TR on entry); Linux loads its own.
    sregs.tr = gdt::tss(0).kvm();
    sregs.gdt.base = entry.gdt;
    sregs.gdt.limit = (gdt::linux_table().len() * 8 - 1) as u16;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    vcpu.set_sregs(&sregs)
        .map_err(|e| Error::Setup(id, "set sregs", e))?;
    set_initial_fpu(&vcpu, id)?;
    let mut regs = vcpu
        .get_regs()
        .map_err(|e| Error::Setup(id, "get regs", e))?;
    regs.rip = entry.rip;
    regs.rsp = entry.rsp;
    regs.rbp = entry.rsp;
    regs.rsi = entry.zero_page;
    regs.rflags = 0x2;
    vcpu.set_regs(&regs)
        .map_err(|e| Error::Setup(id, "set regs", e))?;
    Ok(vcpu)
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// The signal that interrupts KVM_RUN so a vCPU thread notices it must stop.
pub fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

/// Installs the (empty) kick handler once per process; without SA_RESTART, KVM_RUN then
/// returns EINTR when the signal arrives.
pub fn install_kick_handler() -> Result<(), Error> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = register_signal_handler(kick_signal(), kick_handler).map_err(Error::Signal);
    });
    result
}

/// What a vCPU thread needs while it runs.
pub struct Context {
    pub id: usize,
    pub pio: Arc<Bus>,
    pub mmio: Arc<Bus>,
    pub exits: Arc<ExitStats>,
    pub stop: Arc<AtomicBool>,
    pub events: Sender<Event>,
    pub liveness: Arc<Liveness>,
}

/// Whether a vCPU can still run, asked by the machine's halt watch
/// ([`crate::machine::halt`]) and answered by the vCPU's own thread: only that thread may read
/// the vCPU's state, and only once a kick has brought it out of KVM_RUN.
#[derive(Debug, Default)]
pub struct Liveness {
    asked: AtomicBool,
    stuck: AtomicBool,
}

impl Liveness {
    /// Asks the question; the answer comes when the thread next returns from KVM_RUN on a
    /// kick ([`kick_signal`]), which the asker sends.
    pub fn ask(&self) {
        self.asked.store(true, Ordering::SeqCst);
    }

    /// The vCPU's last answer: it is halted with interrupts off, or still waits for the INIT
    /// and SIPI that start it, so only another vCPU could ever wake it.
    pub fn stuck(&self) -> bool {
        self.stuck.load(Ordering::SeqCst)
    }

    /// Answers if asked (on the vCPU's thread, out of KVM_RUN); true if it was asked.
    fn answer(&self, vcpu: &VcpuFd) -> bool {
        if !self.asked.swap(false, Ordering::SeqCst) {
            return false;
        }
        self.stuck
            .store(waits_for_another_vcpu(vcpu), Ordering::SeqCst);
        true
    }

    /// The vCPU ran guest code: whatever it answered before no longer holds.
    fn ran(&self) {
        if self.stuck.load(Ordering::Relaxed) {
            self.stuck.store(false, Ordering::SeqCst);
        }
    }
}

/// Whether nothing but another vCPU (an IPI: INIT, SIPI, NMI) can make this vCPU run again:
/// halted with interrupts masked (Linux's halt and, without ACPI, its power-off end every CPU
/// this way) or never started. Interrupts from devices cannot wake it.
fn waits_for_another_vcpu(vcpu: &VcpuFd) -> bool {
    let Ok(mp) = vcpu.get_mp_state() else {
        return false;
    };
    match mp.mp_state {
        KVM_MP_STATE_UNINITIALIZED | KVM_MP_STATE_INIT_RECEIVED => true,
        KVM_MP_STATE_HALTED => vcpu.get_regs().is_ok_and(|r| r.rflags & RFLAGS_IF == 0),
        _ => false,
    }
}

/// Why a vCPU thread ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Asked to stop.
    Stopped,
    /// The guest crashed or KVM could not run it; the event carries the details.
    Crashed,
}

fn dump(vcpu: &VcpuFd) -> String {
    let mut s = String::new();
    if let Ok(r) = vcpu.get_regs() {
        let _ = write!(
            s,
            "rip={:#x} rsp={:#x} rflags={:#x} rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x} rbp={:#x}",
            r.rip, r.rsp, r.rflags, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp
        );
    }
    if let Ok(sr) = vcpu.get_sregs() {
        let _ = write!(
            s,
            " cs={:#x}(dpl{}) cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x}",
            sr.cs.selector, sr.cs.dpl, sr.cr0, sr.cr2, sr.cr3, sr.cr4, sr.efer
        );
    }
    s
}

fn rip(vcpu: &VcpuFd) -> u64 {
    vcpu.get_regs().map(|r| r.rip).unwrap_or(0)
}

/// Runs the vCPU until it is asked to stop or the guest crashes.
pub fn run(mut vcpu: VcpuFd, ctx: Context) -> End {
    let id = ctx.id;
    let crash = |vcpu: &VcpuFd, reason: String| {
        let _ = ctx.events.send(Event::Crash {
            vcpu: id,
            reason,
            rip: rip(vcpu),
            registers: dump(vcpu),
            at: Instant::now(),
        });
        ctx.stop.store(true, Ordering::SeqCst);
        End::Crashed
    };
    loop {
        if ctx.stop.load(Ordering::SeqCst) {
            return End::Stopped;
        }
        let exit = vcpu.run();
        if exit.is_ok() {
            ctx.liveness.ran();
        }
        // Port I/O is dispatched after the match, from kvm_run, which says the element size.
        let mut port_io = false;
        let (reason, addr, mut hit) = match exit {
            Ok(VcpuExit::IoIn(port, _)) => {
                port_io = true;
                (Reason::PioIn, u64::from(port), None)
            }
            Ok(VcpuExit::IoOut(port, _)) => {
                port_io = true;
                (Reason::PioOut, u64::from(port), None)
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                let hit = ctx.mmio.read(addr, id, data);
                (Reason::MmioRead, addr, hit)
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                let hit = ctx.mmio.write(addr, id, data);
                (Reason::MmioWrite, addr, hit)
            }
            Ok(VcpuExit::Shutdown) => {
                return crash(&vcpu, "triple fault (KVM_EXIT_SHUTDOWN)".into());
            }
            Ok(VcpuExit::Hlt) => {
                return crash(&vcpu, "the guest halted (HLT with interrupts off)".into());
            }
            Ok(VcpuExit::InternalError) => {
                let run = vcpu.get_kvm_run();
                // SAFETY: KVM filled the `internal` member of the exit union because the exit
                // reason is KVM_EXIT_INTERNAL_ERROR; it is plain integers.
                let sub = unsafe { run.__bindgen_anon_1.internal.suberror };
                return crash(&vcpu, format!("KVM internal error (suberror {sub})"));
            }
            Ok(VcpuExit::FailEntry(reason, cpu)) => {
                return crash(
                    &vcpu,
                    format!(
                        "KVM could not enter the guest (hardware reason {reason:#x}, cpu {cpu})"
                    ),
                );
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => {
                return crash(
                    &vcpu,
                    format!("guest system event {kind} (reset or shutdown)"),
                );
            }
            Ok(_) => (Reason::Other, 0, None),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                vcpu.set_kvm_immediate_exit(0);
                if ctx.liveness.answer(&vcpu) {
                    // The halt watch's kick, not an exit the guest caused: not counted.
                    continue;
                }
                (Reason::Interrupted, 0, None)
            }
            Err(e) => {
                return crash(&vcpu, format!("KVM_RUN failed: {e}"));
            }
        };
        if port_io {
            hit = dispatch_port_io(&mut vcpu, &ctx.pio, id);
        }
        ctx.exits.record(id, reason, addr, hit);
    }
}

/// Dispatches a KVM_EXIT_IO as one bus access of the element size per element: a string
/// instruction (`rep insw`, `rep outsd`, as Linux's ata_piix moves IDE data) exits once for
/// up to a page of elements, which kvm-ioctls hands out as one slice of `size * count` bytes.
fn dispatch_port_io(vcpu: &mut VcpuFd, pio: &Bus, id: usize) -> crate::bus::Hit {
    let run = vcpu.get_kvm_run();
    // SAFETY: the last exit was KVM_EXIT_IO (the caller matched it), so KVM filled the `io`
    // member of the exit union; it is plain integers.
    let io = unsafe { run.__bindgen_anon_1.io };
    let size = usize::from(io.size).max(1);
    let len = size * io.count as usize;
    // SAFETY: KVM put `count` elements of `size` bytes at `data_offset` inside this vCPU's
    // kvm_run mapping (the slice kvm-ioctls returns for the exit, which is no longer alive);
    // nothing else touches it before the next KVM_RUN.
    let data = unsafe {
        std::slice::from_raw_parts_mut(
            (run as *mut kvm_bindings::kvm_run as *mut u8).add(io.data_offset as usize),
            len,
        )
    };
    let port = u64::from(io.port);
    let mut hit = None;
    for element in data.chunks_mut(size) {
        hit = if u32::from(io.direction) == kvm_bindings::KVM_EXIT_IO_IN {
            pio.read(port, id, element)
        } else {
            pio.write(port, id, element)
        };
    }
    hit
}

/// The x87 and SSE state after FNINIT / reset (FCW 0x37f, MXCSR 0x1f80), which both the probe
/// and Linux expect at entry.
fn set_initial_fpu(vcpu: &VcpuFd, id: u64) -> Result<(), Error> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu)
        .map_err(|e| Error::Setup(id, "set fpu", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(c: &CpuId, function: u32) -> Option<kvm_bindings::kvm_cpuid_entry2> {
        c.as_slice()
            .iter()
            .find(|e| e.function == function)
            .copied()
    }

    #[test]
    fn a_linux_vcpu_is_told_it_runs_under_kvm_and_a_probe_vcpu_keeps_kvms_set() {
        let kvm = super::super::open().expect("/dev/kvm");
        let vm = kvm.create_vm().unwrap();
        vm.create_irq_chip().unwrap();
        let linux = create_linux(&vm, &kvm, 0, None).unwrap();
        let c = linux.get_cpuid2(KVM_MAX_CPUID_ENTRIES).unwrap();
        assert_ne!(leaf(&c, 1).unwrap().ecx & CPUID_1_ECX_HYPERVISOR, 0);
        // KVM's signature leaf, which the bit sends Linux to (kvm-clock is announced there).
        let sig = leaf(&c, 0x4000_0000).expect("KVM's signature leaf");
        let name: Vec<u8> = [sig.ebx, sig.ecx, sig.edx]
            .iter()
            .flat_map(|r| r.to_le_bytes())
            .collect();
        assert_eq!(&name, b"KVMKVMKVM\0\0\0");
        // The probe's CPUID is KVM's as it is.
        let probe = cpuid(&kvm, 1).unwrap();
        let supported = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).unwrap();
        assert_eq!(
            leaf(&probe, 1).unwrap().ecx,
            leaf(&supported, 1).unwrap().ecx
        );
    }
}
