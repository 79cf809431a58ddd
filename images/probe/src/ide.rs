//! PIIX3/PIIX4 IDE (Intel 82371SB/AB datasheets: IDETIM at config 0x40, the bus-master
//! registers of SFF-8038i in BAR4) and a polled ATA driver for the primary master
//! (ATA/ATAPI-6): PIO and bus-master DMA, each command issued with the register traffic of a
//! driver profile (`linux`: what libata's ata_piix does per command; `batched`: the least a
//! correct driver can do). The probe takes no interrupts: where Linux would sleep until
//! INTRQ, the `linux` profile polls the bus-master Interrupt bit instead, and counts those
//! reads as polls.

use core::fmt;

use crate::ata::{self, Identify, Taskfile, BSY, DF, DRDY, DRQ, ERR};
use crate::io::{inb, insw, outb, pause, rdtsc};
use crate::{alloc, pci, Env};

const INTEL: u16 = 0x8086;
pub const PIIX3: u16 = 0x7010;
pub const PIIX4: u16 = 0x7111;

// Command block registers (offsets from 0x1F0); the control block is 0x3F6.
const DATA: u16 = 0;
const ERROR: u16 = 1;
const FEATURE: u16 = 1;
const NSECT: u16 = 2;
const LBAL: u16 = 3;
const DEVICE: u16 = 6;
const STATUS: u16 = 7;
const COMMAND: u16 = 7;

// Bus-master IDE registers of the primary channel (BAR4 + 0, SFF-8038i).
const BM_CMD: u16 = 0;
const BM_STATUS: u16 = 2;
const BM_PRD: u16 = 4;
const BM_START: u8 = 0x01;
/// Read/Write Control: set when the bus master writes memory (a disk read).
const BM_TO_MEMORY: u8 = 0x08;
const BM_ERROR: u8 = 0x02;
const BM_INTR: u8 = 0x04;
const PRD_EOT: u32 = 1 << 31;
const PRD_ENTRIES: usize = 512;

// PIIX configuration registers.
const IDETIM: u8 = 0x40;
const IDETIM_DECODE: u32 = 0x8000;
/// Primary master at PIO 4 / MWDMA 2 (datasheet IDETIM: SITRE, ISP 2 clocks, RCT 1 clock,
/// PPE0, IE0, TIME0) under the decode enable.
const IDETIM_FAST: u32 = IDETIM_DECODE | 0x4000 | (2 << 12) | (3 << 8) | 0x7;
const UDMACTL: u8 = 0x48;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Pio,
    Dma,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Pio => "pio",
            Mode::Dma => "dma",
        }
    }
}

pub use crate::args::Profile;

#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub mode: Mode,
    pub profile: Profile,
    /// READ/WRITE MULTIPLE for PIO (after SET MULTIPLE MODE); READ/WRITE SECTORS otherwise.
    pub multiple: bool,
    /// Always use the LBA48 (EXT) commands, not only where LBA28 cannot address the request.
    pub lba48: bool,
    /// 32-bit data port transfers (ata_piix's default), else 16-bit.
    pub pio32: bool,
    /// The largest request, in bytes: the size of the driver's data buffer.
    pub buffer: u64,
}

/// Port I/O accesses, by kind. `polls` and `data` are also in `accesses`.
#[derive(Clone, Copy, Default, Debug)]
pub struct Counts {
    pub accesses: u64,
    /// Reads repeated because the device was not ready yet, and in the `linux` profile the
    /// reads that stand in for the interrupt Linux would take.
    pub polls: u64,
    /// Data port elements (one per word or dword of a string instruction).
    pub data: u64,
    pub commands: u64,
}

impl Counts {
    pub fn since(&self, e: &Counts) -> Counts {
        Counts {
            accesses: self.accesses - e.accesses,
            polls: self.polls - e.polls,
            data: self.data - e.data,
            commands: self.commands - e.commands,
        }
    }

