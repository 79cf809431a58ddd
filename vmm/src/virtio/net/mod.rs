//! virtio-net (virtio 1.2, 5.1): one RX and one TX queue served by a worker thread over a
//! [`NetBackend`]. The 12-byte header carries checksum and segmentation offload both ways;
//! mergeable RX buffers let a frame span several buffers.

mod header;
#[cfg(test)]
mod tests;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use virtio_queue::{Queue, QueueT, Reader, Writer};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::kicks::Kicks;
use super::{features, read_config_bytes, Activation, QueueInterrupt, VirtioDevice, Worker};
use crate::backend::net::{NetBackend, Offloads};
use crate::worker::{Handler, Sources, WorkerThread};
pub use header::{Header, HEADER_LEN};

pub const F_CSUM: u64 = 1 << 0;
pub const F_GUEST_CSUM: u64 = 1 << 1;
pub const F_MAC: u64 = 1 << 5;
pub const F_GUEST_TSO4: u64 = 1 << 7;
pub const F_GUEST_TSO6: u64 = 1 << 8;
pub const F_HOST_TSO4: u64 = 1 << 11;
pub const F_HOST_TSO6: u64 = 1 << 12;
pub const F_MRG_RXBUF: u64 = 1 << 15;
pub const F_STATUS: u64 = 1 << 16;
pub const STATUS_LINK_UP: u16 = 1;

pub const QUEUE_SIZE: u16 = 256;
pub const RX: usize = 0;
pub const TX: usize = 1;
/// Largest frame accepted from the driver (a 64 KiB GSO frame and its headers).
pub const MAX_FRAME: usize = 65562;

#[derive(Default)]
pub struct NetCounters {
    pub tx_kicks: Kicks,
    pub rx_kicks: Kicks,
    pub tx_frames: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub tx_dropped: AtomicU64,
    pub rx_frames: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub rx_dropped: AtomicU64,
    pub interrupts: AtomicU64,
}

impl crate::counters::Counters for NetCounters {
    fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("tx_kicks", self.tx_kicks.total()),
            ("rx_kicks", self.rx_kicks.total()),
            ("tx_frames", l(&self.tx_frames)),
            ("tx_bytes", l(&self.tx_bytes)),
            ("tx_dropped", l(&self.tx_dropped)),
            ("rx_frames", l(&self.rx_frames)),
            ("rx_bytes", l(&self.rx_bytes)),
            ("rx_dropped", l(&self.rx_dropped)),
            ("interrupts", l(&self.interrupts)),
        ]
    }
}

pub type SharedNetBackend = Arc<Mutex<Box<dyn NetBackend>>>;

pub struct Net {
    backend: SharedNetBackend,
    config: [u8; 12],
    features: u64,
    counters: Arc<NetCounters>,
}

impl Net {
    pub fn new(backend: Box<dyn NetBackend>, mac: [u8; 6]) -> Self {
        let o = backend.offloads();
        let mut features = features::VERSION_1
            | features::RING_INDIRECT_DESC
            | features::RING_EVENT_IDX
            | F_MAC
            | F_STATUS
            | F_MRG_RXBUF;
        // TX offloads: the back-end (or its software fallback) completes them.
        if o.csum {
            features |= F_CSUM | F_GUEST_CSUM;
        }
        if o.csum && o.tso {
            features |= F_HOST_TSO4 | F_HOST_TSO6 | F_GUEST_TSO4 | F_GUEST_TSO6;
        }
        let mut config = [0u8; 12];
        config[0..6].copy_from_slice(&mac);
        config[6..8].copy_from_slice(&STATUS_LINK_UP.to_le_bytes());
        config[8..10].copy_from_slice(&1u16.to_le_bytes()); // max_virtqueue_pairs
        Net {
            backend: Arc::new(Mutex::new(backend)),
            config,
            features,
            counters: Arc::new(NetCounters::default()),
        }
    }

    pub fn counters(&self) -> Arc<NetCounters> {
        self.counters.clone()
    }

