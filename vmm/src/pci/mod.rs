//! PCI: functions behind configuration mechanism #1 (ports 0xCF8/0xCFC, PCI Local Bus 3.0,
//! 3.2.2.3.2). The root answers all ones for absent functions, as hardware does.

pub mod config;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::bus::{Access, BusDevice};

/// A BAR range the bus owner must (un)map after a config write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarRange {
    pub bar: usize,
    pub base: u64,
    pub len: u64,
    pub io: bool,
}

/// What a config write changed that the bus owner has to apply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigChange {
    pub unmap: Vec<BarRange>,
    pub map: Vec<BarRange>,
}

/// A PCI function: its configuration space, besides its BAR registers on the buses.
pub trait PciFunction: BusDevice {
    /// Reads the 32-bit configuration register `reg` (a dword index).
    fn config_read(&self, reg: usize) -> u32;
    /// Writes `data` at byte `offset` within register `reg`.
    fn config_write(&mut self, reg: usize, offset: u64, data: &[u8]) -> ConfigChange;
    /// Reads a register whose read has side effects (a window into a BAR, say); by default
    /// the same as `config_read`.
    fn config_read_mut(&mut self, reg: usize) -> u32 {
        self.config_read(reg)
    }
    /// Notification addresses to back with ioeventfds: (BAR, offset in the BAR, eventfd).
    /// The machine registers them wherever the BAR is mapped.
    fn ioevents(&self) -> Vec<(usize, u64, vmm_sys_util::eventfd::EventFd)> {
        Vec::new()
    }
}

pub type SharedFunction = Arc<Mutex<dyn PciFunction>>;

/// Bus/device/function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf {
    pub bus: u8,
    pub dev: u8,
    pub func: u8,
}

impl std::fmt::Display for Bdf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.dev, self.func)
    }
}

/// Applies a [`ConfigChange`] (the machine owns the buses).
pub type ChangeHandler = Box<dyn FnMut(Bdf, ConfigChange) + Send>;

/// The host bridge at 00:00.0 and the config-mechanism-#1 ports.
pub struct PciRoot {
    address: u32,
    functions: BTreeMap<Bdf, SharedFunction>,
    on_change: Option<ChangeHandler>,
}

impl Default for PciRoot {
    fn default() -> Self {
        Self::new()
    }
}

impl PciRoot {
    pub fn new() -> Self {
        let mut functions: BTreeMap<Bdf, SharedFunction> = BTreeMap::new();
        functions.insert(
            Bdf {
                bus: 0,
                dev: 0,
                func: 0,
            },
            Arc::new(Mutex::new(HostBridge)),
        );
        PciRoot {
            address: 0,
            functions,
            on_change: None,
        }
    }

    pub fn set_change_handler(&mut self, h: ChangeHandler) {
        self.on_change = Some(h);
    }

    pub fn add(&mut self, bdf: Bdf, f: SharedFunction) {
        self.functions.insert(bdf, f);
    }

    /// The function selected by CONFIG_ADDRESS, if enabled and present, and the register.
    fn selected(&self) -> Option<(Bdf, &SharedFunction, usize)> {
        if self.address & 0x8000_0000 == 0 {
            return None;
        }
        let bdf = Bdf {
            bus: (self.address >> 16) as u8,
            dev: ((self.address >> 11) & 0x1f) as u8,
            func: ((self.address >> 8) & 0x7) as u8,
        };
        let reg = ((self.address >> 2) & 0x3f) as usize;
        self.functions.get(&bdf).map(|f| (bdf, f, reg))
    }
}