    pub fn add(&mut self, d: &Counts) {
        self.accesses += d.accesses;
        self.polls += d.polls;
        self.data += d.data;
        self.commands += d.commands;
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Error {
    NoController,
    NotIde(u32),
    ChannelDisabled,
    NoBusMaster,
    NoDevice(u8),
    NotAta([u8; 4]),
    NoLba,
    NoLba48,
    NoMemory,
    Timeout {
        phase: &'static str,
        last: u8,
    },
    Device {
        command: u8,
        status: u8,
        error: u8,
    },
    Protocol {
        command: u8,
        status: u8,
    },
    Bus {
        command: u8,
        bm_status: u8,
    },
    Range {
        lba: u64,
        sectors: u64,
    },
    TooLarge {
        sectors: u64,
    },
    /// A reset after an earlier failure did not bring the device back.
    Dead,
}

impl Error {
    /// Whether further commands cannot succeed.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Error::Dead)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::NoController => write!(f, "no PIIX3/PIIX4 IDE function (8086:7010, 8086:7111) on bus 0"),
            Error::NotIde(c) => write!(f, "the PIIX function has class {c:06x}, not IDE"),
            Error::ChannelDisabled => write!(f, "the primary channel's IDETIM decode enable (config 0x40 bit 15) does not stay set"),
            Error::NoBusMaster => write!(f, "the controller has no bus-master function (programming interface bit 7 or BAR4 missing)"),
            Error::NoDevice(s) => write!(f, "no ATA device on the primary master (status {s:#04x})"),
            Error::NotAta(sig) => write!(f, "the primary master is not an ATA disk (signature {sig:02x?})"),
            Error::NoLba => write!(f, "the disk does not support LBA addressing"),
            Error::NoLba48 => write!(f, "ext=1 asks for LBA48 commands but the disk lacks the feature set"),
            Error::NoMemory => write!(f, "out of guest memory for the PRD table and data buffer"),
            Error::Timeout { phase, last } => write!(f, "timed out waiting in {phase} (last read {last:#04x})"),
            Error::Device { command, status, error } => write!(
                f,
                "command {command:#04x} failed: status {status:#04x} error {error:#04x}{}{}",
                if error & ata::ABRT != 0 { " ABRT" } else { "" },
                if error & ata::IDNF != 0 { " IDNF" } else { "" }
            ),
            Error::Protocol { command, status } => write!(f, "command {command:#04x}: unexpected status {status:#04x}"),
            Error::Bus { command, bm_status } => write!(f, "command {command:#04x}: bus-master error (status {bm_status:#04x})"),
            Error::Range { lba, sectors } => write!(f, "{sectors} sectors at LBA {lba} are beyond what the disk can address"),
            Error::TooLarge { sectors } => write!(f, "{sectors} sectors do not fit the driver's data buffer"),
            Error::Dead => write!(f, "the disk did not come back after a reset"),
        }
    }
}

/// How the first read of a wait counts: the driver's own (it needs the value), or a poll that
/// stands in for the interrupt the probe cannot take.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FirstRead {
    Own,
    Poll,
}

#[derive(Clone, Copy)]
struct Ports {
    cmd: u16,
    ctl: u16,
    bm: u16,
}

