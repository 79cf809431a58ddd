//! qcow2 interoperability with the reference implementation, both ways: images written by
//! qemu-img / qemu-io read back as qemu-img reads them; images written by us pass qemu-img check
//! and compare. qemu-img must be installed (the tests fail without it).

mod qcow2_support;

use proptest::prelude::*;
use qcow2_support::*;
use std::path::Path;
use vmm::backend::block::open_disk;
use vmm::backend::block::qcow2::{self, Qcow2};

// ---------------------------------------------------------------- images written by QEMU

#[test]
fn reads_plain_image_written_by_qemu_io() {
    let d = tmp();
    let img = d.path().join("plain.img");
    qcreate(&img, 4 * MIB, "");
    qemu_io(
        &img,
        &[
            "write -P 0xab 0 64k",
            "write -P 0x11 100k 3k",
            "write -P 0x22 1020k 8k",
            "write -P 0x33 4095k 1k",
        ],
    );
    assert_reads_like_qemu(d.path(), &img);
}

#[test]
fn reads_small_clusters_and_every_refcount_width() {
    let d = tmp();
    for (i, bits) in [1, 2, 4, 8, 16, 32, 64].iter().enumerate() {
        let img = d.path().join(format!("rc{bits}.qcow2"));
        qcreate(
            &img,
            2 * MIB,
            &format!("cluster_size=512,refcount_bits={bits}"),
        );
        qemu_io(
            &img,
            &[
                &format!("write -P {} 1000 70000", i + 1),
                "write -P 0x5a 1m 4k",
            ],
        );
        assert_reads_like_qemu(d.path(), &img);
    }
}

#[test]
fn reads_backing_chain_of_two_over_a_raw_base() {
    let d = tmp();
    let base = d.path().join("base.raw");
    std::fs::write(&base, pattern(MIB as usize, 7)).unwrap();
    let mid = d.path().join("mid.qcow2");
    let top = d.path().join("top.qcow2");
    // Relative names: resolved against the overlay's directory, not the current one.
    qoverlay(&mid, 3 * MIB, Backing::raw("base.raw"), "");
    qoverlay(&top, 4 * MIB, Backing::qcow2("mid.qcow2"), "");
    qemu_io(&mid, &["write -P 0x44 64k 64k", "write -P 0x45 2m 10k"]);
    qemu_io(
        &top,
        &[
            "write -P 0x66 96k 8k",
            "write -P 0x67 3m 1k",
            "write -z 512k 64k",
        ],
    );
    assert_reads_like_qemu(d.path(), &top);
}

#[test]
fn reads_qcow2_base_without_backing_format_by_probing() {
    let d = tmp();
    let base = d.path().join("base.qcow2");
    let top = d.path().join("top.qcow2");
    qcreate(&base, 2 * MIB, "");
    qemu_io(&base, &["write -P 0x12 0 200k"]);
    qoverlay(&top, 2 * MIB, Backing::qcow2("base.qcow2"), "");
    // Hide the backing format extension (an unknown type is skipped): the base's format must
    // come from its magic. qemu-img no longer writes such images itself.
    let mut bytes = std::fs::read(&top).unwrap();
    let at = bytes[..4096]
        .windows(4)
        .position(|w| w == [0xe2, 0x79, 0x2a, 0xca])
        .unwrap();
    bytes[at..at + 4].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    std::fs::write(&top, bytes).unwrap();
    qemu_io(&top, &["write -P 0x13 100k 4k"]);
    assert_reads_like_qemu(d.path(), &top);
}

#[test]
fn reads_compressed_clusters_from_qemu_img_convert() {
    let d = tmp();
    let raw = d.path().join("src.raw");
    let mut data = pattern(3 * MIB as usize, 3);
    // Compressible runs, incompressible noise and zeroes.
    data[..MIB as usize]
        .iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = (i / 4096) as u8);
    data[2 * MIB as usize..2 * MIB as usize + 300_000].fill(0);
    std::fs::write(&raw, &data).unwrap();
    for cs in ["4k", "64k", "2M"] {
        let img = d.path().join(format!("c{cs}.qcow2"));
        ok(
            "qemu-img",
            &[
                "convert",
                "-c",
                "-O",
                "qcow2",
                "-o",
                &format!("cluster_size={cs}"),
                s(&raw),
                s(&img),
            ],
        );
        assert_same(&ours(&img), &data, cs);
        assert_reads_like_qemu(d.path(), &img);
    }
}

