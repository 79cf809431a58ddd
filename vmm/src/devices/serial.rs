//! The 16550 UART at COM1 (vm-superio's model), its output cut into lines for the owner, its
//! interrupt line behind an irqfd.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Instant;

use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use super::platform::Meters;
use crate::bus::{Access, BusDevice};
use crate::counters::Counters;
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
    /// Read for each record line, so that a Linux agent's records (which come over the
    /// console) carry the counters a probe's mailbox records carry.
    meters: Option<Meters>,
}

impl LineSink {
    pub fn new(events: Sender<Event>, meters: Option<Meters>) -> Self {
        LineSink {
            events,
            line: Vec::new(),
            meters,
        }
    }

    fn flush_line(&mut self) {
        let at = Instant::now();
        let counters = match &self.meters {
            Some(m) if self.line.starts_with(probe_abi::RECORD_PREFIX.as_bytes()) => {
                Some(Box::new(m.read()))
            }
            _ => None,
        };
        let line = String::from_utf8_lossy(&self.line)
            .trim_end_matches('\r')
            .to_string();
        self.line.clear();
        let _ = self.events.send(Event::Console { line, at, counters });
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
    counters: Arc<SerialCounters>,
}

/// The guest's register accesses, each one exit: a measured window takes the console's
/// exits out by reason with these (`session::window`).
#[derive(Default)]
pub struct SerialCounters {
    pub reads: AtomicU64,
    pub writes: AtomicU64,
}

impl Counters for SerialCounters {
    fn snapshot(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("reads", self.reads.load(Ordering::Relaxed)),
            ("writes", self.writes.load(Ordering::Relaxed)),
        ]
    }
}

impl SerialPort {
    /// A COM1 whose lines go to `events`; with `meters`, its record lines carry the counters
    /// they read.
    pub fn new(irq: EventFd, events: Sender<Event>, meters: Option<Meters>) -> Self {
        SerialPort {
            uart: Serial::new(IrqTrigger(irq), LineSink::new(events, meters)),
            counters: Arc::default(),
        }
    }

    pub fn counters(&self) -> Arc<SerialCounters> {
        self.counters.clone()
    }
}

impl BusDevice for SerialPort {
    fn debug_label(&self) -> &'static str {
        "serial"
    }
    fn read(&mut self, a: Access, data: &mut [u8]) {
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        if let (Some(b), Ok(off)) = (data.first_mut(), u8::try_from(a.offset)) {
            *b = self.uart.read(off);
        }
    }

    fn write(&mut self, a: Access, data: &[u8]) {
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
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
        let mut port = SerialPort::new(EventFd::new(0).unwrap(), tx, None);
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
                Event::Console { line, counters, .. } => {
                    assert!(counters.is_none(), "a port without meters reads none");
                    line
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(lines, ["hello", "second"]);
        assert_eq!(lsr[0] & 0x20, 0x20, "THR empty");
    }

    #[test]
    fn record_lines_carry_the_counters_as_they_were_at_their_newline() {
        use crate::exits::{ExitStats, Reason};
        let (tx, rx) = channel();
        let exits = Arc::new(ExitStats::new(1));
        let serial_id = exits.register("serial");
        let meters = Meters {
            exits: exits.clone(),
            kvm_stats: Arc::default(),
            device_counters: Arc::default(),
        };
        let mut port = SerialPort::new(EventFd::new(0).unwrap(), tx, Some(meters.clone()));
        let list: crate::counters::CounterList = vec![("serial".into(), port.counters())];
        meters.device_counters.set(list).ok().unwrap();
        let a = |offset| Access {
            offset,
            addr: 0x3f8 + offset,
            vcpu: 0,
        };
        let mut lsr = [0u8];
        for line in [&b"[ 1.0] kernel says\n"[..], b"@vmb window-end ops=3\n"] {
            for &b in line {
                // As the VMM's vCPU loop does: the exit is counted, then served.
                exits.record(0, Reason::PioIn, 0x3fd, Some(serial_id));
                port.read(a(5), &mut lsr);
                exits.record(0, Reason::PioOut, 0x3f8, Some(serial_id));
                port.write(a(0), &[b]);
            }
        }
        let events: Vec<_> = rx
            .try_iter()
            .map(|e| match e {
                Event::Console { line, counters, .. } => (line, counters),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(events.len(), 2);
        assert!(events[0].1.is_none(), "not a record: no counters");
        let c = events[1].1.as_ref().expect("a record's counters");
        let n = (b"[ 1.0] kernel says\n".len() + b"@vmb window-end ops=3\n".len()) as u64;
        assert_eq!(c.exits.total().by_device["serial"], 2 * n);
        assert_eq!(c.devices["serial"]["reads"], n);
        assert_eq!(c.devices["serial"]["writes"], n);
    }
}
