//! PIIX bus-master IDE (Intel 82371SB PIIX3 / 82371AB PIIX4 datasheets, "Bus Master IDE I/O
//! registers" and "PRD table"; Intel's "Programming Interface for Bus Master IDE Controller"):
//! the command, status and descriptor-table pointer of one channel, and the engine that walks
//! the PRD table and moves a drive's DMA data between guest RAM and the disk. Every guest
//! address goes through checked vm-memory accesses; an address outside RAM ends the transfer
//! as a PCI master abort would.

use std::sync::atomic::Ordering;

use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap, Permissions};

use super::ata::{Error, Transfer, SECTOR};
use super::IdeCounters;
use crate::backend::block::BlockBackend;

/// Command register (BMICx) bits.
pub const CMD_START: u8 = 0x01;
/// RWCON: 1 = the controller writes memory (an ATA read), 0 = it reads memory.
pub const CMD_WRITE_MEMORY: u8 = 0x08;
/// Status register (BMISx) bits.
pub const ST_ACTIVE: u8 = 0x01;
pub const ST_ERROR: u8 = 0x02;
pub const ST_INTERRUPT: u8 = 0x04;
/// Software-owned "drive 0/1 DMA capable" bits.
pub const ST_DMA_CAPABLE: u8 = 0x60;
/// PRD entry flag: end of table.
pub const PRD_EOT: u32 = 1 << 31;
/// A table may not cross a 64 KiB boundary, so it holds at most this many 8-byte entries;
/// running past them without an end-of-table bit is treated as an error.
pub const PRD_MAX_ENTRIES: u32 = 8192;
/// Bytes moved between disk and guest per step (a multiple of the sector size).
const WINDOW: usize = 64 * 1024;

/// One physical region descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prd {
    /// Word-aligned physical address (bit 0 is ignored by the controller).
    pub addr: u32,
    /// Byte count, even; a count of 0 means 64 KiB.
    pub len: u32,
    pub eot: bool,
}

impl Prd {
    /// Decodes an entry as the controller reads it: base [31:1], count [15:1], EOT bit 31.
    pub fn parse(raw: [u8; 8]) -> Prd {
        let addr = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) & !1;
        let ctl = u32::from_le_bytes([raw[4], raw[5], raw[6], raw[7]]);
        let len = match ctl & 0xfffe {
            0 => 0x1_0000,
            n => n,
        };
        Prd {
            addr,
            len,
            eot: ctl & PRD_EOT != 0,
        }
    }
}

/// A drive's DMA transfer, as far as it has got. Data to the disk is committed in whole
/// sectors; a partial sector waits in the window, as it would in the drive's buffer.
pub(super) struct DmaXfer {
    pub to_disk: bool,
    pub ext: bool,
    lba: u64,
    total: u64,
    done: u64,
    win: Vec<u8>,
    /// Transfer offset of `win[0]`.
    win_start: u64,
    win_len: usize,
}

impl DmaXfer {
    pub fn new(t: &Transfer, to_disk: bool) -> Self {
        DmaXfer {
            to_disk,
            ext: t.ext,
            lba: t.lba,
            total: u64::from(t.sectors) * SECTOR as u64,
            done: 0,
            win: Vec::new(),
            win_start: 0,
            win_len: 0,
        }
    }

    /// The first sector not yet transferred, for the error registers.
    pub fn failed_lba(&self) -> u64 {
        self.lba + self.done / SECTOR as u64
    }

    fn base(&self) -> u64 {
        self.lba * SECTOR as u64
    }

    /// Writes the whole sectors gathered so far.
    fn commit(&mut self, disk: &mut dyn BlockBackend, k: &IdeCounters) -> Result<(), Error> {
        let whole = self.win_len / SECTOR * SECTOR;
        if whole == 0 {
            return Ok(());
        }
        disk.write_at(self.base() + self.win_start, &self.win[..whole])
            .map_err(|_| Error::Abort)?;
        k.sectors_written
            .fetch_add((whole / SECTOR) as u64, Ordering::Relaxed);
        self.win.copy_within(whole..self.win_len, 0);
        self.win_start += whole as u64;
        self.win_len -= whole;
        Ok(())
    }
}

