//! Intel 82540EM Gigabit Ethernet controller (e1000), as the PCI/PCI-X Family of Gigabit
//! Ethernet Controllers Software Developer's Manual (8254x SDM) describes it: section 13 for
//! the registers, 3 for descriptors and offloads, 5 for the EEPROM, 8 for the PHY.
//!
//! Every register access traps and is emulated here, synchronously on the vCPU thread that
//! made it; there is no device thread. Interrupt moderation (ITR, RDTR/RADV, TIDV/TADV) is
//! kept as deadlines on a monotonic clock: they are checked at every register access and by
//! [`E1000::poll`], which the VMM calls at [`E1000::next_deadline`] (a timerfd or its event
//! loop's timeout). An interrupt that has come due is raised at the first of those.

pub mod eeprom;
pub mod offload;
pub mod phy;
pub mod regs;
pub mod rx;
pub mod tx;
pub mod wire;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use vm_memory::GuestMemoryMmap;

use crate::backend::net::NetBackend;
use crate::bus::{Access, BusDevice};
use crate::interrupt::IrqLine;
use crate::pci::config::{BarKind, ConfigSpace, Identity};
use crate::pci::{ConfigChange, PciFunction};

use eeprom::Eeprom;
use phy::Phy;
use regs::*;

pub const VENDOR_ID: u16 = 0x8086;
pub const DEVICE_ID: u16 = 0x100e;
pub const SUBSYSTEM_ID: u16 = 0x001e;

/// Where the device reads the time; tests substitute a manual clock.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// What the device did, for the harness (exits per operation) and for debugging.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct E1000Counters {
    pub mmio_reads: u64,
    pub mmio_writes: u64,
    pub io_reads: u64,
    pub io_writes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    pub tx_descriptors: u64,
    /// Packets not sent: bad DMA, oversize chains, empty frames, unusable TSO contexts.
    pub tx_dropped: u64,
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub rx_descriptors: u64,
    /// Frames the address filter rejected.
    pub rx_filtered: u64,
    /// Frames lost because the receive FIFO was full (MPC).
    pub rx_missed: u64,
    /// Frames dropped for other reasons: receiver off, oversize, unsegmented GSO.
    pub rx_dropped: u64,
    /// Assertions of the INTx line.
    pub interrupts: u64,
    /// Descriptor or buffer addresses outside guest memory.
    pub dma_errors: u64,
    /// Ring registers the device refused (head or tail past the ring).
    pub bad_ring: u64,
    pub backend_errors: u64,
    /// Accesses (exits) by register: reads and writes in the slots of
    /// [`regs::counter_slot`], named by [`regs::slot_names`].
    pub reg_reads: [u64; REG_SLOTS],
    pub reg_writes: [u64; REG_SLOTS],
}

#[derive(Clone, Copy, Debug, Default)]
struct Timers {
    rdtr: Option<Instant>,
    radv: Option<Instant>,
    tidv: Option<Instant>,
    tadv: Option<Instant>,
    /// An assertion held back by ITR until then.
    itr: Option<Instant>,
    last_assert: Option<Instant>,
}

impl Timers {
    fn next(&self) -> Option<Instant> {
        [self.rdtr, self.radv, self.tidv, self.tadv, self.itr]
            .into_iter()
            .flatten()
            .min()
    }
}

/// RDTR, RADV, TIDV and TADV count in units of 1.024 us.
fn units_1024ns(n: u32) -> Duration {
    Duration::from_nanos(u64::from(n) * 1024)
}

pub struct E1000 {
    config: ConfigSpace,
    mem: GuestMemoryMmap,
    backend: Box<dyn NetBackend>,
    irq: Arc<dyn IrqLine>,
    clock: Clock,
    mac: [u8; 6],
    /// The register file, indexed by offset / 4; only registers the model knows are used.
    regs: Vec<u32>,
    /// Statistics counters 0x4000..=0x40fc by offset; 64-bit counters live in their low slot.
    stats: [u64; 64],
    eeprom: Eeprom,
    phy: Phy,
    ioaddr: u32,
    tx: tx::TxState,
    rx: rx::RxState,
    timers: Timers,
    /// Written when a register access arms a moderation deadline earlier than the one the
    /// wire thread sleeps towards, so it wakes to fire it on time (a driver that waits for its
    /// interrupt, as Linux's e1000 does, touches no register until then).
    deadline_waker: Option<vmm_sys_util::eventfd::EventFd>,
    level: bool,
    counters: E1000Counters,
}

