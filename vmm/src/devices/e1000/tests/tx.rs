//! Transmit: legacy and extended descriptors, checksum offload, TSO, ring wrap-around, and
//! malformed rings and buffers.

use super::*;
use crate::devices::e1000::offload::{TxContext, MAX_TX_FRAME, TUCMD_IP, TUCMD_TCP, TUCMD_TSE};
use crate::devices::e1000::tx::*;

pub const RING: u64 = 0x10_000;
pub const BUFS: u64 = 0x100_000;

pub fn legacy(addr: u64, len: u16, cmd: u8, cso: u8, css: u8) -> [u8; 16] {
    let mut d = [0u8; 16];
    d[..8].copy_from_slice(&addr.to_le_bytes());
    d[8..10].copy_from_slice(&len.to_le_bytes());
    d[10] = cso;
    d[11] = cmd;
    d[13] = css;
    d
}

pub fn context(ctx: &TxContext) -> [u8; 16] {
    let mut d = [0u8; 16];
    d[0] = ctx.ipcss;
    d[1] = ctx.ipcso;
    d[2..4].copy_from_slice(&ctx.ipcse.to_le_bytes());
    d[4] = ctx.tucss;
    d[5] = ctx.tucso;
    d[6..8].copy_from_slice(&ctx.tucse.to_le_bytes());
    let lower = ctx.paylen & 0xf_ffff | u32::from(ctx.tucmd | CMD_DEXT) << 24;
    d[8..12].copy_from_slice(&lower.to_le_bytes());
    d[13] = ctx.hdrlen;
    d[14..16].copy_from_slice(&ctx.mss.to_le_bytes());
    d
}

pub fn data(addr: u64, len: u32, dcmd: u8, popts: u8) -> [u8; 16] {
    let mut d = [0u8; 16];
    d[..8].copy_from_slice(&addr.to_le_bytes());
    let lower = len & 0xf_ffff | 1 << 20 | u32::from(dcmd | CMD_DEXT) << 24;
    d[8..12].copy_from_slice(&lower.to_le_bytes());
    d[13] = popts;
    d
}

/// Programs a ring of `n` descriptors at RING and enables the transmitter.
pub fn setup(rig: &mut Rig, n: u32) {
    rig.w(TDBAL, RING as u32);
    rig.w(TDBAH, 0);
    rig.w(TDLEN, n * 16);
    rig.w(TDH, 0);
    rig.w(TDT, 0);
    rig.w(TCTL, TCTL_EN | TCTL_PSP);
}

/// Writes descriptors from TDT on and moves TDT past them.
pub fn post(rig: &mut Rig, descs: &[[u8; 16]]) {
    let n = rig.r(TDLEN) / 16;
    let mut t = rig.r(TDT);
    for d in descs {
        rig.put(RING + u64::from(t) * 16, d);
        t = (t + 1) % n;
    }
    rig.w(TDT, t);
}

fn status(rig: &Rig, idx: u64) -> u8 {
    rig.get(RING + idx * 16 + 12, 1)[0]
}

/// Sends each frame as one legacy descriptor with EOP|RS on a fresh 16-entry ring.
pub fn send_frames<F: AsRef<[u8]>>(rig: &mut Rig, frames: &[F]) {
    setup(rig, 16);
    let mut descs = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let f = f.as_ref();
        let at = BUFS + i as u64 * 0x1_0000;
        rig.put(at, f);
        descs.push(legacy(
            at,
            f.len() as u16,
            CMD_EOP | CMD_IFCS | CMD_RS,
            0,
            0,
        ));
    }
    post(rig, &descs);
}

#[test]
fn descriptor_formats_decode() {
    let l = TxDesc::parse(&legacy(0x1234, 60, CMD_EOP | CMD_RS | CMD_IC_TSE, 50, 34));
    assert_eq!(
        l,
        TxDesc::Legacy {
            addr: 0x1234,
            len: 60,
            cso: 50,
            cmd: CMD_EOP | CMD_RS | CMD_IC_TSE,
            css: 34,
            special: 0
        }
    );
    let ctx = TxContext {
        ipcss: 14,
        ipcso: 24,
        ipcse: 33,
        tucss: 34,
        tucso: 50,
        tucse: 0,
        paylen: 0xabcde,
        tucmd: TUCMD_TCP | TUCMD_IP | TUCMD_TSE | CMD_DEXT,
        hdrlen: 54,
        mss: 1460,
    };
    assert_eq!(TxDesc::parse(&context(&ctx)), TxDesc::Context { ctx });
    let d = TxDesc::parse(&data(0x55, 0xfffff, CMD_EOP, POPTS_TXSM));
    assert!(matches!(
        d,
        TxDesc::Data {
            len: 0xfffff,
            popts: POPTS_TXSM,
            ..
        }
    ));
    let mut r = data(0, 0, 0, 0);
    r[10] |= 0x70; // DTYP 7
    assert!(matches!(TxDesc::parse(&r), TxDesc::Reserved { .. }));
}

