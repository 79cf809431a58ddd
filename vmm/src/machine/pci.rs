//! The bus owner's side of PCI: adding a function to the root, and applying the BAR moves its
//! configuration writes report ([`ConfigChange`]) to the buses and to the function's
//! ioeventfds. Devices never reach into the buses themselves.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use vmm_sys_util::eventfd::EventFd;

use crate::bus::{Attached, Bus};
use crate::exits::ExitStats;
use crate::pci::{Bdf, ConfigChange, PciFunction, PciRoot, SharedFunction};

/// Registers and removes ioeventfds at guest-physical addresses: KVM in a machine, a recorder
/// in the tests.
pub trait IoEvents: Send + Sync {
    fn register(&self, fd: &EventFd, addr: u64) -> Result<(), kvm_ioctls::Error>;
    fn unregister(&self, fd: &EventFd, addr: u64) -> Result<(), kvm_ioctls::Error>;
}

impl IoEvents for VmFd {
    fn register(&self, fd: &EventFd, addr: u64) -> Result<(), kvm_ioctls::Error> {
        self.register_ioevent(fd, &IoEventAddress::Mmio(addr), NoDatamatch)
    }
    fn unregister(&self, fd: &EventFd, addr: u64) -> Result<(), kvm_ioctls::Error> {
        self.unregister_ioevent(fd, &IoEventAddress::Mmio(addr), NoDatamatch)
    }
}

/// A PCI function as the bus owner knows it: on the buses, and in configuration space.
struct Function {
    dev: Attached,
    config: SharedFunction,
}

/// Applies BAR moves: (un)registers the range on its bus and the function's ioeventfds.
pub struct BarMapper {
    ioevents: Arc<dyn IoEvents>,
    // Weak: the buses own the PCI root, which owns this mapper; strong references would
    // keep every device (and a TAP's namespace) alive after the machine is gone.
    pio: Weak<Bus>,
    mmio: Weak<Bus>,
    functions: BTreeMap<Bdf, Function>,
}

impl BarMapper {
    pub fn new(ioevents: Arc<dyn IoEvents>, pio: &Arc<Bus>, mmio: &Arc<Bus>) -> Self {
        BarMapper {
            ioevents,
            pio: Arc::downgrade(pio),
            mmio: Arc::downgrade(mmio),
            functions: BTreeMap::new(),
        }
    }

