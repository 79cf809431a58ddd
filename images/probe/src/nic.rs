//! The NIC trait the network workloads drive, below both drivers (virtio-net in `net.rs`,
//! the e1000 in `e1000.rs`) so neither imports the other's module.

/// What the workloads need from a NIC driver.
pub trait Nic {
    /// The `nic=` name of the driver.
    fn name(&self) -> &'static str;
    fn mac(&self) -> [u8; 6];
    /// Copies a frame into a free TX buffer and queues it; false if the ring is full (the
    /// caller reclaims and retries).
    fn queue_tx(&mut self, frame: &[u8]) -> bool;
    /// Makes queued frames visible to the device (one doorbell for the batch; nothing left
    /// to do for a profile that rings it per frame).
    fn flush_tx(&mut self);
    /// Reclaims sent buffers; returns how many.
    fn reclaim_tx(&mut self) -> usize;
    /// Calls `f` with each received frame (no more than `max`), then gives the buffers back.
    fn poll_rx(&mut self, max: usize, f: &mut dyn FnMut(&[u8])) -> usize;
    /// Queue notifications written so far, for a NIC whose doorbells are not register exits
    /// the VMM counts (virtio's notifies may be suppressed by EVENT_IDX).
    fn kicks(&self) -> Option<u64> {
        None
    }
    /// Called when a receive poll found nothing and the workload has nothing else to do
    /// until a frame arrives: a driver that takes interrupts (virtio-net, `profile=linux`)
    /// waits for the receive interrupt, up to `deadline` (TSC), as an idle Linux would; one
    /// that polls returns at once and is polled again.
    fn wait_rx(&mut self, _deadline: u64) {}
    /// The same when the transmit ring is full: wait for the transmit interrupt.
    fn wait_tx(&mut self, _deadline: u64) {}
}
