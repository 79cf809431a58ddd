//! The block workloads and the disk they drive: a pattern write and read-back that the host
//! verifies byte for byte, and timed sequential or random reads and writes at a queue depth,
//! every latency measured with the TSC. The disk is chosen by `disk=auto|virtio|ide` (auto:
//! virtio-blk 1af4:1042 if present, else the PIIX IDE primary master), with the IDE driver's
//! options (`mode=dma|pio`, `multi=1|0` for READ/WRITE MULTIPLE, `ext=0|1` to force LBA48
//! commands, `width=32|16` for the data port) and `profile=linux|batched|poll`; both disks sit
//! behind one synchronous interface for the pattern workload; the IDE stream loop keeps one
//! command in flight, as the hardware has it.

use core::fmt;
use core::str::SplitAsciiWhitespace;

use probe_abi::exit;

use crate::args::Args;
use crate::blk::{self, Blk, SECTOR, T_IN, T_OUT};
use crate::ide::{self, Counts, Ide, Mode, Profile};
use crate::io::rdtsc;
use crate::report::Record;
use crate::window::Window;
use crate::{pci, virtio, Env};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Which {
    Auto,
    Virtio,
    Ide,
}

/// The disk arguments of a block workload.
pub struct Selection {
    pub which: Which,
    pub profile: Profile,
    pub mode: Mode,
    pub multiple: bool,
    pub lba48: bool,
    pub pio32: bool,
    /// The first IDE-only argument given, which a virtio disk refuses.
    ide_arg: Option<&'static str>,
}

impl Selection {
    pub fn parse(a: &mut Args) -> Selection {
        let which = a.choice(
            "disk",
            Which::Auto,
            &[
                ("auto", Which::Auto),
                ("virtio", Which::Virtio),
                ("ide", Which::Ide),
            ],
        );
        let profile = a.profile();
        let mut ide_arg = None;
        let mut note = |key: &'static str, given: bool| {
            if given && ide_arg.is_none() {
                ide_arg = Some(key);
            }
        };
        let mode_s = a.str("mode", "");
        note("mode", !mode_s.is_empty());
        let mode = match mode_s {
            "" | "dma" => Mode::Dma,
            "pio" => Mode::Pio,
            other => {
                a.bad("mode", other, "dma or pio");
                Mode::Dma
            }
        };
        let mut flag = |a: &mut Args, key: &'static str, default: bool| {
            let v = a.str(key, "");
            note(key, !v.is_empty());
            match v {
                "" => default,
                "1" => true,
                "0" => false,
                other => {
                    a.bad(key, other, "0 or 1");
                    default
                }
            }
        };
        let multiple = flag(a, "multi", true);
        let lba48 = flag(a, "ext", false);
        let width = a.str("width", "");
        note("width", !width.is_empty());
        let pio32 = match width {
            "" | "32" => true,
            "16" => false,
            other => {
                a.bad("width", other, "32 or 16");
                true
            }
        };
        Selection {
            which,
            profile,
            mode,
            multiple,
            lba48,
            pio32,
            ide_arg,
        }
    }

    /// `auto` made concrete: virtio-blk when the bus has one, else IDE.
    pub fn resolve(&self) -> Which {
        match self.which {
            Which::Auto if pci::find(virtio::VENDOR, 0x1042).is_some() => Which::Virtio,
            Which::Auto => Which::Ide,
            w => w,
        }
    }

    pub fn profile_name(&self) -> &'static str {
        self.profile.name()
    }

    /// An error record if IDE-only arguments were given for a virtio disk.
    pub fn check_virtio(&self, env: &Env, workload: &str) -> Result<(), u32> {
        match self.ide_arg {
            Some(k) => {
                Record::new("error")
                    .text(format_args!(
                        "{workload}: {k}= applies to IDE disks; this run drives virtio-blk"
                    ))
                    .send(env);
                Err(exit::BAD_EXEC)
            }
            None => Ok(()),
        }
    }

    fn ide_options(&self, buffer: u64) -> ide::Options {
        ide::Options {
            mode: self.mode,
            profile: self.profile,
            multiple: self.multiple,
            lba48: self.lba48,
            pio32: self.pio32,
            buffer,
        }
    }
}

