//! The 82540EM's 64-word Microwire EEPROM (a 93C46), reached two ways: bit-banged through
//! EECD (SK/CS/DI/DO, with the REQ/GNT handshake) and one word at a time through EERD
//! (8254x SDM sections 5.3, 5.6 and 13.4.3-13.4.4). Only the READ command is implemented:
//! writes through the Microwire interface (EWEN/WRITE/ERASE) are accepted and do nothing.

use super::regs::{EECD, EERD};

pub const WORDS: usize = 64;
/// Words 0x00..=0x3f must add up to this (the checksum word 0x3f makes them).
pub const CHECKSUM_SUM: u16 = 0xbaba;

// EECD bits.
pub const EECD_SK: u32 = 1 << 0;
pub const EECD_CS: u32 = 1 << 1;
pub const EECD_DI: u32 = 1 << 2;
pub const EECD_DO: u32 = 1 << 3;
pub const EECD_FWE_MASK: u32 = 3 << 4;
pub const EECD_REQ: u32 = 1 << 6;
pub const EECD_GNT: u32 = 1 << 7;
pub const EECD_PRES: u32 = 1 << 8;
// EECD.SIZE (bit 9) stays 0: a 64-word part with 6 address bits.

// EERD fields for the 82540 (start bit 0, done bit 4, address 15:8, data 31:16).
pub const EERD_START: u32 = 1 << 0;
pub const EERD_DONE: u32 = 1 << 4;
pub const EERD_ADDR_SHIFT: u32 = 8;
pub const EERD_DATA_SHIFT: u32 = 16;

/// Microwire READ is start bit 1 then opcode 10.
const OPCODE_BITS: u32 = 3;
const READ_OPCODE: u32 = 0b110;
const ADDR_BITS: u32 = 6;

/// Builds the image: MAC in words 0-2, the identity and control words an 82540EM image
/// carries, unprogrammed words as 0xffff, and the checksum word.
pub fn image(mac: [u8; 6], device: u16, subsystem: u16) -> [u16; WORDS] {
    let mut w = [0xffffu16; WORDS];
    for i in 0..3 {
        w[i] = u16::from_le_bytes([mac[2 * i], mac[2 * i + 1]]);
    }
    w[0x03] = 0x0000; // compatibility: no LOM, no SMBus/ASF
    w[0x04] = 0xffff; // ID LED settings: use the defaults
    w[0x05] = 0x2010; // image version
    w[0x08] = 0x1234; // PBA number, low and high
    w[0x09] = 0x5678;
    w[0x0a] = 0x640b; // ICW1: load subsystem and device IDs, full duplex, 82540 defaults
    w[0x0b] = subsystem;
    w[0x0c] = 0x8086; // subsystem vendor
    w[0x0d] = device;
    w[0x0e] = 0x8086; // vendor
    w[0x0f] = 0x3000; // ICW2: symmetric and asymmetric PAUSE advertised
    w[0x10] = 0x0000;
    w[0x20] = 0x0000; // software-defined pins control
    w[0x21] = 0x0000; // circuit control
    w[0x24] = 0x0000; // ICW3: APM wake-up disabled
    w[0x2f] = 0x0000; // boot agent: disabled
    let sum = w[..WORDS - 1].iter().fold(0u16, |a, &x| a.wrapping_add(x));
    w[WORDS - 1] = CHECKSUM_SUM.wrapping_sub(sum);
    w
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// CS low, or CS high waiting for the start bit.
    Idle,
    /// Shifting in opcode and address bits (after the start bit).
    Command { bits: u32, count: u32 },
    /// Shifting out the word at `addr`; `bit` counts 16 data bits (15 = MSB next).
    Reading { addr: usize, bit: u32 },
    /// A command this model ignores: wait for CS to drop.
    Ignore,
}

pub struct Eeprom {
    words: [u16; WORDS],
    /// The pin and handshake bits software last wrote.
    eecd: u32,
    phase: Phase,
    /// What the EEPROM drives on DO.
    dout: bool,
    eerd: u32,
}

impl Eeprom {
    pub fn new(words: [u16; WORDS]) -> Self {
        Eeprom {
            words,
            eecd: 1 << 4, // FWE = 01b: flash writes disabled
            phase: Phase::Idle,
            dout: true,
            eerd: 0,
        }
    }

