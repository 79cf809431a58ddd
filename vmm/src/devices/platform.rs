//! vmbench's side channels to the probe, which are not devices under test: the entry mark (each
//! vCPU's first instruction writes it), the mailbox doorbell (one exit delivers a whole record
//! from the vCPU's mailbox page, where the serial port would take one exit per byte), and the
//! calibration targets that answer and do nothing (one exit round trip each).

use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Instant;

use probe_abi::layout::{MAILBOX, MAILBOX_SIZE};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::bus::{Access, BusDevice};
use crate::event::{Counters, Event};
use crate::exits::ExitStats;

pub struct EntryMark {
    pub events: Sender<Event>,
}

impl BusDevice for EntryMark {
    fn debug_label(&self) -> &'static str {
        "entry-mark"
    }
    fn read(&mut self, _: Access, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&mut self, a: Access, _: &[u8]) {
        let _ = self.events.send(Event::Entry {
            vcpu: a.vcpu,
            at: Instant::now(),
        });
    }
}

/// Where the counters a record carries are read: the exit counts, KVM's statistics and the
/// devices' counters (the last two set once the vCPUs and devices exist).
#[derive(Clone)]
pub struct Meters {
    pub exits: Arc<ExitStats>,
    pub kvm_stats: Arc<std::sync::OnceLock<Vec<crate::kvm::stats::VcpuStats>>>,
    pub device_counters: crate::counters::LateCounters,
}

impl Meters {
    pub fn read(&self) -> Counters {
        Counters {
            exits: self.exits.snapshot(),
            cpu: crate::event::CpuTime::now(),
            kvm: self
                .kvm_stats
                .get()
                .map(|s| crate::kvm::stats::sum(s))
                .unwrap_or_default(),
            devices: self
                .device_counters
                .get()
                .map(|c| crate::counters::snapshot_all(c))
                .unwrap_or_default(),
        }
    }
}

pub struct Mailbox {
    pub mem: GuestMemoryMmap,
    pub meters: Meters,
    pub events: Sender<Event>,
    pub vcpus: usize,
}

impl Mailbox {
    /// Reads the record vCPU `vcpu` left in its page; the guest chooses `len`, so it is bounded.
    fn take(&self, vcpu: usize, len: u64) -> Option<String> {
        if vcpu >= self.vcpus {
            return None;
        }
        let len = len.min(MAILBOX_SIZE) as usize;
        let mut buf = vec![0u8; len];
        let page = MAILBOX + vcpu as u64 * MAILBOX_SIZE;
        self.mem.read_slice(&mut buf, GuestAddress(page)).ok()?;
        Some(String::from_utf8_lossy(&buf).into_owned())
    }
}

impl BusDevice for Mailbox {
    fn debug_label(&self) -> &'static str {
        "mailbox"
    }
    fn read(&mut self, _: Access, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, a: Access, data: &[u8]) {
        let mut v = [0u8; 8];
        let n = data.len().min(8);
        v[..n].copy_from_slice(&data[..n]);
        let at = Instant::now();
        if let Some(text) = self.take(a.vcpu, u64::from_le_bytes(v)) {
            let _ = self.events.send(Event::Record {
                vcpu: a.vcpu,
                text,
                at,
                counters: Box::new(self.meters.read()),
            });
        }
    }
}

/// Answers every access with zeroes: the cheapest possible exit to user space.
pub struct Null;

impl BusDevice for Null {
    fn debug_label(&self) -> &'static str {
        "calibration"
    }
    fn read(&mut self, _: Access, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&mut self, _: Access, _: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    #[test]
    fn doorbell_delivers_the_vcpus_page_bounded_by_the_page_size() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        mem.write_slice(b"@vmb ready", GuestAddress(MAILBOX + MAILBOX_SIZE))
            .unwrap();
        let (tx, rx) = channel();
        let mut mb = Mailbox {
            mem,
            meters: Meters {
                exits: Arc::new(ExitStats::new(2)),
                kvm_stats: Arc::default(),
                device_counters: Arc::default(),
            },
            events: tx,
            vcpus: 2,
        };
        let a = |vcpu| Access {
            offset: 0,
            addr: 0,
            vcpu,
        };

        mb.write(a(1), &10u32.to_le_bytes());
        mb.write(a(0), &u32::MAX.to_le_bytes()); // longer than a page: cut to the page
        mb.write(a(7), &4u32.to_le_bytes()); // no such vCPU: ignored

        let texts: Vec<(usize, usize)> = rx
            .try_iter()
            .map(|e| match e {
                Event::Record { vcpu, text, .. } => (vcpu, text.len()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(texts, [(1, 10), (0, MAILBOX_SIZE as usize)]);
    }
}