#[test]
fn legacy_frame_is_sent_and_written_back() {
    let mut rig = Rig::new();
    rig.w(IMS, ICR_TXDW);
    let f = ip_frame(
        [2, 0, 0, 0, 0, 2],
        17,
        b"a payload long enough not to need padding",
    );
    send_frames(&mut rig, &[&f]);
    assert_eq!(rig.sent(), vec![f]);
    assert_eq!(rig.r(TDH), 1);
    assert_eq!(status(&rig, 0) & STA_DD, STA_DD);
    assert!(rig.level());
    assert_eq!(rig.r(ICR), ICR_TXDW | ICR_TXQE);
    let c = rig.dev.counters();
    assert_eq!((c.tx_frames, c.tx_descriptors), (1, 1));
}

#[test]
fn short_frames_are_padded_when_psp_is_set() {
    let mut rig = Rig::new();
    send_frames(&mut rig, &[vec![0xaa; 20]]);
    let sent = rig.sent();
    assert_eq!(sent[0].len(), 60);
    assert_eq!(&sent[0][..20], &[0xaa; 20]);
}

#[test]
fn multi_descriptor_frame_gets_dd_only_where_rs_is_set() {
    let mut rig = Rig::new();
    setup(&mut rig, 8);
    let f: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
    rig.put(BUFS, &f[..100]);
    rig.put(BUFS + 0x1000, &f[100..250]);
    rig.put(BUFS + 0x2000, &f[250..]);
    post(
        &mut rig,
        &[
            legacy(BUFS, 100, CMD_IFCS, 0, 0),
            legacy(BUFS + 0x1000, 150, CMD_IFCS, 0, 0),
            legacy(BUFS + 0x2000, 50, CMD_IFCS | CMD_EOP | CMD_RS, 0, 0),
        ],
    );
    assert_eq!(rig.sent(), vec![f]);
    assert_eq!(
        [status(&rig, 0), status(&rig, 1), status(&rig, 2)],
        [0, 0, STA_DD]
    );
    assert_eq!(rig.r(TDH), 3);
}

#[test]
fn ring_wraps_around() {
    let mut rig = Rig::new();
    setup(&mut rig, 8);
    let mut expect = Vec::new();
    for round in 0..5u8 {
        let mut descs = Vec::new();
        for i in 0..5u8 {
            let f = vec![round * 16 + i; 64];
            let at = BUFS + u64::from(round * 8 + i) * 0x100;
            rig.put(at, &f);
            descs.push(legacy(at, 64, CMD_EOP | CMD_RS, 0, 0));
            expect.push(f);
        }
        post(&mut rig, &descs);
        assert_eq!(rig.r(TDH), rig.r(TDT));
    }
    assert_eq!(rig.r(TDH), 25 % 8);
    assert_eq!(rig.sent(), expect);
}

#[test]
fn legacy_insert_checksum_uses_css_and_cso() {
    let mut rig = Rig::new();
    let mut f = ip_frame([2, 0, 0, 0, 0, 2], 6, &[7u8; 101]);
    let l4_len = f.len() - 34;
    // Software seeds the pseudo-header sum (not complemented), as Linux does.
    let seed = !internet_checksum(&[&pseudo_header(&f, l4_len)]);
    f[50..52].copy_from_slice(&seed.to_be_bytes());
    send_frames(&mut rig, &[&f]);
    setup(&mut rig, 8);
    rig.put(BUFS, &f);
    post(
        &mut rig,
        &[legacy(
            BUFS,
            f.len() as u16,
            CMD_EOP | CMD_RS | CMD_IC_TSE,
            50,
            34,
        )],
    );
    let sent = rig.sent();
    assert!(!l4_ok(&sent[0]), "without IC nothing is inserted");
    assert!(l4_ok(&sent[1]));
}