    /// Puts a function on the PCI bus at `bdf`; its BARs are mapped when the guest enables
    /// decoding.
    pub fn add<T: PciFunction + 'static>(
        &mut self,
        root: &mut PciRoot,
        exits: &ExitStats,
        bdf: Bdf,
        dev: Arc<Mutex<T>>,
    ) {
        let config: SharedFunction = dev.clone();
        root.add(bdf, config.clone());
        let dev = Attached::new(exits, dev);
        self.functions.insert(bdf, Function { dev, config });
    }

    /// Applies what a configuration write of function `bdf` changed.
    pub fn apply(&self, bdf: Bdf, change: ConfigChange) {
        let Some(f) = self.functions.get(&bdf) else {
            return;
        };
        let (Some(pio), Some(mmio)) = (self.pio.upgrade(), self.mmio.upgrade()) else {
            return;
        };
        let events = f
            .config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ioevents();
        let bar_events = |bar: usize, io: bool| {
            events
                .iter()
                .filter(move |(b, _, _)| *b == bar && !io)
                .map(|(_, off, fd)| (*off, fd))
        };
        for r in &change.unmap {
            let bus = if r.io { &pio } else { &mmio };
            let _ = bus.remove(r.base);
            for (off, fd) in bar_events(r.bar, r.io) {
                let _ = self.ioevents.unregister(fd, r.base + off);
            }
        }
        for r in &change.map {
            let bus = if r.io { &pio } else { &mmio };
            if let Err(err) = bus.insert(r.base, r.len, &f.dev) {
                // The guest placed a BAR over another range; real hardware would decode both
                // and conflict. The BAR stays unmapped, which the guest sees as all ones.
                log::warn!("{bdf} BAR {} not mapped: {err}", r.bar);
                continue;
            }
            for (off, fd) in bar_events(r.bar, r.io) {
                if let Err(err) = self.ioevents.register(fd, r.base + off) {
                    log::warn!("{bdf} notify ioeventfd at {:#x}: {err}", r.base + off);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{Access, BusDevice};
    use crate::pci::BarRange;

    /// A function with one MMIO BAR (0) whose offset 0x10 is backed by an ioeventfd, and one
    /// I/O BAR (1); reads answer 0x5a.
    struct Function0 {
        notify: EventFd,
    }

    impl BusDevice for Function0 {
        fn debug_label(&self) -> &'static str {
            "fn0"
        }
        fn read(&mut self, _: Access, data: &mut [u8]) {
            data.fill(0x5a);
        }
        fn write(&mut self, _: Access, _: &[u8]) {}
    }

    impl PciFunction for Function0 {
        fn config_read(&self, _: usize) -> u32 {
            0
        }
        fn config_write(&mut self, _: usize, _: u64, _: &[u8]) -> ConfigChange {
            ConfigChange::default()
        }
        fn ioevents(&self) -> Vec<(usize, u64, EventFd)> {
            vec![(0, 0x10, self.notify.try_clone().unwrap())]
        }
    }

    /// What was registered where: (address, registered). The function hands out clones of
    /// its eventfd, so the fd numbers differ from call to call.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(u64, bool)>>);

    impl IoEvents for Recorder {
        fn register(&self, _: &EventFd, addr: u64) -> Result<(), kvm_ioctls::Error> {
            self.0.lock().unwrap().push((addr, true));
            Ok(())
        }
        fn unregister(&self, _: &EventFd, addr: u64) -> Result<(), kvm_ioctls::Error> {
            self.0.lock().unwrap().push((addr, false));
            Ok(())
        }
    }

    const BDF: Bdf = Bdf {
        bus: 0,
        dev: 3,
        func: 0,
    };

    struct Fixture {
        pio: Arc<Bus>,
        mmio: Arc<Bus>,
        exits: ExitStats,
        recorder: Arc<Recorder>,
        mapper: BarMapper,
    }

    fn fixture() -> Fixture {
        let pio = Arc::new(Bus::new("pio"));
        let mmio = Arc::new(Bus::new("mmio"));
        let exits = ExitStats::new(1);
        let recorder = Arc::new(Recorder::default());
        let mut mapper = BarMapper::new(recorder.clone(), &pio, &mmio);
        let notify = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let f = Arc::new(Mutex::new(Function0 { notify }));
        mapper.add(&mut PciRoot::new(), &exits, BDF, f);
        Fixture {
            pio,
            mmio,
            exits,
            recorder,
            mapper,
        }
    }

    fn range(bar: usize, base: u64, len: u64, io: bool) -> BarRange {
        BarRange { bar, base, len, io }
    }

    fn read(bus: &Bus, addr: u64) -> (Option<crate::exits::DeviceId>, u8) {
        let mut b = [0u8; 1];
        let hit = bus.read(addr, 0, &mut b);
        (hit, b[0])
    }

    #[test]
    fn a_mapped_memory_bar_answers_and_its_ioeventfd_follows() {
        let f = fixture();
        let mem_bar = range(0, 0xc000_0000, 0x1000, false);

        f.mapper.apply(
            BDF,
            ConfigChange {
                map: vec![mem_bar],
                unmap: vec![],
            },
        );

        let id = f.exits.register("fn0");
        assert_eq!(read(&f.mmio, 0xc000_0fff), (Some(id), 0x5a));
        assert_eq!(read(&f.pio, 0xc000_0000 & 0xffff), (None, 0xff));
        assert_eq!(*f.recorder.0.lock().unwrap(), [(0xc000_0010, true)]);
    }

    #[test]
    fn a_moved_bar_leaves_its_old_place_and_takes_its_ioeventfd_along() {
        let f = fixture();
        let old = range(0, 0xc000_0000, 0x1000, false);
        let new = range(0, 0xd000_0000, 0x1000, false);
        f.mapper.apply(
            BDF,
            ConfigChange {
                map: vec![old],
                unmap: vec![],
            },
        );

        f.mapper.apply(
            BDF,
            ConfigChange {
                map: vec![new],
                unmap: vec![old],
            },
        );

        assert_eq!(read(&f.mmio, 0xc000_0000).0, None);
        assert!(read(&f.mmio, 0xd000_0000).0.is_some());
        assert_eq!(
            *f.recorder.0.lock().unwrap(),
            [
                (0xc000_0010, true),
                (0xc000_0010, false),
                (0xd000_0010, true)
            ]
        );
    }

    #[test]
    fn an_io_bar_goes_on_the_port_bus_without_ioeventfds() {
        let f = fixture();

        f.mapper.apply(
            BDF,
            ConfigChange {
                map: vec![range(1, 0xc040, 0x40, true)],
                unmap: vec![],
            },
        );

        assert_eq!(read(&f.pio, 0xc07f).1, 0x5a);
        assert_eq!(read(&f.mmio, 0xc040).0, None);
        assert!(f.recorder.0.lock().unwrap().is_empty());
    }

    #[test]
    fn a_bar_placed_over_another_device_stays_unmapped() {
        let f = fixture();
        let serial = Arc::new(Mutex::new(crate::devices::platform::Null));
        let other = Attached::new(&f.exits, serial);
        f.pio.insert(0x3f8, 8, &other).unwrap();

        f.mapper.apply(
            BDF,
            ConfigChange {
                map: vec![range(1, 0x3c0, 0x40, true)],
                unmap: vec![],
            },
        );

        assert_eq!(read(&f.pio, 0x3f8), (Some(other.id()), 0));
        assert_eq!(read(&f.pio, 0x3c0).0, None);
    }

    #[test]
    fn changes_of_an_unknown_function_are_ignored() {
        let f = fixture();
        let elsewhere = Bdf {
            bus: 0,
            dev: 9,
            func: 0,
        };

        f.mapper.apply(
            elsewhere,
            ConfigChange {
                map: vec![range(0, 0xc000_0000, 0x1000, false)],
                unmap: vec![],
            },
        );

        assert_eq!(read(&f.mmio, 0xc000_0000).0, None);
        assert!(f.recorder.0.lock().unwrap().is_empty());
    }
}
