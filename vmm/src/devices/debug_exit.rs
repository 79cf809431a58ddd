//! QEMU's isa-debug-exit device (`-device isa-debug-exit,iobase=0xf4,iosize=4`): a write ends
//! the VM. vmbench implements it so the probe ends the same way under both engines.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Instant;

use crate::bus::{Access, BusDevice};
use crate::event::Event;

pub struct DebugExit {
    events: Sender<Event>,
    stop: Arc<AtomicBool>,
}

impl DebugExit {
    pub fn new(events: Sender<Event>, stop: Arc<AtomicBool>) -> Self {
        DebugExit { events, stop }
    }
}

impl BusDevice for DebugExit {
    fn debug_label(&self) -> &'static str {
        "debug-exit"
    }
    fn read(&mut self, _: Access, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, _: Access, data: &[u8]) {
        let mut v = [0u8; 4];
        let n = data.len().min(4);
        v[..n].copy_from_slice(&data[..n]);
        let code = u32::from_le_bytes(v);
        // Stop first, so the writing vCPU does not re-enter the guest.
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.events.send(Event::Exit {
            code,
            at: Instant::now(),
        });
    }
}
