//! One IDE channel of the PIIX in compatibility mode: the command block (data port and seven
//! byte registers), the control block (alternate status / device control), the drive behind
//! them if any, the channel's bus master, and its ISA interrupt line. Device selection, nIEN,
//! SRST and HOB are handled here as ATA/ATAPI-6 7 and 9 describe them.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use vm_memory::GuestMemoryMmap;

use super::ata::{op, TaskFile, DC_HOB, DC_NIEN, DC_SRST, DEV_DEV, ST_BSY};
use super::bmdma::{BusMaster, Outcome, ST_INTERRUPT};
use super::drive::Drive;
use super::IdeCounters;
use crate::interrupt::IrqLine;

/// What a byte read returns when no device drives the bus: ATA hosts pull DD7 down so that a
/// missing device never reads as busy (ATA-6 5.2; Linux's libata relies on 0x7f or 0xff).
pub const FLOATING: u8 = 0x7f;
/// A 16-bit data cycle nobody answers: DD15-8 float high, DD7 is pulled down.
pub const FLOATING_WORD: u16 = 0xff7f;

// Command block register offsets.
pub const REG_DATA: u64 = 0;
pub const REG_ERROR_FEATURE: u64 = 1;
pub const REG_COUNT: u64 = 2;
pub const REG_LBA_LOW: u64 = 3;
pub const REG_LBA_MID: u64 = 4;
pub const REG_LBA_HIGH: u64 = 5;
pub const REG_DEVICE: u64 = 6;
pub const REG_STATUS_COMMAND: u64 = 7;

pub(super) struct Channel {
    pub(super) drive: Option<Drive>,
    /// Device control as last written (both devices latch it).
    control: u8,
    pub(super) bm: BusMaster,
    irq: Arc<dyn IrqLine>,
    /// The level we drive on the interrupt line.
    level: bool,
    counters: Arc<IdeCounters>,
}

impl Channel {
    pub(super) fn new(
        drive: Option<Drive>,
        irq: Arc<dyn IrqLine>,
        counters: Arc<IdeCounters>,
    ) -> Self {
        Channel {
            drive,
            control: 0,
            bm: BusMaster::default(),
            irq,
            level: false,
            counters,
        }
    }

    /// The drive, when it is the selected device. Device 1 is never present: with it
    /// selected, device 0 answers register reads for it, its status reads 00h, and only
    /// EXECUTE DEVICE DIAGNOSTIC is taken (ATA-6 9.16, "device 0 only" configurations).
    fn selected(&mut self) -> Option<&mut Drive> {
        self.drive.as_mut().filter(|d| d.tf.device & DEV_DEV == 0)
    }

    fn hob(&self) -> bool {
        self.control & DC_HOB != 0
    }

    /// A read of command block register `reg` (1..=7).
    pub(super) fn read_reg(&mut self, reg: u64) -> u8 {
        let hob = self.hob();
        let Some(d) = self.drive.as_mut() else {
            return FLOATING;
        };
        let device1 = d.tf.device & DEV_DEV != 0;
        if d.status & ST_BSY != 0 && !device1 {
            // While busy the registers belong to the drive; drives return Status for all of
            // them (ATA-2 and drive manuals), and Status reads do not acknowledge.
            return d.status;
        }
        let tf = &d.tf;
        match reg {
            REG_ERROR_FEATURE => d.error,
            REG_COUNT => TaskFile::byte(tf.count, hob),
            REG_LBA_LOW => TaskFile::byte(tf.lba_low, hob),
            REG_LBA_MID => TaskFile::byte(tf.lba_mid, hob),
            REG_LBA_HIGH => TaskFile::byte(tf.lba_high, hob),
            REG_DEVICE => tf.device,
            REG_STATUS_COMMAND if device1 => 0,
            REG_STATUS_COMMAND => {
                // Reading Status acknowledges the interrupt (ATA-6 5.2.9).
                let s = d.status;
                d.intrq = false;
                self.update_irq();
                s
            }
            _ => FLOATING,
        }
    }