#[test]
fn reads_version_2_images() {
    let d = tmp();
    let img = d.path().join("v2.qcow2");
    qcreate(&img, 3 * MIB, "compat=0.10");
    qemu_io(
        &img,
        &[
            "write -P 0x71 0 100k",
            "write -P 0x72 2m 1k",
            "write -z 64k 64k",
        ],
    );
    let q = Qcow2::open(&img, ro()).unwrap();
    assert_eq!(q.header_version(), 2);
    drop(q);
    assert_reads_like_qemu(d.path(), &img);
}

#[test]
fn reads_zero_clusters_including_over_a_backing_file() {
    let d = tmp();
    let base = d.path().join("base.qcow2");
    let top = d.path().join("top.qcow2");
    qcreate(&base, 2 * MIB, "");
    qemu_io(&base, &["write -P 0xee 0 2m"]);
    qoverlay(&top, 2 * MIB, Backing::qcow2(s(&base)), "");
    qemu_io(
        &top,
        &[
            "write -P 0xab 0 256k",
            "write -z 64k 64k",
            "write -z -u 128k 64k",
            "write -z 1m 128k",
            "write -z 1536k 4k",
        ],
    );
    let data = ours(&top);
    assert!(data[64 * 1024..192 * 1024].iter().all(|&b| b == 0));
    assert!(data[MIB as usize..MIB as usize + 128 * 1024]
        .iter()
        .all(|&b| b == 0));
    assert_reads_like_qemu(d.path(), &top);
}

#[test]
fn our_writes_pass_check_and_compare_v3_and_v2() {
    let d = tmp();
    for opts in [
        "",
        "compat=0.10",
        "cluster_size=4k",
        "cluster_size=512,refcount_bits=1",
    ] {
        let img = d.path().join("w.qcow2");
        qcreate(&img, 4 * MIB, opts);
        let mut model = vec![0u8; 4 * MIB as usize];
        let mut q = open_disk(&img, rw()).unwrap();
        workload(q.as_mut(), &mut model);
        assert_same(&read_all(q.as_mut()), &model, opts);
        q.flush().unwrap();
        drop(q);
        assert_holds(d.path(), &img, &model);
    }
}

#[test]
fn our_writes_copy_on_write_from_backing_and_compressed_clusters() {
    let d = tmp();
    let raw = d.path().join("src.raw");
    let base_data = pattern(4 * MIB as usize, 9);
    std::fs::write(&raw, &base_data).unwrap();
    for compat in ["1.1", "0.10"] {
        // A compressed image, then an overlay over it: both copy-on-write sources at once.
        let comp = d.path().join("comp.qcow2");
        let base = d.path().join("base.qcow2");
        ok(
            "qemu-img",
            &[
                "convert",
                "-c",
                "-O",
                "qcow2",
                "-o",
                &format!("compat={compat}"),
                s(&raw),
                s(&comp),
            ],
        );
        ok(
            "qemu-img",
            &[
                "convert",
                "-O",
                "qcow2",
                "-o",
                &format!("compat={compat}"),
                s(&raw),
                s(&base),
            ],
        );
        let top = d.path().join("top.qcow2");
        qoverlay(
            &top,
            5 * MIB,
            Backing::qcow2("base.qcow2"),
            &format!("compat={compat}"),
        );
        for img in [&comp, &top] {
            let mut model = if img == &top {
                let mut m = base_data.clone();
                m.resize(5 * MIB as usize, 0);
                m
            } else {
                base_data.clone()
            };
            let mut q = open_disk(img, rw()).unwrap();
            workload(q.as_mut(), &mut model);
            if img == &top {
                // Across the backing file's end: the overlay reads zeroes past it.
                write_both(q.as_mut(), &mut model, 4 * MIB - 100, &pattern(300, 8));
            }
            assert_same(&read_all(q.as_mut()), &model, compat);
            drop(q);
            assert_holds(d.path(), img, &model);
        }
    }
}

#[test]
fn our_writes_respect_internal_snapshots() {
    let d = tmp();
    let img = d.path().join("snap.qcow2");
    qcreate(&img, 4 * MIB, "");
    qemu_io(&img, &["write -P 0x21 0 1m"]);
    ok("qemu-img", &["snapshot", "-c", "before", s(&img)]);
    let before = qemu_raw(d.path(), &img);
    let mut model = before.clone();
    let mut q = open_disk(&img, rw()).unwrap();
    workload(q.as_mut(), &mut model);
    drop(q);
    assert_holds(d.path(), &img, &model);
    let snap = d.path().join("snap.raw");
    ok(
        "qemu-img",
        &["convert", "-l", "before", "-O", "raw", s(&img), s(&snap)],
    );
    assert_same(
        &std::fs::read(&snap).unwrap(),
        &before,
        "the snapshot must be untouched",
    );
}

