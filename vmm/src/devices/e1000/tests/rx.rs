//! Receive: filtering, buffer sizes, checksum status, FIFO and missed frames, moderation,
//! VLANs, wrap-around, and malformed rings and buffers.

use super::*;
use crate::devices::e1000::rx::*;

const RING: u64 = 0x20_000;
const BUFS: u64 = 0x200_000;
const STRIDE: u64 = 0x4000;
const OTHER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];

/// Gives the device `n - 1` buffers (Linux leaves one descriptor unused) and enables it.
fn setup(rig: &mut Rig, n: u32, rctl: u32) {
    for i in 0..u64::from(n) {
        let mut d = [0u8; 16];
        d[..8].copy_from_slice(&(BUFS + i * STRIDE).to_le_bytes());
        rig.put(RING + i * 16, &d);
    }
    rig.w(RDBAL, RING as u32);
    rig.w(RDBAH, 0);
    rig.w(RDLEN, n * 16);
    rig.w(RDH, 0);
    rig.w(RDT, n - 1);
    rig.w(RCTL, RCTL_EN | RCTL_BAM | RCTL_SECRC | rctl);
}

#[derive(Debug, PartialEq, Eq)]
struct Done {
    len: u16,
    status: u8,
    errors: u8,
    special: u16,
}

fn desc(rig: &Rig, i: u64) -> Done {
    let d = rig.get(RING + i * 16, 16);
    Done {
        len: u16::from_le_bytes([d[8], d[9]]),
        status: d[12],
        errors: d[13],
        special: u16::from_le_bytes([d[14], d[15]]),
    }
}

fn buf(rig: &Rig, i: u64, len: usize) -> Vec<u8> {
    rig.get(BUFS + i * STRIDE, len)
}

fn frame_to(dst: [u8; 6], len: usize) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01, 0x88, 0xb5]);
    f.extend((0..len - 14).map(|i| i as u8));
    f
}

/// Receives `frames` and returns how many the device stored.
fn receive<F: AsRef<[u8]>>(rig: &mut Rig, frames: &[F]) -> usize {
    for f in frames {
        rig.inject(f.as_ref());
    }
    rig.dev.rx_poll()
}

#[test]
fn unicast_frames_to_our_address_are_stored() {
    let mut rig = Rig::new();
    setup(&mut rig, 8, 0);
    rig.w(IMS, ICR_RXT0);
    let f = frame_to(MAC, 100);
    assert_eq!(receive(&mut rig, &[f.clone(), frame_to(OTHER, 100)]), 1);
    assert_eq!(
        desc(&rig, 0),
        Done {
            len: 100,
            status: STAT_DD | STAT_EOP | STAT_IXSM,
            errors: 0,
            special: 0
        }
    );
    assert_eq!(buf(&rig, 0, 100), f);
    assert_eq!(rig.r(RDH), 1);
    assert!(rig.level());
    assert_eq!(rig.r(ICR), ICR_RXT0);
    assert_eq!(rig.dev.counters().rx_filtered, 1);
    assert_eq!((rig.r(GPRC), rig.r(TPR)), (1, 2));
}

