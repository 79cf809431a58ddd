//! Port-I/O and MMIO buses: devices register address ranges, the vCPU loop dispatches exits to
//! them. One `Bus` type serves both address spaces; unmapped reads return all ones, as a real
//! bus with nothing answering does.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};

use crate::exits::{DeviceId, ExitStats};

/// One guest access as a device sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// Offset from the start of the range the device registered.
    pub offset: u64,
    /// Absolute guest address (port number or guest-physical address).
    pub addr: u64,
    /// Index of the vCPU that made the access.
    pub vcpu: usize,
}

/// A device on a bus. Called synchronously from the vCPU thread that trapped.
pub trait BusDevice: Send {
    /// The device's name in logs, errors and the exit accounting ("serial", "virtio-net").
    fn debug_label(&self) -> &'static str;
    fn read(&mut self, a: Access, data: &mut [u8]);
    fn write(&mut self, a: Access, data: &[u8]);
}

/// Shared handle to a device; the same device may sit on several ranges (an MMIO BAR and an
/// I/O BAR, for example).
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// A device ready to go on a bus: its handle with the label and accounting id it carries on
/// every range it is registered for. Cloning it clones an `Arc`, nothing more.
#[derive(Clone)]
pub struct Attached {
    label: &'static str,
    id: DeviceId,
    device: SharedDevice,
}

impl Attached {
    /// Gives `device` its accounting id (devices with the same label share one).
    pub fn new<T: BusDevice + 'static>(exits: &ExitStats, device: Arc<Mutex<T>>) -> Self {
        let label = device
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .debug_label();
        Attached {
            label,
            id: exits.register(label),
            device,
        }
    }

    pub fn label(&self) -> &'static str {
        self.label
    }

    pub fn id(&self) -> DeviceId {
        self.id
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("empty range at {base:#x} for {name}")]
    EmptyRange { base: u64, name: &'static str },
    #[error(
        "range {base:#x}+{len:#x} for {name} overlaps {other} at {other_base:#x}+{other_len:#x}"
    )]
    Overlap {
        base: u64,
        len: u64,
        name: &'static str,
        other: &'static str,
        other_base: u64,
        other_len: u64,
    },
    #[error("no device registered at {0:#x}")]
    NotRegistered(u64),
}

struct Entry {
    len: u64,
    dev: Attached,
}

/// What a dispatch hit: the device's accounting id, or nothing (unmapped).
pub type Hit = Option<DeviceId>;

/// An address space (port I/O or MMIO).
pub struct Bus {
    kind: &'static str,
    ranges: RwLock<BTreeMap<u64, Entry>>,
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ranges = self.ranges.read().unwrap_or_else(|e| e.into_inner());
        let mut l = f.debug_map();
        for (base, e) in ranges.iter() {
            l.entry(&format_args!("{base:#x}+{:#x}", e.len), &e.dev.label);
        }
        l.finish()
    }
}

impl Bus {
    pub fn new(kind: &'static str) -> Self {
        Bus {
            kind,
            ranges: RwLock::new(BTreeMap::new()),
        }
    }

    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// Registers `dev` for `[base, base + len)`. Overlapping an existing range is refused.
    pub fn insert(&self, base: u64, len: u64, dev: &Attached) -> Result<(), Error> {
        if len == 0 || base.checked_add(len - 1).is_none() {
            return Err(Error::EmptyRange {
                base,
                name: dev.label,
            });
        }
        let mut ranges = self.ranges.write().unwrap_or_else(|e| e.into_inner());
        let end = base + (len - 1);
        // The only candidates for overlap are the last range starting at or before `end`.
        if let Some((&other_base, other)) = ranges.range(..=end).next_back() {
            if other_base + (other.len - 1) >= base {
                return Err(Error::Overlap {
                    base,
                    len,
                    name: dev.label,
                    other: other.dev.label,
                    other_base,
                    other_len: other.len,
                });
            }
        }
        ranges.insert(
            base,
            Entry {
                len,
                dev: dev.clone(),
            },
        );
        Ok(())
    }

    /// Removes the range starting at `base`.
    pub fn remove(&self, base: u64) -> Result<(), Error> {
        let mut ranges = self.ranges.write().unwrap_or_else(|e| e.into_inner());
        ranges
            .remove(&base)
            .map(|_| ())
            .ok_or(Error::NotRegistered(base))
    }

    /// The device at `addr`: the offset into its range, its id, and its handle. The handle is
    /// cloned (an `Arc`, no allocation) so that the device runs without the bus lock held: a
    /// PCI config write that moves a BAR re-enters the bus to map it.
    fn lookup(&self, addr: u64) -> Option<(u64, DeviceId, SharedDevice)> {
        let ranges = self.ranges.read().unwrap_or_else(|e| e.into_inner());
        let (&base, e) = ranges.range(..=addr).next_back()?;
        (addr - base < e.len).then(|| (addr - base, e.dev.id, e.dev.device.clone()))
    }

    /// Dispatches a read; unmapped addresses read as all ones.
    pub fn read(&self, addr: u64, vcpu: usize, data: &mut [u8]) -> Hit {
        match self.lookup(addr) {
            Some((offset, id, device)) => {
                let a = Access { offset, addr, vcpu };
                device
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .read(a, data);
                Some(id)
            }
            None => {
                data.fill(0xff);
                None
            }
        }
    }

