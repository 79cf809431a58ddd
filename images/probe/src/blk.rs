//! The virtio-blk driver (virtio 1.2, 5.2) and the block workloads: a pattern write and
//! read-back that the host verifies byte for byte, and timed sequential or random reads and
//! writes at a queue depth, every latency measured with the TSC.

use core::str::SplitAsciiWhitespace;

use probe_abi::exit;

use crate::alloc;
use crate::args::Args;
use crate::io::rdtsc;
use crate::report::Record;
use crate::virtio::{self, Device, Queue};
use crate::Env;

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const SECTOR: u64 = 512;
const F_RO: u64 = 1 << 5;
const F_FLUSH: u64 = 1 << 9;

/// One request's memory: header, data, status.
#[derive(Clone, Copy)]
struct Slot {
    hdr: u64,
    data: u64,
    status: u64,
    started: u64,
}

pub struct Blk {
    dev: Device,
    q: Queue,
    pub capacity_sectors: u64,
    pub read_only: bool,
    slots: [Option<Slot>; 256],
    overdue_ticks: u64,
}

impl Blk {
    pub fn open(env: &Env, queue_size: u16) -> Result<Blk, virtio::Error> {
        let dev = Device::find(2)?;
        let f = dev.begin(F_RO | F_FLUSH)?;
        let q = dev.queue(0, queue_size)?;
        dev.driver_ok()?;
        // SAFETY: device config is MMIO of this device; capacity is its first field.
        let capacity_sectors = unsafe { core::ptr::read_volatile(dev.device_cfg as *const u64) };
        Ok(Blk {
            dev,
            q,
            capacity_sectors,
            read_only: f & F_RO != 0,
            slots: [None; 256],
            overdue_ticks: u64::from(env.tsc_khz.max(1_000_000)) * 100,
        })
    }

    fn slot(&mut self, head: u16, bs: u64) -> Result<Slot, virtio::Error> {
        let i = usize::from(head) % self.slots.len();
        if let Some(s) = self.slots[i] {
            return Ok(s);
        }
        let hdr = alloc::alloc(16 + 1, 64).ok_or(virtio::Error::NoMemory)?;
        let data = alloc::alloc(bs.max(SECTOR), 4096).ok_or(virtio::Error::NoMemory)?;
        let s = Slot {
            hdr,
            data,
            status: hdr + 16,
            started: 0,
        };
        self.slots[i] = Some(s);
        Ok(s)
    }

    /// Queues one request (without notifying); the slot's buffers are reused per head.
    fn submit(&mut self, kind: u32, sector: u64, len: u64) -> Result<u16, virtio::Error> {
        // The head a push will use is the free-list head: reserve its slot first.
        let mut bufs = [(0u64, 0u32, false); 3];
        let probe_head = self.q.peek_head();
        let mut s = self.slot(probe_head, len.max(SECTOR * 8))?;
        // SAFETY: the slot's header and status bytes are this driver's allocation.
        unsafe {
            core::ptr::write_volatile(s.hdr as *mut u32, kind);
            core::ptr::write_volatile((s.hdr + 4) as *mut u32, 0);
            core::ptr::write_volatile((s.hdr + 8) as *mut u64, sector);
            core::ptr::write_volatile(s.status as *mut u8, 0xff);
        }
        bufs[0] = (s.hdr, 16, false);
        let n = if len > 0 {
            bufs[1] = (s.data, len as u32, kind == T_IN);
            bufs[2] = (s.status, 1, true);
            3
        } else {
            bufs[1] = (s.status, 1, true);
            2
        };
        s.started = rdtsc();
        let head = self.q.push(&bufs[..n]).ok_or(virtio::Error::QueueUnavailable(0))?;
        self.slots[usize::from(head) % 256] = Some(s);
        Ok(head)
    }

