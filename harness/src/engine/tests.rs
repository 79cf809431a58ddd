//! The spec built from a case carries every parameter to the part it configures, and each
//! engine refuses what it cannot honour instead of ignoring it.

use std::path::PathBuf;

use super::qemu::Qemu;
use super::vmbench::machine_config;
use super::*;
use crate::scenario::Scenario;
use crate::session::Limits;
use vmm::kinds::Kind;

fn case(text: &str) -> Case {
    let s = Scenario::parse("x.toml", text).unwrap_or_else(|e| panic!("{e}"));
    s.cases[0].clone()
}

fn probe_only() -> GuestImages {
    GuestImages {
        probe: "/p.elf".into(),
        linux: None,
    }
}

fn limits() -> Limits {
    Limits {
        ready: std::time::Duration::from_secs(1),
        run: std::time::Duration::from_secs(2),
    }
}

fn image(dir: &tempfile::TempDir, format: DiskFormat) -> PathBuf {
    let p = dir.path().join(format!("disk.{format}"));
    match format {
        DiskFormat::Raw => std::fs::File::create(&p).unwrap().set_len(1 << 20).unwrap(),
        DiskFormat::Qcow2 => vmm::backend::block::qcow2::create(&p, 1 << 20, 16).unwrap(),
    }
    p
}

#[test]
fn every_nic_and_back_end_reaches_the_spec_and_the_machine() {
    for nic in NicKind::VALUES {
        for backend in NetBackendKind::VALUES {
            let c = case(&format!(
                "[vm]\nvcpus = 2\nmem_mib = 96\n[devices]\nnic = \"{nic}\"\nnet_backend = \"{backend}\"\n[workload]\nname = \"net-rr\"\nframe_size = 128\n"
            ));

            let spec = GuestSpec::for_case(&c, &probe_only(), None).unwrap();
            let m = machine_config(&spec);

            assert_eq!((spec.vcpus, spec.mem_mib), (2, 96));
            let n = spec.nic.as_ref().unwrap();
            assert_eq!((n.kind, n.backend, n.mac), (*nic, *backend, GUEST_MAC));
            let mn = m.nic.unwrap();
            assert_eq!((mn.kind, mn.backend), (*nic, *backend));
            assert_eq!((m.vcpus, m.mem_mib, m.disk.is_none()), (2, 96, true));
            assert!(
                spec.exec.starts_with("net-rr size=128 profile=linux"),
                "{}",
                spec.exec
            );
            assert!(spec.exec.ends_with(" raw=1"), "{}", spec.exec);
            assert_eq!(m.exec, spec.exec);
        }
    }
}

#[test]
fn every_disk_and_format_reaches_the_spec_and_the_machine() {
    let dir = tempfile::tempdir().unwrap();
    for disk in DiskKind::VALUES {
        for format in DiskFormat::VALUES {
            let c = case(&format!(
                "[devices]\ndisk = \"{disk}\"\ndisk_format = \"{format}\"\n[workload]\nname = \"blk-read\"\n"
            ));
            let img = image(&dir, *format);

            let spec = GuestSpec::for_case(&c, &probe_only(), Some(img.clone())).unwrap();
            let m = machine_config(&spec);
            let q = Qemu::default().config(&spec, &limits()).unwrap();

            let d = spec.disk.as_ref().unwrap();
            assert_eq!((d.kind, d.format, &d.image), (*disk, *format, &img));
            let md = m.disk.unwrap();
            assert_eq!((md.kind, &md.path), (*disk, &img));
            // The scenario states the format: the VMM is told it, not left to guess.
            assert_eq!(md.options.format, Some(*format));
            let qd = q.disk.unwrap();
            assert_eq!((qd.kind, qd.format, &qd.path), (*disk, *format, &img));
        }
    }
}

#[test]
fn a_stated_format_reaches_both_engines_and_a_guessed_one_stays_unstated() {
    let dir = tempfile::tempdir().unwrap();
    let raw = image(&dir, DiskFormat::Raw);
    // A raw disk whose first sector looks like a VMDK: refused when guessed, served when
    // stated raw (as QEMU's format=raw serves it).
    let vmdk_like = dir.path().join("looks-like.vmdk");
    let mut bytes = vec![0u8; 1 << 20];
    bytes[..4].copy_from_slice(b"KDMV");
    std::fs::write(&vmdk_like, bytes).unwrap();
    let spec = |d: DiskSpec| GuestSpec {
        guest: Guest::Probe,
        probe: "/p.elf".into(),
        vcpus: 1,
        mem_mib: 64,
        exec: "hello".into(),
        nic: None,
        disk: Some(d),
        linux: None,
    };

    let guessed = spec(DiskSpec::open(DiskKind::Virtio, raw.clone()).unwrap());
    let stated = spec(DiskSpec::stated(DiskKind::Ide, vmdk_like.clone(), DiskFormat::Raw).unwrap());
    let refused = DiskSpec::open(DiskKind::Virtio, vmdk_like.clone()).unwrap_err();
    let wrong = DiskSpec::stated(DiskKind::Virtio, raw.clone(), DiskFormat::Qcow2).unwrap_err();

    assert_eq!(machine_config(&guessed).disk.unwrap().options.format, None);
    assert_eq!(
        machine_config(&stated).disk.unwrap().options.format,
        Some(DiskFormat::Raw)
    );
    let q = Qemu::default()
        .config(&stated, &limits())
        .unwrap()
        .disk
        .unwrap();
    assert_eq!((q.format, &q.path), (DiskFormat::Raw, &vmdk_like));
    assert!(chain(&refused).contains("vmdk"), "{}", chain(&refused));
    assert!(
        wrong
            .to_string()
            .contains("is raw, but the case asks for qcow2"),
        "{wrong}"
    );
}