    /// Dispatches a write; writes to unmapped addresses are dropped.
    pub fn write(&self, addr: u64, vcpu: usize, data: &[u8]) -> Hit {
        let (offset, id, device) = self.lookup(addr)?;
        let a = Access { offset, addr, vcpu };
        device
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write(a, data);
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Remembers the last access and answers reads with the low byte of the offset.
    #[derive(Default)]
    struct Probe {
        label: &'static str,
        last: Option<(Access, Vec<u8>)>,
    }

    impl BusDevice for Probe {
        fn debug_label(&self) -> &'static str {
            self.label
        }
        fn read(&mut self, a: Access, data: &mut [u8]) {
            data.fill(a.offset as u8);
            self.last = Some((a, data.to_vec()));
        }
        fn write(&mut self, a: Access, data: &[u8]) {
            self.last = Some((a, data.to_vec()));
        }
    }

    fn dev(exits: &ExitStats, label: &'static str) -> (Arc<Mutex<Probe>>, Attached) {
        let p = Arc::new(Mutex::new(Probe { label, last: None }));
        let attached = Attached::new(exits, p.clone());
        (p, attached)
    }

    #[test]
    fn overlapping_ranges_are_refused() {
        let exits = ExitStats::new(1);
        let bus = Bus::new("pio");
        let (_, a) = dev(&exits, "serial");
        let (_, b) = dev(&exits, "other");
        bus.insert(0x3f8, 8, &a).unwrap();

        // Overlaps at the start, at the end, inside, and around.
        for (base, len) in [(0x3f0, 9), (0x3ff, 1), (0x3fa, 2), (0x3f0, 0x20)] {
            let err = bus.insert(base, len, &b);
            assert!(
                matches!(
                    err,
                    Err(Error::Overlap {
                        other: "serial",
                        name: "other",
                        ..
                    })
                ),
                "{base:#x}+{len:#x}: {err:?}"
            );
        }
        // Adjacent ranges are fine on both sides.
        bus.insert(0x3f0, 8, &b).unwrap();
        bus.insert(0x400, 1, &b).unwrap();
    }

    #[test]
    fn empty_and_wrapping_ranges_are_refused() {
        let exits = ExitStats::new(1);
        let bus = Bus::new("mmio");
        let (_, a) = dev(&exits, "x");
        assert!(bus.insert(0x1000, 0, &a).is_err());
        assert!(bus.insert(u64::MAX, 2, &a).is_err());
    }

    #[test]
    fn a_device_carries_its_label_and_id_and_shares_the_id_by_label() {
        let exits = ExitStats::new(1);
        let (_, a) = dev(&exits, "calibration");
        let (_, b) = dev(&exits, "serial");
        let (_, c) = dev(&exits, "calibration");

        assert_eq!((a.label(), b.label()), ("calibration", "serial"));
        assert_ne!(a.id(), b.id());
        assert_eq!(a.id(), c.id());
        exits.record(0, crate::exits::Reason::PioOut, 0, Some(a.id()));
        exits.record(0, crate::exits::Reason::PioOut, 0, Some(c.id()));
        let by_device = &exits.snapshot().vcpus[0].by_device;
        assert_eq!(by_device.get("calibration"), Some(&2));
    }

    #[test]
    fn dispatch_by_address_gives_offset_vcpu_and_id() {
        let exits = ExitStats::new(2);
        let bus = Bus::new("mmio");
        let (p1, d1) = dev(&exits, "one");
        let (p2, d2) = dev(&exits, "two");
        bus.insert(0x1000, 0x100, &d1).unwrap();
        bus.insert(0x2000, 0x100, &d2).unwrap();

        let mut data = [0u8; 4];
        let hit = bus.read(0x2010, 1, &mut data);
        bus.write(0x10ff, 0, &[0xaa]);

        assert_eq!(hit, Some(d2.id()));
        assert_eq!(data, [0x10; 4]);
        let (a, _) = p2.lock().unwrap().last.clone().unwrap();
        assert_eq!(
            a,
            Access {
                offset: 0x10,
                addr: 0x2010,
                vcpu: 1
            }
        );
        let (a, bytes) = p1.lock().unwrap().last.clone().unwrap();
        assert_eq!((a.offset, a.vcpu, bytes), (0xff, 0, vec![0xaa]));
    }

    #[test]
    fn unmapped_reads_are_all_ones_and_writes_dropped() {
        let exits = ExitStats::new(1);
        let bus = Bus::new("pio");
        let (p, d) = dev(&exits, "dev");
        bus.insert(0x100, 4, &d).unwrap();

        let mut data = [0u8; 4];
        assert_eq!(bus.read(0x104, 0, &mut data), None);
        assert_eq!(bus.write(0xff, 0, &[1]), None);

        assert_eq!(data, [0xff; 4]);
        assert!(p.lock().unwrap().last.is_none());
    }

    #[test]
    fn removed_range_no_longer_answers() {
        let exits = ExitStats::new(1);
        let bus = Bus::new("mmio");
        let (_, d) = dev(&exits, "bar");
        bus.insert(0x1000, 0x10, &d).unwrap();
        bus.remove(0x1000).unwrap();
        let mut data = [0u8; 1];
        assert_eq!(bus.read(0x1000, 0, &mut data), None);
        assert_eq!(bus.remove(0x1000), Err(Error::NotRegistered(0x1000)));
        // And the range can be taken again (a BAR moved back).
        bus.insert(0x1000, 0x10, &d).unwrap();
    }
}
