//! A machine: the VM, its memory, buses, devices and vCPU threads, built from a
//! [`MachineConfig`] and driven by its owner through [`Event`]s.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use probe_abi::{flags, layout, ports};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::Killable;

use crate::backend::net::peer::{Peer, PeerConfig, DEFAULT_GUEST_IP};
use crate::backend::net::tap::{GuestAddr, Tap, TapOptions};
use crate::backend::net::{BackendCounters, NetBackend};
use crate::boot::{self, ProbeParams};
use crate::bus::{Bus, SharedDevice};
use crate::devices::debug_exit::DebugExit;
use crate::devices::e1000::E1000;
use crate::devices::ide::Piix;
use crate::devices::platform::{EntryMark, Mailbox, Null};
use crate::devices::serial::SerialPort;
use crate::devices::Counters;
use crate::event::Event;
use crate::exits::ExitStats;
use crate::interrupt::{IrqLine, KvmIrqLine};
use crate::kvm::irq::GsiRouter;
use crate::kvm::{self, vcpu};
use crate::pci::{Bdf, ConfigChange, PciFunction, PciRoot, SharedFunction};
use crate::virtio::blk::Block;
use crate::virtio::msix::{VectorFd, VirtioIrq};
use crate::virtio::net::Net;
use crate::virtio::pci::VirtioPci;
use std::collections::BTreeMap;

mod config;
pub use config::{
    DiskConfig, DiskKind, MachineConfig, NetBackendKind, NicConfig, NicKind, GUEST_MAC,
};

