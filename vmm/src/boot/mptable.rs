//! The Intel MultiProcessor table a Linux guest reads to find its processors, the IOAPIC and
//! how every interrupt line reaches it: ISA IRQs 0-15 to IOAPIC pins 0-15 (as KVM's default
//! GSI routes wire them), each PCI slot's INTA# to the pin `layout::intx_gsi` gives it.
//! Intel MultiProcessor Specification 1.4, chapter 4. Pure bytes, tested without KVM.
//!
//! Why an MP table and not ACPI: it is a few hundred bytes of fixed-layout records that say
//! exactly what Linux needs (CPUs, one IOAPIC, the ISA and PCI interrupt wiring) with no AML
//! interpreter in the loop; ACPI would add a DSDT with `_PRT` only to say the same thing. What
//! it cannot say (power buttons, sleep states) vmbench's guests do not use: a Linux guest that
//! powers off halts every CPU, which the VMM recognises (`machine::halt`), and one that
//! reboots or panics resets through the i8042 (`reboot=k`, docs/linux-boot.md).

use super::super::machine::layout::intx_gsi;

/// Where the floating pointer goes: the last KiB of base memory (the EBDA), the first place
/// Linux looks (`smp_scan_config(639 * 1024, 1024)`). The configuration table follows it.
pub const MPTABLE_START: u64 = 0x9fc00;
/// Bytes reserved at [`MPTABLE_START`] (to 640 KiB); the e820 map marks them reserved.
pub const MPTABLE_SIZE: u64 = 0x400;

pub const APIC_BASE: u32 = 0xfee0_0000;
pub const IOAPIC_BASE: u32 = 0xfec0_0000;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
/// IOAPIC input pins (KVM's in-kernel IOAPIC has 24).
const IOAPIC_PINS: u8 = 24;

const BUS_PCI: u8 = 0;
const BUS_ISA: u8 = 1;

const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;

const INT_VECTORED: u8 = 0;
const INT_NMI: u8 = 1;
const INT_EXTINT: u8 = 3;
/// Polarity and trigger "conform to the bus": edge/high on ISA, level/low on PCI.
const FLAGS_CONFORM: u16 = 0;

const CPU_ENABLED: u8 = 1;
const CPU_BSP: u8 = 2;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("{0} vCPUs do not fit in the MP table's space")]
    TooManyCpus(usize),
}

/// What the table describes.
pub struct MpTable {
    pub vcpus: usize,
    /// PCI slots whose INTA# is wired (each to `intx_gsi(slot)`).
    pub pci_slots: Vec<u8>,
    /// CPUID.1 EAX and EDX, copied into each processor entry.
    pub cpu_signature: u32,
    pub cpu_features: u32,
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |s, b| s.wrapping_add(*b))
        .wrapping_neg()
}

