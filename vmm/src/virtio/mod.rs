//! virtio 1.x devices (virtio 1.2 specification, OASIS) over the modern PCI transport: the
//! transport (`pci.rs`, `msix.rs`) is shared; each device (`blk/`, `net/`) implements
//! [`VirtioDevice`] and does its work on its own worker thread.

pub mod blk;
pub mod kicks;
pub mod msix;
pub mod net;
pub mod pci;

use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// Device status bits (virtio 1.2, 2.1).
pub mod status {
    pub const ACKNOWLEDGE: u8 = 1;
    pub const DRIVER: u8 = 2;
    pub const DRIVER_OK: u8 = 4;
    pub const FEATURES_OK: u8 = 8;
    pub const DEVICE_NEEDS_RESET: u8 = 64;
    pub const FAILED: u8 = 128;
}

/// Feature bits shared by all devices.
pub mod features {
    pub const RING_INDIRECT_DESC: u64 = 1 << 28;
    pub const RING_EVENT_IDX: u64 = 1 << 29;
    pub const VERSION_1: u64 = 1 << 32;
}

/// The vector that means "no MSI-X vector" (virtio 1.2, 4.1.5.1.2).
pub const NO_VECTOR: u16 = 0xffff;

/// What a device's worker gets when the driver sets DRIVER_OK.
pub struct Activation {
    pub mem: GuestMemoryMmap,
    /// Raises the used-buffer interrupt of queue `i` (the transport maps it to the queue's
    /// MSI-X vector or to INTx + ISR).
    pub interrupt: Arc<dyn QueueInterrupt>,
    /// The queues as the driver set them up, with the eventfd of each queue's notifications.
    pub queues: Vec<(Queue, EventFd)>,
    pub features: u64,
}

/// Interrupts by queue index, and the configuration-change interrupt.
pub trait QueueInterrupt: Send + Sync {
    fn queue(&self, index: usize);
    fn config(&self);
}

/// A handle to a device's running worker: stops it and gets the queues back.
pub trait Worker: Send {
    /// Stops the worker thread and waits for it.
    fn stop(self: Box<Self>);
    /// True once the worker has hit an error and stopped (the device needs a reset).
    fn failed(&self) -> bool;
}

impl Worker for crate::worker::WorkerThread {
    fn stop(mut self: Box<Self>) {
        crate::worker::WorkerThread::stop(&mut self);
    }
    fn failed(&self) -> bool {
        crate::worker::WorkerThread::failed(self)
    }
}

pub trait VirtioDevice: Send {
    /// Device type (1 net, 2 block).
    fn device_type(&self) -> u16;
    /// Maximum size of each queue.
    fn queue_max_sizes(&self) -> Vec<u16>;
    /// Offered feature bits (including VERSION_1).
    fn features(&self) -> u64;
    /// Device-specific configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Starts the worker.
    fn activate(&mut self, a: Activation) -> Result<Box<dyn Worker>, String>;
    /// A short name for logs and exit accounting ("virtio-net").
    fn debug_label(&self) -> &'static str;
}

/// Whether the driver wants an interrupt for what was just added to the used ring. Without
/// EVENT_IDX, virtio-queue always says yes; the driver's VRING_AVAIL_F_NO_INTERRUPT flag
/// (virtio 1.2, 2.7.7) must be honoured here, or a polling driver pays for interrupts it
/// asked not to get.
pub fn should_interrupt(
    q: &mut virtio_queue::Queue,
    mem: &GuestMemoryMmap,
) -> Result<bool, virtio_queue::Error> {
    use virtio_queue::QueueT;
    use vm_memory::Bytes;
    let wanted = q.needs_notification(mem)?;
    if !wanted || q.event_idx_enabled() {
        return Ok(wanted);
    }
    let flags: u16 = mem
        .read_obj(vm_memory::GuestAddress(q.avail_ring()))
        .map_err(virtio_queue::Error::GuestMemory)?;
    Ok(u16::from_le(flags) & 1 == 0)
}

/// Re-enables the driver's notifications after a drain and says whether chains are waiting
/// still. An available index more than the queue's size ahead of the device is a broken ring
/// (a driver never has more than `size` buffers outstanding), not more work:
/// `pop_descriptor_chain` yields nothing for it while `enable_notification` keeps reporting
/// it, so a worker looping on the two would spin forever on a hostile driver's ring (found by
/// the virtio_blk and virtio_net fuzz targets). Such a ring is an error; the worker stops.
pub fn rearm(
    q: &mut virtio_queue::Queue,
    mem: &GuestMemoryMmap,
) -> Result<bool, virtio_queue::Error> {
    use virtio_queue::{QueueOwnedT, QueueT};
    if !q.enable_notification(mem)? {
        return Ok(false);
    }
    // Err(InvalidAvailRingIndex) for a broken ring; consumes nothing otherwise.
    q.iter(mem)?;
    Ok(true)
}

/// Reads `data.len()` bytes at `offset` of a device's configuration structure `bytes`, zero
/// past its end. The device-configuration capability advertises a whole window, longer than
/// any structure; virtio 1.2 (4.1.4.6) leaves the bytes past the structure undefined, and we
/// read them as the reserved tail of a zero-initialised structure. Unmapped bus
/// addresses, unlike these, read as all ones.
pub fn read_config_bytes(bytes: &[u8], offset: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(i))
            .and_then(|o| bytes.get(o))
            .copied()
            .unwrap_or(0);
    }
}

#[cfg(test)]
mod tests {
    use super::read_config_bytes;

    #[test]
    fn config_reads_past_the_structure_are_zero() {
        let config = [1u8, 2, 3, 4];
        let mut inside = [0xaa; 2];
        let mut straddling = [0xaa; 4];
        let mut beyond = [0xaa; 2];
        let mut huge_offset = [0xaa; 1];

        read_config_bytes(&config, 1, &mut inside);
        read_config_bytes(&config, 2, &mut straddling);
        read_config_bytes(&config, 0x800, &mut beyond);
        read_config_bytes(&config, u64::MAX, &mut huge_offset);

        assert_eq!(inside, [2, 3]);
        assert_eq!(straddling, [3, 4, 0, 0]);
        assert_eq!(beyond, [0, 0]);
        assert_eq!(huge_offset, [0]);
    }
}
