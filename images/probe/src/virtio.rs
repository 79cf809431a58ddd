//! A polling virtio 1.x driver core: the modern PCI transport (virtio 1.2, 4.1: capabilities,
//! common configuration, notify) and split virtqueues (2.7), with device interrupts
//! suppressed (VRING_AVAIL_F_NO_INTERRUPT, or with VIRTIO_F_EVENT_IDX a `used_event` kept
//! behind the used index): completions are found by polling the used ring.
//!
//! With EVENT_IDX negotiated (2.7.10, as Linux's virtio_ring does) a notify is sent only when
//! the device's `avail_event` says it is waiting for the buffers made available since the last
//! one; a device that is still draining the ring gets none.

use core::sync::atomic::{fence, Ordering};

use crate::alloc;
use crate::io::{mmio_read32, mmio_write32};

pub const VENDOR: u16 = 0x1af4;
pub const F_VERSION_1: u64 = 1 << 32;
pub const F_RING_EVENT_IDX: u64 = 1 << 29;
/// How far ahead of the driver's used index a polling driver puts `used_event` (virtio 1.2,
/// 2.7.10): half the 16-bit index space, so no batch the device publishes (at most a queue's
/// size) ever crosses it.
const NO_EVENT_AHEAD: u16 = 0x8000;
const S_ACK: u8 = 1;
const S_DRIVER: u8 = 2;
const S_DRIVER_OK: u8 = 4;
const S_FEATURES_OK: u8 = 8;
const S_NEEDS_RESET: u8 = 64;
const DESC_F_NEXT: u16 = 1;
pub const DESC_F_WRITE: u16 = 2;
const AVAIL_F_NO_INTERRUPT: u16 = 1;

#[derive(Debug, Clone, Copy)]
pub enum Error {
    NoDevice,
    NoCapability(u8),
    FeaturesRefused,
    NoMemory,
    QueueUnavailable(u16),
    NeedsReset,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::NoDevice => write!(f, "no such virtio device on bus 0"),
            Error::NoCapability(t) => write!(f, "virtio capability type {t} missing"),
            Error::FeaturesRefused => write!(f, "the device refused FEATURES_OK"),
            Error::NoMemory => write!(f, "out of guest memory for rings and buffers"),
            Error::QueueUnavailable(q) => write!(f, "queue {q} is not available"),
            Error::NeedsReset => write!(f, "the device entered DEVICE_NEEDS_RESET"),
        }
    }
}

fn read8(a: u64) -> u8 {
    // SAFETY: `a` is inside a BAR of a device this driver owns (identity-mapped MMIO hole).
    unsafe { core::ptr::read_volatile(a as *const u8) }
}
fn write8(a: u64, v: u8) {
    // SAFETY: as for `read8`.
    unsafe { core::ptr::write_volatile(a as *mut u8, v) }
}
fn read16(a: u64) -> u16 {
    // SAFETY: as for `read8`.
    unsafe { core::ptr::read_volatile(a as *const u16) }
}
fn write16(a: u64, v: u16) {
    // SAFETY: as for `read8`.
    unsafe { core::ptr::write_volatile(a as *mut u16, v) }
}

/// A virtio-pci device in the modern interface.
pub struct Device {
    common: u64,
    notify: u64,
    notify_mult: u32,
    pub device_cfg: u64,
    /// What `begin` negotiated.
    features: core::cell::Cell<u64>,
}

impl Device {
    /// Finds the device (modern ID 0x1040 + type) and its capabilities.
    pub fn find(device_type: u16) -> Result<Device, Error> {
        let pci = crate::pci::find(VENDOR, 0x1040 + device_type).ok_or(Error::NoDevice)?;
        pci.enable();
        let (mut common, mut notify, mut device_cfg, mut mult) = (None, None, None, 0);
        pci.capabilities(|off, id| {
            if id != 0x09 {
                return;
            }
            let w0 = pci.read(off);
            let cfg_type = (w0 >> 24) as u8;
            let bar = pci.read(off + 4) as u8;
            let offset = u64::from(pci.read(off + 8));
            let Some((base, false)) = pci.bar(bar) else {
                return;
            };
            let at = base + offset;
            match cfg_type {
                1 if common.is_none() => common = Some(at),
                2 if notify.is_none() => {
                    notify = Some(at);
                    mult = pci.read(off + 16);
                }
                4 if device_cfg.is_none() => device_cfg = Some(at),
                _ => {}
            }
        });
        Ok(Device {
            common: common.ok_or(Error::NoCapability(1))?,
            notify: notify.ok_or(Error::NoCapability(2))?,
            notify_mult: mult,
            device_cfg: device_cfg.ok_or(Error::NoCapability(4))?,
            features: core::cell::Cell::new(0),
        })
    }

