//! Linux on vmbench's own VMM, with Linux's own drivers, inside the emulated AMD-V host
//! (QEMU-TCG `-cpu max` with kvm-amd loaded: `vmbench::emulated`, docs/linux-boot.md). This
//! host's KVM-PVM cannot run a stock kernel, so the stock Debian kernel runs one level down.
//! The emulated host boots once for the whole binary and runs several guests, each a
//! `vmbench boot --guest linux` whose output comes back over the serial console:
//! - e1000 (INTx on the IOAPIC through the MP table): Linux's e1000 binds, UDP round trips
//!   with the in-process peer, every request echoed (the peer's count);
//! - virtio-net (MSI-X through irqfd routes): the same with virtio_net, over a TAP in a network
//!   namespace the inner vmbench creates (the emulated host carries `ip` and the tun module);
//! - PIIX IDE (IRQ 14): ata_piix and sd write a pattern the host then reads back byte for byte,
//!   on a raw image and on a qcow2 image (read back through `qemu-img convert`);
//! - virtio-blk: virtio_blk does the same on a raw image;
//! - and `bench scenarios/linux-vmm.toml --host emulated`'s inner run (its virtio-net case):
//!   the scenario path to a Linux guest on vmbench's VMM, results.json brought back, marked as
//!   measured in the emulated host, with the images that ran.
//!
//! How each driver's interrupts arrived is checked on the agent's `irq` records (its
//! `/proc/interrupts` lines for the device): MSI-X for virtio, the IO-APIC for e1000's INTx and
//! IDE's IRQ 14/15, each with interrupts taken.
//!
//! Each guest ends by powering off: without ACPI Linux halts every CPU with interrupts masked,
//! which vmbench's VMM recognises as a power-off (`vmm::machine::halt`); the VM ends with
//! status 0 (a guest that did not power off would run into its timeout and fail the test).

mod support;

use std::path::Path;
use std::time::Instant;

use support::{
    assert_delivery, assert_holds_pattern_of_size, qcow2_contents, qemu_img, sized_file, Delivery,
};
use vmbench::emulated::{self, Work};
use vmbench::record::Record;

const SECTORS: u64 = 1024;
/// The bench command's place among the emulated host's commands (after five boots).
const BENCH: usize = 5;
const SEED: u64 = 0x5eed;

/// A record `boot` printed (as `kind k=v ...`, or inside `[...]` for a windowed result).
fn record(lines: &[String], kind: &str) -> Option<Record> {
    lines.iter().find_map(|l| {
        let text = match l.rfind('[') {
            Some(i) if l.ends_with(']') => &l[i + 1..l.len() - 1],
            _ => l.as_str(),
        };
        text.starts_with(&format!("{kind} "))
            .then(|| Record::parse(&format!("{}{text}", probe_abi::RECORD_PREFIX)))
            .flatten()
    })
}

/// `dev: name N, name N` as `boot` prints a device's counters.
fn counter(lines: &[String], dev: &str, name: &str) -> Option<u64> {
    let l = lines.iter().find(|l| l.starts_with(&format!("{dev}: ")))?;
    l[dev.len() + 2..].split(", ").find_map(|kv| {
        let (k, v) = kv.rsplit_once(' ')?;
        (k == name).then(|| v.parse().ok()).flatten()
    })
}

/// Every record of `kind` that `boot` printed as `kind k=v ...`.
fn records(lines: &[String], kind: &str) -> Vec<Record> {
    lines
        .iter()
        .filter(|l| l.starts_with(&format!("{kind} ")))
        .filter_map(|l| Record::parse(&format!("{}{l}", probe_abi::RECORD_PREFIX)))
        .collect()
}

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Each test disk's size.
const DISK_BYTES: u64 = 8 << 20;

/// The pattern, byte for byte, and zeros after it, in the raw image at `image`.
fn pattern_on_host(image: &Path) {
    let bytes = std::fs::read(image).expect("reading the image back");
    assert_holds_pattern_of_size(&bytes, DISK_BYTES, SEED, SECTORS);
}