pub struct Ide {
    p: Ports,
    pub device_id: u16,
    pub id: Identify,
    pub opts: Options,
    /// Sectors per DRQ block of READ/WRITE MULTIPLE (0 when they are not used).
    pub multiple: u16,
    pub pio_mode: u8,
    /// "mwdma2", "udma2" ...
    pub dma_mode: (&'static str, u8),
    prd: u64,
    buf: u64,
    timeout_ticks: u64,
    tsc_khz: u64,
    /// The batched profile's knowledge of the write-only features register FIFO (current,
    /// previous); None: unknown.
    feat_cur: Option<u8>,
    feat_prev: Option<u8>,
    prd_loaded: bool,
    bm_cmd: Option<u8>,
    /// BM status bits 6:5 (drive DMA capable), R/W: preserved by every write.
    bm_keep: u8,
    /// An interrupt may have set the BM Interrupt bit since it was last cleared.
    intr_dirty: bool,
    dead: bool,
    pub n: Counts,
}

impl Ide {
    /// Finds the controller, resets and identifies the primary master, sets its transfer
    /// modes and (for PIO) its multiple count.
    pub fn open(env: &Env, opts: Options) -> Result<Ide, Error> {
        let f = pci::find(INTEL, PIIX3)
            .or_else(|| pci::find(INTEL, PIIX4))
            .ok_or(Error::NoController)?;
        if f.class >> 8 != 0x0101 {
            return Err(Error::NotIde(f.class));
        }
        let progif = f.class as u8;
        // I/O decoding must be on before the legacy ports answer; bus mastering for DMA.
        f.enable();
        let (cmd, ctl) = if progif & 0x01 == 0 {
            (0x1F0, 0x3F6)
        } else {
            // Native mode: the ports are BAR0 and BAR1 (+2), as ata_pci_sff_init_host maps them.
            let c = f.io_bar(0).ok_or(Error::ChannelDisabled)?;
            let k = f.io_bar(1).ok_or(Error::ChannelDisabled)?;
            (c, k + 2)
        };
        // ata_piix's prereset: the channel is enabled only if IDETIM's decode bit is set.
        // Firmware sets it; qboot does not, so do what firmware does, once.
        let t = f.read(IDETIM);
        if t & IDETIM_DECODE == 0 {
            f.write(IDETIM, t | IDETIM_DECODE);
            crate::log!(env, "ide: firmware left IDETIM decode off; enabled it");
        }
        if f.read(IDETIM) & IDETIM_DECODE == 0 {
            return Err(Error::ChannelDisabled);
        }
        let bm = if progif & 0x80 != 0 {
            f.io_bar(4)
        } else {
            None
        };
        let bm = match (bm, opts.mode) {
            (Some(b), _) => b,
            (None, Mode::Dma) => return Err(Error::NoBusMaster),
            (None, Mode::Pio) => 0,
        };
        let prd = alloc::alloc(PRD_ENTRIES as u64 * 8, 4096).ok_or(Error::NoMemory)?;
        let buf = alloc::alloc(opts.buffer.max(512), 1 << 16).ok_or(Error::NoMemory)?;
        if prd + PRD_ENTRIES as u64 * 8 > u64::from(u32::MAX)
            || buf + opts.buffer > u64::from(u32::MAX)
        {
            return Err(Error::NoMemory);
        }
        let mut ide = Ide {
            p: Ports { cmd, ctl, bm },
            device_id: f.device,
            id: Identify::decode(&[0; 256]),
            opts,
            multiple: 0,
            pio_mode: 0,
            dma_mode: ("none", 0),
            prd,
            buf,
            timeout_ticks: u64::from(env.tsc_khz.max(1_000_000)) * 10_000,
            tsc_khz: u64::from(env.tsc_khz.max(1_000_000)),
            feat_cur: None,
            feat_prev: None,
            prd_loaded: false,
            bm_cmd: None,
            bm_keep: 0,
            intr_dirty: true,
            dead: false,
            n: Counts::default(),
        };
        if bm != 0 {
            ide.bm_keep = inb(bm + BM_STATUS) & 0x60;
            outb(bm + BM_CMD, 0);
        }
        ide.present()?;
        ide.soft_reset()?;
        ide.identify()?;
        if !ide.id.lba {
            return Err(Error::NoLba);
        }
        if opts.mode == Mode::Dma && !ide.id.dma {
            return Err(Error::NoBusMaster);
        }
        if opts.lba48 && !ide.id.lba48 {
            return Err(Error::NoLba48);
        }
        ide.setup(&f)?;
        Ok(ide)
    }

    /// The driver's data buffer (`Options::buffer` bytes), which transfers read into and
    /// write from.
    pub fn buffer(&mut self) -> &mut [u8] {
        // SAFETY: `buf` is this driver's allocation of `opts.buffer` bytes; no transfer is in
        // flight while the caller holds `&mut self`.
        unsafe { alloc::slice::<u8>(self.buf, self.opts.buffer as usize) }
    }

    pub fn capacity(&self) -> u64 {
        self.id.capacity()
    }

    // ---- port access, counted ----

    fn rd(&mut self, port: u16) -> u8 {
        self.n.accesses += 1;
        inb(port)
    }

    fn wr(&mut self, port: u16, v: u8) {
        self.n.accesses += 1;
        outb(port, v);
    }

    fn tf_rd(&mut self, reg: u16) -> u8 {
        self.rd(self.p.cmd + reg)
    }

    fn tf_wr(&mut self, reg: u16, v: u8) {
        self.wr(self.p.cmd + reg, v);
    }

    fn altstatus(&mut self) -> u8 {
        self.rd(self.p.ctl)
    }

    fn bm_rd(&mut self, reg: u16) -> u8 {
        self.rd(self.p.bm + reg)
    }

    fn bm_wr(&mut self, reg: u16, v: u8) {
        self.wr(self.p.bm + reg, v);
    }

    /// Reads `port` until `done`; every repeat is a poll, and so is the first read when it
    /// stands in for an interrupt.
    fn wait(
        &mut self,
        port: u16,
        first: FirstRead,
        phase: &'static str,
        done: impl Fn(u8) -> bool,
    ) -> Result<u8, Error> {
        let poll_first = first == FirstRead::Poll;
        let deadline = rdtsc() + self.timeout_ticks;
        let mut first_read = true;
        loop {
            let v = inb(port);
            self.n.accesses += 1;
            if poll_first || !first_read {
                self.n.polls += 1;
            }
            first_read = false;
            if done(v) {
                return Ok(v);
            }
            if rdtsc() > deadline {
                return Err(Error::Timeout { phase, last: v });
            }
            pause();
        }
    }

