//! The contract between a VMM and the probe guest: where things are in guest memory, the boot
//! information block the VMM (or the probe's own PVH stub, under another VMM) fills in, and the
//! ports of vmbench's side channels. Shared by the VMM and the probe so the two cannot drift;
//! the Linux agent uses it for what its records share with the probe's (the record prefix, the
//! block pattern, the latency summary).
#![no_std]

/// Guest-physical layout of the low megabytes. Everything is identity-mapped.
pub mod layout {
    /// GDT (and the TSS right after it) set up by whoever starts the probe.
    pub const GDT: u64 = 0x1000;
    pub const TSS: u64 = 0x1800;
    /// The [`super::BootInfo`] block.
    pub const BOOT_INFO: u64 = 0x5000;
    /// Kernel command line copied by the PVH stub (QEMU `-append`), NUL-terminated.
    pub const CMDLINE: u64 = 0x6000;
    pub const CMDLINE_MAX: u64 = 0x1000;
    /// The interrupt descriptor table (256 16-byte gates, all absent at start; IDTR points
    /// here): the probe installs the gates it uses itself (it cannot load IDTR at CPL3).
    pub const IDT: u64 = 0x8000;
    pub const IDT_SIZE: u64 = 256 * 16;
    /// Page tables: PML4, PDPT, then one page directory per GiB mapped.
    pub const PML4: u64 = 0x10000;
    pub const PDPT: u64 = 0x11000;
    pub const PD: u64 = 0x12000;
    /// Page directories available (one GiB each): RAM and the 32-bit MMIO hole up to 64 GiB.
    pub const MAX_PD: u64 = 64;
    /// Mailbox pages, one per vCPU (vmbench's VMM only).
    pub const MAILBOX: u64 = 0x80000;
    pub const MAILBOX_SIZE: u64 = 0x1000;
    pub const MAX_VCPUS: u64 = 32;
    /// The probe image is linked here.
    pub const PROBE_BASE: u64 = 0x10_0000;
    /// The image must end below this.
    pub const PROBE_LIMIT: u64 = 0x20_0000;
    /// Per-vCPU stacks: vCPU i's stack top is `STACKS + (i + 1) * STACK_SIZE`.
    pub const STACKS: u64 = 0x20_0000;
    pub const STACK_SIZE: u64 = 0x1_0000;
    /// Free memory for the probe's buffers starts here.
    pub const HEAP: u64 = 0x40_0000;
    /// Smallest guest memory the probe can run in.
    pub const MIN_MEM: u64 = 8 << 20;
    /// RAM above this is placed above 4 GiB; `[MMIO_HOLE, 4 GiB)` is for devices.
    pub const MMIO_HOLE: u64 = 0xC000_0000;
    /// PCI BAR window inside the hole.
    pub const PCI_MMIO: u64 = 0xC000_0000;
    pub const PCI_MMIO_SIZE: u64 = 0x2000_0000;
    /// vmbench platform MMIO (calibration targets).
    pub const PLATFORM_MMIO: u64 = 0xF000_0000;
}

/// I/O ports.
pub mod ports {
    /// QEMU's isa-debug-exit convention as vmbench uses it (`iobase=0xf4,iosize=4`): writing
    /// `v` ends the VM with status `(v << 1) | 1`.
    pub const DEBUG_EXIT: u16 = 0xf4;
    pub const COM1: u16 = 0x3f8;
    pub const PCI_CONFIG_ADDRESS: u16 = 0xcf8;
    pub const PCI_CONFIG_DATA: u16 = 0xcfc;
    /// PIT channel 2 and its gate, for TSC calibration where no VMM tells the frequency.
    pub const PIT_CH2: u16 = 0x42;
    pub const PIT_CMD: u16 = 0x43;
    pub const PIT_GATE: u16 = 0x61;
}

/// `BootInfo::magic`.
pub const BOOT_MAGIC: u64 = u64::from_le_bytes(*b"VMBPROBE");
pub const BOOT_VERSION: u32 = 1;
/// The longest exec text (workload and arguments) the probe takes, in bytes: its
/// [`BootInfo::exec`] field holds it and a terminating NUL. The VMM, the QEMU engine (whose
/// `-append` command line the probe copies into the same field) and the scenario model all
/// check against this.
pub const EXEC_MAX: usize = 127;

/// Workload arguments' limits: the probe refuses a value outside them (an error record), and
/// the scenario model offers no more.
pub mod limits {
    /// Frames queued per notification (`net-tx batch=`).
    pub const NET_TX_BATCH_MAX: u64 = 128;
    /// Block requests in flight (`blk-read`/`blk-write qd=`).
    pub const BLK_QUEUE_DEPTH_MAX: u64 = 128;
}

