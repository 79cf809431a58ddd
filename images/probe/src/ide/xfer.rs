//! The IDE driver's requests: each ATA command issued with its profile's register sequence.
//!
//! `linux` follows libata per command (drivers/ata/libata-sff.c, ata_piix's ops): device
//! select through ata_dev_select (status, device, altstatus pause, status), ata_sff_tf_load
//! (HOB then current registers, device, status), ata_sff_exec_command (command, altstatus);
//! for DMA ata_bmdma_setup/start (PRD pointer, command register read-modify-writes); then the
//! interrupt handler: ata_bmdma_port_intr (BM status, ata_bmdma_stop and its altstatus
//! pause), ata_sff_irq_status (altstatus, then the status read that clears INTRQ) and
//! ata_bmdma_irq_clear (BM status read and write back); PIO data one sector per string
//! instruction with an altstatus flush per DRQ block, and ata_wait_idle after a read.
//!
//! `batched` is the least a correct driver can do: no selection (device 0 stays selected),
//! the write-only features register and the PRD pointer only when their value changes, the
//! bus-master direction only when it changes, the command, start; then one wait on the
//! register that says the command is done, the status read that checks it, and for DMA the
//! Interrupt bit cleared and Start dropped. Registers a command may leave changed (count,
//! LBA, device) are always written.

use core::sync::atomic::{fence, Ordering};

use super::{
    Error, FirstRead, Ide, Mode, Profile, BM_CMD, BM_ERROR, BM_INTR, BM_PRD, BM_START, BM_STATUS,
    BM_TO_MEMORY, COMMAND, DATA, DEVICE, ERROR, FEATURE, PRD_ENTRIES, PRD_EOT, STATUS,
};
use crate::alloc;
use crate::ata::{self, Addressing, Dir, Taskfile, Xfer, BSY, DF, DRDY, DRQ, ERR};
use crate::io::{insl, insw, outl, outsl, outsw};

/// How PIO data is cut into string instructions.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Strings {
    /// One per sector, as libata's ata_pio_sector.
    PerSector,
    /// One per DRQ block.
    PerBlock,
}

/// A clean completion: DRDY alone among BSY, DRDY, DF, DRQ, ERR (libata's ata_ok).
fn ok_status(s: u8) -> bool {
    s & (BSY | DRDY | DF | DRQ | ERR) == DRDY
}

impl Ide {
    /// Reads `sectors` from `lba` into the start of the data buffer.
    pub fn read(&mut self, lba: u64, sectors: u64) -> Result<(), Error> {
        self.rw(Dir::Read, lba, sectors)
    }

    /// Writes `sectors` at `lba` from the start of the data buffer.
    pub fn write(&mut self, lba: u64, sectors: u64) -> Result<(), Error> {
        self.rw(Dir::Write, lba, sectors)
    }

    /// FLUSH CACHE, or FLUSH CACHE EXT where the disk has it (as libata chooses).
    pub fn flush(&mut self) -> Result<(), Error> {
        let cmd = if self.id.flush_ext {
            ata::FLUSH_CACHE_EXT
        } else {
            ata::FLUSH_CACHE
        };
        self.nodata(cmd)
    }

    /// A non-data command without parameters, in the profile's sequence.
    pub fn nodata(&mut self, command: u8) -> Result<(), Error> {
        if self.dead {
            return Err(Error::Dead);
        }
        let tf = Taskfile {
            command,
            feature: 0,
            count: 0,
            lba: 0,
            lba48: false,
            addressed: false,
        };
        self.n.commands += 1;
        let r = match self.opts.profile {
            Profile::Linux => self.nodata_linux(&tf),
            // poll is refused before IDE is opened (disk.rs, open_ide).
            Profile::Batched | Profile::Poll => self.nodata_batched(&tf),
        };
        r.map_err(|e| self.failed(e))
    }

