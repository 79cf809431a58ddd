//! e1000 (82540EM): register sequences through the memory and I/O BARs, configuration
//! writes, and transmit and receive descriptor rings in guest memory, as a hostile driver
//! would program them. Guest memory starts as a copy of the input's tail; the rings start at
//! plausible places (TX at 0x1000, RX at 0x2000) so that random writes reach the data paths.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use vmbench_fuzz::{guest_memory, Input, LoopNet, ManualClock};
use vmm::bus::{Access, BusDevice};
use vmm::devices::e1000::regs::*;
use vmm::devices::e1000::E1000;
use vmm::interrupt::TestIrqLine;
use vmm::pci::config::{CMD_BUS_MASTER, CMD_IO, CMD_MEMORY};
use vmm::pci::PciFunction;

const MEM: usize = 64 << 10;
const BAR0: u64 = 0xfebc_0000;
const IO_BASE: u16 = 0xc000;

/// Registers worth hitting often; any offset in the BAR is hit too.
const INTERESTING: &[u32] = &[
    CTRL, EECD, EERD, MDIC, ICR, ICS, IMS, IMC, ITR, RCTL, TCTL, RDBAL, RDBAH, RDLEN, RDH, RDT,
    RDTR, RADV, TDBAL, TDBAH, TDLEN, TDH, TDT, TIDV, TADV, RXCSUM, PBA, VET, MTA, RAL0, RAH0, VFTA,
];

fn mmio(off: u32) -> Access {
    Access {
        offset: u64::from(off),
        addr: BAR0 + u64::from(off),
        vcpu: 0,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let nops = usize::from(input.u8());
    let ops = input.bytes(nops * 8);
    let mut net = LoopNet::default();
    for _ in 0..input.u8() % 4 {
        net.inbox.push_back(input.chunk(2048).to_vec());
    }
    let mem = guest_memory(MEM, input.bytes(MEM));
    let clock = ManualClock::default();
    let mut dev = E1000::new(
        mem,
        Box::new(net),
        Arc::new(TestIrqLine::default()),
        [0x52, 0x54, 0, 0x12, 0x34, 0x56],
        BAR0,
        IO_BASE,
    );
    let c = clock.clone();
    dev.set_clock(Arc::new(move || c.now()));
    let cmd = u32::from(CMD_IO | CMD_MEMORY | CMD_BUS_MASTER);
    dev.config_write(1, 0, &cmd.to_le_bytes());
    for (reg, v) in [
        (TDBAL, 0x1000),
        (TDLEN, 256),
        (TCTL, TCTL_EN | TCTL_PSP),
        (RDBAL, 0x2000),
        (RDLEN, 256),
        (RCTL, RCTL_EN | RCTL_UPE | RCTL_LPE),
        (RDT, 15),
    ] {
        dev.write(mmio(reg), &u32::to_le_bytes(v));
    }

    let mut ops = Input::new(ops);
    while !ops.is_empty() {
        let kind = ops.u8();
        let off = if kind & 0x80 != 0 {
            INTERESTING[usize::from(ops.u8()) % INTERESTING.len()]
        } else {
            u32::from(ops.u16()) << 1 & 0x1_fffc
        };
        let v = ops.u32().to_le_bytes();
        match kind % 8 {
            0..=2 => dev.write(mmio(off), &v[..ops.width().min(4)]),
            3 => {
                let mut d = [0u8; 4];
                dev.read(mmio(off), &mut d[..ops.width().min(4)]);
            }
            4 => {
                // The I/O window: IOADDR at 0, IODATA at 4.
                let port = u16::from(ops.u8() % 8);
                let a = Access {
                    offset: u64::from(port),
                    addr: u64::from(IO_BASE + port),
                    vcpu: 0,
                };
                if off & 4 != 0 {
                    dev.write(a, &v);
                } else {
                    let mut d = [0u8; 4];
                    dev.read(a, &mut d);
                }
            }
            5 => {
                let _ = dev.config_write(usize::from(ops.u8() % 64), u64::from(off % 4), &v[..1]);
            }
            6 => {
                dev.rx_poll();
            }
            _ => {
                let now = clock.advance(u64::from(ops.u16()));
                dev.poll(now);
            }
        }
    }
});
