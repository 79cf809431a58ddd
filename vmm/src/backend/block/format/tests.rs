//! Every format qemu-img can create is recognised from a real image it made; the ones it can
//! only read (dmg, bochs, cloop) from their magic bytes.

use std::process::Command;

use super::*;

fn qemu_img_create(dir: &Path, fmt: &str, extra: &[&str]) -> std::path::PathBuf {
    let p = dir.join(format!("img.{fmt}"));
    let out = Command::new("qemu-img")
        .args(["create", "-q", "-f", fmt])
        .args(extra)
        .arg(&p)
        .arg("16M")
        .output()
        .expect("qemu-img is required for these tests (install qemu-utils)");
    assert!(
        out.status.success(),
        "qemu-img create -f {fmt}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    p
}

#[test]
fn every_format_qemu_img_creates_is_recognised() {
    let d = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[&str], Result<DiskFormat, &str>)] = &[
        ("raw", &[], Ok(DiskFormat::Raw)),
        ("qcow2", &[], Ok(DiskFormat::Qcow2)),
        ("qcow2", &["-o", "compat=0.10"], Ok(DiskFormat::Qcow2)),
        ("qcow", &[], Err("qcow")),
        ("vmdk", &[], Err("vmdk")),
        ("vdi", &[], Err("vdi")),
        ("vpc", &[], Err("vpc")),
        ("vhdx", &[], Err("vhdx")),
        ("qed", &[], Err("qed")),
        ("parallels", &[], Err("parallels")),
        (
            "luks",
            &[
                "--object",
                "secret,id=s0,data=vmbench",
                "-o",
                "key-secret=s0,iter-time=10",
            ],
            Err("luks"),
        ),
    ];
    for (i, (fmt, extra, want)) in cases.iter().enumerate() {
        let sub = d.path().join(i.to_string());
        std::fs::create_dir(&sub).unwrap();
        let p = qemu_img_create(&sub, fmt, extra);

        let got = detect_format(&p);

        match (want, got) {
            (Ok(w), Ok(g)) => assert_eq!(*w, g, "{fmt}"),
            (Err(w), Err(Error::Unsupported { format, path })) => {
                assert_eq!(*w, format, "{fmt}");
                assert_eq!(path, p.display().to_string());
            }
            (w, g) => panic!("{fmt} {extra:?}: wanted {w:?}, got {g:?}"),
        }
    }
}

#[test]
fn a_fixed_vhd_is_recognised_by_its_footer() {
    let d = tempfile::tempdir().unwrap();
    let p = qemu_img_create(d.path(), "vpc", &["-o", "subformat=fixed"]);

    let err = detect_format(&p).unwrap_err();

    assert!(
        matches!(err, Error::Unsupported { format: "vpc", .. }),
        "{err}"
    );
}

#[test]
fn a_qcow2_with_one_flipped_magic_byte_is_not_served_as_raw() {
    let d = tempfile::tempdir().unwrap();
    let p = qemu_img_create(d.path(), "qcow2", &[]);
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[1] ^= 0x20;
    std::fs::write(&p, &bytes).unwrap();

    let err = detect_format(&p).unwrap_err();

    assert!(err.to_string().contains("damaged magic"), "{err}");
}

#[test]
fn read_only_formats_are_recognised_by_their_magic() {
    let mut dmg_tail = vec![0u8; 512];
    dmg_tail[..4].copy_from_slice(b"koly");
    let mut bochs = vec![0u8; 512];
    bochs[..22].copy_from_slice(b"Bochs Virtual HD Image");
    let cloop =
        b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n";

    assert_eq!(
        detect_bytes(&[0u8; 512], Some(&dmg_tail)),
        DetectedFormat::Foreign("dmg")
    );
    assert_eq!(detect_bytes(&bochs, None), DetectedFormat::Foreign("bochs"));
    assert_eq!(detect_bytes(cloop, None), DetectedFormat::Foreign("cloop"));
    assert_eq!(
        detect_bytes(&[0u8; 512], None),
        DetectedFormat::Served(DiskFormat::Raw)
    );
    assert_eq!(
        detect_bytes(&[], None),
        DetectedFormat::Served(DiskFormat::Raw)
    );
}
