//! An in-process network peer: a host on the guest's Ethernet segment that exists only inside
//! the VMM process. It answers ARP (RFC 826) and ICMP echo (RFC 792) for its address and runs
//! the UDP services of [`crate::backend::net::services`] (echo on 7, discard on 9, the port-19
//! source, whose command format is documented there). Nothing it does leaves the process.
//!
//! It is single-threaded and pure behind [`NetBackend`]: the device worker calls `send` with
//! guest frames and `recv` for frames to the guest. Replies wait in a bounded queue; source
//! frames are made on demand in `recv`, one per call, until the stream is done. `rx_fd` is an
//! eventfd whose counter is non-zero exactly while `recv` has a frame (level-triggered).
//!
//! Guest frames with a partial checksum (`FrameMeta::csum`) are completed, GSO frames are
//! segmented in software ([`crate::backend::net::gso`]), so the peer accepts every offload. A UFO
//! datagram is taken whole once its checksum is complete: fragmenting it and reassembling the
//! fragments would give back the same datagram. The peer has no TCP: TCP segments are counted
//! and dropped as unsupported.

mod parse;
mod source;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, RawFd};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::gso;
use super::services::{ServiceCounters, SourceCommand, DISCARD_PORT, ECHO_PORT, SOURCE_PORT};
use super::wire::{
    build_udp_v4_into, finish_checksum, internet_checksum, put16, write_eth_header,
    write_ipv4_header, Arp, Mac, UdpV4, ARP_REPLY, ETHERTYPE_IPV4, ETH_HLEN, IPPROTO_ICMP,
    IPV4_HLEN,
};
use super::{FrameMeta, GsoKind, NetBackend, NetCounters, Offloads};
use parse::{Checks, Identity, Packet, Reject, Udp};
use source::SourceStream;

pub const DEFAULT_PEER_MAC: Mac = [0x02, 0, 0, 0, 0, 0x02];
pub const DEFAULT_PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// The address the guest is expected to use (the peer itself answers whoever asks).
pub const DEFAULT_GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    pub mac: Mac,
    pub ip: Ipv4Addr,
    /// Replies (ARP, ICMP, echo) waiting for the guest; more are dropped and counted, as a
    /// host's full transmit ring would.
    pub queue_frames: usize,
    /// Verify UDP and ICMP checksums of guest frames, as a host does. Frames whose checksum
    /// the peer completed itself are not verified again.
    pub verify_checksums: bool,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            mac: DEFAULT_PEER_MAC,
            ip: DEFAULT_PEER_IP,
            queue_frames: 256,
            verify_checksums: true,
        }
    }
}

/// Frames the peer did not take, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerDrops {
    pub malformed: u64,
    pub not_for_us: u64,
    pub fragments: u64,
    pub ip_options: u64,
    pub bad_checksum: u64,
    pub unsupported: u64,
    /// UDP to a port with no service.
    pub no_service: u64,
    pub arp_ignored: u64,
    /// Replies dropped because the queue to the guest was full.
    pub queue_full: u64,
    /// Frames to the guest dropped because the receive buffer was too small.
    pub too_big: u64,
    /// Source streams ended because their frames did not fit the receive buffer.
    pub source_aborted: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerStats {
    pub services: ServiceCounters,
    pub arp_replies: u64,
    pub icmp_echoed: u64,
    /// GSO frames from the guest, and the wire frames they made.
    pub gso_frames: u64,
    pub gso_segments: u64,
    pub drops: PeerDrops,
}

pub struct Peer {
    cfg: PeerConfig,
    queue: VecDeque<Vec<u8>>,
    /// Buffers of frames already delivered, reused for new replies.
    spare: Vec<Vec<u8>>,
    source: Option<SourceStream>,
    event: EventFd,
    /// Whether `event`'s counter is non-zero.
    signalled: bool,
    counters: NetCounters,
    stats: PeerStats,
    scratch: Vec<u8>,
    ip_id: u16,
}

impl Peer {
    pub fn new(cfg: PeerConfig) -> io::Result<Peer> {
        Ok(Peer {
            cfg,
            queue: VecDeque::new(),
            spare: Vec::new(),
            source: None,
            event: EventFd::new(EFD_NONBLOCK)?,
            signalled: false,
            counters: NetCounters::default(),
            stats: PeerStats::default(),
            scratch: Vec::new(),
            ip_id: 0,
        })
    }

    pub fn config(&self) -> &PeerConfig {
        &self.cfg
    }

    pub fn stats(&self) -> PeerStats {
        self.stats
    }

    /// Echoed, sunk and sourced frames and bytes.
    pub fn service_counters(&self) -> ServiceCounters {
        self.stats.services
    }

    fn identity(&self) -> Identity {
        Identity {
            mac: self.cfg.mac,
            ip: self.cfg.ip,
        }
    }

