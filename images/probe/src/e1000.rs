//! A polling driver for the Intel 8254x gigabit controllers: the 82540EM (8086:100E, the part
//! vmbench and QEMU model) and, with the same registers for everything used here, the 82545EM
//! (100F) and 82543GC (1004). PCI/PCI-X Family of Gigabit Ethernet Controllers Software
//! Developer's Manual (8254x SDM): section 14 for initialization, 13 for the registers, 3 for
//! the legacy descriptors, 5.6 and 13.4.4 for EERD.
//!
//! The register traffic per operation is the run's [`Profile`]: `linux` makes the accesses
//! Linux's e1000 driver makes (a TDT write per packet; per completion batch the interrupt
//! handler's ICR read, IMC write and flush, then NAPI's IMS write and flush, the poll cleaning
//! the TX ring before RX as e1000_clean does; RDT written every 16 returned buffers), `batched` only the ones a polling driver needs (a TDT write per batch,
//! an RDT write per poll). The probe never takes the interrupt: its CPU runs with interrupts
//! off, and the handler's accesses are made where the handler would have run.

use core::sync::atomic::{fence, Ordering};

use crate::alloc;
use crate::args::Profile;
use crate::io::{mmio_read32, mmio_write32, pause, rdtsc, tsc_khz_hint};
use crate::nic::Nic;
use crate::pci;

const VENDOR: u16 = 0x8086;
/// 82540EM, 82545EM (copper), 82543GC (copper).
pub const DEVICES: [u16; 3] = [0x100e, 0x100f, 0x1004];

// Registers (SDM table 13-2).
const CTRL: u64 = 0x0000;
const STATUS: u64 = 0x0008;
const EERD: u64 = 0x0014;
const ICR: u64 = 0x00c0;
const ITR: u64 = 0x00c4;
const IMS: u64 = 0x00d0;
const IMC: u64 = 0x00d8;
const RCTL: u64 = 0x0100;
const TCTL: u64 = 0x0400;
const TIPG: u64 = 0x0410;
const RDBAL: u64 = 0x2800;
const RDBAH: u64 = 0x2804;
const RDLEN: u64 = 0x2808;
const RDH: u64 = 0x2810;
const RDT: u64 = 0x2818;
const RDTR: u64 = 0x2820;
const RADV: u64 = 0x282c;
const TDBAL: u64 = 0x3800;
const TDBAH: u64 = 0x3804;
const TDLEN: u64 = 0x3808;
const TDH: u64 = 0x3810;
const TDT: u64 = 0x3818;
const TIDV: u64 = 0x3820;
const TADV: u64 = 0x382c;
const MTA: u64 = 0x5200;
const RAL0: u64 = 0x5400;
const RAH0: u64 = 0x5404;
const RAR_ENTRIES: u64 = 16;
const MTA_WORDS: u64 = 128;

const CTRL_ASDE: u32 = 1 << 5;
const CTRL_SLU: u32 = 1 << 6;
const CTRL_RST: u32 = 1 << 26;
/// Flow control both ways, as Linux's e1000 sets for its default fc=full.
const CTRL_RFCE: u32 = 1 << 27;
const CTRL_TFCE: u32 = 1 << 28;
const STATUS_LU: u32 = 1 << 1;
const EERD_START: u32 = 1 << 0;
const EERD_DONE: u32 = 1 << 4;
const EERD_ADDR_SHIFT: u32 = 8;
const EERD_DATA_SHIFT: u32 = 16;
/// EEPROM words 0x00..=0x3f add up to this on a valid image (SDM 5.6.1).
const EEPROM_SUM: u16 = 0xbaba;
const RAH_AV: u32 = 1 << 31;
const RCTL_EN: u32 = 1 << 1;
const RCTL_BAM: u32 = 1 << 15;
const RCTL_SECRC: u32 = 1 << 26;
// RCTL.BSIZE = 00 with BSEX = 0: 2048-byte buffers.
const TCTL_EN: u32 = 1 << 1;
const TCTL_PSP: u32 = 1 << 3;
const TCTL_RTLC: u32 = 1 << 24;
/// Collision threshold 15 and collision distance 63 (full duplex), as Linux programs them.
const TCTL_CT: u32 = 0x0f << 4;
const TCTL_COLD: u32 = 0x3f << 12;
/// IPGT 8, IPGR1 8, IPGR2 6: the copper values of SDM 13.4.34 (and Linux).
const TIPG_COPPER: u32 = 8 | (8 << 10) | (6 << 20);