/// How a run of the engine ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Nothing moved: not started, halted, or the direction does not match the command.
    Idle,
    /// The drive's transfer is complete.
    Complete,
    /// The table ended before the transfer: Active cleared, Interrupt not set, the drive
    /// still waits for data.
    TableExhausted,
    /// No end-of-table bit within [`PRD_MAX_ENTRIES`]: Error set, Active cleared.
    TableOverrun,
    /// A descriptor or buffer outside guest RAM: Error set, Active cleared; the function
    /// records a received master abort.
    MasterAbort,
    /// The disk failed; the drive reports it.
    Disk(Error),
}

/// The current region of the table being worked through.
#[derive(Clone, Copy, Debug, Default)]
struct Region {
    addr: u64,
    left: u64,
    eot: bool,
}

/// One channel's bus-master registers and engine state.
#[derive(Default)]
pub(super) struct BusMaster {
    cmd: u8,
    pub(super) status: u8,
    table: u32,
    /// Address of the next descriptor, entries fetched, and the region in use: state the
    /// controller loses when Start is cleared.
    next: u32,
    fetched: u32,
    region: Option<Region>,
}

impl BusMaster {
    /// Reads register byte `reg` (0..8 within the channel's block).
    pub fn read(&self, reg: u64) -> u8 {
        match reg {
            0 => self.cmd,
            2 => self.status,
            4..=7 => self.table.to_le_bytes()[reg as usize - 4],
            _ => 0,
        }
    }

    /// Writes register byte `reg`; true when it started the engine.
    pub fn write(&mut self, reg: u64, v: u8) -> bool {
        match reg {
            0 => {
                let was = self.cmd;
                // RWCON is read-only while a transfer is active.
                let rw = if self.status & ST_ACTIVE != 0 {
                    was & CMD_WRITE_MEMORY
                } else {
                    v & CMD_WRITE_MEMORY
                };
                self.cmd = rw | (v & CMD_START);
                match (was & CMD_START != 0, v & CMD_START != 0) {
                    (false, true) => {
                        self.status |= ST_ACTIVE;
                        self.next = self.table;
                        self.fetched = 0;
                        self.region = None;
                        return true;
                    }
                    (true, false) => {
                        // Stopping loses the engine state; it cannot be resumed.
                        self.status &= !ST_ACTIVE;
                        self.region = None;
                    }
                    _ => {}
                }
            }
            2 => {
                self.status = (self.status & !ST_DMA_CAPABLE) | (v & ST_DMA_CAPABLE);
                self.status &= !(v & (ST_ERROR | ST_INTERRUPT));
            }
            4..=7 => {
                let mut b = self.table.to_le_bytes();
                b[reg as usize - 4] = v;
                self.table = u32::from_le_bytes(b) & !3;
            }
            _ => {}
        }
        false
    }

    fn halt(&mut self, error: bool) {
        self.status &= !ST_ACTIVE;
        if error {
            self.status |= ST_ERROR;
        }
    }

    /// The region to move data through, fetching the next descriptor when the current one
    /// is used up; Err ends the run.
    fn region(&mut self, mem: &GuestMemoryMmap) -> Result<Region, Outcome> {
        match self.region {
            Some(r) if r.left > 0 => return Ok(r),
            Some(r) if r.eot => {
                self.halt(false);
                return Err(Outcome::TableExhausted);
            }
            _ => {}
        }
        if self.fetched == PRD_MAX_ENTRIES {
            self.halt(true);
            return Err(Outcome::TableOverrun);
        }
        let mut raw = [0u8; 8];
        if mem
            .read_slice(&mut raw, GuestAddress(u64::from(self.next)))
            .is_err()
        {
            self.halt(true);
            return Err(Outcome::MasterAbort);
        }
        self.next = self.next.wrapping_add(8);
        self.fetched += 1;
        let p = Prd::parse(raw);
        let r = Region {
            addr: u64::from(p.addr),
            left: u64::from(p.len),
            eot: p.eot,
        };
        self.region = Some(r);
        Ok(r)
    }

    fn consume(&mut self, n: usize) {
        if let Some(r) = self.region.as_mut() {
            r.addr += n as u64;
            r.left -= n as u64;
        }
    }