fn tcp_context(tse: bool, mss: u16, paylen: u32) -> TxContext {
    TxContext {
        ipcss: 14,
        ipcso: 24,
        ipcse: 33,
        tucss: 34,
        tucso: 50,
        tucse: 0,
        paylen,
        tucmd: TUCMD_TCP | TUCMD_IP | if tse { TUCMD_TSE } else { 0 },
        hdrlen: 54,
        mss,
    }
}

#[test]
fn context_descriptor_checksum_offload() {
    let mut rig = Rig::new();
    setup(&mut rig, 8);
    let mut f = ip_frame([2, 0, 0, 0, 0, 2], 6, &[0x5a; 333]);
    let seed = !internet_checksum(&[&pseudo_header(&f, f.len() - 34)]);
    f[50..52].copy_from_slice(&seed.to_be_bytes());
    rig.put(BUFS, &f[..54]);
    rig.put(BUFS + 0x1000, &f[54..]);
    post(
        &mut rig,
        &[
            context(&tcp_context(false, 0, 0)),
            data(BUFS, 54, CMD_IFCS, POPTS_IXSM | POPTS_TXSM),
            data(BUFS + 0x1000, (f.len() - 54) as u32, CMD_EOP | CMD_RS, 0),
        ],
    );
    let sent = rig.sent();
    assert_eq!(sent.len(), 1);
    assert!(ipv4_ok(&sent[0]));
    assert!(l4_ok(&sent[0]));
    assert_eq!(&sent[0][54..], &f[54..]);
}

#[test]
fn udp_checksum_offload() {
    let mut rig = Rig::new();
    setup(&mut rig, 8);
    let mut f = ip_frame([2, 0, 0, 0, 0, 2], 17, &[1, 2, 3, 4, 5]);
    let seed = !internet_checksum(&[&pseudo_header(&f, f.len() - 34)]);
    f[40..42].copy_from_slice(&seed.to_be_bytes());
    rig.put(BUFS, &f);
    let ctx = TxContext {
        tucso: 40,
        tucmd: TUCMD_IP,
        ..tcp_context(false, 0, 0)
    };
    post(
        &mut rig,
        &[
            context(&ctx),
            data(BUFS, f.len() as u32, CMD_EOP | CMD_RS, POPTS_TXSM),
        ],
    );
    assert!(l4_ok(&rig.sent()[0]));
}

#[test]
fn checksum_is_left_to_a_back_end_that_can_finish_it() {
    let mut rig = Rig::new();
    rig.wire.lock().unwrap().offloads = Offloads {
        csum: true,
        tso: false,
    };
    setup(&mut rig, 8);
    let mut f = ip_frame([2, 0, 0, 0, 0, 2], 6, &[9; 50]);
    let seed = !internet_checksum(&[&pseudo_header(&f, f.len() - 34)]);
    f[50..52].copy_from_slice(&seed.to_be_bytes());
    rig.put(BUFS, &f);
    post(
        &mut rig,
        &[
            context(&tcp_context(false, 0, 0)),
            data(
                BUFS,
                f.len() as u32,
                CMD_EOP | CMD_RS,
                POPTS_IXSM | POPTS_TXSM,
            ),
        ],
    );
    let (frame, meta) = rig.wire.lock().unwrap().sent[0].clone();
    assert_eq!(meta.csum, Some((34, 16)));
    assert!(ipv4_ok(&frame), "the IP checksum is still the device's job");
    assert_eq!(
        &frame[50..52],
        &seed.to_be_bytes(),
        "seed left for the back-end"
    );
}