impl E1000 {
    /// An 82540EM with its memory BAR at `bar0`, its I/O BAR at port `bar1_io` and the MAC
    /// address `mac` in its EEPROM, receiving and sending through `backend`.
    pub fn new(
        mem: GuestMemoryMmap,
        backend: Box<dyn NetBackend>,
        irq: Arc<dyn IrqLine>,
        mac: [u8; 6],
        bar0: u64,
        bar1_io: u16,
    ) -> E1000 {
        let mut config = ConfigSpace::new(Identity {
            vendor: VENDOR_ID,
            device: DEVICE_ID,
            class: 0x02_00_00,
            revision: 3,
            subsystem_vendor: VENDOR_ID,
            subsystem: SUBSYSTEM_ID,
            interrupt_pin: 1,
        });
        config.add_bar(0, BarKind::Mem32, MMIO_SIZE, bar0);
        config.add_bar(1, BarKind::Io, IO_SIZE, u64::from(bar1_io));
        let mut d = E1000 {
            config,
            mem,
            backend,
            irq,
            clock: Arc::new(Instant::now),
            mac,
            regs: vec![0; (MMIO_SIZE / 4) as usize],
            stats: [0; 64],
            eeprom: Eeprom::new(eeprom::image(mac, DEVICE_ID, SUBSYSTEM_ID)),
            phy: Phy::default(),
            ioaddr: 0,
            tx: tx::TxState::default(),
            rx: rx::RxState::default(),
            timers: Timers::default(),
            deadline_waker: None,
            level: false,
            counters: E1000Counters::default(),
        };
        d.reset();
        d
    }

    /// Replaces the clock (tests drive moderation timers with a manual one).
    /// The eventfd to write when a register access arms an earlier moderation deadline.
    pub fn set_deadline_waker(&mut self, fd: vmm_sys_util::eventfd::EventFd) {
        self.deadline_waker = Some(fd);
    }

