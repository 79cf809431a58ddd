//! The virtio-pci modern transport (virtio 1.2, 4.1): vendor capabilities pointing into BAR0
//! (common, notify, ISR, device configuration), the MSI-X table and PBA in the same BAR, the
//! status state machine with reset, feature negotiation and queue set-up. Notifications
//! arrive on per-queue ioeventfds the machine registers at the notify addresses, so they
//! never exit to user space; an MMIO write there (before registration) is forwarded.

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::msix::{VirtioIrq, ENTRY_SIZE};
use super::{features, status, Activation, VirtioDevice, Worker, NO_VECTOR};
use crate::bus::{Access, BusDevice};
use crate::pci::config::{BarKind, ConfigSpace, Identity};
use crate::pci::{ConfigChange, PciFunction};

pub const VENDOR: u16 = 0x1af4;
pub const BAR_SIZE: u64 = 0x8000;
pub const COMMON: u64 = 0x0000;
pub const ISR: u64 = 0x1000;
pub const DEVICE_CFG: u64 = 0x2000;
pub const NOTIFY: u64 = 0x3000;
pub const NOTIFY_MULTIPLIER: u32 = 4;
pub const MSIX_TABLE: u64 = 0x4000;
pub const MSIX_PBA: u64 = 0x5000;
const REGION: u64 = 0x1000;

const CAP_VENDOR: u8 = 0x09;
const CAP_MSIX: u8 = 0x11;
const CFG_COMMON: u8 = 1;
const CFG_NOTIFY: u8 = 2;
const CFG_ISR: u8 = 3;
const CFG_DEVICE: u8 = 4;
const CFG_PCI: u8 = 5;

/// PCI class per device type.
fn class_of(device_type: u16) -> u32 {
    match device_type {
        1 => 0x02_00_00, // network, Ethernet
        2 => 0x01_80_00, // mass storage, other
        _ => 0xff_00_00,
    }
}

fn vendor_cap(cfg_type: u8, offset: u32, length: u32, extra: &[u8]) -> Vec<u8> {
    // cap_len counts the whole capability including the ID and next bytes.
    let mut b = vec![
        (16 + extra.len()) as u8,
        cfg_type,
        0, /* bar */
        0,
        0,
        0,
    ];
    b.extend_from_slice(&offset.to_le_bytes());
    b.extend_from_slice(&length.to_le_bytes());
    b.extend_from_slice(extra);
    b
}

pub struct VirtioPci {
    config: ConfigSpace,
    device: Box<dyn VirtioDevice>,
    irq: Arc<VirtioIrq>,
    mem: GuestMemoryMmap,
    queues: Vec<Queue>,
    /// The driver wrote a size virtio-queue could not take (zero, above the maximum, not a
    /// power of two): the queue must not start with a size the driver does not expect.
    bad_size: Vec<bool>,
    notify: Vec<EventFd>,
    status: u8,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    queue_select: u16,
    worker: Option<Box<dyn Worker>>,
    msix_cap: usize,
    pci_cfg_cap: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid queue size {0}")]
    QueueSize(u16),
    #[error("cannot create an eventfd")]
    EventFd(#[source] std::io::Error),
}

impl VirtioPci {
    /// `irq` must have one MSI-X vector per queue plus one for configuration changes.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        irq: Arc<VirtioIrq>,
        bar0: u64,
    ) -> Result<Self, Error> {
        let ty = device.device_type();
        let mut config = ConfigSpace::new(Identity {
            vendor: VENDOR,
            device: 0x1040 + ty,
            class: class_of(ty),
            revision: 1,
            subsystem_vendor: VENDOR,
            subsystem: 0x40,
            interrupt_pin: 1,
        });
        config.add_bar(0, BarKind::Mem64, BAR_SIZE, bar0);
        let nq = device.queue_max_sizes().len() as u32;
        let table_size = irq.table_size() as u16;
        let msix_ctrl = table_size.saturating_sub(1);
        let mut msix = msix_ctrl.to_le_bytes().to_vec();
        msix.extend_from_slice(&(MSIX_TABLE as u32).to_le_bytes()); // BIR 0
        msix.extend_from_slice(&(MSIX_PBA as u32).to_le_bytes());
        let msix_cap = config.add_capability(CAP_MSIX, &msix);
        config.add_capability(
            CAP_VENDOR,
            &vendor_cap(CFG_COMMON, COMMON as u32, 0x40, &[]),
        );
        config.add_capability(
            CAP_VENDOR,
            &vendor_cap(
                CFG_NOTIFY,
                NOTIFY as u32,
                nq * NOTIFY_MULTIPLIER,
                &NOTIFY_MULTIPLIER.to_le_bytes(),
            ),
        );
        config.add_capability(CAP_VENDOR, &vendor_cap(CFG_ISR, ISR as u32, 1, &[]));
        config.add_capability(
            CAP_VENDOR,
            &vendor_cap(CFG_DEVICE, DEVICE_CFG as u32, REGION as u32, &[]),
        );
        // The PCI configuration access capability: bar/offset/length are the driver's to
        // write, and the data window after them reaches the BAR.
        let pci_cfg_cap = config.add_capability(CAP_VENDOR, &vendor_cap(CFG_PCI, 0, 0, &[0; 4]));
        config.set_writable(msix_cap + 3, &[0xc0]); // enable and function mask
        config.set_writable(pci_cfg_cap + 4, &[0xff]); // bar
        config.set_writable(pci_cfg_cap + 8, &[0xff; 8]); // offset, length
        config.set_writable(pci_cfg_cap + 16, &[0xff; 4]); // data

        let mut queues = Vec::new();
        let mut notify = Vec::new();
        for max in device.queue_max_sizes() {
            queues.push(Queue::new(max).map_err(|_| Error::QueueSize(max))?);
            notify.push(EventFd::new(libc::EFD_NONBLOCK).map_err(Error::EventFd)?);
        }
        Ok(VirtioPci {
            config,
            device,
            irq,
            mem,
            bad_size: vec![false; queues.len()],
            queues,
            notify,
            status: 0,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            queue_select: 0,
            worker: None,
            msix_cap,
            pci_cfg_cap,
        })
    }