/// vmbench's own ports (outside any device a guest expects), told to the probe in its boot
/// information rather than hard-coded there.
pub const ENTRY_MARK_PORT: u16 = 0x4f0;
pub const MAILBOX_PORT: u16 = 0x4f4;
pub const CALIB_PORT: u16 = 0x4f8;
pub const CALIB_MMIO: u64 = layout::PLATFORM_MMIO;
pub const CALIB_IOEVENTFD: u64 = layout::PLATFORM_MMIO + 0x1000;
/// The UART's ISA interrupt line.
pub const COM1_IRQ: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kvm(#[from] kvm::Error),
    #[error(transparent)]
    Vcpu(#[from] vcpu::Error),
    #[error(transparent)]
    Boot(#[from] boot::Error),
    #[error("cannot register {0} on the bus")]
    Bus(&'static str, #[source] crate::bus::Error),
    #[error("cannot create an eventfd")]
    EventFd(#[source] std::io::Error),
    #[error("cannot register the serial port's irqfd")]
    Irqfd(#[source] kvm_ioctls::Error),
    #[error("cannot read the TSC frequency from KVM")]
    TscKhz(#[source] kvm_ioctls::Error),
    #[error("cannot start the thread of vCPU {0}")]
    Thread(usize, #[source] std::io::Error),
    #[error(transparent)]
    Disk(#[from] crate::backend::block::DiskError),
    #[error("cannot set up interrupts")]
    Irq(#[from] crate::kvm::irq::Error),
    #[error("cannot create the {0} device")]
    Device(
        &'static str,
        #[source] Box<dyn std::error::Error + Send + Sync>,
    ),
    #[error("the PCI {0} window is full")]
    Window(&'static str),
}

fn open_net(kind: NetBackendKind, guest_mac: [u8; 6]) -> Result<Box<dyn NetBackend>, Error> {
    match kind {
        NetBackendKind::Peer => {
            let peer =
                Peer::new(PeerConfig::default()).map_err(|e| Error::Device("peer", Box::new(e)))?;
            Ok(Box::new(peer))
        }
        NetBackendKind::Tap => {
            // Namespaces of vmbench processes that died without cleaning up.
            if let Err(e) = crate::backend::net::netns::cleanup_stale() {
                log::warn!("cannot remove stale vmbench namespaces: {e}");
            }
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

/// PCI slots: the host bridge is 00:00.0.
pub const NIC_SLOT: u8 = 3;
pub const DISK_SLOT: u8 = 4;

/// Timestamps of the set-up, for the boot timeline.
#[derive(Clone, Copy, Debug)]
pub struct SetupTimes {
    /// When `Machine::new` began.
    pub begin: Instant,
    /// When the machine was ready to run (all KVM objects made, guest image loaded).
    pub ready: Instant,
    /// When the vCPU threads were started.
    pub started: Option<Instant>,
}

pub struct Machine {
    // Field order is drop order: vCPU fds before the VM, the VM before the memory it maps.
    vcpus: Vec<kvm_ioctls::VcpuFd>,
    threads: Vec<JoinHandle<vcpu::End>>,
    starts: Vec<vcpu::Start>,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    exits: Arc<ExitStats>,
    stop: Arc<AtomicBool>,
    events_tx: Sender<Event>,
    events: Receiver<Event>,
    ioeventfd: EventFd,
    tsc_khz: u32,
    times: SetupTimes,
    counters: Vec<(String, Arc<dyn Counters>)>,
    /// Threads that bring the outside world to emulated devices (a NIC's wire).
    io_threads: Vec<IoThread>,
    _pci: Arc<Mutex<PciRoot>>,
    _vm: Arc<VmFd>,
    _mem: GuestMemoryMmap,
}

/// A PCI function as the bus owner knows it.
struct PciEntry {
    name: &'static str,
    id: crate::bus::DeviceId,
    device: SharedDevice,
    function: SharedFunction,
}

/// Applies BAR moves: (un)registers the range on its bus and the function's ioeventfds.
struct BarMapper {
    vm: Arc<VmFd>,
    // Weak: the buses own the PCI root, which owns this mapper; strong references would
    // keep every device (and a TAP's namespace) alive after the machine is gone.
    pio: Weak<Bus>,
    mmio: Weak<Bus>,
    functions: BTreeMap<Bdf, PciEntry>,
}

impl BarMapper {
    fn apply(&self, bdf: Bdf, change: ConfigChange) {
        let Some(e) = self.functions.get(&bdf) else {
            return;
        };
        let (Some(pio), Some(mmio)) = (self.pio.upgrade(), self.mmio.upgrade()) else {
            return;
        };
        let events = e
            .function
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ioevents();
        for r in &change.unmap {
            let bus = if r.io { &pio } else { &mmio };
            let _ = bus.remove(r.base);
            for (bar, off, fd) in &events {
                if *bar == r.bar && !r.io {
                    let _ = self.vm.unregister_ioevent(
                        fd,
                        &IoEventAddress::Mmio(r.base + off),
                        NoDatamatch,
                    );
                }
            }
        }
        for r in &change.map {
            let bus = if r.io { &pio } else { &mmio };
            if let Err(err) = bus.insert(r.base, r.len, e.name, e.id, e.device.clone()) {
                // The guest placed a BAR over another range; real hardware would decode both
                // and conflict. The BAR stays unmapped, which the guest sees as all ones.
                log::warn!("{bdf} BAR {} not mapped: {err}", r.bar);
                continue;
            }
            for (bar, off, fd) in &events {
                if *bar == r.bar && !r.io {
                    if let Err(err) = self.vm.register_ioevent(
                        fd,
                        &IoEventAddress::Mmio(r.base + off),
                        NoDatamatch,
                    ) {
                        log::warn!("{bdf} notify ioeventfd at {:#x}: {err}", r.base + off);
                    }
                }
            }
        }
    }
}

/// Hands out BAR addresses: MMIO in the 32-bit PCI window, ports from 0xc000.
struct BarAllocator {
    mmio_next: u64,
    io_next: u64,
}

impl BarAllocator {
    fn mmio(&mut self, size: u64) -> Result<u64, Error> {
        let base = self.mmio_next.next_multiple_of(size);
        if base + size > layout::PCI_MMIO + layout::PCI_MMIO_SIZE {
            return Err(Error::Window("MMIO"));
        }
        self.mmio_next = base + size;
        Ok(base)
    }

    fn io(&mut self, size: u64) -> Result<u64, Error> {
        let base = self.io_next.next_multiple_of(size);
        if base + size > 0x1_0000 {
            return Err(Error::Window("I/O"));
        }
        self.io_next = base + size;
        Ok(base)
    }
}

fn register(
    bus: &Bus,
    exits: &ExitStats,
    base: u64,
    len: u64,
    name: &'static str,
    dev: SharedDevice,
) -> Result<(), Error> {
    let id = exits.register(name);
    bus.insert(base, len, name, id, dev)
        .map_err(|e| Error::Bus(name, e))
}

impl Machine {
    /// Builds the VM and loads the probe; nothing runs until [`Machine::start`].
    pub fn new(cfg: &MachineConfig) -> Result<Machine, Error> {
        let begin = Instant::now();
        let mem_size = cfg.mem_mib << 20;
        boot::check_shape(mem_size, cfg.vcpus)?;
        let kvm_fd = kvm::open()?;
        let vm = Arc::new(kvm::create_vm(&kvm_fd)?);
        let mem = kvm::memory::create(&vm, mem_size)?;
        let entry = boot::load_probe(&mem, &cfg.probe)?;

        let (events_tx, events) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let exits = Arc::new(ExitStats::new(cfg.vcpus));
        let pio = Arc::new(Bus::new("pio"));
        let mmio = Arc::new(Bus::new("mmio"));

        let serial_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::EventFd)?;
        vm.register_irqfd(&serial_irq, COM1_IRQ)
            .map_err(Error::Irqfd)?;
        let serial = SerialPort::new(serial_irq, events_tx.clone());
        register(
            &pio,
            &exits,
            u64::from(ports::COM1),
            8,
            "serial",
            Arc::new(Mutex::new(serial)),
        )?;
        let debug_exit = DebugExit::new(events_tx.clone(), stop.clone());
        register(
            &pio,
            &exits,
            u64::from(ports::DEBUG_EXIT),
            4,
            "debug-exit",
            Arc::new(Mutex::new(debug_exit)),
        )?;
        let pci = Arc::new(Mutex::new(PciRoot::new()));
        register(
            &pio,
            &exits,
            u64::from(ports::PCI_CONFIG_ADDRESS),
            8,
            "pci-config",
            pci.clone(),
        )?;
        let mark = EntryMark {
            events: events_tx.clone(),
        };
        register(
            &pio,
            &exits,
            u64::from(ENTRY_MARK_PORT),
            1,
            "entry-mark",
            Arc::new(Mutex::new(mark)),
        )?;
        let kvm_stats: Arc<std::sync::OnceLock<Vec<crate::kvm::stats::VcpuStats>>> = Arc::default();
        let mailbox = Mailbox {
            mem: mem.clone(),
            exits: exits.clone(),
            kvm_stats: kvm_stats.clone(),
            events: events_tx.clone(),
            vcpus: cfg.vcpus,
        };
        register(
            &pio,
            &exits,
            u64::from(MAILBOX_PORT),
            4,
            "mailbox",
            Arc::new(Mutex::new(mailbox)),
        )?;
        register(
            &pio,
            &exits,
            u64::from(CALIB_PORT),
            4,
            "calibration",
            Arc::new(Mutex::new(Null)),
        )?;
        register(
            &mmio,
            &exits,
            CALIB_MMIO,
            0x1000,
            "calibration",
            Arc::new(Mutex::new(Null)),
        )?;
        let ioeventfd = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::EventFd)?;
        vm.register_ioevent(
            &ioeventfd,
            &IoEventAddress::Mmio(CALIB_IOEVENTFD),
            NoDatamatch,
        )
        .map_err(|e| Error::Kvm(kvm::Error::IoEvent(e)))?;

        let mut mapper = BarMapper {
            vm: vm.clone(),
            pio: Arc::downgrade(&pio),
            mmio: Arc::downgrade(&mmio),
            functions: BTreeMap::new(),
        };
        let mut bars = BarAllocator {
            mmio_next: layout::PCI_MMIO,
            io_next: 0xc000,
        };
        let router = Arc::new(GsiRouter::new(vm.clone()));
        let mut counters: Vec<(String, Arc<dyn Counters>)> = Vec::new();
        if let Some(disk) = cfg.disk.as_ref().filter(|d| d.kind == DiskKind::Ide) {
            let backend = crate::backend::block::open_disk(&disk.path, disk.options)?;
            let line = |gsi| -> Arc<dyn IrqLine> {
                Arc::new(KvmIrqLine {
                    vm: vm.clone(),
                    gsi,
                })
            };
            let bm = bars.io(crate::devices::ide::BM_BAR_SIZE)?;
            let piix = Piix::new(
                mem.clone(),
                Some(backend),
                line(crate::devices::ide::PRIMARY_IRQ),
                line(crate::devices::ide::SECONDARY_IRQ),
                bm as u16,
            );
            counters.push(("ide".into(), piix.counters()));
            let dev = Arc::new(Mutex::new(piix));
            // The compatibility-mode ports are decoded by the device itself (it answers
            // only with I/O decoding on), so they are registered once, here.
            let id = exits.register("ide");
            for (base, len) in crate::devices::ide::LEGACY_RANGES {
                pio.insert(base, len, "ide", id, dev.clone())
                    .map_err(|e| Error::Bus("ide", e))?;
            }
            let bdf = Bdf {
                bus: 0,
                dev: DISK_SLOT,
                func: 0,
            };
            add_pci(
                &mut pci.lock().unwrap_or_else(|e| e.into_inner()),
                &mut mapper,
                &exits,
                bdf,
                "ide",
                dev,
            );
        }
        if let Some(disk) = cfg.disk.as_ref().filter(|d| d.kind == DiskKind::Virtio) {
            // raw or qcow2, told apart by the file's contents.
            let backend = crate::backend::block::open_disk(&disk.path, disk.options)?;
            let blk = Block::new(backend, "vmbench-disk0");
            counters.push(("virtio-blk".into(), blk.counters()));
            let bdf = Bdf {
                bus: 0,
                dev: DISK_SLOT,
                func: 0,
            };
            let dev = virtio_pci(Box::new(blk), &mem, &vm, &router, &mut bars, bdf)?;
            add_pci(
                &mut pci.lock().unwrap_or_else(|e| e.into_inner()),
                &mut mapper,
                &exits,
                bdf,
                "virtio-blk",
                dev,
            );
        }
        let mut io_threads = Vec::new();
        if let Some(nic) = cfg.nic.as_ref().filter(|n| n.kind == NicKind::E1000) {
            let backend = open_net(nic.backend, nic.mac)?;
            let rx_fd = backend.rx_fd();
            let bdf = Bdf {
                bus: 0,
                dev: NIC_SLOT,
                func: 0,
            };
            let irq: Arc<dyn IrqLine> = Arc::new(KvmIrqLine {
                vm: vm.clone(),
                gsi: intx_gsi(bdf),
            });
            let bar0 = bars.mmio(crate::devices::e1000::regs::MMIO_SIZE)?;
            let bar1 = bars.io(crate::devices::e1000::regs::IO_SIZE)?;
            let e = E1000::new(mem.clone(), backend, irq, nic.mac, bar0, bar1 as u16);
            let dev = Arc::new(Mutex::new(e));
            counters.push(("e1000".into(), Arc::new(E1000View(dev.clone()))));
            counters.push((
                backend_name(nic.backend).into(),
                Arc::new(E1000BackendView(dev.clone())),
            ));
            io_threads.push(
                e1000_io_thread(dev.clone(), rx_fd)
                    .map_err(|e| Error::Device("e1000", Box::new(e)))?,
            );
            add_pci(
                &mut pci.lock().unwrap_or_else(|e| e.into_inner()),
                &mut mapper,
                &exits,
                bdf,
                "e1000",
                dev,
            );
        }
        if let Some(nic) = cfg.nic.as_ref().filter(|n| n.kind == NicKind::Virtio) {
            let backend = open_net(nic.backend, nic.mac)?;
            let net = Net::new(backend, nic.mac);
            counters.push(("virtio-net".into(), net.counters()));
            counters.push((
                backend_name(nic.backend).into(),
                Arc::new(BackendCounters(net.backend())),
            ));
            let bdf = Bdf {
                bus: 0,
                dev: NIC_SLOT,
                func: 0,
            };
            let dev = virtio_pci(Box::new(net), &mem, &vm, &router, &mut bars, bdf)?;
            add_pci(
                &mut pci.lock().unwrap_or_else(|e| e.into_inner()),
                &mut mapper,
                &exits,
                bdf,
                "virtio-net",
                dev,
            );
        }
        pci.lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_change_handler(Box::new(move |bdf, change| mapper.apply(bdf, change)));

        vcpu::install_kick_handler()?;
        let mut vcpus = Vec::with_capacity(cfg.vcpus);
        let mut tsc_khz = 0;
        let params = |tsc_khz| ProbeParams {
            mem_size,
            vcpus: cfg.vcpus,
            tsc_khz,
            flags: flags::VMBENCH | flags::MAILBOX | flags::IOEVENTFD,
            entry_mark_port: ENTRY_MARK_PORT,
            mailbox_port: MAILBOX_PORT,
            calib_port: CALIB_PORT,
            calib_mmio: CALIB_MMIO,
            calib_ioeventfd: CALIB_IOEVENTFD,
            exec: &cfg.exec,
        };
        // The TSC rate comes from a vCPU, so the boot information is written once the first
        // exists; the start states do not depend on it.
        let starts = boot::setup(&mem, entry, &params(0))?;
        for (i, start) in starts.iter().enumerate() {
            let v = vcpu::create(&vm, &kvm_fd, i as u64, start)?;
            if i == 0 {
                tsc_khz = v.get_tsc_khz().map_err(Error::TscKhz)?;
                boot::setup(&mem, entry, &params(tsc_khz))?;
            }
            vcpus.push(v);
        }
        let _ = kvm_stats.set(
            vcpus
                .iter()
                .filter_map(crate::kvm::stats::VcpuStats::open)
                .collect(),
        );

        Ok(Machine {
            vcpus,
            threads: Vec::new(),
            starts,
            pio,
            mmio,
            exits,
            stop,
            events_tx,
            events,
            ioeventfd,
            tsc_khz,
            counters,
            io_threads,
            _pci: pci,
            times: SetupTimes {
                begin,
                ready: Instant::now(),
                started: None,
            },
            _vm: vm,
            _mem: mem,
        })
    }

    /// Starts one thread per vCPU.
    pub fn start(&mut self) -> Result<(), Error> {
        self.times.started = Some(Instant::now());
        for (id, v) in self.vcpus.drain(..).enumerate() {
            let ctx = vcpu::Context {
                id,
                pio: self.pio.clone(),
                mmio: self.mmio.clone(),
                exits: self.exits.clone(),
                stop: self.stop.clone(),
                events: self.events_tx.clone(),
            };
            let t = std::thread::Builder::new()
                .name(format!("vcpu{id}"))
                .spawn(move || vcpu::run(v, ctx))
                .map_err(|e| Error::Thread(id, e))?;
            self.threads.push(t);
        }
        Ok(())
    }

    /// Operation counters of the devices, by device then counter name.
    pub fn device_counters(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        self.counters
            .iter()
            .map(|(name, c)| {
                (
                    name.clone(),
                    c.snapshot()
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                )
            })
            .collect()
    }

    pub fn events(&self) -> &Receiver<Event> {
        &self.events
    }

    pub fn exits(&self) -> &Arc<ExitStats> {
        &self.exits
    }

    pub fn tsc_khz(&self) -> u32 {
        self.tsc_khz
    }

    pub fn times(&self) -> SetupTimes {
        self.times
    }

    pub fn vcpu_count(&self) -> usize {
        self.starts.len()
    }

    /// How many times the guest wrote the ioeventfd calibration address (reading resets it).
    pub fn ioeventfd_count(&self) -> u64 {
        self.ioeventfd.read().unwrap_or(0)
    }

    /// Stops every vCPU: sets the stop flag and kicks each thread out of KVM_RUN until it
    /// ends (a vCPU spinning in the guest never exits by itself). Idempotent.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.io_threads.drain(..) {
            t.stop();
        }
        for t in self.threads.drain(..) {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !t.is_finished() && Instant::now() < deadline {
                // The signal may land before the thread enters KVM_RUN; hence the repeat.
                let _ = t.kill(vcpu::kick_signal());
                std::thread::sleep(Duration::from_micros(200));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                log::error!("a vCPU thread did not stop within 5 s; leaving it behind");
            }
        }
    }
}

/// A device's I/O thread with its kill eventfd.
struct IoThread {
    kill: EventFd,
    thread: JoinHandle<()>,
}

impl IoThread {
    fn stop(self) {
        let _ = self.kill.write(1);
        let _ = self.thread.join();
    }
}

/// The e1000's wire: frames arriving from the back-end are stored into the receive ring as
/// the hardware's DMA engine would, off the vCPU threads, and the interrupt-moderation
/// timers fire on time. Register accesses stay on the vCPU threads.
fn e1000_io_thread(dev: Arc<Mutex<E1000>>, rx_fd: std::os::fd::RawFd) -> std::io::Result<IoThread> {
    use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
    const RX: u64 = 1;
    const KILL: u64 = 2;
    let kill = EventFd::new(libc::EFD_NONBLOCK)?;
    let epoll = Epoll::new()?;
    epoll.ctl(
        ControlOperation::Add,
        rx_fd,
        EpollEvent::new(EventSet::IN, RX),
    )?;
    epoll.ctl(
        ControlOperation::Add,
        std::os::fd::AsRawFd::as_raw_fd(&kill),
        EpollEvent::new(EventSet::IN, KILL),
    )?;
    let thread = std::thread::Builder::new()
        .name("e1000-io".into())
        .spawn(move || {
            let mut events = [EpollEvent::default(); 4];
            let mut armed = true;
            loop {
                let (deadline, backlogged) = {
                    let d = dev.lock().unwrap_or_else(|e| e.into_inner());
                    (d.next_deadline(), d.rx_backlogged())
                };
                // With frames waiting for descriptors, stop listening to the wire until
                // the driver returns buffers (its RDT write drains the FIFO).
                if backlogged == armed {
                    let ev = if backlogged {
                        EventSet::empty()
                    } else {
                        EventSet::IN
                    };
                    let _ = epoll.ctl(ControlOperation::Modify, rx_fd, EpollEvent::new(ev, RX));
                    armed = !backlogged;
                }
                let mut timeout = deadline.map(|t| t.saturating_duration_since(Instant::now()));
                if !armed {
                    timeout = Some(timeout.map_or(Duration::from_millis(1), |t| {
                        t.min(Duration::from_millis(1))
                    }));
                }
                let ms = timeout.map_or(-1, |t| t.as_micros().div_ceil(1000) as i32);
                let n = match epoll.wait(ms, &mut events) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
                    Err(_) => return,
                };
                if events[..n].iter().any(|e| e.data() == KILL) {
                    return;
                }
                let mut d = dev.lock().unwrap_or_else(|e| e.into_inner());
                if events[..n].iter().any(|e| e.data() == RX) {
                    d.rx_poll();
                }
                d.poll(Instant::now());
            }
        })?;
    Ok(IoThread { kill, thread })
}

/// The e1000's counters for the harness.
struct E1000View(Arc<Mutex<E1000>>);

impl Counters for E1000View {
    fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let c = self.0.lock().unwrap_or_else(|e| e.into_inner()).counters();
        vec![
            ("mmio_reads", c.mmio_reads),
            ("mmio_writes", c.mmio_writes),
            ("io_reads", c.io_reads),
            ("io_writes", c.io_writes),
            ("tx_frames", c.tx_frames),
            ("tx_bytes", c.tx_bytes),
            ("tx_descriptors", c.tx_descriptors),
            ("tx_dropped", c.tx_dropped),
            ("rx_frames", c.rx_frames),
            ("rx_bytes", c.rx_bytes),
            ("rx_descriptors", c.rx_descriptors),
            ("rx_filtered", c.rx_filtered),
            ("rx_missed", c.rx_missed),
            ("rx_dropped", c.rx_dropped),
            ("interrupts", c.interrupts),
            ("dma_errors", c.dma_errors),
            ("bad_ring", c.bad_ring),
            ("backend_errors", c.backend_errors),
        ]
    }
}

/// The counters of the e1000's back-end (the device owns it), under the back-end's name.
struct E1000BackendView(Arc<Mutex<E1000>>);

impl Counters for E1000BackendView {
    fn snapshot(&self) -> Vec<(&'static str, u64)> {
        crate::backend::net::backend_snapshot(
            self.0.lock().unwrap_or_else(|e| e.into_inner()).backend(),
        )
    }
}

/// The name a NIC's back-end's counters go under.
fn backend_name(kind: NetBackendKind) -> &'static str {
    match kind {
        NetBackendKind::Peer => "peer",
        NetBackendKind::Tap => "tap",
    }
}

/// The INTx GSI of a slot: IOAPIC pins 16-23, INTA# swizzled by slot as on a PC.
fn intx_gsi(bdf: Bdf) -> u32 {
    16 + u32::from(bdf.dev % 8)
}

/// Builds a virtio-pci function with one MSI-X vector per queue plus one for configuration.
fn virtio_pci(
    device: Box<dyn crate::virtio::VirtioDevice>,
    mem: &GuestMemoryMmap,
    vm: &Arc<VmFd>,
    router: &Arc<GsiRouter>,
    bars: &mut BarAllocator,
    bdf: Bdf,
) -> Result<Arc<Mutex<VirtioPci>>, Error> {
    let nvec = device.queue_max_sizes().len() + 1;
    let mut vectors = Vec::with_capacity(nvec);
    for _ in 0..nvec {
        let (gsi, fd) = router.allocate()?;
        vectors.push(VectorFd { gsi: Some(gsi), fd });
    }
    let queues = device.queue_max_sizes().len();
    let intx: Arc<dyn IrqLine> = Arc::new(KvmIrqLine {
        vm: vm.clone(),
        gsi: intx_gsi(bdf),
    });
    let irq = Arc::new(VirtioIrq::new(vectors, queues, Some(router.clone()), intx));
    let bar0 = bars.mmio(crate::virtio::pci::BAR_SIZE)?;
    let name = device.device_type();
    let dev = VirtioPci::new(device, mem.clone(), irq, bar0).map_err(|e| {
        Error::Device(
            if name == 1 {
                "virtio-net"
            } else {
                "virtio-blk"
            },
            Box::new(e),
        )
    })?;
    Ok(Arc::new(Mutex::new(dev)))
}

/// Puts a function on the PCI bus; its BARs are mapped when the guest enables decoding.
fn add_pci<T: PciFunction + 'static>(
    root: &mut PciRoot,
    mapper: &mut BarMapper,
    exits: &ExitStats,
    bdf: Bdf,
    name: &'static str,
    dev: Arc<Mutex<T>>,
) {
    let device: SharedDevice = dev.clone();
    let function: SharedFunction = dev;
    root.add(bdf, function.clone());
    mapper.functions.insert(
        bdf,
        PciEntry {
            name,
            id: exits.register(name),
            device,
            function,
        },
    );
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.stop();
    }
}
