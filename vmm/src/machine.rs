//! A machine: the VM, its memory, buses, devices and vCPU threads, built from a
//! [`MachineConfig`] and driven by its owner through [`Event`]s.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use probe_abi::{flags, layout, ports};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::Killable;

use crate::boot::{self, ProbeParams};
use crate::bus::{Bus, SharedDevice};
use crate::devices::debug_exit::DebugExit;
use crate::devices::platform::{EntryMark, Mailbox, Null};
use crate::devices::serial::SerialPort;
use crate::event::Event;
use crate::exits::ExitStats;
use crate::kvm::{self, vcpu};
use crate::pci::PciRoot;

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
}

/// What to build.
#[derive(Clone, Debug)]
pub struct MachineConfig {
    pub vcpus: usize,
    pub mem_mib: u64,
    pub probe: PathBuf,
    /// The probe workload and its arguments.
    pub exec: String,
}

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
    _vm: VmFd,
    _mem: GuestMemoryMmap,
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
        let vm = kvm::create_vm(&kvm_fd)?;
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
        register(
            &pio,
            &exits,
            u64::from(ports::PCI_CONFIG_ADDRESS),
            8,
            "pci-config",
            Arc::new(Mutex::new(PciRoot::new())),
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
        let mailbox = Mailbox {
            mem: mem.clone(),
            exits: exits.clone(),
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

impl Drop for Machine {
    fn drop(&mut self) {
        self.stop();
    }
}