    /// Wakes the wire thread if `before` (the deadline it sleeps towards) is no longer the
    /// next one.
    fn wake_if_earlier(&self, before: Option<Instant>) {
        let after = self.next_deadline();
        let earlier = match (before, after) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(b), Some(a)) => a < b,
        };
        if let (true, Some(w)) = (earlier, &self.deadline_waker) {
            // A full counter already means a pending wake-up.
            let _ = w.write(1);
        }
    }

    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    pub fn counters(&self) -> E1000Counters {
        self.counters
    }

    /// The back-end the device sends to and receives from (for its counters).
    pub fn backend(&self) -> &dyn NetBackend {
        &*self.backend
    }

    /// The level the device drives on INTA#.
    pub fn irq_level(&self) -> bool {
        self.level
    }

    /// When a moderation timer next expires, if any is running: call [`E1000::poll`] then.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Fires the moderation timers due at `now` and raises what is due; returns the next
    /// deadline.
    pub fn poll(&mut self, now: Instant) -> Option<Instant> {
        self.service(now);
        self.next_deadline()
    }

    fn now(&self) -> Instant {
        (self.clock)()
    }

    fn reg(&self, off: u32) -> u32 {
        self.regs[(off >> 2) as usize]
    }

    fn set_reg(&mut self, off: u32, v: u32) {
        self.regs[(off >> 2) as usize] = v;
    }

    /// Power-up state, also what CTRL.RST restores. The PHY keeps its state (it has its own
    /// reset, CTRL.PHY_RST) and the EEPROM its contents.
    fn reset(&mut self) {
        self.regs.fill(0);
        self.stats = [0; 64];
        for (off, v) in defaults() {
            self.set_reg(off, v);
        }
        let w = |i| u32::from(self.eeprom.word(i).unwrap_or(0));
        let ral = w(0) | w(1) << 16;
        let rah = w(2) | RAH_AV;
        self.set_reg(RAL0, ral);
        self.set_reg(RAH0, rah);
        self.eeprom.reset();
        self.tx.clear_packet();
        self.tx.ctx = offload::TxContext::default();
        self.rx.clear();
        self.timers = Timers::default();
        if self.level {
            self.level = false;
            self.irq.set_level(false);
        }
        self.config.set_interrupt_status(false);
    }

    /// Sets interrupt causes and updates the line.
    fn raise(&mut self, cause: u32) {
        let icr = self.reg(ICR) | cause;
        self.set_reg(ICR, icr);
        self.refresh_irq(None);
    }

    /// Drives INTA# from (ICR & IMS), the PCI Interrupt Disable bit and ITR: with ITR set, an
    /// assertion waits until ITR x 256 ns after the previous one.
    fn refresh_irq(&mut self, now: Option<Instant>) {
        let pending = self.reg(ICR) & self.reg(IMS) != 0;
        self.config.set_interrupt_status(pending);
        let want = pending && !self.config.intx_disabled();
        if want && !self.level {
            let itr = self.reg(ITR) & 0xffff;
            if itr != 0 {
                let now = now.unwrap_or_else(|| self.now());
                if let Some(last) = self.timers.last_assert {
                    let next = last + Duration::from_nanos(u64::from(itr) * 256);
                    if now < next {
                        self.timers.itr = Some(next);
                        return;
                    }
                }
                self.timers.last_assert = Some(now);
            }
            self.timers.itr = None;
            self.level = true;
            self.counters.interrupts += 1;
            self.irq.set_level(true);
        } else if !want {
            self.timers.itr = None;
            if self.level {
                self.level = false;
                self.irq.set_level(false);
            }
        }
    }

    /// Expires the moderation timers due at `now`.
    fn service(&mut self, now: Instant) {
        let due = |t: Option<Instant>| t.is_some_and(|d| d <= now);
        let t = &mut self.timers;
        let mut cause = 0;
        if due(t.rdtr) || due(t.radv) {
            (t.rdtr, t.radv) = (None, None);
            cause |= ICR_RXT0;
        }
        if due(t.tidv) || due(t.tadv) {
            (t.tidv, t.tadv) = (None, None);
            cause |= ICR_TXDW;
        }
        if due(t.itr) {
            t.itr = None;
        }
        let icr = self.reg(ICR) | cause;
        self.set_reg(ICR, icr);
        self.refresh_irq(Some(now));
    }

    /// Called on every register access: timers that came due are honoured first.
    fn tick(&mut self) {
        if self.timers.next().is_some() {
            let now = self.now();
            self.service(now);
        }
    }

    fn stat_read(&mut self, off: u32) -> u32 {
        let i = ((off - STATS_START) >> 2) as usize;
        match off {
            // 64-bit counters: the low half reads without side effect, reading the high
            // half returns it and clears the whole counter (SDM 13.7.31).
            GORCL | GOTCL | TORL | TOTL => self.stats[i] as u32,
            GORCH | GOTCH | TORH | TOTH => {
                let v = (self.stats[i - 1] >> 32) as u32;
                self.stats[i - 1] = 0;
                v
            }
            // 32-bit counters stick at their maximum and clear on read.
            _ => std::mem::take(&mut self.stats[i]).min(u64::from(u32::MAX)) as u32,
        }
    }

    fn stat_add(&mut self, off: u32, n: u64) {
        let i = ((off - STATS_START) >> 2) as usize;
        if let Some(s) = self.stats.get_mut(i) {
            *s = s.saturating_add(n);
        }
    }

    /// A 32-bit register read, with its side effects.
    fn read_reg(&mut self, off: u32) -> u32 {
        self.tick();
        match off {
            STATUS => STATUS_FD | STATUS_LU | STATUS_SPEED_1000 | STATUS_ASDV_1000,
            EECD | EERD => self.eeprom.read(off),
            ICR => {
                let v = self.reg(ICR);
                self.set_reg(ICR, 0);
                self.refresh_irq(None);
                v
            }
            ICS | IMC => 0, // write-only
            CTRL | MDIC | IMS | RCTL | TCTL | PBA | RDTR | TIDV => self.reg(off),
            STATS_START..=STATS_END => self.stat_read(off),
            _ if plain_mask(off).is_some() => self.reg(off),
            _ => 0,
        }
    }

    /// What a register holds, without side effects (to merge partial writes).
    fn peek_reg(&self, off: u32) -> u32 {
        match off {
            ICR | ICS | IMS | IMC | STATS_START..=STATS_END => 0,
            EECD | EERD => self.eeprom.read(off),
            _ => self.reg(off),
        }
    }

    /// A 32-bit register write.
    fn write_reg(&mut self, off: u32, v: u32) {
        self.tick();
        match off {
            CTRL => {
                if v & CTRL_RST != 0 {
                    // Self-clearing: the whole MAC returns to its power-up state.
                    self.reset();
                    return;
                }
                if v & CTRL_PHY_RST != 0 {
                    self.phy.reset();
                }
                self.set_reg(CTRL, v);
            }
            EECD | EERD => self.eeprom.write(off, v),
            MDIC => {
                let r = self.phy.mdic(v);
                self.set_reg(MDIC, r);
                if v & phy::MDIC_INT_EN != 0 {
                    self.raise(ICR_MDAC);
                }
            }
            ICR => {
                let icr = self.reg(ICR) & !v;
                self.set_reg(ICR, icr);
                self.refresh_irq(None);
            }
            ICS => self.raise(v & ICR_VALID),
            IMS => {
                let ims = self.reg(IMS) | (v & ICR_VALID);
                self.set_reg(IMS, ims);
                self.refresh_irq(None);
            }
            IMC => {
                let ims = self.reg(IMS) & !v;
                self.set_reg(IMS, ims);
                self.refresh_irq(None);
            }
            RCTL => {
                self.set_reg(RCTL, v & 0x07ff_fffe);
                if v & RCTL_EN != 0 {
                    self.rx_poll();
                }
            }
            TCTL => {
                self.set_reg(TCTL, v & 0x03ff_fffa);
                self.tx_process();
            }
            TDT => {
                self.set_reg(TDT, v & 0xffff);
                self.tx_process();
            }
            RDT => {
                self.set_reg(RDT, v & 0xffff);
                self.rx_poll();
            }
            RDTR => {
                self.set_reg(RDTR, v & 0xffff);
                if v & RDTR_FPD != 0 && (self.timers.rdtr.is_some() || self.timers.radv.is_some()) {
                    (self.timers.rdtr, self.timers.radv) = (None, None);
                    self.raise(ICR_RXT0);
                }
            }
            TIDV => {
                self.set_reg(TIDV, v & 0xffff);
                if v & RDTR_FPD != 0 && (self.timers.tidv.is_some() || self.timers.tadv.is_some()) {
                    (self.timers.tidv, self.timers.tadv) = (None, None);
                    self.raise(ICR_TXDW);
                }
            }
            PBA => {
                // Software sizes the receive part in KiB; transmit gets the rest of 64 KiB.
                let rx = v & 0x3f;
                self.set_reg(PBA, (64 - rx) << 16 | rx);
            }
            ITR => {
                self.set_reg(ITR, v & 0xffff);
                self.refresh_irq(None);
            }
            _ => {
                if let Some(mask) = plain_mask(off) {
                    let old = self.reg(off);
                    self.set_reg(off, (old & !mask) | (v & mask));
                }
            }
        }
    }

    /// Register space access of any width: each touched dword is read or written once.
    fn access_read(&mut self, offset: u64, data: &mut [u8]) {
        let mut i = 0;
        while i < data.len() {
            let at = offset + i as u64;
            let (reg, byte) = (at & !3, (at & 3) as usize);
            let n = (4 - byte).min(data.len() - i);
            let v = if reg < MMIO_SIZE {
                self.read_reg(reg as u32).to_le_bytes()
            } else {
                [0; 4]
            };
            data[i..i + n].copy_from_slice(&v[byte..byte + n]);
            i += n;
        }
    }

    fn access_write(&mut self, offset: u64, data: &[u8]) {
        let mut i = 0;
        while i < data.len() {
            let at = offset + i as u64;
            let (reg, byte) = (at & !3, (at & 3) as usize);
            let n = (4 - byte).min(data.len() - i);
            if reg < MMIO_SIZE {
                let mut v = if n == 4 {
                    [0; 4]
                } else {
                    self.peek_reg(reg as u32).to_le_bytes()
                };
                v[byte..byte + n].copy_from_slice(&data[i..i + n]);
                self.write_reg(reg as u32, u32::from_le_bytes(v));
            }
            i += n;
        }
    }

    /// Whether `addr` is in the I/O BAR (the device sits on both buses; port numbers and
    /// guest-physical addresses of a decoded memory BAR cannot coincide below 64 KiB, where
    /// guest RAM is).
    fn is_io(&self, addr: u64) -> bool {
        self.config.io_enabled()
            && self
                .config
                .bar(1)
                .is_some_and(|b| addr >= b.base && addr < b.base + b.size)
    }

    /// The I/O window: IOADDR (offset 0) selects a register, IODATA (offset 4) reaches it.
    /// Which register an access (one exit) is counted under: through the I/O window, the
    /// address register or the register IOADDR selects.
    fn counter_slot(&self, a: Access) -> usize {
        let reg = if self.is_io(a.addr) {
            match a.offset {
                0..4 => return REG_IOADDR,
                4..8 => self.ioaddr & !3,
                _ => return REG_OTHER,
            }
        } else {
            (a.offset & !3) as u32
        };
        counter_slot(reg)
    }

    fn io_read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = 0;
            let at = offset + i as u64;
            if at < 4 {
                *b = self.ioaddr.to_le_bytes()[at as usize];
            }
        }
        if (4..8).contains(&offset) {
            let n = data.len().min((8 - offset) as usize);
            let reg = u64::from(self.ioaddr & !3);
            self.access_read(reg + (offset - 4), &mut data[..n]);
        }
    }

    fn io_write(&mut self, offset: u64, data: &[u8]) {
        if offset < 4 {
            let mut v = self.ioaddr.to_le_bytes();
            for (i, &b) in data.iter().enumerate() {
                if let Some(x) = v.get_mut(offset as usize + i) {
                    *x = b;
                }
            }
            self.ioaddr = u32::from_le_bytes(v) & 0x0001_ffff;
        } else if offset < 8 {
            let n = data.len().min((8 - offset) as usize);
            let reg = u64::from(self.ioaddr & !3);
            self.access_write(reg + (offset - 4), &data[..n]);
        }
    }
}

