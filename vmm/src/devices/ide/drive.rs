//! The ATA hard disk on a channel: its registers, status and error, the PIO data-in/data-out
//! protocols with one sector buffer per DRQ block (ATA/ATAPI-6 9.7-9.8), non-data commands,
//! software reset and the INTRQ it raises. DMA data movement belongs to the bus master
//! (`bmdma.rs`); the drive only holds the transfer and finishes it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::ata::{
    self, Command, DriveParams, Error, Feature, Geometry, Power, Protocol, TaskFile, Transfer,
    TransferMode, DIAG_PASSED, SECTOR, ST_BSY, ST_DRDY, ST_DRQ, ST_ERR, ST_READY,
};
use super::bmdma::DmaXfer;
use super::identify::{self, DriveInfo, Settings};
use super::IdeCounters;
use crate::backend::block::BlockBackend;

/// CHECK POWER MODE answers (ATA-6 8.6).
const POWER_ACTIVE: u8 = 0xff;
const POWER_IDLE: u8 = 0x80;
const POWER_STANDBY: u8 = 0x00;

/// Where a PIO read or write stands.
#[derive(Clone, Copy, Debug)]
struct Cursor {
    /// First sector of the current block.
    lba: u64,
    /// Sectors left, the current block included.
    remaining: u32,
    /// Sectors per DRQ block.
    block: u32,
    ext: bool,
}

impl Cursor {
    fn new(t: &Transfer) -> Self {
        Cursor {
            lba: t.lba,
            remaining: t.sectors,
            block: t.block_sectors(),
            ext: t.ext,
        }
    }

    fn this_block(&self) -> u32 {
        self.remaining.min(self.block)
    }
}

#[derive(Clone, Copy, Debug)]
enum Pio {
    /// Data-in of the IDENTIFY block.
    Identify,
    /// Data-in of sectors.
    Read(Cursor),
    /// Data-out of sectors.
    Write(Cursor),
}

pub(super) struct Drive {
    disk: Box<dyn BlockBackend>,
    info: DriveInfo,
    sectors: u64,
    geometry: Geometry,
    pub(super) tf: TaskFile,
    pub(super) status: u8,
    pub(super) error: u8,
    /// The device's INTRQ before nIEN and device selection gate it.
    pub(super) intrq: bool,
    /// INTRQ was asserted since the channel last looked: an edge even if it never read low.
    raised: bool,
    multiple: u8,
    dma_mode: Option<TransferMode>,
    write_cache: bool,
    look_ahead: bool,
    power: u8,
    /// After SLEEP the drive answers nothing but a reset.
    asleep: bool,
    pio: Option<Pio>,
    /// The PIO block buffer and the position of the next word in it.
    buf: Vec<u8>,
    pos: usize,
    pub(super) dma: Option<DmaXfer>,
    counters: Arc<IdeCounters>,
}

impl Drive {
    pub(super) fn new(
        disk: Box<dyn BlockBackend>,
        info: DriveInfo,
        counters: Arc<IdeCounters>,
    ) -> Self {
        let sectors = (disk.capacity() / SECTOR as u64).min(ata::LBA48_LIMIT - 1);
        Drive {
            disk,
            info,
            sectors,
            geometry: Geometry::for_capacity(sectors),
            tf: TaskFile::signature(),
            status: ST_READY,
            error: DIAG_PASSED,
            intrq: false,
            raised: false,
            multiple: 0,
            dma_mode: None,
            write_cache: true,
            look_ahead: true,
            power: POWER_ACTIVE,
            asleep: false,
            pio: None,
            buf: Vec::with_capacity(usize::from(ata::MAX_MULTIPLE) * SECTOR),
            pos: 0,
            dma: None,
            counters,
        }
    }

    fn params(&self) -> DriveParams {
        DriveParams {
            sectors: self.sectors,
            geometry: self.geometry,
            multiple: self.multiple,
            read_only: self.disk.read_only(),
        }
    }

    pub(super) fn settings(&self) -> Settings {
        Settings {
            sectors: self.sectors,
            geometry: self.geometry,
            multiple: self.multiple,
            dma_mode: self.dma_mode,
            write_cache: self.write_cache,
            look_ahead: self.look_ahead,
        }
    }

    /// Whether an INTRQ assertion happened since the last call.
    pub(super) fn take_raised(&mut self) -> bool {
        std::mem::take(&mut self.raised)
    }

    fn raise(&mut self) {
        self.intrq = true;
        self.raised = true;
    }

    fn complete(&mut self) {
        self.status = ST_READY;
        self.error = 0;
        self.raise();
    }

