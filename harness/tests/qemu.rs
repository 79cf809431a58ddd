//! The probe on QEMU, end to end: PVH boot through the probe's own stub, records over the
//! serial port, status through isa-debug-exit. QEMU must be installed (CI installs it); a
//! missing QEMU fails these tests rather than skipping them.

use std::time::Duration;

use vmbench::engine::qemu::{self, Accel, QemuConfig, QemuOutcome};
use vmbench::record::Record;

mod support;
use support::*;

const MEM_MIB: u64 = 256;

fn boot(exec: &str) -> QemuOutcome {
    boot_on(exec, Accel::Auto)
}

fn boot_on(exec: &str, accel: Accel) -> QemuOutcome {
    if let Err(e) = qemu::find_qemu() {
        panic!("{e}");
    }
    let cfg = QemuConfig {
        exec: exec.into(),
        mem_mib: MEM_MIB,
        accel,
        timeout: Duration::from_secs(120),
        ..QemuConfig::new(probe())
    };
    let o = qemu::run(&cfg, |_| {}).unwrap_or_else(|e| panic!("running '{exec}' on QEMU: {e}"));
    eprintln!(
        "'{exec}' ran on {} (kvm failure: {:?}): ready after {:?}, exit after {:?}",
        o.accel.name(),
        o.kvm_failure,
        o.ready,
        o.wall
    );
    o
}

fn one<'a>(o: &'a QemuOutcome, kind: &str) -> &'a Record {
    o.records
        .iter()
        .find(|r| r.kind == kind)
        .unwrap_or_else(|| {
            panic!(
                "no '{kind}' record in {:#?}\nconsole: {:#?}",
                o.records, o.console
            )
        })
}

#[test]
fn hello_reports_qemu_machine() {
    let o = boot("hello");

    one(&o, "ready");
    let info = one(&o, "info");
    assert_eq!(info.get("engine"), Some("other"));
    let mem = info.get_u64("mem").expect("info has mem");
    let want = MEM_MIB << 20;
    assert!(
        mem >= want / 10 * 9 && mem <= want,
        "reported memory {mem} is not within 90-100% of {want}"
    );
    assert!(
        o.records_of("pci")
            .any(|r| r.get("id") == Some("8086:1237")),
        "no i440FX host bridge (8086:1237) among {:?}",
        o.records_of("pci").collect::<Vec<_>>()
    );
    assert_eq!(one(&o, "done").get("status"), Some("ok"));
    assert_eq!(o.guest_status, Some(0));
    assert_eq!(o.exit_status, Some(1));
    assert_ne!(o.accel, Accel::Auto);
}

#[test]
fn tcg_runs_the_probe_without_kvm() {
    let o = boot_on("hello", Accel::Tcg);

    assert_eq!(o.accel, Accel::Tcg);
    assert_eq!(one(&o, "done").get("status"), Some("ok"));
    assert_eq!(o.guest_status, Some(0));
}

#[test]
fn calibrate_measures_exits() {
    let o = boot("calibrate n=100");

    // self_ipi: QEMU's local APIC delivers to the probe's CPL3 handler too (the PVH stub's IDT).
    for name in ["pio_exit", "mmio_exit", "self_ipi"] {
        let r = o
            .records_of("result")
            .find(|r| r.get("name") == Some(name))
            .unwrap_or_else(|| panic!("no {name} result in {:#?}", o.records));
        let median = r.get_u64("median").expect("result has a median");
        assert!(median > 0, "{name} median is {median}");
    }
    assert_eq!(one(&o, "done").get("status"), Some("ok"));
    assert_eq!(o.guest_status, Some(0));
}

#[test]
fn unknown_workload_fails_with_its_status() {
    let o = boot("no-such-workload");

    assert!(one(&o, "error").text.contains("unknown workload"));
    assert_eq!(one(&o, "done").get("status"), Some("failed"));
    assert_eq!(o.guest_status, Some(probe_abi::exit::BAD_EXEC));
}
