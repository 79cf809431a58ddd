//! Tests of the PIIX3 IDE model on real guest memory, a sparse in-memory disk and test IRQ
//! lines, driven through its ports the way a driver does: PCI configuration, IDENTIFY, reset,
//! interrupts and device selection here; PIO, DMA, malformed input and fuzzing in the
//! submodules.

mod dma;
mod fuzz;
mod malformed;
mod pio;

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::ata::{op, SECTOR};
use super::bmdma::{CMD_START, CMD_WRITE_MEMORY};
use super::identify::{self, DriveInfo, Settings};
use super::*;
use crate::backend::block::{check_range, BlockBackend};
use crate::bus::{Access, BusDevice};
use crate::counters::Counters;
use crate::interrupt::TestIrqLine;
use crate::pci::config::{CMD_BUS_MASTER, CMD_IO};
use crate::pci::{BarRange, PciFunction};

pub const BM: u16 = 0xc040;
pub const P_DATA: u16 = 0x1f0;
pub const P_ERROR: u16 = 0x1f1;
pub const P_COUNT: u16 = 0x1f2;
pub const P_LBAL: u16 = 0x1f3;
pub const P_LBAM: u16 = 0x1f4;
pub const P_LBAH: u16 = 0x1f5;
pub const P_DEV: u16 = 0x1f6;
pub const P_CMD: u16 = 0x1f7;
pub const P_CTL: u16 = 0x3f6;

/// The byte a sector of the test disk holds until written: distinct per sector and offset.
pub fn pattern(byte: u64) -> u8 {
    let (s, i) = (byte / SECTOR as u64, byte % SECTOR as u64);
    (s.wrapping_mul(0x9e37_79b9) >> 5 ^ i.wrapping_mul(13) ^ s) as u8
}

pub fn pattern_range(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| pattern(offset + i)).collect()
}

/// A sparse disk of any size: unwritten sectors read as [`pattern`].
#[derive(Default)]
pub struct Disk {
    pub capacity: u64,
    pub written: BTreeMap<u64, Vec<u8>>,
    pub read_only: bool,
    pub fail_reads: bool,
    pub flushes: u64,
    pub writes: u64,
    /// Requests outside the capacity: the device must never make one.
    pub out_of_range: u64,
}

impl Disk {
    pub fn bytes(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let end = offset + len as u64;
        let mut at = offset;
        while at < end {
            let s = at / SECTOR as u64;
            let base = s * SECTOR as u64;
            let stop = end.min(base + SECTOR as u64);
            match self.written.get(&s) {
                Some(v) => out.extend_from_slice(&v[(at - base) as usize..(stop - base) as usize]),
                None => out.extend((at..stop).map(pattern)),
            }
            at = stop;
        }
        out
    }
}

pub struct TestDisk(pub Arc<Mutex<Disk>>);

impl BlockBackend for TestDisk {
    fn capacity(&self) -> u64 {
        self.0.lock().unwrap().capacity
    }
    fn read_only(&self) -> bool {
        self.0.lock().unwrap().read_only
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut d = self.0.lock().unwrap();
        if let Err(e) = check_range(offset, buf.len() as u64, d.capacity) {
            d.out_of_range += 1;
            return Err(e);
        }
        if d.fail_reads {
            return Err(io::ErrorKind::Other.into());
        }
        buf.copy_from_slice(&d.bytes(offset, buf.len()));
        Ok(())
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let mut d = self.0.lock().unwrap();
        if d.read_only {
            return Err(io::ErrorKind::PermissionDenied.into());
        }
        if let Err(e) = check_range(offset, buf.len() as u64, d.capacity) {
            d.out_of_range += 1;
            return Err(e);
        }
        d.writes += 1;
        for (i, &b) in buf.iter().enumerate() {
            let at = offset + i as u64;
            let s = at / SECTOR as u64;
            let base = s * SECTOR as u64;
            let sector = d
                .written
                .entry(s)
                .or_insert_with(|| pattern_range(base, SECTOR));
            sector[(at - base) as usize] = b;
        }
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.lock().unwrap().flushes += 1;
        Ok(())
    }
    fn describe(&self) -> String {
        "test disk".into()
    }
}

