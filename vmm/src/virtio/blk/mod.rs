//! virtio-blk (virtio 1.2, 5.2): one request queue served by a worker thread over a
//! [`BlockBackend`]. Requests are parsed by [`request::Request::parse`] (pure) and executed
//! here; a bad request gets an error status, a broken ring puts the device in needs-reset.

pub mod request;
#[cfg(test)]
mod tests;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::kicks::Kicks;
use super::{features, read_config_bytes, Activation, QueueInterrupt, VirtioDevice, Worker};
use crate::backend::block::BlockBackend;
use crate::worker::{Handler, Sources, WorkerThread};
use request::{Kind, Request, Segment, SECTOR};

pub const F_SIZE_MAX: u64 = 1 << 1;
pub const F_SEG_MAX: u64 = 1 << 2;
pub const F_RO: u64 = 1 << 5;
pub const F_BLK_SIZE: u64 = 1 << 6;
pub const F_FLUSH: u64 = 1 << 9;
pub const F_DISCARD: u64 = 1 << 13;
pub const F_WRITE_ZEROES: u64 = 1 << 14;

pub const QUEUE_SIZE: u16 = 256;
/// Largest transfer per request we accept (also the bound of `buf`, the bounce buffer of
/// back-ends that cannot move data to and from guest memory directly).
const MAX_REQUEST: u64 = 4 << 20;
const SEG_MAX: u32 = 128;

/// Requests and bytes served, for the harness to cross-check guest figures.
#[derive(Default)]
pub struct BlkCounters {
    /// Guest notifications (ioeventfd kicks).
    pub kicks: Kicks,
    pub requests: AtomicU64,
    pub read_bytes: AtomicU64,
    pub write_bytes: AtomicU64,
    pub errors: AtomicU64,
    /// Used-ring interrupts sent to the driver (those it asked for: see `should_interrupt`).
    pub interrupts: AtomicU64,
}

pub type SharedBackend = Arc<Mutex<Box<dyn BlockBackend>>>;

pub struct Block {
    backend: SharedBackend,
    config: [u8; 60],
    features: u64,
    id: [u8; request::ID_BYTES],
    counters: Arc<BlkCounters>,
}

impl crate::counters::Counters for BlkCounters {
    fn snapshot(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("kicks", self.kicks.total()),
            ("requests", self.requests.load(Ordering::Relaxed)),
            ("read_bytes", self.read_bytes.load(Ordering::Relaxed)),
            ("write_bytes", self.write_bytes.load(Ordering::Relaxed)),
            ("errors", self.errors.load(Ordering::Relaxed)),
            ("interrupts", self.interrupts.load(Ordering::Relaxed)),
        ]
    }
}

impl Block {
    pub fn new(backend: Box<dyn BlockBackend>, id: &str) -> Self {
        let capacity = backend.capacity() / SECTOR;
        let f = backend.features();
        let mut features = features::VERSION_1
            | features::RING_INDIRECT_DESC
            | features::RING_EVENT_IDX
            | F_SIZE_MAX
            | F_SEG_MAX
            | F_BLK_SIZE
            | F_FLUSH;
        if backend.read_only() {
            features |= F_RO;
        }
        if f.discard {
            features |= F_DISCARD;
        }
        if f.write_zeroes {
            features |= F_WRITE_ZEROES;
        }
        let mut config = [0u8; 60];
        config[0..8].copy_from_slice(&capacity.to_le_bytes());
        config[8..12].copy_from_slice(&(MAX_REQUEST as u32).to_le_bytes()); // size_max
        config[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        config[20..24].copy_from_slice(&(SECTOR as u32).to_le_bytes()); // blk_size
        let max_sectors = (MAX_REQUEST / SECTOR) as u32;
        config[36..40].copy_from_slice(&max_sectors.to_le_bytes()); // max_discard_sectors
        config[40..44].copy_from_slice(&(request::MAX_SEGMENTS as u32).to_le_bytes());
        config[44..48].copy_from_slice(&1u32.to_le_bytes()); // discard_sector_alignment
        config[48..52].copy_from_slice(&max_sectors.to_le_bytes()); // max_write_zeroes_sectors
        config[52..56].copy_from_slice(&(request::MAX_SEGMENTS as u32).to_le_bytes());
        config[56] = 1; // write_zeroes_may_unmap
        let mut idb = [0u8; request::ID_BYTES];
        let n = id.len().min(request::ID_BYTES);
        idb[..n].copy_from_slice(&id.as_bytes()[..n]);
        Block {
            backend: Arc::new(Mutex::new(backend)),
            config,
            features,
            id: idb,
            counters: Arc::new(BlkCounters::default()),
        }
    }

    pub fn counters(&self) -> Arc<BlkCounters> {
        self.counters.clone()
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u16 {
        2
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE]
    }
    fn features(&self) -> u64 {
        self.features
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }
    fn write_config(&mut self, _: u64, _: &[u8]) {
        // writeback toggling (CONFIG_WCE) is not offered; writes are ignored.
    }
    fn debug_label(&self) -> &'static str {
        "virtio-blk"
    }

