//! The main job end to end: `vmbench bench` on real guests, its results file, its summary,
//! and an interrupted run that keeps what it finished.

mod support;
use support::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vmbench::results::{self, CaseStatus};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn vmbench() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vmbench"));
    c.current_dir(root()).env_remove("RUST_BACKTRACE");
    c
}

#[test]
fn smoke_scenario_runs_every_case_with_non_zero_figures() {
    let out_dir = TempDir::new("smoke");
    let out = vmbench()
        .args(["bench", "scenarios/smoke.toml", "--out"])
        .arg(&out_dir.0)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);

    let doc = results::load(&out_dir.0.join(results::RESULTS_FILE)).unwrap();
    assert!(doc.finished, "{stdout}\n{stderr}");
    assert!(doc
        .calibration
        .as_ref()
        .is_some_and(|c| c.figures["pio_exit_ns"] > 0.0));
    for case in &doc.cases {
        assert_eq!(
            case.status,
            CaseStatus::Ok,
            "{}: {:?}\n{stdout}",
            case.id,
            case.status
        );
        assert_eq!(
            case.repetitions.len(),
            doc.scenario.run.repetitions as usize,
            "{}",
            case.id
        );
        let (metric, _) = vmbench::cli::bench::primary(case.params.workload.kind());
        for rep in &case.repetitions {
            let v = rep.metrics.get(metric).copied().unwrap_or(0.0);
            assert!(v > 0.0, "{}: {metric} = {v}", case.id);
        }
        let s = &case.stats[metric];
        assert!(
            s.ci95_median.0 <= s.median && s.median <= s.ci95_median.1,
            "{}",
            case.id
        );
    }
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("wall time"), "{stdout}");
}

#[test]
fn interleaved_comparison_and_json_output() {
    let out_dir = TempDir::new("cmp");
    let out = vmbench()
        .args([
            "bench",
            "scenarios/net.toml",
            "--filter",
            "virtio,workload=net-rr,frame_size=64|virtio,workload=net-rx,frame_size=64",
            "--repetitions",
            "3",
            "--duration",
            "0.2",
            "--json",
            "--out",
        ])
        .arg(&out_dir.0)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: results::RunResults =
        serde_json::from_slice(&out.stdout).expect("stdout is the results document");
    assert_eq!(doc.cases.len(), 2);
    for c in &doc.cases {
        assert_eq!(c.repetitions.len(), 3);
        // Raw latency samples are kept for the request-response case.
        if c.id.contains("net-rr") {
            let n = c.repetitions[0].samples["latency_ns"].len() as f64;
            assert_eq!(Some(&n), c.repetitions[0].metrics.get("ops"));
        }
        assert!(c
            .repetitions
            .iter()
            .all(|r| r.exits.per_op.contains_key("total")));
    }
    assert_eq!(
        doc,
        results::load(&out_dir.0.join(results::RESULTS_FILE)).unwrap()
    );
}

/// A run of net.toml stopped by `signal` after its first repetition is on disk: its output and
/// its results file.
fn interrupted(signal: i32, name: &str) -> (std::process::Output, results::RunResults) {
    let out_dir = TempDir::new(name);
    let file = out_dir.0.join(results::RESULTS_FILE);
    let child = vmbench()
        .args([
            "bench",
            "scenarios/net.toml",
            "--filter",
            "virtio",
            "--repetitions",
            "3",
            "--duration",
            "0.3",
            "--out",
        ])
        .arg(&out_dir.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first finished repetition to be on disk.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "no repetition written");
        if let Ok(doc) = results::load(&file) {
            if doc.cases.iter().any(|c| !c.repetitions.is_empty()) {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: kill sends a signal to the child we spawned; no memory is involved.
    unsafe { libc::kill(child.id() as i32, signal) };
    let out = child.wait_with_output().unwrap();
    let doc = results::load(&file).unwrap();
    (out, doc)
}

#[test]
fn ctrl_c_keeps_the_finished_cases_and_says_so() {
    let (out, doc) = interrupted(libc::SIGINT, "sigint");

    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!doc.finished);
    assert!(
        doc.interrupted
            .as_deref()
            .is_some_and(|r| r.contains("Ctrl-C (SIGINT)")),
        "{:?}",
        doc.interrupted
    );
    assert!(doc.cases.iter().any(|c| !c.repetitions.is_empty()));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the finished cases are in"));
}

#[test]
fn sigterm_is_recorded_as_sigterm_not_ctrl_c() {
    let (out, doc) = interrupted(libc::SIGTERM, "sigterm");

    assert_eq!(out.status.code(), Some(1));
    let why = doc.interrupted.unwrap_or_default();
    assert!(why.contains("SIGTERM") && !why.contains("Ctrl-C"), "{why}");
    assert!(doc.cases.iter().any(|c| !c.repetitions.is_empty()));
}

#[test]
fn a_malformed_scenario_names_file_line_and_key() {
    let dir = TempDir::new("bad");
    let f = dir.0.join("bad.toml");
    std::fs::write(&f, "name = \"x\"\n[run]\nrepetiton = 3\n").unwrap();
    let out = vmbench().arg("bench").arg(&f).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("bad.toml:3:1") && err.contains("repetitions"),
        "{err}"
    );
}

#[test]
fn a_linux_guest_on_vmbenchs_vmm_is_refused_where_guest_kernel_code_is_emulated() {
    if vmm::kvm::host_kvm().cpl0_native {
        eprintln!("skipped: this host runs guest kernel code natively, so it boots Linux");
        return;
    }
    let dir = TempDir::new("linux");
    let f = dir.0.join("linux.toml");
    std::fs::write(&f, "guest = \"linux\"\n[workload]\nname = \"net-rr\"\n[matrix]\nnic = [\"e1000\", \"virtio\"]\n").unwrap();
    let out = vmbench()
        .arg("bench")
        .arg(&f)
        .arg("--out")
        .arg(dir.path("out"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);

    // Before any image is built or guest booted: one line, the case, why, and what to do.
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("linux.toml: case ")
            && err.contains("(and 1 more with guest \"linux\" on engine \"vmbench\")")
            && err.contains("a stock Linux kernel on this host")
            && err.contains("--host emulated"),
        "{err}"
    );
    assert!(!dir.path("out").join(results::RESULTS_FILE).exists());
}
