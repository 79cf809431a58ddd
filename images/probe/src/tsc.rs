//! TSC frequency against the PIT (8254, 1.193182 MHz) for VMMs that do not tell it: channel 2
//! in mode 0 gated by port 0x61, polled until its output goes high.

use probe_abi::ports::{PIT_CH2, PIT_CMD, PIT_GATE};

use crate::io::{inb, outb, rdtsc};

const PIT_HZ: u64 = 1_193_182;
/// 50 ms: long enough that the poll's exit cost is a small error.
const TICKS: u64 = PIT_HZ / 20;

pub fn calibrate_with_pit() -> u32 {
    // Gate on, speaker off.
    let gate = inb(PIT_GATE);
    outb(PIT_GATE, (gate & !0x02) | 0x01);
    // Channel 2, lobyte/hibyte, mode 0, binary.
    outb(PIT_CMD, 0b1011_0000);
    outb(PIT_CH2, TICKS as u8);
    outb(PIT_CH2, (TICKS >> 8) as u8);
    let start = rdtsc();
    let mut polls = 0u64;
    while inb(PIT_GATE) & 0x20 == 0 {
        polls += 1;
        if polls > 50_000_000 {
            return 0;
        }
    }
    let ticks = rdtsc() - start;
    outb(PIT_GATE, gate);
    (ticks * PIT_HZ / TICKS / 1000) as u32
}
