//! The i8042 keyboard controller, only as far as a Linux guest without ACPI needs it:
//! vm-superio's model, whose CPU-reset command (0xFE to port 0x64) is how Linux ends the
//! machine (`reboot=k`, and after its power-off: docs/linux-boot.md). The reset stops the vCPUs
//! and tells the owner.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Instant;

use vm_superio::{I8042Device, Trigger};

use crate::bus::{Access, BusDevice};
use crate::event::Event;

/// The controller's ports: 0x60 (data) to 0x64 (command/status).
pub const BASE: u64 = 0x60;
pub const LEN: u64 = 5;

/// Ends the machine when the guest resets it.
pub struct ResetTrigger {
    events: Sender<Event>,
    stop: Arc<AtomicBool>,
}

impl Trigger for ResetTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        // Stop first, so the writing vCPU does not re-enter the guest.
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.events.send(Event::Reset { at: Instant::now() });
        Ok(())
    }
}

pub struct I8042 {
    dev: I8042Device<ResetTrigger>,
}

impl I8042 {
    pub fn new(events: Sender<Event>, stop: Arc<AtomicBool>) -> Self {
        I8042 {
            dev: I8042Device::new(ResetTrigger { events, stop }),
        }
    }
}

impl BusDevice for I8042 {
    fn debug_label(&self) -> &'static str {
        "i8042"
    }

    fn read(&mut self, a: Access, data: &mut [u8]) {
        match (data, u8::try_from(a.offset)) {
            ([b], Ok(off)) => *b = self.dev.read(off),
            (data, _) => data.fill(0xff),
        }
    }

    fn write(&mut self, a: Access, data: &[u8]) {
        if let (&[b], Ok(off)) = (data, u8::try_from(a.offset)) {
            // A reset that cannot be delivered changes nothing for the guest.
            let _ = self.dev.write(off, b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    #[test]
    fn the_reset_command_stops_the_machine_and_says_so() {
        let (tx, rx) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let mut kbd = I8042::new(tx, stop.clone());
        let at = |offset| Access {
            offset,
            addr: BASE + offset,
            vcpu: 0,
        };

        let mut status = [0u8];
        kbd.read(at(4), &mut status);
        kbd.write(at(4), &[0xfe]);

        assert_eq!(status[0] & 0x2, 0, "input buffer empty: Linux may write");
        assert!(stop.load(Ordering::SeqCst));
        assert!(matches!(rx.try_recv(), Ok(Event::Reset { .. })));
    }
}