    fn nodata_linux(&mut self, tf: &Taskfile) -> Result<(), Error> {
        self.linux_issue(tf)?;
        self.linux_exec(tf.command);
        self.wait_intr("non-data command")?;
        let st = self.linux_irq_status()?;
        self.linux_irq_clear();
        self.check_done(tf.command, st)
    }

    fn nodata_batched(&mut self, tf: &Taskfile) -> Result<(), Error> {
        self.tf_wr(COMMAND, tf.command);
        self.intr_dirty = true;
        let st = self.wait_not_busy("non-data command")?;
        self.check_done(tf.command, st)
    }

    /// Splits a request into commands the way libata builds them: LBA28 when the request fits
    /// (ata_build_rw_tf's lba_28_ok), else LBA48.
    fn rw(&mut self, dir: Dir, lba: u64, sectors: u64) -> Result<(), Error> {
        if self.dead {
            return Err(Error::Dead);
        }
        if sectors * 512 > self.opts.buffer {
            return Err(Error::TooLarge { sectors });
        }
        let max = u64::from(if self.id.lba48 {
            ata::MAX_LBA48_SECTORS
        } else {
            ata::MAX_LBA28_SECTORS
        });
        let xfer = match self.opts.mode {
            Mode::Dma => Xfer::Dma,
            Mode::Pio if self.multiple > 0 => Xfer::PioMultiple,
            Mode::Pio => Xfer::PioSingle,
        };
        let mut done = 0;
        while done < sectors {
            let n = (sectors - done).min(max);
            let at = lba + done;
            let lba28_ok = at + n < 1 << 28 && n <= u64::from(ata::MAX_LBA28_SECTORS);
            let lba48 = self.opts.lba48 || !lba28_ok;
            if (lba48 && !self.id.lba48) || at + n > 1 << 48 {
                return Err(Error::Range {
                    lba: at,
                    sectors: n,
                });
            }
            let tf = Taskfile {
                command: ata::rw_command(
                    xfer,
                    dir,
                    if lba48 {
                        Addressing::Lba48
                    } else {
                        Addressing::Lba28
                    },
                ),
                feature: 0,
                count: n as u32,
                lba: at,
                lba48,
                addressed: true,
            };
            self.n.commands += 1;
            let r = match xfer {
                Xfer::Dma => self.dma(&tf, dir, done * 512),
                _ => self.pio(&tf, dir, xfer, done * 512),
            };
            r.map_err(|e| self.failed(e))?;
            done += n;
        }
        Ok(())
    }

    // ---- register sequences shared by the commands ----

    /// libata's ata_dev_select(wait=1) and ata_sff_tf_load.
    fn linux_issue(&mut self, tf: &Taskfile) -> Result<(), Error> {
        self.wait_idle("device select")?;
        self.tf_wr(DEVICE, ata::DEV_OBS);
        self.altstatus();
        self.wait_idle("device select")?;
        // The device control register is written only when its value changes: never here.
        if tf.addressed {
            let r = tf.regs();
            if tf.lba48 {
                for (i, &(_, prev)) in r.iter().enumerate() {
                    self.tf_wr(FEATURE + i as u16, prev);
                }
            }
            for (i, &(cur, _)) in r.iter().enumerate() {
                self.tf_wr(FEATURE + i as u16, cur);
            }
        }
        self.tf_wr(DEVICE, tf.device());
        self.wait_idle("taskfile load")?;
        Ok(())
    }

    /// ata_sff_exec_command: the command and ata_sff_pause's altstatus read.
    fn linux_exec(&mut self, command: u8) {
        self.tf_wr(COMMAND, command);
        self.altstatus();
    }

    /// ata_sff_irq_status: altstatus (busy: not our interrupt yet), then status.
    fn linux_irq_status(&mut self) -> Result<u8, Error> {
        if self.altstatus() & BSY != 0 {
            self.wait(self.p.ctl, FirstRead::Poll, "interrupt", |s| s & BSY == 0)?;
        }
        Ok(self.tf_rd(STATUS))
    }