    /// Moves as much of `x` as the table allows. Runs only while Start and Active are set
    /// and the direction bit matches the command: a mismatched direction leaves both sides
    /// waiting, as on the real bus.
    pub fn run(
        &mut self,
        mem: &GuestMemoryMmap,
        disk: &mut dyn BlockBackend,
        x: &mut DmaXfer,
        k: &IdeCounters,
    ) -> Outcome {
        if self.cmd & CMD_START == 0 || self.status & ST_ACTIVE == 0 {
            return Outcome::Idle;
        }
        if (self.cmd & CMD_WRITE_MEMORY != 0) == x.to_disk {
            return Outcome::Idle;
        }
        let out = match self.direct(mem, disk, x, k) {
            Some(out) => out,
            None => {
                let want = x.total.min(WINDOW as u64) as usize;
                if x.win.len() < want {
                    x.win.resize(want, 0);
                }
                if x.to_disk {
                    self.gather(mem, disk, x, k)
                } else {
                    self.scatter(mem, disk, x, k)
                }
            }
        };
        if out == Outcome::Complete {
            // Exactly as long as the table: the controller saw EOT and goes idle. A longer
            // table leaves Active set until the driver clears Start.
            if matches!(self.region, Some(r) if r.left == 0 && r.eot) {
                self.status &= !ST_ACTIVE;
            }
        }
        out
    }

    /// The whole transfer in one vectored back-end call on guest memory (no copy through the
    /// window), when the layout allows: a fresh transfer whose table covers it within
    /// [`PRD_MAX_ENTRIES`] entries, every region in guest RAM. The engine then ends where the
    /// step-by-step walk would (descriptor pointer, entries fetched, the last region's rest).
    /// `None` for anything else (a table that ends early, an address outside RAM, a resumed
    /// transfer): the walk handles those with the partial-transfer semantics they need.
    fn direct(
        &mut self,
        mem: &GuestMemoryMmap,
        disk: &mut dyn BlockBackend,
        x: &mut DmaXfer,
        k: &IdeCounters,
    ) -> Option<Outcome> {
        if x.done != 0 || x.win_len != 0 || self.fetched != 0 || self.region.is_some() {
            return None;
        }
        let access = if x.to_disk {
            Permissions::Read
        } else {
            Permissions::Write
        };
        let mut bufs = Vec::new();
        let (mut next, mut fetched, mut left) = (self.next, 0u32, x.total);
        let mut last = None;
        while left > 0 {
            if fetched == PRD_MAX_ENTRIES {
                return None;
            }
            let mut raw = [0u8; 8];
            mem.read_slice(&mut raw, GuestAddress(u64::from(next)))
                .ok()?;
            next = next.wrapping_add(8);
            fetched += 1;
            let p = Prd::parse(raw);
            let n = u64::from(p.len).min(left);
            let addr = GuestAddress(u64::from(p.addr));
            for slice in mem.get_slices(addr, n as usize, access).ok()? {
                bufs.push(slice.ok()?);
            }
            left -= n;
            if left > 0 && p.eot {
                return None;
            }
            last = Some(Region {
                addr: u64::from(p.addr) + n,
                left: u64::from(p.len) - n,
                eot: p.eot,
            });
        }
        let sectors = x.total / SECTOR as u64;
        if x.to_disk {
            if disk.write_vectored_at(x.base(), &bufs, &mut x.win).is_err() {
                return Some(Outcome::Disk(Error::Abort));
            }
            k.sectors_written.fetch_add(sectors, Ordering::Relaxed);
        } else {
            if disk.read_vectored_at(x.base(), &bufs, &mut x.win).is_err() {
                return Some(Outcome::Disk(Error::Uncorrectable));
            }
            k.sectors_read.fetch_add(sectors, Ordering::Relaxed);
        }
        self.next = next;
        self.fetched = fetched;
        self.region = last;
        x.done = x.total;
        k.dma_bytes.fetch_add(x.total, Ordering::Relaxed);
        Some(Outcome::Complete)
    }