    fn fail(&mut self, e: Error) {
        self.pio = None;
        self.dma = None;
        self.status = ST_DRDY | ST_ERR;
        self.error = e.bits();
        self.counters.cmd_errors.fetch_add(1, Ordering::Relaxed);
        self.raise();
    }

    /// The host wrote the command register with this device selected.
    pub(super) fn command(&mut self, opcode: u8) {
        // Commands written while BSY or DRQ is set are not taken (ATA-6 7.4), nor while the
        // drive sleeps.
        if self.status & (ST_BSY | ST_DRQ) != 0 || self.asleep {
            return;
        }
        self.intrq = false;
        self.pio = None;
        self.dma = None;
        match Command::parse(opcode, &self.tf, &self.params()) {
            Ok(c) => self.execute(c),
            Err(e) => self.fail(e),
        }
    }

    fn execute(&mut self, c: Command) {
        let count = |c: &std::sync::atomic::AtomicU64| {
            c.fetch_add(1, Ordering::Relaxed);
        };
        let k = self.counters.clone();
        match c {
            Command::Identify => {
                count(&k.cmd_identify);
                let words = identify::identify(&self.info, &self.settings());
                self.buf.clear();
                self.buf.extend_from_slice(&identify::to_bytes(&words));
                self.start_pio(Pio::Identify);
                self.raise();
            }
            Command::Read(t) if t.protocol == Protocol::Dma => {
                count(&k.cmd_dma_read);
                self.start_dma(&t, false);
            }
            Command::Write(t) if t.protocol == Protocol::Dma => {
                count(&k.cmd_dma_write);
                self.start_dma(&t, true);
            }
            Command::Read(t) => {
                count(&k.cmd_pio_read);
                self.power = POWER_ACTIVE;
                self.load_block(Cursor::new(&t));
            }
            Command::Write(t) => {
                count(&k.cmd_pio_write);
                self.power = POWER_ACTIVE;
                let cur = Cursor::new(&t);
                self.buf.clear();
                self.buf.resize(cur.this_block() as usize * SECTOR, 0);
                // Data-out: DRQ for the first block without an interrupt.
                self.start_pio(Pio::Write(cur));
            }
            Command::Flush => {
                count(&k.cmd_flush);
                match self.disk.flush() {
                    Ok(()) => self.complete(),
                    Err(_) => self.fail(Error::Abort),
                }
            }
            Command::SetFeatures(f) => {
                count(&k.cmd_other);
                match f {
                    Feature::TransferMode(m @ (TransferMode::Mwdma(_) | TransferMode::Udma(_))) => {
                        self.dma_mode = Some(m)
                    }
                    Feature::TransferMode(_) => {} // PIO timing: nothing to model
                    Feature::WriteCache(on) => self.write_cache = on,
                    Feature::ReadLookAhead(on) => self.look_ahead = on,
                }
                self.complete();
            }
            Command::SetMultiple(n) => {
                count(&k.cmd_other);
                self.multiple = n;
                self.complete();
            }
            Command::Power(p) => {
                count(&k.cmd_other);
                self.power = match p {
                    Power::Idle => POWER_IDLE,
                    Power::Standby | Power::Sleep => POWER_STANDBY,
                };
                self.complete();
                self.asleep = p == Power::Sleep;
            }
            Command::CheckPowerMode => {
                count(&k.cmd_other);
                self.complete();
                self.tf.count = (self.tf.count & 0xff00) | u16::from(self.power);
            }
            Command::ExecuteDiagnostic => {
                count(&k.cmd_other);
                self.execute_diagnostic();
            }
        }
    }

    /// EXECUTE DEVICE DIAGNOSTIC: the signature, the diagnostic code and an interrupt. Runs
    /// even when the absent device 1 is selected (ATA-6 8.11).
    pub(super) fn execute_diagnostic(&mut self) {
        if self.status & (ST_BSY | ST_DRQ) != 0 || self.asleep {
            return;
        }
        self.intrq = false;
        self.pio = None;
        self.dma = None;
        self.tf = TaskFile::signature();
        self.complete();
        self.error = DIAG_PASSED;
    }

    /// SRST set: the drive is busy and drops whatever it was doing.
    pub(super) fn begin_reset(&mut self) {
        self.pio = None;
        self.dma = None;
        self.intrq = false;
        self.asleep = false;
        self.status = ST_BSY;
        self.counters.resets.fetch_add(1, Ordering::Relaxed);
    }

    /// SRST cleared: diagnostics done, signature posted, no interrupt (ATA-6 9.2). Multiple
    /// mode, transfer mode and caches keep their settings, as without "revert to power-on
    /// defaults".
    pub(super) fn end_reset(&mut self) {
        self.tf = TaskFile::signature();
        self.status = ST_READY;
        self.error = DIAG_PASSED;
    }

