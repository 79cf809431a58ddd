//! Transmit: descriptor decoding (pure, section 3.3 of the 8254x SDM: legacy, TCP/IP context
//! and TCP/IP data descriptors) and the ring executor that runs on a TDT write or when TCTL.EN
//! turns on. Descriptor done (DD) is written back only on descriptors with RS (or RPS) set,
//! as the SDM specifies and as Linux's e1000 relies on (it sets RS on each packet's last
//! descriptor and polls DD there).

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::offload::{self, Insert, TxContext, MAX_TX_FRAME, MIN_FRAME, TUCMD_TCP};
use super::regs::*;
use super::E1000;
use crate::backend::net::FrameMeta;

// Command bits (legacy CMD, data DCMD, context TUCMD share RS, DEXT and IDE).
pub const CMD_EOP: u8 = 0x01;
pub const CMD_IFCS: u8 = 0x02;
/// Legacy: insert checksum (IC). Data descriptor: TCP segmentation enable (TSE).
pub const CMD_IC_TSE: u8 = 0x04;
pub const CMD_RS: u8 = 0x08;
pub const CMD_RPS: u8 = 0x10;
pub const CMD_DEXT: u8 = 0x20;
pub const CMD_VLE: u8 = 0x40;
pub const CMD_IDE: u8 = 0x80;
pub const STA_DD: u8 = 0x01;
pub const POPTS_IXSM: u8 = 0x01;
pub const POPTS_TXSM: u8 = 0x02;

/// Offset of the status byte in every transmit descriptor format.
const STATUS_BYTE: u64 = 12;

/// One decoded transmit descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxDesc {
    Legacy {
        addr: u64,
        len: u16,
        cso: u8,
        cmd: u8,
        css: u8,
        special: u16,
    },
    Context {
        ctx: TxContext,
    },
    Data {
        addr: u64,
        len: u32,
        cmd: u8,
        popts: u8,
        special: u16,
    },
    /// DEXT with a descriptor type the part does not define: carries no data.
    Reserved {
        cmd: u8,
    },
}

impl TxDesc {
    /// Decodes the 16 bytes of a descriptor. Every bit pattern decodes to something.
    pub fn parse(raw: &[u8; 16]) -> TxDesc {
        let addr = u64::from_le_bytes(raw[..8].try_into().unwrap_or_default());
        let lower = u32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]]);
        let cmd = raw[11];
        let special = u16::from_le_bytes([raw[14], raw[15]]);
        if cmd & CMD_DEXT == 0 {
            return TxDesc::Legacy {
                addr,
                len: lower as u16,
                cso: raw[10],
                cmd,
                css: raw[13],
                special,
            };
        }
        match (lower >> 20) & 0xf {
            0 => TxDesc::Context {
                ctx: TxContext {
                    ipcss: raw[0],
                    ipcso: raw[1],
                    ipcse: u16::from_le_bytes([raw[2], raw[3]]),
                    tucss: raw[4],
                    tucso: raw[5],
                    tucse: u16::from_le_bytes([raw[6], raw[7]]),
                    paylen: lower & 0xf_ffff,
                    tucmd: cmd,
                    hdrlen: raw[13],
                    mss: special,
                },
            },
            1 => TxDesc::Data {
                addr,
                len: lower & 0xf_ffff,
                cmd,
                popts: raw[13],
                special,
            },
            _ => TxDesc::Reserved { cmd },
        }
    }

    pub fn cmd(&self) -> u8 {
        match *self {
            TxDesc::Legacy { cmd, .. } | TxDesc::Data { cmd, .. } | TxDesc::Reserved { cmd } => cmd,
            TxDesc::Context { ctx } => ctx.tucmd,
        }
    }

    /// Buffer address and length, for descriptors that carry data.
    pub fn buffer(&self) -> Option<(u64, usize)> {
        match *self {
            TxDesc::Legacy { addr, len, .. } => Some((addr, len as usize)),
            TxDesc::Data { addr, len, .. } => Some((addr, len as usize)),
            _ => None,
        }
    }
}

/// What the first descriptor of a packet asked for (the SDM takes CSS/CSO/IC and POPTS/TSE
/// from the first descriptor, VLE and the VLAN tag from the last).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketOpts {
    /// Legacy insert-checksum: (CSS, CSO).
    pub legacy_csum: Option<(u8, u8)>,
    pub tse: bool,
    pub insert: Insert,
}

impl PacketOpts {
    pub fn from_first(d: &TxDesc) -> PacketOpts {
        match *d {
            TxDesc::Legacy { cmd, css, cso, .. } if cmd & CMD_IC_TSE != 0 => PacketOpts {
                legacy_csum: Some((css, cso)),
                ..Default::default()
            },
            TxDesc::Data { cmd, popts, .. } => PacketOpts {
                legacy_csum: None,
                tse: cmd & CMD_IC_TSE != 0,
                insert: Insert {
                    ip: popts & POPTS_IXSM != 0,
                    l4: popts & POPTS_TXSM != 0,
                },
            },
            _ => PacketOpts::default(),
        }
    }
}

