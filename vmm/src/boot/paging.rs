//! Identity-mapped x86-64 page tables built from 2 MiB pages (1 GiB pages triple-fault on
//! KVM-PVM hosts), user-accessible so the probe can run at CPL3. Intel SDM vol. 3A, 4.5.

use probe_abi::layout::{MAX_PD, PD, PDPT, PML4};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

pub const PRESENT: u64 = 1 << 0;
pub const WRITABLE: u64 = 1 << 1;
pub const USER: u64 = 1 << 2;
pub const CACHE_DISABLE: u64 = 1 << 4;
pub const PAGE_SIZE_2M: u64 = 1 << 7;

const GIB: u64 = 1 << 30;
const MIB2: u64 = 2 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("cannot map {0:#x} bytes: the page tables cover at most {MAX_PD} GiB")]
    TooLarge(u64),
    #[error("guest memory does not hold the page tables")]
    Write,
}

/// The entries to write, as (guest-physical address, value): identity map of `[0, top)`
/// rounded up to a GiB, with caching disabled in `[uncached_from, 4 GiB)` (the MMIO hole).
pub fn entries(top: u64, uncached_from: u64) -> Result<Vec<(u64, u64)>, Error> {
    let gibs = top.div_ceil(GIB).max(1);
    if gibs > MAX_PD {
        return Err(Error::TooLarge(top));
    }
    let flags = PRESENT | WRITABLE | USER;
    let mut out = Vec::with_capacity(2 + (gibs * 513) as usize);
    out.push((PML4, PDPT | flags));
    for g in 0..gibs {
        let pd = PD + g * 0x1000;
        out.push((PDPT + g * 8, pd | flags));
        for i in 0..512 {
            let pa = g * GIB + i * MIB2;
            let mut e = pa | flags | PAGE_SIZE_2M;
            if pa >= uncached_from && pa < 4 * GIB {
                e |= CACHE_DISABLE;
            }
            out.push((pd + i * 8, e));
        }
    }
    Ok(out)
}

/// Writes the tables into guest memory; CR3 is then [`PML4`].
pub fn write(mem: &GuestMemoryMmap, top: u64, uncached_from: u64) -> Result<(), Error> {
    for (gpa, e) in entries(top, uncached_from)? {
        mem.write_obj(e, GuestAddress(gpa))
            .map_err(|_| Error::Write)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks the tables as the MMU would, for a user-mode access.
    fn translate(mem: &GuestMemoryMmap, va: u64) -> Option<(u64, u64)> {
        let pml4e: u64 = mem
            .read_obj(GuestAddress(PML4 + ((va >> 39) & 511) * 8))
            .ok()?;
        if pml4e & (PRESENT | USER) != PRESENT | USER {
            return None;
        }
        let pdpte: u64 = mem
            .read_obj(GuestAddress((pml4e & !0xfff) + ((va >> 30) & 511) * 8))
            .ok()?;
        if pdpte & (PRESENT | USER) != PRESENT | USER || pdpte & PAGE_SIZE_2M != 0 {
            return None; // no 1 GiB pages, ever
        }
        let pde: u64 = mem
            .read_obj(GuestAddress((pdpte & !0xfff) + ((va >> 21) & 511) * 8))
            .ok()?;
        if pde & (PRESENT | USER | PAGE_SIZE_2M) != PRESENT | USER | PAGE_SIZE_2M {
            return None;
        }
        Some((
            (pde & !(MIB2 - 1) & ((1 << 52) - 1)) + (va & (MIB2 - 1)),
            pde,
        ))
    }

    fn mem(size: usize) -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).unwrap()
    }

    #[test]
    fn identity_maps_ram_and_the_mmio_hole_with_user_2m_pages() {
        let m = mem(16 << 20);
        write(&m, 4 * GIB, 0xC000_0000).unwrap();

        for va in [
            0u64,
            0x1234,
            0x10_0000,
            0xff_ffff,
            0xBFFF_FFFF,
            0xC000_0000,
            0xFFFF_FFFF,
        ] {
            let (pa, _) = translate(&m, va).unwrap_or_else(|| panic!("{va:#x} not mapped"));
            assert_eq!(pa, va);
        }
        assert!(translate(&m, 4 * GIB).is_none());
    }

    #[test]
    fn mmio_hole_is_uncached_and_ram_is_not() {
        let m = mem(16 << 20);
        write(&m, 4 * GIB, 0xC000_0000).unwrap();

        let (_, ram) = translate(&m, 0x20_0000).unwrap();
        let (_, hole) = translate(&m, 0xF000_0000).unwrap();

        assert_eq!(ram & CACHE_DISABLE, 0);
        assert_eq!(hole & CACHE_DISABLE, CACHE_DISABLE);
    }

    #[test]
    fn maps_ram_above_4g() {
        let m = mem(16 << 20);
        write(&m, 6 * GIB + 1, 0xC000_0000).unwrap();

        assert_eq!(translate(&m, 7 * GIB - 1).map(|t| t.0), Some(7 * GIB - 1));
        let (_, e) = translate(&m, 5 * GIB).unwrap();
        assert_eq!(e & CACHE_DISABLE, 0);
        assert!(translate(&m, 7 * GIB).is_none());
    }

    #[test]
    fn too_large_is_refused() {
        assert_eq!(entries(65 * GIB, 0), Err(Error::TooLarge(65 * GIB)));
    }

    #[test]
    fn the_most_memory_the_machine_takes_is_mapped_and_one_mib_more_is_not() {
        let top = |mib: u64| crate::memory_map::ram_top(mib << 20);
        let max = super::super::MAX_MEM_MIB;

        assert!(entries(top(max), 0).is_ok());
        assert!(entries(top(max + 1), 0).is_err());
        assert!(super::super::check_shape((max + 1) << 20, 1).is_err());
        assert!(super::super::check_shape(max << 20, super::super::MAX_VCPUS).is_ok());
    }
}
