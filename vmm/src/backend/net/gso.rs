//! Software segmentation of GSO frames (virtio 1.2, 5.1.6.2: `gso_type`, `gso_size`): what a
//! NIC does with a TSO super-frame (one TCP segment per `gso_size` payload bytes, RFC 9293) or a
//! UFO datagram (IPv4 fragments, RFC 791 section 3.2), for back-ends that must finish the work.

use super::wire::{
    be16, be32, checksum_add, checksum_finish, finish_checksum, ipv4_at, pseudo_header_v4,
    pseudo_header_v6, put16, set_ipv4_checksum, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETH_HLEN,
    IPPROTO_TCP, IPPROTO_UDP, IPV4_HLEN, IPV6_HLEN,
};
use super::{FrameMeta, Gso, GsoKind};

/// A guard against guests asking for absurd work: a 64 KiB super-frame at the smallest MSS
/// Linux uses (48 bytes) is about 1,400 segments.
pub const MAX_SEGMENTS: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("malformed gso frame: {0}")]
    Malformed(&'static str),
    #[error("unsupported gso frame: {0}")]
    Unsupported(&'static str),
    #[error("gso frame would make more than {MAX_SEGMENTS} segments")]
    TooManySegments,
}

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// Splits a GSO frame into the frames a NIC would put on the wire and hands each to `emit`,
/// with every checksum complete. Returns how many frames were emitted. `meta.gso` must be set.
///
/// `gso.hdr_len` is only a hint in virtio (Linux ignores it too): the header lengths are taken
/// from the headers themselves.
pub fn segment(
    frame: &[u8],
    meta: &FrameMeta,
    emit: &mut dyn FnMut(&[u8]),
) -> Result<usize, Error> {
    let gso = meta.gso.ok_or(Error::Malformed("no gso request"))?;
    if gso.size == 0 {
        return Err(Error::Malformed("gso size 0"));
    }
    if frame.len() < ETH_HLEN {
        return Err(Error::Malformed("short ethernet header"));
    }
    let ethertype = be16(frame, 12);
    match (gso.kind, ethertype) {
        (GsoKind::TcpV4, ETHERTYPE_IPV4) => {
            let ip_hlen = ipv4_header(frame, IPPROTO_TCP)?;
            tcp_segments(frame, ip_hlen, gso, emit)
        }
        (GsoKind::TcpV6, ETHERTYPE_IPV6) => {
            if frame.len() < ETH_HLEN + IPV6_HLEN || frame[ETH_HLEN] >> 4 != 6 {
                return Err(Error::Malformed("short or bad ipv6 header"));
            }
            if frame[ETH_HLEN + 6] != IPPROTO_TCP {
                return Err(Error::Unsupported("ipv6 extension headers"));
            }
            tcp_segments(frame, IPV6_HLEN, gso, emit)
        }
        (GsoKind::Udp, ETHERTYPE_IPV4) => {
            let ip_hlen = ipv4_header(frame, IPPROTO_UDP)?;
            if ip_hlen != IPV4_HLEN {
                return Err(Error::Unsupported("ufo with ip options"));
            }
            ufo_fragments(frame, meta, gso, emit)
        }
        (GsoKind::Udp, ETHERTYPE_IPV6) => Err(Error::Unsupported("ufo over ipv6")),
        _ => Err(Error::Malformed("gso type does not match the ethertype")),
    }
}

/// How many frames [`segment`] makes of a UFO datagram of `ip_payload` bytes (UDP header
/// included), without making them.
pub fn ufo_fragment_count(ip_payload: usize, gso_size: u16) -> usize {
    let per = fragment_size(gso_size);
    ip_payload.div_ceil(per).max(1)
}

/// Fragment payloads other than the last must be multiples of 8 bytes (RFC 791).
fn fragment_size(gso_size: u16) -> usize {
    (usize::from(gso_size) & !7).max(8)
}

/// Validates an IPv4 header carrying `proto` and returns its length.
fn ipv4_header(frame: &[u8], proto: u8) -> Result<usize, Error> {
    let ip = frame
        .get(ETH_HLEN..ETH_HLEN + IPV4_HLEN)
        .ok_or(Error::Malformed("short ipv4 header"))?;
    if ip[0] >> 4 != 4 {
        return Err(Error::Malformed("ip version is not 4"));
    }
    let hlen = usize::from(ip[0] & 0xf) * 4;
    if hlen < IPV4_HLEN || frame.len() < ETH_HLEN + hlen {
        return Err(Error::Malformed("bad ipv4 header length"));
    }
    if be16(ip, 6) & 0x3fff != 0 {
        return Err(Error::Malformed("gso frame is itself a fragment"));
    }
    if ip[9] != proto {
        return Err(Error::Malformed("ip protocol does not match the gso type"));
    }
    Ok(hlen)
}

fn tcp_segments(
    frame: &[u8],
    ip_hlen: usize,
    gso: Gso,
    emit: &mut dyn FnMut(&[u8]),
) -> Result<usize, Error> {
    let l4 = ETH_HLEN + ip_hlen;
    if frame.len() < l4 + 20 {
        return Err(Error::Malformed("short tcp header"));
    }
    let tcp_hlen = usize::from(frame[l4 + 12] >> 4) * 4;
    if tcp_hlen < 20 || frame.len() < l4 + tcp_hlen {
        return Err(Error::Malformed("bad tcp header length"));
    }
    let hdrs = l4 + tcp_hlen;
    let payload = &frame[hdrs..];
    let mss = usize::from(gso.size);
    let count = payload.len().div_ceil(mss).max(1);
    if count > MAX_SEGMENTS {
        return Err(Error::TooManySegments);
    }
    let v4 = be16(frame, 12) == ETHERTYPE_IPV4;
    let ip_id = be16(frame, ETH_HLEN + 4);
    let seq = be32(frame, l4 + 4);
    let flags = frame[l4 + 13];
    let mut seg = Vec::with_capacity(hdrs + mss);
    for i in 0..count {
        let chunk = payload
            .get(i * mss..)
            .map_or(&[][..], |p| &p[..p.len().min(mss)]);
        seg.clear();
        seg.extend_from_slice(&frame[..hdrs]);
        seg.extend_from_slice(chunk);
        let l3_len = seg.len() - ETH_HLEN;
        if v4 {
            let ip = &mut seg[ETH_HLEN..l4];
            put16(ip, 2, l3_len as u16);
            put16(ip, 4, ip_id.wrapping_add(i as u16));
            set_ipv4_checksum(ip);
        } else {
            put16(&mut seg, ETH_HLEN + 4, (l3_len - IPV6_HLEN) as u16);
        }
        let seg_seq = seq.wrapping_add((i * mss) as u32);
        seg[l4 + 4..l4 + 8].copy_from_slice(&seg_seq.to_be_bytes());
        let mut f = flags;
        if i + 1 < count {
            f &= !(TCP_FIN | TCP_PSH);
        }
        if i > 0 {
            f &= !TCP_CWR;
        }
        seg[l4 + 13] = f;
        put16(&mut seg, l4 + 16, 0);
        let tcp_len = seg.len() - l4;
        let pseudo = if v4 {
            let ip = &seg[ETH_HLEN..];
            pseudo_header_v4(ipv4_at(ip, 12), ipv4_at(ip, 16), IPPROTO_TCP, tcp_len)
        } else {
            let ip = &seg[ETH_HLEN..];
            let mut src = [0; 16];
            let mut dst = [0; 16];
            src.copy_from_slice(&ip[8..24]);
            dst.copy_from_slice(&ip[24..40]);
            pseudo_header_v6(&src, &dst, IPPROTO_TCP, tcp_len)
        };
        let c = checksum_finish(checksum_add(pseudo, &seg[l4..]));
        put16(&mut seg, l4 + 16, c);
        emit(&seg);
    }
    Ok(count)
}

fn ufo_fragments(
    frame: &[u8],
    meta: &FrameMeta,
    gso: Gso,
    emit: &mut dyn FnMut(&[u8]),
) -> Result<usize, Error> {
    let l4 = ETH_HLEN + IPV4_HLEN;
    let mut whole = frame.to_vec();
    if let Some((start, offset)) = meta.csum {
        finish_checksum(&mut whole, usize::from(start), usize::from(offset))
            .map_err(|_| Error::Malformed("checksum range outside the frame"))?;
    }
    let data = &whole[l4..];
    let per = fragment_size(gso.size);
    let count = ufo_fragment_count(data.len(), gso.size);
    if count > MAX_SEGMENTS {
        return Err(Error::TooManySegments);
    }
    let mut frag = Vec::with_capacity(l4 + per);
    for i in 0..count {
        let off = i * per;
        let chunk = data.get(off..).map_or(&[][..], |p| &p[..p.len().min(per)]);
        frag.clear();
        frag.extend_from_slice(&whole[..l4]);
        frag.extend_from_slice(chunk);
        let ip = &mut frag[ETH_HLEN..l4];
        put16(ip, 2, (IPV4_HLEN + chunk.len()) as u16);
        let more = if i + 1 < count { 0x2000 } else { 0 };
        // DF is cleared: the datagram is being fragmented after all.
        put16(ip, 6, more | ((off / 8) as u16 & 0x1fff));
        set_ipv4_checksum(ip);
        emit(&frag);
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::net::wire::{build_udp_v4, internet_checksum, UdpV4};
    use std::net::Ipv4Addr;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);

    fn tcp_v4_frame(payload: &[u8], flags: u8) -> Vec<u8> {
        let mut f = vec![0u8; ETH_HLEN + IPV4_HLEN + 20];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let ip = &mut f[ETH_HLEN..];
        ip[0] = 0x45;
        put16(ip, 2, (IPV4_HLEN + 20 + payload.len()) as u16);
        put16(ip, 4, 100);
        ip[8] = 64;
        ip[9] = IPPROTO_TCP;
        ip[12..16].copy_from_slice(&SRC.octets());
        ip[16..20].copy_from_slice(&DST.octets());
        let tcp = &mut f[ETH_HLEN + IPV4_HLEN..];
        put16(tcp, 0, 5000);
        put16(tcp, 2, 9);
        tcp[4..8].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = flags;
        f.extend_from_slice(payload);
        f
    }

    /// Verifies a TCP/IPv4 segment's checksums with a plain byte-by-byte computation.
    fn tcp_v4_checksums_ok(seg: &[u8]) -> bool {
        let l4 = ETH_HLEN + IPV4_HLEN;
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&seg[ETH_HLEN + 12..ETH_HLEN + 20]);
        pseudo.extend_from_slice(&[0, IPPROTO_TCP]);
        pseudo.extend_from_slice(&((seg.len() - l4) as u16).to_be_bytes());
        pseudo.extend_from_slice(&seg[l4..]);
        internet_checksum(&seg[ETH_HLEN..l4]) == 0 && internet_checksum(&pseudo) == 0
    }

    #[test]
    fn tso_v4_makes_mss_sized_segments_with_fixed_headers() {
        // Arrange
        let payload: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let frame = tcp_v4_frame(&payload, TCP_PSH | TCP_FIN | 0x10);
        let meta = FrameMeta {
            csum: Some(((ETH_HLEN + IPV4_HLEN) as u16, 16)),
            gso: Some(Gso {
                kind: GsoKind::TcpV4,
                hdr_len: 54,
                size: 1448,
            }),
            data_valid: false,
        };
        let mut segs = Vec::new();

        // Act
        let n = segment(&frame, &meta, &mut |s| segs.push(s.to_vec())).unwrap();

        // Assert
        assert_eq!(n, 3);
        let sizes: Vec<usize> = segs.iter().map(|s| s.len() - 54).collect();
        assert_eq!(sizes, [1448, 1448, 104]);
        let mut joined = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            assert!(tcp_v4_checksums_ok(s), "segment {i} checksums");
            assert_eq!(usize::from(be16(s, ETH_HLEN + 2)), s.len() - ETH_HLEN);
            assert_eq!(be16(s, ETH_HLEN + 4), 100 + i as u16);
            let seq = be32(s, ETH_HLEN + IPV4_HLEN + 4);
            assert_eq!(seq, 0xffff_fff0u32.wrapping_add(1448 * i as u32));
            let flags = s[ETH_HLEN + IPV4_HLEN + 13];
            assert_eq!(
                flags & (TCP_FIN | TCP_PSH) != 0,
                i == 2,
                "flags of segment {i}"
            );
            joined.extend_from_slice(&s[54..]);
        }
        assert_eq!(joined, payload);
    }

    #[test]
    fn ufo_makes_ip_fragments_of_a_checksummed_datagram() {
        let h = UdpV4 {
            src_mac: [2, 0, 0, 0, 0, 0x15],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_ip: SRC,
            dst_ip: DST,
            src_port: 4000,
            dst_port: 9,
            ip_id: 7,
        };
        let payload = vec![0xabu8; 4000];
        let frame = build_udp_v4(&h, &payload);
        let meta = FrameMeta {
            gso: Some(Gso {
                kind: GsoKind::Udp,
                hdr_len: 42,
                size: 1480,
            }),
            ..FrameMeta::default()
        };
        let mut frags = Vec::new();

        let n = segment(&frame, &meta, &mut |s| frags.push(s.to_vec())).unwrap();

        assert_eq!(n, 3);
        assert_eq!(n, ufo_fragment_count(4008, 1480));
        let mut joined = Vec::new();
        for (i, f) in frags.iter().enumerate() {
            let ip = &f[ETH_HLEN..ETH_HLEN + IPV4_HLEN];
            assert_eq!(internet_checksum(ip), 0);
            assert_eq!(be16(ip, 4), 7);
            let fo = be16(ip, 6);
            assert_eq!(usize::from(fo & 0x1fff) * 8, joined.len());
            assert_eq!(fo & 0x2000 != 0, i < 2);
            joined.extend_from_slice(&f[ETH_HLEN + IPV4_HLEN..]);
        }
        assert_eq!(joined, frame[ETH_HLEN + IPV4_HLEN..]);
    }

    #[test]
    fn tso_v6_fixes_payload_length_and_checksums() {
        // Arrange: Ethernet + IPv6 + TCP, 2500 bytes of payload.
        let mut f = vec![0u8; ETH_HLEN + IPV6_HLEN + 20];
        put16(&mut f, 12, ETHERTYPE_IPV6);
        f[ETH_HLEN] = 0x60;
        f[ETH_HLEN + 6] = IPPROTO_TCP;
        f[ETH_HLEN + 7] = 64;
        f[ETH_HLEN + 8..ETH_HLEN + 24]
            .copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x15]);
        f[ETH_HLEN + 24..ETH_HLEN + 40]
            .copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        let l4 = ETH_HLEN + IPV6_HLEN;
        f[l4 + 12] = 5 << 4;
        f.extend((0..2500u32).map(|i| i as u8));
        let meta = FrameMeta {
            gso: Some(Gso {
                kind: GsoKind::TcpV6,
                hdr_len: 74,
                size: 1000,
            }),
            ..FrameMeta::default()
        };
        let mut segs = Vec::new();

        // Act
        let n = segment(&f, &meta, &mut |s| segs.push(s.to_vec())).unwrap();

        // Assert: a byte-by-byte check of the v6 pseudo-header checksum of every segment.
        assert_eq!(n, 3);
        for s in &segs {
            let tcp = &s[l4..];
            assert_eq!(usize::from(be16(s, ETH_HLEN + 4)), tcp.len());
            let mut pseudo = s[ETH_HLEN + 8..ETH_HLEN + 40].to_vec();
            pseudo.extend_from_slice(&(tcp.len() as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, IPPROTO_TCP]);
            pseudo.extend_from_slice(tcp);
            assert_eq!(internet_checksum(&pseudo), 0);
        }
        assert_eq!(segs[2].len() - l4 - 20, 500);
    }

    proptest::proptest! {
        #[test]
        fn tso_segments_reassemble_to_the_original_payload(
            payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..5000),
            mss in 1u16..3000,
            doff in 0u8..16,
            cut in 0usize..64,
        ) {
            let mut frame = tcp_v4_frame(&payload, 0x18);
            frame[ETH_HLEN + IPV4_HLEN + 12] = doff << 4;
            frame.truncate(frame.len().saturating_sub(cut));
            let meta = FrameMeta {
                gso: Some(Gso { kind: GsoKind::TcpV4, hdr_len: 0, size: mss }),
                ..FrameMeta::default()
            };
            let hdrs = ETH_HLEN + IPV4_HLEN + usize::from(doff) * 4;
            let mut joined = Vec::new();
            let mut ok = true;
            let result = segment(&frame, &meta, &mut |s| {
                ok &= tcp_v4_checksums_ok(s) && s.len() - hdrs <= usize::from(mss);
                joined.extend_from_slice(&s[hdrs..]);
            });
            if result.is_ok() {
                proptest::prop_assert!(ok);
                proptest::prop_assert_eq!(&joined[..], &frame[hdrs..]);
            }
        }
    }

    #[test]
    fn malformed_gso_frames_are_refused() {
        let meta = |kind, size| FrameMeta {
            gso: Some(Gso {
                kind,
                hdr_len: 0,
                size,
            }),
            ..FrameMeta::default()
        };
        let tcp = tcp_v4_frame(&[1; 100], 0);
        let mut sink = |_: &[u8]| {};
        assert!(segment(&tcp, &meta(GsoKind::TcpV4, 0), &mut sink).is_err());
        assert!(segment(&tcp[..40], &meta(GsoKind::TcpV4, 10), &mut sink).is_err());
        assert!(segment(&tcp, &meta(GsoKind::TcpV6, 10), &mut sink).is_err());
        assert!(segment(&tcp, &meta(GsoKind::Udp, 10), &mut sink).is_err());
        assert_eq!(segment(&tcp, &meta(GsoKind::TcpV4, 1), &mut sink), Ok(100));
        let big = tcp_v4_frame(&[1; 5000], 0);
        assert_eq!(
            segment(&big, &meta(GsoKind::TcpV4, 1), &mut sink),
            Err(Error::TooManySegments)
        );
        assert!(segment(&tcp, &FrameMeta::default(), &mut sink).is_err());
    }
}
