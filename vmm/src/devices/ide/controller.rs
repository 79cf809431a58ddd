//! The PIIX3 IDE PCI function: its configuration space (command/status, BMIBA, the IDE
//! timing registers) and the dispatch of port accesses, legacy and BAR4, to the channels.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use vm_memory::GuestMemoryMmap;

use super::channel::{Channel, REG_DATA};
use super::drive::Drive;
use super::identify::DriveInfo;
use super::{
    IdeCounters, BM_BAR, BM_BAR_SIZE, CLASS_CODE, DEVICE_ID, PRIMARY_COMMAND, PRIMARY_CONTROL,
    SECONDARY_COMMAND, SECONDARY_CONTROL, VENDOR_ID,
};
use crate::backend::block::BlockBackend;
use crate::bus::{Access, BusDevice};
use crate::interrupt::IrqLine;
use crate::pci::config::{BarKind, ConfigSpace, Identity, CMD_BUS_MASTER, CMD_IO, COMMAND, STATUS};
use crate::pci::{ConfigChange, PciFunction};

/// Master latency timer.
const MLT: usize = 0x0d;
/// BMIBA, the bus-master base address (BAR4).
const BMIBA: usize = 0x20;
/// IDETIM of the primary channel; the secondary's is at 0x42.
const IDETIM: usize = 0x40;
/// Slave IDE timing (PIIX3 and later).
const SIDETIM: usize = 0x44;
/// IDETIM bit 15: the channel's ports are decoded. Reset clears it and firmware sets it; this
/// VMM has no firmware, so the function comes up as a BIOS leaves it, with both channels on.
/// Linux's ata_piix skips a channel whose bit reads clear.
pub const IDETIM_DECODE: u16 = 0x8000;
/// PCISTS at reset: medium DEVSEL timing, fast back-to-back capable.
const STATUS_DEFAULT: u16 = 0x0280;
/// PCISTS bits the function sets and software clears by writing ones: received master abort
/// (13) and received target abort (12).
const STATUS_MASTER_ABORT: u16 = 1 << 13;
const STATUS_W1C: u16 = (1 << 13) | (1 << 12);

/// What an I/O address reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// Channel, register offset in its command block.
    Command(usize, u64),
    /// Channel's alternate status / device control.
    Control(usize),
    /// Offset in the bus-master block.
    BusMaster(u64),
    None,
}

/// The PIIX3 IDE function. Register the [`super::LEGACY_RANGES`] on the port bus and BAR4
/// through the PCI mapping, all with this one device.
pub struct Piix {
    config: ConfigSpace,
    channels: [Channel; 2],
    mem: GuestMemoryMmap,
    counters: Arc<IdeCounters>,
}

impl Piix {
    /// A PIIX3 IDE function with `disk` (if any) as primary master and nothing else
    /// attached. `irq14` and `irq15` are the ISA lines of the two channels; `bm_io_base` is
    /// where BAR4 starts out (0 leaves it unassigned, as at reset).
    pub fn new(
        mem: GuestMemoryMmap,
        disk: Option<Box<dyn BlockBackend>>,
        irq14: Arc<dyn IrqLine>,
        irq15: Arc<dyn IrqLine>,
        bm_io_base: u16,
    ) -> Piix {
        Self::with_drive_info(mem, disk, DriveInfo::default(), irq14, irq15, bm_io_base)
    }

    /// As [`Piix::new`], with the model, serial and firmware strings IDENTIFY reports.
    pub fn with_drive_info(
        mem: GuestMemoryMmap,
        disk: Option<Box<dyn BlockBackend>>,
        info: DriveInfo,
        irq14: Arc<dyn IrqLine>,
        irq15: Arc<dyn IrqLine>,
        bm_io_base: u16,
    ) -> Piix {
        let counters = Arc::new(IdeCounters::default());
        let drive = disk.map(|d| Drive::new(d, info, counters.clone()));
        Piix {
            config: config_space(bm_io_base),
            channels: [
                Channel::new(drive, irq14, counters.clone()),
                Channel::new(None, irq15, counters.clone()),
            ],
            mem,
            counters,
        }
    }