#[test]
fn address_filters() {
    let mut rig = Rig::new();
    setup(&mut rig, 32, 0);
    let bcast = frame_to([0xff; 6], 64);
    let mdns = frame_to([0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb], 64);
    let other_mc = frame_to([0x01, 0x00, 0x5e, 0x00, 0x00, 0x01], 64);
    let second = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];

    assert_eq!(receive(&mut rig, &[&bcast]), 1, "BAM");
    rig.w(RCTL, RCTL_EN | RCTL_SECRC);
    assert_eq!(receive(&mut rig, &[&bcast]), 0, "broadcast without BAM");

    // MO = 00: hash = addr[4] >> 4 | addr[5] << 4 = 0xfb0: MTA[0x7d] bit 16.
    assert_eq!(receive(&mut rig, &[&mdns]), 0);
    rig.w(MTA + 0x7d * 4, 1 << 16);
    assert_eq!(receive(&mut rig, &[mdns.clone(), other_mc.clone()]), 1);
    // MO = 11: hash = addr[4] | addr[5] << 8 (12 bits) = 0xb00: MTA[0x58] bit 0.
    rig.w(RCTL, RCTL_EN | RCTL_SECRC | 3 << RCTL_MO_SHIFT);
    assert_eq!(receive(&mut rig, &[&mdns]), 0);
    rig.w(MTA + 0x58 * 4, 1);
    assert_eq!(receive(&mut rig, &[&mdns]), 1);
    rig.w(RCTL, RCTL_EN | RCTL_SECRC | RCTL_MPE);
    assert_eq!(receive(&mut rig, &[&other_mc]), 1, "MPE");

    // A second receive address counts only with its AV bit.
    rig.w(RAL0 + 8, u32::from_le_bytes([0x02, 0x11, 0x22, 0x33]));
    rig.w(RAH0 + 8, 0x5544);
    assert_eq!(receive(&mut rig, &[frame_to(second, 64)]), 0);
    rig.w(RAH0 + 8, 0x5544 | RAH_AV);
    assert_eq!(receive(&mut rig, &[frame_to(second, 64)]), 1);
    // Clearing AV on our own address stops unicast; UPE takes everything.
    rig.w(RAH0, 0x5634);
    assert_eq!(receive(&mut rig, &[frame_to(MAC, 64)]), 0);
    rig.w(RCTL, RCTL_EN | RCTL_SECRC | RCTL_UPE);
    assert_eq!(
        receive(&mut rig, &[frame_to(OTHER, 64), frame_to(MAC, 64)]),
        2
    );
    assert_eq!(rig.r(BPRC), 1);
}

#[test]
fn mta_hash_follows_the_multicast_offset() {
    let a = [0x01, 0x00, 0x5e, 0x7f, 0xab, 0xcd];
    assert_eq!(mta_hash(&a, 0), (0xab >> 4 | 0xcd << 4) & 0xfff);
    assert_eq!(mta_hash(&a, 1), (0xab >> 3 | 0xcd << 5) & 0xfff);
    assert_eq!(mta_hash(&a, 2), (0xab >> 2 | 0xcd << 6) & 0xfff);
    assert_eq!(mta_hash(&a, 3), (0xab | 0xcd << 8) & 0xfff);
}

#[test]
fn buffer_size_follows_rctl() {
    let cases = [
        (0u32, 2048usize),
        (1 << RCTL_BSIZE_SHIFT, 1024),
        (2 << RCTL_BSIZE_SHIFT, 512),
        (3 << RCTL_BSIZE_SHIFT, 256),
        (RCTL_BSEX | 1 << RCTL_BSIZE_SHIFT, 16384),
        (RCTL_BSEX | 2 << RCTL_BSIZE_SHIFT, 8192),
        (RCTL_BSEX | 3 << RCTL_BSIZE_SHIFT, 4096),
    ];
    for (bits, size) in cases {
        let mut rig = Rig::new();
        setup(&mut rig, 16, bits);
        let f = frame_to(MAC, 1514);
        assert_eq!(receive(&mut rig, &[&f]), 1, "size {size}");
        let n = 1514usize.div_ceil(size);
        let mut got = Vec::new();
        for i in 0..n {
            let d = desc(&rig, i as u64);
            let want_len = if i + 1 == n { 1514 - size * i } else { size };
            assert_eq!(usize::from(d.len), want_len, "size {size} desc {i}");
            assert_eq!(d.status & STAT_EOP != 0, i + 1 == n);
            assert_ne!(d.status & STAT_DD, 0);
            got.extend(buf(&rig, i as u64, want_len));
        }
        assert_eq!(got, f);
        assert_eq!(rig.r(RDH), n as u32);
    }
}

#[test]
fn long_frames_need_lpe() {
    let mut rig = Rig::new();
    setup(&mut rig, 16, 0);
    let jumbo = frame_to(MAC, 9000);
    assert_eq!(receive(&mut rig, &[jumbo.clone(), frame_to(MAC, 1519)]), 0);
    assert_eq!(rig.r(ROC), 2);
    assert_eq!(receive(&mut rig, &[frame_to(MAC, 1518 - 4)]), 1);
    rig.w(RCTL, RCTL_EN | RCTL_SECRC | RCTL_LPE);
    assert_eq!(receive(&mut rig, &[&jumbo]), 1);
    assert_eq!(rig.r(RDH), 1 + 5);
    assert_eq!(desc(&rig, 5).len as usize, 9000 - 4 * 2048);
}

