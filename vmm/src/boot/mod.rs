//! Starting the probe: load its ELF, lay out the GDT, page tables and boot information the
//! probe-abi crate describes, and give each vCPU its entry state.

pub mod gdt;
pub mod linux;
pub mod mptable;
pub mod paging;

use std::fs::File;
use std::path::Path;

use linux_loader::loader::{elf::Elf, KernelLoader};
use probe_abi::layout::{
    self, BOOT_INFO, GDT, MMIO_HOLE, PROBE_BASE, PROBE_LIMIT, STACKS, STACK_SIZE, TSS,
};
use probe_abi::BootInfo;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::memory_map::ram_top;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("probe ELF {path} not found: build it with `vmbench images build probe` or pass --probe FILE")]
    Missing { path: String },
    #[error("cannot open probe ELF {path}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a loadable x86-64 ELF: {reason}")]
    Malformed { path: String, reason: String },
    #[error("{path} loads at {start:#x}..{end:#x}, outside the probe's window {PROBE_BASE:#x}..{PROBE_LIMIT:#x}")]
    Placement { path: String, start: u64, end: u64 },
    #[error("guest memory of {got} MiB is too small: the probe needs at least {} MiB", layout::MIN_MEM >> 20)]
    MemoryTooSmall { got: u64 },
    #[error("guest memory of {got} MiB is too large: at most {MAX_MEM_MIB} MiB are supported")]
    MemoryTooLarge { got: u64 },
    #[error("{0} vCPUs requested: between 1 and {max} are supported", max = layout::MAX_VCPUS)]
    Vcpus(usize),
    #[error("exec text is {0} bytes; at most {max} fit in the boot information", max = probe_abi::EXEC_MAX)]
    ExecTooLong(usize),
    #[error(transparent)]
    Paging(#[from] paging::Error),
    #[error("cannot write the boot structures into guest memory")]
    Write,
}

/// Where a vCPU starts.
#[derive(Clone, Copy, Debug)]
pub struct Start {
    pub rip: u64,
    pub rsp: u64,
    /// Passed in RDI and RSI.
    pub arg0: u64,
    pub arg1: u64,
    pub cr3: u64,
    pub gdt: u64,
    pub tss: u64,
}

/// The most vCPUs a machine has (one mailbox page and stack each): the one limit the VMM,
/// `boot --vcpus` and scenario files check against.
pub const MAX_VCPUS: usize = layout::MAX_VCPUS as usize;
/// The least guest memory, in MiB, a machine is built with.
pub const MIN_MEM_MIB: u64 = layout::MIN_MEM >> 20;
/// The most guest memory, in MiB: the page tables map [`probe_abi::layout::MAX_PD`] GiB of
/// guest-physical space, and RAM past the 32-bit MMIO hole moves above 4 GiB, so the hole's
/// size is lost at the top. The one limit the VMM, `boot --mem` and scenario files check.
pub const MAX_MEM_MIB: u64 = (layout::MAX_PD << 10) - (((1u64 << 32) - layout::MMIO_HOLE) >> 20);

/// Checks what can be checked before any KVM object exists.
pub fn check_shape(mem_size: u64, vcpus: usize) -> Result<(), Error> {
    if mem_size > MAX_MEM_MIB << 20 {
        return Err(Error::MemoryTooLarge {
            got: mem_size >> 20,
        });
    }
    if mem_size < layout::MIN_MEM {
        return Err(Error::MemoryTooSmall {
            got: mem_size >> 20,
        });
    }
    if vcpus == 0 || vcpus as u64 > layout::MAX_VCPUS {
        return Err(Error::Vcpus(vcpus));
    }
    Ok(())
}

/// Loads the probe and returns its entry point.
pub fn load_probe(mem: &GuestMemoryMmap, path: &Path) -> Result<u64, Error> {
    let p = path.display().to_string();
    let mut f = File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::Missing { path: p.clone() },
        _ => Error::Open {
            path: p.clone(),
            source: e,
        },
    })?;
    let r = Elf::load(mem, None, &mut f, Some(GuestAddress(PROBE_BASE))).map_err(|e| {
        Error::Malformed {
            path: p.clone(),
            reason: e.to_string(),
        }
    })?;
    let entry = r.kernel_load.0;
    if entry < PROBE_BASE || r.kernel_end > PROBE_LIMIT {
        return Err(Error::Placement {
            path: p,
            start: entry,
            end: r.kernel_end,
        });
    }
    Ok(entry)
}