// Interrupt causes Linux enables (IMS_ENABLE_MASK): RXT0, TXDW, RXDMT0, RXSEQ, LSC.
const IMS_LINUX: u32 = (1 << 7) | (1 << 0) | (1 << 4) | (1 << 3) | (1 << 2);
// Linux's default moderation: TIDV 8, TADV 32, RDTR 0, RADV 8 (units of 1.024 us), and ITR
// for its initial 20,000 interrupts/s (in units of 256 ns).
const LINUX_TIDV: u32 = 8;
const LINUX_TADV: u32 = 32;
const LINUX_RDTR: u32 = 0;
const LINUX_RADV: u32 = 8;
const LINUX_ITR: u32 = 1_000_000_000 / (20_000 * 256);
/// Linux returns RX buffers to the device after every this many (E1000_RX_BUFFER_WRITE).
const RX_BUFFER_WRITE: usize = 16;
/// NAPI's poll weight: frames per poll before Linux stays in polling mode.
const NAPI_WEIGHT: usize = 64;

// Legacy descriptors (SDM 3.2.3, 3.3.3).
const TXD_CMD_EOP: u32 = 0x01;
const TXD_CMD_IFCS: u32 = 0x02;
const TXD_CMD_RS: u32 = 0x08;
const TXD_CMD_IDE: u32 = 0x80;
const TXD_STAT_DD: u8 = 0x01;
const RXD_STAT_DD: u8 = 0x01;
const RXD_STAT_EOP: u8 = 0x02;
const DESC: u64 = 16;

const RING: u16 = 256;
const BUF: u64 = 2048;

#[derive(Debug, Clone, Copy)]
pub enum Error {
    NoDevice,
    NoMemoryBar,
    NoMemory,
    ResetStuck,
    LinkDown,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::NoDevice => write!(f, "no 8086:100e/100f/1004 function on bus 0"),
            Error::NoMemoryBar => write!(f, "BAR0 is not a memory BAR"),
            Error::NoMemory => write!(f, "out of guest memory for rings and buffers"),
            Error::ResetStuck => write!(f, "CTRL.RST did not clear within 10 ms"),
            Error::LinkDown => write!(f, "STATUS.LU stayed clear for 2 s (no link)"),
        }
    }
}

/// Where the MAC address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacSource {
    /// EERD words 0-2, with the image checksum good or not.
    Eeprom { checksum_ok: bool },
    /// RAL0/RAH0 as the part loaded them at reset (EERD never finished).
    Rar,
}

pub struct E1000 {
    regs: u64,
    profile: Profile,
    mac: [u8; 6],
    pub mac_source: MacSource,
    pub function: pci::Function,
    tx_ring: u64,
    rx_ring: u64,
    tx_bufs: u64,
    rx_bufs: u64,
    /// Next TX descriptor to fill, and the oldest not yet reclaimed.
    tx_use: u16,
    tx_clean: u16,
    /// TX descriptors written since the last TDT write (batched profile).
    tx_pending: bool,
    /// Next RX descriptor the device completes.
    rx_clean: u16,
    /// Interrupts are off because a completion batch is being handled (Linux: between
    /// `e1000_intr` and `napi_complete_done`).
    in_napi: bool,
    /// The last RX poll used its whole budget: Linux stays in polling mode.
    rx_more: bool,
    /// TX descriptors an RX poll reclaimed (Linux's NAPI poll cleans the TX ring first),
    /// reported by the next `reclaim_tx`.
    tx_cleaned: usize,
}

