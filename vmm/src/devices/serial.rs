//! The 16550 UART at COM1 (vm-superio's model), its output cut into lines for the owner, its
//! interrupt line behind an irqfd.

use std::io;
use std::sync::mpsc::Sender;
use std::time::Instant;

use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::bus::{Access, BusDevice};
use crate::event::Event;

/// Raises the UART's interrupt line through an eventfd registered as an irqfd.
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// Collects console bytes into lines; a line is at most this long before it is cut.
const MAX_LINE: usize = 4096;

pub struct LineSink {
    events: Sender<Event>,
    line: Vec<u8>,
}

impl LineSink {
    pub fn new(events: Sender<Event>) -> Self {
        LineSink {
            events,
            line: Vec::new(),
        }
    }

    fn flush_line(&mut self) {
        let line = String::from_utf8_lossy(&self.line)
            .trim_end_matches('\r')
            .to_string();
        self.line.clear();
        let _ = self.events.send(Event::Console {
            line,
            at: Instant::now(),
        });
    }
}

impl io::Write for LineSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for &b in buf {
            if b == b'\n' {
                self.flush_line();
            } else {
                self.line.push(b);
                if self.line.len() >= MAX_LINE {
                    self.flush_line();
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub struct SerialPort {
    uart: Serial<IrqTrigger, vm_superio::serial::NoEvents, LineSink>,
}

impl SerialPort {
    pub fn new(irq: EventFd, events: Sender<Event>) -> Self {
        SerialPort {
            uart: Serial::new(IrqTrigger(irq), LineSink::new(events)),
        }
    }
}

impl BusDevice for SerialPort {
    fn debug_label(&self) -> &'static str {
        "serial"
    }
    fn read(&mut self, a: Access, data: &mut [u8]) {
        if let (Some(b), Ok(off)) = (data.first_mut(), u8::try_from(a.offset)) {
            *b = self.uart.read(off);
        }
    }

    fn write(&mut self, a: Access, data: &[u8]) {
        if let (Some(&b), Ok(off)) = (data.first(), u8::try_from(a.offset)) {
            // An interrupt that cannot be raised is not the guest's fault; the byte still counts.
            let _ = self.uart.write(off, b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    #[test]
    fn bytes_written_to_thr_come_out_as_lines() {
        let (tx, rx) = channel();
        let mut port = SerialPort::new(EventFd::new(0).unwrap(), tx);
        let a = |offset| Access {
            offset,
            addr: 0x3f8 + offset,
            vcpu: 0,
        };

        for &b in b"hello\r\nsecond\n" {
            port.write(a(0), &[b]);
        }
        let mut lsr = [0u8];
        port.read(a(5), &mut lsr);

        let lines: Vec<String> = rx
            .try_iter()
            .map(|e| match e {
                Event::Console { line, .. } => line,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(lines, ["hello", "second"]);
        assert_eq!(lsr[0] & 0x20, 0x20, "THR empty");
    }
}
