//! Tests of the 82540EM model on real guest memory, a recording back-end and a test INTx line:
//! registers, EEPROM, PHY, interrupts and the I/O window here; transmit, receive, malformed
//! input and fuzzing in the submodules.

mod fuzz;
mod rx;
mod tx;

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::eeprom::*;
use super::phy::*;
use super::regs::*;
use super::E1000;
use crate::backend::net::{FrameMeta, NetBackend, NetCounters, Offloads};
use crate::bus::{Access, BusDevice};
use crate::interrupt::TestIrqLine;
use crate::pci::config::{CMD_BUS_MASTER, CMD_INTX_DISABLE, CMD_IO, CMD_MEMORY};
use crate::pci::PciFunction;

pub const MEM_SIZE: usize = 8 << 20;
pub const BAR0: u64 = 0xfebc_0000;
pub const IO_BASE: u16 = 0xc000;
pub const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/// What the test back-end saw and what it will deliver.
#[derive(Default)]
pub struct Wire {
    pub sent: Vec<(Vec<u8>, FrameMeta)>,
    pub inbox: VecDeque<Vec<u8>>,
    pub offloads: Offloads,
}

pub struct TestNet(pub Arc<Mutex<Wire>>);

impl NetBackend for TestNet {
    fn send(&mut self, frame: &[u8], meta: &FrameMeta) -> io::Result<()> {
        self.0.lock().unwrap().sent.push((frame.to_vec(), *meta));
        Ok(())
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<(usize, FrameMeta)>> {
        let Some(f) = self.0.lock().unwrap().inbox.pop_front() else {
            return Ok(None);
        };
        buf[..f.len()].copy_from_slice(&f);
        Ok(Some((f.len(), FrameMeta::default())))
    }
    fn rx_fd(&self) -> RawFd {
        -1
    }
    fn offloads(&self) -> Offloads {
        self.0.lock().unwrap().offloads
    }
    fn counters(&self) -> NetCounters {
        NetCounters::default()
    }
    fn describe(&self) -> String {
        "test".into()
    }
}

/// A device on 8 MiB of guest RAM with a manual clock.
pub struct Rig {
    pub dev: E1000,
    pub wire: Arc<Mutex<Wire>>,
    pub irq: Arc<TestIrqLine>,
    pub mem: GuestMemoryMmap,
    pub clock: Arc<Mutex<Instant>>,
}

impl Rig {
    pub fn new() -> Rig {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let wire = Arc::new(Mutex::new(Wire::default()));
        let irq = Arc::new(TestIrqLine::default());
        let mut dev = E1000::new(
            mem.clone(),
            Box::new(TestNet(wire.clone())),
            irq.clone(),
            MAC,
            BAR0,
            IO_BASE,
        );
        let clock = Arc::new(Mutex::new(Instant::now()));
        let c = clock.clone();
        dev.set_clock(Arc::new(move || *c.lock().unwrap()));
        let cmd = u32::from(CMD_IO | CMD_MEMORY | CMD_BUS_MASTER);
        dev.config_write(1, 0, &cmd.to_le_bytes());
        Rig {
            dev,
            wire,
            irq,
            mem,
            clock,
        }
    }

    pub fn w(&mut self, off: u32, v: u32) {
        let a = Access {
            offset: u64::from(off),
            addr: BAR0 + u64::from(off),
            vcpu: 0,
        };
        self.dev.write(a, &v.to_le_bytes());
    }

    pub fn r(&mut self, off: u32) -> u32 {
        let a = Access {
            offset: u64::from(off),
            addr: BAR0 + u64::from(off),
            vcpu: 0,
        };
        let mut d = [0u8; 4];
        self.dev.read(a, &mut d);
        u32::from_le_bytes(d)
    }

    pub fn io_w(&mut self, port: u16, v: u32) {
        let a = Access {
            offset: u64::from(port),
            addr: u64::from(IO_BASE + port),
            vcpu: 0,
        };
        self.dev.write(a, &v.to_le_bytes());
    }

    pub fn io_r(&mut self, port: u16) -> u32 {
        let a = Access {
            offset: u64::from(port),
            addr: u64::from(IO_BASE + port),
            vcpu: 0,
        };
        let mut d = [0u8; 4];
        self.dev.read(a, &mut d);
        u32::from_le_bytes(d)
    }

    pub fn level(&self) -> bool {
        self.irq.level.load(Ordering::SeqCst)
    }

    pub fn advance(&self, d: Duration) -> Instant {
        let mut c = self.clock.lock().unwrap();
        *c += d;
        *c
    }

