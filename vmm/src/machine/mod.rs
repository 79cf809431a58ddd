//! A machine: the VM, its memory, buses, devices and vCPU threads, built from a
//! [`MachineConfig`] and driven by its owner through [`Event`]s.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_ioctls::VmFd;
use probe_abi::flags;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::Killable;

use crate::boot::{self, ProbeParams};
use crate::bus::Bus;
use crate::counters::Counters;
use crate::event::Event;
use crate::exits::ExitStats;
use crate::kvm::{self, vcpu};
use crate::pci::PciRoot;
use crate::worker::WorkerThread;
use attach::{DeviceManager, Platform};

mod attach;
mod config;
pub mod halt;
pub mod layout;
mod pci;

pub use config::{
    DiskConfig, DiskKind, LinuxBoot, MachineConfig, NetBackendKind, NicConfig, NicKind, GUEST_MAC,
};
pub use layout::{
    CALIB_IOEVENTFD, CALIB_MMIO, CALIB_PORT, COM1_IRQ, DISK_SLOT, ENTRY_MARK_PORT, MAILBOX_PORT,
    NIC_SLOT,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kvm(#[from] kvm::Error),
    #[error(transparent)]
    Vcpu(#[from] vcpu::Error),
    #[error(transparent)]
    Boot(#[from] boot::Error),
    #[error(transparent)]
    Linux(#[from] boot::linux::Error),
    #[error("cannot register {0} on the bus")]
    Bus(&'static str, #[source] crate::bus::Error),
    #[error(transparent)]
    Layout(#[from] layout::Error),
    #[error("cannot create an eventfd")]
    EventFd(#[source] std::io::Error),
    #[error("cannot register the serial port's irqfd")]
    Irqfd(#[source] kvm_ioctls::Error),
    #[error("cannot read the TSC frequency from KVM")]
    TscKhz(#[source] kvm_ioctls::Error),
    #[error("cannot start the thread of vCPU {0}")]
    Thread(usize, #[source] std::io::Error),
    #[error("cannot start the thread that watches for a powered-off guest")]
    HaltWatch(#[source] std::io::Error),
    #[error(transparent)]
    Disk(#[from] crate::backend::block::DiskError),
    #[error("cannot set up interrupts")]
    Irq(#[from] crate::kvm::irq::Error),
    #[error("cannot create the {0} device")]
    Device(
        &'static str,
        #[source] Box<dyn std::error::Error + Send + Sync>,
    ),
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
    /// Ends a Linux guest's machine once it powered off ([`halt`]); joined before `threads`.
    halt_watch: Option<JoinHandle<()>>,
    kvm_stats: Arc<std::sync::OnceLock<Vec<kvm::stats::VcpuStats>>>,
    vcpu_count: usize,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    exits: Arc<ExitStats>,
    stop: Arc<AtomicBool>,
    events_tx: Sender<Event>,
    events: Receiver<Event>,
    ioeventfd: EventFd,
    tsc_khz: u32,
    /// It boots a Linux kernel (not the probe).
    linux: bool,
    times: SetupTimes,
    counters: Vec<(String, Arc<dyn Counters>)>,
    /// Threads that bring the outside world to emulated devices (a NIC's wire).
    workers: Vec<WorkerThread>,
    _pci: Arc<std::sync::Mutex<PciRoot>>,
    _vm: Arc<VmFd>,
    _mem: GuestMemoryMmap,
}

impl Machine {
    /// Builds the VM and loads the probe; nothing runs until [`Machine::start`].
    pub fn new(cfg: &MachineConfig) -> Result<Machine, Error> {
        let begin = Instant::now();
        let mem_size = cfg.mem_mib.saturating_mul(1 << 20);
        boot::check_shape(mem_size, cfg.vcpus)?;
        if cfg.linux.is_none() {
            boot::check_exec(&cfg.exec)?;
        }
        let kvm_fd = kvm::open()?;
        let vm = Arc::new(kvm::create_vm(&kvm_fd)?);
        // Mapped now, made KVM's slots after the platform's ioeventfd (see below).
        let mem = kvm::memory::map(mem_size)?;
        let probe_entry = match &cfg.linux {
            None => Some(boot::load_probe(&mem, &cfg.probe)?),
            Some(_) => None,
        };

        let (events_tx, events) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let exits = Arc::new(ExitStats::new(cfg.vcpus));
        let pio = Arc::new(Bus::new("pio"));
        let mmio = Arc::new(Bus::new("mmio"));
        let kvm_stats: Arc<std::sync::OnceLock<Vec<kvm::stats::VcpuStats>>> = Arc::default();
        let device_counters: crate::counters::LateCounters = Arc::default();

        let mut devices = DeviceManager::new(&vm, &mem, &pio, &mmio, &exits);
        let ioeventfd = devices.add_platform(Platform {
            events: events_tx.clone(),
            stop: stop.clone(),
            kvm_stats: kvm_stats.clone(),
            device_counters: device_counters.clone(),
            vcpus: cfg.vcpus,
        })?;
        // KVM frees the I/O bus an ioeventfd registration replaced after the VM's next SRCU
        // grace period, and destroying the VM waits for every such free (srcu_barrier): with
        // no grace period in between, ~10 ms of a short run's exit on this host. Registering
        // the memory slots waits for a grace period anyway: registered after the ioeventfd,
        // they complete its free (docs/architecture.md, "Where `vmbench boot`'s time goes").
        kvm::memory::register(&vm, &mem)?;
        if cfg.linux.is_some() {
            devices.add_linux_platform(events_tx.clone(), stop.clone())?;
        }
        if let Some(disk) = &cfg.disk {
            devices.add_disk(disk)?;
        }
        if let Some(nic) = &cfg.nic {
            devices.add_nic(nic)?;
        }
        let devices = devices.finish();
        let _ = device_counters.set(devices.counters.clone());

        vcpu::install_kick_handler()?;
        let vcpus = match (&cfg.linux, probe_entry) {
            (Some(linux), _) => Self::linux_vcpus(cfg, linux, &vm, &kvm_fd, &mem)?,
            (None, entry) => {
                let starts = boot::setup(&mem, entry.unwrap_or(0), mem_size, cfg.vcpus)?;
                starts
                    .iter()
                    .enumerate()
                    .map(|(i, start)| vcpu::create(&vm, &kvm_fd, i as u64, start))
                    .collect::<Result<Vec<_>, _>>()?
            }
        };
        // The TSC rate comes from a vCPU, so the boot information is written once they exist.
        let tsc_khz = vcpus[0].get_tsc_khz().map_err(Error::TscKhz)?;
        if cfg.linux.is_none() {
            boot::write_boot_info(
                &mem,
                &ProbeParams {
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
                },
            )?;
        }
        let _ = kvm_stats.set(
            vcpus
                .iter()
                .filter_map(kvm::stats::VcpuStats::open)
                .collect(),
        );

        Ok(Machine {
            vcpus,
            threads: Vec::new(),
            halt_watch: None,
            kvm_stats,
            vcpu_count: cfg.vcpus,
            linux: cfg.linux.is_some(),
            pio,
            mmio,
            exits,
            stop,
            events_tx,
            events,
            ioeventfd,
            tsc_khz,
            counters: devices.counters,
            workers: devices.workers,
            _pci: devices.pci,
            times: SetupTimes {
                begin,
                ready: Instant::now(),
                started: None,
            },
            _vm: vm,
            _mem: mem,
        })
    }

    /// The vCPUs of a Linux guest, with the kernel, initrd, zero page and MP table loaded.
    fn linux_vcpus(
        cfg: &MachineConfig,
        linux: &boot::linux::LinuxBoot,
        vm: &VmFd,
        kvm_fd: &kvm_ioctls::Kvm,
        mem: &GuestMemoryMmap,
    ) -> Result<Vec<kvm_ioctls::VcpuFd>, Error> {
        kvm::prepare_for_linux(vm)?;
        let mut pci_slots = Vec::new();
        if cfg.nic.is_some() {
            pci_slots.push(NIC_SLOT);
        }
        if cfg.disk.is_some() {
            pci_slots.push(DISK_SLOT);
        }
        let leaf1 = std::arch::x86_64::__cpuid(1);
        let entry = boot::linux::load(
            mem,
            linux,
            &boot::linux::Platform {
                mem_size: cfg.mem_mib << 20,
                vcpus: cfg.vcpus,
                pci_slots,
            },
            (leaf1.eax, leaf1.edx),
        )?;
        (0..cfg.vcpus as u64)
            .map(|i| vcpu::create_linux(vm, kvm_fd, i, (i == 0).then_some(&entry)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::from)
    }

    /// Starts one thread per vCPU.
    pub fn start(&mut self) -> Result<(), Error> {
        self.times.started = Some(Instant::now());
        let mut watched = Vec::new();
        for (id, v) in self.vcpus.drain(..).enumerate() {
            let liveness = Arc::new(vcpu::Liveness::default());
            let ctx = vcpu::Context {
                id,
                pio: self.pio.clone(),
                mmio: self.mmio.clone(),
                exits: self.exits.clone(),
                stop: self.stop.clone(),
                events: self.events_tx.clone(),
                liveness: liveness.clone(),
            };
            let t = std::thread::Builder::new()
                .name(format!("vcpu{id}"))
                .spawn(move || vcpu::run(v, ctx))
                .map_err(|e| Error::Thread(id, e))?;
            watched.push(halt::Watched::new(&t, liveness));
            self.threads.push(t);
        }
        // The probe cannot halt (HLT at CPL3 is a fault); a Linux guest powers off by halting.
        if self.linux {
            let w = halt::spawn(
                watched,
                self.kvm_stats.clone(),
                self.stop.clone(),
                self.events_tx.clone(),
            )
            .map_err(Error::HaltWatch)?;
            self.halt_watch = Some(w);
        }
        Ok(())
    }

    /// Operation counters of the devices, by device then counter name.
    pub fn device_counters(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        crate::counters::snapshot_all(&self.counters)
    }

    /// Device threads that failed and stopped (each logged once when it did). A virtio
    /// device's failure also shows to the guest, as DEVICE_NEEDS_RESET.
    pub fn failed_workers(&self) -> Vec<&str> {
        self.workers
            .iter()
            .filter(|w| w.failed())
            .map(|w| w.name())
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

    /// Whether the guest is a Linux kernel (its console carries the kernel's log).
    pub fn boots_linux(&self) -> bool {
        self.linux
    }

    pub fn vcpu_count(&self) -> usize {
        self.vcpu_count
    }

    /// How many times the guest wrote the ioeventfd calibration address (reading resets it).
    pub fn ioeventfd_count(&self) -> u64 {
        self.ioeventfd.read().unwrap_or(0)
    }

    /// Stops every vCPU: sets the stop flag and kicks each thread out of KVM_RUN until it
    /// ends (a vCPU spinning in the guest never exits by itself). Idempotent.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for w in &mut self.workers {
            w.stop();
        }
        // The watch kicks vCPU threads by their pthread_t: it ends before they are joined.
        if let Some(w) = self.halt_watch.take() {
            let _ = w.join();
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

impl Drop for Machine {
    fn drop(&mut self) {
        self.stop();
    }
}
