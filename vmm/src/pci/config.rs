//! A type-0 configuration space (PCI Local Bus 3.0, 6.1) that devices embed: identity
//! registers, command/status, BARs with sizing semantics, interrupt line/pin, and a
//! capability list. The device decides what its registers mean; this keeps the generic rules.

use super::{BarRange, ConfigChange};

pub const COMMAND: usize = 0x04;
pub const STATUS: usize = 0x06;
pub const BAR0: usize = 0x10;
pub const CAP_PTR: usize = 0x34;
pub const INTERRUPT_LINE: usize = 0x3c;
pub const INTERRUPT_PIN: usize = 0x3d;

pub const CMD_IO: u16 = 1 << 0;
pub const CMD_MEMORY: u16 = 1 << 1;
pub const CMD_BUS_MASTER: u16 = 1 << 2;
pub const CMD_INTX_DISABLE: u16 = 1 << 10;
pub const STATUS_CAP_LIST: u16 = 1 << 4;
pub const STATUS_INTERRUPT: u16 = 1 << 3;

/// What a BAR decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    Io,
    Mem32,
    /// 64-bit memory BAR; takes this slot and the next.
    Mem64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    pub kind: BarKind,
    /// Power of two, at least 16 bytes (memory) or 4 bytes (I/O).
    pub size: u64,
    /// Current base as programmed.
    pub base: u64,
}

/// Identity of a function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub vendor: u16,
    pub device: u16,
    pub class: u32, // class << 16 | subclass << 8 | prog-if
    pub revision: u8,
    pub subsystem_vendor: u16,
    pub subsystem: u16,
    /// 0 for none, 1..=4 for INTA#..INTD#.
    pub interrupt_pin: u8,
}

pub struct ConfigSpace {
    bytes: [u8; 256],
    /// Bits the guest may write, per byte.
    writable: [u8; 256],
    bars: [Option<Bar>; 6],
    /// Where the next capability goes.
    next_cap: usize,
    last_cap: Option<usize>,
}

impl ConfigSpace {
    pub fn new(id: Identity) -> Self {
        let mut c = ConfigSpace {
            bytes: [0; 256],
            writable: [0; 256],
            bars: [None; 6],
            next_cap: 0x40,
            last_cap: None,
        };
        c.set_u16(0x00, id.vendor);
        c.set_u16(0x02, id.device);
        c.bytes[0x08] = id.revision;
        c.bytes[0x09] = id.class as u8;
        c.bytes[0x0a] = (id.class >> 8) as u8;
        c.bytes[0x0b] = (id.class >> 16) as u8;
        c.set_u16(0x2c, id.subsystem_vendor);
        c.set_u16(0x2e, id.subsystem);
        c.bytes[INTERRUPT_PIN] = id.interrupt_pin;
        let cmd = CMD_IO | CMD_MEMORY | CMD_BUS_MASTER | CMD_INTX_DISABLE;
        c.writable[COMMAND] = cmd as u8;
        c.writable[COMMAND + 1] = (cmd >> 8) as u8;
        c.writable[INTERRUPT_LINE] = 0xff;
        c
    }

