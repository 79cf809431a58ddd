//! Property tests: the pure decoders take any bytes, and the whole function takes any
//! sequence of port and configuration accesses over garbage PRD tables without panicking or
//! asking the disk for anything outside it.

use proptest::prelude::*;

use super::*;
use crate::devices::ide::ata::{Command, DriveParams, Geometry, TaskFile, LBA28_LIMIT};

const FUZZ_MEM: usize = 1 << 20;
const FUZZ_SECTORS: u64 = 4096;

const OPCODES: &[u8] = &[
    op::READ_SECTORS,
    op::READ_SECTORS_EXT,
    op::READ_DMA,
    op::READ_DMA_EXT,
    op::READ_MULTIPLE,
    op::READ_MULTIPLE_EXT,
    op::WRITE_SECTORS,
    op::WRITE_SECTORS_EXT,
    op::WRITE_DMA,
    op::WRITE_DMA_EXT,
    op::WRITE_MULTIPLE,
    op::WRITE_MULTIPLE_EXT,
    op::SET_MULTIPLE_MODE,
    op::SET_FEATURES,
    op::IDENTIFY_DEVICE,
    op::FLUSH_CACHE,
    op::EXECUTE_DEVICE_DIAGNOSTIC,
    op::SLEEP,
    op::CHECK_POWER_MODE,
];

#[derive(Clone, Debug)]
enum Op {
    In(u16, usize),
    Out(u16, usize, u32),
    Config(usize, u64, u32),
    /// Writes 8 bytes of garbage (or a plausible PRD entry) into guest RAM.
    Poke(u32, [u8; 8]),
}

fn port() -> impl Strategy<Value = u16> {
    prop_oneof![
        4 => 0x1f0u16..=0x1f7,
        2 => Just(0x3f6u16),
        2 => BM..BM + 16,
        1 => 0x170u16..=0x177,
        1 => Just(0x376u16),
        1 => any::<u16>(),
    ]
}

