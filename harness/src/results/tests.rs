//! The results store: round trips, atomic rewrites seen by a concurrent reader, a writer
//! process killed between cases, schema version checks, statistics and comparisons.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::environment::{parse_cpuinfo, parse_meminfo_mib};
use super::*;
use crate::scenario::Scenario;

const SCENARIO: &str = r#"
[workload]
name = "net-rr"
[matrix]
nic = ["e1000", "virtio"]
frame_size = [64, 1500]
[[compare]]
axis = "nic"
baseline = "e1000"
"#;

/// Environment variable that turns `crash_child` into the process the crash test kills.
const CRASH_DIR_VAR: &str = "VMBENCH_TEST_CRASH_DIR";

/// The gate's synthetic host, with one capability so capabilities round-trip too.
fn environment() -> Environment {
    let mut e = crate::gate::synthetic::environment();
    e.kvm.capabilities = BTreeMap::from([("Irqfd".to_string(), true)]);
    e
}

fn doc() -> RunResults {
    let scenario = Scenario::parse("scenarios/t.toml", SCENARIO).unwrap();
    RunResults::new("20260101T000000Z".into(), environment(), scenario)
}

/// A repetition whose figures scale with `k`.
fn repetition(index: u32, k: f64) -> Repetition {
    let exits = vmm::exits::VcpuExits {
        by_reason: BTreeMap::from([
            ("mmio_write".to_string(), 300),
            ("pio_out".to_string(), 100),
        ]),
        by_device: BTreeMap::from([("virtio-net".to_string(), 400)]),
    };
    Repetition {
        index,
        samples: BTreeMap::from([(
            "latency_ns".to_string(),
            vec![1000.0 * k, 1100.0 * k, 990.0 * k],
        )]),
        metrics: BTreeMap::from([
            ("ops_per_sec".to_string(), 1e6 / k),
            ("latency_ns_p50".to_string(), 1000.0 * k),
        ]),
        exits: Exits::from_counts(&exits, 200),
        cpu: CpuTime {
            user_s: 0.5,
            sys_s: 0.25,
        },
        boot: BootTimeline {
            setup_ms: Some(3.0),
            first_instruction_ms: Some(0.5),
            ready_ms: Some(1.5),
            total_ms: Some(5.0),
            ..Default::default()
        },
        wall_secs: 2.5,
        accel: Some("kvm".into()),
        ..Default::default()
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmbench-results-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn a_run_round_trips_through_the_file() {
    let dir = temp_dir("roundtrip");
    let mut w = ResultsWriter::create(&dir, doc()).unwrap();
    let ids: Vec<String> = w.results().cases.iter().map(|c| c.id.clone()).collect();
    for (i, id) in ids.iter().enumerate() {
        for rep in 0..3 {
            w.add_repetition(id, repetition(rep, 1.0 + i as f64 + 0.01 * f64::from(rep)))
                .unwrap();
        }
        w.finish_case(id, &BootstrapOptions::default()).unwrap();
    }
    w.set_calibration(Calibration {
        figures: BTreeMap::from([("pio_exit_ns".to_string(), 61_234.0)]),
        probe_exec: "calibrate n=1000".into(),
    })
    .unwrap();
    w.set_images(vec![serde_json::json!({ "name": "probe", "sha256": "ab" })])
        .unwrap();
    let path = w.path().to_path_buf();
    let done = w.finish().unwrap();

    let back = load(&path).unwrap();
    assert_eq!(back, done);
    assert!(back.finished && back.interrupted.is_none());
    assert_eq!(back.schema_version, SCHEMA_VERSION);
    assert_eq!(back.scenario.source.path, "scenarios/t.toml");
    assert_eq!(back.cases.len(), 4);
    let c = &back.cases[0];
    assert_eq!(c.status, CaseStatus::Ok);
    assert_eq!(c.repetitions.len(), 3);
    assert_eq!(
        c.repetitions[0].samples["latency_ns"],
        [1000.0, 1100.0, 990.0]
    );
    assert_eq!(c.repetitions[0].exits.per_op["total"], 2.0);
    assert_eq!(c.repetitions[0].exits.per_op["device:virtio-net"], 2.0);
    assert_eq!(c.stats["latency_ns_p50"].n, 3);
    assert_eq!(c.stats["latency_ns_p50"].median, 1010.0);
    assert_eq!(
        c.probe_exec,
        "net-rr size=64 profile=linux warmup_ms=500 duration_ms=2000"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn comparisons_are_ratios_of_medians_over_repetitions() {
    let mut d = doc();
    let pairs = d.scenario.comparison_pairs();
    assert_eq!(pairs.len(), 2);
    for case in &mut d.cases {
        // virtio twice as fast as e1000.
        let k = if case.id.starts_with("nic=virtio") {
            0.5
        } else {
            1.0
        };
        case.repetitions = (0..5)
            .map(|i| repetition(i, k * (1.0 + 0.01 * f64::from(i))))
            .collect();
        case.status = CaseStatus::Ok;
    }
    let cmp = d.compare(&pairs, &BootstrapOptions::default());
    assert_eq!(cmp.len(), 4, "2 pairs x 2 metrics");
    let ops = cmp
        .iter()
        .find(|c| c.case == "nic=virtio,frame_size=64" && c.metric == "ops_per_sec")
        .unwrap();
    assert_eq!(ops.baseline_case, "nic=e1000,frame_size=64");
    assert!((ops.ratio.ratio - 2.0).abs() < 1e-9, "{:?}", ops.ratio);
    assert!(ops.ratio.significant);

    // A failed case has no comparison.
    d.cases[0].status = CaseStatus::Failed {
        reason: "hung".into(),
        console_tail: vec![],
    };
    assert_eq!(d.compare(&pairs, &BootstrapOptions::default()).len(), 2);
}

#[test]
fn non_finite_figures_are_dropped_visibly() {
    let dir = temp_dir("nonfinite");
    let mut w = ResultsWriter::create(&dir, doc()).unwrap();
    let mut rep = repetition(0, 1.0);
    rep.metrics.insert("broken".into(), f64::NAN);
    rep.samples
        .get_mut("latency_ns")
        .unwrap()
        .push(f64::INFINITY);
    w.add_repetition("nic=e1000,frame_size=64", rep).unwrap();
    let back = load(w.path()).unwrap();
    let m = &back.cases[0].repetitions[0].metrics;
    assert_eq!(m.get("dropped_non_finite"), Some(&2.0));
    assert!(!m.contains_key("broken"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn unknown_cases_are_errors() {
    let dir = temp_dir("unknown");
    let mut w = ResultsWriter::create(&dir, doc()).unwrap();
    let e = w
        .add_repetition("nic=ne2000", repetition(0, 1.0))
        .unwrap_err();
    assert_eq!(e.to_string(), "no case `nic=ne2000` in this run");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_concurrent_reader_never_sees_a_partial_file() {
    let dir = temp_dir("atomic");
    let mut w = ResultsWriter::create(&dir, doc()).unwrap();
    let path = w.path().to_path_buf();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (path, stop) = (path.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                load(&path).unwrap_or_else(|e| panic!("read {reads}: {e}"));
                reads += 1;
            }
            reads
        })
    };
    for i in 0..80 {
        // Growing documents: a torn write would show as truncated JSON.
        w.add_repetition("nic=virtio,frame_size=1500", repetition(i, 1.0))
            .unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.join().unwrap();
    assert!(reads > 0);
    assert_eq!(load(&path).unwrap().cases[3].repetitions.len(), 80);
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, [RESULTS_FILE], "no temporary files left behind");
    let _ = std::fs::remove_dir_all(dir);
}

/// Not a test on its own: with `VMBENCH_TEST_CRASH_DIR` set, this is the run that the crash
/// test kills. It finishes two cases, says so on stdout, and waits to be killed in the middle
/// of the third.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CRASH_DIR_VAR) else {
        return;
    };
    let mut w = ResultsWriter::create(Path::new(&dir), doc()).unwrap();
    let ids: Vec<String> = w.results().cases.iter().map(|c| c.id.clone()).collect();
    for id in &ids[..2] {
        w.add_repetition(id, repetition(0, 1.0)).unwrap();
        w.add_repetition(id, repetition(1, 1.1)).unwrap();
        w.finish_case(id, &BootstrapOptions::default()).unwrap();
    }
    w.add_repetition(&ids[2], repetition(0, 1.0)).unwrap();
    println!("two cases written");
    std::thread::sleep(std::time::Duration::from_secs(120));
    std::process::abort();
}

#[test]
fn a_killed_run_keeps_its_finished_cases() {
    let dir = temp_dir("crash");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "results::tests::crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_DIR_VAR, &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let said = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("two cases written"));
    // SIGKILL: no destructor, no handler, exactly like a crash or `kill -9`.
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(said, "the child never reported its progress");

    let r = load(&dir.join(RESULTS_FILE)).unwrap();
    assert!(!r.finished);
    assert_eq!(r.interrupted, None, "a killed run cannot say why");
    let states: Vec<&CaseStatus> = r.cases.iter().map(|c| &c.status).collect();
    assert_eq!(
        states,
        [
            &CaseStatus::Ok,
            &CaseStatus::Ok,
            &CaseStatus::Pending,
            &CaseStatus::Pending
        ]
    );
    assert_eq!(r.cases[0].repetitions.len(), 2);
    assert_eq!(r.cases[0].stats["ops_per_sec"].n, 2);
    assert_eq!(
        r.cases[2].repetitions.len(),
        1,
        "the case in flight keeps its finished repetition"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_interrupted_run_says_why() {
    let dir = temp_dir("interrupt");
    let mut w = ResultsWriter::create(&dir, doc()).unwrap();
    w.add_repetition("nic=e1000,frame_size=64", repetition(0, 1.0))
        .unwrap();
    w.add_repetition("nic=e1000,frame_size=64", repetition(1, 3.0))
        .unwrap();
    w.interrupt(
        "interrupted by Ctrl-C (SIGINT)",
        &BootstrapOptions::default(),
    )
    .unwrap();
    let r = load(w.path()).unwrap();
    assert!(!r.finished);
    assert_eq!(
        r.interrupted.as_deref(),
        Some("interrupted by Ctrl-C (SIGINT)")
    );
    // The case cut short stays pending, with the statistics of what it finished; the one
    // that never ran has none.
    let cut = r
        .cases
        .iter()
        .find(|c| c.id == "nic=e1000,frame_size=64")
        .unwrap();
    assert_eq!(cut.status, CaseStatus::Pending);
    let s = cut
        .stats
        .values()
        .next()
        .expect("statistics of the finished repetitions");
    assert_eq!(s.n, 2);
    assert!(r
        .cases
        .iter()
        .any(|c| c.repetitions.is_empty() && c.stats.is_empty()));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn other_schema_versions_are_refused_clearly() {
    let dir = temp_dir("schema");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("results.json");
    let mut v = serde_json::to_value(doc()).unwrap();
    v["schema_version"] = serde_json::json!(2);
    std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    let e = load(&path).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{} has schema_version 2, but this vmbench reads version 1; use the vmbench that wrote it (its revision is in environment.vmbench)",
            path.display()
        )
    );

    std::fs::write(&path, br#"{"hello": 1}"#).unwrap();
    let e = load(&path).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{} is not a vmbench results file: it has no schema_version",
            path.display()
        )
    );

    std::fs::write(&path, br#"{"schema_version": 1, "run_id": 3}"#).unwrap();
    let e = load(&path).unwrap_err().to_string();
    assert_eq!(
        e,
        format!("{} does not match results schema version 1", path.display())
    );

    std::fs::write(&path, b"{\"schema_version\": 1, ").unwrap();
    assert_eq!(
        load(&path).unwrap_err().to_string(),
        format!("{} is not valid JSON", path.display())
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn run_directories_are_never_reused() {
    let base = temp_dir("rundirs");
    let (a, id_a) = create_run_dir(&base, "20260101T000000Z").unwrap();
    let (b, id_b) = create_run_dir(&base, "20260101T000000Z").unwrap();
    assert_eq!(id_a, "20260101T000000Z");
    assert_eq!(id_b, "20260101T000000Z-2");
    assert!(a.is_dir() && b.is_dir() && a != b);
    let _ = std::fs::remove_dir_all(base);
}

#[test]
fn cpuinfo_and_meminfo_parse() {
    let cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC 9B14\nflags\t\t: fpu\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 9B14\n";
    assert_eq!(parse_cpuinfo(cpuinfo), ("AMD EPYC 9B14".to_string(), 2));
    assert_eq!(parse_cpuinfo(""), ("unknown".to_string(), 0));
    assert_eq!(
        parse_meminfo_mib("MemTotal:       24576000 kB\nMemFree: 1 kB\n"),
        Some(24_000)
    );
    assert_eq!(parse_meminfo_mib("MemFree: 1 kB\n"), None);
}

#[test]
fn this_hosts_environment_is_collected() {
    let env = collect_environment(None);
    assert!(env.host.cores > 0);
    assert!(env.host.memory_mib > 0);
    assert_ne!(env.host.kernel_release, "unknown");
    assert!(!env.vmbench.version.is_empty());
    if env.kvm.error.is_none() {
        assert_eq!(env.kvm.api_version, Some(12));
        assert_eq!(env.kvm.capabilities.get("Ioeventfd"), Some(&true));
    }
    // The whole environment survives JSON.
    let back: Environment = serde_json::from_str(&serde_json::to_string(&env).unwrap()).unwrap();
    assert_eq!(back, env);
}

#[test]
fn register_counts_come_from_the_devices_read_and_write_counters() {
    let devices = vmm::counters::DeviceCounters::from([
        (
            "e1000".to_string(),
            BTreeMap::from([
                ("read:ICR".to_string(), 100),
                ("write:TDT".to_string(), 200),
                ("write:RDT".to_string(), 0),
                ("tx_frames".to_string(), 200),
            ]),
        ),
        (
            "ide".to_string(),
            BTreeMap::from([("read:status".to_string(), 50)]),
        ),
    ]);
    let exits =
        Exits::from_counts(&vmm::exits::VcpuExits::default(), 100).with_registers(&devices, 100);
    assert_eq!(
        exits.by_register,
        BTreeMap::from([
            ("e1000 read:ICR".to_string(), 100),
            ("e1000 write:TDT".to_string(), 200),
            ("ide read:status".to_string(), 50),
        ])
    );
    assert_eq!(exits.per_op["register:e1000 write:TDT"], 2.0);
    assert_eq!(exits.per_op["register:ide read:status"], 0.5);
    assert!(!exits.per_op.contains_key("register:e1000 write:RDT"));
}
