//! The virtio-net header (virtio 1.2, 5.1.6): 12 bytes with VERSION_1, carrying checksum and
//! segmentation offload. Parsing is pure and checks every field against the frame and the
//! negotiated features.

use super::{F_CSUM, F_HOST_TSO4, F_HOST_TSO6};
use crate::backend::net::{FrameMeta, Gso, GsoKind};

pub const HEADER_LEN: usize = 12;
pub const NEEDS_CSUM: u8 = 1;
pub const DATA_VALID: u8 = 2;
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_UDP: u8 = 3;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_ECN: u8 = 0x80;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
    pub num_buffers: u16,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("checksum offload requested without VIRTIO_NET_F_CSUM")]
    CsumNotNegotiated,
    #[error("segmentation offload requested without negotiating it")]
    GsoNotNegotiated,
    #[error("checksum field outside the frame")]
    CsumOutside,
    #[error("unknown GSO type {0:#x}")]
    GsoType(u8),
    #[error("GSO without a segment size or headers inside the frame")]
    GsoFields,
}

impl Header {
    pub fn parse(b: &[u8; HEADER_LEN]) -> Header {
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Header {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
            num_buffers: u16_at(10),
        }
    }

    pub fn bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b[10..12].copy_from_slice(&self.num_buffers.to_le_bytes());
        b
    }

    /// The offload work a TX frame of `len` bytes still needs, checked against what the
    /// driver negotiated.
    pub fn to_meta(&self, features: u64, len: usize) -> Result<FrameMeta, Error> {
        let mut m = FrameMeta::default();
        if self.flags & NEEDS_CSUM != 0 {
            if features & F_CSUM == 0 {
                return Err(Error::CsumNotNegotiated);
            }
            let end = usize::from(self.csum_start) + usize::from(self.csum_offset) + 2;
            if end > len {
                return Err(Error::CsumOutside);
            }
            m.csum = Some((self.csum_start, self.csum_offset));
        }
        let kind = match self.gso_type & !GSO_ECN {
            GSO_NONE => None,
            GSO_TCPV4 => Some(GsoKind::TcpV4),
            GSO_TCPV6 => Some(GsoKind::TcpV6),
            GSO_UDP => Some(GsoKind::Udp),
            other => return Err(Error::GsoType(other)),
        };
        if let Some(kind) = kind {
            let ok = match kind {
                GsoKind::TcpV4 | GsoKind::Udp => features & F_HOST_TSO4 != 0,
                GsoKind::TcpV6 => features & F_HOST_TSO6 != 0,
            };
            if !ok {
                return Err(Error::GsoNotNegotiated);
            }
            if self.gso_size == 0 || usize::from(self.hdr_len) > len {
                return Err(Error::GsoFields);
            }
            m.gso = Some(Gso {
                kind,
                hdr_len: self.hdr_len,
                size: self.gso_size,
            });
        }
        Ok(m)
    }

    /// The header for a received frame (num_buffers filled in by the device).
    pub fn from_meta(m: &FrameMeta) -> Header {
        let mut h = Header::default();
        if let Some((start, offset)) = m.csum {
            h.flags |= NEEDS_CSUM;
            h.csum_start = start;
            h.csum_offset = offset;
        } else if m.data_valid {
            h.flags |= DATA_VALID;
        }
        if let Some(g) = m.gso {
            h.gso_type = match g.kind {
                GsoKind::TcpV4 => GSO_TCPV4,
                GsoKind::TcpV6 => GSO_TCPV6,
                GsoKind::Udp => GSO_UDP,
            };
            h.hdr_len = g.hdr_len;
            h.gso_size = g.size;
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_bytes() {
        let h = Header {
            flags: NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 3,
        };
        assert_eq!(Header::parse(&h.bytes()), h);
    }

    #[test]
    fn offloads_must_be_negotiated_and_inside_the_frame() {
        let csum = Header {
            flags: NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 6,
            ..Default::default()
        };
        assert_eq!(csum.to_meta(0, 100), Err(Error::CsumNotNegotiated));
        assert_eq!(csum.to_meta(F_CSUM, 41), Err(Error::CsumOutside));
        assert_eq!(csum.to_meta(F_CSUM, 42).unwrap().csum, Some((34, 6)));
        let far = Header {
            flags: NEEDS_CSUM,
            csum_start: u16::MAX,
            csum_offset: u16::MAX,
            ..Default::default()
        };
        assert_eq!(far.to_meta(F_CSUM, MAX), Err(Error::CsumOutside));

        let tso = Header {
            gso_type: GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1448,
            ..Default::default()
        };
        assert_eq!(tso.to_meta(F_CSUM, 3000), Err(Error::GsoNotNegotiated));
        assert!(tso
            .to_meta(F_CSUM | F_HOST_TSO4, 3000)
            .unwrap()
            .gso
            .is_some());
        let zero = Header {
            gso_type: GSO_TCPV4,
            hdr_len: 54,
            gso_size: 0,
            ..Default::default()
        };
        assert_eq!(zero.to_meta(F_HOST_TSO4, 3000), Err(Error::GsoFields));
        let bad = Header {
            gso_type: 2,
            ..Default::default()
        };
        assert_eq!(bad.to_meta(u64::MAX, 100), Err(Error::GsoType(2)));
    }

    const MAX: usize = 65562;
}
