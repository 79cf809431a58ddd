//! The linux image (`images build linux`) under QEMU-TCG: the stock Debian kernel boots
//! through PVH with the initramfs, the agent loads the module closure and reports, read by the
//! harness's own record parser; Linux's virtio_blk and ata_piix write a pattern the host then
//! finds byte for byte in raw and qcow2 images; Linux's e1000 and virtio_net make UDP round
//! trips with vmbench's peer (counts checked against the peer's) and TCP streams through a TAP
//! in a namespace vmbench creates (bytes checked against its TCP services'), and the image's
//! iperf3 runs against an `iperf3 -s` there; the agent's `irq` records show virtio on MSI-X,
//! e1000 on the IO-APIC and IDE on IRQ 14/15; a kernel panic and an unknown workload give
//! their errors. One image build per test binary; each guest boots in
//! ~10-15 s of TCG.

mod support;

use std::ffi::OsString;
use std::io::Read;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use support::{
    assert_delivery, assert_holds_pattern_of_size, qcow2_contents, qemu_img, sized_file, Delivery,
    TempDir,
};
use vmbench::engine::qemu::link::QemuTap;
use vmbench::engine::qemu::peer::PeerBridge;
use vmbench::engine::qemu::{
    disk_args, find_qboot, nic_args, QemuDisk, QemuNetdev, QemuNic, DEFAULT_MAC,
};
use vmbench::record::Record;
use vmm::kinds::{DiskKind, NicKind};
use vmm::process::{DieWithParent, PassFd};

struct Image {
    vmlinux: PathBuf,
    initramfs: PathBuf,
    /// The modules of the closure, in load order (from the manifest).
    modules: Vec<String>,
}

fn image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let m = support::linux_image();
        let art = |n: &str| support::artifact(m, n);
        Image {
            vmlinux: art("vmlinux"),
            initramfs: art("initramfs.cpio.gz"),
            modules: m
                .inputs
                .iter()
                .filter(|(k, _)| k == "module")
                .map(|(_, v)| v.split_whitespace().next().unwrap_or("").to_string())
                .collect(),
        }
    })
}

/// What a guest said: its records and the whole console.
struct Run {
    records: Vec<Record>,
    console: String,
}

impl Run {
    fn one(&self, kind: &str) -> &Record {
        self.records
            .iter()
            .find(|r| r.kind == kind)
            .unwrap_or_else(|| panic!("no `{kind}` record; console:\n{}", self.tail()))
    }