#[test]
fn refcount_table_grows_when_the_image_outgrows_it() {
    let d = tmp();
    let img = d.path().join("grow.qcow2");
    // 512-byte clusters and 64-bit refcounts: one table cluster covers only 2 MiB of file.
    qcreate(&img, 16 * MIB, "cluster_size=512,refcount_bits=64");
    let table_at = |p: &Path| std::fs::read(p).unwrap()[48..60].to_vec();
    let before = table_at(&img);
    let mut model = vec![0u8; 16 * MIB as usize];
    let mut q = open_disk(&img, rw()).unwrap();
    for i in 0..12u64 {
        write_both(
            q.as_mut(),
            &mut model,
            i * 1_300_000 + 77,
            &pattern(500_000, i as u8),
        );
        if i % 5 == 4 {
            q.flush().unwrap();
        }
    }
    assert_same(&read_all(q.as_mut()), &model, "after growth");
    drop(q);
    assert_ne!(
        table_at(&img),
        before,
        "the refcount table should have moved"
    );
    assert_holds(d.path(), &img, &model);
}

#[test]
fn our_own_empty_images_are_valid() {
    let d = tmp();
    for (size, bits) in [(4 * MIB, 16), (64 * MIB, 9), (MIB + 512, 12), (0, 16)] {
        let img = d.path().join("new.qcow2");
        qcow2::create(&img, size, bits).unwrap();
        check_clean(&img);
        let mut model = vec![0u8; size as usize];
        if size >= 4 * MIB {
            let mut q = open_disk(&img, rw()).unwrap();
            workload(q.as_mut(), &mut model);
            drop(q);
        }
        assert_holds(d.path(), &img, &model);
    }
}

#[test]
fn a_flushed_image_is_clean_even_if_the_process_dies_after_more_writes() {
    let d = tmp();
    let img = d.path().join("crash.qcow2");
    qcreate(&img, 4 * MIB, "");
    let mut model = vec![0u8; 4 * MIB as usize];
    let mut q = open_disk(&img, rw()).unwrap();
    workload(q.as_mut(), &mut model);
    q.flush().unwrap();
    let flushed = model.clone();
    // Into clusters never written before (new allocations), and in place into a mapped one.
    let fresh = (3 * MIB + 256 * 1024) as usize;
    write_both(
        q.as_mut(),
        &mut model,
        fresh as u64 + 3,
        &pattern(200_000, 11),
    );
    write_both(q.as_mut(), &mut model, 5, &pattern(10, 12));
    // The process dies: no destructor, no further write-back; the kernel closes its files,
    // which releases the image lock.
    std::mem::forget(q);
    close_leaked_fds_of(&img);
    check_clean(&img);
    // The new clusters are not mapped on disk yet; everything else is as flushed, plus the
    // in-place write (its cluster was mapped and the data went straight to the file).
    let back = ours(&img);
    assert_same(&back[fresh..], &flushed[fresh..], "unflushed allocations");
    assert_same(
        &back[..fresh],
        &model[..fresh],
        "flushed data and the in-place write",
    );
}

#[test]
fn format_comes_from_the_magic_never_the_name() {
    let d = tmp();
    let raw_named_qcow2 = d.path().join("disk.qcow2");
    std::fs::write(&raw_named_qcow2, vec![0u8; 8192]).unwrap();
    let qcow2_named_raw = d.path().join("disk.raw");
    qcreate(&qcow2_named_raw, MIB, "");
    assert!(open_disk(&raw_named_qcow2, ro())
        .unwrap()
        .describe()
        .starts_with("raw"));
    let q = open_disk(&qcow2_named_raw, ro()).unwrap();
    assert!(q.describe().starts_with("qcow2"));
    assert_eq!(q.capacity(), MIB);
}

