//! Block workloads on the disk under test, through Linux's own driver (virtio_blk or
//! ata_piix + sd), with O_DIRECT so every request reaches the device.

use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::args::Args;
use crate::rec::Record;
use crate::samples::Samples;
use crate::Outcome;

const SECTOR: u64 = 512;
const ALIGN: usize = 4096;

/// The disk under test: `/dev/vdX` (virtio_blk) or `/dev/sdX` (ata_piix through sd).
struct Disk {
    name: String,
    kind: &'static str,
    sectors: u64,
}

/// Finds the disk `want` (auto|virtio|ide), waiting up to 10 s for the driver's probe.
fn find_disk(want: &str) -> Result<Disk, String> {
    if !matches!(want, "auto" | "virtio" | "ide") {
        return Err(format!("`disk={want}`: use auto, virtio or ide"));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut names: Vec<String> = std::fs::read_dir("/sys/block")
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        let pick = |prefix: &str| names.iter().find(|n| n.starts_with(prefix)).cloned();
        let found = match want {
            "virtio" => pick("vd").map(|n| (n, "virtio")),
            "ide" => pick("sd").map(|n| (n, "ide")),
            _ => pick("vd")
                .map(|n| (n, "virtio"))
                .or_else(|| pick("sd").map(|n| (n, "ide"))),
        };
        if let Some((name, kind)) = found {
            crate::irq::under_test(&name, &format!("/sys/block/{name}"));
            let sectors = std::fs::read_to_string(format!("/sys/block/{name}/size"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            return Ok(Disk {
                name,
                kind,
                sectors,
            });
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no {want} disk appeared in 10 s (block devices: {})",
                if names.is_empty() {
                    "none".into()
                } else {
                    names.join(", ")
                }
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Disk {
    fn open(&self) -> Result<File, String> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(format!("/dev/{}", self.name))
            .map_err(|e| format!("cannot open /dev/{} with O_DIRECT: {e}", self.name))
    }

    fn describe(&self, r: Record) -> Record {
        r.kv("disk", self.kind)
            .kv("dev", &self.name)
            .kv(
                "driver",
                crate::sys::driver_of(&format!("/sys/block/{}", self.name)),
            )
            .kv("mode", "linux")
    }
}

/// A buffer of `len` bytes aligned for O_DIRECT.
struct Aligned {
    v: Vec<u8>,
    off: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let v = vec![0u8; len + ALIGN];
        let off = v.as_ptr().align_offset(ALIGN);
        Aligned { v, off, len }
    }
    fn get(&mut self, n: usize) -> &mut [u8] {
        &mut self.v[self.off..self.off + n.min(self.len)]
    }
}

/// `blk-pattern sectors=N seed=S [start=N] [disk=auto|virtio|ide]`: writes
/// `probe_abi::pattern_byte(seed, offset)` in 64 KiB requests, flushes, reads it back and
/// compares (the host then checks the image), as the probe's workload of the same name.
pub fn pattern(words: &[&str]) -> Outcome {
    let a = Args::parse(words, &["sectors", "seed", "start", "disk"])?;
    let sectors: u64 = a.num("sectors", 2048)?;
    let seed: u64 = a.num("seed", 1)?;
    let start: u64 = a.num("start", 0)?;
    let d = find_disk(a.str("disk", "auto"))?;
    let end = start + sectors;
    if end > d.sectors {
        return Err(format!(
            "sectors {start}..{end} lie past the end of /dev/{} ({} sectors)",
            d.name, d.sectors
        ));
    }
    let f = d.open()?;
    let chunk = 128u64;
    let mut buf = Aligned::new((chunk * SECTOR) as usize);
    let (mut write_errors, mut read_errors, mut mismatches) = (0u64, 0u64, 0u64);
    let mut s = start;
    while s < end {
        let n = chunk.min(end - s);
        let b = buf.get((n * SECTOR) as usize);
        for (i, x) in b.iter_mut().enumerate() {
            *x = probe_abi::pattern_byte(seed, s * SECTOR + i as u64);
        }
        if f.write_all_at(b, s * SECTOR).is_err() {
            write_errors += 1;
        }
        s += n;
    }
    let flush_status = match f.sync_all() {
        Ok(()) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    };
    s = start;
    while s < end {
        let n = chunk.min(end - s);
        let b = buf.get((n * SECTOR) as usize);
        b.fill(0);
        match f.read_exact_at(b, s * SECTOR) {
            Ok(()) => {
                for (i, &x) in b.iter().enumerate() {
                    if x != probe_abi::pattern_byte(seed, s * SECTOR + i as u64) {
                        mismatches += 1;
                    }
                }
            }
            Err(_) => read_errors += 1,
        }
        s += n;
    }
    let r = Record::new("result")
        .kv("name", "blk-pattern")
        .kv("sectors", sectors)
        .kv("capacity_sectors", d.sectors)
        .kv("read_only", 0)
        .kv("write_errors", write_errors)
        .kv("read_errors", read_errors)
        .kv("flush_status", flush_status)
        .kv("mismatches", mismatches);
    d.describe(r).send();
    if write_errors + read_errors + mismatches > 0 || flush_status != 0 {
        return Err(format!(
            "{write_errors} write errors, {read_errors} read errors, {mismatches} mismatched bytes, flush status {flush_status}"
        ));
    }
    Ok(())
}

/// A small xorshift generator for random offsets.
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Starts and stops the I/O threads of a stream around the measured window: [`Gate::pause`]
/// waits until no request is in flight, so what the device counts between two pauses is
/// exactly the requests counted between them.
#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    paused: bool,
    measuring: bool,
    stopped: bool,
    in_flight: usize,
    /// Requests completed while measuring.
    counted: u64,
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits while paused; `None` once stopped, else whether the request about to start is
    /// counted.
    fn begin(&self) -> Option<bool> {
        let mut s = self.lock();
        while s.paused && !s.stopped {
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        if s.stopped {
            return None;
        }
        s.in_flight += 1;
        Some(s.measuring)
    }

    fn end(&self, counted: bool) {
        let mut s = self.lock();
        s.in_flight -= 1;
        s.counted += u64::from(counted);
        self.changed.notify_all();
    }

    /// Holds new requests back and waits for those in flight; returns the requests counted.
    fn pause(&self) -> u64 {
        let mut s = self.lock();
        s.paused = true;
        while s.in_flight > 0 {
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.measuring = false;
        s.counted
    }

    /// Lets requests go again, counted or not.
    fn open(&self, measuring: bool) {
        let mut s = self.lock();
        s.paused = false;
        s.measuring = measuring;
        self.changed.notify_all();
    }

    fn stop(&self) {
        self.lock().stopped = true;
        self.changed.notify_all();
    }
}

/// `blk-read|blk-write pattern=seq|rand bs=BYTES qd=N seed=S warmup_ms= duration_ms=
/// [disk=]`: timed O_DIRECT requests from `qd` threads (Linux keeps `qd` requests in flight),
/// each with its own latency; a `latency` record and a `result` with ops, bytes, errors,
/// window_ns, qd, bs.
pub fn stream(words: &[&str], write: bool) -> Outcome {
    let name = if write { "blk-write" } else { "blk-read" };
    let a = Args::parse(
        words,
        &[
            "pattern",
            "bs",
            "qd",
            "seed",
            "warmup_ms",
            "duration_ms",
            "disk",
        ],
    )?;
    let random = match a.str("pattern", "seq") {
        "seq" => false,
        "rand" => true,
        p => return Err(format!("`pattern={p}`: use seq or rand")),
    };
    let bs: u64 = a.num("bs", 4096)?;
    let qd: usize = a.num("qd", 1)?;
    let seed: u64 = a.num("seed", 1)?;
    let warmup_ms: u64 = a.num("warmup_ms", 200)?;
    let duration_ms: u64 = a.num("duration_ms", 1000)?;
    if bs == 0 || !bs.is_multiple_of(SECTOR) || bs > 16 << 20 {
        return Err(format!("`bs={bs}`: use a multiple of 512 up to 16 MiB"));
    }
    if !(1..=256).contains(&qd) {
        return Err(format!("`qd={qd}`: use 1 to 256"));
    }
    let d = find_disk(a.str("disk", "auto"))?;
    let blocks = d.sectors * SECTOR / bs;
    if blocks == 0 {
        return Err(format!(
            "/dev/{} is smaller than one {bs}-byte block",
            d.name
        ));
    }
    let gate = Arc::new(Gate::default());
    let errors = Arc::new(AtomicU64::new(0));
    let cursor = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for t in 0..qd {
        let f = d.open()?;
        let (gate, errors, cursor) = (gate.clone(), errors.clone(), cursor.clone());
        threads.push(std::thread::spawn(move || {
            let mut buf = Aligned::new(bs as usize);
            let b = buf.get(bs as usize);
            for (i, x) in b.iter_mut().enumerate() {
                *x = probe_abi::pattern_byte(seed, i as u64);
            }
            let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (t as u64 + 1);
            let mut lat = Samples::default();
            while let Some(counted) = gate.begin() {
                let block = if random {
                    next(&mut rng) % blocks
                } else {
                    cursor.fetch_add(1, Ordering::Relaxed) % blocks
                };
                let t0 = Instant::now();
                let r = if write {
                    f.write_all_at(b, block * bs)
                } else {
                    f.read_exact_at(b, block * bs)
                };
                let ns = t0.elapsed().as_nanos() as u64;
                if counted {
                    if r.is_err() {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    lat.push(ns);
                }
                gate.end(counted);
            }
            lat
        }));
    }
    std::thread::sleep(Duration::from_millis(warmup_ms));
    // The window's records carry the VMM's counters as they are at their newline: no request
    // may be in flight while each is printed, so that the device's counts between the two are
    // exactly those of the requests counted.
    gate.pause();
    Record::new("window-start").send();
    let opened = Instant::now();
    gate.open(true);
    std::thread::sleep(Duration::from_millis(duration_ms));
    let n = gate.pause();
    let window_ns = opened.elapsed().as_nanos() as u64;
    Record::new("window-end").kv("ops", n).send();
    gate.stop();
    let mut lat = Samples::default();
    for t in threads {
        lat.extend(t.join().map_err(|_| "an I/O thread panicked".to_string())?);
    }
    lat.report(name, "latency");
    let errs = errors.load(Ordering::Relaxed);
    let r = Record::new("result")
        .kv("name", name)
        .kv("ops", n)
        .kv("bytes", n * bs)
        .kv("errors", errs)
        .kv("window_ns", window_ns)
        .kv("qd", qd)
        .kv("bs", bs)
        .kv("pattern", if random { "rand" } else { "seq" });
    d.describe(r).send();
    if errs > 0 {
        return Err(format!("{errs} of {n} requests failed"));
    }
    Ok(())
}