/// Why a packet was not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TxDrop {
    #[error("buffer at {0:#x} outside guest memory")]
    Dma(u64),
    #[error("frame longer than {MAX_TX_FRAME} bytes")]
    Oversize,
    #[error("empty frame")]
    Empty,
    #[error(transparent)]
    Segment(#[from] offload::SegmentError),
}

/// A packet being gathered from its descriptors.
#[derive(Default)]
pub struct TxState {
    pub ctx: TxContext,
    pub data: Vec<u8>,
    pub started: bool,
    pub opts: PacketOpts,
    pub drop: Option<TxDrop>,
    /// Scratch for segments and tagged frames.
    pub seg: Vec<u8>,
}

impl TxState {
    pub fn clear_packet(&mut self) {
        self.data.clear();
        self.started = false;
        self.opts = PacketOpts::default();
        self.drop = None;
    }
}

impl E1000 {
    fn tx_ring(&self) -> Option<(u64, u32)> {
        let n = self.reg(TDLEN) / 16;
        let base = u64::from(self.reg(TDBAH)) << 32 | u64::from(self.reg(TDBAL));
        let (h, t) = (self.reg(TDH), self.reg(TDT));
        if n == 0 || h >= n || t >= n {
            return None;
        }
        Some((base, n))
    }

    /// Processes descriptors from TDH up to TDT.
    pub(super) fn tx_process(&mut self) {
        if self.reg(TCTL) & TCTL_EN == 0 || !self.config.bus_master() {
            return;
        }
        if self.reg(TDH) == self.reg(TDT) {
            return;
        }
        let Some((base, n)) = self.tx_ring() else {
            // A head or tail past the ring: the part would wander off; we stall the ring.
            self.counters.bad_ring += 1;
            return;
        };
        let mut written_back = false;
        let mut delayed = false;
        while self.reg(TDH) != self.reg(TDT) {
            let head = self.reg(TDH);
            let Some(at) = base.checked_add(u64::from(head) * 16) else {
                self.counters.dma_errors += 1;
                return;
            };
            let mut raw = [0u8; 16];
            if self.mem.read_slice(&mut raw, GuestAddress(at)).is_err() {
                // The descriptor fetch fails: nothing is written, the ring stops here.
                self.counters.dma_errors += 1;
                return;
            }
            let desc = TxDesc::parse(&raw);
            self.counters.tx_descriptors += 1;
            self.tx_descriptor(&desc);
            let cmd = desc.cmd();
            if cmd & (CMD_RS | CMD_RPS) != 0 {
                let sta = raw[STATUS_BYTE as usize] | STA_DD;
                if self
                    .mem
                    .write_obj(sta, GuestAddress(at + STATUS_BYTE))
                    .is_err()
                {
                    self.counters.dma_errors += 1;
                }
                written_back = true;
                delayed |= cmd & CMD_IDE != 0;
            }
            self.set_reg(TDH, (head + 1) % n);
        }
        let mut cause = ICR_TXQE;
        if written_back {
            if delayed && self.reg(TIDV) & 0xffff != 0 {
                self.arm_tx_delay();
            } else {
                cause |= ICR_TXDW;
            }
        }
        self.raise(cause);
    }

    fn tx_descriptor(&mut self, desc: &TxDesc) {
        if let TxDesc::Context { ctx } = *desc {
            self.tx.ctx = ctx;
            return;
        }
        if !self.tx.started {
            self.tx.started = true;
            self.tx.opts = PacketOpts::from_first(desc);
        }
        if let Some((addr, len)) = desc.buffer() {
            self.tx_gather(addr, len);
        }
        if desc.cmd() & CMD_EOP != 0 {
            let vlan = match *desc {
                TxDesc::Legacy { cmd, special, .. } | TxDesc::Data { cmd, special, .. }
                    if cmd & CMD_VLE != 0 && self.reg(CTRL) & CTRL_VME != 0 =>
                {
                    Some(special)
                }
                _ => None,
            };
            if let Err(e) = self.tx_finish(vlan) {
                self.counters.tx_dropped += 1;
                log::debug!("e1000: transmit dropped: {e}");
            }
            self.tx.clear_packet();
        }
    }

    fn tx_gather(&mut self, addr: u64, len: usize) {
        if self.tx.drop.is_some() || len == 0 {
            return;
        }
        let old = self.tx.data.len();
        if old + len > MAX_TX_FRAME {
            // A chain that never ends: stop gathering, drop the packet at its EOP.
            self.tx.drop = Some(TxDrop::Oversize);
            self.tx.data.clear();
            return;
        }
        if !self.mem.check_range(GuestAddress(addr), len) {
            self.counters.dma_errors += 1;
            self.tx.drop = Some(TxDrop::Dma(addr));
            return;
        }
        self.tx.data.resize(old + len, 0);
        if self
            .mem
            .read_slice(&mut self.tx.data[old..], GuestAddress(addr))
            .is_err()
        {
            self.counters.dma_errors += 1;
            self.tx.drop = Some(TxDrop::Dma(addr));
        }
    }