#[derive(Debug)]
pub enum DiskError {
    Virtio(virtio::Error),
    Ide(ide::Error),
}

impl fmt::Display for DiskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskError::Virtio(e) => write!(f, "virtio-blk: {e}"),
            DiskError::Ide(e) => write!(f, "ide: {e}"),
        }
    }
}

/// Either disk, one synchronous request at a time.
// One lives on the stack per workload, and the probe has no heap to box the large one in.
#[allow(clippy::large_enum_variant)]
pub enum Disk {
    Virtio(Blk, &'static str),
    Ide(Ide),
}

impl Disk {
    /// Opens the selected disk for requests of up to `max_bytes`; on failure the error record
    /// is sent and the exit status returned.
    pub fn open(
        env: &Env,
        workload: &str,
        sel: &Selection,
        max_bytes: u64,
        queue: u16,
    ) -> Result<Disk, u32> {
        match sel.resolve() {
            Which::Ide => open_ide(env, workload, sel, max_bytes).map(Disk::Ide),
            _ => {
                sel.check_virtio(env, workload)?;
                match Blk::open(env, queue, sel.profile) {
                    Ok(b) => Ok(Disk::Virtio(b, sel.profile_name())),
                    Err(e) => Err(failed(env, workload, DiskError::Virtio(e))),
                }
            }
        }
    }

    pub fn capacity(&self) -> u64 {
        match self {
            Disk::Virtio(b, _) => b.capacity_sectors,
            Disk::Ide(i) => i.capacity(),
        }
    }

    pub fn read_only(&self) -> bool {
        match self {
            Disk::Virtio(b, _) => b.read_only,
            Disk::Ide(_) => false,
        }
    }

    /// Writes `data` at `sector`: Ok(false) when the disk refused the request.
    pub fn write(&mut self, sector: u64, data: &[u8]) -> Result<bool, DiskError> {
        match self {
            Disk::Virtio(b, _) => b
                .sync(blk::T_OUT, sector, Some(data), None, data.len() as u64)
                .map(|st| st == 0)
                .map_err(DiskError::Virtio),
            Disk::Ide(i) => {
                i.buffer()[..data.len()].copy_from_slice(data);
                request(i.write(sector, data.len() as u64 / SECTOR))
            }
        }
    }

    /// Reads into `out` from `sector`: Ok(false) when the disk refused the request.
    pub fn read(&mut self, sector: u64, out: &mut [u8]) -> Result<bool, DiskError> {
        match self {
            Disk::Virtio(b, _) => {
                let len = out.len() as u64;
                b.sync(blk::T_IN, sector, None, Some(out), len)
                    .map(|st| st == 0)
                    .map_err(DiskError::Virtio)
            }
            Disk::Ide(i) => {
                let ok = request(i.read(sector, out.len() as u64 / SECTOR))?;
                out.copy_from_slice(&i.buffer()[..out.len()]);
                Ok(ok)
            }
        }
    }

    /// The flush's status: 0 done, non-zero refused.
    pub fn flush(&mut self) -> Result<u8, DiskError> {
        match self {
            Disk::Virtio(b, _) => b
                .sync(blk::T_FLUSH, 0, None, None, 0)
                .map_err(DiskError::Virtio),
            Disk::Ide(i) => request(i.flush()).map(|ok| u8::from(!ok)),
        }
    }

