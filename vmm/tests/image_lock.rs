//! Image locking (issue 15, item 2): a second writer of a raw or qcow2 image is refused and
//! told who holds it; readers share; overlays share their backing file; QEMU and vmbench see
//! each other's locks.

mod qcow2_support;

use std::io::Write;
use std::process::{Command, Stdio};

use qcow2_support::*;
use vmm::backend::block::{open_disk, DiskError};

/// The error with its causes, as the CLI prints it.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn raw_image(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("disk.raw");
    std::fs::write(&p, vec![0u8; MIB as usize]).unwrap();
    p
}

#[test]
fn a_second_writer_of_a_raw_or_qcow2_image_is_refused() {
    let d = tmp();
    let raw = raw_image(d.path());
    let q = d.path().join("disk.qcow2");
    qcreate(&q, 4 * MIB, "");

    for img in [&raw, &q] {
        let first = open_disk(img, rw()).unwrap();
        let second = open_disk(img, rw())
            .err()
            .expect("second writer must be refused");
        let reader = open_disk(img, ro())
            .err()
            .expect("a reader must wait for the writer");
        drop(first);
        // Another test of this binary forking (qemu-img) while `first` was open holds a copy
        // of its file description, and so its lock, until that child's exec closes it: the
        // lock may outlive `drop` by that moment, so the next writer may have to try again.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let after = loop {
            match open_disk(img, rw()) {
                Err(e) if chain(&e).contains("in use") && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                r => break r,
            }
        };

        let msg = chain(&second);
        assert!(msg.contains("in use"), "{msg}");
        assert!(msg.contains(img.to_str().unwrap()), "{msg}");
        assert!(chain(&reader).contains("in use"));
        assert!(after.is_ok(), "the lock goes with the first writer");
    }
}

#[test]
fn two_readers_share_an_image() {
    let d = tmp();
    let raw = raw_image(d.path());
    let q = d.path().join("disk.qcow2");
    qcreate(&q, 4 * MIB, "");

    for img in [&raw, &q] {
        let a = open_disk(img, ro());
        let b = open_disk(img, ro());

        assert!(a.is_ok() && b.is_ok(), "{img:?}");
    }
}

#[test]
fn two_overlays_share_one_backing_file_which_no_one_may_write() {
    let d = tmp();
    let base = d.path().join("base.qcow2");
    qcreate(&base, 4 * MIB, "");
    let mut overlays = Vec::new();
    for name in ["a.qcow2", "b.qcow2"] {
        let o = d.path().join(name);
        qoverlay(&o, 4 * MIB, Backing::qcow2(s(&base)), "");
        overlays.push(o);
    }

    let a = open_disk(&overlays[0], rw());
    let b = open_disk(&overlays[1], rw());
    let base_writer = open_disk(&base, rw());

    assert!(a.is_ok(), "{:?}", a.err());
    assert!(b.is_ok(), "{:?}", b.err());
    assert!(matches!(base_writer, Err(DiskError::Qcow2 { .. })));
}

/// qemu-io waiting on its prompt keeps the image open with QEMU's own locks.
fn qemu_io_holding(img: &std::path::Path, fmt: &str) -> std::process::Child {
    let mut child = Command::new("qemu-io")
        .args(["-f", fmt, s(img)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu-io is required for these tests (install qemu-utils)");
    // Once it answers a command, the image is open and locked.
    let stdin = child.stdin.as_mut().unwrap();
    stdin.write_all(b"read 0 512\n").unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("read 512/512") {
        let n = std::io::Read::read(&mut out, &mut buf).unwrap();
        assert!(n > 0, "qemu-io exited: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    child
}

#[test]
fn qemu_holding_an_image_is_named_and_qemu_sees_our_lock() {
    let d = tmp();
    let raw = raw_image(d.path());
    let q = d.path().join("disk.qcow2");
    qcreate(&q, 4 * MIB, "");

    for (img, fmt) in [(&raw, "raw"), (&q, "qcow2")] {
        let mut qemu = qemu_io_holding(img, fmt);
        let refused = open_disk(img, rw()).err().map(|e| chain(&e));
        qemu.kill().unwrap();
        qemu.wait().unwrap();
        let ours = open_disk(img, rw()).unwrap();
        let theirs = run("qemu-io", &["-f", fmt, "-c", "write 0 512", s(img)]);
        drop(ours);

        let msg = refused.expect("a writer must be refused while qemu-io holds the image");
        assert!(msg.contains(&format!("pid {}", qemu.id())), "{msg}");
        assert!(msg.contains("qemu-io"), "{msg}");
        assert!(!theirs.status.success());
        let err = String::from_utf8_lossy(&theirs.stderr);
        assert!(err.contains("lock"), "qemu-io: {err}");
    }
}
