//! What the fuzz targets share: a reader that turns the fuzzer's bytes into choices, guest
//! memory filled from them, and in-memory back-ends (a disk and a network peer) so that the
//! device code under test is real and only the storage behind it is a Vec.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm::backend::block::{check_range, BlockBackend, BlockFeatures};
use vmm::backend::net::{FrameMeta, NetBackend, NetCounters, Offloads};
use vmm::virtio::QueueInterrupt;

/// The fuzzer's bytes as a stream of choices; reads past the end give zeroes.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        head
    }

    pub fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }

    pub fn u16(&mut self) -> u16 {
        let mut b = [0u8; 2];
        let s = self.bytes(2);
        b[..s.len()].copy_from_slice(s);
        u16::from_le_bytes(b)
    }

    pub fn u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        let s = self.bytes(4);
        b[..s.len()].copy_from_slice(s);
        u32::from_le_bytes(b)
    }

    pub fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        let s = self.bytes(8);
        b[..s.len()].copy_from_slice(s);
        u64::from_le_bytes(b)
    }

    /// One of 1, 2, 4 or 8: the width of a register access.
    pub fn width(&mut self) -> usize {
        1 << (self.u8() % 4)
    }

    /// A length-prefixed slice of at most `max` bytes.
    pub fn chunk(&mut self, max: usize) -> &'a [u8] {
        let n = usize::from(self.u16()) % (max + 1);
        self.bytes(n)
    }
}

/// Guest RAM of `size` bytes at address 0, its start filled with `init`.
pub fn guest_memory(size: usize, init: &[u8]) -> GuestMemoryMmap {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).expect("guest memory");
    let n = init.len().min(size);
    mem.write_slice(&init[..n], GuestAddress(0))
        .expect("inside guest memory");
    mem
}

/// A split virtqueue of `size` entries at the given ring addresses, ready, as a driver that
/// finished setting it up leaves it.
pub fn ready_queue(size: u16, desc: u64, avail: u64, used: u64) -> Queue {
    let mut q = Queue::new(256).expect("queue");
    q.set_size(size);
    q.set_desc_table_address(Some(desc as u32), Some((desc >> 32) as u32));
    q.set_avail_ring_address(Some(avail as u32), Some((avail >> 32) as u32));
    q.set_used_ring_address(Some(used as u32), Some((used >> 32) as u32));
    q.set_ready(true);
    q
}

/// A ready split virtqueue of `size` entries laid out densely from `base` (16-aligned): the
/// descriptor table, the available ring right after it, the used ring at the next 4-byte
/// boundary. Returns the queue and the first 16-aligned address after it.
///
/// Dense rings at the start of guest memory put the fields that steer the device (the
/// available index, the first descriptors) within the first few dozen bytes of an input, so
/// the fuzzer reaches the chain parsers from short inputs instead of needing kilobytes of
/// padding before the first byte that matters (fuzz/make-seeds writes seeds in this layout).
pub fn packed_queue(size: u16, base: u64) -> (Queue, u64) {
    let (avail, used, end) = packed_layout(size, base);
    (ready_queue(size, base, avail, used), end)
}

/// The available ring, used ring and end addresses of [`packed_queue`]'s layout.
pub fn packed_layout(size: u16, base: u64) -> (u64, u64, u64) {
    let n = u64::from(size);
    let avail = base + 16 * n;
    // flags, idx, ring[size], used_event
    let used = (avail + 6 + 2 * n).next_multiple_of(4);
    // flags, idx, ring[size] of (id, len), avail_event
    let end = (used + 6 + 8 * n).next_multiple_of(16);
    (avail, used, end)
}

/// An in-memory disk with discard and write-zeroes.
pub struct MemDisk {
    bytes: Vec<u8>,
    read_only: bool,
}

impl MemDisk {
    pub fn new(size: usize, read_only: bool) -> Self {
        // A period-251 pattern (so a misplaced sector reads differently), copied a period at a
        // time: a byte-wise loop with the fuzzer's instrumentation took 95% of a run.
        let period: Vec<u8> = (0..=250).collect();
        let mut bytes = vec![0u8; size];
        for chunk in bytes.chunks_mut(period.len()) {
            chunk.copy_from_slice(&period[..chunk.len()]);
        }
        MemDisk { bytes, read_only }
    }
}

impl BlockBackend for MemDisk {
    fn capacity(&self) -> u64 {
        self.bytes.len() as u64
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn features(&self) -> BlockFeatures {
        BlockFeatures {
            discard: !self.read_only,
            write_zeroes: !self.read_only,
        }
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(offset, buf.len() as u64, self.capacity())?;
        let o = offset as usize;
        buf.copy_from_slice(&self.bytes[o..o + buf.len()]);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        if self.read_only {
            return Err(io::ErrorKind::PermissionDenied.into());
        }
        check_range(offset, buf.len() as u64, self.capacity())?;
        let o = offset as usize;
        self.bytes[o..o + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.write_zeroes(offset, len)
    }
    fn write_zeroes(&mut self, offset: u64, len: u64) -> io::Result<()> {
        if self.read_only {
            return Err(io::ErrorKind::PermissionDenied.into());
        }
        check_range(offset, len, self.capacity())?;
        self.bytes[offset as usize..(offset + len) as usize].fill(0);
        Ok(())
    }
    fn describe(&self) -> String {
        "memory".into()
    }
}

/// A network peer that swallows what is sent and delivers the frames queued in `inbox`.
#[derive(Default)]
pub struct LoopNet {
    pub inbox: VecDeque<Vec<u8>>,
    pub offloads: Offloads,
}

impl NetBackend for LoopNet {
    fn send(&mut self, frame: &[u8], _meta: &FrameMeta) -> io::Result<()> {
        std::hint::black_box(frame);
        Ok(())
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<(usize, FrameMeta)>> {
        let Some(f) = self.inbox.pop_front() else {
            return Ok(None);
        };
        let n = f.len().min(buf.len());
        buf[..n].copy_from_slice(&f[..n]);
        Ok(Some((n, FrameMeta::default())))
    }
    fn rx_fd(&self) -> RawFd {
        -1
    }
    fn offloads(&self) -> Offloads {
        self.offloads
    }
    fn counters(&self) -> NetCounters {
        NetCounters::default()
    }
    fn describe(&self) -> String {
        "loop".into()
    }
}

/// Interrupts go nowhere.
pub struct NoQueueInterrupt;

impl QueueInterrupt for NoQueueInterrupt {
    fn queue(&self, _: usize) {}
    fn config(&self) {}
}

/// A clock that moves only when told: timers behave the same on every run of an input.
#[derive(Clone)]
pub struct ManualClock {
    base: Instant,
    micros: Arc<AtomicU64>,
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock {
            base: Instant::now(),
            micros: Arc::default(),
        }
    }
}

impl ManualClock {
    pub fn advance(&self, us: u64) -> Instant {
        let now = self.micros.fetch_add(us, Ordering::Relaxed) + us;
        self.base + Duration::from_micros(now)
    }

    pub fn now(&self) -> Instant {
        self.base + Duration::from_micros(self.micros.load(Ordering::Relaxed))
    }
}