    pub fn counters(&self) -> Arc<IdeCounters> {
        self.counters.clone()
    }

    /// Whether the function claims channel `ch`'s legacy ports: I/O space enabled and the
    /// channel's IDETIM decode bit set.
    fn decodes(&self, ch: usize) -> bool {
        self.config.io_enabled() && self.config.u16_at(IDETIM + 2 * ch) & IDETIM_DECODE != 0
    }

    fn target(&self, addr: u64) -> Target {
        let within = |(base, len): (u64, u64)| addr.checked_sub(base).filter(|o| *o < len);
        for (ch, (cmd, ctl)) in [
            (PRIMARY_COMMAND, PRIMARY_CONTROL),
            (SECONDARY_COMMAND, SECONDARY_CONTROL),
        ]
        .into_iter()
        .enumerate()
        {
            if let Some(reg) = within(cmd) {
                return if self.decodes(ch) {
                    Target::Command(ch, reg)
                } else {
                    Target::None
                };
            }
            if within(ctl).is_some() {
                return if self.decodes(ch) {
                    Target::Control(ch)
                } else {
                    Target::None
                };
            }
        }
        match self.config.bar(BM_BAR) {
            Some(b) if self.config.io_enabled() && b.base != 0 => {
                match within((b.base, BM_BAR_SIZE)) {
                    Some(off) => Target::BusMaster(off),
                    None => Target::None,
                }
            }
            _ => Target::None,
        }
    }

    /// The [`super::REG_NAMES`] slot an access to `target` (one exit) is counted under.
    fn counter_slot(target: Target) -> usize {
        match target {
            Target::Command(_, reg) => reg as usize,
            Target::Control(_) => 8,
            Target::BusMaster(off) => match off % 8 {
                0 => 9,
                2 => 10,
                4..8 => 11,
                _ => 12,
            },
            Target::None => 12,
        }
    }

    /// Runs channel `ch`'s pending DMA if the bus master may master, and records a master
    /// abort in PCISTS.
    fn pump(&mut self, ch: usize) {
        let bme = self.config.bus_master();
        if self.channels[ch].pump_dma(&self.mem, bme) {
            let s = self.config.u16_at(STATUS) | STATUS_MASTER_ABORT;
            self.config.set_u16(STATUS, s);
        }
    }

    fn read_byte(&mut self, addr: u64) -> u8 {
        match self.target(addr) {
            Target::Command(ch, reg) if reg != REG_DATA => self.channels[ch].read_reg(reg),
            Target::Control(ch) => self.channels[ch].read_alt_status(),
            Target::BusMaster(off) => self.channels[(off / 8) as usize].bm.read(off % 8),
            _ => 0xff,
        }
    }

    fn write_byte(&mut self, addr: u64, v: u8) {
        match self.target(addr) {
            Target::Command(ch, reg) if reg != REG_DATA => {
                self.channels[ch].write_reg(reg, v);
                if reg == super::channel::REG_STATUS_COMMAND {
                    self.pump(ch); // a DMA command with Start already set runs now
                }
            }
            Target::Control(ch) => self.channels[ch].write_control(v),
            Target::BusMaster(off) => {
                let ch = (off / 8) as usize;
                if self.channels[ch].bm.write(off % 8, v) {
                    self.pump(ch);
                }
            }
            _ => {}
        }
    }
}

fn config_space(bm_io_base: u16) -> ConfigSpace {
    let mut c = ConfigSpace::new(Identity {
        vendor: VENDOR_ID,
        device: DEVICE_ID,
        class: CLASS_CODE,
        revision: 0,
        subsystem_vendor: 0,
        subsystem: 0,
        // Compatibility mode uses IRQ 14/15, not INTx: no interrupt pin or line register.
        interrupt_pin: 0,
    });
    // PCICMD: only I/O space (legacy ports and BMIBA) and bus master are implemented.
    let cmd = CMD_IO | CMD_BUS_MASTER;
    c.set_writable(COMMAND, &cmd.to_le_bytes());
    c.set_writable(0x3c, &[0]);
    c.set_u16(STATUS, STATUS_DEFAULT);
    c.set_writable(MLT, &[0xf0]);
    // BAR0-3 are not implemented in compatibility mode and read 0.
    c.add_bar(BM_BAR, BarKind::Io, BM_BAR_SIZE, u64::from(bm_io_base));
    // IDETIM: all but the reserved bits 11:10; SIDETIM: all.
    for ch in 0..2 {
        c.set_u16(IDETIM + 2 * ch, IDETIM_DECODE);
        c.set_writable(IDETIM + 2 * ch, &[0xff, 0xf3]);
    }
    c.set_writable(SIDETIM, &[0xff]);
    c
}