    fn next_ip_id(&mut self) -> u16 {
        self.ip_id = self.ip_id.wrapping_add(1);
        self.ip_id
    }

    fn spare_buf(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_default()
    }

    fn recycle(&mut self, mut buf: Vec<u8>) {
        // Keep a few buffers, enough for the queue to turn over without allocating.
        if self.spare.len() < 64 {
            buf.clear();
            self.spare.push(buf);
        }
    }

    /// Queues a frame for the guest; false (and counted) when the queue is full.
    fn push_reply(&mut self, frame: Vec<u8>) -> bool {
        if self.queue.len() >= self.cfg.queue_frames {
            self.stats.drops.queue_full += 1;
            self.recycle(frame);
            return false;
        }
        self.queue.push_back(frame);
        true
    }

    /// Keeps the eventfd readable exactly while a frame is ready.
    fn update_event(&mut self) {
        let ready = !self.queue.is_empty() || self.source.is_some();
        if ready && !self.signalled {
            if let Err(e) = self.event.write(1) {
                log::warn!("peer: cannot signal rx eventfd: {e}");
                return;
            }
            self.signalled = true;
        } else if !ready && self.signalled {
            // EAGAIN would mean it was already drained; either way it is clear now.
            let _ = self.event.read();
            self.signalled = false;
        }
    }

    fn handle_frame(&mut self, frame: &[u8], checks: Checks) {
        match parse::parse(frame, &self.identity(), checks) {
            Ok(Packet::ArpRequest(arp)) => self.answer_arp(&arp),
            Ok(Packet::Udp(udp)) => self.serve_udp(&udp),
            Ok(Packet::IcmpEcho {
                eth_src,
                ip_src,
                message,
            }) => self.answer_ping(eth_src, ip_src, message),
            Err(r) => self.count_reject(r),
        }
    }

    fn count_reject(&mut self, r: Reject) {
        let d = &mut self.stats.drops;
        *match r {
            Reject::Malformed => &mut d.malformed,
            Reject::NotForUs => &mut d.not_for_us,
            Reject::Fragment => &mut d.fragments,
            Reject::IpOptions => &mut d.ip_options,
            Reject::BadChecksum => &mut d.bad_checksum,
            Reject::Unsupported => &mut d.unsupported,
            Reject::ArpIgnored => &mut d.arp_ignored,
        } += 1;
    }

    fn answer_arp(&mut self, req: &Arp) {
        let reply = Arp {
            oper: ARP_REPLY,
            sha: self.cfg.mac,
            spa: self.cfg.ip,
            tha: req.sha,
            tpa: req.spa,
        };
        if self.push_reply(reply.to_frame(req.sha)) {
            self.stats.arp_replies += 1;
        }
    }

    fn answer_ping(&mut self, eth_dst: Mac, ip_dst: Ipv4Addr, request: &[u8]) {
        let id = self.next_ip_id();
        let mut f = self.spare_buf();
        f.resize(ETH_HLEN + IPV4_HLEN, 0);
        write_eth_header(&mut f, eth_dst, self.cfg.mac, ETHERTYPE_IPV4);
        let ip = &mut f[ETH_HLEN..];
        write_ipv4_header(ip, self.cfg.ip, ip_dst, IPPROTO_ICMP, request.len(), id);
        let icmp = f.len();
        f.extend_from_slice(request);
        f[icmp] = 0; // echo reply
        put16(&mut f, icmp + 2, 0);
        let c = internet_checksum(&f[icmp..]);
        put16(&mut f, icmp + 2, c);
        if self.push_reply(f) {
            self.stats.icmp_echoed += 1;
        }
    }

    fn serve_udp(&mut self, udp: &Udp<'_>) {
        let services = &mut self.stats.services;
        let len = udp.payload.len() as u64;
        match udp.dst_port {
            ECHO_PORT => {
                let h = self.reply_addresses(udp);
                let mut f = self.spare_buf();
                build_udp_v4_into(&mut f, &h, udp.payload);
                if self.push_reply(f) {
                    self.stats.services.echoed_frames += 1;
                    self.stats.services.echoed_bytes += len;
                }
            }
            DISCARD_PORT => {
                services.sunk_frames += 1;
                services.sunk_bytes += len;
            }
            SOURCE_PORT => match SourceCommand::parse(udp.payload) {
                Ok(SourceCommand::Start { count, frame_size }) => {
                    services.source_commands += 1;
                    let h = self.reply_addresses(udp);
                    self.source = Some(SourceStream::new(&h, count, frame_size));
                }
                Ok(SourceCommand::Stop) => {
                    services.source_commands += 1;
                    self.source = None;
                }
                Err(_) => services.bad_commands += 1,
            },
            _ => self.stats.drops.no_service += 1,
        }
    }

