//! The device manager: builds each device a [`MachineConfig`](super::MachineConfig) asks for,
//! with its back-end, interrupts and BARs, and puts it on the buses the one way there is
//! ([`Attached`] + [`Bus::insert`], or [`BarMapper::add`] for a PCI function). One function
//! per device kind; a new kind is a compile error in [`DeviceManager::add_nic`] or
//! [`DeviceManager::add_disk`] until it has one.

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, OnceLock};

use kvm_ioctls::VmFd;
use probe_abi::ports;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::layout::{
    intx_gsi, BarAllocator, CALIB_IOEVENTFD, CALIB_MMIO, CALIB_PORT, COM1_IRQ, DISK_SLOT,
    ENTRY_MARK_PORT, MAILBOX_PORT, NIC_SLOT,
};
use super::pci::{BarMapper, IoEvents};
use super::{DiskConfig, DiskKind, Error, NetBackendKind, NicConfig, NicKind};
use crate::backend::block::open_disk;
use crate::backend::net::peer::{Peer, PeerConfig, DEFAULT_GUEST_IP};
use crate::backend::net::tap::{GuestAddr, Tap, TapOptions};
use crate::backend::net::{BackendCounters, NetBackend};
use crate::bus::{Attached, Bus, BusDevice};
use crate::counters::Counters;
use crate::devices::debug_exit::DebugExit;
use crate::devices::e1000::{self, E1000};
use crate::devices::i8042::{self, I8042};
use crate::devices::ide::{self, Piix};
use crate::devices::platform::{EntryMark, Mailbox, Meters, Null};
use crate::devices::serial::SerialPort;
use crate::event::Event;
use crate::exits::ExitStats;
use crate::interrupt::{IrqLine, KvmIrqLine};
use crate::kvm::irq::GsiRouter;
use crate::kvm::stats::VcpuStats;
use crate::pci::{Bdf, PciRoot};
use crate::virtio::blk::Block;
use crate::virtio::msix::{VectorFd, VirtioIrq};
use crate::virtio::net::Net;
use crate::virtio::pci::VirtioPci;
use crate::virtio::VirtioDevice;
use crate::worker::WorkerThread;

/// What the platform devices report to, besides the buses.
pub struct Platform {
    pub events: Sender<Event>,
    pub stop: Arc<AtomicBool>,
    /// KVM's per-vCPU statistics for the mailbox, set once the vCPUs exist.
    pub kvm_stats: Arc<OnceLock<Vec<VcpuStats>>>,
    /// The devices' counters for the mailbox, set once the devices exist.
    pub device_counters: crate::counters::LateCounters,
    pub vcpus: usize,
}

/// The devices of a machine being built, and what they need from it.
pub struct DeviceManager {
    vm: Arc<VmFd>,
    mem: GuestMemoryMmap,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    exits: Arc<ExitStats>,
    pci: Arc<Mutex<PciRoot>>,
    mapper: BarMapper,
    bars: BarAllocator,
    router: Arc<GsiRouter>,
    counters: Vec<(String, Arc<dyn Counters>)>,
    workers: Vec<WorkerThread>,
}

/// What a machine keeps of its devices once built.
pub struct Devices {
    pub pci: Arc<Mutex<PciRoot>>,
    /// Operation counters by device (or back-end) name.
    pub counters: Vec<(String, Arc<dyn Counters>)>,
    /// Threads that bring the outside world to emulated devices (a NIC's wire).
    pub workers: Vec<WorkerThread>,
}

impl DeviceManager {
    pub fn new(
        vm: &Arc<VmFd>,
        mem: &GuestMemoryMmap,
        pio: &Arc<Bus>,
        mmio: &Arc<Bus>,
        exits: &Arc<ExitStats>,
    ) -> Self {
        let ioevents: Arc<dyn IoEvents> = vm.clone();
        DeviceManager {
            vm: vm.clone(),
            mem: mem.clone(),
            pio: pio.clone(),
            mmio: mmio.clone(),
            exits: exits.clone(),
            pci: Arc::new(Mutex::new(PciRoot::new())),
            mapper: BarMapper::new(ioevents, pio, mmio),
            bars: BarAllocator::default(),
            router: Arc::new(GsiRouter::new(vm.clone())),
            counters: Vec::new(),
            workers: Vec::new(),
        }
    }

