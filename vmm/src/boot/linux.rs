//! Starting a Linux kernel through the 64-bit boot protocol (Documentation/arch/x86/boot.rst):
//! an ELF `vmlinux` (entered at `startup_64`, as Firecracker does) or a bzImage (protocol 2.12
//! or later with a 64-bit entry, at its load address + 0x200), both loaded by linux-loader. The
//! VMM writes the zero page (setup header, command line, initrd, the e820 map of the real
//! memory layout: RAM below the hole under 4 GiB and from 4 GiB up), the MP table
//! ([`super::mptable`]), a GDT with the boot selectors and identity page tables, and starts the
//! boot vCPU at CPL0 in long mode with RSI at the zero page. Application processors wait for
//! the kernel's INIT/SIPI, as on a PC.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::{elf::Elf, BzImage, KernelLoader};
use probe_abi::layout::MMIO_HOLE;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::gdt;
use super::mptable::{MpTable, MPTABLE_SIZE, MPTABLE_START};
use super::paging;
use crate::memory_map::{ram_ranges, ram_top};

/// Guest-physical places of the boot structures (all below 640 KiB, which Linux reserves).
pub const GDT: u64 = 0x1000;
pub const BOOT_STACK: u64 = 0x6ff0;
pub const ZERO_PAGE: u64 = 0x7000;
pub const CMDLINE: u64 = 0x6_0000;
/// The longest command line vmbench writes (Linux 6.x takes 2047 bytes by default).
pub const CMDLINE_MAX: usize = 4095;
/// Where a bzImage's protected-mode kernel loads (its `code32_start`), and above which an
/// ELF kernel must load.
const HIMEM: u64 = 0x10_0000;
/// The smallest memory a Linux guest is given.
pub const MIN_MEM: u64 = 64 << 20;

const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
const KERNEL_BOOT_FLAG: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT: u32 = 0x100_0000;
/// xloadflags: XLF_KERNEL_64 (a 64-bit entry at load address + 0x200).
const XLF_KERNEL_64: u16 = 1;
/// loadflags: LOADED_HIGH.
const LOADED_HIGH: u8 = 1;

