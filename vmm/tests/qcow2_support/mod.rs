//! Helpers shared by the qcow2 integration tests: running qemu-img / qemu-io (which must be
//! installed: the tests fail, not skip, without them), comparing contents, a write workload.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use vmm::backend::block::open_disk;
use vmm::backend::block::{BlockBackend, OpenOptions};

pub const MIB: u64 = 1 << 20;

pub fn run(prog: &str, args: &[&str]) -> std::process::Output {
    Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{prog} is required for these tests (install qemu-utils): {e}"))
}

pub fn ok(prog: &str, args: &[&str]) {
    let out = run(prog, args);
    assert!(
        out.status.success(),
        "{prog} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `qemu-img create -f qcow2` with extra `-o` options.
pub fn qcreate(path: &Path, size: u64, opts: &str) {
    create(path, size, opts, None);
}

/// The backing file of an overlay: its name as the overlay records it (a relative name is
/// resolved against the overlay's directory) and its format.
pub struct Backing<'a> {
    pub name: &'a str,
    pub format: &'a str,
}

impl<'a> Backing<'a> {
    pub fn qcow2(name: &'a str) -> Self {
        Backing {
            name,
            format: "qcow2",
        }
    }

    pub fn raw(name: &'a str) -> Self {
        Backing {
            name,
            format: "raw",
        }
    }
}

/// `qemu-img create -f qcow2` of an overlay over `backing`, with extra `-o` options.
pub fn qoverlay(path: &Path, size: u64, backing: Backing, opts: &str) {
    create(path, size, opts, Some(backing));
}

fn create(path: &Path, size: u64, opts: &str, backing: Option<Backing>) {
    let size = size.to_string();
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    if !opts.is_empty() {
        args.extend(["-o", opts]);
    }
    if let Some(b) = &backing {
        args.extend(["-b", b.name, "-F", b.format]);
    }
    args.extend([s(path), &size]);
    ok("qemu-img", &args);
}

pub fn qemu_io(path: &Path, cmds: &[&str]) {
    let mut args = vec!["-f", "qcow2"];
    for c in cmds {
        args.extend(["-c", c]);
    }
    args.push(s(path));
    ok("qemu-io", &args);
}

/// qemu-img check must report neither corruption nor leaks (exit 0).
pub fn check_clean(path: &Path) {
    let out = run("qemu-img", &["check", s(path)]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "qemu-img check {}: {}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What qemu-img reads: the image converted to raw.
pub fn qemu_raw(dir: &Path, img: &Path) -> Vec<u8> {
    let out = dir.join("qemu-view.raw");
    ok("qemu-img", &["convert", "-O", "raw", s(img), s(&out)]);
    std::fs::read(&out).unwrap()
}

pub fn read_all(d: &mut dyn BlockBackend) -> Vec<u8> {
    let mut v = vec![0u8; d.capacity() as usize];
    // Uneven chunks exercise reads that span clusters.
    let mut pos = 0usize;
    let mut step = 3000usize;
    while pos < v.len() {
        let n = step.min(v.len() - pos);
        d.read_at(pos as u64, &mut v[pos..pos + n]).unwrap();
        pos += n;
        step = step * 7 % 100_003 + 512;
    }
    v
}

pub fn ro() -> OpenOptions {
    OpenOptions {
        read_only: true,
        direct_io: false,
        format: None,
    }
}

pub fn ours(path: &Path) -> Vec<u8> {
    let mut d = open_disk(path, ro()).unwrap();
    assert!(d.describe().starts_with("qcow2"), "{}", d.describe());
    read_all(d.as_mut())
}

/// Compares two disk contents, reporting the first difference instead of dumping megabytes.
#[track_caller]
pub fn assert_same(mine: &[u8], theirs: &[u8], what: &str) {
    assert_eq!(mine.len(), theirs.len(), "{what}: lengths");
    if let Some(i) = mine.iter().zip(theirs).position(|(a, b)| a != b) {
        panic!(
            "{what}: first difference at byte {i:#x}: {:#x} vs {:#x}",
            mine[i], theirs[i]
        );
    }
}

/// Our reading of `img` is byte-for-byte what qemu-img reads.
pub fn assert_reads_like_qemu(dir: &Path, img: &Path) {
    let theirs = qemu_raw(dir, img);
    assert_same(&ours(img), &theirs, "ours vs qemu-img");
}

/// Our image holds exactly `model`: qemu-img check is clean and qemu-img compare agrees.
pub fn assert_holds(dir: &Path, img: &Path, model: &[u8]) {
    check_clean(img);
    let m = dir.join("model.raw");
    std::fs::write(&m, model).unwrap();
    ok(
        "qemu-img",
        &["compare", "-q", "-f", "qcow2", "-F", "raw", s(img), s(&m)],
    );
}

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2654435761)
                .rotate_left(seed as u32 % 31) as u8
                ^ seed
        })
        .collect()
}

