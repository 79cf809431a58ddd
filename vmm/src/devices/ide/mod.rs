//! The IDE function of an Intel PIIX3 (82371SB, PCI 8086:7010, class 01.01.80) with an ATA
//! hard disk as primary master: both channels in compatibility mode at the legacy ports and
//! ISA IRQs 14/15, bus-master DMA through BAR4 (Intel 82371FB/82371SB PIIX/PIIX3 datasheet:
//! IDE configuration registers and bus master IDE I/O registers; ATA/ATAPI-6, T13 1410D).
//!
//! Every register access traps and is emulated synchronously on the vCPU thread that made it,
//! DMA included: the transfer runs when the guest sets the bus master's Start bit (or writes
//! the command with Start already set), as the real controller starts moving data then.
//!
//! Layout: [`ata`] decodes taskfile commands (pure), [`identify`] builds the IDENTIFY block
//! (pure), `drive` executes commands and PIO, `bmdma` holds the bus-master registers and
//! walks PRD tables, `channel` ties a drive to its ports and interrupt line, `controller` is
//! the PCI function.

pub mod ata;
mod bmdma;
mod channel;
mod controller;
mod drive;
pub mod identify;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};

pub use bmdma::{Prd, PRD_MAX_ENTRIES};
pub use controller::Piix;
pub use identify::DriveInfo;

/// PCI identity: PIIX3 IDE. PIIX3 rather than PIIX4 (8086:7111) because it is the function
/// of the i440FX/PIIX3 `pc` machine QEMU runs (our second engine, so the probe sees the same
/// device on both), and Linux's ata_piix drives it with the same code (multiword DMA 2, no
/// UDMA register block to model).
pub const VENDOR_ID: u16 = 0x8086;
pub const DEVICE_ID: u16 = 0x7010;
/// Mass storage, IDE, programming interface 80h: bus master, both channels in fixed
/// compatibility mode.
pub const CLASS_CODE: u32 = 0x01_01_80;

/// Legacy port ranges the machine registers on the port-I/O bus, all pointing at the same
/// device (which tells them apart by address): primary command block, primary control block
/// (0x3F6 only: 0x3F7 belongs to the floppy controller), secondary command and control.
pub const PRIMARY_COMMAND: (u64, u64) = (0x1f0, 8);
pub const PRIMARY_CONTROL: (u64, u64) = (0x3f6, 1);
pub const SECONDARY_COMMAND: (u64, u64) = (0x170, 8);
pub const SECONDARY_CONTROL: (u64, u64) = (0x376, 1);
pub const LEGACY_RANGES: [(u64, u64); 4] = [
    PRIMARY_COMMAND,
    PRIMARY_CONTROL,
    SECONDARY_COMMAND,
    SECONDARY_CONTROL,
];
/// ISA interrupts of the two channels in compatibility mode.
pub const PRIMARY_IRQ: u32 = 14;
pub const SECONDARY_IRQ: u32 = 15;
/// The bus-master registers: BAR4 (BMIBA, config offset 20h), 16 bytes of I/O space, mapped
/// through the usual [`crate::pci::ConfigChange`].
pub const BM_BAR: usize = 4;
pub const BM_BAR_SIZE: u64 = 16;

/// Operations served, for the harness to cross-check the guest's figures.
#[derive(Default)]
pub struct IdeCounters {
    pub cmd_pio_read: AtomicU64,
    pub cmd_pio_write: AtomicU64,
    pub cmd_dma_read: AtomicU64,
    pub cmd_dma_write: AtomicU64,
    pub cmd_identify: AtomicU64,
    pub cmd_flush: AtomicU64,
    /// SET FEATURES, SET MULTIPLE, power management, diagnostics.
    pub cmd_other: AtomicU64,
    /// Commands ended with ERR (aborted, out of range, disk errors).
    pub cmd_errors: AtomicU64,
    pub sectors_read: AtomicU64,
    pub sectors_written: AtomicU64,
    /// 16-bit data port cycles.
    pub pio_words: AtomicU64,
    /// Bytes the bus master moved.
    pub dma_bytes: AtomicU64,
    /// Bus-master transfers ended by a bad PRD table or address.
    pub bm_errors: AtomicU64,
    /// Software resets.
    pub resets: AtomicU64,
    /// Rising edges on IRQ 14/15.
    pub interrupts: AtomicU64,
    /// Port accesses (exits) by register, both channels together: reads and writes in the
    /// slots of [`REG_NAMES`].
    pub reg_reads: [AtomicU64; REG_NAMES.len()],
    pub reg_writes: [AtomicU64; REG_NAMES.len()],
}

/// The registers whose accesses [`IdeCounters`] counts, with the counter names of their reads
/// and writes: the command block's eight (ATA8-ACS names: a read of offset 1 is Error, a write
/// Features; offset 7 Status and Command), the control block's one, the bus master's command,
/// status and PRD table pointer, then everything else (unclaimed ports, the bus master's
/// reserved bytes).
pub const REG_NAMES: [(&str, &str); 13] = [
    ("read:data", "write:data"),
    ("read:error", "write:features"),
    ("read:count", "write:count"),
    ("read:lba_low", "write:lba_low"),
    ("read:lba_mid", "write:lba_mid"),
    ("read:lba_high", "write:lba_high"),
    ("read:device", "write:device"),
    ("read:status", "write:command"),
    ("read:alt_status", "write:device_control"),
    ("read:bm_command", "write:bm_command"),
    ("read:bm_status", "write:bm_status"),
    ("read:bm_prd", "write:bm_prd"),
    ("read:other", "write:other"),
];

impl crate::counters::Counters for IdeCounters {
    fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let v = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut all = vec![
            ("cmd_pio_read", v(&self.cmd_pio_read)),
            ("cmd_pio_write", v(&self.cmd_pio_write)),
            ("cmd_dma_read", v(&self.cmd_dma_read)),
            ("cmd_dma_write", v(&self.cmd_dma_write)),
            ("cmd_identify", v(&self.cmd_identify)),
            ("cmd_flush", v(&self.cmd_flush)),
            ("cmd_other", v(&self.cmd_other)),
            ("cmd_errors", v(&self.cmd_errors)),
            ("sectors_read", v(&self.sectors_read)),
            ("sectors_written", v(&self.sectors_written)),
            ("pio_words", v(&self.pio_words)),
            ("dma_bytes", v(&self.dma_bytes)),
            ("bm_errors", v(&self.bm_errors)),
            ("resets", v(&self.resets)),
            ("interrupts", v(&self.interrupts)),
        ];
        for (i, (r, w)) in REG_NAMES.iter().enumerate() {
            all.push((r, v(&self.reg_reads[i])));
            all.push((w, v(&self.reg_writes[i])));
        }
        all
    }
}
