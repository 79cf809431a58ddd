//! Receive: address filtering and checksum checking (pure, 8254x SDM sections 3.2 and 13.5),
//! and the executor that moves frames from the back-end through the receive FIFO into the
//! guest's descriptor ring. Like the part's 48 KiB packet buffer, the FIFO holds frames that
//! arrive while the driver has no descriptors; when it is full, frames are missed (MPC, RXO).

use std::collections::VecDeque;

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::offload::{self, fold, ones_sum, MIN_FRAME};
use super::regs::*;
use super::tx::size_bucket;
use super::E1000;

pub const STAT_DD: u8 = 0x01;
pub const STAT_EOP: u8 = 0x02;
pub const STAT_IXSM: u8 = 0x04;
pub const STAT_VP: u8 = 0x08;
pub const STAT_TCPCS: u8 = 0x20;
pub const STAT_IPCS: u8 = 0x40;
pub const ERR_TCPE: u8 = 0x20;
pub const ERR_IPE: u8 = 0x40;

/// Longest frame (with FCS) accepted without RCTL.LPE, and with it.
pub const MAX_FRAME: usize = 1522;
pub const MAX_LONG_FRAME: usize = 16384;
/// Scratch size for one frame from the back-end.
const RECV_BUF: usize = MAX_LONG_FRAME + 64;
/// Frames taken from the back-end per call, so one flood cannot hold the vCPU.
const RECV_BUDGET: usize = 256;

/// How a frame was addressed, for the statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cast {
    Unicast,
    Multicast,
    Broadcast,
}

/// The receive filter registers, borrowed from the register file.
pub struct Filter<'a> {
    pub rctl: u32,
    /// RAL0, RAH0, RAL1, RAH1, ... (16 pairs).
    pub ra: &'a [u32],
    /// 128 MTA words.
    pub mta: &'a [u32],
    /// 128 VFTA words.
    pub vfta: &'a [u32],
    pub vet: u16,
}

/// The 12 bits of a multicast address that index the MTA, per RCTL.MO (section 13.5.1).
pub fn mta_hash(addr: &[u8], mo: u32) -> u16 {
    let (a4, a5) = (u16::from(addr[4]), u16::from(addr[5]));
    let h = match mo & 3 {
        0 => (a4 >> 4) | (a5 << 4),
        1 => (a4 >> 3) | (a5 << 5),
        2 => (a4 >> 2) | (a5 << 6),
        _ => a4 | (a5 << 8),
    };
    h & 0xfff
}

/// Decides whether the MAC accepts `frame`; `None` means it is filtered out.
pub fn filter(frame: &[u8], f: &Filter) -> Option<Cast> {
    if frame.len() < 14 {
        return None;
    }
    let da = &frame[..6];
    let tagged = u16::from_be_bytes([frame[12], frame[13]]) == f.vet;
    if f.rctl & RCTL_VFE != 0 && tagged && frame.len() >= 16 {
        let vid = (u16::from_be_bytes([frame[14], frame[15]]) & 0xfff) as usize;
        if f.vfta
            .get(vid >> 5)
            .is_none_or(|w| w & (1 << (vid & 31)) == 0)
        {
            return None;
        }
    }
    let exact = f.ra.chunks_exact(2).any(|p| {
        let (l, h) = (p[0], p[1]);
        h & RAH_AV != 0 && da[..4] == l.to_le_bytes() && da[4..6] == (h as u16).to_le_bytes()
    });
    if da == [0xff; 6] {
        return (f.rctl & (RCTL_BAM | RCTL_MPE | RCTL_UPE) != 0 || exact)
            .then_some(Cast::Broadcast);
    }
    if da[0] & 1 != 0 {
        let h = mta_hash(da, f.rctl >> RCTL_MO_SHIFT) as usize;
        let hit = f.mta.get(h >> 5).is_some_and(|w| w & (1 << (h & 31)) != 0);
        return (exact || hit || f.rctl & (RCTL_MPE | RCTL_UPE) != 0).then_some(Cast::Multicast);
    }
    (exact || f.rctl & RCTL_UPE != 0).then_some(Cast::Unicast)
}

