//! ATA taskfile registers and command decoding (ATA/ATAPI-6, T13 1410D: registers in 7, the
//! commands in 8, 48-bit addressing in 6.20). Pure: [`Command::parse`] takes the registers as
//! the guest left them and the drive's parameters, checks every field and returns what to do
//! or the error the device reports. The executor in `drive.rs` does the I/O.

/// Bytes per logical sector.
pub const SECTOR: usize = 512;

// Status register bits (ATA-6 7.15.6).
pub const ST_BSY: u8 = 0x80;
pub const ST_DRDY: u8 = 0x40;
/// Bit 4: obsolete "device seek complete"; drives still report it when ready, as QEMU does.
pub const ST_DSC: u8 = 0x10;
pub const ST_DRQ: u8 = 0x08;
pub const ST_ERR: u8 = 0x01;
/// Status of an idle, ready drive.
pub const ST_READY: u8 = ST_DRDY | ST_DSC;

// Error register bits (ATA-6 7.9).
pub const ER_ABRT: u8 = 0x04;
pub const ER_IDNF: u8 = 0x10;
pub const ER_UNC: u8 = 0x40;
/// Diagnostic code after reset or EXECUTE DEVICE DIAGNOSTIC: device 0 passed, device 1 absent.
pub const DIAG_PASSED: u8 = 0x01;

// Device control register bits (ATA-6 7.8).
pub const DC_HOB: u8 = 0x80;
pub const DC_SRST: u8 = 0x04;
pub const DC_NIEN: u8 = 0x02;

// Device register bits (ATA-6 7.10).
pub const DEV_LBA: u8 = 0x40;
pub const DEV_DEV: u8 = 0x10;

/// Largest address an LBA28 command reaches, plus one: words 60-61 are capped here.
pub const LBA28_LIMIT: u64 = 0x0fff_ffff;
/// Largest capacity LBA48 can express.
pub const LBA48_LIMIT: u64 = 1 << 48;
/// Largest sector count per DRQ block for READ/WRITE MULTIPLE (IDENTIFY word 47).
pub const MAX_MULTIPLE: u8 = 16;
/// Highest transfer modes the drive supports (IDENTIFY words 63, 64, 88).
pub const MAX_PIO: u8 = 4;
pub const MAX_MWDMA: u8 = 2;
pub const MAX_UDMA: u8 = 5;

/// Command opcodes this drive knows (ATA-6 table B.2).
pub mod op {
    pub const READ_SECTORS: u8 = 0x20;
    pub const READ_SECTORS_NORETRY: u8 = 0x21;
    pub const READ_SECTORS_EXT: u8 = 0x24;
    pub const READ_DMA_EXT: u8 = 0x25;
    pub const READ_MULTIPLE_EXT: u8 = 0x29;
    pub const WRITE_SECTORS: u8 = 0x30;
    pub const WRITE_SECTORS_NORETRY: u8 = 0x31;
    pub const WRITE_SECTORS_EXT: u8 = 0x34;
    pub const WRITE_DMA_EXT: u8 = 0x35;
    pub const WRITE_MULTIPLE_EXT: u8 = 0x39;
    pub const EXECUTE_DEVICE_DIAGNOSTIC: u8 = 0x90;
    pub const STANDBY_IMMEDIATE_OLD: u8 = 0x94;
    pub const IDLE_IMMEDIATE_OLD: u8 = 0x95;
    pub const STANDBY_OLD: u8 = 0x96;
    pub const IDLE_OLD: u8 = 0x97;
    pub const CHECK_POWER_MODE_OLD: u8 = 0x98;
    pub const SLEEP_OLD: u8 = 0x99;
    pub const PACKET: u8 = 0xa0;
    pub const IDENTIFY_PACKET_DEVICE: u8 = 0xa1;
    pub const READ_MULTIPLE: u8 = 0xc4;
    pub const WRITE_MULTIPLE: u8 = 0xc5;
    pub const SET_MULTIPLE_MODE: u8 = 0xc6;
    pub const READ_DMA: u8 = 0xc8;
    pub const READ_DMA_NORETRY: u8 = 0xc9;
    pub const WRITE_DMA: u8 = 0xca;
    pub const WRITE_DMA_NORETRY: u8 = 0xcb;
    pub const STANDBY_IMMEDIATE: u8 = 0xe0;
    pub const IDLE_IMMEDIATE: u8 = 0xe1;
    pub const STANDBY: u8 = 0xe2;
    pub const IDLE: u8 = 0xe3;
    pub const CHECK_POWER_MODE: u8 = 0xe5;
    pub const SLEEP: u8 = 0xe6;
    pub const FLUSH_CACHE: u8 = 0xe7;
    pub const IDENTIFY_DEVICE: u8 = 0xec;
    pub const FLUSH_CACHE_EXT: u8 = 0xea;
    pub const SET_FEATURES: u8 = 0xef;
}

