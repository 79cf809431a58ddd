//! The probe's drivers against devices we did not write: QEMU's virtio-blk-pci on raw and
//! qcow2 images (the host checks the image byte for byte), a read-only disk, a timed random
//! read, and the NICs and disks at the PCI slots vmbench's VMM uses. QEMU and qemu-img must be
//! installed (CI installs them); a missing one fails these tests rather than skipping them.

mod support;
use support::*;

use std::fs;
use std::io::ErrorKind;
use std::net::UdpSocket;
use std::time::Duration;

use vmbench::engine::qemu::{QemuDisk, QemuNetdev, QemuNic, QemuOutcome};
use vmm::kinds::{DiskFormat, DiskKind, NicKind};

/// Sectors the pattern tests write: 1 MiB, 16 requests of 64 KiB.
const PATTERN_SECTORS: u64 = 2048;

fn boot(exec: &str, disk: Option<QemuDisk>, nic: Option<QemuNic>) -> QemuOutcome {
    qemu_boot(exec, disk, nic, Duration::from_secs(30))
}
/// The pattern result of a writable disk: everything written, flushed and read back intact.
fn assert_pattern_ran_clean(o: &QemuOutcome) {
    let r = qemu_result(o, "blk-pattern");
    assert_eq!(field(r, "sectors"), PATTERN_SECTORS, "{r}");
    assert_eq!(field(r, "capacity_sectors"), DISK_BYTES / SECTOR, "{r}");
    for (key, want) in [
        ("read_only", 0),
        ("write_errors", 0),
        ("read_errors", 0),
        ("flush_status", 0),
        ("mismatches", 0),
    ] {
        assert_eq!(field(r, key), want, "{key} in '{r}'");
    }
    assert_finished_ok(o);
}

#[test]
fn virtio_blk_raw_image_holds_the_probe_pattern() {
    let dir = TempDir::new("qemu-devices-raw");
    let img = dir.path("disk.img");
    raw_image(&img);
    let disk = QemuDisk::open(DiskKind::Virtio, &img).unwrap();
    assert_eq!(disk.format, DiskFormat::Raw);

    let o = boot("blk-pattern sectors=2048 seed=7", Some(disk), None);

    assert_pattern_ran_clean(&o);
    assert_holds_pattern(&fs::read(&img).unwrap(), 7, PATTERN_SECTORS);
}

#[test]
fn virtio_blk_qcow2_image_holds_the_probe_pattern() {
    let dir = TempDir::new("qemu-devices-qcow2");
    // Named like a raw image on purpose: the format comes from the header.
    let img = dir.path("disk.img");
    qcow2_image(&img);
    let disk = QemuDisk::open(DiskKind::Virtio, &img).unwrap();
    assert_eq!(disk.format, DiskFormat::Qcow2);

    let o = boot("blk-pattern sectors=2048 seed=11", Some(disk), None);

    assert_pattern_ran_clean(&o);
    let check = qemu_img(&["check".as_ref(), img.as_os_str()]);
    assert!(check.contains("No errors were found"), "{check}");
    assert_holds_pattern(
        &qcow2_contents(&img, &dir.path("converted.raw")),
        11,
        PATTERN_SECTORS,
    );
}

#[test]
fn read_only_virtio_disk_refuses_writes_and_stays_unchanged() {
    let dir = TempDir::new("qemu-devices-read-only");
    let img = dir.path("disk.img");
    let before: Vec<u8> = (0..DISK_BYTES)
        .map(|off| probe_abi::pattern_byte(99, off))
        .collect();
    fs::write(&img, &before).unwrap();
    let disk = QemuDisk {
        read_only: true,
        ..QemuDisk::open(DiskKind::Virtio, &img).unwrap()
    };

    let o = boot("blk-pattern sectors=2048 seed=5", Some(disk), None);

    let r = qemu_result(&o, "blk-pattern");
    assert_eq!(field(r, "read_only"), 1, "{r}");
    assert!(field(r, "write_errors") > 0, "writes succeeded: '{r}'");
    assert_eq!(field(r, "read_errors"), 0, "{r}");
    // It read back the seed-99 bytes, not the seed-5 ones it tried to write.
    assert!(field(r, "mismatches") > 0, "{r}");
    // A workload that saw errors ends failed (issue 15, item 8).
    assert_eq!(
        o.records_of("done").last().and_then(|r| r.get("status")),
        Some("failed"),
        "{:#?}",
        o.records
    );
    assert_ne!(o.guest_status, Some(0));
    assert!(
        fs::read(&img).unwrap() == before,
        "the read-only image changed"
    );
}

