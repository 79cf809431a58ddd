//! The gate end to end on real guests: a configuration known to be slower is caught, an A/A
//! run of one build passes, shards merge back into the full case list, an A/B run drives the
//! other build through `run-one` (and refuses a build that does not speak it), and the CI
//! script of .github/workflows/perf.yml runs as the workflow runs it.

mod support;
use support::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use vmbench::results::{self, RESULTS_FILE};
use vmbench::scenario::{Overrides, Scenario};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// vmbench, run in `dir` (bench --aa stores noise floors under the working directory).
fn vmbench(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vmbench"));
    c.current_dir(dir).env_remove("RUST_BACKTRACE");
    c
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn bench(dir: &Path, args: &[&str]) -> Output {
    let out = vmbench(dir).arg("bench").args(args).output().unwrap();
    assert!(out.status.success(), "bench {args:?}: {}", text(&out));
    out
}

fn gate(dir: &Path, args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let out = vmbench(dir)
        .arg("gate")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code(), json, text(&out))
}

fn e1000_scenario(profile: &str) -> String {
    format!(
        r#"name = "e1000-{profile}"
[devices]
nic = "e1000"
net_backend = "peer"
[workload]
name = "net-tx"
profile = "{profile}"
batch = 8
[run]
repetitions = 5
# Windows of 0.3 s sometimes see no frame at all from a starved e1000 guest on a loaded host.
warmup_secs = 0.2
duration_secs = 1.0
"#
    )
}