    /// Status until BSY and DRQ are clear (libata's ata_wait_idle).
    fn wait_idle(&mut self, phase: &'static str) -> Result<u8, Error> {
        self.wait(self.p.cmd + STATUS, FirstRead::Own, phase, |s| {
            s & (BSY | DRQ) == 0
        })
    }

    /// Status until BSY is clear.
    fn wait_not_busy(&mut self, phase: &'static str) -> Result<u8, Error> {
        self.wait(self.p.cmd + STATUS, FirstRead::Own, phase, |s| s & BSY == 0)
    }

    /// The `linux` profile's stand-in for INTRQ: the bus-master Interrupt bit.
    fn wait_intr(&mut self, phase: &'static str) -> Result<u8, Error> {
        if self.p.bm == 0 {
            return self.wait(self.p.ctl, FirstRead::Poll, phase, |s| s & BSY == 0);
        }
        self.wait(self.p.bm + BM_STATUS, FirstRead::Poll, phase, |s| {
            s & BM_INTR != 0
        })
    }

    fn delay_us(&self, us: u64) {
        let end = rdtsc() + self.tsc_khz * us / 1000 + 1;
        while rdtsc() < end {
            pause();
        }
    }

    // ---- bring-up ----

    /// libata's ata_devchk: a device answers by keeping what is written to its registers.
    fn present(&mut self) -> Result<(), Error> {
        self.tf_wr(DEVICE, ata::DEV_OBS);
        self.altstatus();
        for (a, b) in [(0x55, 0xaa), (0xaa, 0x55), (0x55, 0xaa)] {
            self.tf_wr(NSECT, a);
            self.tf_wr(LBAL, b);
        }
        if (self.tf_rd(NSECT), self.tf_rd(LBAL)) != (0x55, 0xaa) {
            return Err(Error::NoDevice(self.altstatus()));
        }
        Ok(())
    }

    /// SRST through the device control register, then the ATA signature (ATA-6 9.2).
    fn soft_reset(&mut self) -> Result<(), Error> {
        self.wr(self.p.ctl, ata::CTL_OBS);
        self.delay_us(20);
        self.wr(self.p.ctl, ata::CTL_OBS | ata::CTL_SRST);
        self.delay_us(20);
        self.wr(self.p.ctl, ata::CTL_OBS);
        // At least 2 ms before the status means anything.
        self.delay_us(2_000);
        let s = self.wait(self.p.cmd + STATUS, FirstRead::Own, "reset", |s| {
            s & BSY == 0 || s == 0xff
        })?;
        if s == 0xff {
            return Err(Error::NoDevice(s));
        }
        let sig = [
            self.tf_rd(NSECT),
            self.tf_rd(LBAL),
            self.tf_rd(LBAL + 1),
            self.tf_rd(LBAL + 2),
        ];
        if sig != [1, 1, 0, 0] {
            return Err(Error::NotAta(sig));
        }
        self.tf_wr(DEVICE, ata::DEV_OBS);
        self.altstatus();
        self.wait(self.p.cmd + STATUS, FirstRead::Own, "ready", |s| {
            s & (BSY | DRDY) == DRDY
        })?;
        self.feat_cur = None;
        self.feat_prev = None;
        self.prd_loaded = false;
        self.bm_cmd = None;
        self.intr_dirty = true;
        Ok(())
    }

    /// IDENTIFY DEVICE: PIO data-in of one 256-word block.
    fn identify(&mut self) -> Result<(), Error> {
        self.tf_wr(COMMAND, ata::IDENTIFY);
        self.altstatus();
        let s = self.wait_not_busy("identify")?;
        if s & (ERR | DF) != 0 || s & DRQ == 0 {
            let error = self.tf_rd(ERROR);
            return Err(Error::Device {
                command: ata::IDENTIFY,
                status: s,
                error,
            });
        }
        let mut w = [0u16; 256];
        insw(self.p.cmd + DATA, &mut w);
        self.wait_idle("identify")?;
        self.id = Identify::decode(&w);
        Ok(())
    }