fn deadline_us(us: u64) -> u64 {
    rdtsc() + u64::from(tsc_khz_hint()) * us / 1000
}

impl E1000 {
    fn read(&self, reg: u64) -> u32 {
        mmio_read32(self.regs + reg)
    }

    fn write(&self, reg: u64, v: u32) {
        mmio_write32(self.regs + reg, v)
    }

    /// Posted writes reach the device before this read returns (Linux's E1000_WRITE_FLUSH).
    fn flush(&self) {
        let _ = self.read(STATUS);
    }

    /// Finds the first supported function, resets and programs it, and waits for link.
    pub fn open(profile: Profile) -> Result<E1000, Error> {
        let function = find().ok_or(Error::NoDevice)?;
        function.enable();
        let regs = match function.bar(0) {
            Some((base, false)) => base,
            _ => return Err(Error::NoMemoryBar),
        };
        let tx_ring = alloc::alloc(DESC * u64::from(RING), 4096).ok_or(Error::NoMemory)?;
        let rx_ring = alloc::alloc(DESC * u64::from(RING), 4096).ok_or(Error::NoMemory)?;
        let tx_bufs = alloc::alloc(BUF * u64::from(RING), 4096).ok_or(Error::NoMemory)?;
        let rx_bufs = alloc::alloc(BUF * u64::from(RING), 4096).ok_or(Error::NoMemory)?;
        let mut d = E1000 {
            regs,
            profile,
            mac: [0; 6],
            mac_source: MacSource::Rar,
            function,
            tx_ring,
            rx_ring,
            tx_bufs,
            rx_bufs,
            tx_use: 0,
            tx_clean: 0,
            tx_pending: false,
            rx_clean: 0,
            in_napi: false,
            rx_more: false,
            tx_cleaned: 0,
        };
        d.reset()?;
        (d.mac, d.mac_source) = d.read_mac();
        d.setup_filters();
        d.setup_tx();
        d.setup_rx();
        d.link_up()?;
        Ok(d)
    }

    /// Global reset (SDM 14.3 and 13.4.1): quiesce, set CTRL.RST, wait for it to clear.
    fn reset(&self) -> Result<(), Error> {
        self.write(IMC, u32::MAX);
        self.write(RCTL, 0);
        self.write(TCTL, TCTL_PSP);
        self.flush();
        self.write(CTRL, self.read(CTRL) | CTRL_RST);
        // The part must not be touched for about 1 us after RST is set (SDM 13.4.1).
        let settle = deadline_us(2);
        while rdtsc() < settle {
            pause();
        }
        let until = deadline_us(10_000);
        while self.read(CTRL) & CTRL_RST != 0 {
            if rdtsc() > until {
                return Err(Error::ResetStuck);
            }
            pause();
        }
        // Reset leaves interrupts masked; throw away any cause latched before it.
        self.write(IMC, u32::MAX);
        let _ = self.read(ICR);
        Ok(())
    }

    /// One EEPROM word through EERD, or None if the read does not finish in 1 ms (parts
    /// without EERD, such as the 82543, never set DONE).
    fn eeprom_word(&self, addr: u8) -> Option<u16> {
        self.write(EERD, (u32::from(addr) << EERD_ADDR_SHIFT) | EERD_START);
        let until = deadline_us(1_000);
        loop {
            let v = self.read(EERD);
            if v & EERD_DONE != 0 {
                return Some((v >> EERD_DATA_SHIFT) as u16);
            }
            if rdtsc() > until {
                return None;
            }
            pause();
        }
    }