impl BusDevice for PciRoot {
    fn debug_label(&self) -> &'static str {
        "pci-config"
    }
    fn read(&mut self, a: Access, data: &mut [u8]) {
        match a.offset {
            0..=3 => {
                let v = self.address.to_le_bytes();
                for (i, b) in data.iter_mut().enumerate() {
                    *b = v.get(a.offset as usize + i).copied().unwrap_or(0xff);
                }
            }
            _ => {
                let off = (a.offset - 4) as usize;
                let v = match self.selected() {
                    Some((_, f, reg)) => {
                        f.lock().unwrap_or_else(|e| e.into_inner()).config_read(reg)
                    }
                    None => u32::MAX,
                }
                .to_le_bytes();
                for (i, b) in data.iter_mut().enumerate() {
                    *b = v.get(off + i).copied().unwrap_or(0xff);
                }
            }
        }
    }

    fn write(&mut self, a: Access, data: &[u8]) {
        match a.offset {
            0 if data.len() == 4 => {
                self.address = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) & !0x3;
                // Bits 30:24 are reserved and read as zero.
                self.address &= 0x80ff_fffc;
            }
            0..=3 => {} // Only dword accesses reach CONFIG_ADDRESS; others go to the ISA bus.
            _ => {
                let off = a.offset - 4;
                if off as usize + data.len() > 4 {
                    return;
                }
                let change = self.selected().map(|(bdf, f, reg)| {
                    let c = f
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .config_write(reg, off, data);
                    (bdf, c)
                });
                if let (Some((bdf, change)), Some(h)) = (change, self.on_change.as_mut()) {
                    if change != ConfigChange::default() {
                        h(bdf, change);
                    }
                }
            }
        }
    }
}

/// A host bridge with no BARs (class 06.00.00). Intel 440FX's IDs, as QEMU's `pc` machine
/// shows, so guests that look for a known bridge find one.
pub struct HostBridge;

impl BusDevice for HostBridge {
    fn debug_label(&self) -> &'static str {
        "host-bridge"
    }
    fn read(&mut self, _: Access, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn write(&mut self, _: Access, _: &[u8]) {}
}

impl PciFunction for HostBridge {
    fn config_read(&self, reg: usize) -> u32 {
        match reg {
            0 => 0x1237_8086,
            1 => 0x0000_0006, // memory + bus master enabled, no status bits
            2 => 0x0600_0002, // class 06.00.00, revision 2
            3 => 0,           // header type 0, single function
            _ => 0,
        }
    }
    fn config_write(&mut self, _: usize, _: u64, _: &[u8]) -> ConfigChange {
        ConfigChange::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(offset: u64) -> Access {
        Access {
            offset,
            addr: 0xcf8 + offset,
            vcpu: 0,
        }
    }

    fn cfg_read(root: &mut PciRoot, bdf: (u32, u32, u32), reg: u32) -> u32 {
        let addr = 0x8000_0000 | (bdf.0 << 16) | (bdf.1 << 11) | (bdf.2 << 8) | (reg << 2);
        root.write(a(0), &addr.to_le_bytes());
        let mut d = [0u8; 4];
        root.read(a(4), &mut d);
        u32::from_le_bytes(d)
    }

    #[test]
    fn host_bridge_answers_and_absent_functions_read_all_ones() {
        let mut root = PciRoot::new();

        assert_eq!(cfg_read(&mut root, (0, 0, 0), 0), 0x1237_8086);
        assert_eq!(cfg_read(&mut root, (0, 0, 0), 2) >> 8, 0x06_0000);
        assert_eq!(cfg_read(&mut root, (0, 1, 0), 0), u32::MAX);
        assert_eq!(cfg_read(&mut root, (0, 0, 1), 0), u32::MAX);
        assert_eq!(cfg_read(&mut root, (1, 0, 0), 0), u32::MAX);
    }

    #[test]
    fn config_address_reads_back_and_byte_reads_of_data_work() {
        let mut root = PciRoot::new();
        root.write(a(0), &0x8000_0000u32.to_le_bytes());
        let mut addr = [0u8; 4];
        root.read(a(0), &mut addr);
        let mut hi = [0u8; 2];
        root.read(a(6), &mut hi); // device ID, as a 16-bit read of 0xCFE

        assert_eq!(u32::from_le_bytes(addr), 0x8000_0000);
        assert_eq!(u16::from_le_bytes(hi), 0x1237);
    }

    #[test]
    fn disabled_config_address_reads_all_ones() {
        let mut root = PciRoot::new();
        root.write(a(0), &0u32.to_le_bytes());
        let mut d = [0u8; 4];
        root.read(a(4), &mut d);
        assert_eq!(d, [0xff; 4]);
    }
}
