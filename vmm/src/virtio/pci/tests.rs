//! The transport as a driver sees it: BAR0 registers written through the bus, a virtio-blk
//! device behind it, rings in a real guest memory. Covers the status machine and what an
//! untrusted driver can get wrong before the device starts.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::*;
use crate::backend::block::{check_range, BlockBackend};
use crate::interrupt::TestIrqLine;
use crate::virtio::blk::{BlkCounters, Block};
use crate::virtio::msix::VectorFd;

const BAR: u64 = 0xc000_0000;

struct MemDisk(Vec<u8>);
impl BlockBackend for MemDisk {
    fn capacity(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_only(&self) -> bool {
        false
    }
    fn read_at(&mut self, o: u64, b: &mut [u8]) -> std::io::Result<()> {
        check_range(o, b.len() as u64, self.capacity())?;
        b.copy_from_slice(&self.0[o as usize..o as usize + b.len()]);
        Ok(())
    }
    fn write_at(&mut self, o: u64, b: &[u8]) -> std::io::Result<()> {
        check_range(o, b.len() as u64, self.capacity())?;
        self.0[o as usize..o as usize + b.len()].copy_from_slice(b);
        Ok(())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
    fn describe(&self) -> String {
        "memory".into()
    }
}

struct Fx {
    dev: VirtioPci,
    mem: GuestMemoryMmap,
    counters: Arc<BlkCounters>,
}

fn fx() -> Fx {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
    let blk = Block::new(Box::new(MemDisk(vec![0x5a; 1 << 20])), "t");
    let counters = blk.counters();
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
    let dev = VirtioPci::new(Box::new(blk), mem.clone(), irq, BAR).unwrap();
    Fx { dev, mem, counters }
}

impl Fx {
    fn w(&mut self, off: u64, data: &[u8]) {
        self.dev.write(
            Access {
                offset: off,
                addr: BAR + off,
                vcpu: 0,
            },
            data,
        );
    }
    fn r8(&mut self, off: u64) -> u8 {
        let mut d = [0u8];
        self.dev.read(
            Access {
                offset: off,
                addr: BAR + off,
                vcpu: 0,
            },
            &mut d,
        );
        d[0]
    }
    fn status(&mut self) -> u8 {
        self.r8(COMMON + 0x14)
    }
    fn set_status(&mut self, s: u8) {
        self.w(COMMON + 0x14, &[s]);
    }
    fn features(&mut self, f: u64) {
        for sel in 0..2u32 {
            self.w(COMMON + 0x08, &sel.to_le_bytes());
            self.w(COMMON + 0x0c, &((f >> (32 * sel)) as u32).to_le_bytes());
        }
    }
    /// A one-chain request ring at 0x1000 (desc), 0x2000 (avail), 0x3000 (used).
    fn queue(&mut self, size: u16) {
        self.w(COMMON + 0x16, &0u16.to_le_bytes());
        self.w(COMMON + 0x18, &size.to_le_bytes());
        for (off, addr) in [(0x20u64, 0x1000u64), (0x28, 0x2000), (0x30, 0x3000)] {
            self.w(COMMON + off, &addr.to_le_bytes());
        }
        self.w(COMMON + 0x1c, &1u16.to_le_bytes());
    }
    /// Puts a FLUSH request on the ring (header at 0x10000, status at 0x11000).
    fn flush_request(&mut self) {
        let m = &self.mem;
        m.write_obj(4u32, GuestAddress(0x10000)).unwrap();
        let desc = |i: u64, addr: u64, len: u32, flags: u16, next: u16| {
            m.write_obj(addr, GuestAddress(0x1000 + i * 16)).unwrap();
            m.write_obj(len, GuestAddress(0x1000 + i * 16 + 8)).unwrap();
            m.write_obj(flags, GuestAddress(0x1000 + i * 16 + 12))
                .unwrap();
            m.write_obj(next, GuestAddress(0x1000 + i * 16 + 14))
                .unwrap();
        };
        desc(0, 0x10000, 16, 1, 1);
        desc(1, 0x11000, 1, 2, 0);
        m.write_obj(0u16, GuestAddress(0x2004)).unwrap();
        m.write_obj(1u16, GuestAddress(0x2002)).unwrap();
    }
    fn used_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(0x3002)).unwrap()
    }
    fn wait_used(&self, n: u16) -> bool {
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if self.used_idx() >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }
    fn notify(&mut self) {
        self.w(NOTIFY, &0u16.to_le_bytes());
    }
}

