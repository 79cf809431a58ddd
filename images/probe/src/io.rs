//! Port I/O, MMIO and the TSC. The probe runs at CPL3 with IOPL=3, so `in`/`out` are allowed
//! and every one of them is a VM exit unless the VMM services it in the kernel.

use core::arch::asm;

#[inline(always)]
pub fn outb(port: u16, v: u8) {
    // SAFETY: port I/O has no memory effects in the guest; IOPL=3 permits it at CPL3.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack, preserves_flags))
    }
}

#[inline(always)]
pub fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: as for `outb`.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack, preserves_flags))
    }
    v
}

#[inline(always)]
pub fn outl(port: u16, v: u32) {
    // SAFETY: as for `outb`.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") v, options(nomem, nostack, preserves_flags))
    }
}

#[inline(always)]
pub fn inl(port: u16) -> u32 {
    let v: u32;
    // SAFETY: as for `outb`.
    unsafe {
        asm!("in eax, dx", in("dx") port, out("eax") v, options(nomem, nostack, preserves_flags))
    }
    v
}

/// `rep insw`: fills `buf` from a 16-bit data port (one I/O access per element).
#[inline(always)]
pub fn insw(port: u16, buf: &mut [u16]) {
    // SAFETY: writes exactly `buf.len()` elements at `buf` (DF is clear by the ABI); the
    // port read itself has no other memory effect.
    unsafe {
        asm!("rep insw", in("dx") port, inout("rdi") buf.as_mut_ptr() => _,
             inout("rcx") buf.len() => _, options(nostack, preserves_flags))
    }
}

/// `rep insd`: fills `buf` from a 32-bit data port.
#[inline(always)]
pub fn insl(port: u16, buf: &mut [u32]) {
    // SAFETY: as for `insw`.
    unsafe {
        asm!("rep insd", in("dx") port, inout("rdi") buf.as_mut_ptr() => _,
             inout("rcx") buf.len() => _, options(nostack, preserves_flags))
    }
}

/// `rep outsw`: sends `buf` to a 16-bit data port.
#[inline(always)]
pub fn outsw(port: u16, buf: &[u16]) {
    // SAFETY: reads exactly `buf.len()` elements at `buf` (DF is clear by the ABI).
    unsafe {
        asm!("rep outsw", in("dx") port, inout("rsi") buf.as_ptr() => _,
             inout("rcx") buf.len() => _, options(nostack, preserves_flags, readonly))
    }
}

/// `rep outsd`: sends `buf` to a 32-bit data port.
#[inline(always)]
pub fn outsl(port: u16, buf: &[u32]) {
    // SAFETY: as for `outsw`.
    unsafe {
        asm!("rep outsd", in("dx") port, inout("rsi") buf.as_ptr() => _,
             inout("rcx") buf.len() => _, options(nostack, preserves_flags, readonly))
    }
}

/// Reads a device register at guest-physical (= virtual) address `addr`.
#[inline(always)]
pub fn mmio_read32(addr: u64) -> u32 {
    // SAFETY: the probe's page tables identity-map the MMIO hole uncached; a read of an
    // address there exits to the VMM or reads all ones, and has no effect on probe memory.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

#[inline(always)]
pub fn mmio_write32(addr: u64, v: u32) {
    // SAFETY: as for `mmio_read32`; callers only write device addresses, never probe memory.
    unsafe { core::ptr::write_volatile(addr as *mut u32, v) }
}

/// The TSC, ordered after earlier instructions (LFENCE), so a measured interval does not
/// start before the work it measures has finished.
#[inline(always)]
pub fn rdtsc() -> u64 {
    let lo: u32;
    let hi: u32;
    // SAFETY: RDTSC at CPL3 is allowed unless CR4.TSD is set, which no VMM we run under does.
    unsafe {
        asm!("lfence", "rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

#[inline(always)]
pub fn pause() {
    core::hint::spin_loop();
}

static TSC_KHZ: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

/// Remembers the TSC rate for code that has no `Env` at hand.
pub fn set_tsc_khz(khz: u32) {
    TSC_KHZ.store(khz, core::sync::atomic::Ordering::Relaxed);
}

/// The TSC rate, or a conservative 1 GHz before it is known.
pub fn tsc_khz_hint() -> u32 {
    match TSC_KHZ.load(core::sync::atomic::Ordering::Relaxed) {
        0 => 1_000_000,
        k => k,
    }
}
