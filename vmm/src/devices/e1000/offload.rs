//! Pure frame arithmetic shared by the transmit and receive paths: Internet checksums, the
//! Ethernet FCS, 802.1Q tag insertion, and TCP segmentation as the 82540EM does it for a TSO
//! context (8254x SDM section 3.5). No guest memory here: these are what proptest drives.

// Context descriptor TUCMD bits (8254x SDM 3.3.6).
pub const TUCMD_TCP: u8 = 0x01;
pub const TUCMD_IP: u8 = 0x02;
pub const TUCMD_TSE: u8 = 0x04;

/// The offload parameters a context descriptor sets; they persist until the next one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxContext {
    pub ipcss: u8,
    pub ipcso: u8,
    pub ipcse: u16,
    pub tucss: u8,
    pub tucso: u8,
    pub tucse: u16,
    pub paylen: u32,
    pub tucmd: u8,
    pub hdrlen: u8,
    pub mss: u16,
}

/// Largest frame the transmit path assembles before dropping it: a 64 KiB TSO payload plus a
/// header the 8-bit HDRLEN can describe.
pub const MAX_TX_FRAME: usize = 0x1_0000 + 0x100;
/// Minimum frame without FCS; shorter frames are padded (TCTL.PSP) or arrive padded.
pub const MIN_FRAME: usize = 60;

/// One's-complement sum of `data` as big-endian 16-bit words (an odd last byte is padded),
/// added to `acc`; not folded.
pub fn ones_sum(data: &[u8], acc: u32) -> u32 {
    let mut acc = u64::from(acc);
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = chunks.remainder() {
        acc += u64::from(*b) << 8;
    }
    while acc > 0xffff_ffff {
        acc = (acc & 0xffff_ffff) + (acc >> 32);
    }
    acc as u32
}

