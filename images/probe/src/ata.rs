//! ATA command-block definitions the probe's IDE driver needs (ATA/ATAPI-6, T13/1410D): status
//! and error bits, the commands it issues, and the IDENTIFY DEVICE words it decodes (6.2.1.x,
//! table 29). Pure: no port I/O here.

/// Status register bits.
pub const BSY: u8 = 0x80;
pub const DRDY: u8 = 0x40;
pub const DF: u8 = 0x20;
pub const DRQ: u8 = 0x08;
pub const ERR: u8 = 0x01;

/// Error register bits.
pub const ABRT: u8 = 0x04;
pub const IDNF: u8 = 0x10;

/// Device control register: bit 3 is obsolete and set as libata sets it; nIEN masks INTRQ;
/// SRST holds the devices in reset.
pub const CTL_OBS: u8 = 0x08;
pub const CTL_SRST: u8 = 0x04;

/// Device register: obsolete bits 7 and 5 set (device 0), LBA addressing.
pub const DEV_OBS: u8 = 0xA0;
pub const DEV_LBA: u8 = 0x40;

pub const IDENTIFY: u8 = 0xEC;
pub const READ_SECTORS: u8 = 0x20;
pub const READ_SECTORS_EXT: u8 = 0x24;
pub const WRITE_SECTORS: u8 = 0x30;
pub const WRITE_SECTORS_EXT: u8 = 0x34;
pub const READ_MULTIPLE: u8 = 0xC4;
pub const READ_MULTIPLE_EXT: u8 = 0x29;
pub const WRITE_MULTIPLE: u8 = 0xC5;
pub const WRITE_MULTIPLE_EXT: u8 = 0x39;
pub const SET_MULTIPLE: u8 = 0xC6;
pub const READ_DMA: u8 = 0xC8;
pub const READ_DMA_EXT: u8 = 0x25;
pub const WRITE_DMA: u8 = 0xCA;
pub const WRITE_DMA_EXT: u8 = 0x35;
pub const FLUSH_CACHE: u8 = 0xE7;
pub const FLUSH_CACHE_EXT: u8 = 0xEA;
pub const SET_FEATURES: u8 = 0xEF;
/// SET FEATURES subcommand (features register): set transfer mode from the sector count.
pub const SF_XFER_MODE: u8 = 0x03;

/// The largest LBA28 transfer (a count of 0 means 256) and LBA48 transfer.
pub const MAX_LBA28_SECTORS: u32 = 256;
pub const MAX_LBA48_SECTORS: u32 = 65536;

/// How a command moves its data.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Xfer {
    /// One sector per DRQ block (READ/WRITE SECTORS).
    PioSingle,
    /// SET MULTIPLE's count per DRQ block (READ/WRITE MULTIPLE).
    PioMultiple,
    Dma,
}

/// Which way data moves.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Dir {
    /// Device to memory.
    Read,
    Write,
}

/// Which addressing a command uses.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Addressing {
    Lba28,
    Lba48,
}

/// The read or write command for a transfer kind and addressing.
pub fn rw_command(xfer: Xfer, dir: Dir, addr: Addressing) -> u8 {
    let (write, lba48) = (dir == Dir::Write, addr == Addressing::Lba48);
    match (xfer, write, lba48) {
        (Xfer::PioSingle, false, false) => READ_SECTORS,
        (Xfer::PioSingle, false, true) => READ_SECTORS_EXT,
        (Xfer::PioSingle, true, false) => WRITE_SECTORS,
        (Xfer::PioSingle, true, true) => WRITE_SECTORS_EXT,
        (Xfer::PioMultiple, false, false) => READ_MULTIPLE,
        (Xfer::PioMultiple, false, true) => READ_MULTIPLE_EXT,
        (Xfer::PioMultiple, true, false) => WRITE_MULTIPLE,
        (Xfer::PioMultiple, true, true) => WRITE_MULTIPLE_EXT,
        (Xfer::Dma, false, false) => READ_DMA,
        (Xfer::Dma, false, true) => READ_DMA_EXT,
        (Xfer::Dma, true, false) => WRITE_DMA,
        (Xfer::Dma, true, true) => WRITE_DMA_EXT,
    }
}

/// A command's register inputs. `count` is the real count (1..=256 or 1..=65536); the
/// registers get it modulo 256 or 65536, so the maximum becomes 0 as the standard says.
#[derive(Clone, Copy, Debug)]
pub struct Taskfile {
    pub command: u8,
    pub feature: u8,
    pub count: u32,
    pub lba: u64,
    pub lba48: bool,
    /// The command uses the address registers (false for FLUSH and SET MULTIPLE's kind).
    pub addressed: bool,
}

impl Taskfile {
    /// (current, previous) values for the features, count and LBA registers, as an LBA48
    /// command loads them (previous first); LBA28 commands use only the current ones.
    pub fn regs(&self) -> [(u8, u8); 5] {
        let c = self.count;
        let l = self.lba;
        [
            (self.feature, 0),
            (c as u8, (c >> 8) as u8),
            (l as u8, (l >> 24) as u8),
            ((l >> 8) as u8, (l >> 32) as u8),
            ((l >> 16) as u8, (l >> 40) as u8),
        ]
    }