#[test]
fn linux_drives_vmbench_devices_with_its_own_drivers_in_the_emulated_host() {
    let m = support::linux_image();
    let art = |n: &str| support::artifact(m, n);
    let mut work = Work::new().expect("the work directory");
    let kernel = work.add(&art("vmlinux"), "vmlinux", false).unwrap();
    let initrd = work
        .add(&art("initramfs.cpio.gz"), "initrd", false)
        .unwrap();
    let ide = work.path().join("ide.raw");
    let vblk = work.path().join("vblk.raw");
    let ide_qcow2 = work.path().join("ide.qcow2");
    sized_file(&ide, DISK_BYTES);
    sized_file(&vblk, DISK_BYTES);
    qemu_img(&[
        "create".as_ref(),
        "-f".as_ref(),
        "qcow2".as_ref(),
        ide_qcow2.as_os_str(),
        "8M".as_ref(),
    ]);
    let boot = |rest: &[&str]| {
        let mut a = args(&[
            "boot", "--guest", "linux", "--kernel", &kernel, "--initrd", &initrd,
        ]);
        // Ready takes ~40 s here (a stock kernel under KVM under TCG); the workloads 3 s.
        // The emulated host allows each command these plus a margin, then stops.
        a.extend(args(&["--timeout", "240", "--run-timeout", "60"]));
        a.extend(args(rest));
        emulated::HostCommand::boot(a).expect("a boot command")
    };
    let pattern = format!("blk-pattern sectors={SECTORS} seed={SEED}");
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/linux-vmm.toml");
    let bench_args = vmbench::cli::bench::parse(&[
        "bench",
        scenario.to_str().unwrap(),
        "--host",
        "emulated",
        "--filter",
        "nic=virtio",
        "--duration",
        "1",
    ])
    .unwrap();
    let (bench_scenario, bench) =
        vmbench::cli::bench::host::prepare(&bench_args, &mut work).expect("the inner bench");
    assert_eq!(bench_scenario.cases.len(), 1);
    let commands = vec![
        boot(&[
            "--nic",
            "e1000",
            "--probe-exec",
            "net-rr size=64 duration_ms=2000 warmup_ms=500",
        ]),
        boot(&[
            "--nic",
            "virtio",
            "--net-backend",
            "tap",
            "--probe-exec",
            "net-rr size=64 duration_ms=2000 warmup_ms=500",
        ]),
        boot(&[
            "--disk",
            "ide",
            "--disk-image",
            "/work/ide.raw",
            "--probe-exec",
            &pattern,
        ]),
        boot(&[
            "--disk",
            "virtio",
            "--disk-image",
            "/work/vblk.raw",
            "--probe-exec",
            &pattern,
        ]),
        boot(&[
            "--disk",
            "ide",
            "--disk-image",
            "/work/ide.qcow2",
            "--probe-exec",
            &pattern,
        ]),
        bench,
    ];

    // One more try when the emulated host itself stops making progress (`emulated::Hung`):
    // QEMU-TCG's emulated AMD-V has lost the outer host's interrupts (docs/linux-boot.md,
    // "Hangs"), which no guest or VMM can cause. A guest that fails is not retried.
    let mut out: Vec<Vec<String>>;
    let mut attempt = 1;
    let codes = loop {
        let begin = Instant::now();
        out = vec![Vec::new(); commands.len()];
        let r = emulated::run_with(
            Path::new(env!("CARGO_BIN_EXE_vmbench")),
            &work,
            &commands,
            &mut |i, line| {
                eprintln!("[guest {i}] {line}");
                out[i].push(line.to_string());
            },
        );
        eprintln!(
            "emulated host with {} guests, attempt {attempt}: {:.1} s",
            commands.len(),
            begin.elapsed().as_secs_f64()
        );
        match r {
            Ok(codes) => break codes,
            Err(e) if attempt == 1 && e.downcast_ref::<emulated::Hung>().is_some() => {
                eprintln!("the emulated host hung; trying once more: {e:#}");
                attempt += 1;
            }
            Err(e) => panic!("the emulated host runs: {e:#}"),
        }
    };

    let show = |i: usize| out[i].join("\n");
    for (i, code) in codes.iter().enumerate() {
        assert_eq!(*code, Some(0), "command {i} failed:\n{}", show(i));
    }
    for (i, lines) in out.iter().enumerate().take(BENCH) {
        assert!(lines.iter().any(|l| l == "vCPU 0 ready"), "{}", show(i));
    }

    // e1000 and virtio-net: Linux's driver, round trips through the in-process peer and through
    // a TAP in a namespace the emulated host's vmbench made (its echo service), every request
    // echoed.
    for (i, driver, delivery, backend) in [
        (0, "e1000", Delivery::IoApic, "peer"),
        (1, "virtio_net", Delivery::Msix, "tap"),
    ] {
        assert_delivery(&records(&out[i], "irq"), delivery, &show(i));
        let rr = record(&out[i], "result").unwrap_or_else(|| panic!("no result:\n{}", show(i)));
        assert_eq!(rr.get("driver"), Some(driver), "{rr}");
        assert!(rr.get_u64("ops").unwrap_or(0) > 0, "{rr}");
        assert_eq!(rr.get_u64("lost"), Some(0), "{rr}");
        assert_eq!(
            rr.get_u64("sent_total"),
            counter(&out[i], backend, "echoed_frames"),
            "{}",
            show(i)
        );
    }
    assert!(
        counter(&out[0], "e1000", "interrupts").unwrap_or(0) > 0,
        "{}",
        show(0)
    );

    // IDE (raw and qcow2) and virtio-blk: the pattern the guest wrote is on the host, byte for
    // byte.
    for (i, driver, delivery) in [
        (2, "sd", Delivery::Ide),
        (3, "virtio_blk", Delivery::Msix),
        (4, "sd", Delivery::Ide),
    ] {
        assert_delivery(&records(&out[i], "irq"), delivery, &show(i));
        let r = record(&out[i], "result").unwrap_or_else(|| panic!("no result:\n{}", show(i)));
        assert_eq!(r.get("driver"), Some(driver), "{r}");
        assert_eq!(r.get_u64("mismatches"), Some(0), "{r}");
        assert_eq!(r.get_u64("write_errors"), Some(0), "{r}");
    }
    // The bench: results.json back, what ran and where, the case's round trips all answered.
    let run = work.path().join("bench-out");
    std::fs::create_dir(&run).unwrap();
    let doc = vmbench::cli::bench::host::take_results(&work, &run).expect("the inner results");
    let case = &bench_scenario.cases[0];
    assert!(doc.finished, "{}", show(BENCH));
    assert!(
        doc.environment.kvm.emulated_host,
        "{:?}",
        doc.environment.kvm
    );
    assert_eq!(doc.environment.kvm.flavour, "kvm-amd");
    let c = doc.case(&case.id).expect("the case");
    assert_eq!(
        c.status,
        vmbench::results::CaseStatus::Ok,
        "{}",
        show(BENCH)
    );
    let m = &c.repetitions[0].metrics;
    assert!(m.get("ops").copied().unwrap_or(0.0) > 0.0, "{m:?}");
    // The Linux boot timeline, as QEMU's engine records it: the kernel's first console line,
    // then `Run /init`, then the agent ready.
    let boot = &c.repetitions[0].boot;
    match (boot.kernel_ms, boot.init_ms, boot.total_ms) {
        (Some(k), Some(i), Some(t)) => assert!(0.0 < k && k < i && i < t, "{boot:?}"),
        _ => panic!("no Linux boot timeline: {boot:?}"),
    }
    assert_eq!(m.get("lost").copied(), Some(0.0), "{m:?}");
    // The agent's console records carried the VMM's counters, so the window was measured as
    // a probe's is: Linux's virtio_net kicked about once a round trip and took interrupts
    // (~2: TX completion, RX), with (almost) no exit to vmbench in the data path.
    assert!(m.get("exits_per_op").is_some_and(|&e| e < 0.5), "{m:?}");
    assert!(m.get("kicks_per_op").copied().unwrap_or(0.0) > 0.5, "{m:?}");
    assert!(
        m.get("interrupts_per_op").copied().unwrap_or(0.0) > 0.5,
        "{m:?}"
    );
    let images: Vec<&str> = doc
        .images
        .iter()
        .filter_map(|i| i.get("input_hash")?.as_str())
        .collect();
    assert!(
        images.contains(&support::linux_image().input_hash.as_str()),
        "{images:?}"
    );
    pattern_on_host(&ide);
    pattern_on_host(&vblk);
    let back = qcow2_contents(&ide_qcow2, &work.path().join("ide-qcow2-back.raw"));
    assert_holds_pattern_of_size(&back, DISK_BYTES, SEED, SECTORS);
    work.finish().unwrap();
}

/// On KVM-PVM (this project's hosts) a stock kernel on vmbench's VMM is refused before
/// anything starts: one line, exit 2, saying why and what to do. Where guest kernel code runs
/// natively, the same command gets past that check to the missing kernel file.
#[test]
fn a_stock_kernel_is_refused_where_guest_kernel_code_is_emulated() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vmbench"))
        .args(["boot", "--guest", "linux", "--kernel", "/no/vmlinux"])
        .args(["--initrd", "/no/initrd"])
        .output()
        .expect("vmbench runs");

    let err = String::from_utf8_lossy(&out.stderr);
    let host = vmm::kvm::host_kvm();
    if host.cpl0_native {
        assert!(!out.status.success(), "{err}");
        assert!(
            !err.contains("KVM-PVM"),
            "refused on {}: {err}",
            host.flavour
        );
        assert!(err.contains("/no/vmlinux"), "{err}");
        return;
    }
    assert_eq!(out.status.code(), Some(2), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .expect("an error line");
    assert!(line.contains("KVM-PVM"), "{line}");
    for way in ["--engine qemu", "--host emulated", "PVM guest"] {
        assert!(line.contains(way), "{way} missing from: {line}");
    }
}
