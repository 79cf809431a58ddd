//! The qcow2 cluster lookup hot path: 4 KiB random reads from a fully allocated qcow2 image
//! against the same data in a raw file, both in the host page cache (the difference is the
//! L1/L2 mapping cost); and 64 KiB reads and writes between a qcow2 image and guest memory
//! (split in 4 KiB descriptors, as virtio-blk hands them over), straight (`vectored`: preadv /
//! pwritev on the guest's slices) against through a buffer (`copy`: what the back-end did before,
//! the trait's default). Quick run: `cargo bench -p vmm --bench qcow2 -- --quick`.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use vmm::backend::block::OpenOptions;
use vmm::backend::block::{open_disk, qcow2};

const SIZE: u64 = 64 << 20;
const BLOCK: usize = 4096;

/// Writes the same pseudo-random contents to a raw file and to a new qcow2 image (every
/// cluster allocated).
fn images(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let raw = dir.join("disk.raw");
    let img = dir.join("disk.qcow2");
    let data: Vec<u8> = (0..SIZE as usize)
        .map(|i| (i as u32).wrapping_mul(2654435761) as u8)
        .collect();
    std::fs::write(&raw, &data).expect("write raw image");
    qcow2::create(&img, SIZE, 16).expect("create qcow2 image");
    let mut q = open_disk(&img, OpenOptions::default()).expect("open qcow2 image");
    for (i, chunk) in data.chunks(1 << 20).enumerate() {
        q.write_at((i as u64) << 20, chunk)
            .expect("fill qcow2 image");
    }
    q.flush().expect("flush qcow2 image");
    (raw, img)
}

fn random_reads(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (raw, img) = images(dir.path());
    let mut group = c.benchmark_group("4k_random_read");
    let ro = OpenOptions {
        read_only: true,
        direct_io: false,
        format: None,
    };
    for (name, path) in [("raw", &raw), ("qcow2", &img)] {
        let mut disk = open_disk(path, ro).expect("open image");
        let mut buf = vec![0u8; BLOCK];
        let blocks = SIZE / BLOCK as u64;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        group.bench_function(name, |b| {
            b.iter(|| {
                // xorshift: a cheap, repeatable random block index.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let off = (x % blocks) * BLOCK as u64;
                disk.read_at(off, &mut buf).expect("read");
                black_box(&buf);
            })
        });
    }
    group.finish();
}

/// 64 KiB requests at random 64 KiB-aligned offsets of the filled image, into and out of 16
/// guest pages scattered over guest memory.
fn guest_memory_io(c: &mut Criterion) {
    use vm_memory::{GuestAddress, GuestMemory, GuestMemoryMmap, Permissions};
    use vmm::backend::block::{copy_from_slices, copy_to_slices};
    const REQ: usize = 64 << 10;
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, img) = images(dir.path());
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).expect("memory");
    let slices: Vec<_> = (0..REQ / 4096)
        .map(|i| {
            // 16 KiB apart in a shuffled order: distinct, not adjacent.
            let at = GuestAddress((i as u64 * 37 % 64) * 16 * 1024);
            let mut s = mem
                .get_slices(at, 4096, Permissions::ReadWrite)
                .expect("guest range");
            s.next().expect("one slice").expect("slice")
        })
        .collect();
    let mut disk = open_disk(&img, OpenOptions::default()).expect("open image");
    let reqs = SIZE / REQ as u64;
    let mut scratch = Vec::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % reqs) * REQ as u64
    };
    let mut group = c.benchmark_group("64k_guest_memory");
    group.bench_function("read/vectored", |b| {
        b.iter(|| {
            disk.read_vectored_at(next(), &slices, &mut scratch)
                .expect("read")
        })
    });
    group.bench_function("read/copy", |b| {
        b.iter(|| {
            scratch.resize(REQ, 0);
            disk.read_at(next(), &mut scratch).expect("read");
            copy_to_slices(&scratch, &slices);
        })
    });
    group.bench_function("write/vectored", |b| {
        b.iter(|| {
            disk.write_vectored_at(next(), &slices, &mut scratch)
                .expect("write")
        })
    });
    group.bench_function("write/copy", |b| {
        b.iter(|| {
            scratch.resize(REQ, 0);
            copy_from_slices(&slices, &mut scratch);
            disk.write_at(next(), &scratch).expect("write");
        })
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = random_reads, guest_memory_io
}
criterion_main!(benches);