#[test]
fn an_image_of_another_format_than_the_case_asks_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = case(
        "[devices]\ndisk = \"virtio\"\ndisk_format = \"qcow2\"\n[workload]\nname = \"blk-read\"\n",
    );

    let e = GuestSpec::for_case(&c, &probe_only(), Some(image(&dir, DiskFormat::Raw)));
    let none = GuestSpec::for_case(&c, &probe_only(), None);

    let e = e.unwrap_err().to_string();
    assert!(e.contains("is raw, but the case asks for qcow2"), "{e}");
    assert!(matches!(none, Err(Error::NoDiskImage(DiskKind::Virtio))));
}

#[test]
fn a_linux_case_reaches_qemu_with_its_image_vcpus_and_agent_command() {
    let c = case(
        "guest = \"linux\"\nengine = \"qemu\"\n[vm]\nvcpus = 2\nmem_mib = 384\n[devices]\nnic = \"e1000\"\n[workload]\nname = \"net-rr\"\nframe_size = 200\n",
    );
    let images = GuestImages {
        probe: "/p.elf".into(),
        linux: Some(LinuxImage {
            vmlinux: "/l/vmlinux".into(),
            initramfs: "/l/initramfs.cpio.gz".into(),
            params: String::new(),
        }),
    };

    let none = GuestSpec::for_case(&c, &probe_only(), None);
    let spec = GuestSpec::for_case(&c, &images, None).unwrap();
    let q = Qemu::default().config(&spec, &limits()).unwrap();
    let vmbench = for_kind(EngineKind::Vmbench).run(&spec, &limits(), &mut |_| {});

    assert!(matches!(none, Err(Error::NoLinuxImage)));
    assert_eq!(
        spec.exec,
        "net-rr size=200 nic=e1000 warmup_ms=500 duration_ms=2000"
    );
    assert_eq!(
        (
            q.probe.to_str(),
            q.initrd.as_deref().and_then(|p| p.to_str())
        ),
        (Some("/l/vmlinux"), Some("/l/initramfs.cpio.gz"))
    );
    assert_eq!((q.vcpus, q.mem_mib), (2, 384));
    assert_eq!(
        q.exec,
        "console=ttyS0 panic=-1 vmb.ip=10.0.2.15/24 vmb.gw=10.0.2.2 -- net-rr size=200 nic=e1000 warmup_ms=500 duration_ms=2000"
    );
    // Refused where guest kernel code is emulated (KVM-PVM); elsewhere the made-up kernel
    // path fails to load.
    let e = vmbench.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("KVM-PVM") || e.contains("/l/vmlinux"), "{e}");
}

#[test]
fn vmbench_refuses_a_stock_kernel_where_guest_kernel_code_is_emulated() {
    let host = |flavour: &str, cpl0_native| vmm::kvm::HostKvm {
        flavour: flavour.into(),
        cpl0_native,
        nested: true,
    };

    let pvm = super::vmbench::linux_refusal(&host("kvm-pvm", false));
    let amd = super::vmbench::linux_refusal(&host("kvm-amd", true));

    let e = pvm.expect("refused on KVM-PVM").to_string();
    assert!(
        e.contains("KVM-PVM") && e.contains("--host emulated"),
        "{e}"
    );
    assert!(
        e.contains("engine qemu") || e.contains("--engine qemu"),
        "{e}"
    );
    assert!(amd.is_none());
}

#[test]
fn qemu_refuses_what_it_would_not_honour() {
    let base = GuestSpec {
        guest: Guest::Probe,
        probe: "/p.elf".into(),
        linux: None,
        vcpus: 1,
        mem_mib: 64,
        exec: "hello".into(),
        nic: None,
        disk: None,
    };
    let two = GuestSpec {
        vcpus: 2,
        ..base.clone()
    };
    let tap = GuestSpec {
        nic: Some(NicSpec {
            kind: NicKind::E1000,
            backend: NetBackendKind::Tap,
            mac: GUEST_MAC,
        }),
        ..base.clone()
    };
    let long = GuestSpec {
        exec: "x".repeat(probe_abi::EXEC_MAX + 1),
        ..base.clone()
    };

    let q = Qemu::default();
    let e = q.config(&two, &limits()).unwrap_err().to_string();
    assert!(e.contains("cannot run 2 vCPUs"), "{e}");
    // A TAP is QEMU's too now: the descriptor is handed over when the run starts.
    assert!(q.config(&tap, &limits()).is_ok());
    assert!(matches!(
        q.config(&long, &limits()),
        Err(Error::ExecTooLong(128))
    ));
    let c = q.config(&base, &limits()).unwrap();
    assert_eq!((c.mem_mib, c.exec.as_str()), (64, "hello"));
    assert_eq!(c.timeout, std::time::Duration::from_secs(3));
}

#[test]
fn errors_read_as_one_line_with_their_causes() {
    let e = Error::DiskUnreadable {
        path: "/d/x.img".into(),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    };

    assert_eq!(
        chain(&e),
        "cannot read disk image /d/x.img: entity not found"
    );
}