/// `BootInfo::flags`.
pub mod flags {
    /// Started by vmbench's VMM (else: by the PVH stub under another VMM).
    pub const VMBENCH: u32 = 1 << 0;
    /// Per-vCPU mailbox pages and a doorbell port exist.
    pub const MAILBOX: u32 = 1 << 1;
    /// `calib_ioeventfd` is an address backed by an ioeventfd.
    pub const IOEVENTFD: u32 = 1 << 2;
}

/// Filled in before the first guest instruction; read-only for the probe.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BootInfo {
    pub magic: u64,
    pub version: u32,
    pub flags: u32,
    /// Bytes of RAM.
    pub mem_size: u64,
    pub vcpus: u32,
    /// TSC frequency; 0 means unknown (the probe calibrates it against the PIT).
    pub tsc_khz: u32,
    /// Port written once by each vCPU at its first instruction (0: none).
    pub entry_mark_port: u16,
    /// Mailbox doorbell: `out` of the record length, the record in this vCPU's mailbox page.
    pub mailbox_port: u16,
    /// A port that answers and does nothing: one PIO exit round trip.
    pub calib_port: u16,
    pub _pad: u16,
    /// An MMIO address that answers and does nothing: one MMIO exit round trip.
    pub calib_mmio: u64,
    /// An MMIO address backed by an ioeventfd (see `flags::IOEVENTFD`).
    pub calib_ioeventfd: u64,
    /// What to run, as text (`calibrate`, `hello`, ... with arguments), NUL-padded.
    pub exec: [u8; EXEC_MAX + 1],
}

impl BootInfo {
    pub const fn zeroed() -> Self {
        BootInfo {
            magic: 0,
            version: 0,
            flags: 0,
            mem_size: 0,
            vcpus: 0,
            tsc_khz: 0,
            entry_mark_port: 0,
            mailbox_port: 0,
            calib_port: 0,
            _pad: 0,
            calib_mmio: 0,
            calib_ioeventfd: 0,
            exec: [0; EXEC_MAX + 1],
        }
    }

    /// The exec text up to the first NUL.
    pub fn exec_str(&self) -> &str {
        let n = self
            .exec
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.exec.len());
        core::str::from_utf8(&self.exec[..n]).unwrap_or("")
    }
}

/// Records start with this on a line of their own (serial) or a mailbox message.
pub const RECORD_PREFIX: &str = "@vmb ";

/// `debug-exit` values the probe uses.
pub mod exit {
    pub const OK: u32 = 0;
    pub const FAILED: u32 = 1;
    pub const BAD_EXEC: u32 = 2;
}

/// The byte the `blk-pattern` workload writes at disk offset `offset` for `seed`; the host
/// checks disk images against the same function.
pub const fn pattern_byte(seed: u64, offset: u64) -> u8 {
    let x = (offset ^ seed.rotate_left(17)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 56) as u8
}

/// The summary fields of a `latency` record (the probe's and the Linux agent's), which follow
/// its `n` and `dropped`: sorts `samples`, then gives their mean, min, p50, p90, p99, p999
/// and max (all 0 without samples). The p-th permille is the sample of rank (n - 1) * p / 1000.
pub fn latency_summary(samples: &mut [u64]) -> [(&'static str, u64); 7] {
    samples.sort_unstable();
    let n = samples.len();
    let permille = |p: usize| {
        if n == 0 {
            0
        } else {
            samples[(n - 1) * p / 1000]
        }
    };
    let mean = if n == 0 {
        0
    } else {
        samples.iter().sum::<u64>() / n as u64
    };
    [
        ("mean", mean),
        ("min", permille(0)),
        ("p50", permille(500)),
        ("p90", permille(900)),
        ("p99", permille(990)),
        ("p999", permille(999)),
        ("max", permille(1000)),
    ]
}

#[cfg(test)]
mod tests {
    use super::latency_summary;

    #[test]
    fn a_latency_summary_sorts_and_ranks_the_samples() {
        let mut s: [u64; 10] = [90, 10, 100, 20, 80, 30, 70, 40, 60, 50];
        assert_eq!(
            latency_summary(&mut s),
            [
                ("mean", 55),
                ("min", 10),
                ("p50", 50),
                ("p90", 90),
                ("p99", 90),
                ("p999", 90),
                ("max", 100),
            ]
        );
        assert_eq!(s, [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
        assert!(latency_summary(&mut []).iter().all(|&(_, v)| v == 0));
    }
}