    pub fn status(&self) -> u8 {
        self.status
    }

    fn reset(&mut self) {
        if let Some(w) = self.worker.take() {
            w.stop();
        }
        for q in &mut self.queues {
            q.reset();
        }
        self.bad_size.iter_mut().for_each(|b| *b = false);
        for fd in &self.notify {
            let _ = fd.read(); // drop notifications that belonged to the old rings
        }
        self.status = 0;
        self.driver_features = 0;
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.queue_select = 0;
        self.irq.reset();
    }

    fn set_status(&mut self, v: u8) {
        if v == 0 {
            self.reset();
            return;
        }
        let mut v = v;
        let newly = v & !self.status;
        if newly & status::FEATURES_OK != 0 {
            let offered = self.device.features();
            let ok = self.driver_features & !offered == 0
                && self.driver_features & features::VERSION_1 != 0;
            if !ok {
                // The driver reads FEATURES_OK back and gives up (virtio 1.2, 3.1.1).
                v &= !status::FEATURES_OK;
            }
        }
        if newly & status::DRIVER_OK != 0 && self.status & status::FEATURES_OK != 0 {
            self.status = v;
            self.activate();
            return;
        }
        self.status = v;
    }

    fn activate(&mut self) {
        let event_idx = self.driver_features & features::RING_EVENT_IDX != 0;
        let mut queues = Vec::new();
        for (i, (q, fd)) in self.queues.iter_mut().zip(&self.notify).enumerate() {
            q.set_event_idx(event_idx);
            if !q.ready() {
                continue;
            }
            if self.bad_size[i] {
                self.fail("a queue was given a size that is not a power of two up to its maximum");
                return;
            }
            // Guest-chosen ring addresses and sizes: refuse what does not fit in memory.
            if !q.is_valid(&self.mem) {
                self.fail("a queue's rings are not valid (size or addresses outside memory)");
                return;
            }
            let Ok(fd) = fd.try_clone() else {
                self.fail("cannot clone a queue eventfd");
                return;
            };
            let Ok(q) = Queue::try_from(q.state()) else {
                self.fail("a queue's state is not valid");
                return;
            };
            queues.push((q, fd));
        }
        let a = Activation {
            mem: self.mem.clone(),
            interrupt: self.irq.clone(),
            queues,
            features: self.driver_features,
        };
        match self.device.activate(a) {
            Ok(w) => self.worker = Some(w),
            Err(e) => self.fail(&e),
        }
    }

    /// The device cannot go on: DEVICE_NEEDS_RESET and a configuration interrupt.
    fn fail(&mut self, why: &str) {
        log::warn!(
            "{}: {why}; the device needs a reset",
            self.device.debug_label()
        );
        self.status |= status::DEVICE_NEEDS_RESET;
        super::QueueInterrupt::config(&*self.irq);
    }

    fn status_now(&mut self) -> u8 {
        if self.worker.as_ref().is_some_and(|w| w.failed())
            && self.status & status::DEVICE_NEEDS_RESET == 0
        {
            self.status |= status::DEVICE_NEEDS_RESET;
        }
        self.status
    }

