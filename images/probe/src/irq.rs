//! Interrupts at CPL3: the local APIC (xAPIC, MMIO at its reset base), gates in the IDT that
//! whoever started the probe left empty at `layout::IDT`, and one tiny handler per vector that
//! counts. The probe cannot execute STI, CLI or LIDT (CPL3: a #GP, a triple fault here), so
//! RFLAGS.IF is set from the start and what decides whether an interrupt arrives is the
//! local APIC: software-disabled (nothing arrives) until [`enable`].
//!
//! How an interrupt reaches a CPL3 handler (SDM vol. 3A, 6.12.1): a gate whose code segment
//! is the probe's own DPL3 segment means no privilege change, so the frame is pushed on the
//! interrupted stack. The probe is therefore built without a red zone (`-C no-redzone`,
//! images/src/probe.rs): nothing of its own lives below RSP. (The precompiled `core` keeps its
//! red zone; an interrupt is only sent while the probe's own code waits for it, as the
//! calibration's self-IPI does.) An IST stack would avoid that, but KVM-PVM does not switch to
//! one here: a gate naming IST1 ended the probe in a triple fault (measured), the same gate
//! without it delivers.
//!
//! The gates are trap gates, not interrupt gates: an interrupt gate clears IF on delivery and
//! IRETQ at CPL3 only restores IF when CPL <= IOPL; under KVM-PVM, where the hardware IOPL is 0,
//! IF then stays clear and no second interrupt ever arrives (measured). With a trap gate IF is
//! never cleared. Nesting is still impossible: the handler does not signal end-of-interrupt,
//! so the local APIC holds back every vector of the same priority class (all of the probe's
//! are in one, [`BASE`]..) until the waiting code calls [`service`], after the handler has
//! returned.
//!
//! Only vCPU 0 enables its local APIC.

use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};

use probe_abi::layout;

use crate::io::mmio_write32;

/// The local APIC's registers (SDM vol. 3A, table 11-1), at its reset base.
const LAPIC: u64 = 0xfee0_0000;
const LAPIC_EOI: u64 = LAPIC + 0xb0;
const LAPIC_SVR: u64 = LAPIC + 0xf0;
const LAPIC_ICR_LO: u64 = LAPIC + 0x300;
/// LINT0 and LINT1's LVT entries and their mask bit (the PVH stub masks both).
pub const LAPIC_LVT0: u64 = LAPIC + 0x350;
pub const LAPIC_LVT1: u64 = LAPIC + 0x360;
pub const LVT_MASKED: u32 = 1 << 16;
/// SVR: APIC software enable.
const SVR_ENABLE: u32 = 1 << 8;
/// ICR: fixed delivery to the sender itself (destination shorthand 01).
const ICR_SELF: u32 = 1 << 18;

/// The probe's vectors: [`BASE`] + 0..[`VECTORS`], one priority class (0x40-0x4f).
pub const BASE: u8 = 0x40;
pub const VECTORS: usize = 8;
/// The spurious-interrupt vector (its low four bits must be ones on older APICs).
const SPURIOUS: u8 = 0xff;
/// Gate type and attributes: present, DPL 3, 64-bit trap gate.
const TRAP_GATE_DPL3: u8 = 0xef;
/// The probe's code segment, as the PVH stub's GDT (and vmm/src/boot/gdt.rs) lay it out.
const USER_CS: u16 = crate::pvh::USER_CS as u16;

/// How many times each vector's handler ran. Written by the handlers (`lock inc`), read by
/// the code waiting for them.
#[no_mangle]
static PROBE_IRQ_COUNTS: [AtomicU64; VECTORS] = [const { AtomicU64::new(0) }; VECTORS];

// One 16-byte stub per vector: count, return. No register but RFLAGS changes, and IRETQ
// restores RFLAGS' arithmetic flags. The spurious vector's stub only returns (a spurious
// interrupt takes no end-of-interrupt).
global_asm!(
    ".pushsection .text.irq, \"ax\"",
    ".balign 16",
    ".global probe_irq_stubs",
    "probe_irq_stubs:",
    ".set vec, 0",
    ".rept {n}",
    "    lock inc qword ptr [rip + PROBE_IRQ_COUNTS + 8 * vec]",
    "    iretq",
    "    .balign 16",
    "    .set vec, vec + 1",
    ".endr",
    ".global probe_irq_spurious",
    "probe_irq_spurious:",
    "    iretq",
    ".popsection",
    n = const VECTORS,
);

extern "C" {
    static probe_irq_stubs: u8;
    static probe_irq_spurious: u8;
}

