//! virtio-pci transport: writes and reads of the common configuration (feature selection,
//! queue selection, sizes, ring addresses, enables, status, vectors), the ISR, the device
//! configuration, notifications and the MSI-X table, in any order and width, with a
//! virtio-blk device behind and rings in guest memory (the input's tail). Reaching
//! DRIVER_OK starts the real worker thread.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use vmbench_fuzz::{guest_memory, Input, MemDisk};
use vmm::bus::{Access, BusDevice};
use vmm::interrupt::TestIrqLine;
use vmm::pci::PciFunction;
use vmm::virtio::blk::Block;
use vmm::virtio::msix::{VectorFd, VirtioIrq};
use vmm::virtio::pci::{VirtioPci, COMMON, DEVICE_CFG, ISR, MSIX_PBA, MSIX_TABLE, NOTIFY};
use vmm_sys_util::eventfd::EventFd;

const MEM: usize = 64 << 10;
const BAR: u64 = 0xc000_0000;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let nops = usize::from(input.u8());
    let ops = input.bytes(nops * 8);
    let mem = guest_memory(MEM, input.bytes(MEM));
    let blk = Block::new(Box::new(MemDisk::new(16 << 10, false)), "fuzz");
    let vectors = (0..2)
        .map(|_| VectorFd {
            gsi: None,
            fd: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        })
        .collect();
    let irq = Arc::new(VirtioIrq::new(
        vectors,
        1,
        None,
        Arc::new(TestIrqLine::default()),
    ));
    let Ok(mut dev) = VirtioPci::new(Box::new(blk), mem, irq, BAR) else {
        return;
    };
    // Memory decoding and bus mastering on, as firmware leaves them.
    dev.config_write(1, 0, &6u32.to_le_bytes());

    let mut ops = Input::new(ops);
    while !ops.is_empty() {
        let kind = ops.u8();
        let region =
            [COMMON, ISR, DEVICE_CFG, NOTIFY, MSIX_TABLE, MSIX_PBA][usize::from(kind >> 5) % 6];
        let within = if region == COMMON {
            u64::from(ops.u8() % 0x40)
        } else {
            u64::from(ops.u8())
        };
        let off = region + within;
        let a = Access {
            offset: off,
            addr: BAR + off,
            vcpu: 0,
        };
        let width = ops.width();
        let v = ops.u64().to_le_bytes();
        match kind % 4 {
            0 => {
                let mut d = [0u8; 8];
                dev.read(a, &mut d[..width]);
            }
            1 => {
                let reg = usize::from(ops.u8() % 64);
                let _ = dev.config_write(reg, 0, &v[..width.min(4)]);
            }
            _ => dev.write(a, &v[..width]),
        }
    }
});