    /// Disk to memory.
    fn scatter(
        &mut self,
        mem: &GuestMemoryMmap,
        disk: &mut dyn BlockBackend,
        x: &mut DmaXfer,
        k: &IdeCounters,
    ) -> Outcome {
        while x.done < x.total {
            let r = match self.region(mem) {
                Ok(r) => r,
                Err(o) => return o,
            };
            if x.done < x.win_start || x.done >= x.win_start + x.win_len as u64 {
                let len = (x.total - x.done).min(x.win.len() as u64) as usize;
                if disk.read_at(x.base() + x.done, &mut x.win[..len]).is_err() {
                    return Outcome::Disk(Error::Uncorrectable);
                }
                k.sectors_read
                    .fetch_add((len / SECTOR) as u64, Ordering::Relaxed);
                x.win_start = x.done;
                x.win_len = len;
            }
            let off = (x.done - x.win_start) as usize;
            let n = (x.win_len - off).min(r.left as usize);
            if mem
                .write_slice(&x.win[off..off + n], GuestAddress(r.addr))
                .is_err()
            {
                self.halt(true);
                return Outcome::MasterAbort;
            }
            self.consume(n);
            x.done += n as u64;
            k.dma_bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
        Outcome::Complete
    }

    /// Memory to disk.
    fn gather(
        &mut self,
        mem: &GuestMemoryMmap,
        disk: &mut dyn BlockBackend,
        x: &mut DmaXfer,
        k: &IdeCounters,
    ) -> Outcome {
        while x.done < x.total {
            let r = match self.region(mem) {
                Ok(r) => r,
                Err(o) => {
                    // What the drive received in whole sectors is on the disk.
                    return match x.commit(disk, k) {
                        Ok(()) => o,
                        Err(e) => Outcome::Disk(e),
                    };
                }
            };
            let n = (x.total - x.done)
                .min(r.left)
                .min((x.win.len() - x.win_len) as u64) as usize;
            let dst = &mut x.win[x.win_len..x.win_len + n];
            if mem.read_slice(dst, GuestAddress(r.addr)).is_err() {
                self.halt(true);
                return match x.commit(disk, k) {
                    Ok(()) => Outcome::MasterAbort,
                    Err(e) => Outcome::Disk(e),
                };
            }
            self.consume(n);
            x.done += n as u64;
            x.win_len += n;
            k.dma_bytes.fetch_add(n as u64, Ordering::Relaxed);
            if x.win_len == x.win.len() || x.done == x.total {
                if let Err(e) = x.commit(disk, k) {
                    return Outcome::Disk(e);
                }
            }
        }
        Outcome::Complete
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(addr: u32, ctl: u32) -> [u8; 8] {
        let mut r = [0u8; 8];
        r[..4].copy_from_slice(&addr.to_le_bytes());
        r[4..].copy_from_slice(&ctl.to_le_bytes());
        r
    }

    #[test]
    fn prd_count_zero_is_64k_and_low_bits_are_ignored() {
        assert_eq!(
            Prd::parse(raw(0x1001, PRD_EOT)),
            Prd {
                addr: 0x1000,
                len: 0x1_0000,
                eot: true
            }
        );
        assert_eq!(
            Prd::parse(raw(0x2000, 0x7fff_0201)),
            Prd {
                addr: 0x2000,
                len: 0x200,
                eot: false
            }
        );
        // A count of 1 rounds down to 0, which means 64 KiB.
        assert_eq!(Prd::parse(raw(0, 1)).len, 0x1_0000);
    }

    #[test]
    fn registers_keep_only_their_defined_bits() {
        let mut bm = BusMaster::default();
        bm.write(0, 0xff);
        bm.write(4, 0xff);
        bm.write(5, 0x12);
        bm.write(2, 0xff);
        assert_eq!(bm.read(0), CMD_START | CMD_WRITE_MEMORY);
        assert_eq!(bm.read(4), 0xfc);
        assert_eq!(bm.read(5), 0x12);
        // Active came from Start; the capable bits are software's; error/interrupt stay 0.
        assert_eq!(bm.read(2), ST_ACTIVE | ST_DMA_CAPABLE);
        assert_eq!(bm.read(1), 0);
        assert_eq!(bm.read(3), 0);
    }

    #[test]
    fn direction_is_read_only_while_active_and_stop_clears_active() {
        let mut bm = BusMaster::default();
        assert!(bm.write(0, CMD_START));
        bm.write(0, CMD_START | CMD_WRITE_MEMORY);
        assert_eq!(bm.read(0), CMD_START);
        bm.write(0, 0);
        assert_eq!(bm.read(2) & ST_ACTIVE, 0);
        assert!(!bm.write(0, 0));
    }
}
