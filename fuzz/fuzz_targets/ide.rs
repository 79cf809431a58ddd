//! IDE (PIIX3): command sequences through the task-file ports of both channels, bus-master
//! DMA registers and PRD tables in guest memory, and configuration writes, as a hostile
//! driver would issue them. Guest memory starts as a copy of the input's tail.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use vmbench_fuzz::{guest_memory, Input, MemDisk};
use vmm::bus::{Access, BusDevice};
use vmm::devices::ide::Piix;
use vmm::interrupt::TestIrqLine;
use vmm::pci::config::{CMD_BUS_MASTER, CMD_IO};
use vmm::pci::PciFunction;

const MEM: usize = 64 << 10;
const BM: u16 = 0xc040;
/// ATA opcodes the model knows; any byte is tried too.
const OPCODES: &[u8] = &[
    0x20, 0x24, 0xc8, 0x25, 0xc4, 0x29, 0x30, 0x34, 0xca, 0x35, 0xc5, 0x39, 0xc6, 0xef, 0xec, 0xe7,
    0xea, 0x90, 0xe6, 0xe5, 0x40, 0x42, 0x91, 0xe0, 0xe1, 0x00,
];

fn port(input: &mut Input) -> u16 {
    match input.u8() % 8 {
        0..=2 => 0x1f0 + u16::from(input.u8() % 8),
        3 => 0x3f6,
        4 | 5 => BM + u16::from(input.u8() % 16),
        6 => 0x170 + u16::from(input.u8() % 8),
        _ => input.u16(),
    }
}

fn access(port: u16) -> Access {
    Access {
        offset: 0,
        addr: u64::from(port),
        vcpu: 0,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let nops = usize::from(input.u8());
    let read_only = input.u8() & 1 == 1;
    let ops = input.bytes(nops * 6);
    let mem = guest_memory(MEM, input.bytes(MEM));
    let irq14 = Arc::new(TestIrqLine::default());
    let irq15 = Arc::new(TestIrqLine::default());
    let disk = Box::new(MemDisk::new(256 << 10, read_only));
    let mut piix = Piix::new(mem, Some(disk), irq14, irq15, BM);
    let cmd = u32::from(CMD_IO | CMD_BUS_MASTER);
    piix.config_write(1, 0, &cmd.to_le_bytes());

    let mut ops = Input::new(ops);
    while !ops.is_empty() {
        let kind = ops.u8();
        let p = port(&mut ops);
        let width = [1usize, 2, 4][usize::from(kind >> 4) % 3];
        match kind % 4 {
            0 => {
                let mut d = [0u8; 4];
                piix.read(access(p), &mut d[..width]);
            }
            1 => {
                let v = OPCODES[usize::from(ops.u8()) % OPCODES.len()];
                piix.write(access(0x1f7), &[v]);
            }
            2 => {
                let reg = usize::from(ops.u8() % 64);
                let v = ops.u32().to_le_bytes();
                let _ = piix.config_write(reg, 0, &v[..width]);
            }
            _ => {
                let v = ops.u32().to_le_bytes();
                piix.write(access(p), &v[..width]);
            }
        }
    }
});