    /// Transfer modes (SET FEATURES 03h) and host timings as ata_piix programs them, then
    /// SET MULTIPLE MODE; finally a clean bus-master status.
    fn setup(&mut self, f: &pci::Function) -> Result<(), Error> {
        self.pio_mode = ata::highest(self.id.pio_modes).unwrap_or(0);
        self.simple(Taskfile::control(
            ata::SET_FEATURES,
            ata::SF_XFER_MODE,
            0x08 | self.pio_mode,
        ))?;
        let udma = if self.device_id == PIIX4 {
            ata::highest(self.id.udma_modes & 0x07)
        } else {
            None
        };
        let mwdma = ata::highest(self.id.mwdma_modes);
        self.dma_mode = match (udma, mwdma) {
            (Some(u), _) => ("udma", u),
            (None, Some(m)) => ("mwdma", m),
            (None, None) => ("none", 0),
        };
        match self.dma_mode {
            ("udma", u) => self.simple(Taskfile::control(
                ata::SET_FEATURES,
                ata::SF_XFER_MODE,
                0x40 | u,
            ))?,
            ("mwdma", m) => self.simple(Taskfile::control(
                ata::SET_FEATURES,
                ata::SF_XFER_MODE,
                0x20 | m,
            ))?,
            _ if self.opts.mode == Mode::Dma => return Err(Error::NoBusMaster),
            _ => {}
        }
        if self.pio_mode >= 3 {
            let t = f.read(IDETIM);
            f.write(IDETIM, (t & 0xffff_0000) | IDETIM_FAST);
        }
        if let ("udma", u) = self.dma_mode {
            // UDMACTL bit 0 (primary master) and its UDMATIM cycle time in 0x4A bits 1:0.
            let c = f.read(UDMACTL);
            let speed = u32::from(u.min(2 - (u & 1)));
            f.write(UDMACTL, (c & !0x0003_0000) | 1 | (speed << 16));
        }
        self.multiple = 0;
        if self.opts.multiple && self.id.multiple_count() > 0 {
            let m = self.id.multiple_count();
            self.simple(Taskfile::control(ata::SET_MULTIPLE, 0, m))?;
            self.multiple = u16::from(m);
        }
        if self.p.bm != 0 {
            let b = inb(self.p.bm + BM_STATUS);
            outb(self.p.bm + BM_STATUS, b);
        }
        self.intr_dirty = false;
        Ok(())
    }

    /// A non-data command issued plainly (bring-up and recovery).
    fn simple(&mut self, tf: Taskfile) -> Result<(), Error> {
        self.wait_idle("setup")?;
        let r = tf.regs();
        self.tf_wr(FEATURE, r[0].0);
        self.tf_wr(NSECT, r[1].0);
        self.tf_wr(DEVICE, tf.device());
        self.tf_wr(COMMAND, tf.command);
        self.altstatus();
        let s = self.wait_not_busy("setup")?;
        if s & (ERR | DF | DRQ) != 0 {
            let error = self.tf_rd(ERROR);
            return Err(Error::Device {
                command: tf.command,
                status: s,
                error,
            });
        }
        Ok(())
    }

    /// After a timeout or a protocol error: stop the bus master, SRST, set the modes again.
    fn recover(&mut self) -> Result<(), Error> {
        if self.p.bm != 0 {
            outb(self.p.bm + BM_CMD, 0);
        }
        let f = pci::find(INTEL, self.device_id).ok_or(Error::Dead)?;
        let ok = self.soft_reset().and_then(|_| self.setup(&f));
        if ok.is_err() {
            self.dead = true;
            return Err(Error::Dead);
        }
        Ok(())
    }

    /// Resolves an error: recovers when the device may be left mid-protocol.
    fn failed(&mut self, e: Error) -> Error {
        let stuck = match e {
            Error::Timeout { .. } | Error::Protocol { .. } | Error::Bus { .. } => true,
            Error::Device { status, .. } => status & (BSY | DRQ) != 0,
            _ => false,
        };
        if stuck {
            if let Err(d) = self.recover() {
                return d;
            }
        }
        e
    }
}

// The request paths (taskfile loading per profile, DMA, PIO, FLUSH) are in ide/xfer.rs.
mod xfer;

impl Taskfile {
    /// A non-data command with a features value and a count (SET FEATURES, SET MULTIPLE).
    pub fn control(command: u8, feature: u8, count: u8) -> Taskfile {
        Taskfile {
            command,
            feature,
            count: u32::from(count),
            lba: 0,
            lba48: false,
            addressed: false,
        }
    }
}