#[test]
fn fcs_is_stored_unless_secrc() {
    let mut rig = Rig::new();
    setup(&mut rig, 8, 0);
    rig.w(RCTL, RCTL_EN);
    let f = frame_to(MAC, 100);
    receive(&mut rig, &[&f]);
    assert_eq!(desc(&rig, 0).len, 104);
    let stored = buf(&rig, 0, 104);
    // Bitwise CRC-32, independent of the model's table.
    let mut crc = !0u32;
    for &b in &f {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                crc >> 1 ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    assert_eq!(&stored[100..], &(!crc).to_le_bytes());
}

#[test]
fn short_frames_arrive_padded() {
    let mut rig = Rig::new();
    setup(&mut rig, 8, 0);
    receive(&mut rig, &[frame_to(MAC, 42)]);
    assert_eq!(desc(&rig, 0).len, 60);
}

#[test]
fn ring_wraps_around() {
    let mut rig = Rig::new();
    setup(&mut rig, 8, 0);
    let mut got = Vec::new();
    let mut next = 0u64;
    for round in 0..6u8 {
        let frames: Vec<Vec<u8>> = (0..5)
            .map(|i| {
                let mut f = frame_to(MAC, 64);
                f[20] = round * 8 + i;
                f
            })
            .collect();
        for f in &frames {
            rig.inject(f);
        }
        rig.dev.rx_poll();
        // The driver takes what is done and gives the buffers back.
        loop {
            let d = desc(&rig, next);
            if d.status & STAT_DD == 0 {
                break;
            }
            got.push(buf(&rig, next, 64)[20]);
            rig.put(RING + next * 16 + 12, &[0]);
            next = (next + 1) % 8;
        }
        rig.w(RDT, ((next + 7) % 8) as u32);
    }
    assert_eq!(
        got,
        (0..6u8)
            .flat_map(|r| (0..5).map(move |i| r * 8 + i))
            .collect::<Vec<_>>()
    );
}

#[test]
fn checksum_status_follows_rxcsum() {
    let mut rig = Rig::new();
    setup(&mut rig, 16, 0);
    let mut good = ip_frame(MAC, 6, &[1; 77]);
    let ipc = internet_checksum(&[&good[14..34]]);
    good[24..26].copy_from_slice(&ipc.to_be_bytes());
    let l4 = good[34..].to_vec();
    let c = internet_checksum(&[&pseudo_header(&good, l4.len()), &l4]);
    good[50..52].copy_from_slice(&c.to_be_bytes());
    assert!(ipv4_ok(&good) && l4_ok(&good));
    let mut bad_tcp = good.clone();
    bad_tcp[60] ^= 1;
    let mut bad_ip = good.clone();
    bad_ip[24] ^= 1;
    rig.w(RXCSUM, RXCSUM_IPOFL | RXCSUM_TUOFL);
    receive(&mut rig, &[good.clone(), bad_tcp, bad_ip]);
    let both = STAT_DD | STAT_EOP | STAT_IPCS | STAT_TCPCS;
    assert_eq!((desc(&rig, 0).status, desc(&rig, 0).errors), (both, 0));
    assert_eq!(
        (desc(&rig, 1).status, desc(&rig, 1).errors),
        (both, ERR_TCPE)
    );
    assert_eq!(
        (desc(&rig, 2).status, desc(&rig, 2).errors),
        (both, ERR_IPE)
    );
    rig.w(RXCSUM, 0);
    let mut v6 = good.clone();
    v6[12..14].copy_from_slice(&[0x86, 0xdd]);
    receive(&mut rig, &[good, v6]);
    assert_eq!(desc(&rig, 3).status, STAT_DD | STAT_EOP | STAT_IXSM);
    assert_eq!(desc(&rig, 4).status, STAT_DD | STAT_EOP | STAT_IXSM);
}

#[test]
fn frames_wait_in_the_fifo_then_are_missed() {
    let mut rig = Rig::new();
    setup(&mut rig, 8, 0); // seven buffers
    rig.w(IMS, ICR_RXO);
    let frames: Vec<Vec<u8>> = (0..45).map(|_| frame_to(MAC, 1514)).collect();
    assert_eq!(receive(&mut rig, &frames), 7);
    // 48 KiB of FIFO holds 32 such frames; the other 6 are missed.
    assert_eq!(rig.r(MPC), 6);
    assert_eq!(rig.r(RNBC), 38);
    assert!(rig.level());
    assert_eq!(rig.r(ICR) & ICR_RXO, ICR_RXO);
    // Giving buffers back delivers from the FIFO at once.
    for i in 0..7 {
        rig.put(RING + i * 16 + 12, &[0]);
    }
    rig.w(RDT, 6);
    assert_eq!(rig.r(RDH), 6);
    assert_eq!(rig.dev.counters().rx_frames, 14);
    assert_eq!(rig.dev.counters().rx_missed, 6);
}

#[test]
fn receiver_off_drops_frames() {
    let mut rig = Rig::new();
    setup(&mut rig, 8, 0);
    rig.w(RCTL, 0);
    assert_eq!(receive(&mut rig, &[frame_to(MAC, 64)]), 0);
    rig.w(RCTL, RCTL_EN | RCTL_SECRC);
    assert_eq!(rig.r(RDH), 0);
    assert_eq!(rig.dev.counters().rx_dropped, 1);
}

#[test]
fn rdtr_and_radv_moderate_rxt0() {
    let mut rig = Rig::new();
    setup(&mut rig, 16, 0);
    rig.w(IMS, ICR_RXT0);
    rig.w(RDTR, 100); // 102.4 us after the last frame
    rig.w(RADV, 250); // 256 us after the first
    receive(&mut rig, &[frame_to(MAC, 64)]);
    assert!(!rig.level());
    let now = rig.advance(Duration::from_micros(90));
    receive(&mut rig, &[frame_to(MAC, 64)]);
    rig.dev.poll(now);
    assert!(!rig.level(), "restarted by the second frame");
    let now = rig.advance(Duration::from_micros(110));
    rig.dev.poll(now);
    assert!(rig.level(), "packet timer expired");
    rig.r(ICR);
    // A steady stream: the packet timer keeps restarting, the absolute one fires.
    for i in 0..6 {
        let now = rig.advance(Duration::from_micros(60));
        receive(&mut rig, &[frame_to(MAC, 64)]);
        rig.dev.poll(now);
        assert_eq!(rig.level(), i == 5, "frame {i}");
    }
    assert!(rig.level(), "RADV bounded the delay");
    assert_eq!(rig.r(ICR) & ICR_RXT0, ICR_RXT0);
    // The register access itself notices a due timer.
    receive(&mut rig, &[frame_to(MAC, 64)]);
    rig.advance(Duration::from_millis(1));
    assert_eq!(rig.r(ICR) & ICR_RXT0, ICR_RXT0);
}

#[test]
fn rxdmt0_at_the_threshold() {
    let mut rig = Rig::new();
    setup(&mut rig, 16, 1 << RCTL_RDMTS_SHIFT); // threshold: 16 / 4 = 4 free
    let frames: Vec<Vec<u8>> = (0..10).map(|_| frame_to(MAC, 64)).collect();
    receive(&mut rig, &frames[..10]);
    assert_eq!(rig.r(ICR) & ICR_RXDMT0, 0, "15 - 10 = 5 free");
    receive(&mut rig, &frames[..1]);
    assert_eq!(rig.r(ICR) & ICR_RXDMT0, ICR_RXDMT0);
}

#[test]
fn vlan_tags_are_stripped_with_vme_and_filtered_with_vfe() {
    let mut rig = Rig::new();
    setup(&mut rig, 8, 0);
    let mut tagged = MAC.to_vec();
    tagged.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x81, 0x00, 0x20, 0x05, 0x08, 0x00]);
    tagged.extend_from_slice(&[0x33; 60]);
    let ctrl = rig.r(CTRL);
    rig.w(CTRL, ctrl | CTRL_VME);
    rig.w(RCTL, RCTL_EN | RCTL_SECRC | RCTL_VFE);
    assert_eq!(receive(&mut rig, &[&tagged]), 0, "VLAN 5 not in VFTA");
    rig.w(VFTA, 1 << 5);
    assert_eq!(receive(&mut rig, &[&tagged]), 1);
    let d = desc(&rig, 0);
    assert_eq!((d.len, d.special), (tagged.len() as u16 - 4, 0x2005));
    assert_ne!(d.status & STAT_VP, 0);
    assert_eq!(&buf(&rig, 0, 14)[12..14], &[0x08, 0x00]);
}