    /// Adds `disk=`, `mode=` and `profile=` to a result record, and for virtio-blk `kicks=`:
    /// the notifications the driver wrote (with EVENT_IDX, fewer than its requests when it
    /// submits while the device is still draining).
    pub fn describe(&self, r: Record) -> Record {
        match self {
            Disk::Virtio(b, profile) => r
                .kv("disk", "virtio")
                .kv("mode", "virtqueue")
                .kv("profile", profile)
                .kv("kicks", b.q.kicks),
            Disk::Ide(i) => describe_ide(i, r),
        }
    }
}

/// A request's outcome: refused (counted by the caller) unless the disk is gone.
fn request(r: Result<(), ide::Error>) -> Result<bool, DiskError> {
    match r {
        Ok(()) => Ok(true),
        Err(e) if e.is_fatal() => Err(DiskError::Ide(e)),
        Err(_) => Ok(false),
    }
}

fn failed(env: &Env, workload: &str, e: DiskError) -> u32 {
    Record::new("error")
        .text(format_args!("{workload}: {e}"))
        .send(env);
    exit::FAILED
}

fn describe_ide(i: &Ide, r: Record) -> Record {
    let profile = i.opts.profile.name();
    r.kv("disk", "ide")
        .kv("mode", i.opts.mode.name())
        .kv("profile", profile)
}

/// Opens the IDE disk and reports what it found in an `ide` record.
fn open_ide(env: &Env, workload: &str, sel: &Selection, buffer: u64) -> Result<Ide, u32> {
    if sel.profile == Profile::Poll {
        Record::new("error")
            .text(format_args!("{workload}: profile=poll is for virtio-blk (EVENT_IDX, no interrupts); IDE takes profile=linux or batched"))
            .send(env);
        return Err(exit::BAD_EXEC);
    }
    let i = Ide::open(env, sel.ide_options(buffer))
        .map_err(|e| failed(env, workload, DiskError::Ide(e)))?;
    Record::new("ide")
        .kv("controller", format_args!("8086:{:04x}", i.device_id))
        .kv("model", Word(i.id.model()))
        .kv("serial", Word(i.id.serial()))
        .kv("firmware", Word(i.id.firmware()))
        .kv("sectors", i.capacity())
        .kv("lba28_sectors", i.id.lba28_sectors)
        .kv("lba48", u8::from(i.id.lba48))
        .kv("pio", format_args!("pio{}", i.pio_mode))
        .kv("dma", format_args!("{}{}", i.dma_mode.0, i.dma_mode.1))
        .kv("multiple", i.multiple)
        .send(env);
    Ok(i)
}

/// A string as one record word: spaces become underscores.
struct Word<'a>(&'a str);

impl fmt::Display for Word<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            fmt::Write::write_char(f, if c == ' ' { '_' } else { c })?;
        }
        Ok(())
    }
}

/// `mean` with two decimals.
struct Mean(u64, u64);

impl fmt::Display for Mean {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hundredths = (self.0 * 100 + self.1 / 2).checked_div(self.1).unwrap_or(0);
        write!(f, "{}.{:02}", hundredths / 100, hundredths % 100)
    }
}

/// The stream on IDE: one request at a time, each a synchronous command sequence, with the
/// port accesses of the requests inside the window counted.
pub fn stream_ide(env: &Env, st: &Stream, sel: &Selection) -> u32 {
    let name = st.name;
    if st.qd > 1 {
        Record::new("error")
            .text(format_args!(
                "{name}: qd={} on IDE: an ATA channel runs one command at a time; use qd=1",
                st.qd
            ))
            .send(env);
        return exit::BAD_EXEC;
    }
    let mut ide = match open_ide(env, name, sel, st.bs) {
        Ok(i) => i,
        Err(code) => return code,
    };
    let Some(mut pick) = Picker::new(st, ide.capacity()) else {
        Record::new("error")
            .text(format_args!(
                "{name}: the disk is smaller than one {}-byte request",
                st.bs
            ))
            .send(env);
        return exit::BAD_EXEC;
    };
    let sectors = st.bs / SECTOR;
    let mut lat = crate::samples::Samples::new(1 << 20);
    let ticks_ms = u64::from(env.tsc_khz);
    let warm_end = rdtsc() + st.warmup_ms * ticks_ms;
    // Set when the window opens: a whole window even if the vCPU missed the planned one.
    let mut end = u64::MAX;
    let (mut ops, mut errors) = (0u64, 0u64);
    let mut counted = Counts::default();
    let mut measuring = false;
    let mut window_start = 0;
    let mut first_error = None;
    loop {
        let now = rdtsc();
        if !measuring && now >= warm_end {
            measuring = true;
            window_start = now;
            end = now.saturating_add(st.duration_ms * ticks_ms);
            Record::new("window-start").send(env);
        }
        if now >= end {
            break;
        }
        let sector = pick.next_sector();
        let before = ide.n;
        let t = rdtsc();
        let r = if st.write {
            ide.write(sector, sectors)
        } else {
            ide.read(sector, sectors)
        };
        let ticks = rdtsc() - t;
        if let Err(e) = r {
            if e.is_fatal() {
                return failed(env, name, DiskError::Ide(e));
            }
            first_error.get_or_insert(e);
        }
        if measuring && rdtsc() < end {
            ops += 1;
            errors += u64::from(r.is_err());
            lat.push(env.ns(ticks));
            counted.add(&ide.n.since(&before));
        }
    }
    let window_ns = env.ns(end.min(rdtsc()) - window_start);
    Record::new("window-end").kv("ops", ops).send(env);
    if let Some(e) = first_error {
        Record::new("log")
            .text(format_args!("{name}: first failed request: {e}"))
            .send(env);
    }
    lat.report(env, name, "latency", st.raw);
    let r = Record::new("result")
        .kv("name", name)
        .kv("ops", ops)
        .kv("bytes", ops * st.bs)
        .kv("errors", errors)
        .kv("window_ns", window_ns)
        .kv("qd", 1)
        .kv("bs", st.bs);
    describe_ide(&ide, r)
        .kv("pio_accesses", Mean(counted.accesses, ops))
        .kv("pio_polls", Mean(counted.polls, ops))
        .kv("pio_data", Mean(counted.data, ops))
        .kv("ata_cmds", Mean(counted.commands, ops))
        .send(env);
    if errors > 0 {
        return errors_seen(env, name, format_args!("{errors} request(s) failed"));
    }
    exit::OK
}