/// SET FEATURES subcommands (Features register, ATA-6 8.37).
pub mod feature {
    pub const ENABLE_WRITE_CACHE: u8 = 0x02;
    pub const SET_TRANSFER_MODE: u8 = 0x03;
    pub const DISABLE_LOOK_AHEAD: u8 = 0x55;
    pub const DISABLE_WRITE_CACHE: u8 = 0x82;
    pub const ENABLE_LOOK_AHEAD: u8 = 0xaa;
}

/// The command block registers as the drive holds them. Sector count and LBA registers are
/// two-byte FIFOs (ATA-6 6.20.1): a write pushes the previous value into the high byte, which
/// 48-bit commands use as the high-order half and HOB reads back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskFile {
    pub feature: u16,
    pub count: u16,
    pub lba_low: u16,
    pub lba_mid: u16,
    pub lba_high: u16,
    pub device: u8,
}

impl TaskFile {
    /// The registers after power-on, reset or EXECUTE DEVICE DIAGNOSTIC: the ATA signature
    /// (ATA-6 9.12: sector count 1, LBA low 1, LBA mid 0, LBA high 0, device 0).
    pub fn signature() -> Self {
        TaskFile {
            feature: 0,
            count: 1,
            lba_low: 1,
            lba_mid: 0,
            lba_high: 0,
            device: 0,
        }
    }

    /// A guest write to a FIFO register.
    pub fn push(reg: &mut u16, v: u8) {
        *reg = (*reg << 8) | u16::from(v);
    }

    /// Low (current) or high (previous, HOB) byte of a FIFO register.
    pub fn byte(reg: u16, hob: bool) -> u8 {
        if hob {
            (reg >> 8) as u8
        } else {
            reg as u8
        }
    }

    pub fn lba28(&self) -> u64 {
        u64::from(self.device & 0x0f) << 24
            | u64::from(self.lba_high & 0xff) << 16
            | u64::from(self.lba_mid & 0xff) << 8
            | u64::from(self.lba_low & 0xff)
    }

    pub fn lba48(&self) -> u64 {
        let hi = |r: u16| u64::from(r >> 8);
        let lo = |r: u16| u64::from(r & 0xff);
        hi(self.lba_high) << 40
            | hi(self.lba_mid) << 32
            | hi(self.lba_low) << 24
            | lo(self.lba_high) << 16
            | lo(self.lba_mid) << 8
            | lo(self.lba_low)
    }

    /// Sector count of a 28-bit command: 0 means 256.
    pub fn count28(&self) -> u32 {
        match self.count & 0xff {
            0 => 256,
            n => u32::from(n),
        }
    }

    /// Sector count of a 48-bit command: 0 means 65536.
    pub fn count48(&self) -> u32 {
        match self.count {
            0 => 65536,
            n => u32::from(n),
        }
    }

    /// Writes an address back, as a drive reports the first failing sector (ATA-6 8.x error
    /// outputs): both FIFO bytes for 48-bit commands, the low 28 bits otherwise.
    pub fn set_lba(&mut self, lba: u64, ext: bool) {
        let b = |shift: u32| (lba >> shift) as u8;
        if ext {
            self.lba_low = u16::from_le_bytes([b(0), b(24)]);
            self.lba_mid = u16::from_le_bytes([b(8), b(32)]);
            self.lba_high = u16::from_le_bytes([b(16), b(40)]);
        } else {
            self.lba_low = u16::from(b(0));
            self.lba_mid = u16::from(b(8));
            self.lba_high = u16::from(b(16));
            self.device = (self.device & 0xf0) | (b(24) & 0x0f);
        }
    }
}

