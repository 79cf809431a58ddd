//! virtio-net: transmit and receive chains, and the virtio-net header, as a hostile driver
//! writes them. The input picks queue sizes, negotiated features and frames the peer
//! delivers, then becomes guest memory: the RX queue's rings packed from address 0, the TX
//! queue's right after them ([`packed_queue`]), buffers anywhere. Seeds: fuzz/make-seeds.
#![no_main]

use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;
use vmbench_fuzz::{guest_memory, packed_queue, Input, LoopNet, NoQueueInterrupt};
use vmm::backend::net::{NetBackend, Offloads};
use vmm::virtio::net::{NetWorker, MAX_FRAME};
use vmm_sys_util::eventfd::EventFd;

const MEM: usize = 64 << 10;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let rx_size = 1u16 << (input.u8() % 9);
    let tx_size = 1u16 << (input.u8() % 9);
    let features = input.u64();
    let offload_bits = input.u8();
    let mut net = LoopNet {
        offloads: Offloads {
            csum: offload_bits & 1 != 0,
            tso: offload_bits & 2 != 0,
        },
        ..Default::default()
    };
    for _ in 0..input.u8() % 4 {
        net.inbox.push_back(input.chunk(4096).to_vec());
    }
    let mem = guest_memory(MEM, input.bytes(MEM));
    let backend: Box<dyn NetBackend> = Box::new(net);
    let (rxq, tx_base) = packed_queue(rx_size, 0);
    let (txq, _) = packed_queue(tx_size, tx_base);
    let mut worker = NetWorker {
        mem,
        rxq,
        txq,
        rx_notify: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        tx_notify: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        backend_fd: -1,
        backend_armed: true,
        interrupt: Arc::new(NoQueueInterrupt),
        backend: Arc::new(Mutex::new(backend)),
        counters: Arc::default(),
        features,
        frame: vec![0u8; MAX_FRAME],
        pending: None,
    };
    for _ in 0..2 {
        let _ = worker.process_tx();
        let _ = worker.process_rx();
    }
});