    fn start_pio(&mut self, p: Pio) {
        self.pio = Some(p);
        self.pos = 0;
        self.status = ST_READY | ST_DRQ;
        self.error = 0;
    }

    /// Reads the next data-in block and offers it with DRQ and an interrupt.
    fn load_block(&mut self, cur: Cursor) {
        let n = cur.this_block() as usize;
        self.buf.clear();
        self.buf.resize(n * SECTOR, 0);
        match self.disk.read_at(cur.lba * SECTOR as u64, &mut self.buf) {
            Ok(()) => {
                self.counters
                    .sectors_read
                    .fetch_add(n as u64, Ordering::Relaxed);
                self.start_pio(Pio::Read(cur));
                self.raise();
            }
            Err(_) => {
                self.tf.set_lba(cur.lba, cur.ext);
                self.fail(Error::Uncorrectable);
            }
        }
    }

    /// One 16-bit data-in cycle; None when the drive has no data to give (no DRQ, or a
    /// data-out transfer), which leaves the bus undriven.
    pub(super) fn read_data(&mut self) -> Option<u16> {
        let pio = self.pio?;
        if matches!(pio, Pio::Write(_)) || self.status & ST_DRQ == 0 {
            return None;
        }
        let w = u16::from_le_bytes([self.buf[self.pos], self.buf[self.pos + 1]]);
        self.pos += 2;
        self.counters.pio_words.fetch_add(1, Ordering::Relaxed);
        if self.pos == self.buf.len() {
            match pio {
                Pio::Read(mut cur) => {
                    cur.lba += u64::from(cur.this_block());
                    cur.remaining -= cur.this_block();
                    if cur.remaining == 0 {
                        self.finish_pio();
                    } else {
                        self.load_block(cur);
                    }
                }
                _ => self.finish_pio(),
            }
        }
        Some(w)
    }

    /// One 16-bit data-out cycle; ignored without DRQ or during data-in.
    pub(super) fn write_data(&mut self, w: u16) {
        let Some(Pio::Write(mut cur)) = self.pio else {
            return;
        };
        if self.status & ST_DRQ == 0 {
            return;
        }
        self.buf[self.pos..self.pos + 2].copy_from_slice(&w.to_le_bytes());
        self.pos += 2;
        self.counters.pio_words.fetch_add(1, Ordering::Relaxed);
        if self.pos < self.buf.len() {
            return;
        }
        let n = cur.this_block();
        if self
            .disk
            .write_at(cur.lba * SECTOR as u64, &self.buf)
            .is_err()
        {
            self.tf.set_lba(cur.lba, cur.ext);
            self.fail(Error::Abort);
            return;
        }
        self.counters
            .sectors_written
            .fetch_add(u64::from(n), Ordering::Relaxed);
        cur.lba += u64::from(n);
        cur.remaining -= n;
        if cur.remaining > 0 {
            self.buf.clear();
            self.buf.resize(cur.this_block() as usize * SECTOR, 0);
            self.start_pio(Pio::Write(cur));
            self.raise();
        } else if !self.write_cache && self.disk.flush().is_err() {
            self.fail(Error::Abort);
        } else {
            self.pio = None;
            self.complete();
        }
    }

    /// End of data-in: no interrupt after the last block (ATA-6 9.7).
    fn finish_pio(&mut self) {
        self.pio = None;
        self.status = ST_READY;
    }

    fn start_dma(&mut self, t: &Transfer, to_disk: bool) {
        self.power = POWER_ACTIVE;
        self.dma = Some(DmaXfer::new(t, to_disk));
        // Data phase: DRQ while the bus master moves the data.
        self.status = ST_READY | ST_DRQ;
        self.error = 0;
    }

    /// The disk and the pending DMA transfer, for the bus master.
    pub(super) fn dma_parts(&mut self) -> Option<(&mut dyn BlockBackend, &mut DmaXfer)> {
        let xfer = self.dma.as_mut()?;
        Some((self.disk.as_mut(), xfer))
    }

    /// The bus master moved the last byte, or the disk failed under it.
    pub(super) fn finish_dma(&mut self, result: Result<(), Error>) {
        let Some(x) = self.dma.take() else {
            return;
        };
        let result = result.and_then(|()| {
            if x.to_disk && !self.write_cache {
                self.disk.flush().map_err(|_| Error::Abort)
            } else {
                Ok(())
            }
        });
        match result {
            Ok(()) => self.complete(),
            Err(e) => {
                self.tf.set_lba(x.failed_lba(), x.ext);
                self.fail(e);
            }
        }
    }
}
