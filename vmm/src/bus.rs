//! Port-I/O and MMIO buses: devices register address ranges, the vCPU loop dispatches exits to
//! them. One `Bus` type serves both address spaces; unmapped reads return all ones, as a real
//! bus with nothing answering does.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};

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
    fn read(&mut self, a: Access, data: &mut [u8]);
    fn write(&mut self, a: Access, data: &[u8]);
}

/// Shared handle to a device; the same device may sit on several ranges (an MMIO BAR and an
/// I/O BAR, for example).
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Identifies a device for exit accounting. Assigned by [`crate::exits::ExitStats::register`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(pub usize);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("empty range at {base:#x} for {name}")]
    EmptyRange { base: u64, name: String },
    #[error(
        "range {base:#x}+{len:#x} for {name} overlaps {other} at {other_base:#x}+{other_len:#x}"
    )]
    Overlap {
        base: u64,
        len: u64,
        name: String,
        other: String,
        other_base: u64,
        other_len: u64,
    },
    #[error("no device registered at {0:#x}")]
    NotRegistered(u64),
}

#[derive(Clone)]
struct Entry {
    len: u64,
    name: String,
    id: DeviceId,
    device: SharedDevice,
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
            l.entry(&format_args!("{base:#x}+{:#x}", e.len), &e.name);
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

    /// Registers `device` for `[base, base + len)`. Overlapping an existing range is refused.
    pub fn insert(
        &self,
        base: u64,
        len: u64,
        name: &str,
        id: DeviceId,
        device: SharedDevice,
    ) -> Result<(), Error> {
        if len == 0 || base.checked_add(len - 1).is_none() {
            return Err(Error::EmptyRange {
                base,
                name: name.to_string(),
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
                    name: name.to_string(),
                    other: other.name.clone(),
                    other_base,
                    other_len: other.len,
                });
            }
        }
        ranges.insert(
            base,
            Entry {
                len,
                name: name.to_string(),
                id,
                device,
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

    fn lookup(&self, addr: u64) -> Option<(u64, Entry)> {
        let ranges = self.ranges.read().unwrap_or_else(|e| e.into_inner());
        let (&base, e) = ranges.range(..=addr).next_back()?;
        (addr - base < e.len).then(|| (base, e.clone()))
    }

    /// Dispatches a read; unmapped addresses read as all ones.
    pub fn read(&self, addr: u64, vcpu: usize, data: &mut [u8]) -> Hit {
        match self.lookup(addr) {
            Some((base, e)) => {
                let a = Access {
                    offset: addr - base,
                    addr,
                    vcpu,
                };
                e.device
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .read(a, data);
                Some(e.id)
            }
            None => {
                data.fill(0xff);
                None
            }
        }
    }

    /// Dispatches a write; writes to unmapped addresses are dropped.
    pub fn write(&self, addr: u64, vcpu: usize, data: &[u8]) -> Hit {
        let (base, e) = self.lookup(addr)?;
        let a = Access {
            offset: addr - base,
            addr,
            vcpu,
        };
        e.device
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write(a, data);
        Some(e.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Remembers the last access and answers reads with the low byte of the offset.
    #[derive(Default)]
    struct Probe {
        last: Option<(Access, Vec<u8>)>,
    }

    impl BusDevice for Probe {
        fn read(&mut self, a: Access, data: &mut [u8]) {
            data.fill(a.offset as u8);
            self.last = Some((a, data.to_vec()));
        }
        fn write(&mut self, a: Access, data: &[u8]) {
            self.last = Some((a, data.to_vec()));
        }
    }

    fn dev() -> (Arc<Mutex<Probe>>, SharedDevice) {
        let p = Arc::new(Mutex::new(Probe::default()));
        let shared: SharedDevice = p.clone();
        (p, shared)
    }

    #[test]
    fn overlapping_ranges_are_refused() {
        let bus = Bus::new("pio");
        let (_, a) = dev();
        let (_, b) = dev();
        bus.insert(0x3f8, 8, "serial", DeviceId(0), a.clone())
            .unwrap();

        // Overlaps at the start, at the end, inside, and around.
        for (base, len) in [(0x3f0, 9), (0x3ff, 1), (0x3fa, 2), (0x3f0, 0x20)] {
            let err = bus.insert(base, len, "other", DeviceId(1), b.clone());
            assert!(
                matches!(err, Err(Error::Overlap { ref other, .. }) if other == "serial"),
                "{base:#x}+{len:#x}: {err:?}"
            );
        }
        // Adjacent ranges are fine on both sides.
        bus.insert(0x3f0, 8, "below", DeviceId(1), b.clone())
            .unwrap();
        bus.insert(0x400, 1, "above", DeviceId(2), b).unwrap();
    }

    #[test]
    fn empty_and_wrapping_ranges_are_refused() {
        let bus = Bus::new("mmio");
        let (_, a) = dev();
        assert!(bus.insert(0x1000, 0, "x", DeviceId(0), a.clone()).is_err());
        assert!(bus.insert(u64::MAX, 2, "x", DeviceId(0), a).is_err());
    }

    #[test]
    fn dispatch_by_address_gives_offset_and_vcpu() {
        let bus = Bus::new("mmio");
        let (p1, d1) = dev();
        let (p2, d2) = dev();
        bus.insert(0x1000, 0x100, "one", DeviceId(7), d1).unwrap();
        bus.insert(0x2000, 0x100, "two", DeviceId(8), d2).unwrap();

        let mut data = [0u8; 4];
        let hit = bus.read(0x2010, 1, &mut data);
        bus.write(0x10ff, 0, &[0xaa]);

        assert_eq!(hit, Some(DeviceId(8)));
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
        let bus = Bus::new("pio");
        let (p, d) = dev();
        bus.insert(0x100, 4, "dev", DeviceId(0), d).unwrap();

        let mut data = [0u8; 4];
        assert_eq!(bus.read(0x104, 0, &mut data), None);
        assert_eq!(bus.write(0xff, 0, &[1]), None);

        assert_eq!(data, [0xff; 4]);
        assert!(p.lock().unwrap().last.is_none());
    }

    #[test]
    fn removed_range_no_longer_answers() {
        let bus = Bus::new("mmio");
        let (_, d) = dev();
        bus.insert(0x1000, 0x10, "bar", DeviceId(0), d.clone())
            .unwrap();
        bus.remove(0x1000).unwrap();
        let mut data = [0u8; 1];
        assert_eq!(bus.read(0x1000, 0, &mut data), None);
        assert_eq!(bus.remove(0x1000), Err(Error::NotRegistered(0x1000)));
        // And the range can be taken again (a BAR moved back).
        bus.insert(0x1000, 0x10, "bar", DeviceId(0), d).unwrap();
    }
}
