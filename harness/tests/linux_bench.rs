//! `guest = "linux"` on `engine = "qemu"`, from scenario text to a booted Debian kernel and
//! back: every scenario parameter reaches the agent (vCPUs and memory in its `info` record,
//! the workload's parameters echoed in its `result`, the NIC's and disk's Linux drivers, the
//! disk image on the host), the boot timeline and the accelerator are recorded, a guest that
//! panics fails with its console tail, and `vmbench bench` shows the timeline. Each guest boots
//! in ~10-15 s of TCG on this host; the image is built once (or reused from the cache).

mod support;
use support::*;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use vmbench::engine::{self, create_image, GuestImages, GuestSpec, LinuxImage};
use vmbench::record::Record;
use vmbench::scenario::{Case, Scenario, Workload};
use vmbench::session::{Ending, Limits, Outcome};
use vmm::kinds::{DiskFormat, DiskKind, NicKind};

fn linux() -> &'static LinuxImage {
    static IMAGE: OnceLock<LinuxImage> = OnceLock::new();
    IMAGE.get_or_init(|| {
        LinuxImage::from_manifest(support::linux_image())
            .expect("the manifest has vmlinux and the initramfs")
    })
}

fn limits() -> Limits {
    Limits {
        ready: Duration::from_secs(180),
        run: Duration::from_secs(60),
    }
}

fn run_spec(spec: &GuestSpec) -> Outcome {
    engine::for_kind(vmbench::scenario::EngineKind::Qemu)
        .run(spec, &limits(), &mut |_| {})
        .unwrap_or_else(|e| panic!("{}", engine::chain(&e)))
}

fn record<'a>(out: &'a Outcome, kind: &'a str) -> &'a Record {
    out.records_of(kind)
        .map(|t| &t.record)
        .next()
        .unwrap_or_else(|| panic!("no {kind} record in {:?}", out.records))
}

/// Boots a case the way `bench` does, with a fresh image for its disk.
fn run_case(dir: &TempDir, case: &Case) -> (Outcome, Option<PathBuf>) {
    let p = &case.params;
    let image = p.disk.map(|_| {
        create_image(
            &dir.0,
            &case.index.to_string(),
            p.disk_format,
            p.disk_size_mib,
        )
        .unwrap()
    });
    let images = GuestImages {
        probe: probe(),
        linux: Some(linux().clone()),
    };
    let spec = GuestSpec::for_case(case, &images, image.clone())
        .unwrap_or_else(|e| panic!("{}: {}", case.id, engine::chain(&e)));
    let out = run_spec(&spec);
    assert!(
        matches!(out.ending, Ending::Exited { code: 0 }),
        "{}: {:?}: {:?}; console: {:?}",
        case.id,
        out.failure(),
        out.records
            .iter()
            .map(|t| t.record.to_string())
            .collect::<Vec<_>>(),
        out.console_tail
    );
    (out, image)
}

