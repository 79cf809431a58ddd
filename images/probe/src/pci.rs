//! PCI enumeration through configuration mechanism #1 (PCI Local Bus 3.0, 3.2.2.3.2):
//! CONFIG_ADDRESS at 0xCF8, CONFIG_DATA at 0xCFC; absent functions read as all ones.

use probe_abi::ports::{PCI_CONFIG_ADDRESS, PCI_CONFIG_DATA};

use crate::io::{inl, outl};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Function {
    pub bus: u8,
    pub dev: u8,
    pub func: u8,
    pub vendor: u16,
    pub device: u16,
    /// Class, subclass, programming interface.
    pub class: u32,
    pub revision: u8,
    pub header: u8,
}

pub fn config_read(bus: u8, dev: u8, func: u8, reg: u8) -> u32 {
    let addr = 0x8000_0000
        | (u32::from(bus) << 16)
        | (u32::from(dev) << 11)
        | (u32::from(func) << 8)
        | u32::from(reg & 0xfc);
    outl(PCI_CONFIG_ADDRESS, addr);
    inl(PCI_CONFIG_DATA)
}

fn probe(bus: u8, dev: u8, func: u8) -> Option<Function> {
    let id = config_read(bus, dev, func, 0);
    if id & 0xffff == 0xffff {
        return None;
    }
    let class = config_read(bus, dev, func, 8);
    let hdr = config_read(bus, dev, func, 0xc);
    Some(Function {
        bus,
        dev,
        func,
        vendor: id as u16,
        device: (id >> 16) as u16,
        class: class >> 8,
        revision: class as u8,
        header: (hdr >> 16) as u8,
    })
}

/// Calls `f` for each function on bus 0 (multi-function devices included).
pub fn scan(mut f: impl FnMut(Function)) {
    for dev in 0..32 {
        let Some(f0) = probe(0, dev, 0) else {
            continue;
        };
        f(f0);
        if f0.header & 0x80 != 0 {
            for func in 1..8 {
                if let Some(fu) = probe(0, dev, func) {
                    f(fu);
                }
            }
        }
    }
}

pub fn config_write(bus: u8, dev: u8, func: u8, reg: u8, v: u32) {
    let addr = 0x8000_0000
        | (u32::from(bus) << 16)
        | (u32::from(dev) << 11)
        | (u32::from(func) << 8)
        | u32::from(reg & 0xfc);
    outl(PCI_CONFIG_ADDRESS, addr);
    outl(PCI_CONFIG_DATA, v);
}

impl Function {
    pub fn read(&self, reg: u8) -> u32 {
        config_read(self.bus, self.dev, self.func, reg)
    }

    pub fn write(&self, reg: u8, v: u32) {
        config_write(self.bus, self.dev, self.func, reg, v)
    }

    /// The address BAR `i` decodes (memory or I/O), 64-bit BARs included; assigns one from
    /// the probe's own window if firmware left it at zero (as firmware would).
    pub fn bar(&self, i: u8) -> Option<(u64, bool)> {
        let reg = 0x10 + i * 4;
        let lo = self.read(reg);
        let io = lo & 1 == 1;
        if io {
            return Some((u64::from(lo & !0x3), true));
        }
        let is64 = (lo >> 1) & 0x3 == 2;
        let hi = if is64 { self.read(reg + 4) } else { 0 };
        let base = (u64::from(hi) << 32) | u64::from(lo & !0xf);
        if base != 0 {
            return Some((base, false));
        }
        // Unassigned: size it and place it.
        self.write(reg, u32::MAX);
        let mask = self.read(reg) & !0xf;
        if mask == 0 {
            return None;
        }
        let size = u64::from((!mask).wrapping_add(1));
        let base = next_window(size)?;
        self.write(reg, base as u32);
        if is64 {
            self.write(reg + 4, 0);
        }
        Some((base, false))
    }

    /// The port base of I/O BAR `i`; assigns one from the probe's own port window if firmware
    /// left it at zero (qboot assigns none). None if the BAR is not an I/O BAR.
    pub fn io_bar(&self, i: u8) -> Option<u16> {
        let reg = 0x10 + i * 4;
        let lo = self.read(reg);
        if lo & 1 == 0 {
            return None;
        }
        let base = lo & 0xfffc;
        if base != 0 {
            return Some(base as u16);
        }
        self.write(reg, u32::MAX);
        let mask = self.read(reg) & 0xfffc;
        if mask == 0 {
            return None;
        }
        let size = (!mask & 0xffff).wrapping_add(1) as u16;
        let base = next_io_window(size)?;
        self.write(reg, u32::from(base) | 1);
        Some(base)
    }

    /// Turns on memory and I/O decoding and bus mastering (DMA), as a driver must.
    pub fn enable(&self) {
        let cmd = self.read(0x04) & 0xffff;
        self.write(0x04, cmd | 0x7);
    }

    /// Walks the capability list: (offset, id) pairs.
    pub fn capabilities(&self, mut f: impl FnMut(u8, u8)) {
        if (self.read(0x04) >> 16) & 0x10 == 0 {
            return;
        }
        let mut p = (self.read(0x34) & 0xfc) as u8;
        let mut hops = 0;
        while p != 0 && hops < 48 {
            let w = self.read(p);
            f(p, w as u8);
            p = ((w >> 8) & 0xfc) as u8;
            hops += 1;
        }
    }
}

/// BAR window for functions firmware left unassigned (above vmbench's and QEMU's placements).
fn next_window(size: u64) -> Option<u64> {
    use core::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0xD000_0000);
    let size = size.max(0x1000);
    let base = NEXT.load(Ordering::Relaxed).next_multiple_of(size);
    if base + size > 0xE000_0000 {
        return None;
    }
    NEXT.store(base + size, Ordering::Relaxed);
    Some(base)
}

/// Port window for I/O BARs firmware left unassigned: above vmbench's placements (from 0xc000)
/// and below the end of the 64 KiB port space.
fn next_io_window(size: u16) -> Option<u16> {
    use core::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0xE000);
    let size = u32::from(size.max(4));
    let base = NEXT.load(Ordering::Relaxed).next_multiple_of(size);
    if base + size > 0xF000 {
        return None;
    }
    NEXT.store(base + size, Ordering::Relaxed);
    Some(base as u16)
}

/// The first function with this vendor and device ID.
pub fn find(vendor: u16, device: u16) -> Option<Function> {
    let mut found = None;
    scan(|f| {
        if found.is_none() && f.vendor == vendor && f.device == device {
            found = Some(f);
        }
    });
    found
}
