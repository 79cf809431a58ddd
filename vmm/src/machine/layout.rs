//! Where things sit in a machine's address spaces: vmbench's own ports and calibration
//! addresses, the PCI slots and their INTx wiring, and the allocator that hands out BAR
//! addresses in the PCI windows. Pure arithmetic, tested without KVM.

use probe_abi::layout;

/// vmbench's own ports (outside any device a guest expects), told to the probe in its boot
/// information rather than hard-coded there.
pub const ENTRY_MARK_PORT: u16 = 0x4f0;
pub const MAILBOX_PORT: u16 = 0x4f4;
pub const CALIB_PORT: u16 = 0x4f8;
pub const CALIB_MMIO: u64 = layout::PLATFORM_MMIO;
pub const CALIB_IOEVENTFD: u64 = layout::PLATFORM_MMIO + 0x1000;
/// The UART's ISA interrupt line.
pub const COM1_IRQ: u32 = 4;

/// PCI slots: the host bridge is 00:00.0.
pub const NIC_SLOT: u8 = 3;
pub const DISK_SLOT: u8 = 4;

/// I/O BARs go above the legacy ISA ports, as on a PC.
pub const PCI_IO_BASE: u64 = 0xc000;
const PCI_IO_END: u64 = 0x1_0000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("the PCI {0} window is full")]
    Full(&'static str),
    #[error("BAR size {0:#x} is not a power of two")]
    Size(u64),
}

/// The INTx GSI of a slot: IOAPIC pins 16-23, INTA# swizzled by slot as on a PC.
pub fn intx_gsi(slot: u8) -> u32 {
    16 + u32::from(slot % 8)
}

/// Hands out naturally aligned BAR addresses: MMIO in the 32-bit PCI window, ports from
/// [`PCI_IO_BASE`]. Addresses are never reused (BARs are allocated once, at build time).
pub struct BarAllocator {
    mmio: Window,
    io: Window,
}

struct Window {
    next: u64,
    end: u64,
    name: &'static str,
}

impl Window {
    fn take(&mut self, size: u64) -> Result<u64, Error> {
        if !size.is_power_of_two() {
            return Err(Error::Size(size));
        }
        let base = self.next.next_multiple_of(size);
        match base.checked_add(size) {
            Some(end) if end <= self.end => {
                self.next = end;
                Ok(base)
            }
            _ => Err(Error::Full(self.name)),
        }
    }
}

impl Default for BarAllocator {
    fn default() -> Self {
        BarAllocator {
            mmio: Window {
                next: layout::PCI_MMIO,
                end: layout::PCI_MMIO + layout::PCI_MMIO_SIZE,
                name: "MMIO",
            },
            io: Window {
                next: PCI_IO_BASE,
                end: PCI_IO_END,
                name: "I/O",
            },
        }
    }
}

impl BarAllocator {
    /// A memory BAR of `size` bytes (a power of two).
    pub fn mmio(&mut self, size: u64) -> Result<u64, Error> {
        self.mmio.take(size)
    }

    /// An I/O BAR of `size` ports (a power of two).
    pub fn io(&mut self, size: u64) -> Result<u64, Error> {
        self.io.take(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_abi::ports;

    #[test]
    fn bars_are_naturally_aligned_and_never_overlap() {
        let mut bars = BarAllocator::default();

        let a = bars.mmio(0x1000).unwrap();
        let b = bars.mmio(0x2_0000).unwrap();
        let c = bars.mmio(0x1000).unwrap();
        let p = bars.io(0x40).unwrap();
        let q = bars.io(0x10).unwrap();

        assert_eq!(a, layout::PCI_MMIO);
        assert_eq!(b % 0x2_0000, 0);
        assert!(b >= a + 0x1000 && c >= b + 0x2_0000);
        assert_eq!((p, q), (PCI_IO_BASE, PCI_IO_BASE + 0x40));
    }

    #[test]
    fn a_full_window_is_an_error_not_a_wrap() {
        let mut bars = BarAllocator::default();

        let whole = bars.mmio(layout::PCI_MMIO_SIZE);
        let past = bars.mmio(0x1000);
        let io_first = bars.io(0x2000);
        let io_second = bars.io(0x2000);
        let io_third = bars.io(0x2000);
        let io_huge = bars.io(1 << 63);

        assert_eq!(whole, Ok(layout::PCI_MMIO));
        assert_eq!(past, Err(Error::Full("MMIO")));
        assert_eq!(io_first, Ok(0xc000));
        assert_eq!(io_second, Ok(0xe000));
        assert_eq!(io_third, Err(Error::Full("I/O")));
        assert_eq!(io_huge, Err(Error::Full("I/O")));
    }

    #[test]
    fn bar_sizes_must_be_powers_of_two() {
        let mut bars = BarAllocator::default();
        assert_eq!(bars.mmio(0x3000), Err(Error::Size(0x3000)));
        assert_eq!(bars.io(0), Err(Error::Size(0)));
    }

    #[test]
    fn slots_get_distinct_ioapic_pins() {
        assert_eq!(intx_gsi(NIC_SLOT), 19);
        assert_eq!(intx_gsi(DISK_SLOT), 20);
        assert!((0..32).map(intx_gsi).all(|g| (16..24).contains(&g)));
    }

    #[test]
    fn vmbench_ports_clear_the_devices_a_guest_expects_and_the_bar_window() {
        // (base, length) of every fixed port range a machine registers.
        let mut fixed = vec![
            (u64::from(ports::COM1), 8),
            (u64::from(ports::DEBUG_EXIT), 4),
            (u64::from(ports::PCI_CONFIG_ADDRESS), 8),
            (u64::from(ENTRY_MARK_PORT), 1),
            (u64::from(MAILBOX_PORT), 4),
            (u64::from(CALIB_PORT), 4),
        ];
        fixed.extend(crate::devices::ide::LEGACY_RANGES);
        for (i, &(a, alen)) in fixed.iter().enumerate() {
            assert!(a + alen <= PCI_IO_BASE, "{a:#x} is in the BAR window");
            for &(b, blen) in &fixed[i + 1..] {
                assert!(a + alen <= b || b + blen <= a, "{a:#x} overlaps {b:#x}");
            }
        }
        // The calibration MMIO pages are outside the BAR window.
        let window = layout::PCI_MMIO..layout::PCI_MMIO + layout::PCI_MMIO_SIZE;
        assert!(!window.contains(&CALIB_MMIO) && !window.contains(&CALIB_IOEVENTFD));
    }
}