    /// The device register: LBA bits 27:24 in LBA28 mode, reserved in LBA48 mode.
    pub fn device(&self) -> u8 {
        if !self.addressed {
            return DEV_OBS;
        }
        if self.lba48 {
            DEV_OBS | DEV_LBA
        } else {
            DEV_OBS | DEV_LBA | ((self.lba >> 24) as u8 & 0x0f)
        }
    }
}

/// The IDENTIFY DEVICE fields the driver uses.
#[derive(Clone, Copy)]
pub struct Identify {
    pub model: [u8; 40],
    pub serial: [u8; 20],
    pub firmware: [u8; 8],
    /// Word 49 bit 9 and bit 8.
    pub lba: bool,
    pub dma: bool,
    /// Words 60-61.
    pub lba28_sectors: u32,
    /// Word 83 bit 10, and words 100-103.
    pub lba48: bool,
    pub lba48_sectors: u64,
    /// Word 83 bit 13.
    pub flush_ext: bool,
    /// Word 47 bits 7:0: the most sectors per DRQ block READ/WRITE MULTIPLE may use.
    pub max_multiple: u8,
    /// Bit n = mode n supported: word 64 (PIO 3, 4 as bits 3, 4; 0-2 always), 63, 88.
    pub pio_modes: u8,
    pub mwdma_modes: u8,
    /// Zero unless word 53 bit 2 says word 88 is valid.
    pub udma_modes: u8,
}

impl Identify {
    pub fn decode(w: &[u16; 256]) -> Identify {
        let mut model = [0u8; 40];
        let mut serial = [0u8; 20];
        let mut firmware = [0u8; 8];
        ata_string(&w[27..47], &mut model);
        ata_string(&w[10..20], &mut serial);
        ata_string(&w[23..27], &mut firmware);
        let w53 = w[53];
        let lba48 = w[83] & (1 << 10) != 0 && w[83] & 0xc000 == 0x4000;
        let lba48_sectors = if lba48 {
            (0..4).fold(0u64, |acc, i| acc | (u64::from(w[100 + i]) << (16 * i)))
        } else {
            0
        };
        let advanced_pio = if w53 & 0x2 != 0 {
            (w[64] & 0x3) as u8
        } else {
            0
        };
        Identify {
            model,
            serial,
            firmware,
            lba: w[49] & (1 << 9) != 0,
            dma: w[49] & (1 << 8) != 0,
            lba28_sectors: u32::from(w[60]) | (u32::from(w[61]) << 16),
            lba48,
            lba48_sectors,
            flush_ext: lba48 && w[83] & (1 << 13) != 0,
            max_multiple: (w[47] & 0xff) as u8,
            pio_modes: 0x07 | (advanced_pio << 3),
            mwdma_modes: (w[63] & 0x07) as u8,
            udma_modes: if w53 & 0x4 != 0 {
                (w[88] & 0x7f) as u8
            } else {
                0
            },
        }
    }

    /// Addressable sectors: the LBA48 count when the device has the feature set.
    pub fn capacity(&self) -> u64 {
        if self.lba48 && self.lba48_sectors > 0 {
            self.lba48_sectors
        } else {
            u64::from(self.lba28_sectors)
        }
    }

    pub fn model(&self) -> &str {
        trimmed(&self.model)
    }

    pub fn serial(&self) -> &str {
        trimmed(&self.serial)
    }

    pub fn firmware(&self) -> &str {
        trimmed(&self.firmware)
    }

    /// The sectors per block to set with SET MULTIPLE: the largest power of two the device
    /// allows (libata only ever uses powers of two), 0 if it has no multiple support.
    pub fn multiple_count(&self) -> u8 {
        match self.max_multiple {
            0 => 0,
            m => 1 << (7 - m.leading_zeros()),
        }
    }
}

/// The highest mode in a mode bit mask.
pub fn highest(modes: u8) -> Option<u8> {
    (modes != 0).then(|| 7 - modes.leading_zeros() as u8)
}

/// ATA strings hold two characters per word, the first in the high byte.
fn ata_string(words: &[u16], out: &mut [u8]) {
    for (i, w) in words.iter().enumerate() {
        out[2 * i] = (w >> 8) as u8;
        out[2 * i + 1] = *w as u8;
    }
}

/// Printable ASCII without the padding, or "?" for anything else.
fn trimmed(s: &[u8]) -> &str {
    let end = s
        .iter()
        .rposition(|&b| b != b' ' && b != 0)
        .map_or(0, |i| i + 1);
    let start = s[..end].iter().position(|&b| b != b' ').unwrap_or(end);
    let t = &s[start..end];
    if t.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        core::str::from_utf8(t).unwrap_or("?")
    } else {
        "?"
    }
}