fn value() -> impl Strategy<Value = u32> {
    prop_oneof![
        3 => proptest::sample::select(OPCODES).prop_map(u32::from),
        2 => 0u32..16,
        2 => any::<u32>(),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let width = proptest::sample::select(vec![1usize, 2, 4]);
    prop_oneof![
        4 => (port(), width.clone()).prop_map(|(p, w)| Op::In(p, w)),
        6 => (port(), width, value()).prop_map(|(p, w, v)| Op::Out(p, w, v)),
        1 => (0usize..64, 0u64..4, any::<u32>()).prop_map(|(r, o, v)| Op::Config(r, o, v)),
        2 => (0u32..FUZZ_MEM as u32, any::<[u8; 8]>(), any::<bool>()).prop_map(|(a, mut b, sane)| {
            if sane {
                // A PRD entry pointing into RAM, so that some transfers really happen.
                b[..4].copy_from_slice(&(a & 0xf_f000).to_le_bytes());
                b[5] &= 0x0f;
            }
            Op::Poke(a & !7, b)
        }),
    ]
}

fn apply(f: &mut Fx, op: &Op) {
    let a = |port: u16| Access {
        offset: 0,
        addr: u64::from(port),
        vcpu: 0,
    };
    match *op {
        Op::In(p, w) => {
            let mut d = [0u8; 4];
            f.piix.read(a(p), &mut d[..w]);
        }
        Op::Out(p, w, v) => f.piix.write(a(p), &v.to_le_bytes()[..w]),
        Op::Config(r, o, v) => {
            let len = (4 - o as usize).min(4);
            let _ = f.piix.config_write(r, o, &v.to_le_bytes()[..len]);
        }
        Op::Poke(at, b) => {
            let _ = f.mem.write_slice(&b, GuestAddress(u64::from(at)));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parse_checks_every_range(opcode in any::<u8>(), regs in any::<[u16; 5]>(), device in any::<u8>(),
                                sectors in 0u64..1 << 40, multiple in 0u8..=16, read_only in any::<bool>()) {
        let tf = TaskFile {
            feature: regs[0],
            count: regs[1],
            lba_low: regs[2],
            lba_mid: regs[3],
            lba_high: regs[4],
            device,
        };
        let p = DriveParams {
            sectors,
            geometry: Geometry::for_capacity(sectors),
            multiple,
            read_only,
        };
        if let Ok(Command::Read(t) | Command::Write(t)) = Command::parse(opcode, &tf, &p) {
            let end = t.lba + u64::from(t.sectors);
            prop_assert!(end <= sectors);
            prop_assert!(t.ext || end <= LBA28_LIMIT);
            prop_assert!(t.sectors >= 1 && t.sectors <= 65536);
        }
    }

    #[test]
    fn prd_entries_decode_to_even_nonzero_lengths(raw in any::<[u8; 8]>()) {
        let p = Prd::parse(raw);
        prop_assert!(p.len >= 2 && p.len <= 0x1_0000 && p.len % 2 == 0);
        prop_assert_eq!(p.addr % 2, 0);
    }

    #[test]
    fn dma_over_arbitrary_prd_tables_stays_in_its_regions(
        entries in proptest::collection::vec((any::<bool>(), 0u32..(FUZZ_MEM as u32 / 2 - 0x1_0000), any::<u32>()), 1..24),
        opcode in proptest::sample::select(vec![op::READ_DMA, op::READ_DMA_EXT, op::WRITE_DMA, op::WRITE_DMA_EXT]),
        lba in 0u64..FUZZ_SECTORS + 8,
        count in any::<u8>(),
        to_memory in any::<bool>(),
        table in prop_oneof![Just(0x100u32), any::<u32>()],
    ) {
        let mut f = Fx::with(Opts { sectors: FUZZ_SECTORS, mem: FUZZ_MEM, ..Default::default() });
        // Regions in the lower half of RAM or far outside it; the upper half is a canary.
        let raw: Vec<(u32, u32, bool)> = entries
            .iter()
            .map(|&(in_ram, addr, ctl)| (if in_ram { addr } else { (ctl ^ addr) | 0x8000_0000 }, ctl, ctl & (1 << 31) != 0))
            .collect();
        let table = if table == 0x100 { table } else { table & !3 };
        if u64::from(table) + 8 * raw.len() as u64 <= FUZZ_MEM as u64 / 2 {
            f.prd(u64::from(table), &raw);
        }
        f.bm_setup(table, to_memory);
        if opcode == op::READ_DMA_EXT || opcode == op::WRITE_DMA_EXT {
            f.lba48(lba, u16::from(count));
        } else {
            f.lba28(lba as u32, count);
        }
        f.cmd(opcode);
        f.bm_start();

        let bm = f.bm_status();
        let st = f.alt();
        prop_assert_eq!(f.disk.lock().unwrap().out_of_range, 0);
        let canary = f.guest(FUZZ_MEM as u64 / 2, FUZZ_MEM / 2);
        prop_assert!(canary.iter().all(|&b| b == 0), "wrote past the PRD regions");
        // Either the drive finished (interrupt), or it still waits (DRQ), or it refused.
        prop_assert!(bm & 0x04 != 0 || st & 0x08 != 0 || st & 0x01 != 0, "bm {:#x} status {:#x}", bm, st);
        f.bm_stop();
        f.outb(P_CTL, 0x04);
        f.outb(P_CTL, 0x00);
        prop_assert_eq!(f.status(), 0x50);
    }

    #[test]
    fn port_writes_never_panic_or_reach_past_the_disk(ops in proptest::collection::vec(op_strategy(), 1..96)) {
        let mut f = Fx::with(Opts { sectors: FUZZ_SECTORS, mem: FUZZ_MEM, ..Default::default() });
        for op in &ops {
            apply(&mut f, op);
        }
        prop_assert_eq!(f.piix.config_read(0), 0x7010_8086);
        prop_assert_eq!(f.disk.lock().unwrap().out_of_range, 0);
        // Whatever happened, a software reset brings the drive back to the signature.
        f.piix.config_write(1, 0, &u32::from(CMD_IO | CMD_BUS_MASTER).to_le_bytes());
        f.piix.config_write(0x10, 0, &0x8000_8000u32.to_le_bytes());
        f.outb(P_CTL, 0x04);
        f.outb(P_CTL, 0x00);
        prop_assert_eq!(f.status(), 0x50);
        prop_assert_eq!(f.inb(P_LBAL), 0x01);
    }
}
