//! The PVH start-info block (Xen's `hvm_start_info`, xen/include/public/arch-x86/hvm/start_info.h)
//! that QEMU hands a PVH kernel: the probe builds its boot information from it.

use probe_abi::layout::CMDLINE_MAX;
use probe_abi::{BootInfo, BOOT_MAGIC, BOOT_VERSION};

const START_MAGIC: u32 = 0x336e_c578;
const E820_RAM: u32 = 1;

#[repr(C)]
#[derive(Clone, Copy)]
struct StartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct MemmapEntry {
    addr: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}

/// Boot information for a probe started by the PVH stub; unknown fields stay zero (the
/// probe then calibrates the TSC itself and uses the serial port).
pub fn boot_info(start_info: u64) -> BootInfo {
    let mut b = BootInfo::zeroed();
    b.magic = BOOT_MAGIC;
    b.version = BOOT_VERSION;
    b.vcpus = 1;
    if start_info == 0 {
        return b;
    }
    // SAFETY: the stub passes the address QEMU put in EBX, which points at a start-info block
    // in identity-mapped low RAM; it is read by value.
    let si = unsafe { core::ptr::read_volatile(start_info as *const StartInfo) };
    if si.magic != START_MAGIC {
        return b;
    }
    if si.version >= 1 && si.memmap_paddr != 0 {
        for i in 0..u64::from(si.memmap_entries.min(128)) {
            let at = si.memmap_paddr + i * core::mem::size_of::<MemmapEntry>() as u64;
            // SAFETY: the memory map lies in low RAM with `memmap_entries` entries.
            let e = unsafe { core::ptr::read_volatile(at as *const MemmapEntry) };
            if e.kind == E820_RAM {
                b.mem_size += e.size;
            }
        }
    }
    if si.cmdline_paddr != 0 {
        // Copy the command line (QEMU -append) as the exec text.
        let mut n = 0;
        while n < b.exec.len() - 1 && (n as u64) < CMDLINE_MAX {
            // SAFETY: the command line is a NUL-terminated string QEMU placed in low RAM.
            let c = unsafe { core::ptr::read_volatile((si.cmdline_paddr + n as u64) as *const u8) };
            if c == 0 {
                break;
            }
            b.exec[n] = c;
            n += 1;
        }
    }
    b
}