    pub fn set_u16(&mut self, off: usize, v: u16) {
        self.bytes[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }

    pub fn set_u32(&mut self, off: usize, v: u32) {
        self.bytes[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }

    pub fn u16_at(&self, off: usize) -> u16 {
        u16::from_le_bytes([self.bytes[off], self.bytes[off + 1]])
    }

    pub fn u32_at(&self, off: usize) -> u32 {
        u32::from_le_bytes([
            self.bytes[off],
            self.bytes[off + 1],
            self.bytes[off + 2],
            self.bytes[off + 3],
        ])
    }

    /// Makes bits of device-specific registers guest-writable (e.g. PIIX timing registers).
    pub fn set_writable(&mut self, off: usize, mask: &[u8]) {
        self.writable[off..off + mask.len()].copy_from_slice(mask);
    }

    pub fn command(&self) -> u16 {
        self.u16_at(COMMAND)
    }

    pub fn memory_enabled(&self) -> bool {
        self.command() & CMD_MEMORY != 0
    }

    pub fn io_enabled(&self) -> bool {
        self.command() & CMD_IO != 0
    }

    pub fn bus_master(&self) -> bool {
        self.command() & CMD_BUS_MASTER != 0
    }

    pub fn intx_disabled(&self) -> bool {
        self.command() & CMD_INTX_DISABLE != 0
    }

    /// Reflects the INTx state in the status register (bit 3), as PCI 2.3 requires.
    pub fn set_interrupt_status(&mut self, asserted: bool) {
        let s = self.u16_at(STATUS);
        let s = if asserted {
            s | STATUS_INTERRUPT
        } else {
            s & !STATUS_INTERRUPT
        };
        self.set_u16(STATUS, s);
    }

    /// Declares BAR `index` with its initial base (the VMM's placement).
    pub fn add_bar(&mut self, index: usize, kind: BarKind, size: u64, base: u64) {
        assert!(index < 6 && size.is_power_of_two());
        assert!(kind != BarKind::Mem64 || index < 5);
        let bar = Bar { kind, size, base };
        self.bars[index] = Some(bar);
        self.write_bar_regs(index, bar);
    }

    pub fn bar(&self, index: usize) -> Option<Bar> {
        self.bars.get(index).copied().flatten()
    }

    fn write_bar_regs(&mut self, index: usize, bar: Bar) {
        let off = BAR0 + index * 4;
        match bar.kind {
            BarKind::Io => self.set_u32(off, (bar.base as u32 & !0x3) | 0x1),
            BarKind::Mem32 => self.set_u32(off, bar.base as u32 & !0xf),
            BarKind::Mem64 => {
                self.set_u32(off, (bar.base as u32 & !0xf) | 0x4);
                self.set_u32(off + 4, (bar.base >> 32) as u32);
            }
        }
    }

    /// Adds a capability with `body` (after the ID and next bytes); returns its offset.
    pub fn add_capability(&mut self, id: u8, body: &[u8]) -> usize {
        let off = self.next_cap;
        let len = (2 + body.len()).div_ceil(4) * 4;
        assert!(off + len <= 256, "capabilities overflow config space");
        self.bytes[off] = id;
        self.bytes[off + 1] = 0;
        self.bytes[off + 2..off + 2 + body.len()].copy_from_slice(body);
        match self.last_cap {
            None => self.bytes[CAP_PTR] = off as u8,
            Some(prev) => self.bytes[prev + 1] = off as u8,
        }
        let s = self.u16_at(STATUS) | STATUS_CAP_LIST;
        self.set_u16(STATUS, s);
        self.last_cap = Some(off);
        self.next_cap = off + len;
        off
    }

    pub fn bytes(&self) -> &[u8; 256] {
        &self.bytes
    }

    pub fn bytes_mut(&mut self) -> &mut [u8; 256] {
        &mut self.bytes
    }

    pub fn read(&self, reg: usize) -> u32 {
        let off = reg * 4;
        if off + 4 > 256 {
            return u32::MAX;
        }
        self.u32_at(off)
    }

    /// Applies a guest write with the generic rules; returns the BAR moves the bus owner must
    /// apply (a BAR moves when it is rewritten while decoding is on, or when decoding is
    /// turned on or off).
    pub fn write(&mut self, reg: usize, offset: u64, data: &[u8]) -> ConfigChange {
        let start = reg * 4 + offset as usize;
        if start + data.len() > 256 || data.is_empty() {
            return ConfigChange::default();
        }
        let before = self.mapped_ranges();
        if (BAR0..BAR0 + 24).contains(&start) {
            self.write_bar(start, data);
        } else {
            for (i, &b) in data.iter().enumerate() {
                let o = start + i;
                let w = self.writable[o];
                self.bytes[o] = (self.bytes[o] & !w) | (b & w);
            }
            // Status bits are write-one-to-clear; none are set by this model except
            // INTERRUPT, which is read-only. Nothing more to do.
        }
        let after = self.mapped_ranges();
        ConfigChange {
            unmap: before
                .iter()
                .filter(|r| !after.contains(r))
                .copied()
                .collect(),
            map: after
                .iter()
                .filter(|r| !before.contains(r))
                .copied()
                .collect(),
        }
    }

    fn write_bar(&mut self, start: usize, data: &[u8]) {
        // Work on the dword(s) touched: merge the bytes, then apply the size mask.
        let first = (start - BAR0) / 4;
        let mut regs: [u32; 6] = std::array::from_fn(|i| self.u32_at(BAR0 + i * 4));
        let mut raw = [0u8; 24];
        for (i, r) in regs.iter().enumerate() {
            raw[i * 4..i * 4 + 4].copy_from_slice(&r.to_le_bytes());
        }
        let rel = start - BAR0;
        let end = (rel + data.len()).min(24);
        raw[rel..end].copy_from_slice(&data[..end - rel]);
        for (i, r) in regs.iter_mut().enumerate() {
            *r = u32::from_le_bytes([raw[i * 4], raw[i * 4 + 1], raw[i * 4 + 2], raw[i * 4 + 3]]);
        }
        let last = (end - 1) / 4;
        #[allow(clippy::needless_range_loop)] // idx also indexes self.bars and the registers
        for idx in first..=last {
            // The upper half of a 64-bit BAR belongs to the BAR below it.
            let (bar_idx, high) = match (
                idx.checked_sub(1).and_then(|p| self.bars[p]),
                self.bars[idx],
            ) {
                (Some(b), _) if b.kind == BarKind::Mem64 => (idx - 1, true),
                (_, Some(_)) => (idx, false),
                _ => {
                    self.set_u32(BAR0 + idx * 4, 0); // unimplemented BARs read as zero
                    continue;
                }
            };
            let Some(mut bar) = self.bars[bar_idx] else {
                continue;
            };
            let mask = !(bar.size - 1);
            if high {
                bar.base = (bar.base & 0xffff_ffff) | ((u64::from(regs[idx]) << 32) & mask);
            } else {
                let low = match bar.kind {
                    BarKind::Io => u64::from(regs[idx]) & !0x3,
                    _ => u64::from(regs[idx]) & !0xf,
                };
                let keep_high = if bar.kind == BarKind::Mem64 {
                    bar.base & !0xffff_ffff
                } else {
                    0
                };
                bar.base = (keep_high | low) & mask;
            }
            self.bars[bar_idx] = Some(bar);
            self.write_bar_regs(bar_idx, bar);
        }
    }

    /// The BAR ranges currently decoded (enabled in COMMAND, not in the middle of sizing).
    pub fn mapped_ranges(&self) -> Vec<BarRange> {
        let mut v = Vec::new();
        for (i, b) in self.bars.iter().enumerate() {
            let Some(b) = b else { continue };
            let io = b.kind == BarKind::Io;
            let enabled = if io {
                self.io_enabled()
            } else {
                self.memory_enabled()
            };
            // A base of zero, or all ones masked (sizing in progress), is not decoded.
            let sizing = b.base == !(b.size - 1)
                || (b.kind != BarKind::Mem64 && b.base == (u64::from(u32::MAX) & !(b.size - 1)));
            // Ports exist only below 64 KiB.
            let outside = io && b.base + b.size > 0x1_0000;
            if enabled && b.base != 0 && !sizing && !outside {
                v.push(BarRange {
                    bar: i,
                    base: b.base,
                    len: b.size,
                    io,
                });
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space() -> ConfigSpace {
        let mut c = ConfigSpace::new(Identity {
            vendor: 0x8086,
            device: 0x100e,
            class: 0x02_00_00,
            revision: 3,
            subsystem_vendor: 0x8086,
            subsystem: 0x001e,
            interrupt_pin: 1,
        });
        c.add_bar(0, BarKind::Mem32, 0x20000, 0xc000_0000);
        c.add_bar(1, BarKind::Io, 0x40, 0xc000);
        c.add_bar(2, BarKind::Mem64, 0x4000, 0xc010_0000);
        c
    }

    #[test]
    fn bar_sizing_reads_back_the_size_mask_with_type_bits() {
        let mut c = space();
        for (reg, expect) in [
            (4, 0xfffe_0000u32),
            (5, 0xffff_ffc1),
            (6, 0xffff_c004),
            (7, 0xffff_ffff),
        ] {
            c.write(reg, 0, &u32::MAX.to_le_bytes());
            assert_eq!(c.read(reg), expect, "BAR reg {reg}");
        }
        // An unimplemented BAR reads zero even after all ones are written.
        c.write(8, 0, &u32::MAX.to_le_bytes());
        assert_eq!(c.read(8), 0);
    }

    #[test]
    fn moving_a_bar_while_decoding_reports_unmap_and_map() {
        let mut c = space();
        c.write(1, 0, &u32::from(CMD_MEMORY | CMD_IO).to_le_bytes());

        let change = c.write(4, 0, &0xd000_0000u32.to_le_bytes());

        assert_eq!(
            change.unmap,
            vec![BarRange {
                bar: 0,
                base: 0xc000_0000,
                len: 0x20000,
                io: false
            }]
        );
        assert_eq!(
            change.map,
            vec![BarRange {
                bar: 0,
                base: 0xd000_0000,
                len: 0x20000,
                io: false
            }]
        );
        assert_eq!(c.read(4), 0xd000_0000);
    }

    #[test]
    fn sizing_unmaps_and_restoring_maps_again() {
        let mut c = space();
        c.write(1, 0, &u32::from(CMD_MEMORY).to_le_bytes());
        let sizing = c.write(4, 0, &u32::MAX.to_le_bytes());
        let restore = c.write(4, 0, &0xc000_0000u32.to_le_bytes());
        assert_eq!(sizing.unmap.len(), 1);
        assert!(sizing.map.is_empty());
        assert_eq!(restore.map.len(), 1);
    }

    #[test]
    fn command_register_enables_decoding() {
        let mut c = space();
        c.write(1, 0, &0u32.to_le_bytes());
        assert!(c.mapped_ranges().is_empty());
        let on = c.write(1, 0, &u32::from(CMD_MEMORY).to_le_bytes());
        assert_eq!(on.map.iter().map(|r| r.bar).collect::<Vec<_>>(), vec![0, 2]);
        let io_on = c.write(1, 0, &u32::from(CMD_MEMORY | CMD_IO).to_le_bytes());
        assert_eq!(
            io_on.map,
            vec![BarRange {
                bar: 1,
                base: 0xc000,
                len: 0x40,
                io: true
            }]
        );
    }

    #[test]
    fn sixty_four_bit_bar_takes_its_high_half() {
        let mut c = space();
        c.write(6, 0, &0x0000_0000u32.to_le_bytes());
        c.write(7, 0, &0x0000_0001u32.to_le_bytes());
        assert_eq!(c.bar(2).unwrap().base, 0x1_0000_0000);
        assert_eq!(c.read(7), 1);
    }

    #[test]
    fn identity_is_read_only_and_capabilities_are_chained() {
        let mut c = space();
        let a = c.add_capability(0x11, &[0; 10]);
        let b = c.add_capability(0x09, &[0; 14]);
        c.write(0, 0, &0u32.to_le_bytes());

        assert_eq!(c.read(0), 0x100e_8086);
        assert_eq!(c.bytes()[CAP_PTR] as usize, a);
        assert_eq!(c.bytes()[a + 1] as usize, b);
        assert_eq!(c.bytes()[b + 1], 0);
        assert_ne!(c.u16_at(STATUS) & STATUS_CAP_LIST, 0);
        assert_eq!(c.read(2), 0x0200_0003);
    }
}
