//! What the QEMU end-to-end tests share: images of the size they use, booting the probe on
//! QEMU with a disk and a NIC, reading its records, and checking a pattern the probe wrote.

use std::path::Path;
use std::time::Duration;

use vmbench::engine::qemu::{self, Accel, QemuConfig, QemuDisk, QemuNic, QemuOutcome};
use vmbench::record::Record;

use super::{probe, qemu_img, sized_file};

pub const SECTOR: u64 = 512;
/// Every QEMU test disk: 16 MiB.
pub const DISK_BYTES: u64 = 16 << 20;

pub fn raw_image(path: &Path) {
    sized_file(path, DISK_BYTES);
}

/// A qcow2 image made by qemu-img (not by vmbench), [`DISK_BYTES`] large.
pub fn qcow2_image(path: &Path) {
    qemu_img(&[
        "create".as_ref(),
        "-q".as_ref(),
        "-f".as_ref(),
        "qcow2".as_ref(),
        path.as_os_str(),
        DISK_BYTES.to_string().as_ref(),
    ]);
}

/// Boots the probe on QEMU (KVM if it can run it, else TCG) with `disk` and `nic`.
pub fn qemu_boot(
    exec: &str,
    disk: Option<QemuDisk>,
    nic: Option<QemuNic>,
    timeout: Duration,
) -> QemuOutcome {
    if let Err(e) = qemu::find_qemu() {
        panic!("{e}");
    }
    let cfg = QemuConfig {
        exec: exec.into(),
        accel: Accel::Auto,
        timeout,
        disk,
        nic,
        ..QemuConfig::new(probe())
    };
    let o = qemu::run(&cfg, |_| {}).unwrap_or_else(|e| panic!("running '{exec}' on QEMU: {e}"));
    eprintln!(
        "'{exec}' ran on {} (kvm failure: {:?}) in {:?}",
        o.accel.name(),
        o.kvm_failure,
        o.wall
    );
    o
}

/// The workload's `result` record of a QEMU run.
pub fn qemu_result<'a>(o: &'a QemuOutcome, name: &str) -> &'a Record {
    o.records_of("result")
        .find(|r| r.get("name") == Some(name))
        .unwrap_or_else(|| {
            panic!(
                "no {name} result in {:#?}\nconsole: {:#?}\nstderr: {:#?}",
                o.records, o.console, o.stderr
            )
        })
}

pub fn field(r: &Record, key: &str) -> u64 {
    r.get_u64(key)
        .unwrap_or_else(|| panic!("'{r}' has no number {key}"))
}

pub fn assert_finished_ok(o: &QemuOutcome) {
    assert_eq!(
        o.records_of("done").last().and_then(|r| r.get("status")),
        Some("ok"),
        "records: {:#?}",
        o.records
    );
    assert_eq!(o.guest_status, Some(0));
}

/// The image ([`DISK_BYTES`] long) holds `blk-pattern`'s bytes for `seed` in its first
/// `sectors` and zeros after.
pub fn assert_holds_pattern(image: &[u8], seed: u64, sectors: u64) {
    assert_holds_pattern_of_size(image, DISK_BYTES, seed, sectors);
}

/// The image, `bytes` long, holds `blk-pattern`'s bytes for `seed` in its first `sectors`
/// and zeros after.
pub fn assert_holds_pattern_of_size(image: &[u8], bytes: u64, seed: u64, sectors: u64) {
    assert_eq!(image.len() as u64, bytes);
    let written = (sectors * SECTOR) as usize;
    let want = |off: usize| {
        if off < written {
            probe_abi::pattern_byte(seed, off as u64)
        } else {
            0
        }
    };
    let bad: Vec<usize> = (0..image.len()).filter(|&i| image[i] != want(i)).collect();
    if let Some(&first) = bad.first() {
        panic!(
            "{} bytes differ from the pattern (seed {seed}); the first at offset {first} \
             (sector {}): {:#04x}, expected {:#04x}",
            bad.len(),
            first as u64 / SECTOR,
            image[first],
            want(first)
        );
    }
}