/// Folds a 32-bit one's-complement sum to 16 bits.
pub fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Computes the checksum over `frame[start..=end]` (`end` 0 means to the end of the frame, as
/// the descriptors define it), plus `extra` (already-summed words), and stores its complement
/// big-endian at `at`. Returns false (and changes nothing) when the offsets fall outside the
/// frame, where the hardware does not insert a checksum.
pub fn insert_checksum(frame: &mut [u8], start: usize, end: usize, at: usize, extra: u32) -> bool {
    let last = if end == 0 {
        frame.len().saturating_sub(1)
    } else {
        end.min(frame.len().saturating_sub(1))
    };
    if frame.is_empty() || start > last || at + 2 > frame.len() {
        return false;
    }
    let c = !fold(ones_sum(&frame[start..=last], extra));
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    true
}

/// The IEEE 802.3 CRC-32 (the FCS), as the frame carries it: little-endian after the data.
/// Slicing-by-8, because with RCTL.SECRC clear (Linux's e1000 leaves it clear) every received
/// frame gets one.
pub fn crc32(data: &[u8]) -> u32 {
    static TABLES: std::sync::OnceLock<[[u32; 256]; 8]> = std::sync::OnceLock::new();
    let t = TABLES.get_or_init(|| {
        let mut t = [[0u32; 256]; 8];
        for (i, e) in t[0].iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        for k in 1..8 {
            let (done, rest) = t.split_at_mut(k);
            for (e, &p) in rest[0].iter_mut().zip(done[k - 1].iter()) {
                *e = (p >> 8) ^ done[0][(p & 0xff) as usize];
            }
        }
        t
    });
    let b = |v: u32, shift: u32| ((v >> shift) & 0xff) as usize;
    let mut crc = !0u32;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let lo = crc ^ u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        let hi = u32::from_le_bytes([c[4], c[5], c[6], c[7]]);
        crc = t[7][b(lo, 0)]
            ^ t[6][b(lo, 8)]
            ^ t[5][b(lo, 16)]
            ^ t[4][b(lo, 24)]
            ^ t[3][b(hi, 0)]
            ^ t[2][b(hi, 8)]
            ^ t[1][b(hi, 16)]
            ^ t[0][b(hi, 24)];
    }
    for &x in chunks.remainder() {
        crc = t[0][((crc ^ u32::from(x)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// Inserts an 802.1Q tag after the two MAC addresses.
pub fn insert_vlan(frame: &mut Vec<u8>, tpid: u16, tci: u16) {
    if frame.len() < 12 {
        return;
    }
    let mut tag = [0u8; 4];
    tag[..2].copy_from_slice(&tpid.to_be_bytes());
    tag[2..].copy_from_slice(&tci.to_be_bytes());
    frame.splice(12..12, tag);
}

fn put16(buf: &mut [u8], at: usize, v: u16) {
    if let Some(s) = buf.get_mut(at..at + 2) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

fn get16(buf: &[u8], at: usize) -> u16 {
    buf.get(at..at + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .unwrap_or(0)
}

/// Why a TSO frame could not be segmented (the part would send garbage; we drop and count).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    #[error("tso with mss 0")]
    ZeroMss,
    #[error("tso header of {hdr} bytes in a frame of {len}")]
    ShortFrame { hdr: usize, len: usize },
    #[error("tso checksum offsets outside the header")]
    BadOffsets,
}

/// Which checksums the data descriptor asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Insert {
    pub ip: bool,
    pub l4: bool,
}

/// Applies the context's checksum insertion to a whole (non-TSO) frame.
pub fn checksum_frame(frame: &mut [u8], ctx: &TxContext, ins: Insert) {
    if ins.ip {
        insert_checksum(
            frame,
            ctx.ipcss as usize,
            ctx.ipcse as usize,
            ctx.ipcso as usize,
            0,
        );
    }
    if ins.l4 {
        l4_checksum(frame, ctx, 0);
    }
}

fn l4_checksum(frame: &mut [u8], ctx: &TxContext, extra: u32) {
    let at = ctx.tucso as usize;
    if insert_checksum(frame, ctx.tucss as usize, ctx.tucse as usize, at, extra)
        && ctx.tucmd & TUCMD_TCP == 0
        && get16(frame, at) == 0
    {
        // A UDP checksum that computes to zero is sent as all ones (RFC 768).
        put16(frame, at, 0xffff);
    }
}

/// Cuts a TSO frame (header of `ctx.hdrlen` bytes, then payload) into segments of at most
/// `ctx.mss` payload bytes, fixing per segment the IPv4 total length and identification (or
/// the IPv6 payload length), the TCP sequence number and flags (FIN and PSH only on the last),
/// the UDP length, and the checksums asked for; the L4 checksum field holds the pseudo-header
/// sum without length, to which the segment's L4 length is added, as the SDM specifies.
/// Calls `out` with each segment; returns how many there were.
pub fn segment(
    frame: &[u8],
    ctx: &TxContext,
    ins: Insert,
    seg: &mut Vec<u8>,
    out: &mut dyn FnMut(&mut Vec<u8>),
) -> Result<usize, SegmentError> {
    let hdr = ctx.hdrlen as usize;
    let mss = ctx.mss as usize;
    if mss == 0 {
        return Err(SegmentError::ZeroMss);
    }
    if hdr == 0 || hdr > frame.len() {
        return Err(SegmentError::ShortFrame {
            hdr,
            len: frame.len(),
        });
    }
    let (ipcss, tucss) = (ctx.ipcss as usize, ctx.tucss as usize);
    let tcp = ctx.tucmd & TUCMD_TCP != 0;
    let l4_fixups_end = tucss + if tcp { 14 } else { 6 };
    if ipcss + 6 > hdr || l4_fixups_end > hdr || tucss < ipcss {
        return Err(SegmentError::BadOffsets);
    }
    let payload = &frame[hdr..];
    let count = payload.len().div_ceil(mss).max(1);
    let ip_id = get16(frame, ipcss + 4);
    let seq = frame
        .get(tucss + 4..tucss + 8)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .unwrap_or(0);
    for i in 0..count {
        let chunk = payload
            .get(i * mss..((i + 1) * mss).min(payload.len()))
            .unwrap_or(&[]);
        let last = i + 1 == count;
        seg.clear();
        seg.extend_from_slice(&frame[..hdr]);
        seg.extend_from_slice(chunk);
        let len = seg.len();
        if ctx.tucmd & TUCMD_IP != 0 {
            put16(seg, ipcss + 2, (len - ipcss) as u16);
            put16(seg, ipcss + 4, ip_id.wrapping_add(i as u16));
        } else {
            put16(seg, ipcss + 4, len.saturating_sub(ipcss + 40) as u16);
        }
        if tcp {
            let s = seq.wrapping_add((i * mss) as u32);
            seg[tucss + 4..tucss + 8].copy_from_slice(&s.to_be_bytes());
            if !last {
                seg[tucss + 13] &= !(0x01 | 0x08); // FIN, PSH
            }
        } else {
            put16(seg, tucss + 4, (len - tucss) as u16);
        }
        if ins.ip {
            insert_checksum(seg, ipcss, ctx.ipcse as usize, ctx.ipcso as usize, 0);
        }
        if ins.l4 {
            l4_checksum(seg, ctx, (len - tucss) as u32);
        }
        out(seg);
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_of_the_check_string() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        // Lengths around the 8-byte stride agree with the bytewise definition.
        let data: Vec<u8> = (0..40u32).map(|i| (i * 37) as u8).collect();
        for n in 0..data.len() {
            let mut c = !0u32;
            for &x in &data[..n] {
                c ^= u32::from(x);
                for _ in 0..8 {
                    c = if c & 1 != 0 {
                        0xedb8_8320 ^ (c >> 1)
                    } else {
                        c >> 1
                    };
                }
            }
            assert_eq!(crc32(&data[..n]), !c, "length {n}");
        }
    }

    #[test]
    fn ones_sum_matches_rfc1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(ones_sum(&data, 0)), 0xddf2);
    }

    #[test]
    fn checksum_out_of_range_is_not_inserted() {
        let mut f = [0u8; 20];
        assert!(!insert_checksum(&mut f, 30, 0, 0, 0));
        assert!(!insert_checksum(&mut f, 0, 0, 19, 0));
        assert_eq!(f, [0u8; 20]);
    }
}
