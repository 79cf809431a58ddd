//! virtio-blk: descriptor chains and requests as a hostile driver lays them out. The input
//! picks the queue size and read-only flag, then becomes guest memory: the rings packed from
//! address 0 ([`packed_queue`]), buffers anywhere. The worker serves whatever the rings hold,
//! twice (the second pass sees the used ring the first wrote). Seeds: fuzz/make-seeds.
#![no_main]

use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;
use vmbench_fuzz::{guest_memory, packed_queue, Input, MemDisk, NoQueueInterrupt};
use vmm::backend::block::BlockBackend;
use vmm::virtio::blk::BlkWorker;
use vmm_sys_util::eventfd::EventFd;

const MEM: usize = 64 << 10;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let size = 1u16 << (input.u8() % 9);
    let read_only = input.u8() & 1 == 1;
    let mem = guest_memory(MEM, input.bytes(MEM));
    let disk: Box<dyn BlockBackend> = Box::new(MemDisk::new(16 << 10, read_only));
    let (queue, _) = packed_queue(size, 0);
    let mut worker = BlkWorker {
        mem,
        queue,
        notify: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        interrupt: Arc::new(NoQueueInterrupt),
        backend: Arc::new(Mutex::new(disk)),
        id: *b"fuzz-disk-serial-id!",
        counters: Arc::default(),
        read_only,
        buf: Vec::new(),
    };
    for _ in 0..2 {
        let _ = worker.process();
    }
});