    pub fn word(&self, i: usize) -> Option<u16> {
        self.words.get(i).copied()
    }

    /// Back to the power-up state (CTRL.RST); the contents do not change.
    pub fn reset(&mut self) {
        *self = Eeprom::new(self.words);
    }

    pub fn read(&self, reg: u32) -> u32 {
        match reg {
            EECD => {
                let gnt = if self.eecd & EECD_REQ != 0 {
                    EECD_GNT
                } else {
                    0
                };
                let dout = if self.dout { EECD_DO } else { 0 };
                (self.eecd & !(EECD_DO | EECD_GNT)) | gnt | dout | EECD_PRES
            }
            EERD => self.eerd,
            _ => 0,
        }
    }

    pub fn write(&mut self, reg: u32, v: u32) {
        match reg {
            EECD => self.write_eecd(v),
            EERD if v & EERD_START != 0 => {
                let addr = ((v >> EERD_ADDR_SHIFT) & 0xff) as usize;
                // A word past the part reads as the bus floats: all ones.
                let data = self.words.get(addr).copied().unwrap_or(0xffff);
                self.eerd = (u32::from(data) << EERD_DATA_SHIFT)
                    | ((addr as u32) << EERD_ADDR_SHIFT)
                    | EERD_DONE;
            }
            _ => {}
        }
    }

    fn write_eecd(&mut self, v: u32) {
        let old = self.eecd;
        self.eecd = v & (EECD_SK | EECD_CS | EECD_DI | EECD_FWE_MASK | EECD_REQ);
        let cs = v & EECD_CS != 0;
        if !cs {
            // Deselecting ends any command; DO idles high (ready).
            self.phase = Phase::Idle;
            self.dout = true;
            return;
        }
        if old & EECD_CS == 0 {
            self.phase = Phase::Idle;
        }
        let rising = old & EECD_SK == 0 && v & EECD_SK != 0;
        if rising {
            self.clock(v & EECD_DI != 0);
        }
    }

    /// One rising edge of SK with CS high.
    fn clock(&mut self, di: bool) {
        self.phase = match self.phase {
            Phase::Idle if di => Phase::Command { bits: 1, count: 1 },
            Phase::Idle => Phase::Idle, // leading zeros before the start bit
            Phase::Command { bits, count } => {
                let bits = (bits << 1) | u32::from(di);
                let count = count + 1;
                if count < OPCODE_BITS + ADDR_BITS {
                    Phase::Command { bits, count }
                } else if bits >> ADDR_BITS == READ_OPCODE {
                    // After the last address bit the part drives a dummy zero, then the data
                    // MSB first on the following clocks.
                    self.dout = false;
                    Phase::Reading {
                        addr: (bits & ((1 << ADDR_BITS) - 1)) as usize,
                        bit: 16,
                    }
                } else {
                    Phase::Ignore
                }
            }
            Phase::Reading { addr, bit } => {
                // Sequential read: past the last bit of a word the next word follows.
                let (addr, bit) = if bit == 0 {
                    ((addr + 1) % WORDS, 15)
                } else {
                    (addr, bit - 1)
                };
                self.dout = (self.words[addr] >> bit) & 1 != 0;
                Phase::Reading { addr, bit }
            }
            Phase::Ignore => Phase::Ignore,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_sums_to_baba_and_holds_the_mac() {
        let w = image([0x52, 0x54, 0x00, 0x12, 0x34, 0x56], 0x100e, 0x001e);
        let sum = w.iter().fold(0u16, |a, &x| a.wrapping_add(x));
        assert_eq!(sum, CHECKSUM_SUM);
        assert_eq!(&w[..3], &[0x5452, 0x1200, 0x5634]);
        assert_eq!((w[0x0d], w[0x0e]), (0x100e, 0x8086));
    }

    #[test]
    fn eerd_past_the_part_reads_all_ones() {
        let mut e = Eeprom::new(image([0; 6], 0x100e, 0x001e));
        e.write(EERD, EERD_START | (0x80 << EERD_ADDR_SHIFT));
        assert_eq!(e.read(EERD) >> EERD_DATA_SHIFT, 0xffff);
        assert_ne!(e.read(EERD) & EERD_DONE, 0);
    }
}
