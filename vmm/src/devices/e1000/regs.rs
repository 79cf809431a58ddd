//! 82540EM register offsets and bits (8254x Software Developer's Manual, section 13), and the
//! table of which registers exist and which of their bits software may write. Offsets not in the
//! table read as zero and ignore writes, as on the real part.

// General.
pub const CTRL: u32 = 0x0000;
pub const STATUS: u32 = 0x0008;
pub const EECD: u32 = 0x0010;
pub const EERD: u32 = 0x0014;
pub const CTRL_EXT: u32 = 0x0018;
pub const FLA: u32 = 0x001c;
pub const MDIC: u32 = 0x0020;
pub const FCAL: u32 = 0x0028;
pub const FCAH: u32 = 0x002c;
pub const FCT: u32 = 0x0030;
pub const VET: u32 = 0x0038;
pub const FCTTV: u32 = 0x0170;
pub const TXCW: u32 = 0x0178;
pub const RXCW: u32 = 0x0180;
pub const LEDCTL: u32 = 0x0e00;
pub const PBA: u32 = 0x1000;

// Interrupts.
pub const ICR: u32 = 0x00c0;
pub const ITR: u32 = 0x00c4;
pub const ICS: u32 = 0x00c8;
pub const IMS: u32 = 0x00d0;
pub const IMC: u32 = 0x00d8;

// Receive.
pub const RCTL: u32 = 0x0100;
pub const FCRTL: u32 = 0x2160;
pub const FCRTH: u32 = 0x2168;
pub const RDBAL: u32 = 0x2800;
pub const RDBAH: u32 = 0x2804;
pub const RDLEN: u32 = 0x2808;
pub const RDH: u32 = 0x2810;
pub const RDT: u32 = 0x2818;
pub const RDTR: u32 = 0x2820;
pub const RXDCTL: u32 = 0x2828;
pub const RADV: u32 = 0x282c;
pub const RSRPD: u32 = 0x2c00;
pub const RXCSUM: u32 = 0x5000;
pub const MTA: u32 = 0x5200;
pub const RAL0: u32 = 0x5400;
pub const RAH0: u32 = 0x5404;
pub const VFTA: u32 = 0x5600;

// Transmit.
pub const TCTL: u32 = 0x0400;
pub const TIPG: u32 = 0x0410;
pub const AIFS: u32 = 0x0458;
pub const TDBAL: u32 = 0x3800;
pub const TDBAH: u32 = 0x3804;
pub const TDLEN: u32 = 0x3808;
pub const TDH: u32 = 0x3810;
pub const TDT: u32 = 0x3818;
pub const TIDV: u32 = 0x3820;
pub const TXDCTL: u32 = 0x3828;
pub const TADV: u32 = 0x382c;
pub const TSPMT: u32 = 0x3830;

// Wake-up and manageability (stored, no behaviour).
pub const WUC: u32 = 0x5800;
pub const WUFC: u32 = 0x5808;
pub const WUS: u32 = 0x5810;
pub const MANC: u32 = 0x5820;

// Statistics: 0x4000..=0x40fc, all clear-on-read.
pub const STATS_START: u32 = 0x4000;
pub const STATS_END: u32 = 0x40fc;
pub const MPC: u32 = 0x4010;
pub const PRC64: u32 = 0x405c;
pub const GPRC: u32 = 0x4074;
pub const BPRC: u32 = 0x4078;
pub const MPRC: u32 = 0x407c;
pub const GPTC: u32 = 0x4080;
pub const GORCL: u32 = 0x4088;
pub const GORCH: u32 = 0x408c;
pub const GOTCL: u32 = 0x4090;
pub const GOTCH: u32 = 0x4094;
pub const RNBC: u32 = 0x40a0;
pub const RUC: u32 = 0x40a4;
pub const ROC: u32 = 0x40ac;
pub const TORL: u32 = 0x40c0;
pub const TORH: u32 = 0x40c4;
pub const TOTL: u32 = 0x40c8;
pub const TOTH: u32 = 0x40cc;
pub const TPR: u32 = 0x40d0;
pub const TPT: u32 = 0x40d4;
pub const PTC64: u32 = 0x40d8;
pub const MPTC: u32 = 0x40f0;
pub const BPTC: u32 = 0x40f4;
pub const TSCTC: u32 = 0x40f8;
pub const TSCTFC: u32 = 0x40fc;