#[derive(Clone, Copy)]
pub struct Opts {
    pub sectors: u64,
    pub mem: usize,
    pub disk: bool,
    pub read_only: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            sectors: 1 << 20,
            mem: 8 << 20,
            disk: true,
            read_only: false,
        }
    }
}

/// The function with I/O decoding and bus mastering on, as a driver leaves it.
pub struct Fx {
    pub piix: Piix,
    pub mem: GuestMemoryMmap,
    pub disk: Arc<Mutex<Disk>>,
    pub irq14: Arc<TestIrqLine>,
    pub irq15: Arc<TestIrqLine>,
}

impl Fx {
    pub fn new() -> Fx {
        Fx::with(Opts::default())
    }

    pub fn with(o: Opts) -> Fx {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), o.mem)]).unwrap();
        let disk = Arc::new(Mutex::new(Disk {
            capacity: o.sectors * SECTOR as u64,
            read_only: o.read_only,
            ..Default::default()
        }));
        let irq14 = Arc::new(TestIrqLine::default());
        let irq15 = Arc::new(TestIrqLine::default());
        let backend: Option<Box<dyn BlockBackend>> = if o.disk {
            Some(Box::new(TestDisk(disk.clone())))
        } else {
            None
        };
        let mut piix = Piix::new(mem.clone(), backend, irq14.clone(), irq15.clone(), BM);
        let cmd = u32::from(CMD_IO | CMD_BUS_MASTER);
        piix.config_write(1, 0, &cmd.to_le_bytes());
        Fx {
            piix,
            mem,
            disk,
            irq14,
            irq15,
        }
    }

    fn access(port: u16) -> Access {
        Access {
            offset: 0,
            addr: u64::from(port),
            vcpu: 0,
        }
    }

    pub fn inb(&mut self, port: u16) -> u8 {
        let mut d = [0u8; 1];
        self.piix.read(Self::access(port), &mut d);
        d[0]
    }
    pub fn inw(&mut self, port: u16) -> u16 {
        let mut d = [0u8; 2];
        self.piix.read(Self::access(port), &mut d);
        u16::from_le_bytes(d)
    }
    pub fn inl(&mut self, port: u16) -> u32 {
        let mut d = [0u8; 4];
        self.piix.read(Self::access(port), &mut d);
        u32::from_le_bytes(d)
    }
    pub fn outb(&mut self, port: u16, v: u8) {
        self.piix.write(Self::access(port), &[v]);
    }
    pub fn outw(&mut self, port: u16, v: u16) {
        self.piix.write(Self::access(port), &v.to_le_bytes());
    }
    pub fn outl(&mut self, port: u16, v: u32) {
        self.piix.write(Self::access(port), &v.to_le_bytes());
    }

    pub fn status(&mut self) -> u8 {
        self.inb(P_CMD)
    }
    pub fn alt(&mut self) -> u8 {
        self.inb(P_CTL)
    }
    pub fn error(&mut self) -> u8 {
        self.inb(P_ERROR)
    }
    pub fn irq(&self) -> bool {
        self.irq14.level.load(Ordering::SeqCst)
    }
    pub fn edges(&self) -> u64 {
        self.irq14.raised.load(Ordering::SeqCst)
    }
    pub fn counter(&self, name: &str) -> u64 {
        let snap = self.piix.counters().snapshot();
        snap.iter().find(|(n, _)| *n == name).unwrap().1
    }

    /// An LBA28 taskfile (device 0, LBA mode).
    pub fn lba28(&mut self, lba: u32, count: u8) {
        self.outb(P_COUNT, count);
        self.outb(P_LBAL, lba as u8);
        self.outb(P_LBAM, (lba >> 8) as u8);
        self.outb(P_LBAH, (lba >> 16) as u8);
        self.outb(P_DEV, 0xe0 | ((lba >> 24) & 0x0f) as u8);
    }

    /// An LBA48 taskfile: high-order bytes first, as libata writes them.
    pub fn lba48(&mut self, lba: u64, count: u16) {
        self.outb(P_COUNT, (count >> 8) as u8);
        self.outb(P_LBAL, (lba >> 24) as u8);
        self.outb(P_LBAM, (lba >> 32) as u8);
        self.outb(P_LBAH, (lba >> 40) as u8);
        self.outb(P_COUNT, count as u8);
        self.outb(P_LBAL, lba as u8);
        self.outb(P_LBAM, (lba >> 8) as u8);
        self.outb(P_LBAH, (lba >> 16) as u8);
        self.outb(P_DEV, 0x40);
    }

    pub fn cmd(&mut self, opcode: u8) {
        self.outb(P_CMD, opcode);
    }

    /// Reads `n` data words as bytes.
    pub fn read_words(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|_| self.inw(P_DATA).to_le_bytes())
            .collect()
    }

    pub fn write_words(&mut self, bytes: &[u8]) {
        for w in bytes.chunks(2) {
            self.outw(P_DATA, u16::from_le_bytes([w[0], w[1]]));
        }
    }

    pub fn identify(&mut self) -> [u16; 256] {
        self.cmd(op::IDENTIFY_DEVICE);
        assert_eq!(self.status(), 0x58);
        let b = self.read_words(256);
        std::array::from_fn(|i| u16::from_le_bytes([b[2 * i], b[2 * i + 1]]))
    }

    pub fn set_features(&mut self, feature: u8, count: u8) -> u8 {
        self.outb(P_ERROR, feature);
        self.outb(P_COUNT, count);
        self.cmd(op::SET_FEATURES);
        self.status()
    }

    /// Writes a PRD table at `table`: (address, byte count field, end of table).
    pub fn prd(&self, table: u64, entries: &[(u32, u32, bool)]) {
        for (i, &(addr, len, eot)) in entries.iter().enumerate() {
            let ctl = (len & 0xffff) | if eot { 1 << 31 } else { 0 };
            let at = table + 8 * i as u64;
            self.mem.write_obj(addr, GuestAddress(at)).unwrap();
            self.mem.write_obj(ctl, GuestAddress(at + 4)).unwrap();
        }
    }

    pub fn bm_status(&mut self) -> u8 {
        self.inb(BM + 2)
    }

    /// Points the primary bus master at `table`, sets the direction and clears old status,
    /// as libata's bmdma_setup does; the engine is not started.
    pub fn bm_setup(&mut self, table: u32, to_memory: bool) {
        self.outl(BM + 4, table);
        self.outb(BM, if to_memory { CMD_WRITE_MEMORY } else { 0 });
        self.outb(BM + 2, 0x06);
    }

    pub fn bm_start(&mut self) {
        let c = self.inb(BM);
        self.outb(BM, c | CMD_START);
    }

    pub fn bm_stop(&mut self) {
        let c = self.inb(BM);
        self.outb(BM, c & !CMD_START);
    }

    pub fn guest(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }
}