    fn status(&self) -> u8 {
        read8(self.common + 0x14)
    }

    fn set_status(&self, s: u8) {
        write8(self.common + 0x14, s);
    }

    /// Reset, acknowledge, negotiate `wanted & offered` (VERSION_1 required); returns the
    /// negotiated features. Queues are set up next, then `driver_ok`.
    pub fn begin(&self, wanted: u64) -> Result<u64, Error> {
        self.features.set(0);
        self.set_status(0);
        while self.status() != 0 {
            crate::io::pause();
        }
        self.set_status(S_ACK);
        self.set_status(S_ACK | S_DRIVER);
        let mut offered = 0u64;
        for sel in 0..2u32 {
            mmio_write32(self.common, sel);
            offered |= u64::from(mmio_read32(self.common + 4)) << (32 * sel);
        }
        let f = (wanted | F_VERSION_1) & offered;
        if f & F_VERSION_1 == 0 {
            return Err(Error::FeaturesRefused);
        }
        for sel in 0..2u32 {
            mmio_write32(self.common + 8, sel);
            mmio_write32(self.common + 0xc, (f >> (32 * sel)) as u32);
        }
        self.set_status(S_ACK | S_DRIVER | S_FEATURES_OK);
        if self.status() & S_FEATURES_OK == 0 {
            return Err(Error::FeaturesRefused);
        }
        self.features.set(f);
        Ok(f)
    }

    /// Sets up queue `index` with at most `want` entries.
    pub fn queue(&self, index: u16, want: u16) -> Result<Queue, Error> {
        write16(self.common + 0x16, index);
        let max = read16(self.common + 0x18);
        if max == 0 {
            return Err(Error::QueueUnavailable(index));
        }
        let mut size = max.min(want).clamp(1, 1024);
        while !size.is_power_of_two() {
            size &= size - 1;
        }
        let n = u64::from(size);
        let desc = alloc::alloc(16 * n, 4096).ok_or(Error::NoMemory)?;
        let avail = alloc::alloc(6 + 2 * n, 4096).ok_or(Error::NoMemory)?;
        let used = alloc::alloc(6 + 8 * n, 4096).ok_or(Error::NoMemory)?;
        write16(self.common + 0x18, size);
        for (off, addr) in [(0x20, desc), (0x28, avail), (0x30, used)] {
            mmio_write32(self.common + off, addr as u32);
            mmio_write32(self.common + off + 4, (addr >> 32) as u32);
        }
        let notify_off = read16(self.common + 0x1e);
        write16(self.common + 0x1c, 1);
        // Polling: ask the device not to interrupt (the flag without EVENT_IDX; with it the
        // device reads `used_event`, which `pop_used` keeps half the index space ahead).
        write16(avail, AVAIL_F_NO_INTERRUPT);
        let event_idx = self.features.get() & F_RING_EVENT_IDX != 0;
        if event_idx {
            write16(avail + 4 + 2 * n, NO_EVENT_AHEAD);
        }
        Ok(Queue {
            event_idx,
            kicked_idx: 0,
            kicks: 0,
            index,
            size,
            desc,
            avail,
            used,
            notify: self.notify + u64::from(notify_off) * u64::from(self.notify_mult),
            free_head: 0,
            num_free: size,
            avail_idx: 0,
            last_used: 0,
            next_free: core::array::from_fn(|i| (i as u16 + 1) % size),
            chain: [(0, 0); 1024],
        })
    }

    pub fn driver_ok(&self) -> Result<(), Error> {
        self.set_status(S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
        if self.status() & S_NEEDS_RESET != 0 {
            return Err(Error::NeedsReset);
        }
        Ok(())
    }

    pub fn needs_reset(&self) -> bool {
        self.status() & S_NEEDS_RESET != 0
    }
}

/// A split virtqueue the driver owns.
pub struct Queue {
    pub index: u16,
    pub size: u16,
    /// VIRTIO_F_EVENT_IDX was negotiated: notify only when `avail_event` asks for it.
    event_idx: bool,
    /// The avail index at the last notify decision.
    kicked_idx: u16,
    /// Notifies actually written (each an MMIO write: an ioeventfd under vmbench).
    pub kicks: u64,
    desc: u64,
    avail: u64,
    used: u64,
    notify: u64,
    free_head: u16,
    num_free: u16,
    avail_idx: u16,
    last_used: u16,
    /// The free list, kept on the driver's side (the device may scribble on descriptors).
    next_free: [u16; 1024],
    /// Per head: (length of its chain, its last descriptor), to free it on completion.
    chain: [(u16, u16); 1024],
}

impl Queue {
    pub fn free(&self) -> u16 {
        self.num_free
    }