impl BusDevice for E1000 {
    fn debug_label(&self) -> &'static str {
        "e1000"
    }
    fn read(&mut self, a: Access, data: &mut [u8]) {
        let slot = self.counter_slot(a);
        self.counters.reg_reads[slot] += 1;
        if self.is_io(a.addr) {
            self.counters.io_reads += 1;
            self.io_read(a.offset, data);
        } else {
            self.counters.mmio_reads += 1;
            self.access_read(a.offset, data);
        }
    }

    fn write(&mut self, a: Access, data: &[u8]) {
        let before = self.next_deadline();
        let slot = self.counter_slot(a);
        self.counters.reg_writes[slot] += 1;
        if self.is_io(a.addr) {
            self.counters.io_writes += 1;
            self.io_write(a.offset, data);
        } else {
            self.counters.mmio_writes += 1;
            self.access_write(a.offset, data);
        }
        self.wake_if_earlier(before);
    }
}

impl PciFunction for E1000 {
    fn config_read(&self, reg: usize) -> u32 {
        self.config.read(reg)
    }

    fn config_write(&mut self, reg: usize, offset: u64, data: &[u8]) -> ConfigChange {
        let was_master = self.config.bus_master();
        let change = self.config.write(reg, offset, data);
        self.refresh_irq(None);
        if !was_master && self.config.bus_master() {
            // DMA that was waiting for bus mastering can go now.
            self.tx_process();
            self.rx_poll();
        }
        change
    }
}