    fn activate(&mut self, a: Activation) -> Result<Box<dyn Worker>, String> {
        let mut queues = a.queues;
        if queues.len() != 1 {
            return Err(format!("expected 1 ready queue, got {}", queues.len()));
        }
        let (queue, notify) = queues.remove(0);
        self.counters.kicks.watch(&notify);
        let sources = [(notify.as_raw_fd(), Token::Queue)];
        let w = BlkWorker {
            mem: a.mem,
            queue,
            notify,
            interrupt: a.interrupt,
            backend: self.backend.clone(),
            id: self.id,
            counters: self.counters.clone(),
            read_only: self.features & F_RO != 0,
            buf: Vec::new(),
        };
        let t = WorkerThread::spawn("virtio-blk", &sources, w).map_err(|e| e.to_string())?;
        Ok(Box::new(t))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Token {
    Queue,
}

impl crate::worker::Token for Token {
    const ALL: &'static [Token] = &[Token::Queue];
}

/// The device worker's state; public for the benchmarks in vmm/benches.
#[doc(hidden)]
pub struct BlkWorker {
    pub mem: GuestMemoryMmap,
    pub queue: Queue,
    pub notify: EventFd,
    pub interrupt: Arc<dyn QueueInterrupt>,
    pub backend: SharedBackend,
    pub id: [u8; request::ID_BYTES],
    pub counters: Arc<BlkCounters>,
    pub read_only: bool,
    pub buf: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("the queue's rings are broken: {0}")]
    Queue(String),
}

impl Handler for BlkWorker {
    type Token = Token;
    type Error = WorkerError;

    fn start(&mut self, _: &mut Sources<Token>) -> Result<(), WorkerError> {
        // Notifications that arrived before DRIVER_OK are served now.
        self.process()
    }

    fn handle(&mut self, ready: &[Token]) -> Result<(), WorkerError> {
        for t in ready {
            match t {
                // process consumes the kicks it serves (see there).
                Token::Queue => self.process()?,
            }
        }
        Ok(())
    }
}

impl BlkWorker {
    /// Serves every available request, then re-enables notifications (and serves what
    /// raced in), interrupting the driver if it asked to be.
    pub fn process(&mut self) -> Result<(), WorkerError> {
        let q = |e: virtio_queue::Error| WorkerError::Queue(e.to_string());
        let mem = self.mem.clone();
        loop {
            self.queue.disable_notification(&mem).map_err(q)?;
            while let Some(chain) = self.queue.pop_descriptor_chain(&mem) {
                let head = chain.head_index();
                let written = self.serve(&mem, chain);
                self.queue.add_used(&mem, head, written).map_err(q)?;
            }
            self.counters.kicks.consume(&self.notify);
            if !super::rearm(&mut self.queue, &mem).map_err(q)? {
                break;
            }
        }
        if super::should_interrupt(&mut self.queue, &mem).map_err(q)? {
            self.counters.interrupts.fetch_add(1, Ordering::Relaxed);
            self.interrupt.queue(0);
        }
        Ok(())
    }

