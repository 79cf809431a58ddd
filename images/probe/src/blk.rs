//! The virtio-blk driver (virtio 1.2, 5.2): several requests in flight, one slot of header,
//! data and status per request; completions polled, and with `profile=linux` waited for on
//! the queue's MSI-X interrupt when a poll finds none, as virtio_blk's completions arrive.
//! The block workloads that drive it are in disk.rs.

use crate::alloc;
use crate::args::Profile;
use crate::io::rdtsc;
use crate::virtio::{self, Device, Queue};
use crate::Env;

pub const T_IN: u32 = 0;
pub const T_OUT: u32 = 1;
pub const T_FLUSH: u32 = 4;
pub const SECTOR: u64 = 512;
const F_RO: u64 = 1 << 5;
const F_FLUSH: u64 = 1 << 9;

/// One request's memory: header, data, status.
#[derive(Clone, Copy)]
pub struct Slot {
    hdr: u64,
    data: u64,
    status: u64,
    started: u64,
}

pub struct Blk {
    dev: Device,
    pub q: Queue,
    pub capacity_sectors: u64,
    pub read_only: bool,
    slots: [Option<Slot>; 256],
    overdue_ticks: u64,
}

impl Blk {
    /// `profile=linux` negotiates EVENT_IDX and takes the queue's interrupt when idle, as
    /// Linux's virtio_blk does; `poll` negotiates EVENT_IDX and only polls; `batched`
    /// notifies once per batch of new requests whatever the device is doing, and only polls.
    pub fn open(env: &Env, queue_size: u16, profile: Profile) -> Result<Blk, virtio::Error> {
        let dev = Device::find(2)?;
        let (event_idx, irq) = match profile {
            Profile::Linux => (virtio::F_RING_EVENT_IDX, Some(crate::irq::BLK)),
            Profile::Poll => (virtio::F_RING_EVENT_IDX, None),
            Profile::Batched => (0, None),
        };
        let f = dev.begin(F_RO | F_FLUSH | event_idx)?;
        if irq.is_some() {
            dev.enable_msix()?;
        }
        let q = dev.queue(0, queue_size, irq)?;
        dev.driver_ok()?;
        // SAFETY: device config is MMIO of this device; capacity is its first field.
        let capacity_sectors = unsafe { core::ptr::read_volatile(dev.device_cfg as *const u64) };
        Ok(Blk {
            dev,
            q,
            capacity_sectors,
            read_only: f & F_RO != 0,
            slots: [None; 256],
            overdue_ticks: u64::from(env.tsc_khz.max(1_000_000)) * 100,
        })
    }

    fn slot(&mut self, head: u16, bs: u64) -> Result<Slot, virtio::Error> {
        let i = usize::from(head) % self.slots.len();
        if let Some(s) = self.slots[i] {
            return Ok(s);
        }
        let hdr = alloc::alloc(16 + 1, 64).ok_or(virtio::Error::NoMemory)?;
        let data = alloc::alloc(bs.max(SECTOR), 4096).ok_or(virtio::Error::NoMemory)?;
        let s = Slot {
            hdr,
            data,
            status: hdr + 16,
            started: 0,
        };
        self.slots[i] = Some(s);
        Ok(s)
    }

    /// Queues one request (without notifying); the slot's buffers are reused per head.
    pub fn submit(&mut self, kind: u32, sector: u64, len: u64) -> Result<u16, virtio::Error> {
        // The head a push will use is the free-list head: reserve its slot first.
        let mut bufs = [(0u64, 0u32, false); 3];
        let probe_head = self.q.peek_head();
        let mut s = self.slot(probe_head, len.max(SECTOR * 8))?;
        // SAFETY: the slot's header and status bytes are this driver's allocation.
        unsafe {
            core::ptr::write_volatile(s.hdr as *mut u32, kind);
            core::ptr::write_volatile((s.hdr + 4) as *mut u32, 0);
            core::ptr::write_volatile((s.hdr + 8) as *mut u64, sector);
            core::ptr::write_volatile(s.status as *mut u8, 0xff);
        }
        bufs[0] = (s.hdr, 16, false);
        let n = if len > 0 {
            bufs[1] = (s.data, len as u32, kind == T_IN);
            bufs[2] = (s.status, 1, true);
            3
        } else {
            bufs[1] = (s.status, 1, true);
            2
        };
        s.started = rdtsc();
        let head = self
            .q
            .push(&bufs[..n])
            .ok_or(virtio::Error::QueueUnavailable(0))?;
        self.slots[usize::from(head) % 256] = Some(s);
        Ok(head)
    }

    /// Waits for one completion: (slot, status byte, latency in TSC ticks). With an
    /// interrupt (`profile=linux`), a poll that finds nothing waits for it.
    pub fn complete(&mut self) -> Result<(Slot, u8, u64), virtio::Error> {
        // Reading the device status is an exit: only look when a completion is long overdue
        // (100 ms), so polling costs nothing in the measured window.
        let mut check_at = rdtsc() + self.overdue_ticks;
        loop {
            if let Some((head, _)) = self.q.pop_used() {
                let now = rdtsc();
                let s = self.slots[usize::from(head) % 256]
                    .ok_or(virtio::Error::QueueUnavailable(0))?;
                // SAFETY: the status byte is this driver's allocation, written by the device.
                let st = unsafe { core::ptr::read_volatile(s.status as *const u8) };
                return Ok((s, st, now - s.started));
            }
            let now = rdtsc();
            if now >= check_at {
                if self.dev.needs_reset() {
                    return Err(virtio::Error::NeedsReset);
                }
                check_at = now + self.overdue_ticks;
            }
            if !self.q.idle(false, check_at) {
                crate::io::pause();
            }
        }
    }

    /// One synchronous request; returns its status.
    pub fn sync(
        &mut self,
        kind: u32,
        sector: u64,
        data: Option<&[u8]>,
        out: Option<&mut [u8]>,
        len: u64,
    ) -> Result<u8, virtio::Error> {
        let head = self.submit(kind, sector, len)?;
        let s = self.slots[usize::from(head) % 256].ok_or(virtio::Error::NoMemory)?;
        if let Some(d) = data {
            // SAFETY: the slot's data buffer holds at least `len` bytes (allocated for it).
            unsafe { core::ptr::copy_nonoverlapping(d.as_ptr(), s.data as *mut u8, d.len()) };
        }
        self.q.notify();
        let (s, st, _) = self.complete()?;
        if let Some(o) = out {
            // SAFETY: as above; the device wrote `len` bytes there.
            unsafe { core::ptr::copy_nonoverlapping(s.data as *const u8, o.as_mut_ptr(), o.len()) };
        }
        Ok(st)
    }
}