const OK: u8 = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;

#[test]
fn a_driver_brings_the_device_up_and_it_serves_requests() {
    let mut f = fx();
    f.set_status(status::ACKNOWLEDGE | status::DRIVER);
    f.features(features::VERSION_1);
    f.set_status(OK);
    assert_eq!(f.status() & status::FEATURES_OK, status::FEATURES_OK);
    f.queue(16);
    f.flush_request();
    f.set_status(OK | status::DRIVER_OK);
    f.notify();

    assert!(f.wait_used(1), "the request completes");
    assert_eq!(f.mem.read_obj::<u8>(GuestAddress(0x11000)).unwrap(), 0);
    assert_eq!(f.status() & status::DEVICE_NEEDS_RESET, 0);
}

#[test]
fn features_without_version_1_or_not_offered_are_refused() {
    let mut f = fx();
    f.set_status(status::ACKNOWLEDGE | status::DRIVER);
    f.features(0);
    f.set_status(OK);
    assert_eq!(
        f.status() & status::FEATURES_OK,
        0,
        "legacy-only driver refused"
    );

    f.set_status(0);
    f.set_status(status::ACKNOWLEDGE | status::DRIVER);
    f.features(features::VERSION_1 | 1 << 60);
    f.set_status(OK);
    assert_eq!(
        f.status() & status::FEATURES_OK,
        0,
        "unknown feature refused"
    );
}

#[test]
fn a_queue_size_that_is_not_a_power_of_two_puts_the_device_in_needs_reset() {
    let mut f = fx();
    f.set_status(status::ACKNOWLEDGE | status::DRIVER);
    f.features(features::VERSION_1);
    f.set_status(OK);
    f.queue(3);
    f.set_status(OK | status::DRIVER_OK);

    assert_ne!(f.status() & status::DEVICE_NEEDS_RESET, 0);
    // A reset brings it back.
    f.set_status(0);
    assert_eq!(f.status(), 0);
}

#[test]
fn rings_outside_guest_memory_put_the_device_in_needs_reset() {
    let mut f = fx();
    f.set_status(status::ACKNOWLEDGE | status::DRIVER);
    f.features(features::VERSION_1);
    f.set_status(OK);
    f.queue(16);
    f.w(COMMON + 0x20, &(64u64 << 30).to_le_bytes()); // descriptor table past RAM
    f.set_status(OK | status::DRIVER_OK);
    assert_ne!(f.status() & status::DEVICE_NEEDS_RESET, 0);
}

#[test]
fn notifications_before_driver_ok_do_nothing_until_the_device_starts() {
    let mut f = fx();
    f.set_status(status::ACKNOWLEDGE | status::DRIVER);
    f.features(features::VERSION_1);
    f.set_status(OK);
    f.queue(16);
    f.flush_request();
    f.notify();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(f.used_idx(), 0, "no worker before DRIVER_OK");
    assert_eq!(f.counters.requests.load(Ordering::SeqCst), 0);

    f.set_status(OK | status::DRIVER_OK);
    assert!(f.wait_used(1), "served once started");
}

#[test]
fn queue_registers_are_frozen_after_driver_ok() {
    let mut f = fx();
    f.set_status(status::ACKNOWLEDGE | status::DRIVER);
    f.features(features::VERSION_1);
    f.set_status(OK);
    f.queue(16);
    f.set_status(OK | status::DRIVER_OK);
    f.w(COMMON + 0x18, &8u16.to_le_bytes());
    f.w(COMMON + 0x20, &0x9000u64.to_le_bytes());
    let mut d = [0u8; 2];
    f.dev.read(
        Access {
            offset: COMMON + 0x18,
            addr: BAR + COMMON + 0x18,
            vcpu: 0,
        },
        &mut d,
    );
    assert_eq!(u16::from_le_bytes(d), 16);
    let mut a = [0u8; 8];
    f.dev.read(
        Access {
            offset: COMMON + 0x20,
            addr: BAR + COMMON + 0x20,
            vcpu: 0,
        },
        &mut a,
    );
    assert_eq!(u64::from_le_bytes(a), 0x1000);
}