    /// Addresses of a reply to `udp`, from the service's port.
    fn reply_addresses(&mut self, udp: &Udp<'_>) -> UdpV4 {
        UdpV4 {
            src_mac: self.cfg.mac,
            dst_mac: udp.eth_src,
            src_ip: self.cfg.ip,
            dst_ip: udp.ip_src,
            src_port: udp.dst_port,
            dst_port: udp.src_port,
            ip_id: self.next_ip_id(),
        }
    }

    /// Takes a GSO frame: segments it (TCP) or takes the datagram whole (UFO).
    fn handle_gso(&mut self, frame: &[u8], meta: &FrameMeta) {
        self.stats.gso_frames += 1;
        let kind = meta.gso.map(|g| g.kind);
        if let (Some(GsoKind::Udp), Some(g)) = (kind, meta.gso) {
            let ip_payload = frame.len().saturating_sub(ETH_HLEN + IPV4_HLEN);
            self.stats.gso_segments += gso::ufo_fragment_count(ip_payload, g.size) as u64;
            return self.handle_partial(frame, meta);
        }
        // Segments come out with complete checksums of our own making.
        let checks = Checks { l4_checksum: false };
        let mut segments = 0u64;
        let result = gso::segment(frame, meta, &mut |seg: &[u8]| {
            segments += 1;
            self.handle_frame(seg, checks);
        });
        self.stats.gso_segments += segments;
        match result {
            Ok(_) => {}
            Err(gso::Error::Unsupported(_)) => self.stats.drops.unsupported += 1,
            Err(_) => self.stats.drops.malformed += 1,
        }
    }

    /// Takes a frame whose checksum the guest left for us to complete (if any).
    fn handle_partial(&mut self, frame: &[u8], meta: &FrameMeta) {
        let Some((start, offset)) = meta.csum else {
            let checks = Checks {
                l4_checksum: self.cfg.verify_checksums,
            };
            return self.handle_frame(frame, checks);
        };
        let mut f = std::mem::take(&mut self.scratch);
        f.clear();
        f.extend_from_slice(frame);
        match finish_checksum(&mut f, usize::from(start), usize::from(offset)) {
            Ok(()) => self.handle_frame(&f, Checks { l4_checksum: false }),
            Err(_) => self.stats.drops.malformed += 1,
        }
        self.scratch = f;
    }

    fn next_frame(&mut self, buf: &mut [u8]) -> Option<usize> {
        while let Some(f) = self.queue.pop_front() {
            let n = f.len();
            let fits = n <= buf.len();
            if fits {
                buf[..n].copy_from_slice(&f);
            } else {
                self.stats.drops.too_big += 1;
            }
            self.recycle(f);
            if fits {
                return Some(n);
            }
        }
        let n = self.source.as_ref()?.frame_len();
        if n > buf.len() {
            self.source = None;
            self.stats.drops.source_aborted += 1;
            log::warn!(
                "peer: source frames of {n} bytes do not fit a {}-byte buffer; stream ended",
                buf.len()
            );
            return None;
        }
        let id = self.next_ip_id();
        let s = self.source.as_mut()?;
        s.next_into(buf, id);
        self.stats.services.sourced_frames += 1;
        self.stats.services.sourced_bytes += s.payload_len() as u64;
        if s.finished() {
            self.source = None;
        }
        Some(n)
    }
}

impl NetBackend for Peer {
    fn service_counters(&self) -> Option<ServiceCounters> {
        Some(Peer::service_counters(self))
    }

    fn send(&mut self, frame: &[u8], meta: &FrameMeta) -> io::Result<()> {
        self.counters.tx_frames += 1;
        self.counters.tx_bytes += frame.len() as u64;
        if meta.gso.is_some() {
            self.handle_gso(frame, meta);
        } else {
            self.handle_partial(frame, meta);
        }
        self.update_event();
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<(usize, FrameMeta)>> {
        let got = self.next_frame(buf);
        if let Some(n) = got {
            self.counters.rx_frames += 1;
            self.counters.rx_bytes += n as u64;
        }
        self.update_event();
        // Checksums are complete; the guest verifies them as it would on a wire.
        Ok(got.map(|n| (n, FrameMeta::default())))
    }

    fn rx_fd(&self) -> RawFd {
        self.event.as_raw_fd()
    }

    fn offloads(&self) -> Offloads {
        Offloads {
            csum: true,
            tso: true,
        }
    }

    fn counters(&self) -> NetCounters {
        self.counters
    }

    fn describe(&self) -> String {
        let m = self.cfg.mac;
        format!(
            "peer {} ({:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}): arp, icmp echo, udp echo/{ECHO_PORT} discard/{DISCARD_PORT} source/{SOURCE_PORT}",
            self.cfg.ip, m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}