#[test]
fn tso_cuts_mss_sized_segments_with_correct_headers() {
    let mut rig = Rig::new();
    setup(&mut rig, 16);
    let payload: Vec<u8> = (0..4000u32).map(|i| (i * 7) as u8).collect();
    let mut f = ip_frame([2, 0, 0, 0, 0, 2], 6, &payload);
    // Linux's e1000_tso: IP length and checksum zero, TCP checksum seeded without length.
    f[16..18].copy_from_slice(&[0, 0]);
    let seed = !internet_checksum(&[&pseudo_header(&f, 0)]);
    f[50..52].copy_from_slice(&seed.to_be_bytes());
    rig.put(BUFS, &f[..54]);
    rig.put(BUFS + 0x1000, &f[54..2054]);
    rig.put(BUFS + 0x2000, &f[2054..]);
    let dcmd = CMD_IC_TSE | CMD_IFCS;
    post(
        &mut rig,
        &[
            context(&tcp_context(true, 1000, 4000)),
            data(BUFS, 54, dcmd, POPTS_IXSM | POPTS_TXSM),
            data(BUFS + 0x1000, 2000, dcmd, 0),
            data(BUFS + 0x2000, 2000, dcmd | CMD_EOP | CMD_RS, 0),
        ],
    );
    let segs = rig.sent();
    assert_eq!(segs.len(), 4);
    let mut joined = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        assert_eq!(s.len(), 54 + 1000);
        assert_eq!(u16::from_be_bytes([s[16], s[17]]), 1040, "IP total length");
        assert_eq!(
            u16::from_be_bytes([s[18], s[19]]),
            0x1234 + i as u16,
            "IP id"
        );
        let seq = u32::from_be_bytes([s[38], s[39], s[40], s[41]]);
        assert_eq!(seq, 1000 + 1000 * i as u32);
        let flags = s[47];
        let last = i == 3;
        assert_eq!(flags & 0x09 != 0, last, "FIN/PSH only on the last segment");
        assert_ne!(flags & 0x10, 0, "ACK kept");
        assert!(ipv4_ok(s), "segment {i} IP checksum");
        assert!(l4_ok(s), "segment {i} TCP checksum");
        joined.extend_from_slice(&s[54..]);
    }
    assert_eq!(joined, payload);
    assert_eq!(rig.r(TSCTC), 1);
    assert_eq!(rig.r(GPTC), 4);
}

#[test]
fn tso_with_short_last_segment() {
    let mut rig = Rig::new();
    setup(&mut rig, 8);
    let f = ip_frame([2, 0, 0, 0, 0, 2], 6, &[3; 2500]);
    rig.put(BUFS, &f);
    post(
        &mut rig,
        &[
            context(&tcp_context(true, 1448, 2500)),
            data(
                BUFS,
                f.len() as u32,
                CMD_IC_TSE | CMD_EOP | CMD_RS,
                POPTS_IXSM,
            ),
        ],
    );
    let lens: Vec<usize> = rig.sent().iter().map(Vec::len).collect();
    assert_eq!(lens, vec![54 + 1448, 54 + 1052]);
}

#[test]
fn descriptor_ring_outside_memory_stops_the_ring() {
    let mut rig = Rig::new();
    rig.w(TDBAL, 0xf000_0000);
    rig.w(TDLEN, 128);
    rig.w(TCTL, TCTL_EN);
    rig.w(TDT, 3);
    assert_eq!(rig.r(TDH), 0);
    assert!(rig.sent().is_empty());
    assert_eq!(rig.dev.counters().dma_errors, 1);
    // A ring that straddles the end of RAM fails at the first descriptor past it.
    rig.w(TDBAL, (MEM_SIZE - 32) as u32);
    rig.w(TDT, 4);
    assert_eq!(rig.r(TDH), 2);
}

#[test]
fn zero_length_ring_and_head_or_tail_past_the_ring_are_ignored() {
    let mut rig = Rig::new();
    setup(&mut rig, 8);
    rig.w(TDLEN, 0);
    rig.w(TDT, 1);
    assert_eq!(rig.r(TDH), 0);
    rig.w(TDLEN, 100); // not a multiple of 128: the low bits do not exist
    assert_eq!(rig.r(TDLEN), 0);
    rig.w(TDLEN, 128);
    rig.w(TDT, 9);
    assert_eq!(rig.r(TDH), 0);
    rig.w(TDT, 0);
    rig.w(TDH, 200);
    rig.w(TDT, 1);
    assert_eq!(rig.r(TDH), 200);
    assert!(rig.sent().is_empty());
    assert!(rig.dev.counters().bad_ring >= 2);
}

#[test]
fn buffer_outside_memory_drops_the_frame_but_completes_the_descriptor() {
    let mut rig = Rig::new();
    setup(&mut rig, 8);
    rig.put(BUFS, &[1; 64]);
    post(
        &mut rig,
        &[
            legacy(MEM_SIZE as u64 - 10, 64, CMD_EOP | CMD_RS, 0, 0),
            legacy(u64::MAX - 5, 64, CMD_EOP | CMD_RS, 0, 0),
            legacy(BUFS, 64, CMD_EOP | CMD_RS, 0, 0),
        ],
    );
    assert_eq!(rig.sent(), vec![vec![1; 64]]);
    assert_eq!(rig.r(TDH), 3);
    assert_eq!(status(&rig, 0) & STA_DD, STA_DD);
    let c = rig.dev.counters();
    assert_eq!((c.dma_errors, c.tx_dropped), (2, 2));
}

