//! The IDENTIFY DEVICE block (ATA/ATAPI-6 8.15, table 27): 256 little-endian words built from
//! the drive's parameters and its current settings. Pure.

use super::ata::{Geometry, TransferMode, LBA28_LIMIT, LBA48_LIMIT, MAX_MULTIPLE};

/// What a drive says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriveInfo {
    /// Up to 20 ASCII characters.
    pub serial: String,
    /// Up to 8.
    pub firmware: String,
    /// Up to 40.
    pub model: String,
}

impl Default for DriveInfo {
    fn default() -> Self {
        DriveInfo {
            serial: "VMB00000000000000001".into(),
            firmware: "1.0".into(),
            model: "vmbench ATA disk".into(),
        }
    }
}

/// The settings IDENTIFY reflects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub sectors: u64,
    pub geometry: Geometry,
    /// Current READ/WRITE MULTIPLE block size; 0 when disabled.
    pub multiple: u8,
    /// The DMA mode chosen with SET FEATURES, if any.
    pub dma_mode: Option<TransferMode>,
    pub write_cache: bool,
    pub look_ahead: bool,
}

/// Puts ATA string `s` into `words`: two characters a word, the first in the high byte,
/// padded with spaces (ATA-6 3.2.9).
pub fn put_string(words: &mut [u16], s: &str) {
    let mut bytes = s.bytes().filter(|b| b.is_ascii_graphic() || *b == b' ');
    for w in words.iter_mut() {
        let hi = bytes.next().unwrap_or(b' ');
        let lo = bytes.next().unwrap_or(b' ');
        *w = u16::from_be_bytes([hi, lo]);
    }
}

/// Builds the block, integrity word included.
pub fn identify(info: &DriveInfo, s: &Settings) -> [u16; 256] {
    let mut w = [0u16; 256];
    let g = s.geometry;
    let chs_capacity = g.capacity().min(s.sectors) as u32;
    let lba28 = s.sectors.min(LBA28_LIMIT) as u32;
    let lba48 = s.sectors.min(LBA48_LIMIT - 1);

    w[0] = 0x0040; // ATA device, fixed (not removable)
    w[1] = g.cylinders;
    w[3] = u16::from(g.heads);
    w[6] = u16::from(g.sectors);
    put_string(&mut w[10..20], &info.serial);
    put_string(&mut w[23..27], &info.firmware);
    put_string(&mut w[27..47], &info.model);
    w[47] = 0x8000 | u16::from(MAX_MULTIPLE);
    // LBA, DMA, IORDY supported.
    w[49] = (1 << 11) | (1 << 9) | (1 << 8);
    w[50] = 0x4000;
    w[51] = 0x0200; // obsolete PIO timing mode: 2
                    // Words 54-58, 64-70 and 88 are valid.
    w[53] = 0x0007;
    w[54] = g.cylinders;
    w[55] = u16::from(g.heads);
    w[56] = u16::from(g.sectors);
    w[57] = chs_capacity as u16;
    w[58] = (chs_capacity >> 16) as u16;
    if s.multiple != 0 {
        w[59] = 0x0100 | u16::from(s.multiple);
    }
    w[60] = lba28 as u16;
    w[61] = (lba28 >> 16) as u16;
    // Multiword DMA 0-2 supported; the selected mode in bits 10:8.
    w[63] = 0x0007;
    if let Some(TransferMode::Mwdma(n)) = s.dma_mode {
        w[63] |= 0x0100 << n;
    }
    w[64] = 0x0003; // PIO 3 and 4
    w[65] = 120; // minimum multiword DMA cycle, ns
    w[66] = 120; // recommended
    w[67] = 120; // minimum PIO cycle without flow control
    w[68] = 120; // with IORDY
                 // Major version: ATA-3 to ATA/ATAPI-6. Minor version not reported.
    w[80] = 0x0078;
    // Command sets: look-ahead (6), write cache (5), power management (3); FLUSH CACHE EXT
    // (13), FLUSH CACHE (12), 48-bit address (10), with the word-valid pattern in 83/84, 87.
    w[82] = (1 << 6) | (1 << 5) | (1 << 3);
    w[83] = 0x4000 | (1 << 13) | (1 << 12) | (1 << 10);
    w[84] = 0x4000;
    w[85] = (u16::from(s.look_ahead) << 6) | (u16::from(s.write_cache) << 5) | (1 << 3);
    w[86] = (1 << 13) | (1 << 12) | (1 << 10);
    w[87] = 0x4000;
    // Ultra DMA 0-5 supported; the selected mode in bits 13:8.
    w[88] = 0x003f;
    if let Some(TransferMode::Udma(n)) = s.dma_mode {
        w[88] |= 0x0100 << n;
    }
    // Hardware reset result: device 0, number by jumper, diagnostics passed, no device 1.
    w[93] = 0x4000 | 0x0008 | 0x0002 | 0x0001;
    for (i, word) in w[100..104].iter_mut().enumerate() {
        *word = (lba48 >> (16 * i)) as u16;
    }
    w[255] = integrity(&w);
    w
}

/// Word 255: signature A5h in the low byte and a checksum in the high byte such that the 512
/// bytes sum to zero modulo 256 (ATA-6 8.15.61).
fn integrity(w: &[u16; 256]) -> u16 {
    let sum = w[..255]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .fold(0xa5u8, |a, b| a.wrapping_add(b));
    u16::from_le_bytes([0xa5, sum.wrapping_neg()])
}

/// The block as the data port delivers it.
pub fn to_bytes(w: &[u16; 256]) -> [u8; 512] {
    let mut b = [0u8; 512];
    for (i, x) in w.iter().enumerate() {
        b[2 * i..2 * i + 2].copy_from_slice(&x.to_le_bytes());
    }
    b
}