/// An ATA string as drivers decode it: the first character of each word in its high byte.
pub fn ata_string(words: &[u16]) -> String {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
    String::from_utf8(bytes).unwrap().trim_end().to_string()
}

#[test]
fn pci_config_identifies_a_piix3_ide_function() {
    let mut f = Fx::new();
    for reg in 4..8 {
        f.piix.config_write(reg, 0, &u32::MAX.to_le_bytes());
    }

    assert_eq!(f.piix.config_read(0), 0x7010_8086);
    assert_eq!(f.piix.config_read(2), 0x0101_8000); // class 01.01.80, revision 0
    assert_eq!(f.piix.config_read(1) >> 16, 0x0280); // medium DEVSEL, fast back-to-back
    assert_eq!(f.piix.config_read(3), 0); // single function, header type 0
    for reg in 4..8 {
        assert_eq!(
            f.piix.config_read(reg),
            0,
            "BAR{} is not implemented",
            reg - 4
        );
    }
    assert_eq!(f.piix.config_read(15), 0); // no interrupt pin: IRQ 14/15
    assert_eq!(f.piix.config_read(0x40 / 4), 0x8000_8000); // both channels decoded
    assert_eq!(f.piix.config_read(0x44 / 4), 0);
}

#[test]
fn command_register_implements_only_io_and_bus_master() {
    let mut f = Fx::new();
    f.piix.config_write(1, 0, &0xffffu32.to_le_bytes());
    assert_eq!(f.piix.config_read(1) & 0xffff, 0x0005);
}

