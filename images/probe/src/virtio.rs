//! A virtio 1.x driver core: the modern PCI transport (virtio 1.2, 4.1: capabilities,
//! common configuration, notify, MSI-X vectors) and split virtqueues (2.7). Completions are
//! found by polling the used ring, with the device's interrupts suppressed
//! (VRING_AVAIL_F_NO_INTERRUPT, or with VIRTIO_F_EVENT_IDX a `used_event` kept behind the
//! used index) while the driver polls. A queue given an MSI-X vector ([`Device::queue`]) can
//! also ask for an interrupt when it would otherwise idle, as Linux's drivers do
//! ([`Queue::enable_cb`], [`Queue::enable_cb_delayed`], [`Queue::disable_cb`]: virtio_ring's
//! names), and the caller waits for it (`irq::wait`).
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
/// How long a used buffer may wait for its interrupt before [`Queue::idle`] calls the
/// interrupt missed (it takes ~30 µs from the used entry to the handler on KVM-PVM,
/// docs/probe.md).
pub const MISSED_AFTER_MS: u64 = 100;
const S_ACK: u8 = 1;
const S_DRIVER: u8 = 2;
const S_DRIVER_OK: u8 = 4;
const S_FEATURES_OK: u8 = 8;
const S_NEEDS_RESET: u8 = 64;
const DESC_F_NEXT: u16 = 1;
pub const DESC_F_WRITE: u16 = 2;
const AVAIL_F_NO_INTERRUPT: u16 = 1;
/// "No vector" in `config_msix_vector` / `queue_msix_vector` (virtio 1.2, 4.1.5.1.2).
const NO_VECTOR: u16 = 0xffff;
/// The MSI-X capability's ID and its enable bit in Message Control (PCI 3.0, 6.8.2.3).
const CAP_MSIX: u8 = 0x11;
const MSIX_ENABLE: u32 = 1 << 15;
/// An MSI to vCPU 0's local APIC (SDM vol. 3A, 11.11.1: physical destination 0, fixed
/// delivery, edge); the vector goes in the message data.
const MSI_ADDRESS: u32 = 0xfee0_0000;

#[derive(Debug, Clone, Copy)]
pub enum Error {
    NoDevice,
    NoCapability(u8),
    FeaturesRefused,
    NoMemory,
    QueueUnavailable(u16),
    NeedsReset,
    /// Interrupts were asked for and the device has no MSI-X capability.
    NoMsix,
    /// The device refused queue `q`'s MSI-X vector (read back as NO_VECTOR).
    VectorRefused(u16),
    /// The device's MSI-X table has no entry left for queue `q`.
    NoVectorLeft(u16),
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
            Error::NoMsix => write!(
                f,
                "the device has no MSI-X capability (profile=linux takes its interrupts)"
            ),
            Error::VectorRefused(q) => write!(f, "the device refused queue {q}'s MSI-X vector"),
            Error::NoVectorLeft(q) => {
                write!(f, "the device's MSI-X table has no entry left for queue {q}")
            }
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
    pci: crate::pci::Function,
    common: u64,
    notify: u64,
    notify_mult: u32,
    pub device_cfg: u64,
    /// What `begin` negotiated.
    features: core::cell::Cell<u64>,
    msix: Option<Msix>,
    /// The next MSI-X table entry [`Device::queue`] hands out.
    next_entry: core::cell::Cell<u16>,
}

/// A function's MSI-X capability: its offset in configuration space, the table's address and
/// how many entries it has.
#[derive(Clone, Copy)]
struct Msix {
    cap: u8,
    table: u64,
    entries: u16,
}