    /// ata_bmdma_irq_clear: the BM status written back, clearing Interrupt and Error.
    fn linux_irq_clear(&mut self) {
        if self.p.bm != 0 {
            let b = self.bm_rd(BM_STATUS);
            self.bm_wr(BM_STATUS, b);
        }
    }

    /// The batched task file: features only when the FIFO holds another value (write-only,
    /// no command changes it); count, LBA and device always (a command may change them).
    fn batched_load(&mut self, tf: &Taskfile) {
        if !tf.addressed {
            return;
        }
        let r = tf.regs();
        let (f, hob_f) = r[0];
        if tf.lba48 {
            if self.feat_cur != Some(f) || self.feat_prev != Some(hob_f) {
                self.tf_wr(FEATURE, hob_f);
                self.tf_wr(FEATURE, f);
                (self.feat_prev, self.feat_cur) = (Some(hob_f), Some(f));
            }
            for (i, &(cur, prev)) in r.iter().enumerate().skip(1) {
                self.tf_wr(FEATURE + i as u16, prev);
                self.tf_wr(FEATURE + i as u16, cur);
            }
        } else {
            if self.feat_cur != Some(f) {
                self.tf_wr(FEATURE, f);
                (self.feat_prev, self.feat_cur) = (self.feat_cur, Some(f));
            }
            for (i, &(cur, _)) in r.iter().enumerate().skip(1) {
                self.tf_wr(FEATURE + i as u16, cur);
            }
        }
        self.tf_wr(DEVICE, tf.device());
    }

    /// Status after the command: its error, or a protocol violation if it is not done.
    fn check_done(&mut self, command: u8, st: u8) -> Result<(), Error> {
        if ok_status(st) {
            return Ok(());
        }
        if st & (ERR | DF) != 0 {
            let error = self.tf_rd(ERROR);
            return Err(Error::Device {
                command,
                status: st,
                error,
            });
        }
        Err(Error::Protocol {
            command,
            status: st,
        })
    }

    /// Status at a DRQ block: data wanted and no error.
    fn expect_drq(&mut self, command: u8, st: u8) -> Result<(), Error> {
        if st & (ERR | DF) != 0 {
            let error = self.tf_rd(ERROR);
            return Err(Error::Device {
                command,
                status: st,
                error,
            });
        }
        if st & DRQ == 0 {
            return Err(Error::Protocol {
                command,
                status: st,
            });
        }
        Ok(())
    }

    // ---- bus-master DMA ----

    /// The PRD table for `len` bytes of the buffer from `off`: entries split at 64 KiB
    /// boundaries (a length of 0 means 64 KiB), EOT on the last, as ata_bmdma_fill_sg does.
    fn fill_prd(&mut self, off: u64, len: u64) {
        let (mut addr, mut left) = (self.buf + off, len);
        let mut i = 0;
        while left > 0 && i < PRD_ENTRIES {
            let n = left.min(0x1_0000 - (addr & 0xffff));
            let eot = if n == left { PRD_EOT } else { 0 };
            let e = self.prd + i as u64 * 8;
            // SAFETY: entry `i` < PRD_ENTRIES of this driver's PRD table allocation.
            unsafe {
                core::ptr::write_volatile(e as *mut u32, addr as u32);
                core::ptr::write_volatile((e + 4) as *mut u32, (n & 0xffff) as u32 | eot);
            }
            addr += n;
            left -= n;
            i += 1;
        }
    }

    fn dma(&mut self, tf: &Taskfile, dir: Dir, off: u64) -> Result<(), Error> {
        if self.p.bm == 0 {
            return Err(Error::NoBusMaster);
        }
        self.fill_prd(off, u64::from(tf.count) * 512);
        let bm_dir = if dir == Dir::Write { 0 } else { BM_TO_MEMORY };
        let r = match self.opts.profile {
            Profile::Linux => self.dma_linux(tf, bm_dir),
            Profile::Batched | Profile::Poll => self.dma_batched(tf, bm_dir),
        };
        // What the device wrote is in memory before anyone reads the buffer.
        fence(Ordering::SeqCst);
        r
    }