    /// The packet's last descriptor has been read: offloads, then out to the back-end.
    fn tx_finish(&mut self, vlan: Option<u16>) -> Result<(), TxDrop> {
        if let Some(e) = self.tx.drop {
            return Err(e);
        }
        if self.tx.data.is_empty() {
            return Err(TxDrop::Empty);
        }
        let opts = self.tx.opts;
        let ctx = self.tx.ctx;
        let mut data = std::mem::take(&mut self.tx.data);
        let mut seg = std::mem::take(&mut self.tx.seg);
        let result = if opts.tse {
            let mut out = |s: &mut Vec<u8>| self.tx_send(s, vlan, FrameMeta::default());
            offload::segment(&data, &ctx, opts.insert, &mut seg, &mut out)
                .map(|_| self.stat_add(TSCTC, 1))
                .map_err(|e| {
                    self.stat_add(TSCTFC, 1);
                    TxDrop::from(e)
                })
        } else {
            let meta = self.tx_checksums(&mut data, &opts, &ctx, vlan.is_some());
            self.tx_send(&mut data, vlan, meta);
            Ok(())
        };
        data.clear();
        self.tx.data = data;
        self.tx.seg = seg;
        result
    }

    /// Inserts the checksums the packet asked for, or leaves the L4 one to the back-end when
    /// it can finish it (same semantics: sum from start to the end, complement stored at the
    /// offset over the seed software left there).
    fn tx_checksums(
        &mut self,
        data: &mut [u8],
        opts: &PacketOpts,
        ctx: &TxContext,
        tagged: bool,
    ) -> FrameMeta {
        let shift = if tagged { 4 } else { 0 };
        let can = self.backend.offloads().csum;
        let mut meta = FrameMeta::default();
        if let Some((css, cso)) = opts.legacy_csum {
            let (css, cso) = (css as usize, cso as usize);
            if can && cso > css && cso + 2 <= data.len() {
                meta.csum = Some(((css + shift) as u16, (cso - css) as u16));
            } else {
                offload::insert_checksum(data, css, 0, cso, 0);
            }
            return meta;
        }
        let ins = opts.insert;
        let (ss, so) = (ctx.tucss as usize, ctx.tucso as usize);
        let whole = ctx.tucse == 0 || ctx.tucse as usize + 1 >= data.len();
        let udp = ctx.tucmd & TUCMD_TCP == 0;
        if ins.l4 && can && whole && !udp && so > ss && so + 2 <= data.len() {
            offload::checksum_frame(
                data,
                ctx,
                Insert {
                    ip: ins.ip,
                    l4: false,
                },
            );
            meta.csum = Some(((ss + shift) as u16, (so - ss) as u16));
        } else {
            offload::checksum_frame(data, ctx, ins);
        }
        meta
    }

    fn tx_send(&mut self, frame: &mut Vec<u8>, vlan: Option<u16>, meta: FrameMeta) {
        if let Some(tci) = vlan {
            offload::insert_vlan(frame, self.reg(VET) as u16, tci);
        }
        if self.reg(TCTL) & TCTL_PSP != 0 && frame.len() < MIN_FRAME {
            frame.resize(MIN_FRAME, 0);
        }
        match self.backend.send(frame, &meta) {
            Ok(()) => {
                self.counters.tx_frames += 1;
                self.counters.tx_bytes += frame.len() as u64;
                self.count_tx(frame);
            }
            Err(e) => {
                // The wire never refuses a frame; a failing back-end loses it.
                self.counters.backend_errors += 1;
                log::debug!("e1000: back-end send failed: {e}");
            }
        }
    }

    fn count_tx(&mut self, frame: &[u8]) {
        let len = frame.len() as u64 + 4; // counted with the FCS
        self.stat_add(GPTC, 1);
        self.stat_add(TPT, 1);
        self.stat_add(GOTCL, len);
        self.stat_add(TOTL, len);
        self.stat_add(PTC64 + 4 * size_bucket(len), 1);
        if frame.len() >= 6 && frame[..6] == [0xff; 6] {
            self.stat_add(BPTC, 1);
        } else if frame.first().is_some_and(|b| b & 1 != 0) {
            self.stat_add(MPTC, 1);
        }
    }

    fn arm_tx_delay(&mut self) {
        let now = self.now();
        let tidv = self.reg(TIDV) & 0xffff;
        let tadv = self.reg(TADV) & 0xffff;
        self.timers.tidv = Some(now + super::units_1024ns(tidv));
        if tadv != 0 && self.timers.tadv.is_none() {
            self.timers.tadv = Some(now + super::units_1024ns(tadv));
        }
    }
}

/// Index of the 64/127/255/511/1023/1522-byte statistics bucket for a frame of `len` bytes.
pub fn size_bucket(len: u64) -> u32 {
    match len {
        0..=64 => 0,
        65..=127 => 1,
        128..=255 => 2,
        256..=511 => 3,
        512..=1023 => 4,
        _ => 5,
    }
}
