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