/// The default CHS translation of IDENTIFY words 1, 3, 6 and 54-58 (16 heads, 63 sectors per
/// track, at most 16,383 cylinders, as drives above 8 GB report).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub cylinders: u16,
    pub heads: u8,
    pub sectors: u8,
}

impl Geometry {
    pub fn for_capacity(sectors: u64) -> Self {
        let cylinders = (sectors / (16 * 63)).clamp(1, 16383) as u16;
        Geometry {
            cylinders,
            heads: 16,
            sectors: 63,
        }
    }

    /// Sectors addressable through CHS.
    pub fn capacity(&self) -> u64 {
        u64::from(self.cylinders) * u64::from(self.heads) * u64::from(self.sectors)
    }

    /// The LBA of a CHS address, or None when a field is out of the geometry.
    pub fn to_lba(&self, cylinder: u16, head: u8, sector: u8) -> Option<u64> {
        if cylinder >= self.cylinders || head >= self.heads || sector == 0 || sector > self.sectors
        {
            return None;
        }
        Some(
            (u64::from(cylinder) * u64::from(self.heads) + u64::from(head))
                * u64::from(self.sectors)
                + u64::from(sector - 1),
        )
    }
}

/// What the drive is and how it is set up, as far as decoding a command needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DriveParams {
    /// Capacity in sectors.
    pub sectors: u64,
    pub geometry: Geometry,
    /// Sectors per DRQ block for READ/WRITE MULTIPLE; 0 while multiple mode is disabled.
    pub multiple: u8,
    pub read_only: bool,
}

/// How a read or write moves its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// PIO, one sector per DRQ block.
    Pio,
    /// PIO, `n` sectors per DRQ block (the multiple setting).
    PioMultiple(u8),
    /// Bus-master DMA.
    Dma,
}

/// A checked read or write: the whole range lies on the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub lba: u64,
    pub sectors: u32,
    pub protocol: Protocol,
    /// 48-bit command (errors report the address in both FIFO bytes).
    pub ext: bool,
}

impl Transfer {
    /// Sectors per DRQ block.
    pub fn block_sectors(&self) -> u32 {
        match self.protocol {
            Protocol::PioMultiple(n) => u32::from(n),
            _ => 1,
        }
    }
}

/// Transfer modes selectable with SET FEATURES 03h (the value goes in the sector count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferMode {
    /// 00h or 01h: PIO default mode (01h also disables IORDY).
    PioDefault,
    /// 08h + n: PIO flow-control mode n.
    Pio(u8),
    /// 20h + n: multiword DMA mode n.
    Mwdma(u8),
    /// 40h + n: Ultra DMA mode n.
    Udma(u8),
}

impl TransferMode {
    pub fn decode(v: u8) -> Option<Self> {
        let n = v & 0x07;
        match v >> 3 {
            0 if v <= 1 => Some(TransferMode::PioDefault),
            1 if n <= MAX_PIO => Some(TransferMode::Pio(n)),
            4 if n <= MAX_MWDMA => Some(TransferMode::Mwdma(n)),
            8 if n <= MAX_UDMA => Some(TransferMode::Udma(n)),
            _ => None,
        }
    }
}

/// SET FEATURES subcommands the drive accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    TransferMode(TransferMode),
    WriteCache(bool),
    ReadLookAhead(bool),
}

/// Power-management commands (ATA-6 6.9): immediate or with a standby timer, which this drive
/// accepts and does not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Power {
    Idle,
    Standby,
    Sleep,
}

/// A decoded command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Identify,
    Read(Transfer),
    Write(Transfer),
    Flush,
    SetFeatures(Feature),
    /// Sectors per block; 0 disables multiple mode.
    SetMultiple(u8),
    Power(Power),
    CheckPowerMode,
    ExecuteDiagnostic,
}