pub fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Applies the same writes to our back-end and to a model.
pub fn write_both(q: &mut dyn BlockBackend, model: &mut [u8], off: u64, data: &[u8]) {
    q.write_at(off, data).unwrap();
    model[off as usize..off as usize + data.len()].copy_from_slice(data);
}

pub fn zero_both(q: &mut dyn BlockBackend, model: &mut [u8], off: u64, len: u64, discard: bool) {
    if discard {
        q.discard(off, len).unwrap();
    } else {
        q.write_zeroes(off, len).unwrap();
    }
    model[off as usize..(off + len) as usize].fill(0);
}

/// A fixed workload: aligned, unaligned, spanning, rewrites, zeroes and discards.
pub fn workload(q: &mut dyn BlockBackend, model: &mut [u8]) {
    let k = 1024u64;
    write_both(q, model, 0, &pattern(64 * 1024, 1));
    write_both(q, model, 100 * k + 17, &pattern(200 * 1024, 2));
    write_both(q, model, 1024 * k - 5, &pattern(10, 3));
    write_both(q, model, 2048 * k, &pattern(512, 4));
    write_both(q, model, 130 * k, &pattern(3000, 5));
    zero_both(q, model, 64 * k, 64 * k, false);
    zero_both(q, model, 200 * k + 1, 70 * k, true);
    zero_both(q, model, 1536 * k, 128 * k, false);
    write_both(q, model, 1600 * k, &pattern(100, 6));
    // Partial zeroes in clusters not touched before (copy-on-write from backing/compressed).
    zero_both(q, model, 2500 * k + 100, 1000, false);
    zero_both(q, model, 3500 * k + 7, 5000, true);
    q.flush().unwrap();
    write_both(q, model, 3 * 1024 * k - 1, &pattern(2, 7));
    zero_both(q, model, 0, 32 * k, true);
}

pub fn rw() -> OpenOptions {
    OpenOptions::default()
}

/// Guest memory for the vectored paths (`read_vectored_at` / `write_vectored_at`): a request's
/// bytes are split into uneven segments (odd sizes included) at scattered guest addresses, as a
/// virtio-blk descriptor chain may split them.
pub struct Guest {
    mem: vm_memory::GuestMemoryMmap,
}

impl Guest {
    pub fn new() -> Guest {
        use vm_memory::{GuestAddress, GuestMemoryMmap};
        Guest {
            mem: GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 * MIB as usize)]).unwrap(),
        }
    }

    /// `len` bytes as segments of 1 to ~70 KiB, each 100 bytes after the previous one.
    fn segments(&self, len: usize) -> Vec<vm_memory::VolatileSlice<'_>> {
        use vm_memory::{GuestAddress, GuestMemory, Permissions};
        assert!(len <= 3 * MIB as usize, "test requests stay under 3 MiB");
        let (mut at, mut left, mut step) = (0u64, len, 7usize);
        let mut v = Vec::new();
        while left > 0 {
            let n = step.min(left);
            let mut s = self
                .mem
                .get_slices(GuestAddress(at), n, Permissions::ReadWrite)
                .unwrap();
            v.push(s.next().unwrap().unwrap());
            at += n as u64 + 100;
            left -= n;
            step = step * 13 % 70_001 + 1;
        }
        v
    }

    pub fn read(&self, d: &mut dyn BlockBackend, off: u64, len: usize) -> Vec<u8> {
        let segs = self.segments(len);
        d.read_vectored_at(off, &segs, &mut Vec::new()).unwrap();
        let mut out = vec![0u8; len];
        vmm::backend::block::copy_from_slices(&segs, &mut out);
        out
    }

    pub fn write(&self, d: &mut dyn BlockBackend, off: u64, data: &[u8]) -> std::io::Result<()> {
        let segs = self.segments(data.len());
        vmm::backend::block::copy_to_slices(data, &segs);
        d.write_vectored_at(off, &segs, &mut Vec::new())
    }

    /// The whole disk through the vectored path, in uneven requests.
    pub fn read_all(&self, d: &mut dyn BlockBackend) -> Vec<u8> {
        let cap = d.capacity() as usize;
        let mut v = Vec::with_capacity(cap);
        let mut step = 3000usize;
        while v.len() < cap {
            let n = step.min(cap - v.len());
            v.extend(self.read(d, v.len() as u64, n));
            step = step * 7 % 300_007 + 512;
        }
        v
    }

    pub fn write_both(&self, q: &mut dyn BlockBackend, model: &mut [u8], off: u64, data: &[u8]) {
        self.write(q, off, data).unwrap();
        model[off as usize..off as usize + data.len()].copy_from_slice(data);
    }
}
