//! The peer's port-19 stream: frames made on demand, straight into the caller's buffer, from a
//! template whose checksum is mostly precomputed, so a stream costs a copy per frame.

use crate::backend::net::services::{fill_source_payload, write_source_seq};
use crate::backend::net::wire::{
    checksum_add, checksum_finish, pseudo_header_v4, put16, set_ipv4_checksum,
    write_udp_v4_headers, UdpV4, ETH_HLEN, IPPROTO_UDP, IPV4_HLEN, UDP_HLEN, UDP_V4_HEADERS,
};

pub(super) struct SourceStream {
    header: [u8; UDP_V4_HEADERS],
    /// The payload pattern, with sequence number 0.
    payload: Vec<u8>,
    /// Pseudo-header, UDP header and the payload past the sequence number, folded.
    base_sum: u32,
    /// Frames still to send; `None` until stopped.
    remaining: Option<u64>,
    next_seq: u64,
}

impl SourceStream {
    /// A stream of `count` frames (0: unbounded) of `frame_size` bytes, addressed as `h` says.
    /// `frame_size` must be at least `UDP_V4_HEADERS` (the command parser sees to it).
    pub fn new(h: &UdpV4, count: u64, frame_size: usize) -> SourceStream {
        let payload_len = frame_size.saturating_sub(UDP_V4_HEADERS);
        let mut header = [0; UDP_V4_HEADERS];
        write_udp_v4_headers(&mut header, h, payload_len);
        let mut payload = vec![0; payload_len];
        fill_source_payload(&mut payload, 0);
        let udp_len = UDP_HLEN + payload_len;
        let mut base_sum = pseudo_header_v4(h.src_ip, h.dst_ip, IPPROTO_UDP, udp_len);
        base_sum = checksum_add(base_sum, &header[ETH_HLEN + IPV4_HLEN..]);
        // The sequence number is at an even offset, so the rest can be summed on its own.
        let seq_len = payload.len().min(8);
        base_sum = checksum_add(base_sum, &payload[seq_len..]);
        SourceStream {
            header,
            payload,
            base_sum,
            remaining: (count != 0).then_some(count),
            next_seq: 0,
        }
    }

    pub fn frame_len(&self) -> usize {
        UDP_V4_HEADERS + self.payload.len()
    }

    pub fn payload_len(&self) -> usize {
        self.payload.len()
    }

    pub fn finished(&self) -> bool {
        self.remaining == Some(0)
    }

    /// Writes the next frame into `buf[..self.frame_len()]`. `buf` must be that long.
    pub fn next_into(&mut self, buf: &mut [u8], ip_id: u16) {
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(r) = &mut self.remaining {
            *r = r.saturating_sub(1);
        }
        let (head, rest) = buf[..self.frame_len()].split_at_mut(UDP_V4_HEADERS);
        head.copy_from_slice(&self.header);
        let ip = &mut head[ETH_HLEN..ETH_HLEN + IPV4_HLEN];
        put16(ip, 4, ip_id);
        set_ipv4_checksum(ip);
        rest.copy_from_slice(&self.payload);
        write_source_seq(rest, seq);
        let seq_len = rest.len().min(8);
        let c = match checksum_finish(checksum_add(self.base_sum, &rest[..seq_len])) {
            0 => 0xffff,
            c => c,
        };
        put16(head, ETH_HLEN + IPV4_HLEN + 6, c);
    }
}
