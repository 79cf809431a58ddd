//! How the INTx devices (e1000, IDE) raise their level-triggered line, behind a small trait so
//! device logic is testable without KVM. Virtio devices raise theirs per queue, through
//! [`crate::virtio::QueueInterrupt`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use kvm_ioctls::VmFd;

/// A level-triggered INTx line (e1000, IDE).
pub trait IrqLine: Send + Sync {
    fn set_level(&self, high: bool);
}

/// An INTx line wired to a GSI of KVM's in-kernel IOAPIC/PIC.
pub struct KvmIrqLine {
    pub vm: Arc<VmFd>,
    pub gsi: u32,
}

impl IrqLine for KvmIrqLine {
    fn set_level(&self, high: bool) {
        if let Err(e) = self.vm.set_irq_line(self.gsi, high) {
            log::warn!("cannot set IRQ line {}: {e}", self.gsi);
        }
    }
}

/// Records what devices did to a line, for tests.
#[derive(Default)]
pub struct TestIrqLine {
    pub level: AtomicBool,
    pub raised: AtomicU64,
}

impl IrqLine for TestIrqLine {
    fn set_level(&self, high: bool) {
        if high && !self.level.swap(true, Ordering::SeqCst) {
            self.raised.fetch_add(1, Ordering::SeqCst);
        } else if !high {
            self.level.store(false, Ordering::SeqCst);
        }
    }
}