impl MpTable {
    /// The floating pointer and configuration table, to be written at [`MPTABLE_START`].
    pub fn bytes(&self) -> Result<Vec<u8>, Error> {
        let ioapic_id = u8::try_from(self.vcpus).map_err(|_| Error::TooManyCpus(self.vcpus))?;
        let mut entries: Vec<u8> = Vec::new();
        let mut count: u16 = 0;
        for id in 0..self.vcpus {
            let flags = CPU_ENABLED | if id == 0 { CPU_BSP } else { 0 };
            entries.extend([ENTRY_PROCESSOR, id as u8, APIC_VERSION, flags]);
            entries.extend(self.cpu_signature.to_le_bytes());
            entries.extend(self.cpu_features.to_le_bytes());
            entries.extend([0u8; 8]);
            count += 1;
        }
        for (id, name) in [(BUS_PCI, b"PCI   "), (BUS_ISA, b"ISA   ")] {
            entries.extend([ENTRY_BUS, id]);
            entries.extend(name);
            count += 1;
        }
        entries.extend([ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, 1]);
        entries.extend(IOAPIC_BASE.to_le_bytes());
        count += 1;
        let mut io_int = |kind: u8, bus: u8, irq: u8, pin: u8| {
            entries.push(ENTRY_IO_INTERRUPT);
            entries.push(kind);
            entries.extend(FLAGS_CONFORM.to_le_bytes());
            entries.extend([bus, irq, ioapic_id, pin]);
            count += 1;
        };
        // The 8259's output on pin 0 as ExtINT, then each ISA IRQ to the pin of its number
        // (IRQ 0, the PIT, included: KVM's default route sends GSI 0 to pin 0).
        for irq in 0..16u8 {
            io_int(INT_VECTORED, BUS_ISA, irq, irq);
        }
        for &slot in &self.pci_slots {
            let pin = intx_gsi(slot) as u8;
            debug_assert!(pin < IOAPIC_PINS);
            // Source IRQ: device number in bits 2-6, INTA# (0) in bits 0-1.
            io_int(INT_VECTORED, BUS_PCI, slot << 2, pin);
        }
        for (kind, lint) in [(INT_EXTINT, 0u8), (INT_NMI, 1)] {
            entries.push(ENTRY_LOCAL_INTERRUPT);
            entries.push(kind);
            entries.extend(FLAGS_CONFORM.to_le_bytes());
            entries.extend([BUS_ISA, 0, 0xff, lint]);
            count += 1;
        }

        const FLOATING: usize = 16;
        const HEADER: usize = 44;
        let table_len = HEADER + entries.len();
        if FLOATING as u64 + table_len as u64 > MPTABLE_SIZE {
            return Err(Error::TooManyCpus(self.vcpus));
        }
        let table_addr = MPTABLE_START as u32 + FLOATING as u32;

        let mut fp = Vec::with_capacity(FLOATING);
        fp.extend(b"_MP_");
        fp.extend(table_addr.to_le_bytes());
        fp.extend([1, 4, 0, 0, 0, 0, 0, 0]); // length in 16-byte units, revision 1.4
        fp[10] = checksum(&fp);

        let mut t = Vec::with_capacity(table_len);
        t.extend(b"PCMP");
        t.extend((table_len as u16).to_le_bytes());
        t.extend([4, 0]); // revision, checksum (below)
        t.extend(b"VMBENCH ");
        t.extend(b"VMBENCH-VMM ");
        t.extend(0u32.to_le_bytes()); // OEM table
        t.extend(0u16.to_le_bytes());
        t.extend(count.to_le_bytes());
        t.extend(APIC_BASE.to_le_bytes());
        t.extend([0u8; 4]); // extended table length, checksum, reserved
        debug_assert_eq!(t.len(), HEADER);
        t.extend(entries);
        t[7] = checksum(&t);

        fp.extend(t);
        Ok(fp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::layout::{DISK_SLOT, NIC_SLOT};

    fn table(vcpus: usize) -> Vec<u8> {
        MpTable {
            vcpus,
            pci_slots: vec![NIC_SLOT, DISK_SLOT],
            cpu_signature: 0x806f8,
            cpu_features: 0x178b_fbff,
        }
        .bytes()
        .unwrap()
    }

    #[test]
    fn both_parts_sum_to_zero_and_point_at_each_other() {
        let b = table(2);

        let fp = &b[..16];
        let t = &b[16..];
        let len = u16::from_le_bytes([t[4], t[5]]) as usize;

        assert_eq!(&fp[..4], b"_MP_");
        assert_eq!(fp.iter().fold(0u8, |s, x| s.wrapping_add(*x)), 0);
        assert_eq!(
            u32::from_le_bytes([fp[4], fp[5], fp[6], fp[7]]),
            MPTABLE_START as u32 + 16
        );
        assert_eq!(&t[..4], b"PCMP");
        assert_eq!(len, t.len());
        assert_eq!(t.iter().fold(0u8, |s, x| s.wrapping_add(*x)), 0);
    }

    #[test]
    fn entries_name_every_cpu_the_isa_irqs_and_each_slots_inta() {
        let b = table(2);
        let t = &b[16..];
        let count = u16::from_le_bytes([t[34], t[35]]) as usize;

        let mut at = 44;
        let mut cpus = Vec::new();
        let mut pci = Vec::new();
        let mut isa = 0;
        for _ in 0..count {
            match t[at] {
                ENTRY_PROCESSOR => {
                    cpus.push((t[at + 1], t[at + 3]));
                    at += 20;
                }
                ENTRY_IO_INTERRUPT => {
                    match t[at + 4] {
                        BUS_PCI => pci.push((t[at + 5] >> 2, t[at + 7])),
                        _ => isa += 1,
                    }
                    at += 8;
                }
                _ => at += 8,
            }
        }

        assert_eq!(at, t.len());
        assert_eq!(cpus, [(0, CPU_ENABLED | CPU_BSP), (1, CPU_ENABLED)]);
        assert_eq!(isa, 16);
        assert_eq!(pci, [(NIC_SLOT, 19), (DISK_SLOT, 20)]);
    }

    #[test]
    fn the_largest_machine_fits_its_space() {
        let n = probe_abi::layout::MAX_VCPUS as usize;
        assert!(table(n).len() as u64 <= MPTABLE_SIZE);
    }
}