/// Which Linux kernel to start, with what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinuxBoot {
    /// An ELF vmlinux or a bzImage (told apart by their contents).
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {what} {path}")]
    Read {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is neither an ELF vmlinux nor a bzImage")]
    NotAKernel { path: String },
    #[error("cannot load the kernel {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("{path} uses boot protocol {major}.{minor:02} without a 64-bit entry; vmbench needs protocol 2.12 or later built for x86-64")]
    Protocol {
        path: String,
        major: u16,
        minor: u16,
    },
    #[error("the command line is {0} bytes; at most {CMDLINE_MAX} fit")]
    CmdlineTooLong(usize),
    #[error("guest memory of {got} MiB is too small for a Linux guest: give it at least {} MiB", MIN_MEM >> 20)]
    MemoryTooSmall { got: u64 },
    #[error("the initrd {path} ({size} bytes) does not fit in memory below {limit:#x} above the kernel; give the guest more memory")]
    InitrdTooLarge { path: String, size: u64, limit: u64 },
    #[error(transparent)]
    MpTable(#[from] super::mptable::Error),
    #[error(transparent)]
    Paging(#[from] paging::Error),
    #[error("cannot write the boot structures into guest memory")]
    Write,
}

/// Where the boot vCPU starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinuxEntry {
    pub rip: u64,
    pub rsp: u64,
    /// The zero page, passed in RSI.
    pub zero_page: u64,
    pub cr3: u64,
    pub gdt: u64,
}

/// What the machine tells the kernel besides the image.
pub struct Platform {
    pub mem_size: u64,
    pub vcpus: usize,
    pub pci_slots: Vec<u8>,
}

enum Format {
    Elf,
    BzImage,
}

fn format_of(path: &Path) -> Result<Format, Error> {
    let p = path.display().to_string();
    let mut head = [0u8; 0x206];
    let mut f = File::open(path).map_err(|e| Error::Read {
        what: "kernel",
        path: p.clone(),
        source: e,
    })?;
    let n = f.read(&mut head).map_err(|e| Error::Read {
        what: "kernel",
        path: p.clone(),
        source: e,
    })?;
    if n >= 4 && head[..4] == *b"\x7fELF" {
        Ok(Format::Elf)
    } else if n >= 0x206 && head[0x202..0x206] == KERNEL_HDR_MAGIC.to_le_bytes() {
        Ok(Format::BzImage)
    } else {
        Err(Error::NotAKernel { path: p })
    }
}

/// The e820 map of a machine with `mem_size` bytes: base memory below the MP table, the MP
/// table reserved, then RAM from 1 MiB to the hole and from 4 GiB up.
pub fn e820(mem_size: u64) -> Vec<(u64, u64, u32)> {
    let mut v = vec![
        (0, MPTABLE_START, E820_RAM),
        (MPTABLE_START, MPTABLE_SIZE, E820_RESERVED),
    ];
    for (start, len) in ram_ranges(mem_size) {
        let (start, len) = (start.0, len as u64);
        let begin = start.max(HIMEM);
        if start + len > begin {
            v.push((begin, start + len - begin, E820_RAM));
        }
    }
    v
}

/// Loads the kernel and initrd, writes the zero page, command line, MP table, GDT and page
/// tables; returns where the boot vCPU starts.
pub fn load(
    mem: &GuestMemoryMmap,
    boot: &LinuxBoot,
    platform: &Platform,
    cpuid1: (u32, u32),
) -> Result<LinuxEntry, Error> {
    if platform.mem_size < MIN_MEM {
        return Err(Error::MemoryTooSmall {
            got: platform.mem_size >> 20,
        });
    }
    if boot.cmdline.len() > CMDLINE_MAX {
        return Err(Error::CmdlineTooLong(boot.cmdline.len()));
    }
    let p = boot.kernel.display().to_string();
    let format = format_of(&boot.kernel)?;
    let mut f = File::open(&boot.kernel).map_err(|e| Error::Read {
        what: "kernel",
        path: p.clone(),
        source: e,
    })?;
    let load_err = |e: linux_loader::loader::Error| Error::Load {
        path: p.clone(),
        reason: e.to_string(),
    };
    let (entry, kernel_end, header) = match format {
        Format::Elf => {
            let r = Elf::load(mem, None, &mut f, Some(GuestAddress(HIMEM))).map_err(load_err)?;
            (r.kernel_load.0, r.kernel_end, None)
        }
        Format::BzImage => {
            let r =
                BzImage::load(mem, None, &mut f, Some(GuestAddress(HIMEM))).map_err(load_err)?;
            let h = r.setup_header.unwrap_or_default();
            if h.version < 0x020c || h.xloadflags & XLF_KERNEL_64 == 0 {
                return Err(Error::Protocol {
                    path: p,
                    major: h.version >> 8,
                    minor: h.version & 0xff,
                });
            }
            (r.kernel_load.0 + 0x200, r.kernel_end, Some(h))
        }
    };

    let mut params = boot_params::default();
    let mut hdr = header.unwrap_or_else(|| setup_header {
        kernel_alignment: KERNEL_MIN_ALIGNMENT,
        initrd_addr_max: 0x7fff_ffff,
        ..Default::default()
    });
    hdr.boot_flag = KERNEL_BOOT_FLAG;
    hdr.header = KERNEL_HDR_MAGIC;
    hdr.type_of_loader = KERNEL_LOADER_OTHER;
    hdr.loadflags |= LOADED_HIGH;
    hdr.cmd_line_ptr = CMDLINE as u32;
    hdr.cmdline_size = boot.cmdline.len() as u32 + 1;

    let mut cmdline = boot.cmdline.clone().into_bytes();
    cmdline.push(0);
    mem.write_slice(&cmdline, GuestAddress(CMDLINE))
        .map_err(|_| Error::Write)?;

    if let Some(initrd) = &boot.initrd {
        let ip = initrd.display().to_string();
        let data = std::fs::read(initrd).map_err(|e| Error::Read {
            what: "initrd",
            path: ip.clone(),
            source: e,
        })?;
        let limit = u64::from(hdr.initrd_addr_max)
            .saturating_add(1)
            .min(platform.mem_size.min(MMIO_HOLE));
        let size = data.len() as u64;
        let addr = limit.saturating_sub(size) & !0xfff;
        if size > limit || addr < kernel_end {
            return Err(Error::InitrdTooLarge {
                path: ip,
                size,
                limit,
            });
        }
        mem.write_slice(&data, GuestAddress(addr))
            .map_err(|_| Error::Write)?;
        hdr.ramdisk_image = addr as u32;
        hdr.ramdisk_size = size as u32;
    }
    params.hdr = hdr;
    let map = e820(platform.mem_size);
    for (i, &(addr, size, type_)) in map.iter().enumerate() {
        params.e820_table[i] = boot_e820_entry {
            addr,
            size,
            r#type: type_,
        };
    }
    params.e820_entries = map.len() as u8;
    mem.write_obj(params, GuestAddress(ZERO_PAGE))
        .map_err(|_| Error::Write)?;

    let mp = MpTable {
        vcpus: platform.vcpus,
        pci_slots: platform.pci_slots.clone(),
        cpu_signature: cpuid1.0,
        cpu_features: cpuid1.1,
    }
    .bytes()?;
    mem.write_slice(&mp, GuestAddress(MPTABLE_START))
        .map_err(|_| Error::Write)?;

    for (i, d) in gdt::linux_table().iter().enumerate() {
        mem.write_obj(*d, GuestAddress(GDT + i as u64 * 8))
            .map_err(|_| Error::Write)?;
    }
    paging::write(mem, ram_top(platform.mem_size).max(1 << 32), MMIO_HOLE)?;
    Ok(LinuxEntry {
        rip: entry,
        rsp: BOOT_STACK,
        zero_page: ZERO_PAGE,
        cr3: probe_abi::layout::PML4,
        gdt: GDT,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e820_leaves_the_mp_table_and_the_hole_out_of_ram() {
        let small = e820(256 << 20);
        let big = e820(4 << 30);

        assert_eq!(
            small,
            vec![
                (0, MPTABLE_START, E820_RAM),
                (MPTABLE_START, MPTABLE_SIZE, E820_RESERVED),
                (HIMEM, (256 << 20) - HIMEM, E820_RAM),
            ]
        );
        assert_eq!(big[2], (HIMEM, MMIO_HOLE - HIMEM, E820_RAM));
        assert_eq!(big[3], (1 << 32, (4 << 30) - MMIO_HOLE, E820_RAM));
    }

    #[test]
    fn boot_structures_do_not_overlap_each_other_or_the_page_tables() {
        let l = probe_abi::layout::PML4;
        let tables_end = probe_abi::layout::PD + probe_abi::layout::MAX_PD * 0x1000;
        let ranges = [
            (GDT, 32),
            (BOOT_STACK - 0x1000, 0x1000),
            (ZERO_PAGE, 0x1000),
            (l, tables_end - l),
            (CMDLINE, CMDLINE_MAX as u64 + 1),
            (MPTABLE_START, MPTABLE_SIZE),
        ];
        for (i, &(a, al)) in ranges.iter().enumerate() {
            assert!(a + al <= MPTABLE_START + MPTABLE_SIZE);
            for &(b, bl) in &ranges[i + 1..] {
                assert!(a + al <= b || b + bl <= a, "{a:#x} overlaps {b:#x}");
            }
        }
    }

    #[test]
    fn a_file_that_is_no_kernel_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("notes.txt");
        std::fs::write(&p, b"hello").unwrap();

        let e = format_of(&p).err().unwrap();

        assert!(e.to_string().contains("notes.txt is neither"), "{e}");
    }
}