/// The error a command ends with, as the error register shows it.
#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// Unsupported command or parameter (ABRT).
    #[error("command aborted")]
    Abort,
    /// Address outside the user-accessible range (IDNF; ATA-6 reports IDNF or ABRT, not both).
    #[error("address out of range")]
    IdNotFound,
    /// The medium could not be read (UNC).
    #[error("uncorrectable read error")]
    Uncorrectable,
}

impl Error {
    pub fn bits(self) -> u8 {
        match self {
            Error::Abort => ER_ABRT,
            Error::IdNotFound => ER_IDNF,
            Error::Uncorrectable => ER_UNC,
        }
    }
}

impl Command {
    /// Decodes `opcode` against the registers and the drive.
    pub fn parse(opcode: u8, tf: &TaskFile, p: &DriveParams) -> Result<Command, Error> {
        use op::*;
        let rw = |write: bool, ext: bool, protocol: Protocol| -> Result<Command, Error> {
            if write && p.read_only {
                return Err(Error::Abort);
            }
            let t = transfer(tf, p, ext, protocol)?;
            Ok(if write {
                Command::Write(t)
            } else {
                Command::Read(t)
            })
        };
        let multiple = || match p.multiple {
            0 => Err(Error::Abort), // READ/WRITE MULTIPLE before SET MULTIPLE MODE: ABRT
            n => Ok(Protocol::PioMultiple(n)),
        };
        match opcode {
            IDENTIFY_DEVICE => Ok(Command::Identify),
            READ_SECTORS | READ_SECTORS_NORETRY => rw(false, false, Protocol::Pio),
            READ_SECTORS_EXT => rw(false, true, Protocol::Pio),
            WRITE_SECTORS | WRITE_SECTORS_NORETRY => rw(true, false, Protocol::Pio),
            WRITE_SECTORS_EXT => rw(true, true, Protocol::Pio),
            READ_MULTIPLE => rw(false, false, multiple()?),
            READ_MULTIPLE_EXT => rw(false, true, multiple()?),
            WRITE_MULTIPLE => rw(true, false, multiple()?),
            WRITE_MULTIPLE_EXT => rw(true, true, multiple()?),
            READ_DMA | READ_DMA_NORETRY => rw(false, false, Protocol::Dma),
            READ_DMA_EXT => rw(false, true, Protocol::Dma),
            WRITE_DMA | WRITE_DMA_NORETRY => rw(true, false, Protocol::Dma),
            WRITE_DMA_EXT => rw(true, true, Protocol::Dma),
            FLUSH_CACHE | FLUSH_CACHE_EXT => Ok(Command::Flush),
            SET_FEATURES => set_features(tf),
            SET_MULTIPLE_MODE => {
                let n = (tf.count & 0xff) as u8;
                // A power of two up to word 47's maximum; 0 disables multiple mode.
                if n == 0 || (n.is_power_of_two() && n <= MAX_MULTIPLE) {
                    Ok(Command::SetMultiple(n))
                } else {
                    Err(Error::Abort)
                }
            }
            IDLE | IDLE_IMMEDIATE | IDLE_OLD | IDLE_IMMEDIATE_OLD => {
                Ok(Command::Power(Power::Idle))
            }
            STANDBY | STANDBY_IMMEDIATE | STANDBY_OLD | STANDBY_IMMEDIATE_OLD => {
                Ok(Command::Power(Power::Standby))
            }
            SLEEP | SLEEP_OLD => Ok(Command::Power(Power::Sleep)),
            CHECK_POWER_MODE | CHECK_POWER_MODE_OLD => Ok(Command::CheckPowerMode),
            EXECUTE_DEVICE_DIAGNOSTIC => Ok(Command::ExecuteDiagnostic),
            // Not a packet device: IDENTIFY PACKET DEVICE and PACKET abort like everything
            // else this drive does not implement.
            _ => Err(Error::Abort),
        }
    }
}

