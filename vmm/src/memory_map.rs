//! The guest-physical memory map: RAM below the 32-bit MMIO hole, the rest from 4 GiB up, so
//! that PCI BARs below 4 GiB never alias RAM. Pure arithmetic, shared by the KVM memory slots
//! and the probe's page tables.

use probe_abi::layout::MMIO_HOLE;
use vm_memory::GuestAddress;

const FOUR_GIB: u64 = 1 << 32;

/// The RAM ranges for `size` bytes of memory: below the hole, and the rest from 4 GiB up.
pub fn ram_ranges(size: u64) -> Vec<(GuestAddress, usize)> {
    let low = size.min(MMIO_HOLE);
    let mut r = vec![(GuestAddress(0), low as usize)];
    if size > low {
        r.push((GuestAddress(FOUR_GIB), (size - low) as usize));
    }
    r
}

/// One past the highest RAM address.
pub fn ram_top(size: u64) -> u64 {
    ram_ranges(size)
        .last()
        .map(|(a, l)| a.0 + *l as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_memory_is_one_low_range() {
        assert_eq!(ram_ranges(256 << 20), vec![(GuestAddress(0), 256 << 20)]);
        assert_eq!(ram_top(256 << 20), 256 << 20);
    }

    #[test]
    fn memory_past_the_hole_continues_at_4g() {
        let r = ram_ranges(4 << 30);
        assert_eq!(
            r,
            vec![
                (GuestAddress(0), MMIO_HOLE as usize),
                (GuestAddress(FOUR_GIB), ((4u64 << 30) - MMIO_HOLE) as usize)
            ]
        );
        assert_eq!(ram_top(4 << 30), FOUR_GIB + (1 << 30));
    }
}
