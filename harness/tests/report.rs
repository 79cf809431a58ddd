//! `vmbench report` and the report `vmbench bench` renders at the end of every run, end to
//! end: a real smoke run on real guests, the static site, and bad input (exit 2, one line).

mod support;
use support::*;

use std::path::{Path, PathBuf};
use std::process::Command;

use vmbench::results;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn vmbench() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vmbench"));
    c.current_dir(root()).env_remove("RUST_BACKTRACE");
    c
}

fn data(name: &str) -> PathBuf {
    root().join("reports/tests/data").join(name)
}

#[test]
fn bench_smoke_renders_its_report_into_the_run_folder() {
    let out_dir = TempDir::new("report-smoke");
    let out = vmbench()
        .args([
            "bench",
            "scenarios/smoke.toml",
            "--repetitions",
            "2",
            "--out",
        ])
        .arg(&out_dir.0)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");

    let doc = results::load(&out_dir.0.join(results::RESULTS_FILE)).unwrap();
    let argv = doc.command_line.as_ref().expect("command line recorded");
    assert_eq!(
        argv[1..4],
        ["bench", "scenarios/smoke.toml", "--repetitions"]
    );

    let html_path = out_dir.0.join("report.html");
    assert!(
        stderr.contains(&format!("report: {}", html_path.display())),
        "{stderr}"
    );
    let html = std::fs::read_to_string(&html_path).unwrap();
    for case in &doc.cases {
        assert!(html.contains(&case.id), "{} not in the report", case.id);
    }
    assert!(html.contains("bench scenarios/smoke.toml --repetitions 2 --out"));
    let md = std::fs::read_to_string(out_dir.0.join("summary.md")).unwrap();
    assert!(md.contains("smoke") && md.len() < 1 << 20);
    let pngs = std::fs::read_dir(out_dir.0.join("charts")).unwrap().count();
    assert!(pngs >= 10, "{pngs} PNGs");

    // Exits counted both ways in the terminal summary: virtio-net's kicks reach KVM, not us.
    assert!(
        stdout.contains("to vmbench") && stdout.contains("all KVM"),
        "{stdout}"
    );
    let rr = doc.case("nic=virtio,workload=net-rr").unwrap();
    let ours = rr.stats["exits_per_op"].median;
    let line = stdout
        .lines()
        .find(|l| l.starts_with("nic=virtio,workload=net-rr "))
        .unwrap();
    match rr.stats.get("kvm_exits_per_op") {
        Some(kvm) => {
            assert!(kvm.median > ours, "KVM counts the ioeventfd kicks");
            assert!(line.contains(&format!("{:.2}", kvm.median)), "{line}");
        }
        // A host kernel without KVM binary stats: the column says so.
        None => assert!(line.split_whitespace().any(|w| w == "-"), "{line}"),
    }
}

#[test]
fn report_of_several_runs_and_a_site() {
    let dir = TempDir::new("report-site");
    let out = vmbench()
        .args(["report"])
        .arg(data("other-host.json"))
        .arg(data("smoke.json"))
        .arg("--baseline")
        .arg(data("other-host.json"))
        .arg("--out")
        .arg(dir.0.join("two"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("report.html") && stdout.contains("summary.md"),
        "{stdout}"
    );
    let html = std::fs::read_to_string(dir.0.join("two/report.html")).unwrap();
    assert!(html.contains("bench-metal-01") && html.contains("history-1"));

    let site = dir.0.join("site");
    let out = vmbench()
        .args(["report", "--site"])
        .arg(&site)
        .arg(data("smoke.json"))
        .arg(data("other-host.json"))
        .arg(data("engines.json"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let index = std::fs::read_to_string(site.join("index.html")).unwrap();
    for run in ["20261129T120000Z", "engines"] {
        assert!(index.contains(run), "{run} not in the index");
    }
    let pages: Vec<&str> = index
        .split("href=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .collect();
    assert_eq!(
        pages.len(),
        4,
        "three runs and the smoke scenario's history: {pages:?}"
    );
    for p in pages {
        assert!(site.join(p).is_file(), "{p}");
    }
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let dir = TempDir::new("report-bad");
    let empty = dir.0.join("empty.json");
    std::fs::write(&empty, "").unwrap();
    let v2 = dir.0.join("v2.json");
    let smoke = std::fs::read_to_string(data("smoke.json")).unwrap();
    std::fs::write(
        &v2,
        smoke.replacen("\"schema_version\":1", "\"schema_version\":2", 1),
    )
    .unwrap();
    let cut = dir.0.join("cut.json");
    std::fs::write(&cut, &smoke[..smoke.len() / 3]).unwrap();
    for (path, want) in [
        (dir.0.clone(), "is a directory"),
        (empty, "is empty"),
        (v2, "schema_version 2"),
        (cut, "not valid JSON"),
    ] {
        let out = vmbench().arg("report").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(want),
            "{stderr}"
        );
    }
}