    fn queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(usize::from(self.queue_select))
    }

    /// Queue registers may change only before DRIVER_OK (virtio 1.2, 4.1.4.3.2).
    fn queue_writable(&self) -> bool {
        self.status & status::DRIVER_OK == 0
    }

    fn common_read(&mut self, off: u64, data: &mut [u8]) {
        let sel = usize::from(self.queue_select);
        let v: u64 = match off {
            0x00 => u64::from(self.device_feature_select),
            0x04 => match self.device_feature_select {
                0 => self.device.features() & 0xffff_ffff,
                1 => self.device.features() >> 32,
                _ => 0,
            },
            0x08 => u64::from(self.driver_feature_select),
            0x0c => match self.driver_feature_select {
                0 => self.driver_features & 0xffff_ffff,
                1 => self.driver_features >> 32,
                _ => 0,
            },
            0x10 => u64::from(self.irq.config_vector()),
            0x12 => self.queues.len() as u64,
            0x14 => u64::from(self.status_now()),
            0x15 => 0, // config_generation: the configuration never changes under the driver
            0x16 => u64::from(self.queue_select),
            0x18 => self.queues.get(sel).map_or(0, |q| u64::from(q.size())),
            0x1a => u64::from(if sel < self.queues.len() {
                self.irq.queue_vector(sel)
            } else {
                NO_VECTOR
            }),
            0x1c => self.queues.get(sel).map_or(0, |q| u64::from(q.ready())),
            0x1e => sel as u64, // queue_notify_off
            0x20 | 0x24 => self.queues.get(sel).map_or(0, |q| q.desc_table()) >> ((off - 0x20) * 8),
            0x28 | 0x2c => self.queues.get(sel).map_or(0, |q| q.avail_ring()) >> ((off - 0x28) * 8),
            0x30 | 0x34 => self.queues.get(sel).map_or(0, |q| q.used_ring()) >> ((off - 0x30) * 8),
            _ => 0,
        };
        let bytes = v.to_le_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = bytes.get(i).copied().unwrap_or(0);
        }
    }

    fn common_write(&mut self, off: u64, data: &[u8]) {
        let mut b = [0u8; 8];
        let n = data.len().min(8);
        b[..n].copy_from_slice(&data[..n]);
        let v = u64::from_le_bytes(b);
        let sel = usize::from(self.queue_select);
        let (lo, hi) = (Some(v as u32), Some((v >> 32) as u32));
        let addr_part = |off: u64, base: u64| {
            if off == base {
                (lo, if n == 8 { hi } else { None })
            } else {
                (None, lo)
            }
        };
        match off {
            0x00 => self.device_feature_select = v as u32,
            0x08 => self.driver_feature_select = v as u32,
            // Features are fixed once FEATURES_OK is set.
            0x0c if self.status & status::FEATURES_OK == 0 => match self.driver_feature_select {
                0 => {
                    self.driver_features = (self.driver_features & !0xffff_ffff) | (v & 0xffff_ffff)
                }
                1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (v << 32),
                _ => {}
            },
            0x10 => {
                self.irq.set_config_vector(v as u16);
            }
            0x14 => self.set_status(v as u8),
            0x16 => self.queue_select = v as u16,
            0x18 if self.queue_writable() => {
                // virtio-queue ignores an invalid size (not a power of two, above the
                // maximum); remember it so the queue fails at DRIVER_OK.

                let size = v as u16;
                if let Some(q) = self.queue() {
                    let ok = size.is_power_of_two() && size <= q.max_size();
                    q.set_size(size);
                    self.bad_size[sel] = !ok;
                }
            }
            0x1a if sel < self.queues.len() => {
                self.irq.set_queue_vector(sel, v as u16);
            }
            0x1c if self.queue_writable() => {
                if let Some(q) = self.queue() {
                    q.set_ready(v & 1 == 1);
                }
            }
            0x20 | 0x24 if self.queue_writable() => {
                let (l, h) = addr_part(off, 0x20);
                if let Some(q) = self.queue() {
                    q.set_desc_table_address(l, h);
                }
            }
            0x28 | 0x2c if self.queue_writable() => {
                let (l, h) = addr_part(off, 0x28);
                if let Some(q) = self.queue() {
                    q.set_avail_ring_address(l, h);
                }
            }
            0x30 | 0x34 if self.queue_writable() => {
                let (l, h) = addr_part(off, 0x30);
                if let Some(q) = self.queue() {
                    q.set_used_ring_address(l, h);
                }
            }
            _ => {}
        }
    }

    fn bar_read(&mut self, off: u64, data: &mut [u8]) {
        match off {
            COMMON..0x40 => self.common_read(off - COMMON, data),
            ISR => {
                data.fill(0);
                if let Some(b) = data.first_mut() {
                    *b = self.irq.read_isr();
                }
            }
            DEVICE_CFG..NOTIFY => self.device.read_config(off - DEVICE_CFG, data),
            MSIX_TABLE..MSIX_PBA => self.irq.table_read(off - MSIX_TABLE, data),
            MSIX_PBA..BAR_SIZE => self.irq.pba_read(off - MSIX_PBA, data),
            _ => data.fill(0),
        }
    }

    fn bar_write(&mut self, off: u64, data: &[u8]) {
        match off {
            COMMON..0x40 => self.common_write(off - COMMON, data),
            DEVICE_CFG..NOTIFY => self.device.write_config(off - DEVICE_CFG, data),
            NOTIFY..MSIX_TABLE => {
                // Only reached when the ioeventfd is not (yet) registered at this address.
                let q = ((off - NOTIFY) / u64::from(NOTIFY_MULTIPLIER)) as usize;
                if let Some(fd) = self.notify.get(q) {
                    let _ = fd.write(1);
                }
            }
            MSIX_TABLE..MSIX_PBA => self.irq.table_write(off - MSIX_TABLE, data),
            _ => {}
        }
    }

    fn bar0(&self) -> u64 {
        self.config.bar(0).map_or(0, |b| b.base)
    }

    /// The PCI configuration access capability's window (virtio 1.2, 4.1.4.9).
    fn pci_cfg_window(&self) -> Option<(u64, usize)> {
        let c = self.config.bytes();
        let p = self.pci_cfg_cap;
        if c[p + 4] != 0 {
            return None;
        }
        let off = u64::from(self.config.u32_at(p + 8));
        let len = self.config.u32_at(p + 12) as usize;
        matches!(len, 1 | 2 | 4).then_some((off, len))
    }
}