#[test]
fn bar4_sizes_to_sixteen_bytes_of_io_and_maps_when_io_is_on() {
    let mut f = Fx::new();

    let sizing = f.piix.config_write(8, 0, &u32::MAX.to_le_bytes());
    let mask = f.piix.config_read(8);
    let restore = f.piix.config_write(8, 0, &0xd000u32.to_le_bytes());
    let io_off = f.piix.config_write(1, 0, &0u32.to_le_bytes());

    assert_eq!(mask, 0x0000_fff1); // bits 31:16 reserved, 16 bytes, I/O
    let bar = |base| BarRange {
        bar: 4,
        base,
        len: 16,
        io: true,
    };
    assert_eq!(sizing.unmap, vec![bar(u64::from(BM))]);
    assert_eq!(restore.map, vec![bar(0xd000)]);
    assert_eq!(f.piix.config_read(8), 0xd001);
    assert_eq!(io_off.unmap, vec![bar(0xd000)]);
}

#[test]
fn idetim_decode_bit_and_io_enable_gate_the_legacy_ports() {
    let mut f = Fx::new();
    assert_eq!(f.status(), 0x50);

    f.piix
        .config_write(0x40 / 4, 0, &0xffff_0000u32.to_le_bytes());
    let primary_off = (f.status(), f.alt(), f.inb(0x177));
    f.piix
        .config_write(0x40 / 4, 0, &0xffff_ffffu32.to_le_bytes());
    let timing = f.piix.config_read(0x40 / 4);
    f.piix
        .config_write(1, 0, &u32::from(CMD_BUS_MASTER).to_le_bytes());
    let io_off = (f.status(), f.inb(BM + 2));

    assert_eq!(primary_off, (0xff, 0xff, 0x7f)); // the secondary stays decoded
    assert_eq!(timing, 0xf3ff_f3ff); // bits 11:10 reserved
    assert_eq!(io_off, (0xff, 0xff));
}