#[test]
fn a_linux_guest_reports_every_parameter_of_its_case() {
    let dir = TempDir::new("linux-bench-params");
    let s = Scenario::parse(
        "linux.toml",
        r#"
guest = "linux"
engine = "qemu"
[run]
warmup_secs = 0.5
duration_secs = 1.0
[matrix]
case = [
  { vcpus = 2, mem_mib = 384, nic = "virtio", workload = "net-rr", frame_size = 128 },
  { vcpus = 1, mem_mib = 256, disk = "ide", disk_format = "qcow2", disk_size_mib = 32, workload = "blk-read", pattern = "rand", block_size = 8192, queue_depth = 4 },
  { vcpus = 1, mem_mib = 192, nic = "e1000", workload = "ping" },
]
"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let host_tcg = !vmm::kvm::host_kvm().cpl0_native;
    for case in &s.cases {
        let p = &case.params;
        let id = &case.id;
        let (out, image) = run_case(&dir, case);

        let info = record(&out, "info");
        assert_eq!(info.get("engine"), Some("linux"), "{id}: {info}");
        assert_eq!(
            info.get_u64("vcpus"),
            Some(u64::from(p.vcpus)),
            "{id}: {info}"
        );
        // MemTotal: what the firmware gave, less the kernel's image, the initramfs and the
        // kernel's reservations (~50 MiB); the cases' sizes are 64 MiB or more apart.
        let mem_mib = info.get_u64("mem").unwrap() >> 20;
        let want = u64::from(p.mem_mib);
        assert!(
            (want - 64..=want).contains(&mem_mib),
            "{id}: {mem_mib} MiB of {want}: {info}"
        );
        if host_tcg {
            assert_eq!(out.accel, "tcg", "{id}");
        }
        let t = &out.timeline;
        let (kernel, init, ready) = (t.kernel_ms(), t.init_ms(), t.total_ms());
        assert!(
            matches!((kernel, init, ready), (Some(k), Some(i), Some(r)) if k <= i && i <= r),
            "{id}: kernel {kernel:?}, Run /init {init:?}, ready {ready:?}"
        );
        let r = out
            .records_of("result")
            .map(|t| &t.record)
            .find(|r| r.get("name") == Some(p.workload.kind().as_str()))
            .unwrap_or_else(|| panic!("{id}: no result in {:?}", out.records));
        match p.workload {
            Workload::NetRr { frame_size } => {
                assert_eq!(r.get_u64("size"), Some(u64::from(frame_size)), "{id}: {r}");
                let ops = r.get_u64("ops").unwrap_or(0);
                let echoed = out.device_counters["peer"]["echoed_frames"];
                assert!(ops > 0 && echoed >= ops, "{id}: {r}, peer echoed {echoed}");
            }
            Workload::BlkRead(b) => {
                assert_eq!(r.get_u64("bs"), Some(u64::from(b.block_size)), "{id}: {r}");
                assert_eq!(r.get_u64("qd"), Some(u64::from(b.queue_depth)), "{id}: {r}");
                assert_eq!(r.get("pattern"), Some("rand"), "{id}: {r}");
                assert_eq!(r.get_u64("errors"), Some(0), "{id}: {r}");
            }
            Workload::Ping => {
                // One request per 0.2 s of the window, every one answered by the peer.
                assert_eq!(r.get_u64("sent"), Some(5), "{id}: {r}");
                assert_eq!(r.get_u64("ops"), Some(5), "{id}: {r}");
            }
            _ => unreachable!("{id}"),
        }
        if let Some(nic) = p.nic {
            let driver = match nic {
                NicKind::E1000 => "e1000",
                NicKind::Virtio => "virtio_net",
            };
            assert_eq!(r.get("nic"), Some(nic.as_str()), "{id}: {r}");
            assert_eq!(r.get("driver"), Some(driver), "{id}: {r}");
        }
        if let (Some(disk), Some(image)) = (p.disk, image) {
            let driver = match disk {
                DiskKind::Ide => "sd",
                DiskKind::Virtio => "virtio_blk",
            };
            assert_eq!(r.get("disk"), Some(disk.as_str()), "{id}: {r}");
            assert_eq!(r.get("driver"), Some(driver), "{id}: {r}");
            assert_eq!(DiskFormat::detect(&image).unwrap(), p.disk_format, "{id}");
        }
    }
}

#[test]
fn a_linux_guest_that_panics_fails_with_its_console_tail() {
    let dir = TempDir::new("linux-bench-panic");
    // Not a cpio archive: the kernel finds no /init and no root file system, and panics.
    let junk = dir.path("junk.cpio.gz");
    std::fs::write(&junk, vec![0x5a; 4096]).unwrap();
    let spec = GuestSpec {
        guest: vmbench::scenario::Guest::Linux,
        probe: probe(),
        linux: Some(LinuxImage {
            vmlinux: linux().vmlinux.clone(),
            initramfs: junk,
            params: String::new(),
        }),
        vcpus: 1,
        mem_mib: 256,
        exec: "hello".into(),
        nic: None,
        disk: None,
    };

    let out = run_spec(&spec);

    let why = out.failure().expect("the guest must fail");
    assert!(
        why.contains("without its agent reporting done") && why.contains("Kernel panic"),
        "{why}"
    );
    assert!(
        out.console_tail.iter().any(|l| l.contains("Kernel panic")),
        "{:?}",
        out.console_tail
    );
}

#[test]
fn bench_records_the_accelerator_and_shows_the_linux_boot_timeline() {
    let dir = TempDir::new("linux-bench-run");
    linux();
    let scenario = dir.path("hello.toml");
    std::fs::write(
        &scenario,
        "name = \"linux-hello\"\nguest = \"linux\"\nengine = \"qemu\"\n[run]\nrepetitions = 1\nready_timeout_secs = 180\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vmbench"))
        .arg("bench")
        .arg(&scenario)
        .arg("--out")
        .arg(dir.path("run"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("Linux boot timeline") && stdout.contains("Run /init"),
        "{stdout}"
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path("run/results.json")).unwrap()).unwrap();
    let rep = &doc["cases"][0]["repetitions"][0];
    let accel = rep["accel"].as_str().unwrap_or("");
    assert!(accel == "tcg" || accel == "kvm", "{rep}");
    for k in ["kernel_ms", "init_ms", "total_ms"] {
        assert!(
            rep["boot"][k].as_f64().is_some_and(|v| v > 0.0),
            "{k}: {rep}"
        );
    }
    let images: Vec<&str> = doc["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["image"].as_str())
        .collect();
    assert_eq!(images, ["probe", "linux"]);
}

/// `vmbench bench` on a Linux guest's tcp-stream over a TAP in vmbench's namespace (host to
/// guest through virtio_net): the case passes, its primary figure is the throughput, and the
/// cross-check found the guest's byte count equal to what the host's TCP source sent.
#[test]
fn bench_runs_tcp_stream_over_a_tap_and_cross_checks_the_hosts_count() {
    let dir = TempDir::new("linux-bench-tcp");
    linux();
    let scenario = dir.path("tcp.toml");
    std::fs::write(
        &scenario,
        r#"name = "linux-tcp"
guest = "linux"
engine = "qemu"
[devices]
nic = "virtio"
net_backend = "tap"
[workload]
name = "tcp-stream"
direction = "rx"
io_size = 32768
[run]
repetitions = 1
warmup_secs = 0.3
duration_secs = 1.5
ready_timeout_secs = 180
"#,
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vmbench"))
        .arg("bench")
        .arg(&scenario)
        .arg("--out")
        .arg(dir.path("run"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // The summary judges the case by its throughput.
    assert!(
        stdout.contains(" Mbit/s ") && !stdout.contains("no mbit_per_sec figure"),
        "{stdout}"
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path("run/results.json")).unwrap()).unwrap();
    let case = &doc["cases"][0];
    assert_eq!(
        case["probe_exec"],
        "tcp-stream direction=rx size=32768 nic=virtio warmup_ms=300 duration_ms=1500",
        "{case}"
    );
    let m = &case["repetitions"][0]["metrics"];
    let num = |k: &str| m[k].as_f64().unwrap_or_else(|| panic!("no {k}: {m}"));
    assert!(num("mbit_per_sec") > 0.0, "{m}");
    // The cross-check ran against the TAP's TCP source and found the counts equal (it fails
    // the case otherwise).
    assert!(num("guest_bytes_total") > 0.0, "{m}");
    assert_eq!(num("guest_bytes_total"), num("host_bytes"), "{m}");
}
