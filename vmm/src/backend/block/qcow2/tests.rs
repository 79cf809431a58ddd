//! Unit tests: pure parsers (header, L2 entries, refcount widths) under proptest, the cache,
//! refcount limits, and what a crash at each write-back stage leaves (checked with qemu-img,
//! which must be installed).

use std::path::Path;
use std::process::Command;

use proptest::prelude::*;

use super::cache::TableCache;
use super::engine::Stage;
use super::header::Header;
use super::refcount::{rc_get, rc_set};
use super::tables::{decode_l2, Mapping, COMPRESSED, COPIED, ZERO};
use super::{create, Error, Qcow2};
use crate::backend::block::{BlockBackend, OpenOptions};

fn qemu_img(args: &[&str]) -> std::process::Output {
    Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img is required for these tests (install qemu-utils)")
}

/// qemu-img check's exit code: 0 clean, 2 corruption, 3 leaks only.
fn check_code(p: &Path) -> (i32, String) {
    let out = qemu_img(&["check", p.to_str().unwrap()]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn rw() -> OpenOptions {
    OpenOptions::default()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[test]
fn refcount_entries_of_every_width_round_trip() {
    for order in 0..=6u32 {
        let bits = 1u32 << order;
        let max = if bits == 64 {
            u64::MAX
        } else {
            (1 << bits) - 1
        };
        let mut block = vec![0u8; 512];
        let n = 512 * 8 / bits as usize;
        for i in 0..n {
            rc_set(&mut block, i, order, (i as u64 * 2654435761) & max);
        }
        for i in 0..n {
            assert_eq!(
                rc_get(&block, i, order),
                (i as u64 * 2654435761) & max,
                "order {order} entry {i}"
            );
        }
    }
    // Sub-byte entries start at the least significant bit.
    let mut b = [0u8; 1];
    rc_set(&mut b, 0, 0, 1);
    rc_set(&mut b, 3, 1, 2);
    assert_eq!(b[0], 0b1000_0001);
}

#[test]
fn l2_entries_decode() {
    assert_eq!(decode_l2(0, 16, 3).unwrap(), Mapping::Unallocated);
    assert_eq!(
        decode_l2(COPIED | 0x5_0000, 16, 3).unwrap(),
        Mapping::Data {
            host: 0x5_0000,
            copied: true
        }
    );
    assert_eq!(
        decode_l2(ZERO, 16, 3).unwrap(),
        Mapping::Zero {
            host: None,
            copied: false
        }
    );
    assert!(matches!(decode_l2(ZERO, 16, 2), Err(Error::ZeroFlagInV2)));
    assert!(matches!(
        decode_l2(0x5_0200, 16, 3),
        Err(Error::Unaligned { .. })
    ));
    // 64 KiB clusters: offset in bits 0..54, 2 additional sectors in bits 54..62.
    let e = COMPRESSED | (2 << 54) | 0x12_3456;
    assert_eq!(
        decode_l2(e, 16, 3).unwrap(),
        Mapping::Compressed {
            host: 0x12_3456,
            len: 0x12_3400 + 3 * 512 - 0x12_3456,
            sectors: (0x12_3400, 3 * 512)
        }
    );
}

#[test]
fn cache_evicts_least_recently_used_clean_tables_only() {
    let mut c: TableCache<u32> = TableCache::new(2);
    c.insert(1, 10, false);
    c.insert(2, 20, true);
    c.get(1);
    c.insert(3, 30, false);
    // 2 is older but dirty: 1 goes.
    assert!(!c.contains(1) && c.contains(2) && c.contains(3));
    c.insert(4, 40, true);
    assert!(c.contains(2) && !c.contains(3) && c.contains(4));
    // All dirty: the cache grows rather than lose a table.
    c.insert(5, 50, true);
    assert!(c.over_capacity() && c.contains(2));
    assert_eq!(c.dirty_keys(), vec![2, 4, 5]);
}

#[test]
fn refcount_overflow_and_underflow_are_errors() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("rc.qcow2");
    create(&p, 1 << 20, 16).unwrap();
    // Cluster 0's 16-bit refcount sits at the start of the first refcount block (cluster 2).
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[2 << 16..(2 << 16) + 2].copy_from_slice(&0xffffu16.to_be_bytes());
    std::fs::write(&p, bytes).unwrap();
    let mut q = Qcow2::open(&p, rw()).unwrap();
    assert_eq!(q.refcount_of(0).unwrap(), 0xffff);
    let e = q.adjust_refcount(0, 1).unwrap_err();
    assert!(matches!(e, Error::RefcountOverflow { offset: 0 }));
    assert_eq!(e.to_string(), "refcount overflow for the cluster at 0x0");
    // A free cluster (past the metadata) cannot be decremented.
    let e = q.adjust_refcount(20 << 16, -1).unwrap_err();
    assert!(matches!(e, Error::RefcountUnderflow { offset } if offset == 20 << 16));
    std::mem::forget(q);
}

#[test]
fn crash_at_each_write_back_stage_leaves_no_corruption() {
    let d = tempfile::tempdir().unwrap();
    let raw = d.path().join("src.raw");
    std::fs::write(&raw, pattern(2 << 20, 5)).unwrap();
    for stage in [Some(Stage::Refcounts), Some(Stage::Tables), None] {
        // Compressed clusters: overwriting them allocates and frees (deferred decrements).
        let p = d.path().join("c.qcow2");
        let out = qemu_img(&[
            "convert",
            "-c",
            "-O",
            "qcow2",
            raw.to_str().unwrap(),
            p.to_str().unwrap(),
        ]);
        assert!(out.status.success());
        let mut q = Qcow2::open(&p, rw()).unwrap();
        q.write_at(100, &pattern(5000, 1)).unwrap();
        q.write_at(1 << 20, &pattern(200_000, 2)).unwrap();
        q.write_zeroes(3 << 16, 1 << 16).unwrap();
        q.discard(0x1_8000, 0x2_0000).unwrap();
        match stage {
            Some(s) => q.flush_until(s).unwrap(),
            None => q.flush().unwrap(),
        }
        q.crash();
        let (code, out) = check_code(&p);
        match stage {
            // Nothing points at the new clusters yet, or the old ones are not yet freed: leaks.
            Some(_) => assert!(code == 0 || code == 3, "{stage:?}: {out}"),
            None => assert_eq!(code, 0, "{out}"),
        }
    }
}

#[test]
fn tiny_caches_write_back_on_eviction_and_stay_consistent() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("tiny.qcow2");
    // 512-byte clusters: an L2 table covers 32 KiB, a refcount block 128 KiB of file.
    create(&p, 8 << 20, 9).unwrap();
    let mut model = vec![0u8; 8 << 20];
    let mut q = Qcow2::open(&p, rw()).unwrap();
    q.set_cache_sizes(3, 2);
    for i in 0..40u64 {
        let off = (i * 197_531) % ((8 << 20) - 70_000);
        let data = pattern(60_000, i as u8);
        q.write_at(off, &data).unwrap();
        model[off as usize..off as usize + data.len()].copy_from_slice(&data);
    }
    assert!(
        q.l2_cached() <= 3 + 130,
        "dirty tables are written back, not hoarded"
    );
    let mut back = vec![0u8; 8 << 20];
    q.read_at(0, &mut back).unwrap();
    assert!(back == model);
    drop(q);
    let (code, out) = check_code(&p);
    assert_eq!(code, 0, "{out}");
    let m = d.path().join("model.raw");
    std::fs::write(&m, &model).unwrap();
    let out = qemu_img(&[
        "compare",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "raw",
        p.to_str().unwrap(),
        m.to_str().unwrap(),
    ]);
    assert!(out.status.success());
}

#[test]
fn created_images_parse_back() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("new.qcow2");
    create(&p, 10 << 20, 16).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    let h = Header::parse(&bytes, bytes.len() as u64).unwrap();
    assert_eq!(
        (h.version, h.size, h.cluster_bits, h.refcount_order),
        (3, 10 << 20, 16, 4)
    );
    assert!(matches!(
        create(&p, 1 << 20, 8),
        Err(Error::BadClusterBits(8))
    ));
    let q = Qcow2::open(
        &p,
        OpenOptions {
            read_only: true,
            direct_io: false,
            format: None,
        },
    )
    .unwrap();
    assert_eq!(q.capacity(), 10 << 20);
    assert!(q.describe().starts_with("qcow2 v3"));
    assert!(matches!(
        Qcow2::open(
            &p,
            OpenOptions {
                read_only: false,
                direct_io: true,
                format: None,
            }
        ),
        Err(Error::DirectIo)
    ));
}