fn set_gate(vector: u8, handler: u64) {
    let mut g = [0u8; 16];
    g[0..2].copy_from_slice(&(handler as u16).to_le_bytes());
    g[2..4].copy_from_slice(&USER_CS.to_le_bytes());
    // g[4]: no IST (see above).
    g[5] = TRAP_GATE_DPL3;
    g[6..8].copy_from_slice(&((handler >> 16) as u16).to_le_bytes());
    g[8..12].copy_from_slice(&((handler >> 32) as u32).to_le_bytes());
    let at = layout::IDT + u64::from(vector) * 16;
    // SAFETY: the IDT page is reserved for this (probe-abi layout), identity-mapped and
    // writable; a gate is written whole before the APIC is enabled, so none is half-written
    // when an interrupt can use it.
    unsafe { core::ptr::copy_nonoverlapping(g.as_ptr(), at as *mut u8, 16) };
}

/// Installs the gates and software-enables this vCPU's local APIC. vCPU 0 only.
pub fn enable() {
    // Only the symbols' addresses are taken.
    let stubs = core::ptr::addr_of!(probe_irq_stubs) as u64;
    let spurious = core::ptr::addr_of!(probe_irq_spurious) as u64;
    for i in 0..VECTORS as u8 {
        set_gate(BASE + i, stubs + u64::from(i) * 16);
    }
    set_gate(SPURIOUS, spurious);
    mmio_write32(LAPIC_SVR, SVR_ENABLE | u32::from(SPURIOUS));
}

/// How many interrupts vector `BASE + i` has delivered so far.
pub fn count(i: usize) -> u64 {
    PROBE_IRQ_COUNTS[i].load(Ordering::Acquire)
}

/// Every vector's deliveries.
pub fn total() -> u64 {
    PROBE_IRQ_COUNTS
        .iter()
        .map(|c| c.load(Ordering::Acquire))
        .sum()
}

/// Interrupts [`service`] has ended so far.
static ENDED: AtomicU64 = AtomicU64::new(0);

/// Signals end-of-interrupt for the interrupt delivered since the last call, if one was:
/// lets the next interrupt of the probe's class in. Every loop that waits for an interrupt
/// calls it, whichever vector it waits for: an interrupt left without its EOI (a TX
/// completion's, say) holds back every other vector of the class (the RX completion the
/// loop waits for). At most one is ever in service (see the module's comment), so one EOI
/// (one MMIO write) ends it.
pub fn service() {
    if total() != ENDED.load(Ordering::Relaxed) {
        ENDED.fetch_add(1, Ordering::Relaxed);
        mmio_write32(LAPIC_EOI, 0);
    }
}

/// Who raises which of the probe's vectors (`BASE` + index): the calibration's self-IPI,
/// then the virtio queues of the `linux` profile, one vector per queue as Linux's
/// virtio-pci gives them (MSI-X table entries, `virtio::Device::queue`).
pub const SELF_IPI: usize = 0;
pub const NET_RX: usize = 1;
pub const NET_TX: usize = 2;
pub const BLK: usize = 3;

/// Whether waiting for an interrupt ended with it or with the deadline.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Wait {
    Delivered,
    TimedOut,
}

/// Spins until vector `BASE + i` has delivered more than `seen` interrupts or the TSC passes
/// `deadline`, ending every interrupt that arrives meanwhile ([`service`]). Where Linux's idle
/// vCPU halts until the interrupt, the probe cannot (HLT at CPL3 is a #GP); it spins, so the
/// interrupt's cost (the device's irqfd, KVM's injection into a running vCPU, the handler,
/// the EOI) is what the wait measures.
pub fn wait(i: usize, seen: u64, deadline: u64) -> Wait {
    loop {
        service();
        if count(i) != seen {
            return Wait::Delivered;
        }
        if crate::io::rdtsc() >= deadline {
            return Wait::TimedOut;
        }
        crate::io::pause();
    }
}

/// Completions a driver found in its ring after waiting for their interrupt until its
/// deadline: an interrupt the device (or the VMM) lost. Any fails the workload (main.rs),
/// rather than passing as a slower run.
static MISSED: AtomicU64 = AtomicU64::new(0);

pub fn missed() {
    MISSED.fetch_add(1, Ordering::Relaxed);
}

/// How many interrupts were missed ([`missed`]) so far.
pub fn missed_count() -> u64 {
    MISSED.load(Ordering::Relaxed)
}

/// Sends vector `BASE + i` to this vCPU (an MMIO write to the ICR).
pub fn self_ipi(i: usize) {
    mmio_write32(LAPIC_ICR_LO, ICR_SELF | (u32::from(BASE) + i as u32));
}