#[test]
fn identify_block_decodes_field_by_field() {
    let mut f = Fx::with(Opts {
        sectors: 0x0234_5678,
        ..Default::default()
    });

    f.cmd(op::IDENTIFY_DEVICE);
    let irq_at_drq = f.irq();
    let w = f.identify_words_after_command();
    let status_after = f.alt();

    assert!(irq_at_drq);
    assert_eq!(status_after, 0x50);
    assert_eq!(f.edges(), 1, "data-in: no interrupt after the last block");
    assert_eq!(w[0], 0x0040);
    assert_eq!((w[1], w[3], w[6]), (16383, 16, 63));
    assert_eq!((w[54], w[55], w[56]), (16383, 16, 63));
    assert_eq!(u32::from(w[57]) | u32::from(w[58]) << 16, 16383 * 16 * 63);
    assert_eq!(
        w[10],
        u16::from_be_bytes(*b"VM"),
        "ATA strings are byte-swapped"
    );
    assert_eq!(ata_string(&w[10..20]), "VMB00000000000000001");
    assert_eq!(ata_string(&w[23..27]), "1.0");
    assert_eq!(ata_string(&w[27..47]), "vmbench ATA disk");
    assert_eq!(w[47], 0x8010);
    assert_eq!(w[49] & 0x0300, 0x0300, "LBA and DMA");
    assert_eq!(w[53] & 0x0007, 0x0007, "words 54-58, 64-70 and 88 valid");
    assert_eq!(w[59], 0, "multiple mode off at power-on");
    assert_eq!(u32::from(w[60]) | u32::from(w[61]) << 16, 0x0234_5678);
    assert_eq!(w[63], 0x0007);
    assert_eq!(w[64], 0x0003);
    assert_eq!(w[80] & (1 << 6), 1 << 6, "ATA/ATAPI-6");
    assert_eq!(w[82] & (1 << 5), 1 << 5, "write cache");
    assert_eq!(w[83] & 0xc000, 0x4000);
    assert_eq!(
        w[83] & (1 << 10 | 1 << 12 | 1 << 13),
        1 << 10 | 1 << 12 | 1 << 13
    );
    assert_eq!(
        w[86] & (1 << 10 | 1 << 12 | 1 << 13),
        1 << 10 | 1 << 12 | 1 << 13
    );
    assert_eq!(w[85] & (1 << 5), 1 << 5, "write cache on");
    assert_eq!(w[88], 0x003f, "UDMA 0-5 supported, none selected");
    let lba48 = (0..4).fold(0u64, |a, i| a | u64::from(w[100 + i]) << (16 * i));
    assert_eq!(lba48, 0x0234_5678);
    assert_eq!(w[255] & 0xff, 0xa5);
    let sum = w
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .fold(0u8, |a, b| a.wrapping_add(b));
    assert_eq!(sum, 0, "checksum");
}

impl Fx {
    /// Reads the IDENTIFY data after the command was issued, acknowledging the interrupt.
    fn identify_words_after_command(&mut self) -> [u16; 256] {
        assert_eq!(self.status(), 0x58);
        let b = self.read_words(256);
        std::array::from_fn(|i| u16::from_le_bytes([b[2 * i], b[2 * i + 1]]))
    }
}

#[test]
fn identify_caps_lba28_capacity_and_keeps_lba48() {
    let sectors = 1u64 << 33;
    let s = Settings {
        sectors,
        geometry: ata::Geometry::for_capacity(sectors),
        multiple: 8,
        dma_mode: None,
        write_cache: false,
        look_ahead: true,
    };
    let w = identify::identify(&DriveInfo::default(), &s);
    assert_eq!(u32::from(w[60]) | u32::from(w[61]) << 16, 0x0fff_ffff);
    let lba48 = (0..4).fold(0u64, |a, i| a | u64::from(w[100 + i]) << (16 * i));
    assert_eq!(lba48, sectors);
    assert_eq!(w[59], 0x0108);
    assert_eq!(w[85] & (1 << 5), 0);
}

#[test]
fn set_features_transfer_mode_shows_in_words_63_and_88() {
    let mut f = Fx::new();

    let udma = f.set_features(0x03, 0x42);
    let w_udma = f.identify();
    let mwdma = f.set_features(0x03, 0x22);
    let w_mwdma = f.identify();
    let cache_off = f.set_features(0x82, 0);
    let w_cache = f.identify();
    let bad = f.set_features(0x03, 0x47);
    let bad_err = f.error();

    assert_eq!((udma, mwdma, cache_off), (0x50, 0x50, 0x50));
    assert_eq!((w_udma[88], w_udma[63]), (0x043f, 0x0007));
    assert_eq!((w_mwdma[88], w_mwdma[63]), (0x003f, 0x0407));
    assert_eq!(w_cache[85] & (1 << 5), 0);
    assert_eq!((bad, bad_err), (0x41, 0x04));
}

