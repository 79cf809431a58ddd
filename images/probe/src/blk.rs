//! The virtio-blk driver (virtio 1.2, 5.2) and the block workloads: a pattern write and
//! read-back that the host verifies byte for byte, and timed sequential or random reads and
//! writes at a queue depth, every latency measured with the TSC. The workloads drive
//! virtio-blk or the PIIX IDE disk (disk.rs chooses).

use core::str::SplitAsciiWhitespace;

use probe_abi::exit;

use crate::alloc;
use crate::args::{Args, Profile};
use crate::disk::{self, Disk, Selection, Which};
use crate::io::rdtsc;
use crate::report::Record;
use crate::virtio::{self, Device, Queue};
use crate::window::Window;
use crate::Env;

pub const T_IN: u32 = 0;
pub const T_OUT: u32 = 1;
pub const T_FLUSH: u32 = 4;
pub const SECTOR: u64 = 512;
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
    /// `profile=linux` negotiates EVENT_IDX, as Linux's virtio_blk does; `batched` notifies
    /// once per batch of new requests whatever the device is doing.
    pub fn open(env: &Env, queue_size: u16, profile: Profile) -> Result<Blk, virtio::Error> {
        let dev = Device::find(2)?;
        let event_idx = match profile {
            Profile::Linux => virtio::F_RING_EVENT_IDX,
            Profile::Batched => 0,
        };
        let f = dev.begin(F_RO | F_FLUSH | event_idx)?;
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
        let head = self
            .q
            .push(&bufs[..n])
            .ok_or(virtio::Error::QueueUnavailable(0))?;
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
                let s = self.slots[usize::from(head) % 256]
                    .ok_or(virtio::Error::QueueUnavailable(0))?;
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
    pub fn sync(
        &mut self,
        kind: u32,
        sector: u64,
        data: Option<&[u8]>,
        out: Option<&mut [u8]>,
        len: u64,
    ) -> Result<u8, virtio::Error> {
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

fn fail(env: &Env, what: &str, e: impl core::fmt::Display) -> u32 {
    Record::new("error")
        .text(format_args!("{what}: {e}"))
        .send(env);
    exit::FAILED
}

/// `blk-pattern sectors=N seed=S [start=N]` plus the disk selection (disk.rs): writes the
/// pattern, flushes, reads it back and compares.
pub fn pattern(env: &Env, args: SplitAsciiWhitespace) -> u32 {
    let mut a = Args::new(env, "blk-pattern", args);
    let sectors = a.u64("sectors", 2048);
    let seed = a.u64("seed", 1);
    let start = a.u64("start", 0);
    let sel = Selection::parse(&mut a);
    if !a.finish() {
        return exit::BAD_EXEC;
    }
    let chunk = 128u64; // sectors per request: 64 KiB
    let mut d = match Disk::open(env, "blk-pattern", &sel, chunk * SECTOR, 64) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let mut buf = [0u8; 65536];
    let (mut write_errors, mut read_errors, mut mismatches) = (0u64, 0u64, 0u64);
    let end = (start + sectors).min(d.capacity());
    let mut s = start;
    while s < end {
        let n = chunk.min(end - s);
        let len = (n * SECTOR) as usize;
        for (i, b) in buf[..len].iter_mut().enumerate() {
            *b = probe_abi::pattern_byte(seed, s * SECTOR + i as u64);
        }
        match d.write(s, &buf[..len]) {
            Ok(true) => {}
            Ok(false) => write_errors += 1,
            Err(e) => return fail(env, "write", e),
        }
        s += n;
    }
    let flush = match d.flush() {
        Ok(st) => st,
        Err(e) => return fail(env, "flush", e),
    };
    s = start;
    while s < end {
        let n = chunk.min(end - s);
        let len = (n * SECTOR) as usize;
        match d.read(s, &mut buf[..len]) {
            Ok(true) => {
                for (i, &b) in buf[..len].iter().enumerate() {
                    if b != probe_abi::pattern_byte(seed, s * SECTOR + i as u64) {
                        mismatches += 1;
                    }
                }
            }
            Ok(false) => read_errors += 1,
            Err(e) => return fail(env, "read", e),
        }
        s += n;
    }
    let r = Record::new("result")
        .kv("name", "blk-pattern")
        .kv("sectors", end.saturating_sub(start))
        .kv("capacity_sectors", d.capacity())
        .kv("read_only", u8::from(d.read_only()))
        .kv("write_errors", write_errors)
        .kv("read_errors", read_errors)
        .kv("flush_status", flush)
        .kv("mismatches", mismatches);
    d.describe(r).send(env);
    exit::OK
}

/// A timed stream's parameters.
pub struct Stream {
    pub name: &'static str,
    pub write: bool,
    pub random: bool,
    pub bs: u64,
    pub qd: usize,
    pub duration_ms: u64,
    pub warmup_ms: u64,
    pub raw: bool,
    pub seed: u64,
}

/// The sectors a stream visits: random `bs`-aligned offsets, or sequential with wrap-around.
pub struct Picker {
    random: bool,
    rng: u64,
    span: u64,
    step: u64,
    capacity: u64,
    next_seq: u64,
}

impl Picker {
    /// None if the disk is smaller than one request.
    pub fn new(s: &Stream, capacity: u64) -> Option<Picker> {
        let step = s.bs / SECTOR;
        let span = capacity.checked_sub(step).filter(|&x| x > 0)?;
        Some(Picker {
            random: s.random,
            rng: s.seed.max(1),
            span,
            step,
            capacity,
            next_seq: 0,
        })
    }

    pub fn next_sector(&mut self) -> u64 {
        if self.random {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            (self.rng % (self.span + 1)) / self.step * self.step
        } else {
            let s = self.next_seq;
            self.next_seq = if s + 2 * self.step > self.capacity {
                0
            } else {
                s + self.step
            };
            s
        }
    }
}

/// `blk-read|blk-write pattern=seq|rand bs=BYTES qd=N duration_ms=D warmup_ms=W` plus the
/// disk selection (disk.rs).
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
    let s = Stream {
        name,
        write,
        random,
        bs: a.u64("bs", 4096),
        qd: a.u64("qd", 1).clamp(1, 128) as usize,
        duration_ms: a.u64("duration_ms", 1000),
        warmup_ms: a.u64("warmup_ms", 200),
        raw: a.u64("raw", 0) != 0,
        seed: a.u64("seed", 0x2545_F491_4F6C_DD1D),
    };
    let sel = Selection::parse(&mut a);
    if !a.finish() {
        return exit::BAD_EXEC;
    }
    if s.bs == 0 || !s.bs.is_multiple_of(SECTOR) || s.bs > (4 << 20) {
        Record::new("error")
            .text(format_args!(
                "{name}: bs must be a multiple of 512 up to 4 MiB"
            ))
            .send(env);
        return exit::BAD_EXEC;
    }
    match sel.resolve() {
        Which::Ide => disk::stream_ide(env, &s, &sel),
        _ => stream_virtio(env, &s, &sel),
    }
}

fn stream_virtio(env: &Env, st: &Stream, sel: &Selection) -> u32 {
    let name = st.name;
    if let Err(code) = sel.check_virtio(env, name) {
        return code;
    }
    let mut blk = match Blk::open(env, 256, sel.profile) {
        Ok(b) => b,
        Err(e) => return fail(env, name, e),
    };
    let Some(mut pick) = Picker::new(st, blk.capacity_sectors) else {
        Record::new("error")
            .text(format_args!(
                "{name}: the disk is smaller than one {}-byte request",
                st.bs
            ))
            .send(env);
        return exit::BAD_EXEC;
    };
    let (bs, qd) = (st.bs, st.qd);
    let kind = if st.write { T_OUT } else { T_IN };
    let mut lat = crate::samples::Samples::new(1 << 20);
    let mut window = Window::new(env, st.warmup_ms, st.duration_ms);
    let mut in_flight = 0usize;
    let (mut ops, mut errors) = (0u64, 0u64);
    let mut kicks_at_start = None;
    loop {
        let now = rdtsc();
        let measuring = window.tick(env, now);
        if measuring && kicks_at_start.is_none() {
            kicks_at_start = Some(blk.q.kicks);
        }
        let done = window.over(now);
        let mut queued = false;
        while !done && in_flight < qd && blk.q.free() >= 3 {
            if let Err(e) = blk.submit(kind, pick.next_sector(), bs) {
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
            Ok((_, status, ticks)) => {
                in_flight -= 1;
                if measuring {
                    ops += 1;
                    if status != 0 {
                        errors += 1;
                    }
                    lat.push(env.ns(ticks));
                }
            }
            Err(e) => return fail(env, name, e),
        }
    }
    let window_ns = window.close(env, ops);
    let kicks = blk.q.kicks - kicks_at_start.unwrap_or(blk.q.kicks);
    lat.report(env, name, "latency", st.raw);
    Record::new("result")
        .kv("name", name)
        .kv("ops", ops)
        .kv("bytes", ops * bs)
        .kv("errors", errors)
        .kv("kicks", kicks)
        .kv("window_ns", window_ns)
        .kv("qd", qd)
        .kv("bs", bs)
        .kv("profile", sel.profile_name())
        .kv("disk", "virtio")
        .kv("mode", "virtqueue")
        .send(env);
    exit::OK
}
