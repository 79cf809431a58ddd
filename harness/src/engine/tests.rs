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

            let spec = GuestSpec::for_case(&c, "/p.elf".into(), None).unwrap();
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

            let spec = GuestSpec::for_case(&c, "/p.elf".into(), Some(img.clone())).unwrap();
            let m = machine_config(&spec);
            let q = Qemu::default().config(&spec, &limits()).unwrap();

            let d = spec.disk.as_ref().unwrap();
            assert_eq!((d.kind, d.format, &d.image), (*disk, *format, &img));
            let md = m.disk.unwrap();
            assert_eq!((md.kind, &md.path), (*disk, &img));
            let qd = q.disk.unwrap();
            assert_eq!((qd.kind, qd.format, &qd.path), (*disk, *format, &img));
        }
    }
}

#[test]
fn an_image_of_another_format_than_the_case_asks_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = case(
        "[devices]\ndisk = \"virtio\"\ndisk_format = \"qcow2\"\n[workload]\nname = \"blk-read\"\n",
    );

    let e = GuestSpec::for_case(&c, "/p.elf".into(), Some(image(&dir, DiskFormat::Raw)));
    let none = GuestSpec::for_case(&c, "/p.elf".into(), None);

    let e = e.unwrap_err().to_string();
    assert!(e.contains("is raw, but the case asks for qcow2"), "{e}");
    assert!(matches!(none, Err(Error::NoDiskImage(DiskKind::Virtio))));
}

#[test]
fn a_linux_guest_spec_is_refused_by_both_engines() {
    let spec = GuestSpec {
        guest: Guest::Linux,
        probe: "/p.elf".into(),
        linux: None,
        vcpus: 1,
        mem_mib: 64,
        exec: "hello".into(),
        nic: None,
        disk: None,
    };

    let qemu = for_kind(EngineKind::Qemu).run(&spec, &limits(), &mut |_| {});
    let vmbench = for_kind(EngineKind::Vmbench).run(&spec, &limits(), &mut |_| {});

    assert!(matches!(qemu, Err(Error::GuestUnavailable(Guest::Linux))));
    assert!(matches!(vmbench, Err(Error::NoLinuxImage)));
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
    let e = q.config(&tap, &limits()).unwrap_err().to_string();
    assert!(e.contains("net_backend \"tap\""), "{e}");
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
