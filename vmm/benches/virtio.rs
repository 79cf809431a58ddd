//! virtio hot paths: a worker serving a ring of descriptor chains. virtio-blk: 4 KiB reads
//! into an in-memory disk, 4 and 64 KiB reads from a raw file in the page cache; virtio-net: 64-byte frames into a discarding back-end. Measures the
//! device side only (parse, copy, used ring), per request or frame.

use std::hint::black_box;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use vmm::backend::block::raw::RawFile;
use vmm::backend::block::{check_range, BlockBackend, OpenOptions};
use vmm::backend::net::{FrameMeta, NetBackend, NetCounters};
use vmm::virtio::blk::{BlkCounters, BlkWorker};
use vmm::virtio::net::{NetCounters as DevCounters, NetWorker, MAX_FRAME};
use vmm::virtio::QueueInterrupt;

const CHAINS: u16 = 128;

struct MemDisk(Vec<u8>);
impl BlockBackend for MemDisk {
    fn capacity(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_only(&self) -> bool {
        false
    }
    fn read_at(&mut self, o: u64, b: &mut [u8]) -> io::Result<()> {
        check_range(o, b.len() as u64, self.capacity())?;
        b.copy_from_slice(&self.0[o as usize..o as usize + b.len()]);
        Ok(())
    }
    fn write_at(&mut self, o: u64, b: &[u8]) -> io::Result<()> {
        check_range(o, b.len() as u64, self.capacity())?;
        self.0[o as usize..o as usize + b.len()].copy_from_slice(b);
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn describe(&self) -> String {
        "memory".into()
    }
}

struct Sink(EventFd, NetCounters);
impl NetBackend for Sink {
    fn send(&mut self, f: &[u8], _: &FrameMeta) -> io::Result<()> {
        self.1.tx_frames += 1;
        self.1.tx_bytes += f.len() as u64;
        Ok(())
    }
    fn recv(&mut self, _: &mut [u8]) -> io::Result<Option<(usize, FrameMeta)>> {
        Ok(None)
    }
    fn rx_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
    fn counters(&self) -> NetCounters {
        self.1
    }
    fn describe(&self) -> String {
        "sink".into()
    }
}

struct NoIrq;
impl QueueInterrupt for NoIrq {
    fn queue(&self, _: usize) {}
    fn config(&self) {}
}

fn d(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
    RawDescriptor::from(Descriptor::new(addr, len, flags, next))
}

/// `CHAINS` chains of `per` descriptors made by `make(i)`, on a fresh queue at 0.
fn ring<'a>(
    mem: &'a GuestMemoryMmap,
    per: u16,
    make: impl Fn(u16) -> Vec<RawDescriptor>,
) -> MockSplitQueue<'a, GuestMemoryMmap> {
    let q = MockSplitQueue::create(mem, GuestAddress(0), (CHAINS * per).next_power_of_two());
    for i in 0..CHAINS {
        q.add_desc_chains(&make(i * per), i * per).unwrap();
    }
    q
}

/// One benchmark: `CHAINS` reads of `bs` bytes each (header, data, status) from `disk`.
fn read_chains(
    g: &mut criterion::BenchmarkGroup<criterion::measurement::WallTime>,
    name: &str,
    mem: &GuestMemoryMmap,
    disk: &Arc<Mutex<Box<dyn BlockBackend>>>,
    bs: u32,
) {
    g.bench_function(name, |b| {
        b.iter_batched(
            || {
                let q = ring(mem, 3, |at| {
                    let i = u64::from(at / 3);
                    vec![
                        d(0x10_0000 + i * 16, 16, 1, at + 1),
                        d(0x20_0000 + i * u64::from(bs), bs, 1 | 2, at + 2),
                        d(0x18_0000 + i, 1, 2, 0),
                    ]
                });
                BlkWorker {
                    mem: mem.clone(),
                    queue: q.create_queue::<Queue>().unwrap(),
                    notify: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
                    interrupt: Arc::new(NoIrq),
                    backend: disk.clone(),
                    id: [0; 20],
                    counters: Arc::new(BlkCounters::default()),
                    read_only: false,
                    buf: Vec::new(),
                }
            },
            |mut w| {
                w.process().unwrap();
                black_box(
                    w.counters
                        .read_bytes
                        .load(std::sync::atomic::Ordering::Relaxed),
                )
            },
            BatchSize::SmallInput,
        )
    });
}

fn blk(c: &mut Criterion) {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
    for i in 0..u64::from(CHAINS) {
        mem.write_obj(0u32, GuestAddress(0x10_0000 + i * 16))
            .unwrap(); // T_IN
        mem.write_obj(i * 8, GuestAddress(0x10_0000 + i * 16 + 8))
            .unwrap();
    }
    let disk: Box<dyn BlockBackend> = Box::new(MemDisk(vec![7u8; 16 << 20]));
    let disk = Arc::new(Mutex::new(disk));
    // A raw file in the host page cache (buffered): what a real disk image costs per request.
    let dir = std::env::temp_dir().join(format!("vmbench-bench-blk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("disk.raw");
    std::fs::write(&path, vec![7u8; 16 << 20]).unwrap();
    let raw: Box<dyn BlockBackend> =
        Box::new(RawFile::open(&path, OpenOptions::default()).unwrap());
    let raw = Arc::new(Mutex::new(raw));
    let mut g = c.benchmark_group("virtio-blk");
    g.throughput(Throughput::Elements(u64::from(CHAINS)));
    read_chains(&mut g, "4k_read_chains", &mem, &disk, 4096);
    read_chains(&mut g, "4k_read_chains_raw", &mem, &raw, 4096);
    read_chains(&mut g, "64k_read_chains_raw", &mem, &raw, 65536);
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

fn net(c: &mut Criterion) {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
    let backend: Box<dyn NetBackend> = Box::new(Sink(
        EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        NetCounters::default(),
    ));
    let backend = Arc::new(Mutex::new(backend));
    let mut g = c.benchmark_group("virtio-net");
    g.throughput(Throughput::Elements(u64::from(CHAINS)));
    g.bench_function("tx_64b_frames", |b| {
        b.iter_batched(
            || {
                let tx = ring(&mem, 1, |at| {
                    vec![d(0x20_0000 + u64::from(at) * 128, 12 + 64, 0, 0)]
                });
                let rx = MockSplitQueue::create(&mem, GuestAddress(0x80_0000), 16);
                NetWorker {
                    mem: mem.clone(),
                    rxq: rx.create_queue::<Queue>().unwrap(),
                    txq: tx.create_queue::<Queue>().unwrap(),
                    rx_notify: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
                    tx_notify: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
                    backend_fd: -1,
                    backend_armed: true,
                    interrupt: Arc::new(NoIrq),
                    backend: backend.clone(),
                    counters: Arc::new(DevCounters::default()),
                    features: 0,
                    frame: vec![0u8; MAX_FRAME],
                    pending: None,
                }
            },
            |mut w| {
                w.process_tx().unwrap();
                black_box(
                    w.counters
                        .tx_frames
                        .load(std::sync::atomic::Ordering::Relaxed),
                )
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, blk, net);
criterion_main!(benches);
