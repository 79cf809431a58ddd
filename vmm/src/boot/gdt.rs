//! The GDT the probe runs with: flat 64-bit code and data segments for CPL0 and CPL3 and a
//! TSS (which VMX entry requires even if the guest never switches stacks). Intel SDM vol. 3A, 3.4.5.
//!
//! Port I/O at CPL3 is allowed twice over: IOPL=3 in RFLAGS, which real VT-x/AMD-V hardware
//! honours, and an I/O permission bitmap in the TSS that allows every port, which is what
//! KVM-PVM consults (it runs the guest with the hardware IOPL forced to 0 and emulates the
//! trapped `in`/`out`, checking the guest's TSS bitmap, SDM vol. 1, 19.5.2).

use kvm_bindings::kvm_segment;

pub const KERNEL_CS: u16 = 0x08;
pub const KERNEL_DS: u16 = 0x10;
pub const USER_CS: u16 = 0x18 | 3;
pub const USER_DS: u16 = 0x20 | 3;
pub const TSS_SEL: u16 = 0x28;
/// The I/O permission bitmap follows the 104-byte TSS: 65536 bits, all clear (every port
/// allowed), then the 0xFF byte the architecture requires after it.
pub const TSS_IO_BITMAP: u32 = 0x68;
pub const TSS_LIMIT: u32 = TSS_IO_BITMAP + 0x2000;

/// A segment as KVM and the GDT both describe it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub selector: u16,
    pub base: u64,
    pub limit: u32,
    /// Descriptor type field (bits 40-43 of the descriptor).
    pub type_: u8,
    /// 1 for code/data, 0 for system segments.
    pub s: u8,
    pub dpl: u8,
    pub l: u8,
    pub db: u8,
    pub g: u8,
}

impl Segment {
    const fn flat(selector: u16, type_: u8, dpl: u8, l: u8) -> Self {
        Segment {
            selector,
            base: 0,
            limit: 0xfffff,
            type_,
            s: 1,
            dpl,
            l,
            db: if l == 1 { 0 } else { 1 },
            g: 1,
        }
    }

    /// The 8-byte GDT descriptor (the low half, for a TSS).
    pub fn descriptor(&self) -> u64 {
        let base = self.base & 0xffff_ffff;
        let limit = u64::from(self.limit);
        (limit & 0xffff)
            | ((base & 0xff_ffff) << 16)
            | (u64::from(self.type_) << 40)
            | (u64::from(self.s) << 44)
            | (u64::from(self.dpl) << 45)
            | (1 << 47)
            | (((limit >> 16) & 0xf) << 48)
            | (u64::from(self.l) << 53)
            | (u64::from(self.db) << 54)
            | (u64::from(self.g) << 55)
            | (((base >> 24) & 0xff) << 56)
    }

    pub fn kvm(&self) -> kvm_segment {
        kvm_segment {
            base: self.base,
            // KVM wants the byte-granular limit.
            limit: if self.g == 1 {
                (self.limit << 12) | 0xfff
            } else {
                self.limit
            },
            selector: self.selector,
            type_: self.type_,
            present: 1,
            dpl: self.dpl,
            db: self.db,
            s: self.s,
            l: self.l,
            g: self.g,
            avl: 0,
            unusable: 0,
            padding: 0,
        }
    }
}

pub const KERNEL_CODE: Segment = Segment::flat(KERNEL_CS, 0xb, 0, 1);
pub const KERNEL_DATA: Segment = Segment::flat(KERNEL_DS, 0x3, 0, 0);
pub const USER_CODE: Segment = Segment::flat(USER_CS, 0xb, 3, 1);
pub const USER_DATA: Segment = Segment::flat(USER_DS, 0x3, 3, 0);

/// Linux's 64-bit boot protocol wants flat code at `__BOOT_CS` (0x10) and data at
/// `__BOOT_DS` (0x18).
pub const LINUX_BOOT_CODE: Segment = Segment::flat(0x10, 0xb, 0, 1);
pub const LINUX_BOOT_DATA: Segment = Segment::flat(0x18, 0x3, 0, 0);

/// The GDT a Linux kernel is started with: two null entries, then its boot code and data.
pub fn linux_table() -> [u64; 4] {
    [
        0,
        0,
        LINUX_BOOT_CODE.descriptor(),
        LINUX_BOOT_DATA.descriptor(),
    ]
}

pub fn tss(base: u64) -> Segment {
    Segment {
        selector: TSS_SEL,
        base,
        limit: TSS_LIMIT,
        type_: 0xb, // 64-bit TSS, busy
        s: 0,
        dpl: 0,
        l: 0,
        db: 0,
        g: 0,
    }
}

/// The GDT as 64-bit words: null, kernel code/data, user code/data, TSS (two words).
pub fn table(tss_base: u64) -> [u64; 7] {
    [
        0,
        KERNEL_CODE.descriptor(),
        KERNEL_DATA.descriptor(),
        USER_CODE.descriptor(),
        USER_DATA.descriptor(),
        tss(tss_base).descriptor(),
        tss_base >> 32,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_match_the_well_known_encodings() {
        // The flat 64-bit code and data descriptors every long-mode kernel uses.
        assert_eq!(KERNEL_CODE.descriptor(), 0x00af_9b00_0000_ffff);
        assert_eq!(KERNEL_DATA.descriptor(), 0x00cf_9300_0000_ffff);
        assert_eq!(USER_CODE.descriptor(), 0x00af_fb00_0000_ffff);
        assert_eq!(USER_DATA.descriptor(), 0x00cf_f300_0000_ffff);
    }

    #[test]
    fn gdt_selectors_index_their_descriptors() {
        let t = table(0x1800);
        assert_eq!(t[usize::from(USER_CS >> 3)], USER_CODE.descriptor());
        assert_eq!(t[usize::from(USER_DS >> 3)], USER_DATA.descriptor());
        assert_eq!(t[usize::from(TSS_SEL >> 3)] & 0xffff, u64::from(TSS_LIMIT));
        assert_eq!((t[usize::from(TSS_SEL >> 3)] >> 16) & 0xff_ffff, 0x1800);
    }

    #[test]
    fn kvm_segment_has_byte_granular_limit() {
        let s = USER_CODE.kvm();
        assert_eq!(
            (s.limit, s.dpl, s.l, s.db, s.present),
            (0xffff_ffff, 3, 1, 0, 1)
        );
    }
}