/// The guest-memory paths (no bounce copy): reads of every mapping kind (data, zero,
/// compressed, unallocated over a qcow2 base and past its end) are what qemu-img reads, and
/// writes (in place, runs of contiguous clusters, allocation, copy-on-write from the backing
/// file and from compressed clusters) leave an image qemu-img finds clean and equal to a model.
#[test]
fn vectored_guest_memory_io_agrees_with_qemu_on_every_mapping_kind() {
    let d = tmp();
    let g = Guest::new();
    let raw = d.path().join("src.raw");
    let base_data = pattern(4 * MIB as usize, 11);
    std::fs::write(&raw, &base_data).unwrap();
    let comp = d.path().join("comp.qcow2");
    let base = d.path().join("base.qcow2");
    ok(
        "qemu-img",
        &["convert", "-c", "-O", "qcow2", s(&raw), s(&comp)],
    );
    ok("qemu-img", &["convert", "-O", "qcow2", s(&raw), s(&base)]);
    let top = d.path().join("top.qcow2");
    qoverlay(&top, 5 * MIB, Backing::qcow2("base.qcow2"), "");
    qemu_io(&top, &["write -q -P 0x33 2m 192k", "write -q -z 1m 128k"]);
    let k = 1024u64;
    for img in [&comp, &top] {
        let mut model = qemu_raw(d.path(), img);
        let mut q = open_disk(img, rw()).unwrap();
        assert_same(
            &g.read_all(q.as_mut()),
            &model,
            "vectored reads vs qemu-img",
        );
        // Fresh clusters (allocation), then the same ones again (in place, as one run).
        g.write_both(q.as_mut(), &mut model, 128 * k, &pattern(256 * 1024, 1));
        g.write_both(q.as_mut(), &mut model, 128 * k + 3, &pattern(200 * 1024, 2));
        // Partial clusters over compressed / backing data and zero clusters (copy-on-write).
        g.write_both(q.as_mut(), &mut model, 600 * k + 17, &pattern(5000, 3));
        g.write_both(q.as_mut(), &mut model, 1024 * k + 100, &pattern(70_000, 4));
        if img == &top {
            // Across the backing file's end (the overlay reads zeroes past it).
            g.write_both(q.as_mut(), &mut model, 4 * MIB - 100, &pattern(300, 5));
        }
        // Owned clusters with a hole of unowned ones between them.
        g.write_both(
            q.as_mut(),
            &mut model,
            2 * MIB - 32 * k,
            &pattern(400 * 1024, 6),
        );
        q.flush().unwrap();
        assert_same(
            &g.read_all(q.as_mut()),
            &model,
            "vectored reads after writes",
        );
        assert_same(
            &read_all(q.as_mut()),
            &model,
            "plain reads after vectored writes",
        );
        drop(q);
        assert_holds(d.path(), img, &model);
    }
}

// ---------------------------------------------------------------- property test

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn random_writes_agree_with_a_raw_model(
        ops in prop::collection::vec((0u64..(2 * MIB), 1usize..150_000, any::<u8>(), 0u8..10), 1..25),
        small_clusters in any::<bool>(),
    ) {
        let d = tmp();
        let img = d.path().join("prop.qcow2");
        qcreate(&img, 2 * MIB, if small_clusters { "cluster_size=4k" } else { "" });
        let mut model = vec![0u8; 2 * MIB as usize];
        let mut q = open_disk(&img, rw()).unwrap();
        for (off, len, seed, kind) in ops {
            let len = len.min((2 * MIB - off) as usize);
            match kind {
                0 => zero_both(q.as_mut(), &mut model, off, len as u64, false),
                1 => zero_both(q.as_mut(), &mut model, off, len as u64, true),
                2 => q.flush().unwrap(),
                _ => write_both(q.as_mut(), &mut model, off, &pattern(len, seed)),
            }
            let mut probe = vec![0u8; len];
            q.read_at(off, &mut probe).unwrap();
            prop_assert_eq!(&probe[..], &model[off as usize..off as usize + len]);
        }
        prop_assert!(read_all(q.as_mut()) == model);
        drop(q);
        assert_holds(d.path(), &img, &model);
    }
}

/// Closes this process's descriptors of `path` without running any destructor: what the
/// kernel does for a process that dies.
fn close_leaked_fds_of(path: &std::path::Path) {
    let target = std::fs::canonicalize(path).unwrap();
    for fd in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        if std::fs::read_link(fd.path()).is_ok_and(|l| l == target) {
            let n: i32 = fd.file_name().to_str().unwrap().parse().unwrap();
            // SAFETY: the only owner of this descriptor was leaked with mem::forget and is never
            // used again.
            unsafe { libc::close(n) };
        }
    }
}
