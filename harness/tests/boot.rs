//! End-to-end: the probe boots on vmbench's VMM under real KVM and reports what it sees; the
//! failure paths (crash, hang, bad ELF, missing KVM, too little memory) give clear errors.

mod support;
use support::*;

use std::process::Command;
use std::time::{Duration, Instant};

use vmbench::session::{self, Ending, Limits, Outcome};
use vmm::{Machine, MachineConfig};

fn boot(vcpus: usize, mem_mib: u64, exec: &str, limits: Limits) -> Outcome {
    let cfg = MachineConfig {
        vcpus,
        mem_mib,
        probe: probe(),
        exec: exec.into(),
        ..Default::default()
    };
    let mut m = Machine::new(&cfg).expect("the machine builds");
    session::run(&mut m, &limits, |_| {}).expect("the machine runs")
}

fn limits() -> Limits {
    Limits {
        ready: Duration::from_secs(10),
        run: Duration::from_secs(60),
    }
}

fn only<'a>(out: &'a Outcome, kind: &'a str) -> &'a vmbench::record::Record {
    let all: Vec<_> = out.records_of(kind).collect();
    assert_eq!(all.len(), 1, "one '{kind}' record in {:?}", out.records);
    &all[0].record
}

#[test]
fn probe_reports_ready_with_its_memory_vcpus_and_pci_bus() {
    let out = boot(1, 96, "hello", limits());

    assert!(
        matches!(out.ending, Ending::Exited { code: 0 }),
        "{:?}",
        out.ending
    );
    let info = only(&out, "info");
    assert_eq!(info.get_u64("mem"), Some(96 << 20));
    assert_eq!(info.get_u64("vcpus"), Some(1));
    assert_eq!(info.get("engine"), Some("vmbench"));
    assert_eq!(info.get("tsc_source"), Some("vmm"));
    assert_eq!(info.get_u64("tsc_khz"), out.tsc_khz.map(u64::from));
    // The host bridge, and nothing else yet: absent functions read as all ones.
    let pci = only(&out, "pci");
    assert_eq!(
        (pci.get("bdf"), pci.get("id")),
        (Some("00:00.0"), Some("8086:1237"))
    );
    assert_eq!(only(&out, "pci-done").get_u64("functions"), Some(1));
    // The timeline has every step, in order.
    let t = &out.timeline;
    assert!(t.setup_ms().unwrap() > 0.0);
    assert!(t.first_instruction_ms().unwrap() >= 0.0);
    assert!(t.ready_ms().unwrap() >= 0.0);
    // Exits are counted per device: the bus scan is 32 devices, two config accesses each,
    // plus the bridge's class and header reads.
    let total = out.exits.as_ref().expect("vmbench counts exits").total();
    assert_eq!(total.by_device["pci-config"], 32 * 2 + 4);
    assert_eq!(total.by_device["entry-mark"], 1);
    assert_eq!(total.by_device["debug-exit"], 1);
}

#[test]
fn every_vcpu_runs_the_probe_and_reports_ready() {
    let out = boot(2, 64, "hello", limits());

    assert!(
        matches!(out.ending, Ending::Exited { code: 0 }),
        "{:?}",
        out.ending
    );
    let mut ready: Vec<u64> = out
        .records_of("ready")
        .map(|r| r.record.get_u64("vcpu").unwrap())
        .collect();
    ready.sort();
    assert_eq!(ready, [0, 1]);
    assert_eq!(only(&out, "info").get_u64("vcpus"), Some(2));
    assert_eq!(only(&out, "info").get_u64("vcpus_ready"), Some(2));
    assert_eq!(
        out.exits.as_ref().unwrap().vcpus[1].by_device["entry-mark"],
        1
    );
    assert!(out.timeline.ready.iter().all(Option::is_some));
}

#[test]
fn calibration_gives_positive_plausible_exit_costs() {
    let out = boot(1, 64, "calibrate n=200", limits());

    assert!(
        matches!(out.ending, Ending::Exited { code: 0 }),
        "{:?}",
        out.ending
    );
    let result = |name: &str| {
        out.records_of("result")
            .map(|t| &t.record)
            .find(|r| r.get("name") == Some(name))
            .unwrap_or_else(|| panic!("no result {name}"))
            .clone()
    };
    for name in ["pio_exit", "mmio_exit", "ioeventfd_write", "self_ipi"] {
        let r = result(name);
        let (min, median, max) = (
            r.get_u64("min").unwrap(),
            r.get_u64("median").unwrap(),
            r.get_u64("max").unwrap(),
        );
        // An exit to user space and back takes more than 50 ns on any host and less
        // than 10 ms unless the host is broken.
        assert!(
            median > 50 && median < 10_000_000,
            "{name}: median {median} ns"
        );
        assert!(
            min <= median && median <= max,
            "{name}: {min} {median} {max}"
        );
        assert_eq!(r.get_u64("n"), Some(200));
    }
    // Each PIO and MMIO sample was a real exit to the VMM, and each ioeventfd write reached
    // the eventfd without one; the interrupts (self-IPI, EOI) stayed in KVM's local APIC.
    let w = out.exits.as_ref().expect("vmbench counts exits").total();
    assert_eq!(w.by_device["calibration"], 2 * (200 + 50));
    // Every self-IPI reached the probe's CPL3 handler: the first, the warm-up, the samples.
    let interrupts = out
        .records_of("count")
        .map(|t| &t.record)
        .find(|r| r.get("name") == Some("interrupts"))
        .expect("the probe counts the interrupts its handler took");
    assert_eq!(interrupts.get_u64("n"), Some(1 + 50 + 200));
    assert_eq!(out.ioeventfd_writes, Some(200 + 50));
}