    fn tail(&self) -> String {
        let lines: Vec<&str> = self.console.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// Boots the image with `devices` and the kernel command line `cmdline` (the agent's part
/// after `--`); `Err` with the console's tail if the guest never reports `done`.
fn boot(devices: Vec<OsString>, cmdline: &str) -> Result<Run, String> {
    boot_passing(devices, cmdline, None)
}

/// [`boot`], QEMU inheriting `fd` (a TAP's, for `-netdev tap,fd=`).
fn boot_passing(devices: Vec<OsString>, cmdline: &str, fd: Option<RawFd>) -> Result<Run, String> {
    let img = image();
    let qemu = PathBuf::from("qemu-system-x86_64");
    let mut c = Command::new(&qemu);
    c.die_with_parent();
    if let Some(fd) = fd {
        c.pass_fd(fd);
    }
    c.args(["-accel", "tcg", "-cpu", "max", "-m", "512", "-smp", "1"])
        .args(["-display", "none", "-serial", "stdio", "-monitor", "none"])
        .args(["-no-reboot", "-nodefaults"]);
    if let Some(b) = find_qboot(&qemu) {
        c.arg("-bios").arg(b);
    }
    c.args(devices)
        .arg("-kernel")
        .arg(&img.vmlinux)
        .arg("-initrd")
        .arg(&img.initramfs)
        .arg("-append")
        .arg(format!("console=ttyS0 panic=-1 {cmdline}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c
        .spawn()
        .expect("qemu-system-x86_64 runs (install qemu-system-x86)");
    let mut out = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        if child.try_wait().expect("waiting for qemu").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let console = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
    let run = Run {
        records: console.lines().filter_map(Record::parse).collect(),
        console: format!("{console}{err}"),
    };
    if run.records.iter().any(|r| r.kind == "done") {
        Ok(run)
    } else {
        Err(format!(
            "the guest ended without reporting done; console tail:\n{}",
            run.tail()
        ))
    }
}

/// Every module of the closure reported loaded, in order, and the agent ready.
fn assert_modules_and_ready(run: &Run) {
    let loaded: Vec<&str> = run
        .records
        .iter()
        .filter(|r| r.kind == "module")
        .map(|r| {
            assert_eq!(
                r.get("status"),
                Some("loaded"),
                "{r}; console:\n{}",
                run.tail()
            );
            r.get("name").unwrap_or("")
        })
        .collect();
    assert_eq!(loaded, image().modules, "console:\n{}", run.tail());
    for m in [
        "e1000",
        "ata_piix",
        "sd_mod",
        "virtio_pci",
        "virtio_net",
        "virtio_blk",
    ] {
        assert!(loaded.contains(&m), "{m} missing from {loaded:?}");
    }
    run.one("ready");
    assert_eq!(run.one("info").get("engine"), Some("linux"));
}

const SECTORS: u64 = 4096;
const SEED: u64 = 0x5eed;
/// Each test disk's size.
const DISK_BYTES: u64 = 64 << 20;

/// blk-pattern through Linux's driver for `kind` on a `format` image; then the host reads
/// the image and finds the pattern byte for byte.
fn pattern_roundtrip(kind: DiskKind, format: &str) {
    let tmp = TempDir::new(&format!("linux-{kind:?}-{format}"));
    let raw = tmp.path("disk.raw");
    sized_file(&raw, DISK_BYTES);
    let disk = if format == "qcow2" {
        let q = tmp.path("disk.qcow2");
        qemu_img(&[
            "create".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            q.as_os_str(),
            DISK_BYTES.to_string().as_ref(),
        ]);
        q
    } else {
        raw.clone()
    };
    let d = QemuDisk::open(kind, &disk).expect("the image opens");
    let want = match kind {
        DiskKind::Virtio => "virtio",
        DiskKind::Ide => "ide",
    };
    let run = boot(
        disk_args(&d),
        &format!("-- blk-pattern sectors={SECTORS} seed={SEED} disk={want}"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_modules_and_ready(&run);
    let r = run.one("result");
    assert_eq!(r.get("name"), Some("blk-pattern"));
    assert_eq!(r.get("disk"), Some(want), "{r}");
    let driver = match kind {
        DiskKind::Virtio => "virtio_blk",
        DiskKind::Ide => "sd",
    };
    assert_eq!(r.get("driver"), Some(driver), "{r}");
    assert_eq!(r.get_u64("mismatches"), Some(0), "{r}");
    assert_eq!(run.one("done").get("status"), Some("ok"), "{}", run.tail());
    let delivery = match kind {
        DiskKind::Virtio => Delivery::Msix,
        DiskKind::Ide => Delivery::Ide,
    };
    assert_delivery(&run.records, delivery, &run.tail());
    // The host's view: qcow2 through qemu-img.
    let bytes = if format == "qcow2" {
        qcow2_contents(&disk, &tmp.path("back.raw"))
    } else {
        std::fs::read(&raw).expect("reading the image back")
    };
    assert_holds_pattern_of_size(&bytes, DISK_BYTES, SEED, SECTORS);
}

#[test]
fn virtio_blk_writes_the_pattern_on_raw() {
    pattern_roundtrip(DiskKind::Virtio, "raw");
}

#[test]
fn virtio_blk_writes_the_pattern_on_qcow2() {
    pattern_roundtrip(DiskKind::Virtio, "qcow2");
}

#[test]
fn ata_piix_writes_the_pattern_on_raw() {
    pattern_roundtrip(DiskKind::Ide, "raw");
}

#[test]
fn ata_piix_writes_the_pattern_on_qcow2() {
    pattern_roundtrip(DiskKind::Ide, "qcow2");
}

/// net-rr through Linux's driver for `kind` against vmbench's peer over QEMU's loopback
/// `dgram` link: every round trip the guest made is one the peer echoed.
fn round_trips(kind: NicKind) {
    let bridge = PeerBridge::start().expect("the peer bridge starts");
    let nic = QemuNic::new(kind, bridge.netdev());
    let run = boot(
        nic_args(&nic),
        "vmb.ip=10.0.2.15/24 vmb.gw=10.0.2.2 -- net-rr size=128 warmup_ms=300 duration_ms=1500",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_modules_and_ready(&run);
    let (driver, delivery) = match kind {
        NicKind::E1000 => ("e1000", Delivery::IoApic),
        NicKind::Virtio => ("virtio_net", Delivery::Msix),
    };
    assert_eq!(run.one("nic").get("driver"), Some(driver));
    assert_delivery(&run.records, delivery, &run.tail());
    let r = run.one("result");
    assert_eq!(r.get("name"), Some("net-rr"), "{r}");
    assert_eq!(run.one("done").get("status"), Some("ok"), "{}", run.tail());
    let ops = r.get_u64("ops").expect("ops");
    assert!(ops > 0, "no round trip in the window: {r}");
    assert_eq!(r.get_u64("lost"), Some(0), "{r}");
    assert_eq!(r.get_u64("mismatches"), Some(0), "{r}");
    // Every datagram the guest sent was echoed by the peer, and nothing more.
    let sent = r.get_u64("sent_total").expect("sent_total");
    assert_eq!(bridge.counters().get("echoed_frames"), Some(&sent), "{r}");
}

#[test]
fn e1000_round_trips_with_the_peer() {
    round_trips(NicKind::E1000);
}

#[test]
fn virtio_net_round_trips_with_the_peer() {
    round_trips(NicKind::Virtio);
}

#[test]
fn an_unknown_workload_is_an_error_naming_it() {
    let run = boot(Vec::new(), "-- no-such-workload").unwrap_or_else(|e| panic!("{e}"));
    let e = run.one("error");
    assert!(
        e.text.contains("unknown workload `no-such-workload`") && e.text.contains("blk-pattern"),
        "{e}"
    );
    assert_eq!(run.one("done").get("status"), Some("failed"));
}

#[test]
fn a_kernel_panic_fails_with_the_console_tail() {
    // No /init of that name: the kernel then looks for a root file system, finds none, and
    // panics (panic=-1 reboots at once; -no-reboot ends QEMU).
    let e = boot(Vec::new(), "rdinit=/no-such-init -- hello").err();
    let e = e.expect("the guest must fail");
    assert!(e.contains("without reporting done"), "{e}");
    assert!(e.contains("Kernel panic"), "{e}");
}

#[test]
fn e1000_pings_the_peer() {
    let bridge = PeerBridge::start().expect("the peer bridge starts");
    let nic = QemuNic::new(NicKind::E1000, bridge.netdev());
    let run = boot(
        nic_args(&nic),
        "vmb.ip=10.0.2.15/24 vmb.gw=10.0.2.2 -- ping count=5",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let r = run.one("result");
    assert_eq!(r.get("name"), Some("ping"), "{r}");
    assert_eq!(r.get_u64("ops"), Some(5), "{r}; console:\n{}", run.tail());
    assert_eq!(run.one("latency").get_u64("n"), Some(5));
    assert_eq!(run.one("done").get("status"), Some("ok"));
}

#[test]
fn virtio_net_receives_the_peers_source_stream() {
    let bridge = PeerBridge::start().expect("the peer bridge starts");
    let nic = QemuNic::new(NicKind::Virtio, bridge.netdev());
    let run = boot(
        nic_args(&nic),
        "vmb.ip=10.0.2.15/24 vmb.gw=10.0.2.2 -- net-rx size=1024 warmup_ms=200 duration_ms=1000",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let r = run.one("result");
    assert_eq!(r.get("name"), Some("net-rx"), "{r}");
    let total = r.get_u64("frames_total").expect("frames_total");
    assert!(r.get_u64("frames").unwrap_or(0) > 0, "{r}");
    // The guest cannot have received more than the peer sent.
    let sourced = bridge
        .counters()
        .get("sourced_frames")
        .copied()
        .unwrap_or(0);
    assert!(total <= sourced, "{r}: the peer sourced {sourced}");
    assert_eq!(run.one("done").get("status"), Some("ok"));
}

#[test]
fn virtio_blk_random_reads_fill_a_window() {
    let tmp = TempDir::new("linux-blk-read");
    let raw = tmp.path("disk.raw");
    sized_file(&raw, DISK_BYTES);
    let d = QemuDisk::open(DiskKind::Virtio, &raw).expect("the image opens");
    let run = boot(
        disk_args(&d),
        "-- blk-read pattern=rand bs=4096 qd=4 warmup_ms=200 duration_ms=1000 disk=virtio",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let r = run.one("result");
    assert_eq!(r.get("name"), Some("blk-read"), "{r}");
    let ops = r.get_u64("ops").expect("ops");
    assert!(ops > 0, "{r}");
    assert_eq!(r.get_u64("errors"), Some(0), "{r}");
    assert_eq!(r.get_u64("bytes"), Some(ops * 4096), "{r}");
    assert_eq!(r.get_u64("qd"), Some(4), "{r}");
    assert_eq!(run.one("latency").get_u64("n"), Some(ops));
    assert_eq!(run.one("window-end").get_u64("ops"), Some(ops));
    assert_eq!(run.one("done").get("status"), Some("ok"));
}

/// A TAP in a namespace vmbench creates, with its host services (and `iperf3 -s` if asked),
/// and Linux's driver for `kind` on it; the agent runs `workload`.
fn on_tap(kind: NicKind, iperf3: bool, workload: &str) -> (Run, QemuTap) {
    let tap = QemuTap::start(DEFAULT_MAC, iperf3)
        .unwrap_or_else(|e| panic!("the TAP and its namespace (needs root, iperf3): {e:?}"));
    let nic = QemuNic::new(kind, tap.netdev());
    let QemuNetdev::Tap { fd } = nic.netdev else {
        unreachable!("a TAP's netdev")
    };
    let run = boot_passing(
        nic_args(&nic),
        &format!("vmb.ip=10.0.2.15/24 vmb.gw=10.0.2.2 -- {workload}"),
        Some(fd),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    (run, tap)
}

/// tcp-stream through Linux's driver for `kind` over the TAP, in `direction`: the bytes the
/// guest moved over the whole connection are the bytes the host's TCP service counted.
fn tcp_stream(kind: NicKind, direction: &str) {
    let (run, tap) = on_tap(
        kind,
        false,
        &format!("tcp-stream direction={direction} warmup_ms=300 duration_ms=1500"),
    );
    let driver = match kind {
        NicKind::E1000 => "e1000",
        NicKind::Virtio => "virtio_net",
    };
    assert_eq!(run.one("nic").get("driver"), Some(driver));
    let r = run.one("result");
    assert_eq!(
        r.get("name"),
        Some("tcp-stream"),
        "{r}; console:\n{}",
        run.tail()
    );
    assert_eq!(run.one("done").get("status"), Some("ok"), "{}", run.tail());
    assert_eq!(r.get("direction"), Some(direction), "{r}");
    assert_eq!(r.get_u64("mismatches"), Some(0), "{r}");
    let bytes = r.get_u64("bytes").expect("bytes");
    let total = r.get_u64("bytes_total").expect("bytes_total");
    assert!(bytes > 0 && bytes <= total, "{r}");
    assert!(r.get_u64("window_ns").unwrap_or(0) > 0, "{r}");
    assert_eq!(run.one("window-end").get_u64("ops"), r.get_u64("ops"));
    let c = tap.counters();
    let (host_bytes, connections) = match direction {
        "tx" => ("tcp_sunk_bytes", "tcp_sink_connections"),
        _ => ("tcp_sourced_bytes", "tcp_source_connections"),
    };
    assert_eq!(c[host_bytes], total, "{r}; host: {c:?}");
    assert_eq!(c[connections], 1, "{c:?}");
}

#[test]
fn e1000_streams_tcp_to_the_host_through_a_tap() {
    tcp_stream(NicKind::E1000, "tx");
}

#[test]
fn virtio_net_streams_tcp_from_the_host_through_a_tap() {
    tcp_stream(NicKind::Virtio, "rx");
}

#[test]
fn iperf3_runs_against_the_server_in_the_namespace() {
    let (run, _tap) = on_tap(
        NicKind::Virtio,
        true,
        "iperf3 direction=tx warmup_ms=1000 duration_ms=2000",
    );
    let r = run.one("result");
    assert_eq!(
        r.get("name"),
        Some("iperf3"),
        "{r}; console:\n{}",
        run.tail()
    );
    assert_eq!(run.one("done").get("status"), Some("ok"), "{}", run.tail());
    // Two measured one-second intervals after the omitted one; bytes and rate from iperf3.
    assert_eq!(r.get_u64("ops"), Some(2), "{r}");
    // iperf3's own sums: the receiver's bytes, and the sender's (each side leaves out the
    // omitted second by its own clock, so they differ a little, either way).
    assert!(r.get_u64("bytes").unwrap_or(0) > 0, "{r}");
    assert!(r.get_u64("bytes_sent").unwrap_or(0) > 0, "{r}");
    assert!(r.get_u64("bits_per_second").unwrap_or(0) > 0, "{r}");
    let window = r.get_u64("window_ns").unwrap_or(0);
    assert!((1_900_000_000..3_000_000_000).contains(&window), "{r}");
    run.one("window-start");
    run.one("window-end");
}
