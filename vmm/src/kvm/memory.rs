//! Guest RAM: anonymous mappings registered as KVM memory slots, split around the 32-bit MMIO
//! hole so that PCI BARs below 4 GiB never alias RAM.

use probe_abi::layout::MMIO_HOLE;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::Error;
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;

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

/// Maps guest RAM and registers each region as a KVM slot.
pub fn create(vm: &VmFd, size: u64) -> Result<GuestMemoryMmap, Error> {
    let mem = GuestMemoryMmap::from_ranges(&ram_ranges(size))
        .map_err(|e| Error::MapMemory(size >> 20, e.to_string()))?;
    for (slot, region) in mem.iter().enumerate() {
        let host = mem
            .get_host_address(region.start_addr())
            .map_err(|_| Error::MemorySlot(kvm_ioctls::Error::new(libc::EFAULT)))?;
        let r = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: `host` points to a mapping of `region.len()` bytes owned by `mem`, which the
        // caller keeps alive as long as the VM (the Machine holds both and drops the VM first).
        unsafe { vm.set_user_memory_region(r) }.map_err(Error::MemorySlot)?;
    }
    Ok(mem)
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