    /// A write of command block register `reg` (1..=7).
    pub(super) fn write_reg(&mut self, reg: u64, v: u8) {
        // Any command block write clears HOB (ATA-6 7.8).
        self.control &= !DC_HOB;
        let Some(d) = self.drive.as_mut() else {
            return;
        };
        if d.status & ST_BSY != 0 {
            return; // in reset: registers are not written
        }
        let tf = &mut d.tf;
        match reg {
            REG_ERROR_FEATURE => TaskFile::push(&mut tf.feature, v),
            REG_COUNT => TaskFile::push(&mut tf.count, v),
            REG_LBA_LOW => TaskFile::push(&mut tf.lba_low, v),
            REG_LBA_MID => TaskFile::push(&mut tf.lba_mid, v),
            REG_LBA_HIGH => TaskFile::push(&mut tf.lba_high, v),
            REG_DEVICE => tf.device = v,
            REG_STATUS_COMMAND if tf.device & DEV_DEV == 0 => d.command(v),
            REG_STATUS_COMMAND if v == op::EXECUTE_DEVICE_DIAGNOSTIC => d.execute_diagnostic(),
            _ => {}
        }
        // Selection gates INTRQ; a command clears or raises it.
        self.update_irq();
    }

    /// Alternate status: the status without acknowledging the interrupt.
    pub(super) fn read_alt_status(&mut self) -> u8 {
        match self.drive.as_ref() {
            None => FLOATING,
            Some(d) if d.tf.device & DEV_DEV != 0 => 0,
            Some(d) => d.status,
        }
    }

    /// Device control: nIEN masks INTRQ, SRST resets on its falling edge, HOB selects the
    /// high-order bytes for reads.
    pub(super) fn write_control(&mut self, v: u8) {
        let was = self.control;
        self.control = v;
        if let Some(d) = self.drive.as_mut() {
            match (was & DC_SRST != 0, v & DC_SRST != 0) {
                (false, true) => d.begin_reset(),
                (true, false) => d.end_reset(),
                _ => {}
            }
        }
        self.update_irq();
    }

    /// One 16-bit cycle on the data port.
    pub(super) fn read_data(&mut self) -> u16 {
        let w = self.selected().and_then(|d| d.read_data());
        self.update_irq();
        w.unwrap_or(FLOATING_WORD)
    }

    pub(super) fn write_data(&mut self, w: u16) {
        if let Some(d) = self.selected() {
            d.write_data(w);
        }
        self.update_irq();
    }

    /// Lets the bus master serve the drive's pending DMA transfer. True when the run ended
    /// in a master abort, which the PCI function records in its status register.
    pub(super) fn pump_dma(&mut self, mem: &GuestMemoryMmap, bus_master_enabled: bool) -> bool {
        if !bus_master_enabled {
            return false;
        }
        let Some(d) = self.drive.as_mut() else {
            return false;
        };
        let Some((disk, xfer)) = d.dma_parts() else {
            return false;
        };
        let outcome = self.bm.run(mem, disk, xfer, &self.counters);
        match outcome {
            Outcome::Complete => d.finish_dma(Ok(())),
            Outcome::Disk(e) => d.finish_dma(Err(e)),
            Outcome::MasterAbort | Outcome::TableOverrun => {
                self.counters.bm_errors.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Idle | Outcome::TableExhausted => {}
        }
        self.update_irq();
        outcome == Outcome::MasterAbort
    }

    /// Drives the interrupt line from the selected drive's INTRQ and nIEN. A rising edge
    /// sets the bus master's Interrupt bit (PIIX BMISx bit 2 latches edges, masked or not by
    /// the 8259); an assertion that happened inside one access is still an edge.
    pub(super) fn update_irq(&mut self) {
        let enabled = self.control & DC_NIEN == 0;
        let (pending, raised) = match self.drive.as_mut() {
            Some(d) => {
                let raised = d.take_raised();
                (d.intrq && d.tf.device & DEV_DEV == 0, raised)
            }
            None => (false, false),
        };
        let level = pending && enabled;
        if level && (!self.level || raised) {
            self.bm.status |= ST_INTERRUPT;
            self.counters.interrupts.fetch_add(1, Ordering::Relaxed);
            if self.level {
                // Re-asserted without being seen low: give edge-triggered controllers their
                // edge.
                self.irq.set_level(false);
            }
            self.irq.set_level(true);
        } else if !level && self.level {
            self.irq.set_level(false);
        }
        self.level = level;
    }
}