    pub fn backend(&self) -> SharedNetBackend {
        self.backend.clone()
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u16 {
        1
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE, QUEUE_SIZE]
    }
    fn features(&self) -> u64 {
        self.features
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }
    fn write_config(&mut self, _: u64, _: &[u8]) {}
    fn debug_label(&self) -> &'static str {
        "virtio-net"
    }

    fn activate(&mut self, a: Activation) -> Result<Box<dyn Worker>, String> {
        let mut queues = a.queues;
        if queues.len() != 2 {
            return Err(format!(
                "expected RX and TX queues ready, got {}",
                queues.len()
            ));
        }
        let (txq, tx_notify) = queues.remove(1);
        let (rxq, rx_notify) = queues.remove(0);
        self.counters.tx_kicks.watch(&tx_notify);
        self.counters.rx_kicks.watch(&rx_notify);
        let guest = Offloads {
            csum: a.features & F_GUEST_CSUM != 0,
            tso: a.features & (F_GUEST_TSO4 | F_GUEST_TSO6) != 0,
        };
        self.backend
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_offloads(guest)
            .map_err(|e| format!("back-end offloads: {e}"))?;
        let backend_fd = self
            .backend
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .rx_fd();
        let sources = [
            (rx_notify.as_raw_fd(), Token::RxQueue),
            (tx_notify.as_raw_fd(), Token::TxQueue),
            (backend_fd, Token::Backend),
        ];
        let w = NetWorker {
            mem: a.mem,
            rxq,
            txq,
            rx_notify,
            tx_notify,
            backend_fd,
            backend_armed: true,
            interrupt: a.interrupt,
            backend: self.backend.clone(),
            counters: self.counters.clone(),
            features: a.features,
            frame: vec![0u8; MAX_FRAME],
            pending: None,
        };
        let t = WorkerThread::spawn("virtio-net", &sources, w).map_err(|e| e.to_string())?;
        Ok(Box::new(t))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Token {
    RxQueue,
    TxQueue,
    Backend,
}

impl crate::worker::Token for Token {
    const ALL: &'static [Token] = &[Token::RxQueue, Token::TxQueue, Token::Backend];
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot pause or resume the back-end's events")]
    Epoll(#[source] std::io::Error),
    #[error("the {0} queue's rings are broken: {1}")]
    Queue(&'static str, String),
    #[error("the back-end failed")]
    Backend(#[source] std::io::Error),
}

/// The device worker's state; public for the benchmarks in vmm/benches.
#[doc(hidden)]
pub struct NetWorker {
    pub mem: GuestMemoryMmap,
    pub rxq: Queue,
    pub txq: Queue,
    pub rx_notify: EventFd,
    pub tx_notify: EventFd,
    /// The back-end's receive fd, and whether the worker listens to it.
    pub backend_fd: RawFd,
    pub backend_armed: bool,
    pub interrupt: Arc<dyn QueueInterrupt>,
    pub backend: SharedNetBackend,
    pub counters: Arc<NetCounters>,
    pub features: u64,
    pub frame: Vec<u8>,
    /// A received frame waiting for RX buffers: (length, header).
    pub pending: Option<(usize, Header)>,
}

impl Handler for NetWorker {
    type Token = Token;
    type Error = WorkerError;

    fn start(&mut self, _: &mut Sources<Token>) -> Result<(), WorkerError> {
        // Notifications that arrived before DRIVER_OK are served now.
        self.process_tx()?;
        self.process_rx()
    }

    fn prepare(&mut self, sources: &mut Sources<Token>) -> Result<Option<Duration>, WorkerError> {
        // While a frame waits for RX buffers, the back-end's readiness would only spin the
        // loop: stop listening to it until the driver adds buffers.
        let want = self.pending.is_none();
        if want != self.backend_armed {
            if want {
                sources.resume(self.backend_fd, Token::Backend)
            } else {
                sources.pause(self.backend_fd, Token::Backend)
            }
            .map_err(WorkerError::Epoll)?;
            self.backend_armed = want;
        }
        Ok(None)
    }

    fn handle(&mut self, ready: &[Token]) -> Result<(), WorkerError> {
        for t in ready {
            match t {
                // process_tx consumes the kicks it serves (see there).
                Token::TxQueue => self.process_tx()?,
                Token::RxQueue => {
                    self.counters.rx_kicks.consume(&self.rx_notify);
                    self.process_rx()?;
                }
                Token::Backend => self.process_rx()?,
            }
        }
        Ok(())
    }
}

impl NetWorker {
    /// Sends every frame the driver queued.
    pub fn process_tx(&mut self) -> Result<(), WorkerError> {
        let q = |e: virtio_queue::Error| WorkerError::Queue("TX", e.to_string());
        let mem = self.mem.clone();
        let mut sent_any = false;
        loop {
            self.txq.disable_notification(&mem).map_err(q)?;
            while let Some(chain) = self.txq.pop_descriptor_chain(&mem) {
                let head = chain.head_index();
                self.send_one(&mem, chain)?;
                self.txq.add_used(&mem, head, 0).map_err(q)?;
                sent_any = true;
            }
            self.counters.tx_kicks.consume(&self.tx_notify);
            if !super::rearm(&mut self.txq, &mem).map_err(q)? {
                break;
            }
        }
        if sent_any && super::should_interrupt(&mut self.txq, &mem).map_err(q)? {
            self.counters.interrupts.fetch_add(1, Ordering::Relaxed);
            self.interrupt.queue(TX);
        }
        Ok(())
    }

    fn send_one(
        &mut self,
        mem: &GuestMemoryMmap,
        chain: virtio_queue::DescriptorChain<&GuestMemoryMmap>,
    ) -> Result<(), WorkerError> {
        let drop = |c: &NetCounters| {
            c.tx_dropped.fetch_add(1, Ordering::Relaxed);
            Ok(())
        };
        let Ok(mut reader) = Reader::new(mem, chain) else {
            return drop(&self.counters);
        };
        let total = reader.available_bytes();
        if total < HEADER_LEN || total - HEADER_LEN > MAX_FRAME {
            return drop(&self.counters);
        }
        let mut h = [0u8; HEADER_LEN];
        if reader.read_exact(&mut h).is_err() {
            return drop(&self.counters);
        }
        let len = total - HEADER_LEN;
        if reader.read_exact(&mut self.frame[..len]).is_err() {
            return drop(&self.counters);
        }
        let Ok(meta) = Header::parse(&h).to_meta(self.features, len) else {
            // Offloads the driver did not negotiate, or fields outside the frame.
            return drop(&self.counters);
        };
        let r = self
            .backend
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(&self.frame[..len], &meta);
        match r {
            Ok(()) => {
                self.counters.tx_frames.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .tx_bytes
                    .fetch_add(len as u64, Ordering::Relaxed);
                Ok(())
            }
            // A full or vanished peer drops the frame, as a wire would.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::InvalidInput
                ) =>
            {
                drop(&self.counters)
            }
            Err(e) => Err(WorkerError::Backend(e)),
        }
    }

    /// Delivers received frames while the driver has buffers for them.
    pub fn process_rx(&mut self) -> Result<(), WorkerError> {
        let q = |e: virtio_queue::Error| WorkerError::Queue("RX", e.to_string());
        let mem = self.mem.clone();
        let mut delivered = false;
        loop {
            if self.pending.is_none() {
                let r = self
                    .backend
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .recv(&mut self.frame);
                match r {
                    Ok(Some((len, meta))) => self.pending = Some((len, Header::from_meta(&meta))),
                    Ok(None) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(WorkerError::Backend(e)),
                }
            }
            let Some((len, hdr)) = self.pending else {
                break;
            };
            match self.deliver(&mem, len, hdr).map_err(q)? {
                Delivery::Delivered => {
                    self.pending = None;
                    delivered = true;
                    self.counters.rx_frames.fetch_add(1, Ordering::Relaxed);
                    self.counters
                        .rx_bytes
                        .fetch_add(len as u64, Ordering::Relaxed);
                }
                Delivery::Dropped => {
                    // Buffers went back to the driver (empty); it is told like for a frame.
                    self.pending = None;
                    delivered = true;
                    self.counters.rx_dropped.fetch_add(1, Ordering::Relaxed);
                }
                Delivery::NoRoom { seen } => {
                    // Ask the driver to kick when it adds a buffer past the `seen` ones, and
                    // look once more in case it did meanwhile. With EVENT_IDX the avail_event
                    // must be past them: left at the first unused entry (what virtio-queue's
                    // enable_notification writes), a driver adding the missing buffer of a
                    // mergeable frame would not kick, and the worker would wait forever.
                    self.counters.rx_kicks.consume(&self.rx_notify);
                    let start = self.rxq.next_avail();
                    self.rxq.set_next_avail(seen);
                    let more = super::rearm(&mut self.rxq, &mem);
                    self.rxq.set_next_avail(start);
                    if more.map_err(q)? {
                        continue;
                    }
                    break;
                }
            }
        }
        if delivered && super::should_interrupt(&mut self.rxq, &mem).map_err(q)? {
            self.counters.interrupts.fetch_add(1, Ordering::Relaxed);
            self.interrupt.queue(RX);
        }
        Ok(())
    }

    /// Writes header + frame into one buffer, or several with mergeable RX buffers; a frame
    /// no buffer can take is dropped, its buffers returned empty. Consumes nothing if the
    /// driver has not posted enough room yet.
    fn deliver(
        &mut self,
        mem: &GuestMemoryMmap,
        len: usize,
        mut hdr: Header,
    ) -> Result<Delivery, virtio_queue::Error> {
        let mergeable = self.features & F_MRG_RXBUF != 0;
        let need = HEADER_LEN + len;
        let start = self.rxq.next_avail();
        let mut used: Vec<(u16, u32)> = Vec::new();
        let mut first_hdr: Option<GuestAddress> = None;
        let mut written = 0usize;
        while written < need {
            let Some(chain) = self.rxq.pop_descriptor_chain(mem) else {
                let seen = self.rxq.next_avail();
                if used.len() >= usize::from(self.rxq.size()) {
                    // The whole ring cannot hold it: waiting would wait forever.
                    for (head, _) in used {
                        self.rxq.add_used(mem, head, 0)?;
                    }
                    return Ok(Delivery::Dropped);
                }
                self.rxq.set_next_avail(start);
                return Ok(Delivery::NoRoom { seen });
            };
            let head = chain.head_index();
            let first_desc = chain.clone().writable().next();
            let Ok(mut w) = Writer::new(mem, chain) else {
                // A broken buffer (outside memory): return it empty and drop the frame.
                self.rxq.add_used(mem, head, 0)?;
                return Ok(Delivery::Dropped);
            };
            let room = w.available_bytes();
            if used.is_empty() {
                // The header must fit the first buffer (virtio 1.2, 5.1.6.3.1).
                match first_desc {
                    Some(d) if d.len() as usize >= HEADER_LEN && room >= HEADER_LEN => {
                        first_hdr = Some(d.addr());
                    }
                    _ => {
                        self.rxq.add_used(mem, head, 0)?;
                        return Ok(Delivery::Dropped);
                    }
                }
                if !mergeable && room < need {
                    // The frame does not fit the one buffer allowed: drop it.
                    self.rxq.add_used(mem, head, 0)?;
                    return Ok(Delivery::Dropped);
                }
            }
            let mut n = 0usize;
            if written < HEADER_LEN {
                hdr.num_buffers = 1;
                let h = hdr.bytes();
                let k = (HEADER_LEN - written).min(room);
                if w.write_all(&h[written..written + k]).is_err() {
                    self.rxq.add_used(mem, head, 0)?;
                    return Ok(Delivery::Dropped);
                }
                written += k;
                n += k;
            }
            let off = written - HEADER_LEN;
            let k = (need - written).min(room - n);
            if k > 0 && w.write_all(&self.frame[off..off + k]).is_err() {
                self.rxq.add_used(mem, head, 0)?;
                return Ok(Delivery::Dropped);
            }
            written += k;
            n += k;
            used.push((head, n as u32));
            if !mergeable {
                break;
            }
        }
        if used.len() > 1 {
            if let Some(a) = first_hdr {
                // num_buffers sits at offset 10 of the header in the first buffer.
                let _ = mem.write_obj(used.len() as u16, a.unchecked_add(10));
            }
        }
        for (head, n) in used {
            self.rxq.add_used(mem, head, n)?;
        }
        Ok(Delivery::Delivered)
    }
}

/// What became of a received frame.
enum Delivery {
    Delivered,
    /// No buffer could take it (too small, outside guest memory): the buffers went back empty.
    Dropped,
    /// Not enough buffers posted yet; nothing consumed. `seen` is the available index the
    /// device read up to.
    NoRoom {
        seen: u16,
    },
}