#[test]
fn a_crashing_guest_is_reported_with_its_rip() {
    let out = boot(1, 64, "crash", limits());

    let said = only(&out, "crashing").get("rip").unwrap().to_string();
    match &out.ending {
        Ending::Crashed {
            reason,
            rip,
            registers,
            vcpu,
        } => {
            assert_eq!(format!("{rip:#x}"), said);
            assert!(reason.contains("triple fault"), "{reason}");
            assert!(registers.contains("rsp="), "{registers}");
            assert_eq!(*vcpu, 0);
        }
        other => panic!("expected a crash, got {other:?}"),
    }
}

#[test]
fn a_guest_that_never_gets_ready_times_out_and_is_stopped() {
    let started = Instant::now();
    let out = boot(
        1,
        64,
        "hang",
        Limits {
            ready: Duration::from_millis(500),
            run: Duration::from_secs(60),
        },
    );

    assert!(
        matches!(out.ending, Ending::TimedOut { phase: "ready", .. }),
        "{:?}",
        out.ending
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the VM was stopped promptly"
    );
    assert!(out.last_words().contains("hanging on purpose before ready"));
    assert!(out.last_exit.contains("pio_out"), "{}", out.last_exit);
}

#[test]
fn a_workload_that_never_ends_times_out() {
    let out = boot(
        2,
        64,
        "hang after-ready",
        Limits {
            ready: Duration::from_secs(10),
            run: Duration::from_millis(300),
        },
    );
    assert!(
        matches!(out.ending, Ending::TimedOut { phase: "run", .. }),
        "{:?}",
        out.ending
    );
}

// The CLI: one line, exit code 2, no backtrace, for input it cannot use.

fn vmbench(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vmbench"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("vmbench runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_one_line_error(stderr: &str, needle: &str) {
    let lines: Vec<_> = stderr.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(lines[0].contains(needle), "'{needle}' in {stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
}

#[test]
fn cli_missing_probe_elf() {
    let (code, _, err) = vmbench(&["boot", "--probe", "/nonexistent/probe.elf"], &[]);
    assert_eq!(code, 2);
    assert_one_line_error(&err, "probe ELF /nonexistent/probe.elf not found");
}

#[test]
fn cli_malformed_probe_elf() {
    let dir = std::env::temp_dir().join(format!("vmbench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.elf");
    std::fs::write(
        &bad,
        b"\x7fELF this is not really an ELF file at all, just text",
    )
    .unwrap();

    let (code, _, err) = vmbench(&["boot", "--probe", bad.to_str().unwrap()], &[]);

    assert_eq!(code, 2);
    assert_one_line_error(&err, "is not a loadable x86-64 ELF");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn cli_missing_kvm_device() {
    let (code, _, err) = vmbench(
        &["boot", "--probe", probe().to_str().unwrap()],
        &[("VMBENCH_KVM_DEVICE", "/nonexistent/kvm")],
    );
    assert_eq!(code, 2);
    assert_one_line_error(
        &err,
        "/nonexistent/kvm does not exist: this host has no KVM",
    );
}

#[test]
fn cli_too_little_memory() {
    let (code, _, err) = vmbench(
        &["boot", "--mem", "4", "--probe", probe().to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 2);
    assert_one_line_error(&err, "invalid value '4' for '--mem <MEM>'");
}

#[test]
fn cli_ready_timeout_says_what_the_guest_last_did() {
    let (code, _, err) = vmbench(
        &[
            "boot",
            "--probe-exec",
            "hang",
            "--timeout",
            "0.5",
            "--probe",
            probe().to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 2);
    assert_one_line_error(&err, "did not report ready within 0.5 s");
    assert!(err.contains("hanging on purpose before ready"), "{err}");
}

#[test]
fn cli_crash_exits_1_with_registers() {
    let (code, out, err) = vmbench(
        &[
            "boot",
            "--probe-exec",
            "crash",
            "--probe",
            probe().to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("triple fault") && err.contains("registers: rip="),
        "{err}"
    );
}

#[test]
fn cli_unknown_workload_fails_with_the_guests_word() {
    let (code, out, err) = vmbench(
        &[
            "boot",
            "--probe-exec",
            "frobnicate",
            "--probe",
            probe().to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("unknown workload 'frobnicate'"), "{out}");
}