    fn write_prd_pointer(&mut self) {
        self.n.accesses += 1;
        outl(self.p.bm + BM_PRD, self.prd as u32);
    }

    fn dma_linux(&mut self, tf: &Taskfile, dir: u8) -> Result<(), Error> {
        self.linux_issue(tf)?;
        // ata_bmdma_setup: the PRD table, the direction with Start clear, the command.
        fence(Ordering::SeqCst);
        self.write_prd_pointer();
        let c = self.bm_rd(BM_CMD) & !(BM_TO_MEMORY | BM_START);
        self.bm_wr(BM_CMD, c | dir);
        self.linux_exec(tf.command);
        // ata_bmdma_start.
        let c = self.bm_rd(BM_CMD);
        self.bm_wr(BM_CMD, c | BM_START);
        // ata_bmdma_port_intr's read of the engine's status, repeated until Interrupt as the
        // stand-in for INTRQ: a device that is done by the first read (vmbench's, QEMU's for
        // a short transfer) costs the one read Linux makes; then ata_bmdma_stop and its pause.
        let host = self.wait_dma_done()?;
        let c = self.bm_rd(BM_CMD);
        self.bm_wr(BM_CMD, c & !BM_START);
        self.altstatus();
        let st = self.linux_irq_status()?;
        self.linux_irq_clear();
        if host & BM_ERROR != 0 {
            return Err(Error::Bus {
                command: tf.command,
                bm_status: host,
            });
        }
        self.check_done(tf.command, st)
    }

    /// The bus master's status until Interrupt (set when the device has finished and all its
    /// data is in memory); the first read is the driver's own, repeats are polls.
    fn wait_dma_done(&mut self) -> Result<u8, Error> {
        self.wait(
            self.p.bm + BM_STATUS,
            FirstRead::Own,
            "DMA completion",
            |s| s & BM_INTR != 0,
        )
    }

    fn dma_batched(&mut self, tf: &Taskfile, dir: u8) -> Result<(), Error> {
        self.batched_load(tf);
        if !self.prd_loaded {
            self.write_prd_pointer();
            self.prd_loaded = true;
        }
        if self.intr_dirty {
            self.bm_wr(BM_STATUS, self.bm_keep | BM_INTR | BM_ERROR);
            self.intr_dirty = false;
        }
        if self.bm_cmd != Some(dir) {
            self.bm_wr(BM_CMD, dir);
            self.bm_cmd = Some(dir);
        }
        fence(Ordering::SeqCst);
        self.tf_wr(COMMAND, tf.command);
        self.bm_wr(BM_CMD, dir | BM_START);
        self.bm_cmd = Some(dir | BM_START);
        let host = self.wait_dma_done()?;
        let st = self.wait_not_busy("DMA status")?;
        self.bm_wr(BM_STATUS, host);
        self.bm_wr(BM_CMD, dir);
        self.bm_cmd = Some(dir);
        if host & BM_ERROR != 0 {
            return Err(Error::Bus {
                command: tf.command,
                bm_status: host,
            });
        }
        self.check_done(tf.command, st)
    }

    // ---- PIO ----

    fn pio(&mut self, tf: &Taskfile, dir: Dir, xfer: Xfer, off: u64) -> Result<(), Error> {
        let per_block = if xfer == Xfer::PioMultiple {
            u32::from(self.multiple)
        } else {
            1
        };
        if dir == Dir::Write {
            fence(Ordering::SeqCst);
        }
        let r = match (self.opts.profile, dir) {
            (Profile::Linux, Dir::Write) => self.pio_out_linux(tf, per_block, off),
            (Profile::Linux, Dir::Read) => self.pio_in_linux(tf, per_block, off),
            (Profile::Batched | Profile::Poll, _) => self.pio_batched(tf, dir, per_block, off),
        };
        fence(Ordering::SeqCst);
        r
    }