    /// Executes one request; returns the bytes written into the guest's buffers.
    fn serve<'m>(
        &mut self,
        mem: &'m GuestMemoryMmap,
        chain: virtio_queue::DescriptorChain<&'m GuestMemoryMmap>,
    ) -> u32 {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let data_chain = chain.clone();
        let (req, _reader, mut writer) = match Request::parse(mem, chain) {
            Ok(r) => r,
            Err(e) => {
                // Without a parseable request there may be no status byte to write; the
                // chain is returned with nothing written.
                log::debug!("virtio-blk: bad request: {e}");
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                return 0;
            }
        };
        let offset = req.sector.checked_mul(SECTOR);
        let mut backend = self.backend.lock().unwrap_or_else(|e| e.into_inner());
        let mut data_written = 0u32;
        let status = match (&req.kind, offset) {
            // The data moves between the back-end and the guest's buffers directly (or through
            // `buf` for back-ends that cannot: see `BlockBackend::read_vectored_at`).
            (Kind::Read { len }, Some(off)) if *len <= MAX_REQUEST => {
                match request::data_slices(mem, data_chain, &req.kind) {
                    Ok(bufs) => match backend.read_vectored_at(off, &bufs, &mut self.buf) {
                        Ok(()) => {
                            data_written = *len as u32;
                            self.counters.read_bytes.fetch_add(*len, Ordering::Relaxed);
                            request::S_OK
                        }
                        Err(_) => request::S_IOERR,
                    },
                    Err(_) => request::S_IOERR,
                }
            }
            (Kind::Write { len }, Some(off)) if *len <= MAX_REQUEST => {
                if self.read_only {
                    request::S_IOERR
                } else {
                    match request::data_slices(mem, data_chain, &req.kind) {
                        Ok(bufs) => match backend.write_vectored_at(off, &bufs, &mut self.buf) {
                            Ok(()) => {
                                self.counters.write_bytes.fetch_add(*len, Ordering::Relaxed);
                                request::S_OK
                            }
                            Err(_) => request::S_IOERR,
                        },
                        Err(_) => request::S_IOERR,
                    }
                }
            }
            (Kind::Flush, _) => match backend.flush() {
                Ok(()) => request::S_OK,
                Err(_) => request::S_IOERR,
            },
            (Kind::GetId, _) => {
                let n = writer
                    .available_bytes()
                    .saturating_sub(1)
                    .min(request::ID_BYTES);
                match writer.write_all(&self.id[..n]) {
                    Ok(()) => {
                        data_written = n as u32;
                        request::S_OK
                    }
                    Err(_) => request::S_IOERR,
                }
            }
            (Kind::Discard(segs), _) => {
                segments(segs, self.read_only, |o, l| backend.discard(o, l))
            }
            (Kind::WriteZeroes(segs), _) => {
                segments(segs, self.read_only, |o, l| backend.write_zeroes(o, l))
            }
            (Kind::Unsupported(_), _) => request::S_UNSUPP,
            // A sector number that overflows, or a transfer above size_max.
            _ => request::S_IOERR,
        };
        drop(backend);
        if status != request::S_OK {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
        }
        // The status byte is the last writable byte.
        let rest = writer.available_bytes();
        if rest > 1 {
            if let Ok(mut tail) = writer.split_at(rest - 1) {
                let _ = tail.write_all(&[status]);
                return data_written + 1;
            }
        }
        match writer.write_all(&[status]) {
            Ok(()) => data_written + 1,
            Err(_) => data_written,
        }
    }
}

fn segments(
    segs: &[Segment],
    read_only: bool,
    mut op: impl FnMut(u64, u64) -> std::io::Result<()>,
) -> u8 {
    if read_only {
        return request::S_IOERR;
    }
    for s in segs {
        // Reserved flag bits (all but unmap, bit 0) must be rejected (virtio 1.2, 5.2.6.2).
        if s.flags & !1 != 0 {
            return request::S_UNSUPP;
        }
        let (Some(off), Some(len)) = (
            s.sector.checked_mul(SECTOR),
            u64::from(s.num_sectors).checked_mul(SECTOR),
        ) else {
            return request::S_IOERR;
        };
        match op(off, len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Unsupported => return request::S_UNSUPP,
            Err(_) => return request::S_IOERR,
        }
    }
    request::S_OK
}