    /// Waits for one completion: (slot, status byte, latency in TSC ticks).
    fn complete(&mut self) -> Result<(Slot, u8, u64), virtio::Error> {
        // Reading the device status is an exit: only look when a completion is long overdue
        // (100 ms), so polling costs nothing in the measured window.
        let mut check_at = rdtsc() + self.overdue_ticks;
        loop {
            if let Some((head, _)) = self.q.pop_used() {
                let now = rdtsc();
                let s = self.slots[usize::from(head) % 256].ok_or(virtio::Error::QueueUnavailable(0))?;
                // SAFETY: the status byte is this driver's allocation, written by the device.
                let st = unsafe { core::ptr::read_volatile(s.status as *const u8) };
                return Ok((s, st, now - s.started));
            }
            let now = rdtsc();
            if now >= check_at {
                if self.dev.needs_reset() {
                    return Err(virtio::Error::NeedsReset);
                }
                check_at = now + self.overdue_ticks;
            }
            crate::io::pause();
        }
    }

    /// One synchronous request; returns its status.
    fn sync(&mut self, kind: u32, sector: u64, data: Option<&[u8]>, out: Option<&mut [u8]>, len: u64) -> Result<u8, virtio::Error> {
        let head = self.submit(kind, sector, len)?;
        let s = self.slots[usize::from(head) % 256].ok_or(virtio::Error::NoMemory)?;
        if let Some(d) = data {
            // SAFETY: the slot's data buffer holds at least `len` bytes (allocated for it).
            unsafe { core::ptr::copy_nonoverlapping(d.as_ptr(), s.data as *mut u8, d.len()) };
        }
        self.q.notify();
        let (s, st, _) = self.complete()?;
        if let Some(o) = out {
            // SAFETY: as above; the device wrote `len` bytes there.
            unsafe { core::ptr::copy_nonoverlapping(s.data as *const u8, o.as_mut_ptr(), o.len()) };
        }
        Ok(st)
    }
}

fn fail(env: &Env, what: &str, e: virtio::Error) -> u32 {
    Record::new("error").text(format_args!("{what}: {e}")).send(env);
    exit::FAILED
}

/// `blk-pattern sectors=N seed=S`: writes the pattern, flushes, reads it back and compares.
pub fn pattern(env: &Env, args: SplitAsciiWhitespace) -> u32 {
    let mut a = Args::new(env, "blk-pattern", args);
    let sectors = a.u64("sectors", 2048);
    let seed = a.u64("seed", 1);
    let start = a.u64("start", 0);
    if !a.finish() {
        return exit::BAD_EXEC;
    }
    let mut blk = match Blk::open(env, 64) {
        Ok(b) => b,
        Err(e) => return fail(env, "virtio-blk", e),
    };
    let chunk = 128u64; // sectors per request: 64 KiB
    let mut buf = [0u8; 65536];
    let (mut write_errors, mut read_errors, mut mismatches) = (0u64, 0u64, 0u64);
    let end = (start + sectors).min(blk.capacity_sectors);
    let mut s = start;
    while s < end {
        let n = chunk.min(end - s);
        let len = (n * SECTOR) as usize;
        for (i, b) in buf[..len].iter_mut().enumerate() {
            *b = probe_abi::pattern_byte(seed, s * SECTOR + i as u64);
        }
        match blk.sync(T_OUT, s, Some(&buf[..len]), None, len as u64) {
            Ok(0) => {}
            Ok(_) => write_errors += 1,
            Err(e) => return fail(env, "write", e),
        }
        s += n;
    }
    let flush = match blk.sync(T_FLUSH, 0, None, None, 0) {
        Ok(st) => st,
        Err(e) => return fail(env, "flush", e),
    };
    s = start;
    while s < end {
        let n = chunk.min(end - s);
        let len = (n * SECTOR) as usize;
        match blk.sync(T_IN, s, None, Some(&mut buf[..len]), len as u64) {
            Ok(0) => {
                for (i, &b) in buf[..len].iter().enumerate() {
                    if b != probe_abi::pattern_byte(seed, s * SECTOR + i as u64) {
                        mismatches += 1;
                    }
                }
            }
            Ok(_) => read_errors += 1,
            Err(e) => return fail(env, "read", e),
        }
        s += n;
    }
    Record::new("result")
        .kv("name", "blk-pattern")
        .kv("sectors", end.saturating_sub(start))
        .kv("capacity_sectors", blk.capacity_sectors)
        .kv("read_only", u8::from(blk.read_only))
        .kv("write_errors", write_errors)
        .kv("read_errors", read_errors)
        .kv("flush_status", flush)
        .kv("mismatches", mismatches)
        .send(env);
    exit::OK
}

