//! qcow2: open a mutated image (header, extensions, backing name, L1, refcount table, L2
//! tables and data clusters all come from the input), then read, write, zero, discard and
//! flush through it, as a user's image file and a guest's requests would, the reads and
//! writes both from a buffer and straight from guest memory split into segments (the
//! vectored path virtio-blk takes). Seeds are small images qemu-img made (fuzz/corpus/qcow2).
#![no_main]

use std::io::Write;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vm_memory::{GuestAddress, GuestMemory, Permissions};
use vmbench_fuzz::{guest_memory, Input};
use vmm::backend::block::qcow2::Qcow2;
use vmm::backend::block::{BlockBackend, OpenOptions};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let image_len = usize::from(input.u16());
    let image = input.bytes(image_len);
    let ops = input.bytes(usize::MAX);
    // /dev/shm when there is one: a file per input, in memory.
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm")
    } else {
        tempfile::tempdir()
    }
    .expect("temp dir");
    let path = dir.path().join("f.qcow2");
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(image))
        .expect("write image");
    let read_only = ops.first().is_some_and(|b| b & 1 == 1);
    let Ok(mut q) = Qcow2::open(
        &path,
        OpenOptions {
            read_only,
            direct_io: false,
            format: None,
        },
    ) else {
        return;
    };
    let cap = q.capacity();
    let mut ops = Input::new(ops.get(1..).unwrap_or_default());
    let mut buf = vec![0u8; 1 << 16];
    // Written data: a pattern laid down once per process (a fill per write, or per input,
    // was a fifth of the run time).
    static PATTERN: OnceLock<Vec<u8>> = OnceLock::new();
    let pattern = PATTERN.get_or_init(|| (0..1u32 << 16).map(|i| (i % 251) as u8).collect());
    let mem = guest_memory(2 << 16, &[]);
    let mut scratch = Vec::new();
    while !ops.is_empty() {
        let kind = ops.u8();
        // Mostly inside the disk, sometimes anywhere.
        let raw = ops.u64();
        let off = if kind & 0x80 != 0 || cap == 0 {
            raw
        } else {
            raw % cap
        };
        let len = usize::from(ops.u16()) % buf.len();
        let _ = match kind % 8 {
            0 | 1 => q.read_at(off, &mut buf[..len]),
            2 | 3 => q.write_at(off, &pattern[..len]),
            4 => q.write_zeroes(off, len as u64),
            5 => q.discard(off, len as u64),
            // Guest memory in two segments, split where the input says, a gap between them.
            v => {
                let cut = usize::from(ops.u16()) % (len + 1);
                let seg = |at: u64, n: usize| {
                    mem.get_slices(GuestAddress(at), n, Permissions::ReadWrite)
                        .expect("inside guest memory")
                        .map(|s| s.expect("one region"))
                        .collect::<Vec<_>>()
                };
                let mut bufs = seg(0, cut);
                bufs.extend(seg(cut as u64 + 4096, len - cut));
                if v == 6 {
                    q.read_vectored_at(off, &bufs, &mut scratch)
                } else {
                    q.write_vectored_at(off, &bufs, &mut scratch)
                }
            }
        };
        if kind & 0x40 != 0 {
            let _ = q.flush();
        }
    }
});