#[test]
fn descriptor_ring_outside_memory_drops_frames() {
    let mut rig = Rig::new();
    setup(&mut rig, 8, 0);
    rig.w(RDBAL, 0xf000_0000);
    assert_eq!(receive(&mut rig, &[frame_to(MAC, 64)]), 0);
    assert_eq!(rig.r(RDH), 0);
    assert_eq!(rig.dev.counters().dma_errors, 1);
}

#[test]
fn buffer_outside_memory_drops_the_frame_and_writes_nothing() {
    let mut rig = Rig::new();
    setup(&mut rig, 8, 0);
    for (i, a) in [(0u64, MEM_SIZE as u64 - 8), (1, u64::MAX - 3)] {
        rig.put(RING + i * 16, &a.to_le_bytes());
    }
    assert_eq!(receive(&mut rig, &[frame_to(MAC, 64)]), 0);
    assert_eq!(desc(&rig, 0).status, 0);
    assert_eq!(rig.r(RDH), 0);
    // A frame spanning descriptors with a bad second buffer is dropped whole.
    rig.w(RCTL, RCTL_EN | RCTL_SECRC | 3 << RCTL_BSIZE_SHIFT);
    rig.put(RING, &BUFS.to_le_bytes());
    assert_eq!(receive(&mut rig, &[frame_to(MAC, 300)]), 0);
    assert_eq!(desc(&rig, 0).status, 0);
    assert_eq!(rig.dev.counters().dma_errors, 2);
}