/// `ide-check` plus the IDE options: the driver's error paths against the disk. Reads the
/// last sector, one past the end (the disk must refuse it: IDNF or ABRT), issues NOP (00h,
/// which ATA-6 says always aborts), then reads sector 0 again: each refusal must come back as
/// an error for that request, never a hang, and the disk must stay usable.
pub fn check(env: &Env, args: core::str::SplitAsciiWhitespace) -> u32 {
    let mut a = Args::new(env, "ide-check", args);
    let sel = Selection::parse(&mut a);
    if !a.finish() {
        return exit::BAD_EXEC;
    }
    if sel.which == Which::Virtio {
        Record::new("error")
            .text(format_args!(
                "ide-check: disk=virtio: this workload checks the IDE driver"
            ))
            .send(env);
        return exit::BAD_EXEC;
    }
    let mut ide = match open_ide(env, "ide-check", &sel, SECTOR) {
        Ok(i) => i,
        Err(code) => return code,
    };
    let last = ide.capacity() - 1;
    let outcome = |r: Result<(), ide::Error>| match r {
        Ok(()) => (0u8, 0u8, "ok"),
        Err(ide::Error::Device { status, error, .. }) => (status, error, "refused"),
        Err(ide::Error::Timeout { .. }) => (0, 0, "timeout"),
        Err(_) => (0, 0, "failed"),
    };
    let r_last = outcome(ide.read(last, 1));
    let r_past = outcome(ide.read(last + 1, 1));
    let r_nop = outcome(ide.nodata(0x00));
    let r_after = outcome(ide.read(0, 1));
    let r = Record::new("result")
        .kv("name", "ide-check")
        .kv("last_sector", r_last.2)
        .kv("past_end", r_past.2)
        .kv("past_end_status", format_args!("{:#04x}", r_past.0))
        .kv("past_end_error", format_args!("{:#04x}", r_past.1))
        .kv("nop", r_nop.2)
        .kv("nop_error", format_args!("{:#04x}", r_nop.1))
        .kv("after", r_after.2);
    describe_ide(&ide, r).send(env);
    exit::OK
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
    if write_errors + read_errors + mismatches > 0 {
        return errors_seen(
            env,
            "blk-pattern",
            format_args!("{write_errors} failed write(s), {read_errors} failed read(s), {mismatches} byte(s) read back wrong"),
        );
    }
    exit::OK
}

/// A workload that saw errors ends failed, after its result record said how many.
pub fn errors_seen(env: &Env, name: &str, what: core::fmt::Arguments) -> u32 {
    Record::new("error")
        .text(format_args!("{name}: {what}"))
        .send(env);
    exit::FAILED
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
        qd: a.u64_in("qd", 1, 1, probe_abi::limits::BLK_QUEUE_DEPTH_MAX) as usize,
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
        Which::Ide => stream_ide(env, &s, &sel),
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
    if errors > 0 {
        return errors_seen(env, name, format_args!("{errors} request(s) failed"));
    }
    exit::OK
}
