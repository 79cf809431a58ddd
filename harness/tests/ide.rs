//! End-to-end: the probe's IDE driver on vmbench's PIIX3 IDE model under real KVM. The probe
//! writes its pattern through DMA and through PIO on raw and qcow2 images and the host checks
//! the image byte for byte; timed random reads in both modes and both driver profiles, where
//! every port access the driver counts must be one exit to vmbench's IDE model; refused
//! commands come back as errors. ide_qemu.rs runs the same against QEMU's PIIX3 IDE.

mod support;
use support::*;

use std::path::{Path, PathBuf};
use std::time::Duration;

use vmbench::record::Record;
use vmbench::session::{self, Ending, Limits, Outcome};
use vmm::backend::block::OpenOptions;
use vmm::machine::{DiskConfig, DiskKind};
use vmm::{Machine, MachineConfig};

const SECTOR: u64 = 512;
const DISK_BYTES: u64 = 16 << 20;
const DMA_SECTORS: u64 = 2048;
/// PIO writes cost one exit per dword (KVM does not batch `rep outsd`), so PIO writes less.
const PIO_SECTORS: u64 = 512;

fn raw_image(dir: &Path) -> PathBuf {
    let p = dir.join("disk.raw");
    sized_file(&p, DISK_BYTES);
    p
}

fn boot(disk: &Path, exec: &str) -> Outcome {
    let cfg = MachineConfig {
        vcpus: 1,
        mem_mib: 64,
        probe: probe(),
        exec: exec.into(),
        disk: Some(DiskConfig {
            kind: DiskKind::Ide,
            path: disk.to_path_buf(),
            options: OpenOptions::default(),
        }),
        nic: None,
        linux: None,
    };
    let mut m = Machine::new(&cfg).unwrap();
    let limits = Limits {
        ready: Duration::from_secs(10),
        run: Duration::from_secs(90),
    };
    session::run(&mut m, &limits, |_| {}).unwrap()
}

fn result<'a>(out: &'a Outcome, name: &str) -> &'a Record {
    out.records_of("result")
        .map(|t| &t.record)
        .find(|r| r.get("name") == Some(name))
        .unwrap_or_else(|| panic!("no result {name} in {:?} {:?}", out.records, out.ending))
}

fn field(r: &Record, key: &str) -> u64 {
    r.get_u64(key)
        .unwrap_or_else(|| panic!("'{r}' has no number {key}"))
}

fn decimal(r: &Record, key: &str) -> f64 {
    r.get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("'{r}' has no decimal {key}"))
}

fn assert_exited_ok(out: &Outcome) {
    assert!(
        matches!(out.ending, Ending::Exited { code: 0 }),
        "{:?}, {}",
        out.ending,
        out.last_words()
    );
}

fn pattern_mismatches(file: &[u8], seed: u64, sectors: u64) -> usize {
    (0..sectors * SECTOR)
        .filter(|&o| file[o as usize] != probe_abi::pattern_byte(seed, o))
        .count()
}

/// The pattern ran clean through IDE in `mode` and the image holds it, zeros after.
fn assert_pattern(out: &Outcome, image: &[u8], seed: u64, sectors: u64, mode: &str) {
    assert_exited_ok(out);
    let r = result(out, "blk-pattern");
    for (k, v) in [
        ("mismatches", 0),
        ("write_errors", 0),
        ("read_errors", 0),
        ("flush_status", 0),
        ("sectors", sectors),
        ("capacity_sectors", DISK_BYTES / SECTOR),
    ] {
        assert_eq!(r.get_u64(k), Some(v), "{k} in {r}");
    }
    assert_eq!(r.get("disk"), Some("ide"), "{r}");
    assert_eq!(r.get("mode"), Some(mode), "{r}");
    let ide = out
        .records_of("ide")
        .next()
        .unwrap_or_else(|| panic!("no ide record in {:?}", out.records));
    assert_eq!(
        ide.record.get("controller"),
        Some("8086:7010"),
        "{}",
        ide.record
    );
    assert_eq!(image.len() as u64, DISK_BYTES);
    assert_eq!(pattern_mismatches(image, seed, sectors), 0);
    assert!(
        image[(sectors * SECTOR) as usize..].iter().all(|&b| b == 0),
        "nothing written past the pattern"
    );
}

#[test]
fn dma_pattern_reaches_a_raw_image_in_both_profiles() {
    for (seed, profile) in [(3, "linux"), (4, "batched")] {
        let dir = TempDir::new(&format!("dma-{profile}"));
        let disk = raw_image(&dir.0);

        let out = boot(
            &disk,
            &format!("blk-pattern sectors={DMA_SECTORS} seed={seed} profile={profile}"),
        );

        assert_pattern(
            &out,
            &std::fs::read(&disk).unwrap(),
            seed,
            DMA_SECTORS,
            "dma",
        );
        let c = &out.device_counters["ide"];
        assert_eq!(c["sectors_written"], DMA_SECTORS, "{c:?}");
        assert!(c["cmd_dma_write"] > 0 && c["cmd_pio_write"] == 0, "{c:?}");
        assert_eq!(c["bm_errors"], 0, "{c:?}");
    }
}