/// What the VMM tells the probe.
pub struct ProbeParams<'a> {
    pub mem_size: u64,
    pub vcpus: usize,
    pub tsc_khz: u32,
    pub flags: u32,
    pub entry_mark_port: u16,
    pub mailbox_port: u16,
    pub calib_port: u16,
    pub calib_mmio: u64,
    pub calib_ioeventfd: u64,
    pub exec: &'a str,
}

/// Writes GDT, TSS and page tables; returns each vCPU's start state. The boot information
/// comes separately ([`write_boot_info`]): it needs the TSC rate, which only a vCPU can tell.
pub fn setup(
    mem: &GuestMemoryMmap,
    entry: u64,
    mem_size: u64,
    vcpus: usize,
) -> Result<Vec<Start>, Error> {
    check_shape(mem_size, vcpus)?;
    for (i, d) in gdt::table(TSS).iter().enumerate() {
        mem.write_obj(*d, GuestAddress(GDT + i as u64 * 8))
            .map_err(|_| Error::Write)?;
    }
    // A zeroed TSS whose I/O bitmap allows every port, then the terminating 0xFF byte.
    let bitmap = u64::from(gdt::TSS_IO_BITMAP);
    let end = u64::from(gdt::TSS_LIMIT);
    mem.write_slice(&vec![0u8; end as usize], GuestAddress(TSS))
        .map_err(|_| Error::Write)?;
    mem.write_obj(gdt::TSS_IO_BITMAP as u16, GuestAddress(TSS + 0x66))
        .map_err(|_| Error::Write)?;
    mem.write_obj(0xffu8, GuestAddress(TSS + end))
        .map_err(|_| Error::Write)?;
    debug_assert_eq!(end - bitmap, 0x2000);
    // Every gate absent: an exception still ends in a triple fault (absent gate, #NP, #DF,
    // shutdown), and the probe installs the gates for the interrupts it asks for.
    mem.write_slice(&[0u8; layout::IDT_SIZE as usize], GuestAddress(layout::IDT))
        .map_err(|_| Error::Write)?;
    paging::write(mem, ram_top(mem_size).max(1 << 32), MMIO_HOLE)?;

    Ok((0..vcpus as u64)
        .map(|i| Start {
            rip: entry,
            // 16-byte aligned minus a return address, as at a function entry.
            rsp: STACKS + (i + 1) * STACK_SIZE - 8,
            arg0: BOOT_INFO,
            arg1: i,
            cr3: layout::PML4,
            gdt: GDT,
            tss: TSS,
        })
        .collect())
}

/// Checks the exec text before anything is built.
pub fn check_exec(exec: &str) -> Result<(), Error> {
    if exec.len() > probe_abi::EXEC_MAX {
        return Err(Error::ExecTooLong(exec.len()));
    }
    Ok(())
}

/// Writes the boot information the probe reads at [`BOOT_INFO`].
pub fn write_boot_info(mem: &GuestMemoryMmap, p: &ProbeParams) -> Result<(), Error> {
    check_shape(p.mem_size, p.vcpus)?;
    check_exec(p.exec)?;
    let mut exec = [0u8; 128];
    exec[..p.exec.len()].copy_from_slice(p.exec.as_bytes());
    // Field by field at their repr(C) offsets: no byte view of the struct needed.
    macro_rules! put {
        ($field:ident, $value:expr) => {
            mem.write_obj(
                $value,
                GuestAddress(BOOT_INFO + std::mem::offset_of!(BootInfo, $field) as u64),
            )
            .map_err(|_| Error::Write)?
        };
    }
    mem.write_slice(
        &[0u8; std::mem::size_of::<BootInfo>()],
        GuestAddress(BOOT_INFO),
    )
    .map_err(|_| Error::Write)?;
    put!(magic, probe_abi::BOOT_MAGIC);
    put!(version, probe_abi::BOOT_VERSION);
    put!(flags, p.flags);
    put!(mem_size, p.mem_size);
    put!(vcpus, p.vcpus as u32);
    put!(tsc_khz, p.tsc_khz);
    put!(entry_mark_port, p.entry_mark_port);
    put!(mailbox_port, p.mailbox_port);
    put!(calib_port, p.calib_port);
    put!(calib_mmio, p.calib_mmio);
    put!(calib_ioeventfd, p.calib_ioeventfd);
    mem.write_slice(
        &exec,
        GuestAddress(BOOT_INFO + std::mem::offset_of!(BootInfo, exec) as u64),
    )
    .map_err(|_| Error::Write)
}
