//! Unit tests of QEMU's command line, status decoding and the checks made before starting it.

use super::*;
use std::path::Path;

fn cfg() -> QemuConfig {
    QemuConfig {
        exec: "calibrate n=100".into(),
        mem_mib: 128,
        ..QemuConfig::new("/img/probe.elf".into())
    }
}

fn value_of<'a>(args: &'a [OsString], flag: &str) -> Option<&'a str> {
    let i = args.iter().position(|a| a == flag)?;
    args.get(i + 1)?.to_str()
}

#[test]
fn command_line_boots_the_probe_with_its_exec_and_debug_exit() {
    let a = command_line(&cfg(), Accel::Kvm, Some(Path::new("/q/qboot.rom")));

    assert_eq!(value_of(&a, "-kernel"), Some("/img/probe.elf"));
    assert_eq!(value_of(&a, "-append"), Some("calibrate n=100"));
    assert_eq!(value_of(&a, "-m"), Some("128"));
    assert_eq!(value_of(&a, "-bios"), Some("/q/qboot.rom"));
    assert_eq!(value_of(&a, "-serial"), Some("stdio"));
    assert_eq!(
        value_of(&a, "-device"),
        Some("isa-debug-exit,iobase=0xf4,iosize=0x04")
    );
    for flag in ["-nodefaults", "-no-reboot", "-no-user-config"] {
        assert!(a.iter().any(|x| x == flag), "{flag} missing");
    }
}

#[test]
fn accelerator_picks_machine_and_cpu() {
    let kvm = command_line(&cfg(), Accel::Kvm, None);
    let tcg = command_line(&cfg(), Accel::Tcg, None);

    assert_eq!(value_of(&kvm, "-machine"), Some("pc,accel=kvm"));
    assert_eq!(value_of(&kvm, "-cpu"), Some("host,-arch-capabilities"));
    assert_eq!(value_of(&tcg, "-machine"), Some("pc,accel=tcg"));
    assert_eq!(value_of(&tcg, "-cpu"), Some("max"));
    assert!(!tcg.iter().any(|x| x == "-bios"));
    let quiet = QemuConfig {
        exec: String::new(),
        ..cfg()
    };
    assert!(!command_line(&quiet, Accel::Tcg, None)
        .iter()
        .any(|x| x == "-append"));
}

#[test]
fn guest_status_decodes_debug_exit() {
    assert_eq!(guest_status(Some(1), true), Some(0));
    assert_eq!(guest_status(Some(3), true), Some(1));
    assert_eq!(guest_status(Some(5), false), Some(2));
}

#[test]
fn guest_status_is_none_without_debug_exit() {
    // QEMU's own error exit, a reset with -no-reboot, a signal.
    assert_eq!(guest_status(Some(1), false), None);
    assert_eq!(guest_status(Some(0), true), None);
    assert_eq!(guest_status(Some(2), true), None);
    assert_eq!(guest_status(None, true), None);
}

/// Every value of a repeated flag, in order.
fn values_of<'a>(args: &'a [OsString], flag: &str) -> Vec<&'a str> {
    args.windows(2)
        .filter(|w| w[0] == flag)
        .filter_map(|w| w[1].to_str())
        .collect()
}

fn disk(kind: DiskKind, format: DiskFormat) -> QemuDisk {
    QemuDisk {
        kind,
        path: "/d/disk.img".into(),
        format,
        format_stated: true,
        read_only: false,
        direct_io: false,
    }
}

fn dgram() -> QemuNetdev {
    QemuNetdev::Dgram {
        local_port: 40001,
        remote_port: 40002,
    }
}

#[test]
fn no_devices_by_default() {
    let a = command_line(&cfg(), Accel::Kvm, None);

    assert_eq!(
        values_of(&a, "-device").len(),
        1,
        "only isa-debug-exit: {a:?}"
    );
    for flag in ["-drive", "-netdev"] {
        assert!(!a.iter().any(|x| x == flag), "{flag} in {a:?}");
    }
}

#[test]
fn virtio_disk_is_modern_only_at_the_disk_slot() {
    let a = disk_args(&disk(DiskKind::Virtio, DiskFormat::Raw));

    assert_eq!(
        values_of(&a, "-drive"),
        ["if=none,id=disk0,format=raw,file=/d/disk.img"]
    );
    assert_eq!(
        values_of(&a, "-device"),
        ["virtio-blk-pci,drive=disk0,addr=04.0,disable-legacy=on,disable-modern=off,romfile="]
    );
}

#[test]
fn ide_disk_is_the_primary_master_of_the_builtin_piix() {
    let a = disk_args(&disk(DiskKind::Ide, DiskFormat::Qcow2));

    assert_eq!(
        values_of(&a, "-drive"),
        ["if=none,id=disk0,format=qcow2,file=/d/disk.img"]
    );
    assert_eq!(
        values_of(&a, "-device"),
        ["ide-hd,drive=disk0,bus=ide.0,unit=0"]
    );
}

#[test]
fn a_guessed_raw_image_is_left_to_qemus_probe_and_a_guessed_qcow2_is_named() {
    let guessed = |format| QemuDisk {
        format_stated: false,
        ..disk(DiskKind::Virtio, format)
    };

    assert_eq!(
        values_of(&disk_args(&guessed(DiskFormat::Raw)), "-drive"),
        ["if=none,id=disk0,file=/d/disk.img"]
    );
    assert_eq!(
        values_of(&disk_args(&guessed(DiskFormat::Qcow2)), "-drive"),
        ["if=none,id=disk0,format=qcow2,file=/d/disk.img"]
    );
}