#[test]
fn random_4k_reads_complete_without_errors() {
    let dir = TempDir::new("qemu-devices-rand-read");
    let img = dir.path("disk.img");
    raw_image(&img);
    let disk = QemuDisk::open(DiskKind::Virtio, &img).unwrap();

    let o = boot(
        "blk-read pattern=rand bs=4096 qd=1 duration_ms=300 warmup_ms=50",
        Some(disk),
        None,
    );

    let r = qemu_result(&o, "blk-read");
    let ops = field(r, "ops");
    assert!(ops > 0, "{r}");
    assert_eq!(field(r, "errors"), 0, "{r}");
    assert_eq!(field(r, "bytes"), ops * 4096, "{r}");
    assert!(field(r, "window_ns") > 0, "{r}");
    let lat = o
        .records_of("latency")
        .find(|l| l.get("workload") == Some("blk-read"))
        .unwrap_or_else(|| panic!("no blk-read latency in {:#?}", o.records));
    assert_eq!(field(lat, "n"), ops, "{lat}");
    assert!(field(lat, "p50") > 0, "{lat}");
    assert_finished_ok(&o);
}

/// A dgram link between QEMU and sockets this test opened on the loopback interface: the
/// test keeps the remote end; the local port is one the kernel just handed out, for QEMU.
fn loopback_link() -> (UdpSocket, QemuNetdev) {
    let remote =
        UdpSocket::bind((vmbench::engine::qemu::LOOPBACK, 0)).expect("binding the remote end");
    let local_port = UdpSocket::bind((vmbench::engine::qemu::LOOPBACK, 0))
        .and_then(|s| s.local_addr())
        .expect("finding a free port for QEMU")
        .port();
    let netdev = QemuNetdev::Dgram {
        local_port,
        remote_port: remote.local_addr().unwrap().port(),
    };
    (remote, netdev)
}

fn pci_ids(o: &QemuOutcome) -> Vec<(String, String)> {
    o.records_of("pci")
        .filter_map(|r| Some((r.get("bdf")?.to_string(), r.get("id")?.to_string())))
        .collect()
}

fn assert_no_frames(remote: &UdpSocket) {
    remote.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    match remote.recv(&mut buf) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("a NIC no driver touched sent something: {other:?}"),
    }
}

#[test]
fn virtio_devices_are_modern_only_at_vmbench_slots() {
    let dir = TempDir::new("qemu-devices-virtio-slots");
    let img = dir.path("disk.img");
    raw_image(&img);
    let (remote, netdev) = loopback_link();

    let o = boot(
        "hello",
        Some(QemuDisk::open(DiskKind::Virtio, &img).unwrap()),
        Some(QemuNic::new(NicKind::Virtio, netdev)),
    );

    let ids = pci_ids(&o);
    for (bdf, id) in [("00:03.0", "1af4:1041"), ("00:04.0", "1af4:1042")] {
        assert!(
            ids.contains(&(bdf.into(), id.into())),
            "no {id} at {bdf} in {ids:?}"
        );
    }
    // Modern-only devices have revision 1 or more (virtio 1.2, 4.1.2.1).
    for r in o
        .records_of("pci")
        .filter(|r| r.get("id").is_some_and(|i| i.starts_with("1af4:")))
    {
        assert!(field(r, "rev") >= 1, "{r}");
    }
    assert_finished_ok(&o);
    assert_no_frames(&remote);
}

#[test]
fn e1000_and_ide_boot_at_their_slots() {
    let dir = TempDir::new("qemu-devices-e1000-ide");
    let img = dir.path("disk.qcow2");
    qcow2_image(&img);
    let (remote, netdev) = loopback_link();

    let o = boot(
        "hello",
        Some(QemuDisk::open(DiskKind::Ide, &img).unwrap()),
        Some(QemuNic::new(NicKind::E1000, netdev)),
    );

    let ids = pci_ids(&o);
    for (bdf, id) in [("00:01.1", "8086:7010"), ("00:03.0", "8086:100e")] {
        assert!(
            ids.contains(&(bdf.into(), id.into())),
            "no {id} at {bdf} in {ids:?}"
        );
    }
    assert!(
        !ids.iter().any(|(_, id)| id.starts_with("1af4:")),
        "{ids:?}"
    );
    assert_finished_ok(&o);
    assert_no_frames(&remote);
}

// The probe's virtio-net driver against QEMU's virtio-net-pci, linked to vmbench's peer
// through a loopback UDP pair: our driver checked against a device we did not write.