    /// Registers `dev` for `[base, base + len)` of `bus`.
    fn insert<T: BusDevice + 'static>(
        &self,
        bus: &Bus,
        base: u64,
        len: u64,
        dev: Arc<Mutex<T>>,
    ) -> Result<Attached, Error> {
        let dev = Attached::new(&self.exits, dev);
        bus.insert(base, len, &dev)
            .map_err(|e| Error::Bus(dev.label(), e))?;
        Ok(dev)
    }

    fn add_pci<T: crate::pci::PciFunction + 'static>(&mut self, slot: u8, dev: Arc<Mutex<T>>) {
        let bdf = Bdf {
            bus: 0,
            dev: slot,
            func: 0,
        };
        let mut root = self.pci.lock().unwrap_or_else(|e| e.into_inner());
        self.mapper.add(&mut root, &self.exits, bdf, dev);
    }

    fn line(&self, gsi: u32) -> Arc<dyn IrqLine> {
        Arc::new(KvmIrqLine {
            vm: self.vm.clone(),
            gsi,
        })
    }

    /// The serial port, isa-debug-exit, the PCI configuration ports and vmbench's side
    /// channels. Returns the eventfd behind the ioeventfd calibration address.
    pub fn add_platform(&mut self, p: Platform) -> Result<EventFd, Error> {
        let serial_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::EventFd)?;
        self.vm
            .register_irqfd(&serial_irq, COM1_IRQ)
            .map_err(Error::Irqfd)?;
        let pio = self.pio.clone();
        let meters = Meters {
            exits: self.exits.clone(),
            kvm_stats: p.kvm_stats,
            device_counters: p.device_counters,
        };
        let serial = SerialPort::new(serial_irq, p.events.clone(), Some(meters.clone()));
        self.counters.push(("serial".into(), serial.counters()));
        self.insert(
            &pio,
            u64::from(ports::COM1),
            8,
            Arc::new(Mutex::new(serial)),
        )?;
        let debug_exit = DebugExit::new(p.events.clone(), p.stop);
        let port = u64::from(ports::DEBUG_EXIT);
        self.insert(&pio, port, 4, Arc::new(Mutex::new(debug_exit)))?;
        let port = u64::from(ports::PCI_CONFIG_ADDRESS);
        self.insert(&pio, port, 8, self.pci.clone())?;
        let mark = EntryMark {
            events: p.events.clone(),
        };
        let port = u64::from(ENTRY_MARK_PORT);
        self.insert(&pio, port, 1, Arc::new(Mutex::new(mark)))?;
        let mailbox = Mailbox {
            mem: self.mem.clone(),
            meters,
            events: p.events,
            vcpus: p.vcpus,
        };
        let port = u64::from(MAILBOX_PORT);
        self.insert(&pio, port, 4, Arc::new(Mutex::new(mailbox)))?;
        let calib = Arc::new(Mutex::new(Null));
        self.insert(&pio, u64::from(CALIB_PORT), 4, calib.clone())?;
        let mmio = self.mmio.clone();
        self.insert(&mmio, CALIB_MMIO, 0x1000, calib)?;
        let ioeventfd = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::EventFd)?;
        IoEvents::register(&*self.vm, &ioeventfd, CALIB_IOEVENTFD)
            .map_err(|e| Error::Kvm(crate::kvm::Error::IoEvent(e)))?;
        Ok(ioeventfd)
    }

    /// What a Linux guest finds on a PC besides the platform: the i8042, whose reset ends
    /// the machine.
    pub fn add_linux_platform(
        &mut self,
        events: Sender<Event>,
        stop: Arc<AtomicBool>,
    ) -> Result<(), Error> {
        let pio = self.pio.clone();
        let kbd = I8042::new(events, stop);
        self.insert(&pio, i8042::BASE, i8042::LEN, Arc::new(Mutex::new(kbd)))?;
        Ok(())
    }

    /// The disk controller `disk` asks for, with its image.
    pub fn add_disk(&mut self, disk: &DiskConfig) -> Result<(), Error> {
        match disk.kind {
            DiskKind::Ide => self.add_ide(disk),
            DiskKind::Virtio => self.add_virtio_blk(disk),
        }
    }

    /// The NIC `nic` asks for, with its back-end.
    pub fn add_nic(&mut self, nic: &NicConfig) -> Result<(), Error> {
        match nic.kind {
            NicKind::E1000 => self.add_e1000(nic),
            NicKind::Virtio => self.add_virtio_net(nic),
        }
    }

    fn add_ide(&mut self, disk: &DiskConfig) -> Result<(), Error> {
        let backend = open_disk(&disk.path, disk.options)?;
        let bm = self.bars.io(ide::BM_BAR_SIZE)?;
        let piix = Piix::new(
            self.mem.clone(),
            Some(backend),
            self.line(ide::PRIMARY_IRQ),
            self.line(ide::SECONDARY_IRQ),
            bm as u16,
        );
        self.counters
            .push((DiskKind::Ide.device_name().into(), piix.counters()));
        let dev = Arc::new(Mutex::new(piix));
        // The compatibility-mode ports are decoded by the device itself (it answers only with
        // I/O decoding on), so they are registered once, here.
        let attached = Attached::new(&self.exits, dev.clone());
        for (base, len) in ide::LEGACY_RANGES {
            self.pio
                .insert(base, len, &attached)
                .map_err(|e| Error::Bus(attached.label(), e))?;
        }
        self.add_pci(DISK_SLOT, dev);
        Ok(())
    }

    fn add_virtio_blk(&mut self, disk: &DiskConfig) -> Result<(), Error> {
        // raw or qcow2, told apart by the file's contents.
        let backend = open_disk(&disk.path, disk.options)?;
        let blk = Block::new(backend, "vmbench-disk0");
        self.counters
            .push((DiskKind::Virtio.device_name().into(), blk.counters()));
        let dev = self.virtio_pci(Box::new(blk), DISK_SLOT)?;
        self.add_pci(DISK_SLOT, dev);
        Ok(())
    }

    fn add_e1000(&mut self, nic: &NicConfig) -> Result<(), Error> {
        let backend = open_net(nic.backend, nic.mac)?;
        let rx_fd = backend.rx_fd();
        let irq = self.line(intx_gsi(NIC_SLOT));
        let bar0 = self.bars.mmio(e1000::regs::MMIO_SIZE)?;
        let bar1 = self.bars.io(e1000::regs::IO_SIZE)?;
        let e = E1000::new(self.mem.clone(), backend, irq, nic.mac, bar0, bar1 as u16);
        let dev = Arc::new(Mutex::new(e));
        self.counters.push((
            NicKind::E1000.device_name().into(),
            Arc::new(e1000::wire::DeviceView(dev.clone())),
        ));
        self.counters.push((
            backend_name(nic.backend).into(),
            Arc::new(e1000::wire::BackendView(dev.clone())),
        ));
        let wire = e1000::wire::spawn(dev.clone(), rx_fd)
            .map_err(|e| Error::Device("e1000", Box::new(e)))?;
        self.workers.push(wire);
        self.add_pci(NIC_SLOT, dev);
        Ok(())
    }

    fn add_virtio_net(&mut self, nic: &NicConfig) -> Result<(), Error> {
        let backend = open_net(nic.backend, nic.mac)?;
        let net = Net::new(backend, nic.mac);
        self.counters
            .push((NicKind::Virtio.device_name().into(), net.counters()));
        self.counters.push((
            backend_name(nic.backend).into(),
            Arc::new(BackendCounters(net.backend())),
        ));
        let dev = self.virtio_pci(Box::new(net), NIC_SLOT)?;
        self.add_pci(NIC_SLOT, dev);
        Ok(())
    }

    /// A virtio-pci function with one MSI-X vector per queue plus one for configuration.
    fn virtio_pci(
        &mut self,
        device: Box<dyn VirtioDevice>,
        slot: u8,
    ) -> Result<Arc<Mutex<VirtioPci>>, Error> {
        let queues = device.queue_max_sizes().len();
        let mut vectors = Vec::with_capacity(queues + 1);
        for _ in 0..=queues {
            let (gsi, fd) = self.router.allocate()?;
            vectors.push(VectorFd { gsi: Some(gsi), fd });
        }
        let intx = self.line(intx_gsi(slot));
        let irq = Arc::new(VirtioIrq::new(
            vectors,
            queues,
            Some(self.router.clone()),
            intx,
        ));
        let bar0 = self.bars.mmio(crate::virtio::pci::BAR_SIZE)?;
        let label = device.debug_label();
        let dev = VirtioPci::new(device, self.mem.clone(), irq, bar0)
            .map_err(|e| Error::Device(label, Box::new(e)))?;
        Ok(Arc::new(Mutex::new(dev)))
    }

    /// Hands BAR moves to the mapper from now on, and gives the machine its devices.
    pub fn finish(self) -> Devices {
        let mapper = self.mapper;
        self.pci
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_change_handler(Box::new(move |bdf, change| mapper.apply(bdf, change)));
        Devices {
            pci: self.pci,
            counters: self.counters,
            workers: self.workers,
        }
    }
}

fn open_net(kind: NetBackendKind, guest_mac: [u8; 6]) -> Result<Box<dyn NetBackend>, Error> {
    match kind {
        NetBackendKind::Peer => {
            let peer =
                Peer::new(PeerConfig::default()).map_err(|e| Error::Device("peer", Box::new(e)))?;
            Ok(Box::new(peer))
        }
        NetBackendKind::Tap => {
            let opts = TapOptions {
                guest: Some(GuestAddr {
                    ip: DEFAULT_GUEST_IP,
                    mac: guest_mac,
                }),
                ..Default::default()
            };
            let tap = Tap::create(&opts).map_err(|e| Error::Device("tap", Box::new(e)))?;
            Ok(Box::new(tap))
        }
    }
}

/// The name a NIC's back-end's counters go under.
fn backend_name(kind: NetBackendKind) -> &'static str {
    match kind {
        NetBackendKind::Peer => "peer",
        NetBackendKind::Tap => "tap",
    }
}