#[test]
fn srst_holds_busy_then_posts_the_signature_without_interrupt() {
    let mut f = Fx::new();
    f.lba48(0x1234_5678_9abc, 0x55aa);
    f.outb(P_ERROR, 0x99);

    f.outb(P_CTL, 0x04);
    let during = (f.alt(), f.status(), f.inb(P_LBAL));
    f.outb(P_CMD, op::IDENTIFY_DEVICE); // ignored while busy
    f.outb(P_CTL, 0x00);
    let regs: Vec<u8> = (P_ERROR..=P_CMD).map(|p| f.inb(p)).collect();

    assert_eq!(during, (0x80, 0x80, 0x80));
    // error 01h, count 1, LBA low 1, mid 0, high 0, device 0, status DRDY|DSC
    assert_eq!(regs, [0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x50]);
    assert_eq!(f.edges(), 0);
    assert_eq!(f.counter("resets"), 1);
    assert_eq!(f.counter("cmd_identify"), 0);
}

#[test]
fn status_read_acknowledges_the_interrupt_but_alternate_status_does_not() {
    let mut f = Fx::new();
    f.cmd(op::FLUSH_CACHE);
    let raised = f.irq();
    f.alt();
    let after_alt = f.irq();
    f.status();
    let after_status = f.irq();

    assert!(raised && after_alt && !after_status);
    assert_eq!(f.disk.lock().unwrap().flushes, 1);
}

#[test]
fn nien_masks_the_line_and_the_bus_master_interrupt_bit() {
    let mut f = Fx::new();
    f.outb(P_CTL, 0x02);

    f.cmd(op::FLUSH_CACHE_EXT);
    let masked = (f.irq(), f.bm_status());
    f.outb(P_CTL, 0x00);
    let unmasked = (f.irq(), f.bm_status());

    assert_eq!(masked, (false, 0));
    assert_eq!(unmasked, (true, 0x04)); // a rising edge once nIEN clears
}

#[test]
fn a_command_without_acknowledge_still_gives_an_edge() {
    let mut f = Fx::new();
    f.cmd(op::FLUSH_CACHE);
    f.outb(BM + 2, 0x04);
    f.cmd(op::FLUSH_CACHE); // polling driver: alt status only, never Status

    assert_eq!(f.edges(), 2);
    assert_eq!(f.bm_status() & 0x04, 0x04);
}

#[test]
fn hob_reads_back_the_high_order_bytes_until_a_register_write() {
    let mut f = Fx::new();
    f.lba48(0x0605_0403_0201, 0x0807);

    let low: Vec<u8> = (P_COUNT..=P_LBAH).map(|p| f.inb(p)).collect();
    f.outb(P_CTL, 0x80);
    let high: Vec<u8> = (P_COUNT..=P_LBAH).map(|p| f.inb(p)).collect();
    f.outb(P_ERROR, 0); // any command block write clears HOB
    let again = f.inb(P_COUNT);

    assert_eq!(low, [0x07, 0x01, 0x02, 0x03]);
    assert_eq!(high, [0x08, 0x04, 0x05, 0x06]);
    assert_eq!(again, 0x07);
}

#[test]
fn absent_device_1_reads_status_zero_and_takes_only_diagnostics() {
    let mut f = Fx::new();
    f.outb(P_DEV, 0xb0);

    // libata's ata_devchk: device 0 answers the shadow registers for device 1.
    f.outb(P_COUNT, 0x55);
    f.outb(P_LBAL, 0xaa);
    let echo = (f.inb(P_COUNT), f.inb(P_LBAL));
    let status = (f.status(), f.alt());
    f.cmd(op::IDENTIFY_DEVICE);
    let after_identify = (f.status(), f.edges());
    f.cmd(op::EXECUTE_DEVICE_DIAGNOSTIC);
    let diag = (f.edges(), f.inb(P_DEV), f.error(), f.status());

    assert_eq!(echo, (0x55, 0xaa));
    assert_eq!(status, (0, 0));
    assert_eq!(after_identify, (0, 0));
    assert_eq!(diag, (1, 0x00, 0x01, 0x50)); // device 0 selected again, signature posted
}