impl BusDevice for Piix {
    fn debug_label(&self) -> &'static str {
        "ide"
    }
    fn read(&mut self, a: Access, data: &mut [u8]) {
        let target = self.target(a.addr);
        self.counters.reg_reads[Self::counter_slot(target)].fetch_add(1, Ordering::Relaxed);
        if let Target::Command(ch, REG_DATA) = target {
            // The data port: a word access is one 16-bit IDE cycle, a dword two (PIIX 32-bit
            // PIO). Byte accesses run no cycle and read all ones, as in QEMU.
            let c = &mut self.channels[ch];
            match data.len() {
                2 => data.copy_from_slice(&c.read_data().to_le_bytes()),
                4 => {
                    let lo = c.read_data();
                    let hi = c.read_data();
                    data.copy_from_slice(&(u32::from(lo) | u32::from(hi) << 16).to_le_bytes());
                }
                _ => data.fill(0xff),
            }
            return;
        }
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.read_byte(a.addr + i as u64);
        }
    }

    fn write(&mut self, a: Access, data: &[u8]) {
        let target = self.target(a.addr);
        self.counters.reg_writes[Self::counter_slot(target)].fetch_add(1, Ordering::Relaxed);
        if let Target::Command(ch, REG_DATA) = target {
            let c = &mut self.channels[ch];
            match *data {
                [l, h] => c.write_data(u16::from_le_bytes([l, h])),
                [b0, b1, b2, b3] => {
                    c.write_data(u16::from_le_bytes([b0, b1]));
                    c.write_data(u16::from_le_bytes([b2, b3]));
                }
                _ => {}
            }
            return;
        }
        // A wide write to the bus-master block lands all at once: apply status and PRD
        // pointer bytes before a command byte, so that clearing Interrupt in the same write
        // as a new Start cannot clear the new transfer's interrupt.
        let is_cmd =
            |p: &Self, addr: u64| matches!(p.target(addr), Target::BusMaster(o) if o % 8 == 0);
        for last in [false, true] {
            for (i, &v) in data.iter().enumerate() {
                let addr = a.addr + i as u64;
                if is_cmd(self, addr) == last {
                    self.write_byte(addr, v);
                }
            }
        }
    }
}

impl PciFunction for Piix {
    fn config_read(&self, reg: usize) -> u32 {
        let v = self.config.read(reg);
        if reg * 4 == BMIBA {
            v & 0x0000_ffff // bits 31:16 are reserved
        } else {
            v
        }
    }

    fn config_write(&mut self, reg: usize, offset: u64, data: &[u8]) -> ConfigChange {
        let start = reg * 4 + offset as usize;
        let mut bytes = data.to_vec();
        for (i, b) in bytes.iter_mut().enumerate() {
            match start + i {
                // PCISTS: write-one-to-clear error bits.
                o if o == STATUS + 1 => {
                    let clear = u16::from(*b) << 8 & STATUS_W1C;
                    let s = self.config.u16_at(STATUS) & !clear;
                    self.config.set_u16(STATUS, s);
                }
                // BMIBA 31:16 are reserved; let an all-ones sizing write through so that the
                // generic BAR logic sees sizing, and drop anything else there.
                o if (o == BMIBA + 2 || o == BMIBA + 3) && !data.iter().all(|&x| x == 0xff) => {
                    *b = 0;
                }
                _ => {}
            }
        }
        let was_master = self.config.bus_master();
        let change = self.config.write(reg, offset, &bytes);
        if !was_master && self.config.bus_master() {
            // Transfers started while mastering was off begin now.
            self.pump(0);
            self.pump(1);
        }
        change
    }
}
