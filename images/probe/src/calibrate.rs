//! Exit-cost calibration: the round trip of one port-I/O exit, one MMIO exit and one
//! ioeventfd write, and an interrupt's (a self-IPI, delivered to the probe's CPL3 handler, and
//! its end-of-interrupt), each timed with the TSC over many repetitions, reported as
//! percentiles.

use core::str::SplitAsciiWhitespace;

use probe_abi::{exit, flags, layout};

use crate::io::{inl, mmio_read32, mmio_write32, outb, pause, rdtsc};
use crate::irq;
use crate::report::Record;
use crate::Env;

const DEFAULT_N: usize = 1000;
const MAX_N: usize = 100_000;
const WARMUP: usize = 50;
/// A port that answers on PC-compatible machines (POST diagnostics), used when the VMM names
/// no calibration port.
const PORT_80: u16 = 0x80;

/// Sample storage: the start of the probe's free memory, which nothing else uses yet.
fn samples(n: usize) -> &'static mut [u64] {
    // SAFETY: layout::HEAP is identity-mapped RAM reserved for the probe's buffers, at least
    // MIN_MEM - HEAP bytes long (MAX_N * 8 fits); only vCPU 0 runs workloads.
    unsafe { core::slice::from_raw_parts_mut(layout::HEAP as *mut u64, n) }
}

fn measure(env: &Env, name: &str, n: usize, mut op: impl FnMut()) {
    let s = samples(n);
    for _ in 0..WARMUP {
        op();
    }
    for x in s.iter_mut() {
        let t0 = rdtsc();
        op();
        *x = rdtsc() - t0;
    }
    s.sort_unstable();
    let pct = |p: usize| env.ns(s[(n - 1) * p / 100]);
    Record::new("result")
        .kv("name", name)
        .kv("unit", "ns")
        .kv("n", n)
        .kv("median", pct(50))
        .kv("p10", pct(10))
        .kv("p90", pct(90))
        .kv("p99", pct(99))
        .kv("min", env.ns(s[0]))
        .kv("max", env.ns(s[n - 1]))
        .send(env);
}

pub fn run(env: &Env, args: SplitAsciiWhitespace) -> u32 {
    let mut n = DEFAULT_N;
    for a in args {
        match a.split_once('=') {
            Some(("n", v)) => match v.parse::<usize>() {
                Ok(v) if (1..=MAX_N).contains(&v) => n = v,
                _ => {
                    Record::new("error")
                        .text(format_args!("calibrate: n must be 1..={MAX_N}, got '{v}'"))
                        .send(env);
                    return exit::BAD_EXEC;
                }
            },
            _ => {
                Record::new("error")
                    .text(format_args!(
                        "calibrate: unknown argument '{a}' (known: n=N)"
                    ))
                    .send(env);
                return exit::BAD_EXEC;
            }
        }
    }
    let b = env.boot;
    // The same loop with nothing in it: what the timing itself costs.
    measure(env, "tsc_overhead", n, || {});
    if b.calib_port != 0 {
        let port = b.calib_port;
        measure(env, "pio_exit", n, || {
            let _ = inl(port);
        });
    } else {
        measure(env, "pio_exit", n, || outb(PORT_80, 0));
    }
    // Under other VMMs this address is unassigned, which also exits to user space.
    let mmio = if b.calib_mmio != 0 {
        b.calib_mmio
    } else {
        layout::PLATFORM_MMIO
    };
    measure(env, "mmio_exit", n, || {
        let _ = mmio_read32(mmio);
    });
    if b.flags & flags::IOEVENTFD != 0 {
        let addr = b.calib_ioeventfd;
        measure(env, "ioeventfd_write", n, || mmio_write32(addr, 1));
        Record::new("count")
            .kv("name", "ioeventfd_writes")
            .kv("n", n + WARMUP)
            .send(env);
    }
    self_ipi(env, n)
}

/// How long to wait for one interrupt before saying it never came.
const IRQ_WAIT_MS: u64 = 1000;

/// The round trip of an interrupt: send a self-IPI, wait for the handler's count, EOI.
fn self_ipi(env: &Env, n: usize) -> u32 {
    irq::enable();
    // One first, bounded: a host that does not deliver interrupts to CPL3 is said so, not hung.
    let deadline = rdtsc() + u64::from(env.tsc_khz.max(1_000_000)) * IRQ_WAIT_MS;
    irq::self_ipi(irq::SELF_IPI);
    if irq::wait(irq::SELF_IPI, 0, deadline) == irq::Wait::TimedOut {
        Record::new("error")
            .text(format_args!(
                "calibrate: a self-IPI (vector {:#x}) was not delivered within {IRQ_WAIT_MS} ms",
                irq::BASE
            ))
            .send(env);
        return exit::FAILED;
    }
    irq::service();
    measure(env, "self_ipi", n, || {
        let seen = irq::count(irq::SELF_IPI);
        irq::self_ipi(irq::SELF_IPI);
        while irq::count(irq::SELF_IPI) == seen {
            pause();
        }
        irq::service();
    });
    Record::new("count")
        .kv("name", "interrupts")
        .kv("n", irq::count(irq::SELF_IPI))
        .send(env);
    exit::OK
}
