//! Property tests: the pure parsers and the whole device take any guest input without
//! panicking, and never leave guest memory.

use proptest::prelude::*;

use super::*;
use crate::devices::e1000::offload::TxContext;
use crate::devices::e1000::offload::{self, Insert};
use crate::devices::e1000::rx::{filter, rx_checksum, Filter};
use crate::devices::e1000::tx::TxDesc;

const TX_RING: u64 = 0x10_000;
const RX_RING: u64 = 0x20_000;

/// Registers worth hitting often; anything else in the BAR is hit too.
const INTERESTING: &[u32] = &[
    CTRL, EECD, EERD, MDIC, ICR, ICS, IMS, IMC, ITR, RCTL, TCTL, RDBAL, RDBAH, RDLEN, RDH, RDT,
    RDTR, RADV, TDBAL, TDBAH, TDLEN, TDH, TDT, TIDV, TADV, RXCSUM, PBA, VET, MTA, RAL0, RAH0, VFTA,
    GORCH, GPRC,
];

fn context() -> impl Strategy<Value = TxContext> {
    (any::<[u8; 6]>(), any::<[u16; 3]>(), any::<u32>()).prop_map(|(b, w, paylen)| TxContext {
        ipcss: b[0],
        ipcso: b[1],
        ipcse: w[0],
        tucss: b[2],
        tucso: b[3],
        tucse: w[1],
        paylen: paylen & 0xf_ffff,
        tucmd: b[4],
        hdrlen: b[5],
        mss: w[2],
    })
}

/// A descriptor whose buffer address is in guest RAM half of the time.
fn descriptor() -> impl Strategy<Value = [u8; 16]> {
    (any::<[u8; 16]>(), any::<bool>(), 0..MEM_SIZE as u64).prop_map(|(mut d, valid, a)| {
        if valid {
            d[..8].copy_from_slice(&a.to_le_bytes());
        }
        d
    })
}

#[derive(Clone, Debug)]
enum Op {
    Write { off: u32, width: usize, v: u64 },
    Read { off: u32, width: usize },
    Io { write: bool, port: u16, v: u32 },
    Frame(Vec<u8>),
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    let off = prop_oneof![
        proptest::sample::select(INTERESTING).prop_map(|o| o),
        (0u32..0x2_0000),
    ];
    let width = proptest::sample::select(&[1usize, 2, 4, 8][..]);
    prop_oneof![
        4 => (off.clone(), width.clone(), any::<u64>())
            .prop_map(|(off, width, v)| Op::Write { off, width, v }),
        2 => (off, width).prop_map(|(off, width)| Op::Read { off, width }),
        1 => (any::<bool>(), 0u16..0x40, any::<u32>())
            .prop_map(|(write, port, v)| Op::Io { write, port, v }),
        1 => proptest::collection::vec(any::<u8>(), 0..2000).prop_map(Op::Frame),
        1 => any::<u16>().prop_map(Op::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn tx_descriptors_decode_without_panic(raw in any::<[u8; 16]>()) {
        let d = TxDesc::parse(&raw);
        let _ = (d.cmd(), d.buffer());
    }

    #[test]
    fn segmentation_never_panics(
        frame in proptest::collection::vec(any::<u8>(), 0..3000),
        ctx in context(),
        ip in any::<bool>(),
        l4 in any::<bool>(),
    ) {
        let mut seg = Vec::new();
        let mut total = 0;
        let r = offload::segment(&frame, &ctx, Insert { ip, l4 }, &mut seg, &mut |s| {
            total += s.len();
        });
        if let Ok(n) = r {
            prop_assert!(n >= 1);
            prop_assert_eq!(total, n * ctx.hdrlen as usize + frame.len() - ctx.hdrlen as usize);
        }
        let mut f = frame.clone();
        offload::checksum_frame(&mut f, &ctx, Insert { ip, l4 });
        prop_assert_eq!(f.len(), frame.len());
    }

    #[test]
    fn receive_parsers_never_panic(
        frame in proptest::collection::vec(any::<u8>(), 0..200),
        rxcsum in any::<u32>(),
        rctl in any::<u32>(),
        words in proptest::collection::vec(any::<u32>(), 288),
    ) {
        let _ = rx_checksum(&frame, rxcsum);
        let f = Filter {
            rctl,
            ra: &words[..32],
            mta: &words[32..160],
            vfta: &words[160..288],
            vet: 0x8100,
        };
        let _ = filter(&frame, &f);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn device_survives_any_guest(
        tx in proptest::collection::vec(descriptor(), 16),
        rx in proptest::collection::vec(descriptor(), 16),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let mut rig = Rig::new();
        for (i, d) in tx.iter().enumerate() {
            rig.put(TX_RING + i as u64 * 16, d);
        }
        for (i, d) in rx.iter().enumerate() {
            rig.put(RX_RING + i as u64 * 16, d);
        }
        // A plausible starting point so that random writes reach the data paths.
        rig.w(TDBAL, TX_RING as u32);
        rig.w(TDLEN, 256);
        rig.w(TCTL, TCTL_EN | TCTL_PSP);
        rig.w(RDBAL, RX_RING as u32);
        rig.w(RDLEN, 256);
        rig.w(RCTL, RCTL_EN | RCTL_UPE | RCTL_LPE);
        rig.w(RDT, 15);
        for op in ops {
            match op {
                Op::Write { off, width, v } => {
                    let a = Access { offset: u64::from(off), addr: BAR0 + u64::from(off), vcpu: 0 };
                    rig.dev.write(a, &v.to_le_bytes()[..width]);
                }
                Op::Read { off, width } => {
                    let a = Access { offset: u64::from(off), addr: BAR0 + u64::from(off), vcpu: 0 };
                    let mut d = [0u8; 8];
                    rig.dev.read(a, &mut d[..width]);
                }
                Op::Io { write, port, v } => {
                    if write { rig.io_w(port, v) } else { rig.io_r(port); }
                }
                Op::Frame(f) => {
                    rig.inject(&f);
                    rig.dev.rx_poll();
                }
                Op::Advance(us) => {
                    let now = rig.advance(Duration::from_micros(u64::from(us)));
                    rig.dev.poll(now);
                }
            }
        }
        // Whatever happened, the interrupt line matches the registers.
        let level = rig.level();
        prop_assert_eq!(level, rig.dev.irq_level());
    }
}
