//! `hostile seed=S n=N [dev=all|e1000|virtio-net|virtio-blk|ide]`: the guest as an attacker.
//! Seeded random accesses aimed at each chosen device: reads and writes of its configuration
//! space (BARs and the command register excepted, so the accesses keep reaching it), of its
//! memory BARs and of its I/O ports (IDE's legacy ports too). The VMM must survive all of it
//! (the device may fail and say so; the guest may crash when a device writes its memory at the
//! guest's random addresses); `result name=hostile` says how many accesses were made.

use core::str::SplitAsciiWhitespace;

use probe_abi::exit;

use crate::args::Args;
use crate::io::{inb, inl, mmio_read32, mmio_write32, outb, outl};
use crate::pci::{self, Function};
use crate::report::Record;
use crate::Env;

/// Regions of one device: memory BARs (base, size) and port ranges (base, count).
struct Target {
    func: Function,
    mem: [(u64, u64); 6],
    ports: [(u16, u16); 8],
    n_mem: usize,
    n_ports: usize,
}

/// The `dev=` values.
const DEVS: [&str; 5] = ["all", "e1000", "virtio-net", "virtio-blk", "ide"];

/// Whether a run with `dev=` aims at function `f` (by its PCI id).
fn wanted(dev: &str, f: &Function) -> bool {
    let is = match (f.vendor, f.device) {
        (0x8086, 0x100e) => "e1000",
        (0x1af4, 0x1041) | (0x1af4, 0x1000) => "virtio-net",
        (0x1af4, 0x1042) | (0x1af4, 0x1001) => "virtio-blk",
        (0x8086, 0x7010) | (0x8086, 0x7111) => "ide",
        _ => return false,
    };
    dev == "all" || dev == is
}

/// Sizes BAR `i` (all ones, read back, restore): its size in bytes, 0 if unimplemented.
fn bar_size(f: &Function, i: u8, io: bool) -> u64 {
    let reg = 0x10 + i * 4;
    let old = f.read(reg);
    f.write(reg, u32::MAX);
    let mask = f.read(reg);
    f.write(reg, old);
    let mask = if io { mask & 0xffff_fffc } else { mask & !0xf };
    if mask == 0 {
        return 0;
    }
    u64::from((!mask).wrapping_add(1))
}

fn target(f: Function) -> Target {
    let mut t = Target {
        func: f,
        mem: [(0, 0); 6],
        ports: [(0, 0); 8],
        n_mem: 0,
        n_ports: 0,
    };
    let mut i = 0;
    while i < 6 {
        let lo = f.read(0x10 + i * 4);
        let io = lo & 1 == 1;
        let is64 = !io && (lo >> 1) & 3 == 2;
        if io {
            if let Some(base) = f.io_bar(i) {
                let size = bar_size(&f, i, true).min(256) as u16;
                if size > 0 {
                    t.ports[t.n_ports] = (base, size);
                    t.n_ports += 1;
                }
            }
        } else if let Some((base, false)) = f.bar(i) {
            let size = bar_size(&f, i, false).min(1 << 20);
            if size > 0 {
                t.mem[t.n_mem] = (base, size);
                t.n_mem += 1;
            }
        }
        i += if is64 { 2 } else { 1 };
    }
    // IDE in compatibility mode decodes the legacy ports, not BARs 0-3.
    if f.class >> 8 == 0x0101 {
        for r in [(0x1f0, 8), (0x3f6, 1), (0x170, 8), (0x376, 1)] {
            if t.n_ports < t.ports.len() {
                t.ports[t.n_ports] = r;
                t.n_ports += 1;
            }
        }
    }
    f.enable();
    t
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    /// Mostly random values, often the ones devices treat specially.
    fn value(&mut self) -> u32 {
        match self.below(6) {
            0 => 0,
            1 => u32::MAX,
            2 => 1 << self.below(32),
            _ => self.next() as u32,
        }
    }
}

pub fn run(env: &Env, args: SplitAsciiWhitespace) -> u32 {
    let mut a = Args::new(env, "hostile", args);
    let seed = a.u64("seed", 1);
    let n = a.u64_in("n", 10_000, 1, 10_000_000);
    let dev = a.str("dev", "all");
    if !DEVS.contains(&dev) {
        a.bad("dev", dev, "all, e1000, virtio-net, virtio-blk or ide");
    }
    if !a.finish() {
        return exit::BAD_EXEC;
    }
    let mut targets: [Option<Target>; 8] = Default::default();
    let mut count = 0;
    pci::scan(|f| {
        if count < targets.len() && wanted(dev, &f) {
            targets[count] = Some(target(f));
            count += 1;
        }
    });
    if count == 0 {
        Record::new("error")
            .text(format_args!("hostile: no {dev} device on the bus"))
            .send(env);
        return exit::BAD_EXEC;
    }
    let mut rng = Rng(seed.max(1));
    let (mut config, mut mmio, mut pio) = (0u64, 0u64, 0u64);
    for _ in 0..n {
        let Some(t) = targets[rng.below(count as u64) as usize].as_ref() else {
            continue;
        };
        let write = rng.below(2) == 0;
        match rng.below(3) {
            0 => {
                let reg = (rng.below(64) * 4) as u8;
                // The command register and the BARs stay as set, so the accesses keep
                // landing on the device; everything else is fair game.
                let keep = reg == 0x04 || (0x10..0x28).contains(&reg) || reg == 0x30;
                if write && !keep {
                    t.func.write(reg, rng.value());
                } else {
                    t.func.read(reg);
                }
                config += 1;
            }
            1 if t.n_mem > 0 => {
                let (base, size) = t.mem[rng.below(t.n_mem as u64) as usize];
                let addr = base + rng.below(size / 4) * 4;
                if write {
                    mmio_write32(addr, rng.value());
                } else {
                    mmio_read32(addr);
                }
                mmio += 1;
            }
            _ if t.n_ports > 0 => {
                let (base, size) = t.ports[rng.below(t.n_ports as u64) as usize];
                let port = base + rng.below(u64::from(size)) as u16;
                match (write, rng.below(2)) {
                    (true, 0) => outb(port, rng.value() as u8),
                    (true, _) => outl(port & !3, rng.value()),
                    (false, 0) => {
                        inb(port);
                    }
                    (false, _) => {
                        inl(port & !3);
                    }
                }
                pio += 1;
            }
            _ => {}
        }
    }
    Record::new("result")
        .kv("name", "hostile")
        .kv("seed", seed)
        .kv("devices", count)
        .kv("config", config)
        .kv("mmio", mmio)
        .kv("pio", pio)
        .send(env);
    exit::OK
}