    /// PIO data-in as libata's interrupt-driven HSM runs it: per DRQ block an interrupt,
    /// irq status and clear, the sectors, the flush; ata_wait_idle after the last.
    fn pio_in_linux(&mut self, tf: &Taskfile, per_block: u32, off: u64) -> Result<(), Error> {
        self.linux_issue(tf)?;
        self.linux_exec(tf.command);
        let (mut left, mut at) = (tf.count, off);
        loop {
            self.wait_intr("PIO data-in")?;
            let st = self.linux_irq_status()?;
            self.linux_irq_clear();
            self.expect_drq(tf.command, st)?;
            let n = left.min(per_block);
            self.data(at, n, Dir::Read, Strings::PerSector);
            self.altstatus();
            left -= n;
            at += u64::from(n) * 512;
            if left == 0 {
                let st = self.wait_idle("PIO data-in end")?;
                return self.check_done(tf.command, st);
            }
        }
    }

    /// PIO data-out: the first block from ata_sff_pio_task after a busy-wait on status, the
    /// rest on interrupts, completion on the interrupt after the last block.
    fn pio_out_linux(&mut self, tf: &Taskfile, per_block: u32, off: u64) -> Result<(), Error> {
        self.linux_issue(tf)?;
        self.linux_exec(tf.command);
        let st = self.wait_not_busy("PIO data-out")?;
        self.expect_drq(tf.command, st)?;
        let (mut left, mut at) = (tf.count, off);
        loop {
            let n = left.min(per_block);
            self.data(at, n, Dir::Write, Strings::PerSector);
            self.altstatus();
            left -= n;
            at += u64::from(n) * 512;
            self.wait_intr("PIO data-out")?;
            let st = self.linux_irq_status()?;
            self.linux_irq_clear();
            if left == 0 {
                return self.check_done(tf.command, st);
            }
            self.expect_drq(tf.command, st)?;
        }
    }

    /// Either direction: per DRQ block one status wait and one string instruction; a last
    /// status wait to see the command complete.
    fn pio_batched(
        &mut self,
        tf: &Taskfile,
        dir: Dir,
        per_block: u32,
        off: u64,
    ) -> Result<(), Error> {
        self.batched_load(tf);
        self.tf_wr(COMMAND, tf.command);
        self.intr_dirty = true;
        let (mut left, mut at) = (tf.count, off);
        loop {
            let st = self.wait_not_busy("PIO")?;
            if left == 0 {
                return self.check_done(tf.command, st);
            }
            self.expect_drq(tf.command, st)?;
            let n = left.min(per_block);
            self.data(at, n, dir, Strings::PerBlock);
            left -= n;
            at += u64::from(n) * 512;
        }
    }

    /// Moves `sectors` through the data port at buffer offset `at`: one string instruction
    /// per sector (libata's ata_pio_sector) or one for them all.
    fn data(&mut self, at: u64, sectors: u32, dir: Dir, strings: Strings) {
        let port = self.p.cmd + DATA;
        let write = dir == Dir::Write;
        let step = if strings == Strings::PerSector {
            1
        } else {
            sectors
        };
        let mut s = 0;
        while s < sectors {
            let n = step.min(sectors - s) as usize;
            let addr = self.buf + at + u64::from(s) * 512;
            let elements = if self.opts.pio32 {
                // SAFETY: inside this driver's data buffer: `rw` checked the request against
                // its size, and the buffer is 64 KiB aligned (so dword aligned here).
                let b = unsafe { alloc::slice::<u32>(addr, n * 128) };
                if write {
                    outsl(port, b);
                } else {
                    insl(port, b);
                }
                n * 128
            } else {
                // SAFETY: as above.
                let b = unsafe { alloc::slice::<u16>(addr, n * 256) };
                if write {
                    outsw(port, b);
                } else {
                    insw(port, b);
                }
                n * 256
            };
            self.n.data += elements as u64;
            self.n.accesses += elements as u64;
            s += n as u32;
        }
    }
}
