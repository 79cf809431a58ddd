//! e1000 transmit path: the cost of emulating a TDT write that hands the device N legacy
//! descriptors (one frame each), into a back-end that discards frames.

use std::hint::black_box;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use vmm::backend::net::{FrameMeta, NetBackend, NetCounters};
use vmm::bus::{Access, BusDevice};
use vmm::devices::e1000::regs::{TCTL, TCTL_EN, TCTL_PSP, TDBAH, TDBAL, TDH, TDLEN, TDT};
use vmm::devices::e1000::E1000;
use vmm::interrupt::TestIrqLine;
use vmm::pci::config::{CMD_BUS_MASTER, CMD_MEMORY};
use vmm::pci::PciFunction;

const BAR0: u64 = 0xfebc_0000;
const RING: u64 = 0x10_0000;
const RING_LEN: u32 = 4096;
const BUFS: u64 = 0x20_0000;

struct Sink {
    counters: NetCounters,
}

impl NetBackend for Sink {
    fn send(&mut self, frame: &[u8], _meta: &FrameMeta) -> io::Result<()> {
        self.counters.tx_frames += 1;
        self.counters.tx_bytes += frame.len() as u64;
        Ok(())
    }
    fn recv(&mut self, _buf: &mut [u8]) -> io::Result<Option<(usize, FrameMeta)>> {
        Ok(None)
    }
    fn rx_fd(&self) -> RawFd {
        -1
    }
    fn counters(&self) -> NetCounters {
        self.counters
    }
    fn describe(&self) -> String {
        "sink".into()
    }
}

fn write(dev: &mut E1000, off: u32, v: u32) {
    let a = Access {
        offset: u64::from(off),
        addr: BAR0 + u64::from(off),
        vcpu: 0,
    };
    dev.write(a, &v.to_le_bytes());
}

/// A device with a 4096-entry ring of one-descriptor frames of `size` bytes.
fn device(size: u16) -> E1000 {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
    for i in 0..u64::from(RING_LEN) {
        let buf = BUFS + (i % 64) * 0x800;
        let mut d = [0u8; 16];
        d[..8].copy_from_slice(&buf.to_le_bytes());
        d[8..10].copy_from_slice(&size.to_le_bytes());
        d[11] = 0x01 | 0x02 | 0x08; // EOP, IFCS, RS
        mem.write_slice(&d, GuestAddress(RING + i * 16)).unwrap();
    }
    mem.write_slice(&vec![0x5a; 0x800 * 64], GuestAddress(BUFS))
        .unwrap();
    let sink = Box::new(Sink {
        counters: NetCounters::default(),
    });
    let irq = Arc::new(TestIrqLine::default());
    let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    let mut dev = E1000::new(mem, sink, irq, mac, BAR0, 0xc000);
    let cmd = u32::from(CMD_MEMORY | CMD_BUS_MASTER);
    dev.config_write(1, 0, &cmd.to_le_bytes());
    write(&mut dev, TDBAL, RING as u32);
    write(&mut dev, TDBAH, 0);
    write(&mut dev, TDLEN, RING_LEN * 16);
    write(&mut dev, TDH, 0);
    write(&mut dev, TDT, 0);
    write(&mut dev, TCTL, TCTL_EN | TCTL_PSP);
    dev
}

fn tx_descriptors(c: &mut Criterion) {
    let mut g = c.benchmark_group("e1000_tx");
    for size in [64u16, 1514] {
        for n in [1u32, 32, 256] {
            g.throughput(Throughput::Elements(u64::from(n)));
            let mut dev = device(size);
            let mut tail = 0u32;
            g.bench_with_input(BenchmarkId::new(format!("{size}B"), n), &n, |b, &n| {
                b.iter(|| {
                    tail = (tail + n) % RING_LEN;
                    write(black_box(&mut dev), TDT, tail);
                })
            });
            assert!(dev.counters().tx_frames > 0);
        }
    }
    g.finish();
}

criterion_group!(benches, tx_descriptors);
criterion_main!(benches);