#[test]
fn read_only_disk_opens_the_drive_read_only() {
    let d = QemuDisk {
        read_only: true,
        ..disk(DiskKind::Virtio, DiskFormat::Qcow2)
    };

    let a = disk_args(&d);

    assert_eq!(
        values_of(&a, "-drive"),
        ["if=none,id=disk0,format=qcow2,file=/d/disk.img,readonly=on"]
    );
}

#[test]
fn commas_in_the_image_path_are_escaped() {
    let d = QemuDisk {
        path: "/d/a,b/x,readonly=on".into(),
        ..disk(DiskKind::Virtio, DiskFormat::Raw)
    };

    let a = disk_args(&d);

    assert_eq!(
        values_of(&a, "-drive"),
        ["if=none,id=disk0,format=raw,file=/d/a,,b/x,,readonly=on"]
    );
}

#[test]
fn virtio_nic_is_modern_only_at_the_nic_slot_on_a_loopback_dgram_link() {
    let a = nic_args(&QemuNic::new(NicKind::Virtio, dgram()));

    assert_eq!(
        values_of(&a, "-netdev"),
        [
            "dgram,id=net0,local.type=inet,local.host=127.0.0.1,local.port=40001,\
          remote.type=inet,remote.host=127.0.0.1,remote.port=40002"
        ]
    );
    assert_eq!(
        values_of(&a, "-device"),
        [
            "virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56,addr=03.0,\
          disable-legacy=on,disable-modern=off,romfile="
        ]
    );
}

#[test]
fn e1000_nic_takes_its_mac_at_the_nic_slot() {
    let nic = QemuNic {
        mac: [0x02, 0, 0, 0xab, 0xcd, 0xef],
        ..QemuNic::new(NicKind::E1000, dgram())
    };

    let a = nic_args(&nic);

    assert_eq!(
        values_of(&a, "-device"),
        ["e1000,netdev=net0,mac=02:00:00:ab:cd:ef,addr=03.0,romfile="]
    );
    assert_eq!(values_of(&a, "-netdev").len(), 1);
}

#[test]
fn devices_come_before_the_kernel() {
    let c = QemuConfig {
        disk: Some(disk(DiskKind::Virtio, DiskFormat::Raw)),
        nic: Some(QemuNic::new(NicKind::Virtio, dgram())),
        ..cfg()
    };

    let a = command_line(&c, Accel::Kvm, None);

    let devices = values_of(&a, "-device");
    assert_eq!(devices.len(), 3, "{devices:?}");
    assert!(devices[1].starts_with("virtio-blk-pci,drive=disk0,"));
    assert!(devices[2].starts_with("virtio-net-pci,netdev=net0,"));
    assert_eq!(values_of(&a, "-drive").len(), 1);
    assert_eq!(values_of(&a, "-netdev").len(), 1);
    assert_eq!(a[a.len() - 4], "-kernel");
}

#[test]
fn open_detects_the_format_of_the_file() {
    let dir = std::env::temp_dir().join(format!("vmbench-qemu-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Names that lie about the contents.
    let qcow = dir.join("looks-raw.img");
    let raw = dir.join("looks.qcow2");
    std::fs::write(&qcow, b"QFI\xfb\0\0\0\x03rest of a header").unwrap();
    std::fs::write(&raw, [0u8; 4096]).unwrap();

    let q = QemuDisk::open(DiskKind::Virtio, &qcow);
    let r = QemuDisk::open(DiskKind::Ide, &raw);
    let missing = QemuDisk::open(DiskKind::Virtio, dir.join("absent"));
    std::fs::remove_dir_all(&dir).unwrap();

    let q = q.unwrap();
    assert_eq!((q.format, q.read_only), (DiskFormat::Qcow2, false));
    assert_eq!(r.unwrap().format, DiskFormat::Raw);
    assert!(matches!(missing, Err(Error::DiskUnreadable { .. })));
}

#[test]
fn read_only_ide_is_refused_before_starting_qemu() {
    let c = QemuConfig {
        disk: Some(QemuDisk {
            read_only: true,
            ..disk(DiskKind::Ide, DiskFormat::Raw)
        }),
        probe: std::env::current_exe().unwrap(),
        ..cfg()
    };

    let e = run(&c, |_| {}).unwrap_err();

    assert!(matches!(e, Error::ReadOnlyIde { .. }), "{e}");
    assert!(e.to_string().contains("virtio"));
}

#[test]
fn errors_say_what_to_do() {
    let e = Error::NotInstalled {
        looked: "not on PATH".into(),
    };

    assert!(e.to_string().contains(INSTALL_HINT));
    assert!(Error::ExecTooLong(200).to_string().contains("127"));
}

#[test]
fn direct_io_asks_qemu_to_bypass_the_page_cache() {
    let d = QemuDisk {
        direct_io: true,
        ..disk(DiskKind::Ide, DiskFormat::Raw)
    };

    let a = disk_args(&d);

    assert_eq!(
        values_of(&a, "-drive"),
        ["if=none,id=disk0,format=raw,file=/d/disk.img,cache.direct=on"]
    );
}