impl BusDevice for VirtioPci {
    fn debug_label(&self) -> &'static str {
        self.device.debug_label()
    }
    fn read(&mut self, a: Access, data: &mut [u8]) {
        let off = a.addr.wrapping_sub(self.bar0());
        if off < BAR_SIZE {
            self.bar_read(off, data);
        } else {
            data.fill(0xff);
        }
    }

    fn write(&mut self, a: Access, data: &[u8]) {
        let off = a.addr.wrapping_sub(self.bar0());
        if off < BAR_SIZE {
            self.bar_write(off, data);
        }
    }
}

impl PciFunction for VirtioPci {
    fn config_read(&self, reg: usize) -> u32 {
        self.config.read(reg)
    }

    fn config_write(&mut self, reg: usize, offset: u64, data: &[u8]) -> ConfigChange {
        let start = reg * 4 + offset as usize;
        let change = self.config.write(reg, offset, data);
        let ctrl = self.config.u16_at(self.msix_cap + 2);
        self.irq.set_control(ctrl & 0x8000 != 0, ctrl & 0x4000 != 0);
        let data_reg = self.pci_cfg_cap + 16;
        if (data_reg..data_reg + 4).contains(&start) {
            if let Some((off, len)) = self.pci_cfg_window() {
                let v = self.config.u32_at(data_reg).to_le_bytes();
                self.bar_write(off, &v[..len]);
            }
        }
        change
    }

    fn config_read_mut(&mut self, reg: usize) -> u32 {
        let data_reg = self.pci_cfg_cap + 16;
        if reg * 4 == data_reg {
            if let Some((off, len)) = self.pci_cfg_window() {
                let mut v = [0u8; 4];
                self.bar_read(off, &mut v[..len]);
                return u32::from_le_bytes(v);
            }
        }
        self.config.read(reg)
    }

    fn ioevents(&self) -> Vec<(usize, u64, EventFd)> {
        self.notify
            .iter()
            .enumerate()
            .filter_map(|(i, fd)| {
                let fd = fd.try_clone().ok()?;
                Some((0, NOTIFY + i as u64 * u64::from(NOTIFY_MULTIPLIER), fd))
            })
            .collect()
    }
}

impl Drop for VirtioPci {
    fn drop(&mut self) {
        if let Some(w) = self.worker.take() {
            w.stop();
        }
    }
}

/// The MSI-X table entry size, re-exported for tests that program vectors.
pub const MSIX_ENTRY: u64 = ENTRY_SIZE;

#[cfg(test)]
mod tests;
