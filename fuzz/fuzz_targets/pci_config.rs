//! PCI configuration space: any sequence of dword-register reads and byte, word or dword
//! writes (BAR sizing and moves, command bits, capability lists) on a function with every
//! kind of BAR and a capability, as a hostile guest's configuration cycles would do them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmbench_fuzz::Input;
use vmm::pci::config::{BarKind, ConfigSpace, Identity};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mut cfg = ConfigSpace::new(Identity {
        vendor: 0x8086,
        device: 0x100e,
        class: 0x02_00_00,
        revision: 3,
        subsystem_vendor: 0x8086,
        subsystem: 0x001e,
        interrupt_pin: 1,
    });
    cfg.add_bar(0, BarKind::Mem32, 0x2_0000, 0xfebc_0000);
    cfg.add_bar(1, BarKind::Io, 0x40, 0xc000);
    cfg.add_bar(2, BarKind::Mem64, 0x8000, 0xc000_0000);
    cfg.add_capability(0x11, &[7, 0, 0, 0x40, 0, 0, 0, 0x50, 0, 0]);
    while !input.is_empty() {
        let op = input.u8();
        let reg = usize::from(input.u8());
        if op & 1 == 0 {
            std::hint::black_box(cfg.read(reg));
            continue;
        }
        let width = [1usize, 2, 4][usize::from(op >> 1) % 3];
        let offset = u64::from(input.u8() % 4);
        let v = input.u32().to_le_bytes();
        let change = cfg.write(reg, offset, &v[..width]);
        std::hint::black_box(change);
        std::hint::black_box(cfg.mapped_ranges());
    }
});
