//! Scenario parsing, expansion, overrides and comparison pairing, asserting on the messages
//! users read. The shipped files in scenarios/ are checked too.

use std::path::Path;

use super::params::{CaseParams, Window, P, PARAMS};
use super::*;

fn parse(text: &str) -> Scenario {
    Scenario::parse("x.toml", text).unwrap_or_else(|e| panic!("{e}"))
}

fn err(text: &str) -> String {
    match Scenario::parse("x.toml", text) {
        Ok(s) => panic!("expected an error, got {} cases", s.cases.len()),
        Err(e) => e.to_string(),
    }
}

fn assert_has(haystack: &str, needle: &str) {
    assert!(
        haystack.contains(needle),
        "expected `{needle}` in:\n{haystack}"
    );
}

fn ids(s: &Scenario) -> Vec<&str> {
    s.cases.iter().map(|c| c.id.as_str()).collect()
}

fn scenarios_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

#[test]
fn every_shipped_scenario_parses_and_expands() {
    let expected = [
        ("blk.toml", 14),
        ("boot.toml", 10),
        ("calibrate.toml", 1),
        ("classic.toml", 24),
        ("engines.toml", 8),
        ("goals.toml", 20),
        ("net-tap.toml", 12),
        ("net.toml", 12),
        ("smoke.toml", 18),
    ];
    let mut files: Vec<_> = std::fs::read_dir(scenarios_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut seen = Vec::new();
    for path in &files {
        let s = Scenario::load(path).unwrap_or_else(|e| panic!("{e}"));
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        println!(
            "{file}: {} cases ({} excluded), {} comparison pairs",
            s.cases.len(),
            s.excluded,
            s.comparison_pairs().len()
        );
        assert!(s.warnings.is_empty(), "{file}: {:?}", s.warnings);
        for c in &s.cases {
            assert!(c.probe_exec().len() <= PROBE_EXEC_MAX, "{}", c.probe_exec());
        }
        if let Some((_, n)) = expected.iter().find(|(f, _)| *f == file) {
            assert_eq!(s.cases.len(), *n, "{file}");
        }
        seen.push(file);
    }
    for (f, _) in expected {
        assert!(seen.iter().any(|s| s == f), "scenarios/{f} is missing");
    }
}

#[test]
fn the_documented_example_is_valid() {
    let doc = std::fs::read_to_string(scenarios_dir().join("../docs/scenarios.md")).unwrap();
    let start = doc.find("```toml\n").unwrap() + "```toml\n".len();
    let example = &doc[start..start + doc[start..].find("```").unwrap()];
    let s = parse(example);
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    assert_eq!((s.cases.len(), s.excluded), (10, 2));
    assert_eq!(
        ids(&s)[0],
        "disk=ide,disk_format=raw,workload=blk-read,pattern=seq,block_size=1048576"
    );
    assert_eq!(
        ids(&s)[9],
        "disk=virtio,disk_format=qcow2,workload=blk-read,queue_depth=32"
    );
    assert_eq!(s.comparison_pairs().len(), 4 + 5);
}

#[test]
fn net_matrix_expands_in_file_order_with_stable_ids() {
    let s = Scenario::load(&scenarios_dir().join("net.toml")).unwrap();
    assert_eq!(s.cases.len(), 2 * 3 * 2);
    assert_eq!(ids(&s)[0], "nic=e1000,workload=net-tx,frame_size=64");
    assert_eq!(ids(&s)[1], "nic=e1000,workload=net-tx,frame_size=1500");
    assert_eq!(ids(&s)[11], "nic=virtio,workload=net-rr,frame_size=1500");
    let rr = s.case("nic=virtio,workload=net-rr,frame_size=64").unwrap();
    assert_eq!(rr.params.nic, Some(NicKind::Virtio));
    assert_eq!(rr.params.net_backend, NetBackendKind::Peer);
    assert_eq!(rr.params.workload, Workload::NetRr { frame_size: 64 });
    assert_eq!(
        rr.probe_exec(),
        "net-rr size=64 profile=linux warmup_ms=500 duration_ms=2000"
    );
    assert_eq!(rr.coord("nic"), Some("virtio"));
    assert_eq!(
        s.source.path,
        scenarios_dir().join("net.toml").display().to_string()
    );
    assert_eq!(s.source.sha256.len(), 64);
}

#[test]
fn table_entries_set_several_parameters_and_exclusions_drop_cases() {
    let s = Scenario::load(&scenarios_dir().join("blk.toml")).unwrap();
    assert_eq!((s.cases.len(), s.excluded), (14, 2));
    assert_eq!(
        ids(&s)[0],
        "disk=ide,disk_format=raw,workload=blk-read,pattern=seq,block_size=1048576,queue_depth=1"
    );
    assert!(!ids(&s)
        .iter()
        .any(|id| id.starts_with("disk=ide") && id.ends_with("queue_depth=32")));
    let qd32 = s
        .case("disk=virtio,disk_format=qcow2,workload=blk-read,pattern=rand,block_size=4096,queue_depth=32")
        .unwrap();
    assert_eq!(qd32.params.disk_format, DiskFormat::Qcow2);
    assert_eq!(
        qd32.probe_exec(),
        "blk-read pattern=rand bs=4096 qd=32 seed=1 profile=linux warmup_ms=500 duration_ms=2000"
    );
}

#[test]
fn a_scenario_without_matrix_is_one_case() {
    let s = parse("[workload]\nname = \"calibrate\"\niterations = 50\n");
    assert_eq!(ids(&s), ["workload=calibrate"]);
    assert_eq!(s.cases[0].probe_exec(), "calibrate n=50");
    assert_eq!(s.name, "x");
    let hello = parse("");
    assert_eq!(hello.cases[0].probe_exec(), "hello");
    assert_eq!(hello.cases[0].params.guest, Guest::Probe);
    assert_eq!(hello.run, RunSettings::default());
}

#[test]
fn unknown_keys_name_the_nearest_known_key() {
    let e = err("name = \"t\"\n\n[run]\nrepetiton = 3\n");
    assert_eq!(
        e,
        "unknown key `repetiton` at x.toml:4:1; did you mean `repetitions`?"
    );
    let e = err("[devices]\n  nicc = \"e1000\"\n");
    assert_eq!(e, "unknown key `nicc` at x.toml:2:3; did you mean `nic`?");
    let e = err("[matrx]\nnic = [\"e1000\"]\n");
    assert_eq!(
        e,
        "unknown key `matrx` at x.toml:1:2; did you mean `matrix`?"
    );
    let e = err("[run]\nbananas = 1\n");
    assert_has(
        &e,
        "unknown key `bananas` at x.toml:2:1; known keys here: `repetitions`",
    );
}

#[test]
fn misplaced_keys_say_where_they_belong() {
    assert_eq!(
        err("vcpus = 2\n"),
        "unknown key `vcpus` at x.toml:1:1; `vcpus` belongs in [vm]"
    );
    assert_eq!(
        err("[vm]\nrepetitions = 2\n"),
        "unknown key `repetitions` at x.toml:2:1; `repetitions` belongs in [run]"
    );
    assert_has(
        &err("workload = \"net-rr\"\n"),
        "set the workload with `name = \"...\"` in [workload]",
    );
    assert_has(
        &err("[devices]\nguest = \"linux\"\n"),
        "`guest` belongs at the top level",
    );
}

#[test]
fn wrong_types_are_reported_at_the_value() {
    assert_eq!(
        err("[vm]\nvcpus = \"two\"\n"),
        "`vm.vcpus` must be an integer, not a string at x.toml:2:9"
    );
    assert_eq!(
        err("[run]\nfresh_guest_per_repetition = 1\n"),
        "`run.fresh_guest_per_repetition` must be true or false, not an integer at x.toml:2:30"
    );
    assert_eq!(
        err("vm = 3\n"),
        "`vm` must be a table, not an integer at x.toml:1:6"
    );
    assert_eq!(
        err("[run]\nduration_secs = \"2s\"\n"),
        "`run.duration_secs` must be a number, not a string at x.toml:2:17"
    );
    assert_has(
        &err("[devices]\nnic = [\"e1000\", \"virtio\"]\n"),
        "`devices.nic` must be a single value at x.toml:2:7; to compare several values, list them in [matrix] as nic = [...]",
    );
}

#[test]
fn out_of_range_values_say_the_range() {
    assert_eq!(
        err("[vm]\nvcpus = 0\n"),
        "`vm.vcpus` = 0 is out of range at x.toml:2:9; use an integer from 1 to 32"
    );
    assert_eq!(
        err("[run]\nduration_secs = 0\n"),
        "`run.duration_secs` = 0 is out of range at x.toml:2:17; use a number from 0.001 up to 86400"
    );
    assert_eq!(
        err("[workload]\nblock_size = 1000\n"),
        "`workload.block_size` = 1000 is not a multiple of 512 at x.toml:2:14; use a multiple of 512, e.g. 1024"
    );
    assert_eq!(
        err("[devices]\nnic = \"virtoi\"\n"),
        "`devices.nic` = \"virtoi\" is not a known value at x.toml:2:7; did you mean \"virtio\"? (nic is one of \"e1000\", \"virtio\", \"none\")"
    );
    assert_has(
        &err("[matrix]\nframe_size = [64, 20000]\n"),
        "`matrix.frame_size` = 20000 is out of range at x.toml:2:19",
    );
}

#[test]
fn matrix_mistakes() {
    assert_eq!(
        err("[matrix]\nnics = [\"e1000\"]\n"),
        "unknown matrix axis `nics` at x.toml:2:1; did you mean `nic`? (an axis of tables may have any name)"
    );
    assert_has(
        &err("[matrix]\nnic = \"e1000\"\n"),
        "`matrix.nic` must be a list of values at x.toml:2:7",
    );
    assert_has(
        &err("[matrix]\nnic = []\n"),
        "matrix axis `nic` is empty at x.toml:2:7",
    );
    assert_has(
        &err("[matrix]\nnic = [\"e1000\", \"e1000\"]\n"),
        "duplicate value `e1000` in matrix axis `nic` at x.toml:2:17",
    );
    assert_has(
        &err("[matrix]\nx = [{ nic = \"e1000\" }]\ny = [{ nic = \"virtio\" }]\n"),
        "`nic` is set by two matrix axes, `x` and `y` at x.toml:3:14",
    );
    assert_has(
        &err("[matrix]\nx = [{ nick = \"e1000\" }]\n"),
        "unknown key `nick` at x.toml:2:8; did you mean `nic`?",
    );
}

#[test]
fn block_workload_without_disk_is_impossible() {
    let e = err("[workload]\nname = \"blk-read\"\n");
    assert_eq!(
        e,
        "workload `blk-read` needs a disk, but disk is \"none\" (case `workload=blk-read`) at x.toml:2:8; \
         set disk = \"ide\" or \"virtio\" in [devices] or the matrix, or drop such cases with an [[exclude]] entry"
    );
}

#[test]
fn net_workload_without_nic_is_reported_once_with_a_count() {
    let e = err("[matrix]\nnic = [\"none\", \"virtio\"]\nworkload = [\"net-rr\"]\nframe_size = [64, 1500]\n");
    assert_eq!(
        e,
        "workload `net-rr` needs a NIC, but nic is \"none\" (case `nic=none,workload=net-rr,frame_size=64`, and 1 more) at x.toml:3:13; \
         set nic = \"e1000\" or \"virtio\" in [devices] or the matrix, or drop such cases with an [[exclude]] entry"
    );
    // The same matrix with the impossible cases excluded is fine.
    let s = parse("[matrix]\nnic = [\"none\", \"virtio\"]\nworkload = [\"net-rr\"]\n[[exclude]]\nnic = \"none\"\n");
    assert_eq!(ids(&s), ["nic=virtio,workload=net-rr"]);
}

#[test]
fn tap_without_nic_is_an_error() {
    let e = err("[devices]\nnet_backend = \"tap\"\n");
    assert_eq!(
        e,
        "`net_backend` is set but applies to no case: it needs a NIC, but nic is \"none\" at x.toml:2:15; remove it"
    );
    let e = err("[matrix]\nnet_backend = [\"peer\", \"tap\"]\n");
    assert_has(&e, "`net_backend` = \"tap\" does not apply: it needs a NIC, but nic is \"none\" (case `net_backend=tap`) at x.toml:2:24");
}

#[test]
fn the_linux_guest_runs_on_both_engines() {
    // Whether this host can run it is the bench's check (vmbench's VMM needs guest kernel
    // code to run natively, or --host emulated), not the scenario's.
    let s = parse("guest = \"linux\"\n");
    assert_eq!(s.cases[0].params.engine, EngineKind::Vmbench);
    let s = parse("engine = \"qemu\"\n[matrix]\nguest = [\"probe\", \"linux\"]\nengine = [\"qemu\", \"vmbench\"]\n");
    assert_eq!(s.cases.len(), 4);
    let s = parse("guest = \"linux\"\nengine = \"qemu\"\n[vm]\nvcpus = 4\n");
    assert_eq!(
        (s.cases[0].params.vcpus, s.cases[0].probe_exec()),
        (4, "hello")
    );
}

#[test]
fn the_linux_agent_gets_every_parameter_or_a_refusal() {
    let linux = "guest = \"linux\"\nengine = \"qemu\"\n[run]\nwarmup_secs = 0.25\nduration_secs = 1.0\nseed = 7\n";
    let exec = |extra: &str| {
        parse(&format!("{linux}{extra}")).cases[0]
            .probe_exec()
            .to_string()
    };
    assert_eq!(
        exec("[devices]\nnic = \"virtio\"\n[workload]\nname = \"net-tx\"\nframe_size = 1514\n"),
        "net-tx size=1514 nic=virtio warmup_ms=250 duration_ms=1000"
    );
    assert_eq!(
        exec("[devices]\ndisk = \"ide\"\n[workload]\nname = \"blk-read\"\npattern = \"rand\"\nqueue_depth = 16\n"),
        "blk-read pattern=rand bs=4096 qd=16 seed=7 disk=ide warmup_ms=250 duration_ms=1000"
    );
    assert_eq!(
        exec("[devices]\nnic = \"e1000\"\n[workload]\nname = \"ping\"\n"),
        "ping count=5 nic=e1000"
    );
    // What the agent has no use for is refused, not dropped.
    let e = err(&format!(
        "{linux}[devices]\nnic = \"virtio\"\n[workload]\nname = \"net-tx\"\nbatch = 8\n"
    ));
    assert_has(
        &e,
        "`batch` is set but applies to no case: the Linux agent sends one datagram per system call",
    );
    let e = err(&format!("{linux}[devices]\nnic = \"virtio\"\n[workload]\nname = \"net-rr\"\nprofile = \"batched\"\n"));
    assert_has(&e, "the guest is not the probe");
    let e = err(&format!("{linux}[vm]\nmem_mib = 64\n"));
    assert_has(&e, "mem_mib = 64 is too small for guest \"linux\"");
}

#[test]
fn tcp_workloads_get_every_parameter_or_a_refusal() {
    let linux = "guest = \"linux\"\nengine = \"qemu\"\n[devices]\nnic = \"virtio\"\nnet_backend = \"tap\"\n";
    let exec = |run: &str, workload: &str| {
        parse(&format!("{linux}[run]\n{run}\n[workload]\n{workload}\n")).cases[0]
            .probe_exec()
            .to_string()
    };
    assert_eq!(
        exec(
            "warmup_secs = 0.25\nduration_secs = 1.5",
            "name = \"tcp-stream\""
        ),
        "tcp-stream direction=tx size=65536 nic=virtio warmup_ms=250 duration_ms=1500"
    );
    assert_eq!(
        exec(
            "warmup_secs = 0\nduration_secs = 1",
            "name = \"tcp-stream\"\ndirection = \"rx\"\nio_size = 1000"
        ),
        "tcp-stream direction=rx size=1000 nic=virtio warmup_ms=0 duration_ms=1000"
    );
    assert_eq!(
        exec(
            "warmup_secs = 1\nduration_secs = 3",
            "name = \"iperf3\"\ndirection = \"rx\"\nstreams = 4"
        ),
        "iperf3 direction=rx streams=4 nic=virtio warmup_ms=1000 duration_ms=3000"
    );
    // In a matrix, with e1000 too.
    let s = parse(&format!("{linux}[run]\nwarmup_secs = 1\n[workload]\nname = \"iperf3\"\n[matrix]\nnic = [\"e1000\", \"virtio\"]\ndirection = [\"tx\", \"rx\"]\n"));
    let execs: Vec<&str> = s.cases.iter().map(|c| c.probe_exec()).collect();
    assert_eq!(
        execs,
        [
            "iperf3 direction=tx streams=1 nic=e1000 warmup_ms=1000 duration_ms=2000",
            "iperf3 direction=rx streams=1 nic=e1000 warmup_ms=1000 duration_ms=2000",
            "iperf3 direction=tx streams=1 nic=virtio warmup_ms=1000 duration_ms=2000",
            "iperf3 direction=rx streams=1 nic=virtio warmup_ms=1000 duration_ms=2000",
        ]
    );

    // iperf3 counts whole seconds: refused at the setting, or at the workload for a default.
    let e = err(&format!(
        "{linux}[run]\nwarmup_secs = 1\nduration_secs = 2.5\n[workload]\nname = \"iperf3\"\n"
    ));
    assert_has(&e, "workload `iperf3` needs a whole number of seconds from 1 to 3600, but duration_secs = 2.5 (case `workload=iperf3`) at x.toml:8:17; iperf3 counts whole seconds");
    let e = err(&format!("{linux}[workload]\nname = \"iperf3\"\n"));
    assert_has(
        &e,
        "but warmup_secs = 0.5 (case `workload=iperf3`) at x.toml:7:8",
    );
    // ... and so is a --duration that is not.
    let mut s = parse(&format!(
        "{linux}[run]\nwarmup_secs = 1\n[workload]\nname = \"iperf3\"\n"
    ));
    let o = Overrides {
        duration_secs: Some(0.5),
        ..Overrides::default()
    };
    let e = s.apply(&o).unwrap_err().to_string();
    assert_has(
        &e,
        "--duration 0.5: workload `iperf3` needs a whole number of seconds",
    );

    // TCP needs the TAP's host side: the in-process peer speaks only UDP.
    let e = err("guest = \"linux\"\nengine = \"qemu\"\n[devices]\nnic = \"e1000\"\n[workload]\nname = \"tcp-stream\"\n");
    assert_eq!(e.lines().count(), 1, "{e}");
    assert_has(&e, "workload `tcp-stream` needs TCP on the host side, but net_backend is \"peer\", which speaks only UDP (case `workload=tcp-stream`) at x.toml:6:8; set net_backend = \"tap\"");
    let e = err("guest = \"linux\"\nengine = \"qemu\"\n[workload]\nname = \"tcp-stream\"\n");
    assert_has(&e, "workload `tcp-stream` needs a NIC, but nic is \"none\"");
    // Parameters of another workload are refused, not dropped.
    let e = err(&format!(
        "{linux}[workload]\nname = \"tcp-stream\"\nstreams = 2\nframe_size = 1514\n"
    ));
    assert_has(&e, "`streams` is set but applies to no case: it applies only to the iperf3 workloads, not `tcp-stream`");
    assert_has(&e, "`frame_size` is set but applies to no case: it applies only to the net-tx, net-rx and net-rr workloads, not `tcp-stream`");
    let e = err(&format!(
        "{linux}[run]\nwarmup_secs = 1\n[workload]\nname = \"iperf3\"\nio_size = 100\n"
    ));
    assert_has(&e, "`io_size` is set but applies to no case: it applies only to the tcp-stream workloads, not `iperf3`");
    let e = err(&format!(
        "{linux}[workload]\nname = \"net-tx\"\ndirection = \"rx\"\n"
    ));
    assert_has(&e, "`direction` is set but applies to no case: it applies only to the tcp-stream and iperf3 workloads, not `net-tx`");
    let e = err(&format!(
        "{linux}[workload]\nname = \"tcp-stream\"\ndirection = \"up\"\n"
    ));
    assert_has(&e, "\"up\"");
    assert_has(&e, "direction is one of \"tx\", \"rx\"");
    // The probe runs neither.
    let e = err(
        "[devices]\nnic = \"virtio\"\nnet_backend = \"tap\"\n[workload]\nname = \"tcp-stream\"\n",
    );
    assert_has(&e, "guest \"probe\" does not run workload `tcp-stream`");
    assert_has(&e, "it runs \"hello\", \"calibrate\", \"net-tx\"");
}

#[test]
fn a_workload_the_guest_does_not_run_is_refused_with_the_list() {
    let e = err("guest = \"linux\"\nengine = \"qemu\"\n[workload]\nname = \"calibrate\"\n");
    assert_eq!(e.lines().count(), 1, "{e}");
    assert_has(&e, "guest \"linux\" does not run workload `calibrate` (case `workload=calibrate`) at x.toml:4:8; it runs \"hello\", \"net-tx\", \"net-rx\", \"net-rr\", \"blk-read\", \"blk-write\", \"ping\", \"tcp-stream\" or \"iperf3\"");
    let e = err("[devices]\nnic = \"virtio\"\n[workload]\nname = \"ping\"\n");
    assert_has(&e, "guest \"probe\" does not run workload `ping`");
    let e = err("guest = \"linux\"\nengine = \"qemu\"\n[workload]\nname = \"tcp-strem\"\n");
    assert_has(&e, "`workload.name` = \"tcp-strem\" is not a known value at x.toml:4:8; did you mean \"tcp-stream\"? (the probe runs \"hello\", \"calibrate\"");
    assert_has(
        &e,
        "; the Linux agent (guest = \"linux\") runs \"hello\", \"net-tx\"",
    );
    for w in images::linux::AGENT_WORKLOADS {
        if let Some(k) = WorkloadKind::from_name(w) {
            assert!(k.runs_on(Guest::Linux), "{w}");
        }
    }
}

#[test]
fn ide_with_queue_depth_above_one_needs_an_exclusion() {
    let e = err(
        "[devices]\ndisk = \"ide\"\n[workload]\nname = \"blk-read\"\n[matrix]\nqueue_depth = [1, 32]\n",
    );
    assert_eq!(
        e,
        "IDE has one command in flight, so queue_depth 32 cannot run on disk \"ide\" (case `queue_depth=32`) at x.toml:6:19; \
         add [[exclude]] disk = \"ide\", queue_depth = 32 (or use queue_depth = 1)"
    );
}

#[test]
fn the_poll_profile_is_refused_for_the_emulated_devices() {
    let e = err(
        "[devices]\nnic = \"e1000\"\n[workload]\nname = \"net-rr\"\n[matrix]\nprofile = [\"linux\", \"poll\"]\n",
    );
    assert_eq!(
        e,
        "profile \"poll\" is virtio's (EVENT_IDX, no interrupts), and this case drives the e1000 (case `profile=poll`) at x.toml:6:21; \
         use profile = \"linux\" or \"batched\" for the e1000, or drop such cases with an [[exclude]] entry"
    );
    let e = err("[devices]\ndisk = \"ide\"\n[workload]\nname = \"blk-read\"\nprofile = \"poll\"\n");
    assert_has(&e, "this case drives the ide");
    let s = parse("[matrix]\ndevice = [{ nic = \"virtio\", workload = \"net-rr\" }, { disk = \"virtio\", workload = \"blk-read\" }]\nprofile = [\"poll\"]\n");
    assert_eq!(s.cases.len(), 2);
}

#[test]
fn parameters_that_do_not_apply_are_errors() {
    let e = err("[devices]\ndisk = \"virtio\"\n[workload]\nname = \"blk-read\"\n[matrix]\nframe_size = [64, 1500]\n");
    assert_has(
        &e,
        "`frame_size` = 64 does not apply: it applies only to the net-tx, net-rx and net-rr workloads, not `blk-read` (case `frame_size=64`) at x.toml:6:15",
    );
    let e = err("[workload]\nbatch = 8\n");
    assert_eq!(
        e,
        "`batch` is set but applies to no case: it applies only to the net-tx workloads, not `hello` at x.toml:2:9; remove it"
    );
}

#[test]
fn run_timeout_must_fit_the_window() {
    let e = err("[devices]\nnic = \"virtio\"\n[workload]\nname = \"net-tx\"\n[run]\nduration_secs = 30\nrun_timeout_secs = 20\n");
    assert_eq!(
        e,
        "run_timeout_secs = 20 is too short for warmup_secs + duration_secs = 30.5 (plus 1 s to set up and tear down) at x.toml:7:20; \
         raise [run] run_timeout_secs to at least 31.5"
    );
    // hello and calibrate run to completion and have no window.
    parse("[run]\nduration_secs = 30\nrun_timeout_secs = 20\n");
}

#[test]
fn comparison_mistakes() {
    let base = "[devices]\nnic = \"virtio\"\n[workload]\nname = \"net-rr\"\n[matrix]\nframe_size = [64, 1500]\n";
    assert_eq!(
        err(&format!("{base}[[compare]]\naxis = \"frame_sizes\"\nbaseline = \"64\"\n")),
        "comparison on `frame_sizes`, which is not a matrix axis at x.toml:8:8; did you mean `frame_size`?"
    );
    assert_eq!(
        err(&format!(
            "{base}[[compare]]\naxis = \"frame_size\"\nbaseline = 65\n"
        )),
        "baseline \"65\" is not a value of axis `frame_size` at x.toml:9:12; did you mean \"64\"?"
    );
    assert_has(
        &err(&format!("{base}[[compare]]\nbaseline = 64\n")),
        "comparison without `axis` at x.toml:7:1",
    );
    assert_has(
        &err("[matrix]\nx = [{ vcpus = 1 }, { vcpus = 2 }]\n[[compare]]\naxis = \"x\"\nbaseline = \"vcpus=1\"\n"),
        "cannot compare along `x`: its values are tables at x.toml:4:8",
    );
}

#[test]
fn syntax_errors_and_several_problems_at_once() {
    let e = err("[vm]\nvcpus = = 1\n");
    assert!(e.starts_with("invalid TOML: "), "{e}");
    assert_has(&e, " at x.toml:2:");
    let e =
        Scenario::parse("x.toml", "[vm]\nvcpus = 0\nmem_mib = 1\n[run]\nseeds = 3\n").unwrap_err();
    assert_eq!(e.diagnostics().len(), 3, "{e}");
}

#[test]
fn a_fixed_value_the_matrix_always_overrides_is_a_warning() {
    let s = parse("[devices]\nnic = \"virtio\"\n[matrix]\nnic = [\"e1000\", \"none\"]\n");
    assert_eq!(s.cases.len(), 2);
    assert_eq!(
        s.warnings,
        ["`nic` at x.toml:2:7 has no effect: the matrix sets it in every case"]
    );
}

#[test]
fn exclusions_are_checked_and_reported() {
    let s = parse("[matrix]\nvcpus = [1, 2]\n[[exclude]]\nvcpus = 3\n");
    assert_eq!(s.cases.len(), 2);
    assert_eq!(
        s.warnings,
        ["the [[exclude]] entry at x.toml:4:1 matches no case"]
    );
    assert_has(
        &err("[matrix]\nvcpus = [1, 2]\n[[exclude]]\nvcpu = 1\n"),
        "unknown key `vcpu` at x.toml:4:1; did you mean `vcpus`?",
    );
    assert_has(
        &err("[matrix]\nvcpus = [1, 2]\n[[exclude]]\nvcpus = [1, 2]\n"),
        "every combination of the matrix is excluded at x.toml:4:1",
    );
}

#[test]
fn overrides_change_repetitions_duration_and_cases() {
    let mut s = Scenario::load(&scenarios_dir().join("net.toml")).unwrap();
    s.apply(&Overrides {
        repetitions: Some(2),
        duration_secs: Some(0.25),
        filter: Some("virtio".into()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(s.run.repetitions, 2);
    assert_eq!(s.cases.len(), 6);
    assert_eq!(s.expanded_cases, 12);
    assert!(s.cases.iter().all(|c| c.id.starts_with("nic=virtio")));
    assert_eq!(s.cases[0].index, 6, "indices refer to the full expansion");
    assert_eq!(
        s.cases[0].probe_exec(),
        "net-tx size=64 batch=1 profile=linux warmup_ms=500 duration_ms=250"
    );
    assert_eq!(s.overrides.repetitions, Some(2));
}

#[test]
fn filters_are_substrings_globs_or_alternatives() {
    let s = Scenario::load(&scenarios_dir().join("net.toml")).unwrap();
    let kept = |f: &str| {
        let mut s = s.clone();
        s.apply(&Overrides {
            filter: Some(f.into()),
            ..Default::default()
        })
        .unwrap();
        ids(&s).into_iter().map(String::from).collect::<Vec<_>>()
    };
    assert_eq!(kept("frame_size=1500").len(), 6);
    assert_eq!(
        kept("nic=e1000,*,frame_size=64"),
        [
            "nic=e1000,workload=net-tx,frame_size=64",
            "nic=e1000,workload=net-rx,frame_size=64",
            "nic=e1000,workload=net-rr,frame_size=64",
        ]
    );
    assert_eq!(kept("*net-r?,frame_size=64").len(), 4);
    assert_eq!(kept("net-tx|net-rx").len(), 8);
    let mut t = s.clone();
    let e = t
        .apply(&Overrides {
            filter: Some("ide".into()),
            ..Default::default()
        })
        .unwrap_err();
    assert_has(&e.to_string(), "--filter 'ide' matches none of the 12 cases; ids look like: nic=e1000,workload=net-tx,frame_size=64;");
}

#[test]
fn bad_overrides_are_refused() {
    let mut s = Scenario::load(&scenarios_dir().join("net.toml")).unwrap();
    let e = s
        .apply(&Overrides {
            repetitions: Some(0),
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "--repetitions 0 is out of range; use 1 to 100000"
    );
    let e = s
        .apply(&Overrides {
            duration_secs: Some(100.0),
            ..Default::default()
        })
        .unwrap_err();
    assert_has(
        &e.to_string(),
        "--duration 100 does not fit in run_timeout_secs = 30 of ",
    );
    let e = s
        .apply(&Overrides {
            duration_secs: Some(f64::NAN),
            ..Default::default()
        })
        .unwrap_err();
    assert_has(
        &e.to_string(),
        "--duration NaN is out of range; use 0.001 to 86400 seconds",
    );
    assert_eq!(s.run.repetitions, 5, "a refused override changes nothing");
}

#[test]
fn comparisons_pair_cases_that_differ_only_on_the_axis() {
    let s = Scenario::load(&scenarios_dir().join("net.toml")).unwrap();
    let pairs = s.comparison_pairs();
    assert_eq!(pairs.len(), 6);
    let p = pairs
        .iter()
        .find(|p| p.case == "nic=virtio,workload=net-rr,frame_size=64")
        .unwrap();
    assert_eq!(p.baseline_case, "nic=e1000,workload=net-rr,frame_size=64");
    assert_eq!((p.axis.as_str(), p.baseline.as_str()), ("nic", "e1000"));

    let blk = Scenario::load(&scenarios_dir().join("blk.toml")).unwrap();
    let pairs = blk.comparison_pairs();
    // disk: 3 workloads x 2 formats (queue depth 32 has no IDE baseline); format: 7 per format pair.
    assert_eq!(pairs.iter().filter(|p| p.axis == "disk").count(), 6);
    assert_eq!(pairs.iter().filter(|p| p.axis == "disk_format").count(), 7);

    // Filtering away a baseline drops its pairs.
    let mut only_virtio = s.clone();
    only_virtio
        .apply(&Overrides {
            filter: Some("virtio".into()),
            ..Default::default()
        })
        .unwrap();
    assert!(only_virtio.comparison_pairs().is_empty());

    let boot = Scenario::load(&scenarios_dir().join("boot.toml")).unwrap();
    let p = boot.comparison_pairs();
    assert!(p
        .iter()
        .any(|p| p.case == "vcpus=2,nic=none,disk=ide"
            && p.baseline_case == "vcpus=1,nic=none,disk=ide"));
}

#[test]
fn the_schedule_interleaves_repetitions_and_rotates() {
    let mut s = parse("[matrix]\nvcpus = [1, 2, 3]\n");
    s.run.repetitions = 2;
    let order: Vec<(u32, usize)> = s
        .schedule()
        .iter()
        .map(|x| (x.repetition, x.case))
        .collect();
    assert_eq!(order, [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (1, 0)]);
    let extra: Vec<usize> = s.round(2).iter().map(|x| x.case).collect();
    assert_eq!(extra, [2, 0, 1]);
    assert_eq!(s.run.limits().run, std::time::Duration::from_secs(60));
    assert_eq!(s.run.bootstrap().seed, 1);
}

#[test]
fn globs() {
    assert!(matches_filter("a*c", "abbbc"));
    assert!(matches_filter("*", ""));
    assert!(!matches_filter("a*c", "abbbd"));
    assert!(matches_filter("a?c", "abc"));
    assert!(!matches_filter("a?c", "ac"));
    assert!(matches_filter("*x*y*", "0x1y2"));
    assert!(matches_filter("b", "abc"), "no wildcard means substring");
}

#[test]
fn a_scenario_round_trips_through_json() {
    let s = Scenario::load(&scenarios_dir().join("blk.toml")).unwrap();
    let json = serde_json::to_string(&s).unwrap();
    let back: Scenario = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
    assert_has(
        &json,
        "\"probe_exec\":\"blk-read pattern=seq bs=1048576 qd=1 profile=linux",
    );
    assert_has(
        &json,
        "\"workload\":{\"name\":\"blk-read\",\"pattern\":\"seq\"",
    );
}

#[test]
fn the_parameter_table_is_indexed_by_p() {
    for (i, (p, spec)) in PARAMS.iter().enumerate() {
        assert_eq!(*p as usize, i, "{}", spec.name);
        assert_eq!(P::by_name(spec.name), Some(*p));
    }
}

#[test]
fn the_longest_probe_exec_fits_the_boot_information() {
    let c = CaseParams {
        guest: Guest::Probe,
        engine: EngineKind::Vmbench,
        vcpus: 64,
        mem_mib: 65536,
        nic: None,
        net_backend: NetBackendKind::Peer,
        disk: Some(DiskKind::Virtio),
        disk_format: DiskFormat::Qcow2,
        disk_size_mib: 1 << 20,
        profile: Profile::Batched,
        workload: Workload::BlkWrite(BlockIo {
            pattern: Pattern::Rand,
            block_size: 4 << 20,
            queue_depth: 128,
        }),
    };
    let w = Window {
        warmup_ms: 86_400_000,
        duration_ms: 86_400_000,
        seed: i64::MAX as u64,
    };
    let exec = c.probe_exec(w);
    assert!(exec.len() <= PROBE_EXEC_MAX, "{} bytes: {exec}", exec.len());
}

#[test]
fn qemu_with_more_than_one_vcpu_is_refused() {
    // QEMU's PVH entry starts only the boot vCPU: the probe would report one.
    let e = err("engine = \"qemu\"\n[vm]\nvcpus = 2\n");
    assert_eq!(
        e,
        "engine \"qemu\" runs the probe on one vCPU, so vcpus = 2 cannot run there \
         (case `workload=hello`) at x.toml:3:9; use vcpus = 1 with engine = \"qemu\", \
         or drop such cases with an [[exclude]] entry"
    );
}

// Issue 15: ids, limits and overrides that used to be accepted.

#[test]
fn two_matrix_values_spelling_one_case_id_are_refused_naming_both() {
    let e = err("[matrix]\nworkload = [{ workload = \"hello\" }, \"hello\"]\n");

    assert_has(
        &e,
        "case id `workload=hello` comes from two values of matrix axis `workload`",
    );
    assert_has(&e, "x.toml:2:37");
    assert_has(&e, "the one at x.toml:2:13");
}

#[test]
fn vm_shape_limits_are_the_vmms() {
    let max_vcpus = vmm::boot::MAX_VCPUS;
    let max_mem = vmm::boot::MAX_MEM_MIB;

    parse(&format!("[vm]\nvcpus = {max_vcpus}\nmem_mib = {max_mem}\n"));
    let e = err(&format!(
        "[vm]\nvcpus = {}\nmem_mib = {}\n",
        max_vcpus + 1,
        max_mem + 1
    ));

    assert_has(
        &e,
        &format!("`vm.vcpus` = {} is out of range", max_vcpus + 1),
    );
    assert_has(&e, &format!("use an integer from 1 to {max_vcpus}"));
    assert_has(
        &e,
        &format!("`vm.mem_mib` = {} is out of range", max_mem + 1),
    );
}

#[test]
fn the_probes_argument_limits_bound_the_scenario() {
    let max = probe_abi::limits::NET_TX_BATCH_MAX;
    let e = err(&format!(
        "[devices]\nnic = \"virtio\"\n[workload]\nname = \"net-tx\"\nbatch = {}\n",
        max + 1
    ));
    let zero = err("[devices]\nnic = \"virtio\"\n[workload]\nname = \"net-tx\"\nbatch = 0\n");

    assert_has(&e, &format!("use an integer from 1 to {max}"));
    assert_has(&zero, "`workload.batch` = 0 is out of range");
}

#[test]
fn a_window_under_a_millisecond_is_refused_in_the_file_and_on_the_command_line() {
    let windowed = "[devices]\nnic = \"virtio\"\n[workload]\nname = \"net-rr\"\n";
    let e = err(&format!("{windowed}[run]\nduration_secs = 0.0004\n"));
    let mut s = parse(windowed);

    assert_has(&e, "`run.duration_secs` = 0.0004 is out of range");
    let o = s.apply(&Overrides {
        duration_secs: Some(0.0004),
        ..Default::default()
    });
    assert_has(
        &o.unwrap_err().to_string(),
        "--duration 0.0004 is out of range",
    );
    s.apply(&Overrides {
        duration_secs: Some(MIN_DURATION_SECS),
        ..Default::default()
    })
    .unwrap();
    assert_has(s.cases[0].probe_exec(), "duration_ms=1");
}

#[test]
fn repetitions_above_the_scenario_maximum_are_refused() {
    let mut s = parse("");
    let e = s.apply(&Overrides {
        repetitions: Some(MAX_REPETITIONS + 1),
        ..Default::default()
    });

    assert_has(
        &e.unwrap_err().to_string(),
        &format!("use 1 to {MAX_REPETITIONS}"),
    );
    assert_has(
        &err(&format!("[run]\nrepetitions = {}\n", MAX_REPETITIONS + 1)),
        "`run.repetitions`",
    );
}

#[test]
fn a_filter_with_an_empty_alternative_is_refused() {
    for f in ["|", "nic=e1000|", "|nic=e1000", "a||b"] {
        let mut s = parse("[matrix]\nnic = [\"e1000\", \"virtio\"]\n");
        let e = s.apply(&Overrides {
            filter: Some(f.into()),
            ..Default::default()
        });
        assert_has(&e.unwrap_err().to_string(), "has an empty alternative");
    }
}

#[test]
fn a_matrix_too_large_is_refused_before_it_is_expanded() {
    let axis = |name: &str, from: u32, n: u32| {
        let v: Vec<String> = (from..from + n).map(|i| i.to_string()).collect();
        format!("{name} = [{}]\n", v.join(", "))
    };
    let text = format!(
        "[matrix]\n{}{}{}{}{}",
        axis("vcpus", 1, 32),
        axis("mem_mib", 32, 100),
        axis("disk_size_mib", 1, 100),
        axis("iterations", 1, 100),
        axis("frame_size", 60, 100)
    );

    // 3.2e9 combinations: refused from the axis lengths (expanding them would not finish).
    let e = err(&text);

    assert_has(&e, "the matrix has more than 100000 combinations");
}