#[test]
fn endless_chain_is_capped_and_dropped() {
    let mut rig = Rig::new();
    setup(&mut rig, 64);
    let chunk = 0x4000u32;
    let mut descs: Vec<[u8; 16]> = (0..(MAX_TX_FRAME as u32 / chunk + 2))
        .map(|_| legacy(BUFS, chunk as u16, CMD_RS, 0, 0))
        .collect();
    descs.push(legacy(BUFS, 64, CMD_EOP | CMD_RS, 0, 0));
    descs.push(legacy(BUFS, 64, CMD_EOP | CMD_RS, 0, 0));
    post(&mut rig, &descs);
    assert_eq!(rig.sent().len(), 1, "only the frame after the runaway one");
    assert_eq!(rig.dev.counters().tx_dropped, 1);
    assert_eq!(rig.r(TDH), rig.r(TDT));
}

#[test]
fn zero_length_descriptors() {
    let mut rig = Rig::new();
    setup(&mut rig, 8);
    rig.put(BUFS, &[4; 64]);
    post(
        &mut rig,
        &[
            legacy(BUFS, 0, CMD_EOP | CMD_RS, 0, 0), // an empty packet: nothing to send
            legacy(BUFS, 0, 0, 0, 0),
            legacy(BUFS, 64, CMD_EOP | CMD_RS, 0, 0),
        ],
    );
    assert_eq!(rig.sent(), vec![vec![4; 64]]);
    assert_eq!(rig.r(TDH), 3);
}

#[test]
fn unusable_tso_contexts_drop_the_packet() {
    let mut rig = Rig::new();
    setup(&mut rig, 8);
    let f = ip_frame([2, 0, 0, 0, 0, 2], 6, &[3; 100]);
    rig.put(BUFS, &f);
    let tso = CMD_IC_TSE | CMD_EOP | CMD_RS;
    post(
        &mut rig,
        &[
            context(&tcp_context(true, 0, 100)),
            data(BUFS, f.len() as u32, tso, POPTS_TXSM),
            context(&TxContext {
                hdrlen: 255,
                ..tcp_context(true, 100, 100)
            }),
            data(BUFS, f.len() as u32, tso, POPTS_TXSM),
            context(&TxContext {
                tucss: 250,
                ..tcp_context(true, 100, 100)
            }),
            data(BUFS, f.len() as u32, tso, POPTS_TXSM),
        ],
    );
    assert!(rig.sent().is_empty());
    assert_eq!(rig.dev.counters().tx_dropped, 3);
    assert_eq!(rig.r(TSCTFC), 3);
}

#[test]
fn transmit_waits_for_bus_mastering_and_tctl_en() {
    let mut rig = Rig::new();
    setup(&mut rig, 8);
    rig.w(TCTL, 0);
    rig.put(BUFS, &[5; 64]);
    post(&mut rig, &[legacy(BUFS, 64, CMD_EOP | CMD_RS, 0, 0)]);
    assert!(rig.sent().is_empty());
    rig.dev
        .config_write(1, 0, &u32::from(CMD_MEMORY | CMD_IO).to_le_bytes());
    rig.w(TCTL, TCTL_EN);
    assert!(rig.sent().is_empty(), "no DMA without bus mastering");
    let cmd = u32::from(CMD_MEMORY | CMD_IO | CMD_BUS_MASTER);
    rig.dev.config_write(1, 0, &cmd.to_le_bytes());
    assert_eq!(rig.sent().len(), 1);
}

#[test]
fn tidv_and_tadv_delay_txdw() {
    let mut rig = Rig::new();
    setup(&mut rig, 8);
    rig.w(IMS, ICR_TXDW);
    rig.w(TIDV, 100); // 102.4 us, restarted per packet
    rig.w(TADV, 150); // 153.6 us from the first
    rig.put(BUFS, &[5; 64]);
    let d = legacy(BUFS, 64, CMD_EOP | CMD_RS | CMD_IDE, 0, 0);
    post(&mut rig, &[d]);
    assert!(!rig.level());
    rig.advance(Duration::from_micros(80));
    post(&mut rig, &[d]);
    let now = rig.advance(Duration::from_micros(80));
    rig.dev.poll(now);
    assert!(rig.level(), "the absolute timer fired first");
    assert_eq!(rig.r(ICR) & ICR_TXDW, ICR_TXDW);
    // FPD flushes a pending delay at once.
    post(&mut rig, &[d]);
    assert!(!rig.level());
    rig.w(TIDV, 100 | 1 << 31);
    assert!(rig.level());
}