fn set_features(tf: &TaskFile) -> Result<Command, Error> {
    let f = match (tf.feature & 0xff) as u8 {
        feature::SET_TRANSFER_MODE => Feature::TransferMode(
            TransferMode::decode((tf.count & 0xff) as u8).ok_or(Error::Abort)?,
        ),
        feature::ENABLE_WRITE_CACHE => Feature::WriteCache(true),
        feature::DISABLE_WRITE_CACHE => Feature::WriteCache(false),
        feature::ENABLE_LOOK_AHEAD => Feature::ReadLookAhead(true),
        feature::DISABLE_LOOK_AHEAD => Feature::ReadLookAhead(false),
        _ => return Err(Error::Abort),
    };
    Ok(Command::SetFeatures(f))
}

/// Start and length of a read or write, checked against the disk: LBA28 commands reach only
/// the first 0x0FFFFFFF sectors, CHS commands only the translated cylinders.
fn transfer(
    tf: &TaskFile,
    p: &DriveParams,
    ext: bool,
    protocol: Protocol,
) -> Result<Transfer, Error> {
    let (lba, sectors, limit) = if ext {
        (tf.lba48(), tf.count48(), p.sectors)
    } else if tf.device & DEV_LBA != 0 {
        (tf.lba28(), tf.count28(), p.sectors.min(LBA28_LIMIT))
    } else {
        let cylinder = u16::from_le_bytes([tf.lba_mid as u8, tf.lba_high as u8]);
        let lba = p
            .geometry
            .to_lba(cylinder, tf.device & 0x0f, tf.lba_low as u8)
            .ok_or(Error::IdNotFound)?;
        (lba, tf.count28(), p.sectors.min(p.geometry.capacity()))
    };
    match lba.checked_add(u64::from(sectors)) {
        Some(end) if end <= limit => Ok(Transfer {
            lba,
            sectors,
            protocol,
            ext,
        }),
        _ => Err(Error::IdNotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(sectors: u64) -> DriveParams {
        DriveParams {
            sectors,
            geometry: Geometry::for_capacity(sectors),
            multiple: 0,
            read_only: false,
        }
    }

    fn tf48(lba: u64, count: u16) -> TaskFile {
        let mut tf = TaskFile {
            device: DEV_LBA,
            ..Default::default()
        };
        tf.set_lba(lba, true);
        tf.count = count;
        tf
    }

    #[test]
    fn fifo_registers_keep_the_previous_byte_for_hob() {
        let mut r = 0u16;
        TaskFile::push(&mut r, 0x12);
        TaskFile::push(&mut r, 0x34);
        assert_eq!(
            (TaskFile::byte(r, false), TaskFile::byte(r, true)),
            (0x34, 0x12)
        );
    }

    #[test]
    fn lba48_takes_previous_bytes_as_high_order() {
        let tf = tf48(0x0000_a1b2_c3d4_e5f6, 0);
        assert_eq!(tf.lba48(), 0xa1b2_c3d4_e5f6);
        assert_eq!(tf.count48(), 65536);
    }

    #[test]
    fn lba28_uses_device_low_nibble_and_count_zero_is_256() {
        let tf = TaskFile {
            lba_low: 0xff04,
            lba_mid: 0xff03,
            lba_high: 0xff02,
            device: 0xe1,
            count: 0x1200,
            ..Default::default()
        };
        assert_eq!(tf.lba28(), 0x0102_0304);
        assert_eq!(tf.count28(), 256);
    }

    #[test]
    fn range_is_checked_against_capacity_and_the_lba28_limit() {
        let p = params(1000);
        let ok = Command::parse(op::READ_DMA_EXT, &tf48(999, 1), &p);
        let past = Command::parse(op::READ_DMA_EXT, &tf48(999, 2), &p);
        let huge = Command::parse(
            op::READ_DMA_EXT,
            &tf48(LBA48_LIMIT - 1, 2),
            &params(LBA48_LIMIT),
        );
        assert!(matches!(
            ok,
            Ok(Command::Read(Transfer {
                lba: 999,
                sectors: 1,
                ..
            }))
        ));
        assert_eq!(past, Err(Error::IdNotFound));
        assert_eq!(huge, Err(Error::IdNotFound));

        let mut tf = TaskFile {
            device: DEV_LBA | 0x0f,
            lba_low: 0xff,
            lba_mid: 0xff,
            lba_high: 0xfe,
            count: 1,
            ..Default::default()
        };
        let big = params(1 << 40);
        assert!(Command::parse(op::READ_SECTORS, &tf, &big).is_ok());
        tf.lba_high = 0xff; // 0x0FFFFFFF is beyond what words 60-61 report
        assert_eq!(
            Command::parse(op::READ_SECTORS, &tf, &big),
            Err(Error::IdNotFound)
        );
    }

    #[test]
    fn chs_addresses_translate_and_sector_zero_is_idnf() {
        let p = params(16 * 63 * 10);
        let tf = TaskFile {
            device: 0x02, // head 2, CHS
            lba_low: 5,   // sector 5
            lba_mid: 3,   // cylinder 3
            count: 1,
            ..Default::default()
        };
        let zero = TaskFile { lba_low: 0, ..tf };
        assert!(matches!(
            Command::parse(op::READ_SECTORS, &tf, &p),
            Ok(Command::Read(Transfer { lba, .. })) if lba == (3 * 16 + 2) * 63 + 4
        ));
        assert_eq!(
            Command::parse(op::READ_SECTORS, &zero, &p),
            Err(Error::IdNotFound)
        );
    }

    #[test]
    fn multiple_commands_need_set_multiple_and_powers_of_two() {
        let mut p = params(100);
        let tf = tf48(0, 4);
        assert_eq!(
            Command::parse(op::READ_MULTIPLE_EXT, &tf, &p),
            Err(Error::Abort)
        );
        p.multiple = 8;
        assert!(matches!(
            Command::parse(op::WRITE_MULTIPLE_EXT, &tf, &p),
            Ok(Command::Write(Transfer {
                protocol: Protocol::PioMultiple(8),
                ..
            }))
        ));
        for (n, ok) in [(0u16, true), (1, true), (16, true), (3, false), (32, false)] {
            let tf = TaskFile {
                count: n,
                ..Default::default()
            };
            assert_eq!(
                Command::parse(op::SET_MULTIPLE_MODE, &tf, &p).is_ok(),
                ok,
                "{n}"
            );
        }
    }

    #[test]
    fn set_features_decodes_transfer_modes_and_refuses_others() {
        let sf = |f: u8, c: u8| {
            let tf = TaskFile {
                feature: f.into(),
                count: c.into(),
                ..Default::default()
            };
            Command::parse(op::SET_FEATURES, &tf, &params(1))
        };
        assert_eq!(
            sf(3, 0x45),
            Ok(Command::SetFeatures(Feature::TransferMode(
                TransferMode::Udma(5)
            )))
        );
        assert_eq!(
            sf(3, 0x22),
            Ok(Command::SetFeatures(Feature::TransferMode(
                TransferMode::Mwdma(2)
            )))
        );
        assert_eq!(
            sf(3, 0x0c),
            Ok(Command::SetFeatures(Feature::TransferMode(
                TransferMode::Pio(4)
            )))
        );
        assert_eq!(
            sf(3, 0x01),
            Ok(Command::SetFeatures(Feature::TransferMode(
                TransferMode::PioDefault
            )))
        );
        assert_eq!(
            sf(0x82, 0),
            Ok(Command::SetFeatures(Feature::WriteCache(false)))
        );
        for (f, c) in [(3, 0x46), (3, 0x23), (3, 0x0d), (3, 0x10), (0x66, 0)] {
            assert_eq!(sf(f, c), Err(Error::Abort), "{f:#x}/{c:#x}");
        }
    }

    #[test]
    fn writes_to_a_read_only_disk_and_packet_commands_abort() {
        let mut p = params(100);
        p.read_only = true;
        let tf = tf48(0, 1);
        assert_eq!(
            Command::parse(op::WRITE_DMA_EXT, &tf, &p),
            Err(Error::Abort)
        );
        assert!(Command::parse(op::READ_DMA_EXT, &tf, &p).is_ok());
        assert_eq!(
            Command::parse(op::IDENTIFY_PACKET_DEVICE, &tf, &p),
            Err(Error::Abort)
        );
        assert_eq!(Command::parse(op::PACKET, &tf, &p), Err(Error::Abort));
    }
}