#[test]
fn empty_secondary_channel_floats_with_dd7_pulled_down() {
    let mut f = Fx::new();
    f.outb(0x172, 0x55);
    f.outb(0x173, 0xaa);
    f.outb(0x177, op::IDENTIFY_DEVICE);

    let regs: Vec<u8> = (0x171..=0x177).map(|p| f.inb(p)).collect();
    assert_eq!(regs, [0x7f; 7]);
    assert_eq!(f.inb(0x376), 0x7f);
    assert_eq!(f.inw(0x170), 0xff7f);
    assert_eq!(f.irq15.raised.load(Ordering::SeqCst), 0);
}

#[test]
fn without_a_disk_the_primary_channel_is_empty_too() {
    let mut f = Fx::with(Opts {
        disk: false,
        ..Default::default()
    });
    f.cmd(op::IDENTIFY_DEVICE);
    assert_eq!((f.status(), f.alt(), f.edges()), (0x7f, 0x7f, 0));
}

#[test]
fn power_commands_are_accepted_and_check_power_mode_reports_them() {
    let mut f = Fx::new();
    f.cmd(op::STANDBY_IMMEDIATE);
    let standby = f.status();
    f.cmd(op::CHECK_POWER_MODE);
    let mode_standby = (f.status(), f.inb(P_COUNT));
    f.cmd(op::IDLE_IMMEDIATE);
    f.cmd(op::CHECK_POWER_MODE);
    let mode_idle = f.inb(P_COUNT);

    assert_eq!(standby, 0x50);
    assert_eq!(mode_standby, (0x50, 0x00));
    assert_eq!(mode_idle, 0x80);
}

#[test]
fn sleep_ignores_commands_until_a_software_reset() {
    let mut f = Fx::new();
    f.cmd(op::SLEEP);
    f.status();
    f.cmd(op::IDENTIFY_DEVICE);
    let asleep = (f.status(), f.edges());
    f.outb(P_CTL, 0x04);
    f.outb(P_CTL, 0x00);
    f.cmd(op::IDENTIFY_DEVICE);
    assert_eq!(asleep, (0x50, 1));
    assert_eq!(f.status(), 0x58);
}

#[test]
fn counters_name_every_figure() {
    let f = Fx::new();
    let names: Vec<&str> = f
        .piix
        .counters()
        .snapshot()
        .iter()
        .map(|(n, _)| *n)
        .collect();
    for n in [
        "cmd_dma_read",
        "sectors_read",
        "pio_words",
        "dma_bytes",
        "interrupts",
    ] {
        assert!(names.contains(&n), "{n}");
    }
}

#[test]
fn every_port_access_is_counted_under_its_register() {
    let mut f = Fx::new();
    let before = f.piix.counters().snapshot();
    f.lba28(0, 1);
    f.cmd(op::READ_SECTORS);
    f.status();
    f.alt();
    f.read_words(256);
    // A dword PRD pointer write is one exit, counted once.
    f.outl(BM + 4, 0x1000);
    f.inb(BM + 2);
    f.outb(BM, 0);
    f.inb(0x1e8); // nothing decodes it: `other`
    let delta =
        |f: &Fx, name: &str| f.counter(name) - before.iter().find(|(n, _)| *n == name).unwrap().1;
    for (name, n) in [
        ("write:count", 1),
        ("write:lba_low", 1),
        ("write:lba_mid", 1),
        ("write:lba_high", 1),
        ("write:device", 1),
        ("write:command", 1),
        ("read:status", 1),
        ("read:alt_status", 1),
        ("read:data", 256),
        ("write:bm_prd", 1),
        ("read:bm_status", 1),
        ("write:bm_command", 1),
        ("read:other", 1),
        ("write:features", 0),
        ("read:error", 0),
    ] {
        assert_eq!(delta(&f, name), n, "{name}");
    }
}
