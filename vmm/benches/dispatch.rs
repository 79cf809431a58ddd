//! The VMM's share of a VM exit: looking up the device an exit hit on a bus populated as a
//! probe machine's is (eight port ranges) and calling it. This is the part of every port-I/O
//! and MMIO exit that vmbench adds on top of KVM_RUN; a regression here shows in every figure.

use std::hint::black_box;
use std::sync::{Arc, Mutex};

use criterion::{criterion_group, criterion_main, Criterion};

use vmm::bus::{Attached, Bus};
use vmm::devices::platform::Null;
use vmm::exits::ExitStats;

/// The port ranges of a probe machine (serial, debug-exit, PCI config, the side channels and
/// the IDE compatibility ports), each with a do-nothing device.
fn probe_bus() -> Bus {
    let exits = ExitStats::new(1);
    let bus = Bus::new("pio");
    // The labels are the ranges' owners on a real machine; here every range has a Null.
    let ranges: [(u64, u64, &str); 8] = [
        (0xf4, 4, "debug-exit"),
        (0x1f0, 8, "ide"),
        (0x3f6, 1, "ide"),
        (0x3f8, 8, "serial"),
        (0x4f0, 1, "entry-mark"),
        (0x4f4, 4, "mailbox"),
        (0x4f8, 4, "calibration"),
        (0xcf8, 8, "pci-config"),
    ];
    for (base, len, _owner) in ranges {
        let dev = Attached::new(&exits, Arc::new(Mutex::new(Null)));
        bus.insert(base, len, &dev).unwrap();
    }
    bus
}

fn dispatch(c: &mut Criterion) {
    let bus = probe_bus();
    let mut g = c.benchmark_group("dispatch");
    g.bench_function("pio_write_hit", |b| {
        b.iter(|| bus.write(black_box(0x4f8), 0, black_box(&[0u8; 4])))
    });
    g.bench_function("pio_read_hit", |b| {
        let mut data = [0u8; 4];
        b.iter(|| bus.read(black_box(0x4f8), 0, black_box(&mut data)))
    });
    g.bench_function("pio_read_unmapped", |b| {
        let mut data = [0u8; 4];
        b.iter(|| bus.read(black_box(0x80), 0, black_box(&mut data)))
    });
    g.finish();
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