#[test]
fn a_known_slower_configuration_is_caught_and_an_aa_run_passes() {
    let t = TempDir::new("gate-e1000");
    for p in ["batched", "linux"] {
        std::fs::write(t.path(&format!("{p}.toml")), e1000_scenario(p)).unwrap();
    }
    // The baseline as an A/A run: 5 repetitions a side, which also stores noise floors.
    bench(&t.0, &["batched.toml", "--aa", "--out", "batched"]);
    bench(&t.0, &["linux.toml", "--out", "linux"]);
    let store = std::fs::read_dir(t.path("results/noise")).unwrap().count();
    assert_eq!(store, 1, "one noise-floor file for this host");

    let (code, r, out) = gate(&t.0, &["--aa", "batched/results.json"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(r["rows"][0]["n_baseline"], 5, "{out}");
    assert_ne!(r["rows"][0]["verdict"], "regression", "{out}");

    // The batched profile's other half against linux, presented as the candidate: the
    // scenario files differ, which the gate refuses unless told.
    let (code, _, out) = gate(
        &t.0,
        &[
            "--baseline",
            "batched/results.json",
            "--current",
            "linux/results.json",
        ],
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("scenario file: batched.toml"), "{out}");
    let (code, r, out) = gate(
        &t.0,
        &[
            "--baseline",
            "batched/results.json",
            "--current",
            "linux/results.json",
            "--allow-env-mismatch",
            "--junit",
            "junit.xml",
        ],
    );
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(r["outcome"], "regression", "{out}");
    assert_eq!(r["rows"][0]["verdict"], "regression", "{out}");
    assert!(r["rows"][0]["ratio"].as_f64().unwrap() < 0.95, "{out}");
    let junit = std::fs::read_to_string(t.path("junit.xml")).unwrap();
    assert!(
        junit.contains("failures=\"1\"") && junit.contains("<failure"),
        "{junit}"
    );
}

#[test]
fn shards_1_of_2_and_2_of_2_merged_equal_the_full_case_list() {
    let t = TempDir::new("gate-shards");
    let smoke = root().join("scenarios/smoke.toml");
    let smoke = smoke.to_str().unwrap();
    let filter = "hello|calibrate";
    for s in ["1/2", "2/2"] {
        let out = format!("shard{}", &s[..1]);
        bench(
            &t.0,
            &[
                smoke,
                "--shard",
                s,
                "--filter",
                filter,
                "--repetitions",
                "1",
                "--out",
                &out,
            ],
        );
    }
    let out = vmbench(&t.0)
        .args([
            "merge",
            "shard1/results.json",
            "shard2/results.json",
            "--out",
            "merged",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let mut full = Scenario::load(Path::new(smoke)).unwrap();
    full.apply(&Overrides {
        filter: Some(filter.into()),
        ..Default::default()
    })
    .unwrap();
    let want: Vec<String> = full.cases.iter().map(|c| c.id.clone()).collect();
    let merged = results::load(&t.path("merged").join(RESULTS_FILE)).unwrap();
    let got: Vec<String> = merged.cases.iter().map(|c| c.id.clone()).collect();
    assert_eq!(got, want);
    let s1 = results::load(&t.path("shard1").join(RESULTS_FILE)).unwrap();
    let s2 = results::load(&t.path("shard2").join(RESULTS_FILE)).unwrap();
    assert!(s1.cases.len().abs_diff(s2.cases.len()) <= 1);

    // Merging a shard with itself duplicates its cases.
    let out = vmbench(&t.0)
        .args([
            "merge",
            "shard1/results.json",
            "shard1/results.json",
            "--out",
            "dup",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("is in both"), "{}", text(&out));

    // One repetition decides nothing: a pass without --strict, exit 3 with it.
    let m = "merged/results.json";
    let (code, r, out) = gate(&t.0, &["--baseline", m, "--current", m]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(r["outcome"], "inconclusive");
    let (code, _, out) = gate(&t.0, &["--baseline", m, "--current", m, "--strict"]);
    assert_eq!(code, Some(3), "{out}");
}

#[test]
fn an_ab_run_drives_the_other_build_through_run_one() {
    let t = TempDir::new("gate-ab");
    let smoke = root().join("scenarios/smoke.toml");
    let smoke = smoke.to_str().unwrap();
    let me = env!("CARGO_BIN_EXE_vmbench");
    bench(
        &t.0,
        &[
            smoke,
            "--ab",
            me,
            "--filter",
            "nic=virtio,workload=net-rr",
            "--repetitions",
            "3",
            "--out",
            "ab",
        ],
    );
    let doc = results::load(&t.path("ab").join(RESULTS_FILE)).unwrap();
    let ab = doc.ab.as_ref().expect("the run records its other build");
    assert_eq!(ab.other_binary, me);
    assert_eq!(doc.cases.len(), 1);
    assert_eq!(doc.cases[0].repetitions.len(), 6);
    assert!(doc.cases[0]
        .metric_values("latency_p50_ns")
        .iter()
        .all(|&v| v > 0.0));
    let (code, r, out) = gate(&t.0, &["--ab", "ab/results.json"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(r["rows"][0]["n_baseline"], 3, "{out}");
    assert_eq!(r["rows"][0]["n_current"], 3, "{out}");

    // A "build" that does not speak the protocol is refused before anything runs.
    let out = vmbench(&t.0)
        .args([
            "bench",
            smoke,
            "--ab",
            "/bin/true",
            "--repetitions",
            "3",
            "--out",
            "old",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("does not speak the run-one protocol"),
        "{}",
        text(&out)
    );
    // A plain run is not an A/B run.
    let (code, _, out) = gate(&t.0, &["--ab", "old/results.json"]);
    assert_eq!(code, Some(2), "{out}");
}

/// What .github/workflows/perf.yml runs, run the same way: `--ab-rev` builds HEAD in a
/// temporary worktree (a full release build: the slowest test here).
#[test]
fn the_perf_workflow_script_runs_as_ci_runs_it() {
    let workflow = std::fs::read_to_string(root().join(".github/workflows/perf.yml")).unwrap();
    assert!(workflow.contains(".ci/perf-gate.sh"), "{workflow}");
    assert!(workflow.contains("GITHUB_STEP_SUMMARY"), "{workflow}");
    let t = TempDir::new("gate-perf-script");
    let target = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/ab-rev")
        .to_path_buf();
    let out = Command::new("bash")
        .arg(root().join(".ci/perf-gate.sh"))
        .arg("HEAD")
        .arg(root().join("scenarios/smoke.toml"))
        .arg(&t.0)
        .args([
            "--filter",
            "nic=virtio,workload=net-rr",
            "--repetitions",
            "3",
        ])
        .env("VMBENCH", env!("CARGO_BIN_EXE_vmbench"))
        .env(
            "VMBENCH_AB_TARGET_DIR",
            std::env::var_os("CARGO_TARGET_DIR")
                .map_or(target, |d| PathBuf::from(d).join("ab-rev")),
        )
        .current_dir(&t.0)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let summary = std::fs::read_to_string(t.path("summary.md")).unwrap();
    assert!(
        summary.contains("| `nic=virtio,workload=net-rr` | latency_p50_ns |"),
        "{summary}"
    );
    for f in [
        "junit.xml",
        "bencher.json",
        "benchmark-bigger.json",
        "benchmark-smaller.json",
    ] {
        assert!(t.path(f).exists(), "{f}");
    }
    let smaller: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.path("benchmark-smaller.json")).unwrap()).unwrap();
    assert!(smaller.as_array().unwrap().iter().any(|e| e["name"]
        .as_str()
        .is_some_and(|n| n.ends_with("latency_p50_ns"))));
    let bencher: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.path("bencher.json")).unwrap()).unwrap();
    let m = &bencher["nic=virtio,workload=net-rr"]["latency-p50-ns"];
    assert!(
        m["lower_value"].as_f64() <= m["value"].as_f64(),
        "{bencher}"
    );
    let doc = results::load(&t.path("run").join(RESULTS_FILE)).unwrap();
    assert!(doc.ab.and_then(|a| a.other_revision).is_some());
}

#[test]
fn a_run_from_the_emulated_host_is_not_gated() {
    let t = TempDir::new("gate-emulated");
    let real = root().join("reports/tests/data/smoke.json");
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&real).unwrap()).unwrap();
    doc["environment"]["kvm"]["emulated_host"] = serde_json::Value::Bool(true);
    std::fs::write(t.path("emulated.json"), serde_json::to_vec(&doc).unwrap()).unwrap();
    let real = real.to_str().unwrap();
    let (code, _, out) = gate(&t.0, &["--baseline", real, "--current", "emulated.json"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("emulated.json: measured inside the emulated AMD-V host")
            && out.contains("timings are not real"),
        "{out}"
    );
    // The same file as it was measured passes against itself.
    let (code, _, out) = gate(&t.0, &["--baseline", real, "--current", real]);
    assert_eq!(code, Some(0), "{out}");
}
