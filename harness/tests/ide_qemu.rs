//! The probe's PIIX IDE driver against a device we did not write: QEMU's PIIX3 IDE on the
//! `pc` machine (primary master). The probe writes its pattern through DMA and through PIO,
//! on raw and qcow2 images, and the host checks the image byte for byte; timed random reads
//! run in both modes and both driver profiles, with the port accesses per request each
//! profile must make; refused commands come back as errors. QEMU and qemu-img must be
//! installed (CI installs them): a missing one fails these tests rather than skipping them.

mod support;
use support::*;

use std::fs;
use std::path::Path;
use std::time::Duration;

use vmbench::engine::qemu::{QemuDisk, QemuOutcome};
use vmbench::record::Record;
use vmm::kinds::{DiskFormat, DiskKind};

/// 1 MiB through DMA; PIO writes cost one exit per dword on KVM, so PIO writes less.
const DMA_SECTORS: u64 = 2048;
const PIO_SECTORS: u64 = 512;

/// Boots the probe with the image as the primary master of QEMU's PIIX3 IDE.
fn boot(exec: &str, img: &Path) -> QemuOutcome {
    qemu_boot(
        exec,
        Some(QemuDisk::open(DiskKind::Ide, img).unwrap()),
        None,
        Duration::from_secs(90),
    )
}
fn decimal(r: &Record, key: &str) -> f64 {
    r.get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("'{r}' has no decimal {key}"))
}

/// The probe saw the disk QEMU attached, through the controller QEMU has.
fn assert_found_the_disk(o: &QemuOutcome) {
    let r = o
        .records_of("ide")
        .next()
        .unwrap_or_else(|| panic!("no ide record in {:#?}", o.records));
    assert_eq!(r.get("controller"), Some("8086:7010"), "{r}");
    assert_eq!(field(r, "sectors"), DISK_BYTES / SECTOR, "{r}");
    assert_eq!(field(r, "lba48"), 1, "{r}");
    assert!(r.get("model").is_some_and(|m| m.starts_with("QEMU")), "{r}");
}

/// The pattern result: everything written, flushed and read back intact through IDE.
fn assert_pattern_ran_clean(o: &QemuOutcome, sectors: u64, mode: &str, profile: &str) {
    let r = qemu_result(o, "blk-pattern");
    assert_eq!(field(r, "sectors"), sectors, "{r}");
    assert_eq!(field(r, "capacity_sectors"), DISK_BYTES / SECTOR, "{r}");
    for (key, want) in [
        ("write_errors", 0),
        ("read_errors", 0),
        ("flush_status", 0),
        ("mismatches", 0),
    ] {
        assert_eq!(field(r, key), want, "{key} in '{r}'");
    }
    assert_eq!(r.get("disk"), Some("ide"), "{r}");
    assert_eq!(r.get("mode"), Some(mode), "{r}");
    assert_eq!(r.get("profile"), Some(profile), "{r}");
    assert_found_the_disk(o);
    assert_finished_ok(o);
}

/// Runs the pattern on a fresh raw image and checks the image.
fn raw_pattern(test: &str, seed: u64, sectors: u64, args: &str, mode: &str, profile: &str) {
    let dir = TempDir::new(test);
    let img = dir.path("disk.img");
    raw_image(&img);

    let o = boot(
        &format!("blk-pattern sectors={sectors} seed={seed} disk=ide {args}"),
        &img,
    );

    assert_pattern_ran_clean(&o, sectors, mode, profile);
    assert_holds_pattern(&fs::read(&img).unwrap(), seed, sectors);
    // Its format was guessed: QEMU probed it too, and guards its first sector as vmbench's
    // VMM does.
    assert!(
        o.stderr.iter().any(|l| l.contains("probing guessed raw")),
        "{:?}",
        o.stderr
    );
}

/// Runs the pattern on a fresh qcow2 image; the image must check clean and convert to the
/// pattern.
fn qcow2_pattern(test: &str, seed: u64, sectors: u64, args: &str, mode: &str) {
    let dir = TempDir::new(test);
    // Named like a raw image on purpose: the format comes from the header.
    let img = dir.path("disk.img");
    qcow2_image(&img);
    assert_eq!(
        QemuDisk::open(DiskKind::Ide, &img).unwrap().format,
        DiskFormat::Qcow2
    );

    let o = boot(
        &format!("blk-pattern sectors={sectors} seed={seed} {args}"),
        &img,
    );

    assert_pattern_ran_clean(&o, sectors, mode, "linux");
    let check = qemu_img(&["check".as_ref(), img.as_os_str()]);
    assert!(check.contains("No errors were found"), "{check}");
    assert_holds_pattern(
        &qcow2_contents(&img, &dir.path("converted.raw")),
        seed,
        sectors,
    );
}

#[test]
fn dma_pattern_reaches_a_raw_image() {
    raw_pattern("dma-raw", 3, DMA_SECTORS, "", "dma", "linux");
}

#[test]
fn dma_pattern_in_the_batched_profile_with_lba48_commands() {
    raw_pattern(
        "dma-batched-ext",
        4,
        DMA_SECTORS,
        "profile=batched ext=1",
        "dma",
        "batched",
    );
}

#[test]
fn pio_pattern_reaches_a_raw_image() {
    raw_pattern("pio-raw", 5, PIO_SECTORS, "mode=pio", "pio", "linux");
}