/// Size of the memory BAR (and of the register space the I/O window reaches).
pub const MMIO_SIZE: u64 = 0x2_0000;

/// Builds [`COUNTED`]: each register with the names its reads and writes are counted under.
macro_rules! counted {
    ($($reg:ident),* $(,)?) => {
        [$(($reg, concat!("read:", stringify!($reg)), concat!("write:", stringify!($reg)))),*]
    };
}

/// The registers whose accesses the device counts one by one, each with the counter names of
/// its reads and writes: what a driver touches per packet (interrupt causes and masks, ring
/// tails and heads, moderation timers) and the set-up registers a driver may poll. Every other
/// access falls in [`REG_STATS`] (the statistics block a driver's watchdog reads), in
/// [`REG_IOADDR`] (the I/O window's address register) or in [`REG_OTHER`].
pub const COUNTED: [(u32, &str, &str); 21] = counted!(
    CTRL, STATUS, EECD, EERD, CTRL_EXT, MDIC, ICR, ITR, ICS, IMS, IMC, RCTL, TCTL, RDH, RDT, RDTR,
    RADV, TDH, TDT, TIDV, TADV,
);
/// Counter slots after [`COUNTED`]'s.
pub const REG_STATS: usize = COUNTED.len();
pub const REG_IOADDR: usize = COUNTED.len() + 1;
pub const REG_OTHER: usize = COUNTED.len() + 2;
/// All register counter slots, and their names (reads, then writes).
pub const REG_SLOTS: usize = COUNTED.len() + 3;
pub const REG_EXTRA_NAMES: [(&str, &str); 3] = [
    ("read:stats", "write:stats"),
    ("read:IOADDR", "write:IOADDR"),
    ("read:other", "write:other"),
];

/// The counter slot of an access to register `off` (a dword offset in the BAR).
pub fn counter_slot(off: u32) -> usize {
    if let Some(i) = COUNTED.iter().position(|&(r, ..)| r == off) {
        i
    } else if (STATS_START..=STATS_END).contains(&off) {
        REG_STATS
    } else {
        REG_OTHER
    }
}

/// The counter names of slot `i`: (reads, writes).
pub fn slot_names(i: usize) -> (&'static str, &'static str) {
    match COUNTED.get(i) {
        Some(&(_, r, w)) => (r, w),
        None => REG_EXTRA_NAMES[(i - COUNTED.len()).min(REG_EXTRA_NAMES.len() - 1)],
    }
}
/// Size of the I/O BAR: IOADDR at 0, IODATA at 4, the rest reserved.
pub const IO_SIZE: u64 = 0x40;

// CTRL bits.
pub const CTRL_FD: u32 = 1 << 0;
pub const CTRL_SLU: u32 = 1 << 6;
pub const CTRL_SPD_1000: u32 = 2 << 8;
pub const CTRL_RST: u32 = 1 << 26;
/// Receive and transmit flow control (802.3x PAUSE) enabled.
pub const CTRL_RFCE: u32 = 1 << 27;
pub const CTRL_TFCE: u32 = 1 << 28;
pub const CTRL_VME: u32 = 1 << 30;
pub const CTRL_PHY_RST: u32 = 1 << 31;

// STATUS bits: full duplex, link up, 1000 Mb/s, and the auto-detected speed (ASDV) to match.
pub const STATUS_FD: u32 = 1 << 0;
pub const STATUS_LU: u32 = 1 << 1;
pub const STATUS_SPEED_1000: u32 = 2 << 6;
pub const STATUS_ASDV_1000: u32 = 2 << 8;

// Interrupt causes (ICR/ICS/IMS/IMC).
pub const ICR_TXDW: u32 = 1 << 0;
pub const ICR_TXQE: u32 = 1 << 1;
pub const ICR_LSC: u32 = 1 << 2;
pub const ICR_RXDMT0: u32 = 1 << 4;
pub const ICR_RXO: u32 = 1 << 6;
pub const ICR_RXT0: u32 = 1 << 7;
pub const ICR_MDAC: u32 = 1 << 9;
/// The causes the 82540EM implements (bits 0-16 minus reserved 5 and 8).
pub const ICR_VALID: u32 = 0x0001_fedf;

