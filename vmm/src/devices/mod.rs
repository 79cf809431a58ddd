//! Devices on the port-I/O and MMIO buses.

pub mod debug_exit;
pub mod e1000;
pub mod ide;
pub mod platform;
pub mod serial;

/// Operation counters a device keeps for the harness (requests, frames, bytes, kicks), read
/// at any time from any thread.
pub trait Counters: Send + Sync {
    fn snapshot(&self) -> Vec<(&'static str, u64)>;
}