    pub fn sent(&self) -> Vec<Vec<u8>> {
        self.wire
            .lock()
            .unwrap()
            .sent
            .iter()
            .map(|(f, _)| f.clone())
            .collect()
    }

    pub fn inject(&self, frame: &[u8]) {
        self.wire.lock().unwrap().inbox.push_back(frame.to_vec());
    }

    pub fn put(&self, addr: u64, bytes: &[u8]) {
        self.mem.write_slice(bytes, GuestAddress(addr)).unwrap();
    }

    pub fn get(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }
}

/// Sum of 16-bit big-endian words with end-around carry, written out longhand so the tests
/// do not check the model against itself.
pub fn internet_checksum(parts: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
    let mut sum: u64 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let hi = u64::from(bytes[i]);
        let lo = if i + 1 < bytes.len() {
            u64::from(bytes[i + 1])
        } else {
            0
        };
        sum += hi * 256 + lo;
        i += 2;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet + IPv4 + TCP (proto 6) or UDP (17) frame with checksum fields zero.
pub fn ip_frame(dst: [u8; 6], proto: u8, payload: &[u8]) -> Vec<u8> {
    let l4_len = if proto == 6 { 20 } else { 8 } + payload.len();
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + l4_len) as u16;
    f.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0x12,
        0x34,
        0x40,
        0,
    ]);
    f.extend_from_slice(&[64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    if proto == 6 {
        f.extend_from_slice(&[0x30, 0x39, 0x00, 0x50]); // ports
        f.extend_from_slice(&1000u32.to_be_bytes()); // seq
        f.extend_from_slice(&[0, 0, 0, 0, 0x50, 0x19, 0xff, 0xff, 0, 0, 0, 0]); // FIN PSH ACK
    } else {
        let l = l4_len as u16;
        f.extend_from_slice(&[0x30, 0x39, 0x00, 0x35, (l >> 8) as u8, l as u8, 0, 0]);
    }
    f.extend_from_slice(payload);
    f
}

/// Pseudo-header words for the IPv4 frame's L4 checksum, with `len` as the L4 length.
pub fn pseudo_header(frame: &[u8], len: usize) -> Vec<u8> {
    let mut p = frame[26..34].to_vec();
    p.extend_from_slice(&[0, frame[23], (len >> 8) as u8, len as u8]);
    p
}

pub fn ipv4_ok(frame: &[u8]) -> bool {
    internet_checksum(&[&frame[14..34]]) == 0
}

pub fn l4_ok(frame: &[u8]) -> bool {
    let total = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
    let l4 = &frame[34..14 + total];
    internet_checksum(&[&pseudo_header(frame, l4.len()), l4]) == 0
}

#[test]
fn pci_identity_and_bars() {
    let rig = Rig::new();
    assert_eq!(rig.dev.config_read(0), 0x100e_8086);
    assert_eq!(rig.dev.config_read(2) >> 8, 0x02_0000);
    assert_eq!(rig.dev.config_read(11), 0x001e_8086);
    assert_eq!(rig.dev.config_read(4), BAR0 as u32);
    assert_eq!(rig.dev.config_read(5), u32::from(IO_BASE) | 1);
    assert_eq!((rig.dev.config_read(15) >> 8) & 0xff, 1); // INTA#
}

#[test]
fn eeprom_words_sum_to_baba_and_hold_the_mac_via_eerd() {
    let mut rig = Rig::new();
    let mut words = Vec::new();
    for i in 0..64u32 {
        rig.w(EERD, EERD_START | i << EERD_ADDR_SHIFT);
        let v = rig.r(EERD);
        assert_ne!(v & EERD_DONE, 0);
        words.push((v >> EERD_DATA_SHIFT) as u16);
    }
    let sum = words.iter().fold(0u16, |a, &w| a.wrapping_add(w));
    assert_eq!(sum, 0xbaba);
    assert_eq!(words[0..3], [0x5452, 0x1200, 0x5634]);
    assert_eq!(words[0x0d], 0x100e);
}

/// Linux's e1000_shift_out_ee_bits / e1000_shift_in_ee_bits, over MMIO.
fn ee_shift_out(rig: &mut Rig, data: u32, count: u32) {
    let mut eecd = rig.r(EECD) & !EECD_DO;
    let mut mask = 1 << (count - 1);
    while mask != 0 {
        eecd &= !EECD_DI;
        if data & mask != 0 {
            eecd |= EECD_DI;
        }
        rig.w(EECD, eecd);
        eecd |= EECD_SK;
        rig.w(EECD, eecd);
        eecd &= !EECD_SK;
        rig.w(EECD, eecd);
        mask >>= 1;
    }
    rig.w(EECD, eecd & !EECD_DI);
}

fn ee_shift_in(rig: &mut Rig, count: u32) -> u16 {
    let mut eecd = rig.r(EECD) & !(EECD_DO | EECD_DI);
    let mut data = 0u16;
    for _ in 0..count {
        data <<= 1;
        eecd |= EECD_SK;
        rig.w(EECD, eecd);
        eecd = rig.r(EECD) & !EECD_DI;
        if eecd & EECD_DO != 0 {
            data |= 1;
        }
        eecd &= !EECD_SK;
        rig.w(EECD, eecd);
    }
    data
}

fn ee_read_bitbang(rig: &mut Rig, addr: u32) -> u16 {
    // e1000_acquire_eeprom: request, wait for grant, then select the part.
    let mut eecd = rig.r(EECD) | EECD_REQ;
    rig.w(EECD, eecd);
    eecd = rig.r(EECD);
    assert_ne!(eecd & EECD_GNT, 0, "grant");
    assert_ne!(eecd & EECD_PRES, 0, "present");
    assert_eq!(eecd & (1 << 9), 0, "64-word part");
    eecd &= !(EECD_DI | EECD_SK);
    rig.w(EECD, eecd);
    eecd |= EECD_CS;
    rig.w(EECD, eecd);
    ee_shift_out(rig, 0b110, 3);
    ee_shift_out(rig, addr, 6);
    let v = ee_shift_in(rig, 16);
    // e1000_standby_eeprom then e1000_release_eeprom.
    let eecd = rig.r(EECD) & !(EECD_CS | EECD_SK);
    rig.w(EECD, eecd);
    rig.w(EECD, eecd & !EECD_REQ);
    v
}

#[test]
fn eeprom_bit_banged_microwire_reads_match_eerd() {
    let mut rig = Rig::new();
    let mut sum = 0u16;
    for i in 0..64 {
        let bb = ee_read_bitbang(&mut rig, i);
        rig.w(EERD, EERD_START | i << EERD_ADDR_SHIFT);
        assert_eq!(u32::from(bb), rig.r(EERD) >> 16, "word {i}");
        sum = sum.wrapping_add(bb);
    }
    assert_eq!(sum, 0xbaba);
    assert_eq!(ee_read_bitbang(&mut rig, 1), 0x1200);
}

fn mdic(rig: &mut Rig, op: u32, phy: u32, reg: u32, data: u16) -> u32 {
    rig.w(
        MDIC,
        op << MDIC_OP_SHIFT | phy << MDIC_PHY_SHIFT | reg << MDIC_REG_SHIFT | u32::from(data),
    );
    rig.r(MDIC)
}

#[test]
fn phy_registers_through_mdic() {
    let mut rig = Rig::new();
    let rd = |rig: &mut Rig, reg| {
        let v = mdic(rig, MDIC_OP_READ, 1, reg, 0);
        assert_ne!(v & MDIC_READY, 0);
        assert_eq!(v & MDIC_ERROR, 0);
        v as u16
    };
    let bmsr = rd(&mut rig, 1);
    assert_ne!(bmsr & BMSR_LSTATUS, 0);
    assert_ne!(bmsr & BMSR_ANEGCOMPLETE, 0);
    assert_eq!((rd(&mut rig, 2), rd(&mut rig, 3)), (0x0141, 0x0c20));
    assert_ne!(rd(&mut rig, 5), 0);
    assert_ne!(rd(&mut rig, 10) & 0x0800, 0); // partner 1000 full
    mdic(&mut rig, MDIC_OP_WRITE, 1, 4, 0x0de1 & !0x0c00);
    assert_eq!(rd(&mut rig, 4), 0x01e1);
    // Reset and AN restart self-clear; the link stays up.
    mdic(
        &mut rig,
        MDIC_OP_WRITE,
        1,
        0,
        0x1140 | BMCR_RESET | BMCR_ANRESTART,
    );
    assert_eq!(rd(&mut rig, 0) & (BMCR_RESET | BMCR_ANRESTART), 0);
    assert_ne!(rd(&mut rig, 1) & BMSR_LSTATUS, 0);
    // Nothing answers at another MDIO address.
    assert_ne!(mdic(&mut rig, MDIC_OP_READ, 2, 1, 0) & MDIC_ERROR, 0);
}

#[test]
fn status_reports_link_up_full_duplex_1000() {
    let mut rig = Rig::new();
    let s = rig.r(STATUS);
    assert_eq!(s & 0x3, 0x3);
    assert_eq!((s >> 6) & 3, 2);
}

#[test]
fn icr_read_clears_and_drives_intx_level() {
    let mut rig = Rig::new();
    rig.w(ICS, ICR_LSC);
    assert!(!rig.level(), "masked cause raises nothing");
    rig.w(IMS, ICR_LSC | ICR_RXT0);
    assert!(rig.level());
    assert_eq!(rig.r(IMS), ICR_LSC | ICR_RXT0);
    assert_eq!(rig.r(ICR), ICR_LSC);
    assert!(!rig.level(), "reading ICR deasserts");
    assert_eq!(rig.r(ICR), 0);

    rig.w(ICS, ICR_RXT0);
    assert!(rig.level());
    rig.w(IMC, ICR_RXT0);
    assert!(!rig.level(), "IMC masks");
    rig.w(IMS, ICR_RXT0);
    assert!(rig.level());
    rig.w(ICR, ICR_RXT0); // write one to clear
    assert!(!rig.level());

    // PCI Interrupt Disable holds the line low; the status bit still shows the interrupt.
    let cmd = u32::from(CMD_IO | CMD_MEMORY | CMD_BUS_MASTER | CMD_INTX_DISABLE);
    rig.dev.config_write(1, 0, &cmd.to_le_bytes());
    rig.w(ICS, ICR_RXT0);
    assert!(!rig.level());
    assert_ne!(rig.dev.config_read(1) & (1 << 19), 0);
    let cmd = u32::from(CMD_IO | CMD_MEMORY | CMD_BUS_MASTER);
    rig.dev.config_write(1, 0, &cmd.to_le_bytes());
    assert!(rig.level());
    assert_eq!(rig.irq.raised.load(Ordering::SeqCst), 4);
}

#[test]
fn ctrl_rst_self_clears_and_restores_defaults() {
    let mut rig = Rig::new();
    rig.w(IMS, 0xff);
    rig.w(RCTL, RCTL_EN);
    rig.w(RAL0, 0);
    rig.w(ICS, ICR_LSC);
    assert!(rig.level());
    let ctrl = rig.r(CTRL);
    rig.w(CTRL, ctrl | CTRL_RST);
    assert_eq!(rig.r(CTRL) & CTRL_RST, 0);
    assert_eq!((rig.r(IMS), rig.r(RCTL), rig.r(ICR)), (0, 0, 0));
    assert!(!rig.level());
    assert_eq!(rig.r(RAL0), 0x1200_5452);
    assert_eq!(rig.r(RAH0), 0x8000_5634);
}

#[test]
fn unknown_registers_read_zero_and_ignore_writes() {
    let mut rig = Rig::new();
    for off in [0x0004, 0x0024, 0x1ff00, 0x6000, 0x1fffc] {
        rig.w(off, 0xdead_beef);
        assert_eq!(rig.r(off), 0, "{off:#x}");
    }
    // Read-only and write-only registers.
    rig.w(STATUS, 0);
    assert_ne!(rig.r(STATUS) & STATUS_LU, 0);
    assert_eq!(rig.r(IMC), 0);
    // Ring registers keep only their implemented bits.
    rig.w(TDLEN, 0xffff_ffff);
    rig.w(RDBAL, 0x1234_5679);
    assert_eq!((rig.r(TDLEN), rig.r(RDBAL)), (0x000f_ff80, 0x1234_5670));
}

#[test]
fn narrow_accesses_touch_one_register_once() {
    let mut rig = Rig::new();
    rig.w(IMS, ICR_LSC);
    rig.w(ICS, ICR_LSC);
    // A byte read of ICR still clears it (one dword read underneath).
    let a = Access {
        offset: u64::from(ICR),
        addr: BAR0 + u64::from(ICR),
        vcpu: 0,
    };
    let mut b = [0u8; 1];
    rig.dev.read(a, &mut b);
    assert_eq!(b[0] as u32, ICR_LSC);
    assert!(!rig.level());
    // A 16-bit write to RDT keeps the other half of the dword intact.
    let a = Access {
        offset: u64::from(TIPG) + 2,
        addr: BAR0 + u64::from(TIPG) + 2,
        vcpu: 0,
    };
    rig.w(TIPG, 0x0060_2008);
    rig.dev.write(a, &[0x34, 0x12]);
    assert_eq!(rig.r(TIPG), 0x1234_2008);
}

#[test]
fn io_bar_window_reaches_the_same_registers() {
    let mut rig = Rig::new();
    rig.io_w(0, RAL0);
    assert_eq!(rig.io_r(0), RAL0);
    assert_eq!(rig.io_r(4), 0x1200_5452);
    rig.io_w(0, IMS);
    rig.io_w(4, ICR_TXDW);
    assert_eq!(rig.r(IMS), ICR_TXDW);
    // Linux resets an 82540 through the I/O window.
    rig.io_w(0, CTRL);
    let ctrl = rig.io_r(4);
    rig.io_w(4, ctrl | CTRL_RST);
    assert_eq!(rig.r(IMS), 0);
    assert_eq!(rig.r(CTRL) & CTRL_RST, 0);
    assert_eq!(rig.io_r(8), 0, "reserved");
    let c = rig.dev.counters();
    assert_eq!((c.io_reads, c.io_writes), (4, 5));
}

#[test]
fn statistics_clear_on_read() {
    let mut rig = Rig::new();
    tx::send_frames(&mut rig, &[vec![0xffu8; 100]]);
    assert_eq!(rig.r(GPTC), 1);
    assert_eq!(rig.r(GPTC), 0);
    assert_eq!(rig.r(BPTC), 1);
    assert_eq!(rig.r(GOTCL), 104);
    assert_eq!(rig.r(GOTCL), 104, "low half reads without clearing");
    assert_eq!(rig.r(GOTCH), 0);
    assert_eq!(rig.r(GOTCL), 0, "reading the high half clears both");
    assert_eq!(rig.r(TPT), 1);
    assert_eq!(rig.r(TPT), 0);
    rig.w(GPTC, 5);
    assert_eq!(rig.r(GPTC), 0, "read-only");
}

#[test]
fn pba_splits_the_packet_buffer() {
    let mut rig = Rig::new();
    assert_eq!(rig.r(PBA), 0x0010_0030);
    rig.w(PBA, 40);
    assert_eq!(rig.r(PBA), 0x0018_0028);
}

#[test]
fn itr_spaces_interrupt_assertions() {
    let mut rig = Rig::new();
    rig.w(ITR, 1000); // 256 us
    rig.w(IMS, ICR_LSC);
    rig.w(ICS, ICR_LSC);
    assert!(rig.level());
    rig.r(ICR);
    rig.w(ICS, ICR_LSC);
    assert!(!rig.level(), "held back by ITR");
    let deadline = rig.dev.next_deadline().unwrap();
    rig.advance(Duration::from_micros(100));
    assert_eq!(rig.dev.poll(*rig.clock.lock().unwrap()), Some(deadline));
    assert!(!rig.level());
    let now = rig.advance(Duration::from_micros(200));
    assert_eq!(rig.dev.poll(now), None);
    assert!(rig.level());
}

#[test]
fn every_access_is_counted_under_its_register() {
    let mut rig = Rig::new();
    rig.w(TDT, 0);
    rig.r(ICR);
    rig.r(ICR);
    rig.w(IMC, u32::MAX);
    rig.r(GPRC); // the statistics block
    rig.r(RAL0); // set-up registers not counted one by one

    // Through the I/O window: the address write, then the register it selects.
    rig.io_w(0, STATUS);
    rig.io_r(4);
    let c = rig.dev.counters();
    let reads = |reg: u32| c.reg_reads[counter_slot(reg)];
    let writes = |reg: u32| c.reg_writes[counter_slot(reg)];
    assert_eq!((writes(TDT), reads(TDT)), (1, 0));
    assert_eq!(reads(ICR), 2);
    assert_eq!(writes(IMC), 1);
    assert_eq!(reads(STATUS), 1);
    assert_eq!(c.reg_reads[REG_STATS], 1);
    assert_eq!(c.reg_reads[REG_OTHER], 1);
    assert_eq!(c.reg_writes[REG_IOADDR], 1);
    let all_reads: u64 = c.reg_reads.iter().sum();
    let all_writes: u64 = c.reg_writes.iter().sum();
    assert_eq!(all_reads, c.mmio_reads + c.io_reads);
    assert_eq!(all_writes, c.mmio_writes + c.io_writes);
    assert_eq!(slot_names(counter_slot(TDT)), ("read:TDT", "write:TDT"));
    assert_eq!(slot_names(REG_STATS), ("read:stats", "write:stats"));
}