// RCTL bits.
pub const RCTL_EN: u32 = 1 << 1;
pub const RCTL_UPE: u32 = 1 << 3;
pub const RCTL_MPE: u32 = 1 << 4;
pub const RCTL_LPE: u32 = 1 << 5;
pub const RCTL_RDMTS_SHIFT: u32 = 8;
pub const RCTL_MO_SHIFT: u32 = 12;
pub const RCTL_BAM: u32 = 1 << 15;
pub const RCTL_BSIZE_SHIFT: u32 = 16;
pub const RCTL_VFE: u32 = 1 << 18;
pub const RCTL_BSEX: u32 = 1 << 25;
pub const RCTL_SECRC: u32 = 1 << 26;

// TCTL bits.
pub const TCTL_EN: u32 = 1 << 1;
pub const TCTL_PSP: u32 = 1 << 3;

// RDTR: flush partial descriptor block (write-only, self-clearing).
pub const RDTR_FPD: u32 = 1 << 31;

// RXCSUM bits.
pub const RXCSUM_IPOFL: u32 = 1 << 8;
pub const RXCSUM_TUOFL: u32 = 1 << 9;

// RAH bits.
pub const RAH_AV: u32 = 1 << 31;

/// Writable bits of a register that simply stores what software writes, or `None` when the
/// offset is not one this model treats as plain storage. Registers with side effects are
/// handled before this table is consulted.
pub fn plain_mask(off: u32) -> Option<u32> {
    Some(match off {
        CTRL_EXT => 0xffff_ffff,
        FLA => 0xffff_ffff,
        FCAL | FCTTV => 0xffff_ffff,
        FCAH | FCT | VET => 0x0000_ffff,
        TXCW => 0xc000_ffff,
        LEDCTL => 0xffff_ffff,
        ITR => 0x0000_ffff,
        FCRTL | FCRTH => 0x8000_fff8,
        // Ring bases are 16-byte aligned: the low four bits read zero.
        RDBAL | TDBAL => 0xffff_fff0,
        RDBAH | TDBAH => 0xffff_ffff,
        // Ring lengths are multiples of 128 bytes (bits 19:7).
        RDLEN | TDLEN => 0x000f_ff80,
        RDH | RDT | TDH | TDT => 0x0000_ffff,
        RADV | TIDV | TADV => 0x0000_ffff,
        RXDCTL | TXDCTL => 0x0101_3f3f,
        RSRPD => 0x0000_0fff,
        TIPG => 0x3fff_ffff,
        AIFS => 0x0000_ffff,
        TSPMT => 0xffff_ffff,
        RXCSUM => 0x0000_03ff,
        WUC | WUFC | WUS | MANC => 0xffff_ffff,
        _ if (MTA..MTA + 128 * 4).contains(&off) => 0xffff_ffff,
        _ if (VFTA..VFTA + 128 * 4).contains(&off) => 0xffff_ffff,
        _ if (RAL0..RAL0 + 16 * 8).contains(&off) => {
            if off & 4 == 0 {
                0xffff_ffff
            } else {
                0x8003_ffff // AV, address select, high 16 bits of the address
            }
        }
        _ => return None,
    })
}

/// Receive buffer size selected by RCTL.BSIZE and RCTL.BSEX (section 13.4.22). BSEX with
/// BSIZE 00 is reserved; the part then uses 2048 like BSIZE 00 without BSEX.
pub fn rx_buffer_size(rctl: u32) -> usize {
    let bsize = (rctl >> RCTL_BSIZE_SHIFT) & 3;
    match (rctl & RCTL_BSEX != 0, bsize) {
        (false, 0) => 2048,
        (false, 1) => 1024,
        (false, 2) => 512,
        (false, _) => 256,
        (true, 1) => 16384,
        (true, 2) => 8192,
        (true, 3) => 4096,
        (true, _) => 2048,
    }
}

/// Default register values after power-up or CTRL.RST (section 13, "initial value" columns).
pub fn defaults() -> Vec<(u32, u32)> {
    vec![
        (CTRL, CTRL_FD | CTRL_SLU | CTRL_SPD_1000),
        (LEDCTL, 0x0706_8302),
        (VET, 0x8100),
        (PBA, 0x0010_0030), // 48 KiB receive, 16 KiB transmit packet buffer
        (RXCSUM, RXCSUM_IPOFL),
        (TXCW, 0x0000_01a0),
        (TIPG, 0x0060_2008),
    ]
}