#[test]
fn bad_ring_registers_keep_frames_in_the_fifo() {
    let mut rig = Rig::new();
    setup(&mut rig, 8, 0);
    rig.w(RDT, 20);
    assert_eq!(receive(&mut rig, &[frame_to(MAC, 64)]), 0);
    rig.w(RDLEN, 0);
    rig.w(RDT, 3);
    assert_eq!(rig.r(RDH), 0);
    assert_eq!(rig.r(RNBC), 1);
    rig.w(RDLEN, 128);
    rig.w(RDH, 9); // head past the ring
    rig.w(RDT, 7);
    assert_eq!(rig.r(RDH), 9);
    assert_eq!(rig.r(RNBC), 0);
    rig.w(RDH, 0);
    rig.w(RDT, 7); // a usable ring again: the waiting frame goes in
    assert_eq!(rig.r(RDH), 1);
    assert_eq!(buf(&rig, 0, 64), frame_to(MAC, 64));
}

#[test]
fn no_bus_mastering_no_dma() {
    let mut rig = Rig::new();
    setup(&mut rig, 8, 0);
    rig.dev
        .config_write(1, 0, &u32::from(CMD_MEMORY | CMD_IO).to_le_bytes());
    assert_eq!(receive(&mut rig, &[frame_to(MAC, 64)]), 0);
    assert_eq!(desc(&rig, 0).status, 0);
    let cmd = u32::from(CMD_MEMORY | CMD_IO | CMD_BUS_MASTER);
    rig.dev.config_write(1, 0, &cmd.to_le_bytes());
    assert_eq!(rig.r(RDH), 1);
}

#[test]
fn with_flow_control_a_full_fifo_leaves_frames_on_the_wire_instead_of_dropping() {
    let mut rig = Rig::new();
    setup(&mut rig, 8, 0); // seven buffers
    let ctrl = rig.r(CTRL);
    rig.w(CTRL, ctrl | CTRL_TFCE | CTRL_RFCE);
    let frames: Vec<Vec<u8>> = (0..45).map(|_| frame_to(MAC, 1514)).collect();

    assert_eq!(receive(&mut rig, &frames), 7);

    // XOFF: nothing missed; the FIFO holds what fits and the rest waits in the back-end.
    assert_eq!(rig.r(MPC), 0);
    assert_eq!(rig.dev.counters().rx_missed, 0);
    for i in 0..7 {
        rig.put(RING + i * 16 + 12, &[0]);
    }
    rig.w(RDT, 6);
    assert_eq!(rig.dev.counters().rx_frames, 14);
}