    /// The head the next `push` will use (drivers key per-request buffers by head).
    pub fn peek_head(&self) -> u16 {
        self.free_head
    }

    /// Writes a chain of (address, length, device-writable) buffers and makes it available
    /// (without notifying); returns its head.
    pub fn push(&mut self, bufs: &[(u64, u32, bool)]) -> Option<u16> {
        let n = bufs.len() as u16;
        if n == 0 || n > self.num_free {
            return None;
        }
        let head = self.free_head;
        let mut idx = head;
        let mut last = head;
        for (i, &(addr, len, write)) in bufs.iter().enumerate() {
            let next = self.next_free[usize::from(idx)];
            let mut flags = if write { DESC_F_WRITE } else { 0 };
            if i + 1 < bufs.len() {
                flags |= DESC_F_NEXT;
            }
            let d = self.desc + u64::from(idx) * 16;
            // SAFETY: the descriptor table is this queue's allocation of `size` entries.
            unsafe {
                core::ptr::write_volatile(d as *mut u64, addr);
                core::ptr::write_volatile((d + 8) as *mut u32, len);
                core::ptr::write_volatile((d + 12) as *mut u16, flags);
                core::ptr::write_volatile((d + 14) as *mut u16, next);
            }
            last = idx;
            idx = next;
        }
        self.chain[usize::from(head)] = (n, last);
        self.free_head = idx;
        self.num_free -= n;
        let slot = self.avail + 4 + u64::from(self.avail_idx % self.size) * 2;
        write16(slot, head);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        // The ring entry must be visible before the index that publishes it.
        fence(Ordering::Release);
        write16(self.avail + 2, self.avail_idx);
        Some(head)
    }

    /// Tells the device there is work (one MMIO write: an ioeventfd under vmbench), unless
    /// EVENT_IDX says the device has not yet caught up with the previous notify.
    pub fn notify(&mut self) {
        // The new avail index must be visible before `avail_event` is read (the device
        // publishes `avail_event`, then re-reads the avail index: one of us sees the other).
        fence(Ordering::SeqCst);
        if self.event_idx {
            let avail_event = read16(self.used + 4 + 8 * u64::from(self.size));
            let (new, old) = (self.avail_idx, self.kicked_idx);
            self.kicked_idx = new;
            // vring_need_event (2.7.10.1): the device asked to hear about index `avail_event`
            // and it lies in (old, new].
            if new.wrapping_sub(avail_event).wrapping_sub(1) >= new.wrapping_sub(old) {
                return;
            }
        }
        self.kicks += 1;
        write16(self.notify, self.index);
    }

    /// Takes one completion if there is one: (head, bytes written by the device).
    pub fn pop_used(&mut self) -> Option<(u16, u32)> {
        let idx = read16(self.used + 2);
        if idx == self.last_used {
            return None;
        }
        fence(Ordering::Acquire);
        let e = self.used + 4 + u64::from(self.last_used % self.size) * 8;
        // SAFETY: the used ring is this queue's allocation; the entry at `last_used` was
        // published by the device (idx moved past it).
        let (id, len) = unsafe {
            (
                core::ptr::read_volatile(e as *const u32),
                core::ptr::read_volatile((e + 4) as *const u32),
            )
        };
        self.last_used = self.last_used.wrapping_add(1);
        if self.event_idx {
            // Interrupts stay off: ask for one only at an index the device cannot reach before
            // the next pop moves it on. (One just behind `last_used` is racy: a device that
            // checks after this pop has read its newest entry sees the event index inside
            // the range it just published, and interrupts.)
            write16(
                self.avail + 4 + 2 * u64::from(self.size),
                self.last_used.wrapping_add(NO_EVENT_AHEAD),
            );
        }
        let head = (id as u16) % self.size;
        let (n, last) = self.chain[usize::from(head)];
        // The chain's descriptors are linked in `next_free` already; splice them back in.
        self.next_free[usize::from(last)] = self.free_head;
        self.free_head = head;
        self.num_free += n;
        Some((head, len))
    }
}
