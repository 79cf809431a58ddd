//! Issue 15 from the command line: what a hostile or careless user types gets one line and
//! exit 2 (or the right result), never a panic (101), a hang or a run that lies. Each test
//! runs the real binary the way the issue's commands did.

mod support;
use support::*;

use std::any::TypeId;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use clap::CommandFactory;
use vmbench::cli::Cli;
use vmbench::scenario::Shard;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn vmbench<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmbench"))
        .current_dir(root())
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("vmbench runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit 2 with one `error:` line that contains `needle`, no panic.
fn assert_refused(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let lines: Vec<_> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(lines[0].contains(needle), "`{needle}` in {err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// The types a numeric flag's value parses to.
fn is_numeric(arg: &clap::Arg) -> bool {
    let t = arg.get_value_parser().type_id();
    [
        TypeId::of::<f64>(),
        TypeId::of::<f32>(),
        TypeId::of::<u8>(),
        TypeId::of::<u16>(),
        TypeId::of::<u32>(),
        TypeId::of::<u64>(),
        TypeId::of::<usize>(),
        TypeId::of::<i32>(),
        TypeId::of::<i64>(),
        TypeId::of::<Shard>(),
    ]
    .iter()
    .any(|id| t == *id)
}

/// Every numeric flag of every subcommand, as (subcommand path, --flag).
fn numeric_flags() -> Vec<(Vec<String>, String)> {
    fn walk(cmd: &clap::Command, path: Vec<String>, out: &mut Vec<(Vec<String>, String)>) {
        for a in cmd.get_arguments() {
            if let Some(long) = a.get_long().filter(|_| is_numeric(a)) {
                out.push((path.clone(), format!("--{long}")));
            }
        }
        for sub in cmd.get_subcommands() {
            let mut p = path.clone();
            p.push(sub.get_name().to_string());
            walk(sub, p, out);
        }
    }
    let mut out = Vec::new();
    walk(&Cli::command(), Vec::new(), &mut out);
    out
}

/// Values no numeric flag takes: not numbers, not finite, negative, past every range and
/// every integer type, and the issue's two.
const EXTREMES: &[&str] = &[
    "nan",
    "NaN",
    "inf",
    "-inf",
    "-1",
    "-0.000001",
    "1e300",
    "9.3e18",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "0x10",
    "",
];

#[test]
fn every_numeric_flag_refuses_extreme_values_with_exit_2_and_names_itself() {
    let flags = numeric_flags();
    let names: Vec<String> = flags
        .iter()
        .map(|(p, f)| format!("{} {f}", p.join(" ")))
        .collect();
    // The walk finds the flags the issue named, so this test cannot pass vacuously.
    for known in [
        "boot --timeout",
        "boot --run-timeout",
        "boot --vcpus",
        "boot --mem",
        "bench --budget",
        "bench --target-ci",
        "bench --repetitions",
        "bench --duration",
        "gate --threshold",
        "gate --alpha",
    ] {
        assert!(names.iter().any(|n| n == known), "{known} in {names:?}");
    }
    for (path, flag) in &flags {
        for v in EXTREMES {
            let mut args = path.clone();
            args.push(format!("{flag}={v}"));
            let o = vmbench(&args);
            let err = stderr(&o);
            assert_ne!(o.status.code(), Some(101), "{args:?} panicked: {err}");
            assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
            assert!(err.contains(flag.as_str()), "{args:?} names {flag}: {err}");
            assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        }
    }
}

#[test]
fn the_issues_two_panics_are_usage_errors() {
    assert_refused(
        &vmbench(&["boot", "--timeout", "9.3e18"]),
        "invalid value '9.3e18' for '--timeout <TIMEOUT>'",
    );
    assert_refused(
        &vmbench(&[
            "bench",
            "scenarios/smoke.toml",
            "--target-ci",
            "50",
            "--budget",
            "nan",
        ]),
        "invalid value 'nan' for '--budget <SECS>'",
    );
}

#[test]
fn budget_without_target_ci_is_refused() {
    assert_refused(
        &vmbench(&["bench", "scenarios/smoke.toml", "--budget", "60"]),
        "--target-ci",
    );
}

#[test]
fn devices_fifos_and_huge_files_are_refused_as_scenarios_and_probes() {
    let dir = TempDir::new("hostile-input");
    let fifo = dir.path("fifo.toml");
    let made = Command::new("mkfifo").arg(&fifo).status();
    assert!(made.is_ok_and(|s| s.success()));
    let big = dir.path("big.toml");
    sized_file(&big, vmbench::input::MAX_SCENARIO_BYTES + 1);

    for (path, what) in [
        (Path::new("/dev/zero"), "it is a character device"),
        (Path::new("/dev/urandom"), "it is a character device"),
        (fifo.as_path(), "it is a FIFO"),
        (big.as_path(), "more than the 1048576 bytes taken"),
    ] {
        let o = vmbench(&[Path::new("bench"), path]);
        assert_refused(&o, &format!("cannot read scenario {}", path.display()));
        assert_refused(&o, what);
    }
    let o = vmbench(&["boot", "--probe", "/dev/urandom"]);
    assert_refused(&o, "--probe /dev/urandom: it is a character device");
}

#[test]
fn an_out_directory_holding_results_is_refused_unless_replaced() {
    let dir = TempDir::new("hostile-out");
    std::fs::write(dir.path("results.json"), "{}").unwrap();
    let out = dir.0.to_str().unwrap();

    let o = vmbench(&["bench", "scenarios/calibrate.toml", "--out", out]);

    assert_refused(&o, "already holds results");
    assert_refused(&o, "pass --replace");
    assert_eq!(std::fs::read(dir.path("results.json")).unwrap(), b"{}");
}

#[test]
fn a_guest_that_exits_without_reporting_ready_exits_2() {
    // A probe stand-in that writes its exit status at once: `out dx, eax` to the
    // isa-debug-exit port (status 0), then spins. A 64-bit ELF with one PT_LOAD at the
    // probe's base.
    let code: &[u8] = &[
        0x66, 0xba, 0xf4, 0x00, // mov dx, 0xf4
        0x31, 0xc0, // xor eax, eax
        0xef, // out dx, eax
        0xeb, 0xfe, // jmp .
    ];
    let elf = tiny_elf(probe_abi::layout::PROBE_BASE, code);
    let dir = TempDir::new("hostile-ready");
    let path = dir.path("exits-at-once.elf");
    std::fs::write(&path, elf).unwrap();

    let o = vmbench(&[Path::new("boot"), Path::new("--probe"), &path]);

    assert_refused(&o, "the guest exited with status");
    assert_refused(&o, "without ever reporting ready");
}

/// An x86-64 ELF executable with `code` loaded at and entered at `base`.
fn tiny_elf(base: u64, code: &[u8]) -> Vec<u8> {
    const EH: u64 = 64;
    const PH: u64 = 56;
    let mut e = Vec::new();
    e.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    e.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e.extend_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&base.to_le_bytes()); // entry
    e.extend_from_slice(&EH.to_le_bytes()); // program headers
    e.extend_from_slice(&0u64.to_le_bytes()); // no section headers
    e.extend_from_slice(&0u32.to_le_bytes());
    e.extend_from_slice(&(EH as u16).to_le_bytes());
    e.extend_from_slice(&(PH as u16).to_le_bytes());
    e.extend_from_slice(&1u16.to_le_bytes());
    e.extend_from_slice(&64u16.to_le_bytes());
    e.extend_from_slice(&0u16.to_le_bytes());
    e.extend_from_slice(&0u16.to_le_bytes());
    let off = EH + PH;
    e.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    e.extend_from_slice(&5u32.to_le_bytes()); // R+X
    e.extend_from_slice(&off.to_le_bytes());
    e.extend_from_slice(&base.to_le_bytes());
    e.extend_from_slice(&base.to_le_bytes());
    e.extend_from_slice(&(code.len() as u64).to_le_bytes());
    e.extend_from_slice(&(code.len() as u64).to_le_bytes());
    e.extend_from_slice(&0x1000u64.to_le_bytes());
    e.extend_from_slice(code);
    e
}

#[test]
fn blk_pattern_on_a_read_only_disk_fails_the_run() {
    let dir = TempDir::new("hostile-ro");
    let img = dir.path("disk.raw");
    sized_file(&img, 8 << 20);
    let probe = probe();
    for disk in ["virtio", "ide"] {
        let o = vmbench(&[
            Path::new("boot"),
            Path::new("--probe"),
            &probe,
            Path::new("--disk"),
            Path::new(disk),
            Path::new("--disk-image"),
            &img,
            Path::new("--disk-readonly"),
            Path::new("--probe-exec"),
            Path::new("blk-pattern sectors=256 seed=3"),
        ]);
        let (out, err) = (String::from_utf8_lossy(&o.stdout), stderr(&o));

        assert_eq!(o.status.code(), Some(1), "{disk}: {out}{err}");
        assert!(err.contains("blk-pattern"), "{disk}: {err}");
        assert!(err.contains("failed write(s)"), "{disk}: {err}");
    }
}

#[test]
fn a_stated_format_is_checked_and_a_stated_raw_image_is_served_whatever_its_first_sector() {
    let dir = TempDir::new("hostile-format");
    let raw = dir.path("disk.raw");
    sized_file(&raw, 8 << 20);
    // A raw disk whose first sector looks like a VMDK header: refused when guessed.
    let vmdk_like = dir.path("looks-like-vmdk.raw");
    let mut bytes = vec![0u8; 8 << 20];
    bytes[..4].copy_from_slice(b"KDMV");
    std::fs::write(&vmdk_like, &bytes).unwrap();
    let probe = probe();
    let boot = |img: &Path, format: Option<&str>| {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "boot".as_ref(),
            "--probe".as_ref(),
            probe.as_os_str(),
            "--disk".as_ref(),
            "virtio".as_ref(),
            "--disk-image".as_ref(),
            img.as_os_str(),
            "--probe-exec".as_ref(),
            "blk-pattern sectors=64 seed=5".as_ref(),
        ];
        if let Some(f) = format {
            args.push(std::ffi::OsStr::new("--disk-format"));
            args.push(std::ffi::OsStr::new(f));
        }
        vmbench(&args)
    };

    let wrong = boot(&raw, Some("qcow2"));
    let guessed = boot(&vmdk_like, None);
    let stated = boot(&vmdk_like, Some("raw"));

    assert_refused(&wrong, "is raw, but the case asks for qcow2");
    assert_refused(&guessed, "is a vmdk image, which vmbench does not serve");
    let out = String::from_utf8_lossy(&stated.stdout);
    assert_eq!(stated.status.code(), Some(0), "{out}{}", stderr(&stated));
    assert!(out.contains("mismatches=0"), "{out}");
    let first = std::fs::read(&vmdk_like).unwrap();
    assert_ne!(
        &first[..4],
        b"KDMV",
        "the guest's pattern replaced the first sector"
    );
}

#[test]
fn the_probe_refuses_a_batch_out_of_range_instead_of_clamping() {
    let probe = probe();
    for (dev, exec, want) in [
        (
            "--nic",
            "net-tx size=64 batch=0 duration_ms=10 warmup_ms=0",
            "batch=0 is not valid; want a number from 1 to 128",
        ),
        (
            "--nic",
            "net-tx size=64 batch=129 duration_ms=10 warmup_ms=0",
            "batch=129 is not valid; want a number from 1 to 128",
        ),
    ] {
        let o = vmbench(&[
            "boot".as_ref(),
            "--probe".as_ref(),
            probe.as_os_str(),
            dev.as_ref(),
            "virtio".as_ref(),
            "--probe-exec".as_ref(),
            std::ffi::OsStr::new(exec),
        ]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(1), "{exec}: {out}{}", stderr(&o));
        assert!(out.contains(want), "{exec}: {out}");
    }
}