/// `blk-read|blk-write pattern=seq|rand bs=BYTES qd=N duration_ms=D warmup_ms=W`.
pub fn stream(env: &Env, write: bool, args: SplitAsciiWhitespace) -> u32 {
    let name = if write { "blk-write" } else { "blk-read" };
    let mut a = Args::new(env, name, args);
    let random = match a.str("pattern", "seq") {
        "seq" => false,
        "rand" => true,
        other => {
            a.bad("pattern", other, "seq or rand");
            false
        }
    };
    let bs = a.u64("bs", 4096);
    let qd = a.u64("qd", 1).clamp(1, 128) as usize;
    let duration_ms = a.u64("duration_ms", 1000);
    let warmup_ms = a.u64("warmup_ms", 200);
    let a_raw = a.u64("raw", 0) != 0;
    // One virtio-blk access pattern; the profile is recorded for the IDE comparison.
    let profile = match a.str("profile", "linux") {
        "linux" => "linux",
        "batched" => "batched",
        other => {
            a.bad("profile", other, "linux or batched");
            "linux"
        }
    };
    let seed = a.u64("seed", 0x2545_F491_4F6C_DD1D);
    if !a.finish() {
        return exit::BAD_EXEC;
    }
    if bs == 0 || !bs.is_multiple_of(SECTOR) || bs > (4 << 20) {
        Record::new("error").text(format_args!("{name}: bs must be a multiple of 512 up to 4 MiB")).send(env);
        return exit::BAD_EXEC;
    }
    let mut blk = match Blk::open(env, 256) {
        Ok(b) => b,
        Err(e) => return fail(env, name, e),
    };
    let span = blk.capacity_sectors.saturating_sub(bs / SECTOR);
    if span == 0 {
        Record::new("error").text(format_args!("{name}: the disk is smaller than one {bs}-byte request")).send(env);
        return exit::BAD_EXEC;
    }
    let kind = if write { T_OUT } else { T_IN };
    let mut rng = seed.max(1);
    let mut next_seq = 0u64;
    let mut next_sector = || {
        if random {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % (span + 1)) / (bs / SECTOR) * (bs / SECTOR)
        } else {
            let s = next_seq;
            next_seq = if next_seq + 2 * (bs / SECTOR) > blk_span_end(span, bs) { 0 } else { next_seq + bs / SECTOR };
            s
        }
    };
    let raw = a_raw;
    let mut lat = crate::samples::Samples::new(1 << 20);
    let ticks_ms = u64::from(env.tsc_khz);
    let t0 = rdtsc();
    let warm_end = t0 + warmup_ms * ticks_ms;
    let end = warm_end + duration_ms * ticks_ms;
    let mut in_flight = 0usize;
    let (mut ops, mut errors) = (0u64, 0u64);
    let mut measuring = false;
    let mut window_start = 0u64;
    loop {
        let now = rdtsc();
        if !measuring && now >= warm_end {
            measuring = true;
            window_start = now;
            Record::new("window-start").send(env);
        }
        let done = now >= end;
        let mut queued = false;
        while !done && in_flight < qd && blk.q.free() >= 3 {
            if let Err(e) = blk.submit(kind, next_sector(), bs) {
                return fail(env, name, e);
            }
            in_flight += 1;
            queued = true;
        }
        // One notification per batch of new requests, as a real driver does.
        if queued {
            blk.q.notify();
        }
        if in_flight == 0 {
            break;
        }
        match blk.complete() {
            Ok((_, st, ticks)) => {
                in_flight -= 1;
                if measuring && !done {
                    ops += 1;
                    if st != 0 {
                        errors += 1;
                    }
                    lat.push(env.ns(ticks));
                }
            }
            Err(e) => return fail(env, name, e),
        }
    }
    let window_ns = env.ns(rdtsc().min(end) - window_start);
    Record::new("window-end").kv("ops", ops).send(env);
    lat.report(env, name, "latency", raw);
    Record::new("result")
        .kv("name", name)
        .kv("ops", ops)
        .kv("bytes", ops * bs)
        .kv("errors", errors)
        .kv("window_ns", window_ns)
        .kv("qd", qd)
        .kv("bs", bs)
        .kv("profile", profile)
        .send(env);
    exit::OK
}

fn blk_span_end(span: u64, bs: u64) -> u64 {
    span + bs / SECTOR
}