    /// The MAC address from EEPROM words 0-2 (validating the image checksum as Linux does),
    /// or from RAL0/RAH0, which the part loads from the EEPROM at reset.
    fn read_mac(&self) -> ([u8; 6], MacSource) {
        let mut words = [0u16; 3];
        let mut ok = true;
        for (i, w) in words.iter_mut().enumerate() {
            match self.eeprom_word(i as u8) {
                Some(v) => *w = v,
                None => {
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            let mut sum = words.iter().fold(0u16, |a, &w| a.wrapping_add(w));
            for i in 3..0x40 {
                sum = sum.wrapping_add(self.eeprom_word(i).unwrap_or(0));
            }
            let mut mac = [0u8; 6];
            for (i, w) in words.iter().enumerate() {
                mac[2 * i..2 * i + 2].copy_from_slice(&w.to_le_bytes());
            }
            return (
                mac,
                MacSource::Eeprom {
                    checksum_ok: sum == EEPROM_SUM,
                },
            );
        }
        let (lo, hi) = (self.read(RAL0), self.read(RAH0));
        let mut mac = [0u8; 6];
        mac[..4].copy_from_slice(&lo.to_le_bytes());
        mac[4..].copy_from_slice(&hi.to_le_bytes()[..2]);
        (mac, MacSource::Rar)
    }

    /// Our address in RAR 0 (valid), the other 15 cleared, no multicast (SDM 14.4).
    fn setup_filters(&self) {
        let m = self.mac;
        self.write(RAL0, u32::from_le_bytes([m[0], m[1], m[2], m[3]]));
        self.write(RAH0, u32::from(u16::from_le_bytes([m[4], m[5]])) | RAH_AV);
        for i in 1..RAR_ENTRIES {
            self.write(RAL0 + 8 * i, 0);
            self.write(RAH0 + 8 * i, 0);
        }
        for i in 0..MTA_WORDS {
            self.write(MTA + 4 * i, 0);
        }
    }

    /// Transmit ring and unit (SDM 14.5), in Linux's order (e1000_configure_tx).
    fn setup_tx(&self) {
        self.write(TDLEN, u32::from(RING) * DESC as u32);
        self.write(TDBAH, (self.tx_ring >> 32) as u32);
        self.write(TDBAL, self.tx_ring as u32);
        self.write(TDT, 0);
        self.write(TDH, 0);
        self.write(TIPG, TIPG_COPPER);
        if self.profile == Profile::Linux {
            self.write(TIDV, LINUX_TIDV);
            self.write(TADV, LINUX_TADV);
        }
        self.write(TCTL, TCTL_EN | TCTL_PSP | TCTL_RTLC | TCTL_CT | TCTL_COLD);
    }

    /// Receive ring and unit (SDM 14.4), in Linux's order (e1000_configure_rx, then
    /// e1000_alloc_rx_buffers): every descriptor gets its buffer, and all but one go to the
    /// device (RDT == RDH would mean an empty ring).
    fn setup_rx(&self) {
        self.write(RCTL, 0);
        if self.profile == Profile::Linux {
            self.write(RDTR, LINUX_RDTR);
            self.write(RADV, LINUX_RADV);
            self.write(ITR, LINUX_ITR);
        }
        self.write(RDLEN, u32::from(RING) * DESC as u32);
        self.write(RDBAH, (self.rx_ring >> 32) as u32);
        self.write(RDBAL, self.rx_ring as u32);
        self.write(RDT, 0);
        self.write(RDH, 0);
        for i in 0..RING {
            let d = self.rx_ring + u64::from(i) * DESC;
            // SAFETY: descriptor `i` of the RX ring this driver allocated; the device does not
            // own it yet (RDT is 0).
            unsafe {
                core::ptr::write_volatile(d as *mut u64, self.rx_bufs + u64::from(i) * BUF);
                core::ptr::write_volatile((d + 8) as *mut u64, 0);
            }
        }
        self.write(RCTL, RCTL_EN | RCTL_BAM | RCTL_SECRC);
        fence(Ordering::Release);
        self.write(RDT, u32::from(RING - 1));
    }

    /// Sets link up and waits for STATUS.LU (the PHY auto-negotiates), then turns on the
    /// interrupt causes Linux uses, if this profile is Linux's.
    fn link_up(&self) -> Result<(), Error> {
        self.write(
            CTRL,
            self.read(CTRL) | CTRL_SLU | CTRL_ASDE | CTRL_RFCE | CTRL_TFCE,
        );
        let until = deadline_us(2_000_000);
        while self.read(STATUS) & STATUS_LU == 0 {
            if rdtsc() > until {
                return Err(Error::LinkDown);
            }
            pause();
        }
        if self.profile == Profile::Linux {
            self.write(IMS, IMS_LINUX);
            self.flush();
        }
        Ok(())
    }

    fn tx_status(&self, i: u16) -> u8 {
        // SAFETY: descriptor `i` of the TX ring this driver allocated (i < RING).
        unsafe { core::ptr::read_volatile((self.tx_ring + u64::from(i) * DESC + 12) as *const u8) }
    }

    fn rx_status(&self, i: u16) -> u8 {
        // SAFETY: descriptor `i` of the RX ring this driver allocated (i < RING).
        unsafe { core::ptr::read_volatile((self.rx_ring + u64::from(i) * DESC + 12) as *const u8) }
    }

    /// What Linux's e1000_intr does before scheduling NAPI: read (and so clear) ICR, mask
    /// everything with IMC, flush. Skipped while already polling.
    fn irq_enter(&mut self) {
        if self.profile != Profile::Linux || self.in_napi {
            return;
        }
        let _ = self.read(ICR);
        self.write(IMC, u32::MAX);
        self.flush();
        self.in_napi = true;
    }

    /// What NAPI's completion does when the poll finished under budget: e1000_irq_enable
    /// (IMS, flush).
    fn irq_exit(&mut self) {
        if self.profile != Profile::Linux || !self.in_napi || self.rx_more {
            return;
        }
        self.write(IMS, IMS_LINUX);
        self.flush();
        self.in_napi = false;
    }

    /// Reclaims every TX descriptor the device completed (DD): memory only, no register.
    fn clean_tx(&mut self) -> usize {
        let mut n = 0;
        while self.tx_clean != self.tx_use && self.tx_status(self.tx_clean) & TXD_STAT_DD != 0 {
            let d = self.tx_ring + u64::from(self.tx_clean) * DESC;
            // SAFETY: the device is done with this descriptor (DD); clearing its status makes
            // the next completion check of this slot wait for the device again.
            unsafe { core::ptr::write_volatile((d + 12) as *mut u32, 0) };
            self.tx_clean = (self.tx_clean + 1) % RING;
            n += 1;
        }
        n
    }

    fn write_tdt(&mut self) {
        // Descriptors and buffers must be in memory before the device is told about them.
        fence(Ordering::Release);
        self.write(TDT, u32::from(self.tx_use));
        self.tx_pending = false;
    }

    /// Gives the device every RX descriptor up to (not including) `rx_clean - 1`.
    fn write_rdt(&self) {
        fence(Ordering::Release);
        self.write(RDT, u32::from((self.rx_clean + RING - 1) % RING));
    }
}

/// The first function on bus 0 this driver supports.
pub fn find() -> Option<pci::Function> {
    let mut found = None;
    pci::scan(|f| {
        if found.is_none() && f.vendor == VENDOR && DEVICES.contains(&f.device) {
            found = Some(f);
        }
    });
    found
}

impl Nic for E1000 {
    fn name(&self) -> &'static str {
        "e1000"
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn queue_tx(&mut self, frame: &[u8]) -> bool {
        let next = (self.tx_use + 1) % RING;
        if next == self.tx_clean || frame.len() > BUF as usize || frame.is_empty() {
            return false;
        }
        let i = self.tx_use;
        let buf = self.tx_bufs + u64::from(i) * BUF;
        let d = self.tx_ring + u64::from(i) * DESC;
        let mut cmd = TXD_CMD_EOP | TXD_CMD_IFCS | TXD_CMD_RS;
        if self.profile == Profile::Linux {
            // Linux asks for a delayed TX interrupt whenever TIDV is set.
            cmd |= TXD_CMD_IDE;
        }
        // SAFETY: descriptor `i` and its buffer belong to the driver: the ring is not full, so
        // the device has finished with them (or never had them).
        unsafe {
            core::ptr::copy_nonoverlapping(frame.as_ptr(), buf as *mut u8, frame.len());
            core::ptr::write_volatile(d as *mut u64, buf);
            core::ptr::write_volatile((d + 8) as *mut u32, frame.len() as u32 | (cmd << 24));
            core::ptr::write_volatile((d + 12) as *mut u32, 0);
        }
        self.tx_use = next;
        self.tx_pending = true;
        if self.profile == Profile::Linux {
            // e1000_xmit_frame: one tail write per packet.
            self.write_tdt();
        }
        true
    }

    fn flush_tx(&mut self) {
        if self.tx_pending {
            self.write_tdt();
        }
    }

    fn reclaim_tx(&mut self) -> usize {
        let polled = core::mem::take(&mut self.tx_cleaned);
        if self.tx_clean == self.tx_use || self.tx_status(self.tx_clean) & TXD_STAT_DD == 0 {
            // Nothing (more) completed: no interrupt would have fired.
            return polled;
        }
        self.irq_enter();
        let n = self.clean_tx();
        self.irq_exit();
        polled + n
    }

    fn poll_rx(&mut self, max: usize, f: &mut dyn FnMut(&[u8])) -> usize {
        if self.rx_status(self.rx_clean) & RXD_STAT_DD == 0 {
            if self.rx_more {
                // Linux's next poll finds the ring drained and completes NAPI.
                self.rx_more = false;
                self.irq_exit();
            }
            return 0;
        }
        let budget = match self.profile {
            Profile::Linux => max.min(NAPI_WEIGHT),
            // poll is refused before an e1000 is opened (net.rs, with_nic).
            Profile::Batched | Profile::Poll => max,
        };
        self.irq_enter();
        if self.profile == Profile::Linux {
            // e1000_clean: the TX ring first, then RX, in the same poll (one interrupt for a
            // round trip's send and receive).
            self.tx_cleaned += self.clean_tx();
        }
        let (mut n, mut unreturned) = (0, 0);
        while n < budget {
            let i = self.rx_clean;
            let status = self.rx_status(i);
            if status & RXD_STAT_DD == 0 {
                break;
            }
            fence(Ordering::Acquire);
            let d = self.rx_ring + u64::from(i) * DESC;
            // SAFETY: the device completed descriptor `i` (DD) and no longer owns it or its
            // buffer; the length is clamped to the buffer.
            let (len, errors) = unsafe {
                (
                    core::ptr::read_volatile((d + 8) as *const u16),
                    core::ptr::read_volatile((d + 13) as *const u8),
                )
            };
            let len = usize::from(len).min(BUF as usize);
            if status & RXD_STAT_EOP != 0 && errors == 0 && len > 0 {
                // SAFETY: as above: `len` bytes of buffer `i` were written by the device.
                let data = unsafe {
                    core::slice::from_raw_parts(
                        (self.rx_bufs + u64::from(i) * BUF) as *const u8,
                        len,
                    )
                };
                f(data);
            }
            // SAFETY: descriptor `i` is the driver's until RDT passes it; clear its status so
            // DD means a new frame when the device has it again. The buffer address stays.
            unsafe { core::ptr::write_volatile((d + 8) as *mut u64, 0) };
            self.rx_clean = (i + 1) % RING;
            n += 1;
            unreturned += 1;
            if self.profile == Profile::Linux && unreturned >= RX_BUFFER_WRITE {
                // e1000_clean_rx_irq returns buffers every E1000_RX_BUFFER_WRITE.
                self.write_rdt();
                unreturned = 0;
            }
        }
        if unreturned > 0 {
            self.write_rdt();
        }
        self.rx_more = self.profile == Profile::Linux && n == budget;
        self.irq_exit();
        n
    }
}