#[test]
fn pio_pattern_reaches_a_raw_image_in_both_command_forms() {
    for (seed, args) in [
        (5, "mode=pio"),
        (6, "mode=pio profile=batched multi=0 ext=1 width=16"),
    ] {
        let dir = TempDir::new(&format!("pio-{seed}"));
        let disk = raw_image(&dir.0);

        let out = boot(
            &disk,
            &format!("blk-pattern sectors={PIO_SECTORS} seed={seed} {args}"),
        );

        assert_pattern(
            &out,
            &std::fs::read(&disk).unwrap(),
            seed,
            PIO_SECTORS,
            "pio",
        );
        let c = &out.device_counters["ide"];
        assert!(c["cmd_pio_write"] > 0 && c["cmd_dma_write"] == 0, "{c:?}");
    }
}

#[test]
fn patterns_on_a_qcow2_image_check_clean_through_dma_and_pio() {
    for (seed, sectors, args) in [(11, DMA_SECTORS, ""), (12, PIO_SECTORS, "mode=pio")] {
        let dir = TempDir::new(&format!("qcow2-{seed}"));
        let q = dir.0.join("disk.img"); // the format comes from the header, not the name
        let qs = q.to_str().unwrap();
        qemu_img(&["create", "-q", "-f", "qcow2", qs, &DISK_BYTES.to_string()]);

        let out = boot(
            &q,
            &format!("blk-pattern sectors={sectors} seed={seed} {args}"),
        );

        let check = qemu_img(&["check", qs]);
        assert!(check.contains("No errors were found"), "{check}");
        let bytes = qcow2_contents(Path::new(qs), &dir.0.join("back.raw"));
        let mode = if args.is_empty() { "dma" } else { "pio" };
        assert_pattern(&out, &bytes, seed, sectors, mode);
    }
}

#[test]
fn random_4k_reads_cost_one_exit_per_counted_access() {
    let dir = TempDir::new("rand");
    let disk = raw_image(&dir.0);
    // Port accesses per 4 KiB read besides polls and data, as in ide_qemu.rs.
    for (mode, profile, protocol, data) in [
        ("dma", "linux", 26.0, 0.0),
        ("dma", "batched", 11.0, 0.0),
        ("pio", "linux", 19.0, 1024.0),
        ("pio", "batched", 8.0, 1024.0),
    ] {
        let out = boot(
            &disk,
            &format!(
                "blk-read pattern=rand bs=4096 qd=1 duration_ms=300 warmup_ms=50 mode={mode} profile={profile}"
            ),
        );

        assert_exited_ok(&out);
        let r = result(&out, "blk-read");
        let ops = field(r, "ops");
        assert!(ops > 0, "{r}");
        assert_eq!(field(r, "errors"), 0, "{r}");
        assert_eq!(field(r, "bytes"), ops * 4096, "{r}");
        assert_eq!(r.get("mode"), Some(mode), "{r}");
        assert_eq!(r.get("profile"), Some(profile), "{r}");
        let (all, polls) = (decimal(r, "pio_accesses"), decimal(r, "pio_polls"));
        assert_eq!(decimal(r, "pio_data"), data, "{r}");
        assert!(
            (all - polls - data - protocol).abs() < 0.005,
            "{mode}/{profile}: {r}"
        );
        let w = vmbench::session::window(&out).expect("a measured window");
        let ide_exits = w.exits.by_device.get("ide").copied().unwrap_or(0) as f64 / ops as f64;
        if mode == "dma" {
            // Every access is one exit (the window also holds the request that straddles its
            // end, hence the slack).
            let slack = (all + 1.0) / ops as f64 + 0.01;
            assert!(
                (ide_exits - all).abs() <= slack,
                "{ide_exits} exits/op for {r}"
            );
        } else {
            // A string instruction exits at least once; KVM batches `rep insd` up to a page.
            assert!(
                ide_exits >= all - data && ide_exits <= all,
                "{ide_exits} exits/op for {r}"
            );
        }
    }
}

#[test]
fn refused_commands_come_back_as_errors_and_the_disk_stays_usable() {
    let dir = TempDir::new("check");
    let disk = raw_image(&dir.0);
    for args in ["mode=dma", "mode=pio profile=batched"] {
        let out = boot(&disk, &format!("ide-check {args}"));

        assert_exited_ok(&out);
        let r = result(&out, "ide-check");
        assert_eq!(r.get("last_sector"), Some("ok"), "{r}");
        assert_eq!(r.get("past_end"), Some("refused"), "{r}");
        // ATA-6: IDNF for an address past the end (QEMU says ABRT instead).
        assert_eq!(r.get("past_end_error"), Some("0x10"), "{r}");
        assert_eq!(r.get("nop"), Some("refused"), "{r}");
        assert_eq!(r.get("nop_error"), Some("0x04"), "{r}");
        assert_eq!(r.get("after"), Some("ok"), "{r}");
    }
}
