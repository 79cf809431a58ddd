//! Guest RAM: anonymous mappings registered as KVM memory slots, split around the 32-bit MMIO
//! hole so that PCI BARs below 4 GiB never alias RAM.

use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::Error;
use crate::memory_map::ram_ranges;
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;

/// Maps guest RAM and registers each region as a KVM slot.
pub fn create(vm: &VmFd, size: u64) -> Result<GuestMemoryMmap, Error> {
    let mem = map(size)?;
    register(vm, &mem)?;
    Ok(mem)
}

/// Maps guest RAM, split around the MMIO hole, without telling KVM.
pub fn map(size: u64) -> Result<GuestMemoryMmap, Error> {
    GuestMemoryMmap::from_ranges(&ram_ranges(size))
        .map_err(|e| Error::MapMemory(size >> 20, e.to_string()))
}

/// Registers each region of `mem` as a KVM memory slot (numbered from 0).
///
/// Each registration waits for an SRCU grace period of the VM (KVM swaps its memslot set and
/// synchronises, ~4-8 ms on KVM-PVM whatever the size), which also completes what earlier
/// ioctls left for the next grace period (the I/O buses an ioeventfd registration replaced).
pub fn register(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), Error> {
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
    Ok(())
}