/// Receive checksum offload (RXCSUM.IPOFL/TUOFL, section 3.2.9): status and error bits.
/// IXSM says nothing was checked. The 82540EM checks IPv4 with TCP or UDP only.
pub fn rx_checksum(frame: &[u8], rxcsum: u32) -> (u8, u8) {
    let be16 = |at: usize| {
        frame
            .get(at..at + 2)
            .map(|s| u16::from_be_bytes([s[0], s[1]]))
    };
    let mut l3 = 14;
    let mut ethertype = be16(12);
    if ethertype == Some(0x8100) {
        l3 = 18;
        ethertype = be16(16);
    }
    let none = (STAT_IXSM, 0);
    if ethertype != Some(0x0800) || rxcsum & (RXCSUM_IPOFL | RXCSUM_TUOFL) == 0 {
        return none;
    }
    let Some(&vihl) = frame.get(l3) else {
        return none;
    };
    let ihl = usize::from(vihl & 0xf) * 4;
    if vihl >> 4 != 4 || ihl < 20 || frame.len() < l3 + ihl {
        return none;
    }
    let (mut status, mut errors) = (0u8, 0u8);
    if rxcsum & RXCSUM_IPOFL != 0 {
        status |= STAT_IPCS;
        if fold(ones_sum(&frame[l3..l3 + ihl], 0)) != 0xffff {
            errors |= ERR_IPE;
        }
    }
    let total = usize::from(be16(l3 + 2).unwrap_or(0));
    let fragment = be16(l3 + 6).unwrap_or(0) & 0x3fff != 0;
    let proto = frame[l3 + 9];
    let l4 = l3 + ihl;
    let end = (l3 + total).min(frame.len());
    let min_hdr = if proto == 6 { 20 } else { 8 };
    if rxcsum & RXCSUM_TUOFL != 0 && !fragment && (proto == 6 || proto == 17) && end >= l4 + min_hdr
    {
        status |= STAT_TCPCS;
        let udp_none = proto == 17 && be16(l4 + 6) == Some(0);
        let pseudo = ones_sum(
            &frame[l3 + 12..l3 + 20],
            u32::from(proto) + (end - l4) as u32,
        );
        if !udp_none && fold(ones_sum(&frame[l4..end], pseudo)) != 0xffff {
            errors |= ERR_TCPE;
        }
    }
    if status == 0 {
        return none;
    }
    (status, errors)
}

/// Frames waiting for descriptors, and reusable buffers.
#[derive(Default)]
pub struct RxState {
    pub fifo: VecDeque<Vec<u8>>,
    pub fifo_bytes: usize,
    pool: Vec<Vec<u8>>,
    recv: Vec<u8>,
    work: Vec<u8>,
    addrs: Vec<u64>,
}

impl RxState {
    pub fn clear(&mut self) {
        while let Some(f) = self.fifo.pop_front() {
            self.pool.push(f);
        }
        self.fifo_bytes = 0;
    }
}

/// What became of an attempt to store a frame in the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Store {
    Done,
    NoDescriptors,
    /// Bad DMA: nothing was written, the frame is lost.
    Dropped,
}

