//! Bad qcow2 images (made by patching qemu-img's output) are clear errors, never panics or
//! out-of-range reads.

mod qcow2_support;

use std::path::{Path, PathBuf};

use qcow2_support::*;
use vmm::backend::block::qcow2::{Error, Qcow2};
use vmm::backend::block::{open_disk, DiskError};
use vmm::backend::block::{BlockBackend, OpenOptions};

/// A small valid v3 image from qemu-img with some data, to patch.
fn sample(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    qcreate(&p, MIB, "");
    qemu_io(&p, &["write -P 0x55 0 128k"]);
    p
}

fn patch(path: &Path, at: u64, bytes: &[u8]) {
    let mut f = std::fs::read(path).unwrap();
    f[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
    std::fs::write(path, f).unwrap();
}

fn open_err(path: &Path, opts: OpenOptions) -> Error {
    match Qcow2::open(path, opts) {
        Err(e) => e,
        Ok(_) => panic!("{} opened", path.display()),
    }
}

#[test]
fn bad_header_fields_are_errors() {
    let d = tmp();
    let p = sample(d.path(), "bad.qcow2");
    let good = std::fs::read(&p).unwrap();
    let reset = || std::fs::write(&p, &good).unwrap();

    std::fs::write(&p, &good[..50]).unwrap();
    assert!(matches!(
        open_err(&p, ro()),
        Error::Truncated { what: "header", .. }
    ));
    std::fs::write(&p, &good[..3]).unwrap();
    assert!(matches!(open_err(&p, ro()), Error::Truncated { .. }));

    reset();
    patch(&p, 3, &[0xfa]);
    assert!(matches!(open_err(&p, ro()), Error::BadMagic));
    assert_eq!(
        open_err(&p, ro()).to_string(),
        "not a qcow2 image (bad magic)"
    );

    reset();
    patch(&p, 4, &4u32.to_be_bytes());
    assert!(matches!(open_err(&p, ro()), Error::UnsupportedVersion(4)));

    for bits in [8u32, 22] {
        reset();
        patch(&p, 20, &bits.to_be_bytes());
        assert!(matches!(open_err(&p, ro()), Error::BadClusterBits(b) if b == bits));
    }

    reset();
    patch(&p, 32, &1u32.to_be_bytes());
    let e = open_err(&p, ro());
    assert!(matches!(e, Error::Encrypted(1)));
    assert!(e.to_string().contains("encrypted"));

    reset();
    patch(&p, 96, &7u32.to_be_bytes());
    assert!(matches!(open_err(&p, ro()), Error::BadRefcountOrder(7)));

    reset();
    patch(&p, 40, &(1u64 << 40).to_be_bytes());
    let e = open_err(&p, ro());
    assert!(matches!(e, Error::L1PastEof { .. }), "{e}");
    assert!(e.to_string().contains("past the end of the file"));

    reset();
    patch(&p, 48, &(1u64 << 40).to_be_bytes());
    assert!(matches!(
        open_err(&p, rw()),
        Error::RefcountTablePastEof { .. }
    ));

    reset();
    patch(&p, 36, &0u32.to_be_bytes());
    assert!(matches!(open_err(&p, ro()), Error::L1TooSmall { .. }));

    // A truncated file: the tables are gone.
    reset();
    std::fs::write(&p, &good[..65536]).unwrap();
    assert!(matches!(
        open_err(&p, rw()),
        Error::L1PastEof { .. } | Error::RefcountTablePastEof { .. }
    ));
}

#[test]
fn unsupported_incompatible_features_are_named() {
    let d = tmp();
    let p = sample(d.path(), "feat.qcow2");
    let good = std::fs::read(&p).unwrap();
    for (bit, name) in [
        (2u32, "external data file"),
        (3, "compression type"),
        (4, "extended l2 entries"),
        (9, "unknown"),
    ] {
        std::fs::write(&p, &good).unwrap();
        patch(&p, 72, &(1u64 << bit).to_be_bytes());
        let e = open_err(&p, ro());
        assert!(
            matches!(&e, Error::IncompatibleFeature { bit: b, .. } if *b == bit),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            format!("unsupported incompatible feature: {name} (bit {bit})")
        );
    }
    for (bit, name) in [(0u32, "dirty"), (1, "corrupt")] {
        std::fs::write(&p, &good).unwrap();
        patch(&p, 72, &(1u64 << bit).to_be_bytes());
        let e = open_err(&p, rw());
        assert!(matches!(e, Error::NotWritable(n) if n == name), "{e}");
        // Reading does not depend on refcounts: read-only access stays possible.
        assert!(Qcow2::open(&p, ro()).is_ok());
    }
    // Through the opener, the error names the image and keeps the cause.
    match open_disk(&p, rw()) {
        Err(DiskError::Qcow2 {
            source: Error::NotWritable("corrupt"),
            ..
        }) => {}
        other => panic!("{:?}", other.map(|d| d.describe())),
    }
}

#[test]
fn bad_tables_fail_the_io_not_the_process() {
    let d = tmp();
    let p = sample(d.path(), "tables.qcow2");
    let good = std::fs::read(&p).unwrap();
    let l1_off = u64::from_be_bytes(good[40..48].try_into().unwrap());
    let l1_entry = u64::from_be_bytes(
        good[l1_off as usize..l1_off as usize + 8]
            .try_into()
            .unwrap(),
    );
    let l2_off = l1_entry & 0x00ff_ffff_ffff_fe00;

    // L1 entry pointing past the end of the file.
    patch(&p, l1_off, &((1u64 << 63) | (1 << 40)).to_be_bytes());
    let mut q = Qcow2::open(&p, ro()).unwrap();
    let mut buf = [0u8; 4096];
    let e = q.read_at(0, &mut buf).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    assert!(
        e.to_string()
            .contains("l2 table at 0x10000000000 is past the end"),
        "{e}"
    );
    drop(q);

    // An unaligned data cluster offset.
    std::fs::write(&p, &good).unwrap();
    patch(&p, l2_off, &((1u64 << 63) | 0x10200).to_be_bytes());
    let mut q = Qcow2::open(&p, ro()).unwrap();
    assert!(q
        .read_at(0, &mut buf)
        .unwrap_err()
        .to_string()
        .contains("not cluster aligned"));
    drop(q);

    // A compressed cluster whose bytes are not deflate (a reserved block type).
    std::fs::write(&p, &good).unwrap();
    let l2e = u64::from_be_bytes(
        good[l2_off as usize..l2_off as usize + 8]
            .try_into()
            .unwrap(),
    );
    let data = l2e & 0x00ff_ffff_ffff_fe00;
    patch(&p, l2_off, &((1u64 << 62) | data).to_be_bytes());
    patch(&p, data, &[0xff; 512]);
    let mut q = Qcow2::open(&p, ro()).unwrap();
    assert!(q
        .read_at(0, &mut buf)
        .unwrap_err()
        .to_string()
        .contains("does not decompress"));
    // Out-of-range guest accesses are InvalidInput; writes on read-only are refused.
    assert_eq!(
        q.read_at(MIB - 512, &mut buf).unwrap_err().kind(),
        std::io::ErrorKind::InvalidInput
    );
    assert_eq!(
        q.write_at(0, &buf).unwrap_err().kind(),
        std::io::ErrorKind::PermissionDenied
    );
}

#[test]
fn missing_and_looping_backing_files_are_errors() {
    let d = tmp();
    let base = d.path().join("base.qcow2");
    let top = d.path().join("top.qcow2");
    qcreate(&base, MIB, "");
    qoverlay(&top, MIB, Backing::qcow2("base.qcow2"), "");
    std::fs::remove_file(&base).unwrap();
    let e = open_err(&top, ro());
    assert!(
        matches!(&e, Error::BackingMissing { path } if path.ends_with("base.qcow2")),
        "{e}"
    );
    assert!(e.to_string().starts_with("backing file ") && e.to_string().ends_with("is missing"));

    // a -> b -> a.
    let a = d.path().join("a.qcow2");
    let b = d.path().join("b.qcow2");
    qcreate(&a, MIB, "");
    qoverlay(&b, MIB, Backing::qcow2("a.qcow2"), "");
    ok(
        "qemu-img",
        &["rebase", "-u", "-b", "b.qcow2", "-F", "qcow2", s(&a)],
    );
    let e = open_err(&a, ro());
    assert!(
        matches!(&e, Error::BackingLoop { path } if path.ends_with("a.qcow2")),
        "{e}"
    );
    assert!(e.to_string().contains("loop"));

    // An image that is its own backing file.
    ok(
        "qemu-img",
        &["rebase", "-u", "-b", "b.qcow2", "-F", "qcow2", s(&b)],
    );
    assert!(matches!(open_err(&b, ro()), Error::BackingLoop { .. }));
}