#[test]
fn pio_pattern_with_single_sector_lba48_commands_and_16_bit_data() {
    raw_pattern(
        "pio-single-ext",
        6,
        PIO_SECTORS,
        "mode=pio profile=batched multi=0 ext=1 width=16",
        "pio",
        "batched",
    );
}

#[test]
fn dma_pattern_reaches_a_qcow2_image() {
    // No disk= argument: with no virtio-blk on the bus the probe picks IDE itself.
    qcow2_pattern("dma-qcow2", 11, DMA_SECTORS, "", "dma");
}

#[test]
fn pio_pattern_reaches_a_qcow2_image() {
    qcow2_pattern("pio-qcow2", 12, PIO_SECTORS, "mode=pio", "pio");
}

/// Per 4 KiB read request (one LBA28 command), the accesses each profile must make besides
/// polls and data: see images/probe/src/ide/xfer.rs.
const PROTOCOL_ACCESSES: [(&str, &str, f64, f64); 4] = [
    // libata: select 4, taskfile 7, PRD + BM cmd rmw 3, command + pause 2, start rmw 2,
    // interrupt: BM status 1, stop rmw + pause 3, irq status 2, irq clear 2.
    ("dma", "linux", 26.0, 0.0),
    // taskfile 5, command, start, BM status, status, BM status clear, stop.
    ("dma", "batched", 11.0, 0.0),
    // select 4, taskfile 7, command + pause 2; one DRQ block (READ MULTIPLE): irq status 2,
    // irq clear 2, flush 1; ata_wait_idle 1. Data: 8 sectors of 128 dwords.
    ("pio", "linux", 19.0, 1024.0),
    // taskfile 5, command; status per block, status at the end.
    ("pio", "batched", 8.0, 1024.0),
];

#[test]
fn random_4k_reads_in_both_modes_and_both_profiles() {
    let dir = TempDir::new("ide-qemu-rand-read");
    let img = dir.path("disk.img");
    raw_image(&img);
    for (mode, profile, protocol, data) in PROTOCOL_ACCESSES {
        let o = boot(
            &format!(
                "blk-read pattern=rand bs=4096 qd=1 duration_ms=300 warmup_ms=50 mode={mode} profile={profile}"
            ),
            &img,
        );

        let r = qemu_result(&o, "blk-read");
        let ops = field(r, "ops");
        assert!(ops > 0, "{r}");
        assert_eq!(field(r, "errors"), 0, "{r}");
        assert_eq!(field(r, "bytes"), ops * 4096, "{r}");
        assert_eq!(field(r, "qd"), 1, "{r}");
        assert_eq!(r.get("disk"), Some("ide"), "{r}");
        assert_eq!(r.get("mode"), Some(mode), "{r}");
        assert_eq!(r.get("profile"), Some(profile), "{r}");
        let (all, polls) = (decimal(r, "pio_accesses"), decimal(r, "pio_polls"));
        assert_eq!(decimal(r, "pio_data"), data, "{r}");
        assert_eq!(decimal(r, "ata_cmds"), 1.0, "{r}");
        assert!(
            (all - polls - data - protocol).abs() < 0.005,
            "{mode}/{profile}: {r}"
        );
        let lat = o
            .records_of("latency")
            .find(|l| l.get("workload") == Some("blk-read"))
            .unwrap_or_else(|| panic!("no blk-read latency in {:#?}", o.records));
        assert_eq!(field(lat, "n"), ops, "{lat}");
        assert_finished_ok(&o);
    }
}

#[test]
fn refused_commands_come_back_as_errors_and_the_disk_stays_usable() {
    let dir = TempDir::new("ide-qemu-check");
    let img = dir.path("disk.img");
    raw_image(&img);
    for args in ["mode=dma", "mode=pio profile=batched"] {
        let o = boot(&format!("ide-check {args}"), &img);

        let r = qemu_result(&o, "ide-check");
        assert_eq!(r.get("last_sector"), Some("ok"), "{r}");
        // One sector past the end: IDNF from a real drive, ABRT from QEMU's.
        assert_eq!(r.get("past_end"), Some("refused"), "{r}");
        let err = u8::from_str_radix(
            r.get("past_end_error").unwrap().trim_start_matches("0x"),
            16,
        )
        .unwrap();
        assert!(err & 0x14 != 0, "neither IDNF nor ABRT: {r}");
        assert_eq!(r.get("nop"), Some("refused"), "{r}");
        assert_eq!(r.get("nop_error"), Some("0x04"), "{r}");
        assert_eq!(r.get("after"), Some("ok"), "{r}");
        assert_finished_ok(&o);
    }
}

#[test]
fn a_queue_depth_above_one_on_ide_is_a_clear_error() {
    let dir = TempDir::new("ide-qemu-qd");
    let img = dir.path("disk.img");
    raw_image(&img);

    let o = boot("blk-read pattern=rand bs=4096 qd=4 duration_ms=100", &img);

    let e = o
        .records_of("error")
        .next()
        .unwrap_or_else(|| panic!("no error record in {:#?}", o.records));
    assert!(
        e.text.contains("qd=4") && e.text.contains("one command at a time"),
        "{e}"
    );
    assert_eq!(o.guest_status, Some(probe_abi::exit::BAD_EXEC));
}