impl E1000 {
    /// Moves frames into the guest: first those waiting in the FIFO, then new ones from the
    /// back-end (a bounded number per call). Returns the frames stored in guest memory. The
    /// VMM calls this when the back-end's fd is readable; RDT writes and RCTL.EN call it too.
    pub fn rx_poll(&mut self) -> usize {
        let mut stored = self.rx_drain();
        let mut buf = std::mem::take(&mut self.rx.recv);
        buf.resize(RECV_BUF, 0);
        let capacity = ((self.reg(PBA) & 0x3f) as usize) * 1024;
        for _ in 0..RECV_BUDGET {
            // With transmit flow control on (CTRL.TFCE, as Linux's default fc=full sets), a
            // full receive FIFO sends XOFF and the link partner pauses: frames wait in the
            // back-end (the in-process peer holds them; a TAP's queue drops what overflows).
            // Without it the wire keeps sending and the FIFO drops (MPC), as below.
            if self.reg(CTRL) & CTRL_TFCE != 0
                && !self.rx.fifo.is_empty()
                && self.rx.fifo_bytes + RECV_BUF > capacity
            {
                break;
            }
            let (mut len, meta) = match self.backend.recv(&mut buf) {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    self.counters.backend_errors += 1;
                    log::debug!("e1000: back-end receive failed: {e}");
                    break;
                }
            };
            len = len.min(buf.len());
            if self.reg(RCTL) & RCTL_EN == 0 || meta.gso.is_some() {
                // The receiver is off (the wire's frames go nowhere), or the back-end sent
                // an unsegmented frame this part could never have received.
                self.counters.rx_dropped += 1;
                continue;
            }
            if let Some((start, off)) = meta.csum {
                let (s, o) = (start as usize, start as usize + off as usize);
                offload::insert_checksum(&mut buf[..len], s, 0, o, 0);
            }
            if len < MIN_FRAME {
                buf[len..MIN_FRAME].fill(0); // the wire carries at least 64 bytes
                len = MIN_FRAME;
            }
            if self.rx_accept(&buf[..len]) {
                if self.rx.fifo.is_empty() {
                    match self.rx_store(&buf[..len]) {
                        Store::Done => {
                            stored += 1;
                            continue;
                        }
                        Store::Dropped => continue,
                        Store::NoDescriptors => {}
                    }
                }
                self.rx_enqueue(&buf[..len]);
            }
        }
        self.rx.recv = buf;
        stored
    }

    /// Filters a frame and counts it; true when it goes on to the FIFO or the ring.
    fn rx_accept(&mut self, frame: &[u8]) -> bool {
        let with_fcs = frame.len() + 4;
        self.stat_add(TPR, 1);
        self.stat_add(TORL, with_fcs as u64);
        let max = if self.reg(RCTL) & RCTL_LPE != 0 {
            MAX_LONG_FRAME
        } else {
            MAX_FRAME
        };
        if with_fcs > max {
            self.stat_add(ROC, 1);
            self.counters.rx_dropped += 1;
            return false;
        }
        let r = &self.regs;
        let idx = |off: u32| (off >> 2) as usize;
        let f = Filter {
            rctl: r[idx(RCTL)],
            ra: &r[idx(RAL0)..idx(RAL0) + 32],
            mta: &r[idx(MTA)..idx(MTA) + 128],
            vfta: &r[idx(VFTA)..idx(VFTA) + 128],
            vet: r[idx(VET)] as u16,
        };
        let Some(cast) = filter(frame, &f) else {
            self.counters.rx_filtered += 1;
            return false;
        };
        self.stat_add(GPRC, 1);
        self.stat_add(GORCL, with_fcs as u64);
        self.stat_add(PRC64 + 4 * size_bucket(with_fcs as u64), 1);
        match cast {
            Cast::Broadcast => self.stat_add(BPRC, 1),
            Cast::Multicast => self.stat_add(MPRC, 1),
            Cast::Unicast => {}
        }
        true
    }

    /// Keeps a frame in the packet buffer until descriptors come, or misses it.
    fn rx_enqueue(&mut self, frame: &[u8]) {
        let capacity = ((self.reg(PBA) & 0x3f) as usize) * 1024;
        self.stat_add(RNBC, 1);
        if self.rx.fifo_bytes + frame.len() > capacity {
            self.stat_add(MPC, 1);
            self.counters.rx_missed += 1;
            self.raise(ICR_RXO);
            return;
        }
        let mut v = self.rx.pool.pop().unwrap_or_default();
        v.clear();
        v.extend_from_slice(frame);
        self.rx.fifo_bytes += v.len();
        self.rx.fifo.push_back(v);
    }

    fn rx_drain(&mut self) -> usize {
        let mut stored = 0;
        while let Some(f) = self.rx.fifo.pop_front() {
            match self.rx_store(&f) {
                Store::NoDescriptors => {
                    self.rx.fifo.push_front(f);
                    break;
                }
                s => {
                    stored += usize::from(s == Store::Done);
                    self.rx.fifo_bytes -= f.len();
                    self.rx.pool.push(f);
                }
            }
        }
        stored
    }

    fn rx_ring(&mut self) -> Option<(u64, u32)> {
        let n = self.reg(RDLEN) / 16;
        let base = u64::from(self.reg(RDBAH)) << 32 | u64::from(self.reg(RDBAL));
        if n == 0 || self.reg(RDH) >= n || self.reg(RDT) >= n {
            self.counters.bad_ring += u64::from(n != 0);
            return None;
        }
        Some((base, n))
    }

    /// Writes one accepted frame into as many descriptors as its length needs.
    fn rx_store(&mut self, frame: &[u8]) -> Store {
        if self.reg(RCTL) & RCTL_EN == 0 || !self.config.bus_master() {
            return Store::NoDescriptors;
        }
        let Some((base, n)) = self.rx_ring() else {
            return Store::NoDescriptors;
        };
        let rctl = self.reg(RCTL);
        let bufsize = rx_buffer_size(rctl);
        let rxcsum = self.reg(RXCSUM);
        let (mut status, errors) = rx_checksum(frame, rxcsum);
        let mut work = std::mem::take(&mut self.rx.work);
        work.clear();
        let mut special = 0u16;
        let tagged = u16::from_be_bytes([frame[12], frame[13]]) == self.reg(VET) as u16;
        if self.reg(CTRL) & CTRL_VME != 0 && tagged && frame.len() >= 18 {
            special = u16::from_be_bytes([frame[14], frame[15]]);
            status |= STAT_VP;
            work.extend_from_slice(&frame[..12]);
            work.extend_from_slice(&frame[16..]);
        } else {
            work.extend_from_slice(frame);
        }
        let pcss = (rxcsum & 0xff) as usize;
        let pkt_csum = fold(ones_sum(work.get(pcss..).unwrap_or(&[]), 0));
        if rctl & RCTL_SECRC == 0 {
            let fcs = offload::crc32(&work);
            work.extend_from_slice(&fcs.to_le_bytes());
        }
        let result = self.rx_write(&work, base, n, bufsize, [status, errors], special, pkt_csum);
        self.rx.work = work;
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn rx_write(
        &mut self,
        data: &[u8],
        base: u64,
        n: u32,
        bufsize: usize,
        [status, errors]: [u8; 2],
        special: u16,
        pkt_csum: u16,
    ) -> Store {
        let needed = data.len().div_ceil(bufsize) as u32;
        let (head, tail) = (self.reg(RDH), self.reg(RDT));
        let free = (tail + n - head) % n;
        if needed > free {
            return Store::NoDescriptors;
        }
        // Fetch every buffer address first: a bad one drops the frame with nothing written.
        let mut addrs = std::mem::take(&mut self.rx.addrs);
        addrs.clear();
        let mut ok = true;
        for (i, chunk) in data.chunks(bufsize).enumerate() {
            let at = base.wrapping_add(u64::from((head + i as u32) % n) * 16);
            match self.mem.read_obj::<u64>(GuestAddress(at)) {
                Ok(a)
                    if self.mem.check_range(GuestAddress(a), chunk.len())
                        && self.mem.check_range(GuestAddress(at), 16) =>
                {
                    addrs.push(a)
                }
                _ => {
                    ok = false;
                    break;
                }
            }
        }
        if !ok {
            self.counters.dma_errors += 1;
            self.rx.addrs = addrs;
            return Store::Dropped;
        }
        let last = needed as usize - 1;
        for (i, (chunk, &a)) in data.chunks(bufsize).zip(addrs.iter()).enumerate() {
            let at = base.wrapping_add(u64::from((head + i as u32) % n) * 16);
            let mut wb = [0u8; 8];
            wb[..2].copy_from_slice(&(chunk.len() as u16).to_le_bytes());
            if i == last {
                wb[2..4].copy_from_slice(&pkt_csum.to_le_bytes());
                wb[4] = STAT_DD | STAT_EOP | status;
                wb[5] = errors;
                wb[6..8].copy_from_slice(&special.to_le_bytes());
            } else {
                wb[4] = STAT_DD;
            }
            // Both ranges were checked above; a failure here would be a hole that appeared
            // in between, which guest RAM does not do.
            let w1 = self.mem.write_slice(chunk, GuestAddress(a));
            let w2 = self.mem.write_slice(&wb, GuestAddress(at + 8));
            if w1.is_err() || w2.is_err() {
                self.counters.dma_errors += 1;
            }
        }
        self.rx.addrs = addrs;
        self.counters.rx_descriptors += u64::from(needed);
        self.counters.rx_frames += 1;
        self.counters.rx_bytes += data.len() as u64;
        let new_head = (head + needed) % n;
        self.set_reg(RDH, new_head);
        let threshold = n >> (1 + ((self.reg(RCTL) >> RCTL_RDMTS_SHIFT) & 3).min(2));
        let left = (tail + n - new_head) % n;
        if left <= threshold && free > threshold {
            self.raise(ICR_RXDMT0);
        }
        self.rx_interrupt();
        Store::Done
    }

    /// RXT0 now, or when the packet timer (RDTR, restarted by each frame) or the absolute
    /// timer (RADV, started by the first frame) expires, whichever comes first.
    fn rx_interrupt(&mut self) {
        let rdtr = self.reg(RDTR) & 0xffff;
        if rdtr == 0 {
            self.raise(ICR_RXT0);
            return;
        }
        let now = self.now();
        self.timers.rdtr = Some(now + super::units_1024ns(rdtr));
        let radv = self.reg(RADV) & 0xffff;
        if radv != 0 && self.timers.radv.is_none() {
            self.timers.radv = Some(now + super::units_1024ns(radv));
        }
    }
}

impl E1000 {
    /// Frames wait in the receive FIFO for descriptors: pulling more from the back-end now
    /// would only overflow it.
    pub fn rx_backlogged(&self) -> bool {
        !self.rx.fifo.is_empty()
    }
}