fn with_peer(exec: &str) -> (QemuOutcome, std::collections::BTreeMap<String, u64>) {
    with_peer_on(NicKind::Virtio, exec)
}

fn with_peer_on(
    kind: NicKind,
    exec: &str,
) -> (QemuOutcome, std::collections::BTreeMap<String, u64>) {
    let bridge = vmbench::engine::qemu::peer::PeerBridge::start().expect("loopback peer");
    let mut nic = QemuNic::new(kind, bridge.netdev());
    nic.mac = vmm::machine::GUEST_MAC;
    let o = boot(exec, None, Some(nic));
    let c = bridge.counters();
    (o, c)
}

#[test]
fn virtio_net_round_trips_through_qemu_come_back_from_the_peer() {
    let (o, peer) = with_peer("net-rr size=100 duration_ms=300 warmup_ms=50");
    assert_finished_ok(&o);
    let r = qemu_result(&o, "net-rr");
    let ops = field(r, "ops");
    assert!(ops > 10, "{r}");
    assert_eq!(field(r, "mismatches"), 0);
    assert_eq!(field(r, "lost"), 0);
    assert!(peer["echoed_frames"] >= ops, "{peer:?}");
}

#[test]
fn virtio_net_frames_sent_through_qemu_reach_the_peer() {
    let (o, peer) = with_peer("net-tx size=64 batch=16 duration_ms=300 warmup_ms=50");
    assert_finished_ok(&o);
    let r = qemu_result(&o, "net-tx");
    let total = field(r, "frames_total");
    assert!(field(r, "frames") > 100, "{r}");
    // UDP on loopback may drop when its buffer fills; most frames arrive.
    let sunk = peer["sunk_frames"];
    assert!(sunk > 0 && sunk <= total, "peer saw {sunk} of {total}");
}

// The probe's e1000 driver against QEMU's e1000, in both driver profiles.

#[test]
fn e1000_round_trips_through_qemu_in_both_profiles() {
    for profile in ["linux", "batched"] {
        let (o, peer) = with_peer_on(
            NicKind::E1000,
            &format!("net-rr size=100 profile={profile} duration_ms=300 warmup_ms=50"),
        );
        assert_finished_ok(&o);
        let r = qemu_result(&o, "net-rr");
        let ops = field(r, "ops");
        assert!(ops > 5, "{profile}: {r}");
        assert_eq!(r.get("nic"), Some("e1000"));
        assert_eq!(field(r, "mismatches"), 0);
        assert_eq!(field(r, "lost"), 0);
        assert!(peer["echoed_frames"] >= ops, "{peer:?}");
    }
}

// QEMU's NICs on a TAP in a namespace vmbench creates (QEMU inherits the descriptor), with the
// same host-side services as vmbench's own TAP back-end: the footing the engine comparison uses.

#[test]
fn both_nics_round_trip_through_a_tap_with_exact_counts() {
    use vmbench::engine::qemu::link::QemuTap;
    use vmm::kinds::Kind;
    for &kind in NicKind::VALUES {
        let tap = QemuTap::start(vmm::machine::GUEST_MAC, false)
            .unwrap_or_else(|e| panic!("the TAP and its namespace (needs root): {e:?}"));
        let mut nic = QemuNic::new(kind, tap.netdev());
        nic.mac = vmm::machine::GUEST_MAC;
        let o = boot(
            "net-rr size=100 duration_ms=300 warmup_ms=50",
            None,
            Some(nic),
        );
        assert_finished_ok(&o);
        let r = qemu_result(&o, "net-rr");
        assert_eq!(r.get("nic"), Some(kind.as_str()), "{r}");
        assert!(field(r, "ops") > 10, "{kind}: {r}");
        assert_eq!(field(r, "lost"), 0, "{kind}: {r}");
        assert_eq!(field(r, "mismatches"), 0, "{kind}: {r}");
        // Every request the probe sent, warm-up included, was echoed by the namespace's
        // service, and nothing else was: a TAP loses nothing at this pace.
        let c = tap.counters();
        assert_eq!(
            c["echoed_frames"],
            field(r, "sent_total"),
            "{kind}: {r} {c:?}"
        );
        assert_eq!(
            c["echoed_bytes"],
            field(r, "sent_total") * (100 - 42),
            "{c:?}"
        );
        drop(tap);
    }
    assert!(
        our_namespaces().is_empty(),
        "left behind: {:?}",
        our_namespaces()
    );
}