impl Device {
    /// Finds the device (modern ID 0x1040 + type) and its capabilities.
    pub fn find(device_type: u16) -> Result<Device, Error> {
        let pci = crate::pci::find(VENDOR, 0x1040 + device_type).ok_or(Error::NoDevice)?;
        pci.enable();
        let (mut common, mut notify, mut device_cfg, mut mult) = (None, None, None, 0);
        let mut msix = None;
        pci.capabilities(|off, id| {
            if id == CAP_MSIX && msix.is_none() {
                let entries = ((pci.read(off) >> 16) & 0x7ff) as u16 + 1;
                let table = pci.read(off + 4);
                if let Some((base, false)) = pci.bar((table & 7) as u8) {
                    msix = Some(Msix {
                        cap: off,
                        table: base + u64::from(table & !7),
                        entries,
                    });
                }
                return;
            }
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
            pci,
            msix,
            next_entry: core::cell::Cell::new(0),
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

    /// Enables MSI-X (before the queues are set up: a vector is only accepted then, virtio
    /// 1.2, 4.1.5.1.3) with configuration changes raising none, and the local APIC the
    /// vectors go to (`irq::enable`).
    pub fn enable_msix(&self) -> Result<(), Error> {
        let m = self.msix.ok_or(Error::NoMsix)?;
        crate::irq::enable();
        // Message Control is the upper half of the capability's first dword (its lower half
        // is read-only); function mask stays clear.
        let ctrl = self.pci.read(m.cap);
        self.pci.write(m.cap, (ctrl & !(1 << 30)) | (MSIX_ENABLE << 16));
        write16(self.common + 0x10, NO_VECTOR);
        self.next_entry.set(0);
        Ok(())
    }

    /// Sets up queue `index` with at most `want` entries; with `irq`, its interrupts raise the
    /// probe's vector `irq::BASE + irq` through an MSI-X table entry of its own (after
    /// [`Device::enable_msix`]), still suppressed until [`Queue::enable_cb`].
    pub fn queue(&self, index: u16, want: u16, irq: Option<usize>) -> Result<Queue, Error> {
        write16(self.common + 0x16, index);
        let max = read16(self.common + 0x18);
        if max == 0 {
            return Err(Error::QueueUnavailable(index));
        }
        if let Some(i) = irq {
            let m = self.msix.ok_or(Error::NoMsix)?;
            let entry = self.next_entry.get();
            if entry >= m.entries {
                return Err(Error::NoVectorLeft(index));
            }
            self.next_entry.set(entry + 1);
            // The entry (PCI 3.0, 6.8.2.6): address low, high, data, vector control (unmasked).
            let e = m.table + u64::from(entry) * 16;
            mmio_write32(e, MSI_ADDRESS);
            mmio_write32(e + 4, 0);
            mmio_write32(e + 8, u32::from(crate::irq::BASE) + i as u32);
            mmio_write32(e + 12, 0);
            write16(self.common + 0x1a, entry);
            if read16(self.common + 0x1a) != entry {
                return Err(Error::VectorRefused(index));
            }
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
            irq,
            cb: false,
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
    /// The probe's vector (`irq::BASE` + this) the queue's MSI-X entry raises, if it has one.
    pub irq: Option<usize>,
    /// Interrupts asked for ([`Queue::enable_cb`]) and not since suppressed.
    cb: bool,
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
            if self.cb {
                // Interrupts wanted: for the next entry (what virtio_ring's get_buf does).
                self.set_used_event(self.last_used);
                fence(Ordering::SeqCst);
            } else {
                // Interrupts stay off: ask for one only at an index the device cannot reach
                // before the next pop moves it on. (One just behind `last_used` is racy: a
                // device that checks after this pop has read its newest entry sees the event
                // index inside the range it just published, and interrupts.)
                self.set_used_event(self.last_used.wrapping_add(NO_EVENT_AHEAD));
            }
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

impl Queue {
    fn set_used_event(&self, v: u16) {
        write16(self.avail + 4 + 2 * u64::from(self.size), v);
    }

    /// Whether the device has used buffers the driver has not taken yet.
    pub fn has_used(&self) -> bool {
        read16(self.used + 2) != self.last_used
    }

    /// Asks for an interrupt at the next used buffer (virtio_ring's `virtqueue_enable_cb`);
    /// true if none is waiting already, so the caller may wait for the interrupt. False
    /// means poll again (and [`Queue::disable_cb`] before idling).
    pub fn enable_cb(&mut self) -> bool {
        self.cb = true;
        if self.event_idx {
            self.set_used_event(self.last_used);
        } else {
            write16(self.avail, 0);
        }
        // The request must be visible before the used index is read: the device publishes
        // the index, then reads `used_event` (2.7.10): one of us sees the other.
        fence(Ordering::SeqCst);
        !self.has_used()
    }

    /// Asks for an interrupt only when about three quarters of the buffers outstanding now
    /// have been used (virtio_ring's `virtqueue_enable_cb_delayed`, what virtio_net's
    /// transmit path uses); true unless that many are used already. Without EVENT_IDX it is
    /// [`Queue::enable_cb`].
    pub fn enable_cb_delayed(&mut self) -> bool {
        if !self.event_idx {
            return self.enable_cb();
        }
        self.cb = true;
        let bufs = self.avail_idx.wrapping_sub(self.last_used) * 3 / 4;
        self.set_used_event(self.last_used.wrapping_add(bufs));
        fence(Ordering::SeqCst);
        read16(self.used + 2).wrapping_sub(self.last_used) <= bufs
    }

    /// What a driver of the `linux` profile does when a poll finds nothing: asks for the
    /// queue's interrupt ([`Queue::enable_cb`], or with `delayed` [`Queue::enable_cb_delayed`])
    /// and, unless work arrived meanwhile, waits for it until `deadline` (Linux's vCPU would
    /// halt), then suppresses interrupts again. A completion in the ring whose interrupt
    /// has not come [`MISSED_AFTER_MS`] past the deadline is counted as missed
    /// (`irq::missed`). False for a queue without a vector: the caller just polls.
    pub fn idle(&mut self, delayed: bool, deadline: u64) -> bool {
        let Some(i) = self.irq else {
            return false;
        };
        let seen = crate::irq::count(i);
        let idle = if delayed {
            self.enable_cb_delayed()
        } else {
            self.enable_cb()
        };
        if idle
            && crate::irq::wait(i, seen, deadline) == crate::irq::Wait::TimedOut
            && !delayed
            && self.has_used()
        {
            // The entry may have landed just before the deadline, its interrupt on its way.
            let grace = deadline + u64::from(crate::io::tsc_khz_hint()) * MISSED_AFTER_MS;
            if crate::irq::wait(i, seen, grace) == crate::irq::Wait::TimedOut {
                crate::irq::missed();
            }
        }
        self.disable_cb();
        true
    }

    /// Suppresses the queue's interrupts again (virtio_ring's `virtqueue_disable_cb`).
    pub fn disable_cb(&mut self) {
        if !self.cb {
            return;
        }
        self.cb = false;
        if self.event_idx {
            self.set_used_event(self.last_used.wrapping_add(NO_EVENT_AHEAD));
        } else {
            write16(self.avail, AVAIL_F_NO_INTERRUPT);
        }
    }
}