fn sample_image() -> Vec<u8> {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("s.qcow2");
    create(&p, 1 << 20, 12).unwrap();
    let mut q = Qcow2::open(&p, rw()).unwrap();
    q.write_at(5000, &pattern(20_000, 3)).unwrap();
    drop(q);
    std::fs::read(&p).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Corrupted headers are errors, never panics or huge allocations.
    #[test]
    fn header_parser_never_panics(patches in prop::collection::vec((0usize..200, any::<u8>()), 1..8)) {
        let mut b = sample_image();
        for (at, v) in patches {
            b[at] = v;
        }
        let _ = Header::parse(&b, b.len() as u64);
        let _ = Header::parse(&b[..b.len().min(150)], 150);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// Corrupted tables anywhere in the file fail the I/O, never the process.
    #[test]
    fn corrupt_images_never_panic(patches in prop::collection::vec((0usize..(7 * 4096), any::<u8>()), 1..16)) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f.qcow2");
        let mut b = sample_image();
        for (at, v) in patches {
            let at = at % b.len();
            b[at] = v;
        }
        std::fs::write(&p, &b).unwrap();
        if let Ok(mut q) = Qcow2::open(&p, rw()) {
            let mut buf = vec![0u8; 30_000];
            let _ = q.read_at(0, &mut buf);
            let _ = q.write_at(3000, &buf[..9000]);
            let _ = q.write_zeroes(0, 8192);
            let _ = q.flush();
        }
    }
}
