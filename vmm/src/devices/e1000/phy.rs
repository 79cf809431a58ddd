//! The 82540EM's internal PHY (a Marvell 88E1011-compatible core at MDIO address 1), reached
//! through MDIC (8254x SDM sections 8 and 13.4.5). The link is always up at 1000 Mb/s full
//! duplex with auto-negotiation complete; the registers drivers touch read back plausibly.

// MDIC fields.
pub const MDIC_DATA_MASK: u32 = 0xffff;
pub const MDIC_REG_SHIFT: u32 = 16;
pub const MDIC_PHY_SHIFT: u32 = 21;
pub const MDIC_OP_SHIFT: u32 = 26;
pub const MDIC_OP_WRITE: u32 = 1;
pub const MDIC_OP_READ: u32 = 2;
pub const MDIC_READY: u32 = 1 << 28;
pub const MDIC_INT_EN: u32 = 1 << 29;
pub const MDIC_ERROR: u32 = 1 << 30;

pub const PHY_ADDR: u32 = 1;

// Registers (IEEE 802.3 clause 22, then Marvell-specific).
pub const BMCR: usize = 0;
pub const BMSR: usize = 1;
pub const PHYID1: usize = 2;
pub const PHYID2: usize = 3;
pub const ANAR: usize = 4;
pub const ANLPAR: usize = 5;
pub const ANER: usize = 6;
pub const GTCR: usize = 9; // 1000BASE-T control
pub const GTSR: usize = 10; // 1000BASE-T status
pub const ESTATUS: usize = 15;
pub const M88_PSCR: usize = 16; // PHY specific control
pub const M88_PSSR: usize = 17; // PHY specific status
pub const M88_EPSCR: usize = 20; // extended PHY specific control

pub const BMCR_RESET: u16 = 1 << 15;
pub const BMCR_ANRESTART: u16 = 1 << 9;
pub const BMSR_LSTATUS: u16 = 1 << 2;
pub const BMSR_ANEGCOMPLETE: u16 = 1 << 5;

pub const PHY_ID1: u16 = 0x0141;
pub const PHY_ID2: u16 = 0x0c20;

/// Power-up values, and which bits software may change.
fn defaults() -> ([u16; 32], [u16; 32]) {
    let mut v = [0u16; 32];
    let mut w = [0u16; 32];
    // Auto-negotiation enabled, full duplex, speed bits selecting 1000 Mb/s.
    v[BMCR] = 0x1140;
    w[BMCR] = 0x7fc0 & !BMCR_ANRESTART;
    // 100/10 full and half capable, extended status, preamble suppression, AN complete,
    // AN capable, link up, extended capabilities.
    v[BMSR] = 0x796d;
    v[PHYID1] = PHY_ID1;
    v[PHYID2] = PHY_ID2;
    v[ANAR] = 0x0de1; // asymmetric and symmetric pause, 100/10 full and half, 802.3
    w[ANAR] = 0x2de1 | 0x0c00;
    v[ANLPAR] = 0x45e1; // the partner: acknowledge, pause, 100/10 full and half
    v[ANER] = 0x000d; // partner AN able, page received, next page able
    v[GTCR] = 0x0300; // advertise 1000 full and half
    w[GTCR] = 0x1f00;
    v[GTSR] = 0x3c00; // local and remote receiver OK, partner 1000 full and half
    v[ESTATUS] = 0x3000; // 1000BASE-T full and half
    v[M88_PSCR] = 0x0068;
    w[M88_PSCR] = 0xffff;
    // Resolved 1000 Mb/s full duplex, link up in real time.
    v[M88_PSSR] = 0xac00;
    v[M88_EPSCR] = 0x0d60;
    w[M88_EPSCR] = 0xffff;
    for r in [26, 29, 30] {
        w[r] = 0xffff; // Marvell page/test registers drivers poke: stored, no effect
    }
    (v, w)
}

pub struct Phy {
    regs: [u16; 32],
    writable: [u16; 32],
}

impl Default for Phy {
    fn default() -> Self {
        let (regs, writable) = defaults();
        Phy { regs, writable }
    }
}

impl Phy {
    pub fn reset(&mut self) {
        *self = Phy::default();
    }

    pub fn read(&self, reg: usize) -> u16 {
        self.regs.get(reg).copied().unwrap_or(0)
    }

    pub fn write(&mut self, reg: usize, v: u16) {
        if reg == BMCR && v & BMCR_RESET != 0 {
            // Software reset: registers back to defaults (self-clearing bit), but the
            // advertisement registers keep what software wrote, as the 88E1011 does.
            let (anar, gtcr) = (self.regs[ANAR], self.regs[GTCR]);
            self.reset();
            self.regs[ANAR] = anar;
            self.regs[GTCR] = gtcr;
            let w = self.writable[BMCR];
            self.regs[BMCR] = (self.regs[BMCR] & !w) | (v & w & !BMCR_RESET);
            return;
        }
        // Restarting auto-negotiation completes at once; the link stays up.
        let Some(w) = self.writable.get(reg).copied() else {
            return;
        };
        self.regs[reg] = (self.regs[reg] & !w) | (v & w);
    }

    /// Executes an MDIC command word; returns the register value MDIC then reads back.
    pub fn mdic(&mut self, cmd: u32) -> u32 {
        let phy = (cmd >> MDIC_PHY_SHIFT) & 0x1f;
        let reg = ((cmd >> MDIC_REG_SHIFT) & 0x1f) as usize;
        let op = (cmd >> MDIC_OP_SHIFT) & 3;
        let keep = cmd & !(MDIC_DATA_MASK | MDIC_READY | MDIC_ERROR);
        if phy != PHY_ADDR {
            // Nothing answers at other MDIO addresses: the frame ends in error.
            return keep | MDIC_READY | MDIC_ERROR;
        }
        match op {
            MDIC_OP_READ => keep | MDIC_READY | u32::from(self.read(reg)),
            MDIC_OP_WRITE => {
                self.write(reg, (cmd & MDIC_DATA_MASK) as u16);
                keep | MDIC_READY | (cmd & MDIC_DATA_MASK)
            }
            _ => keep | MDIC_READY | MDIC_ERROR,
        }
    }
}
