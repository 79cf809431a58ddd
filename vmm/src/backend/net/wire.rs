//! Wire-format helpers shared by the network back-ends: the Internet checksum (RFC 1071), the
//! checksum completion a virtio-net header asks for (virtio 1.2, 5.1.6.2: "the checksum from
//! `csum_start` to the end goes to `csum_start + csum_offset`"), and Ethernet II / ARP
//! (RFC 826) / IPv4 (RFC 791) / UDP (RFC 768) header layouts and builders.

use std::net::Ipv4Addr;

pub type Mac = [u8; 6];

pub const BROADCAST_MAC: Mac = [0xff; 6];
pub const ETH_HLEN: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// An IPv4 header without options.
pub const IPV4_HLEN: usize = 20;
pub const IPV6_HLEN: usize = 40;
pub const UDP_HLEN: usize = 8;
/// Ethernet + IPv4 (no options) + UDP: the smallest UDP frame.
pub const UDP_V4_HEADERS: usize = ETH_HLEN + IPV4_HLEN + UDP_HLEN;
/// An ARP packet for IPv4 over Ethernet, after the Ethernet header.
pub const ARP_LEN: usize = 28;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const ARP_REQUEST: u16 = 1;
pub const ARP_REPLY: u16 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("checksum start {start} and offset {offset} fall outside a {len}-byte frame")]
    CsumRange {
        start: usize,
        offset: usize,
        len: usize,
    },
}

/// Adds `data` to a running one's-complement sum and returns it folded to 16 bits. `data` must
/// begin at an even offset of the checksummed range; an odd last byte is padded with zero, so
/// only the final piece of a range may have odd length.
pub fn checksum_add(sum: u32, data: &[u8]) -> u32 {
    // 32-bit big-endian words sum to the same value modulo 0xffff as 16-bit ones
    // (2^16 = 1 mod 0xffff), and a u64 cannot overflow for any frame size.
    let mut acc = u64::from(sum);
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    let mut pairs = rest.chunks_exact(2);
    for p in &mut pairs {
        acc += u64::from(u16::from_be_bytes([p[0], p[1]]));
    }
    if let [last] = pairs.remainder() {
        acc += u64::from(*last) << 8;
    }
    fold(acc)
}

fn fold(mut acc: u64) -> u32 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u32
}

/// The checksum field value for a running sum: its one's complement.
pub fn checksum_finish(sum: u32) -> u16 {
    !(fold(u64::from(sum)) as u16)
}

/// The Internet checksum of `data` (RFC 1071).
pub fn internet_checksum(data: &[u8]) -> u16 {
    checksum_finish(checksum_add(0, data))
}

/// The folded sum of the IPv4 pseudo-header (RFC 768, RFC 9293 3.1).
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4_len: usize) -> u32 {
    let mut sum = checksum_add(0, &src.octets());
    sum = checksum_add(sum, &dst.octets());
    // The length is at most 16 bits for IPv4; larger values only come from malformed frames
    // and are truncated the same way the header field would truncate them.
    checksum_add(sum, &[0, proto, (l4_len >> 8) as u8, l4_len as u8])
}

/// The folded sum of the IPv6 pseudo-header (RFC 8200, 8.1).
pub fn pseudo_header_v6(src: &[u8; 16], dst: &[u8; 16], proto: u8, l4_len: usize) -> u32 {
    let mut sum = checksum_add(0, src);
    sum = checksum_add(sum, dst);
    let len = (l4_len as u32).to_be_bytes();
    checksum_add(sum, &[len[0], len[1], len[2], len[3], 0, 0, 0, proto])
}

/// Completes a checksum the sender left partial: the one's-complement sum of `frame[start..]`
/// (whose checksum field at `start + offset` holds the pseudo-header sum, as virtio-net and
/// Linux's CHECKSUM_PARTIAL leave it) is complemented and stored at `start + offset`.
///
/// Like a NIC, this does not know the protocol: a UDP checksum that comes out as 0 stays 0.
pub fn finish_checksum(frame: &mut [u8], start: usize, offset: usize) -> Result<(), Error> {
    let range = Error::CsumRange {
        start,
        offset,
        len: frame.len(),
    };
    let field = start.checked_add(offset).ok_or(range)?;
    if start > frame.len() || field.checked_add(2).is_none_or(|end| end > frame.len()) {
        return Err(range);
    }
    let csum = checksum_finish(checksum_add(0, &frame[start..]));
    frame[field..field + 2].copy_from_slice(&csum.to_be_bytes());
    Ok(())
}

pub fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

pub fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

pub fn mac_at(b: &[u8], at: usize) -> Mac {
    let mut m = [0; 6];
    m.copy_from_slice(&b[at..at + 6]);
    m
}

pub fn ipv4_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

/// Recomputes the header checksum of the IPv4 header `hdr` (its whole length, options
/// included).
pub fn set_ipv4_checksum(hdr: &mut [u8]) {
    put16(hdr, 10, 0);
    let c = internet_checksum(hdr);
    put16(hdr, 10, c);
}

/// Addresses and ports of one UDP-over-IPv4 frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpV4 {
    pub src_mac: Mac,
    pub dst_mac: Mac,
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub ip_id: u16,
}

/// Writes an Ethernet II header into `buf[..ETH_HLEN]`.
pub fn write_eth_header(buf: &mut [u8], dst: Mac, src: Mac, ethertype: u16) {
    buf[0..6].copy_from_slice(&dst);
    buf[6..12].copy_from_slice(&src);
    put16(buf, 12, ethertype);
}

/// Writes a 20-byte IPv4 header (TTL 64, no options, not fragmented) for `l4_len` bytes of
/// payload into `hdr[..IPV4_HLEN]`, checksum included.
pub fn write_ipv4_header(
    hdr: &mut [u8],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    l4_len: usize,
    ip_id: u16,
) {
    let hdr = &mut hdr[..IPV4_HLEN];
    hdr[0] = 0x45;
    hdr[1] = 0;
    put16(hdr, 2, (IPV4_HLEN + l4_len) as u16);
    put16(hdr, 4, ip_id);
    put16(hdr, 6, 0);
    hdr[8] = 64;
    hdr[9] = proto;
    hdr[12..16].copy_from_slice(&src.octets());
    hdr[16..20].copy_from_slice(&dst.octets());
    set_ipv4_checksum(hdr);
}

/// Writes Ethernet, IPv4 and UDP headers for `payload_len` bytes of payload into
/// `buf[..UDP_V4_HEADERS]`, with the IP header checksum done and the UDP checksum field zero.
/// Panics if `buf` is shorter than the headers.
pub fn write_udp_v4_headers(buf: &mut [u8], h: &UdpV4, payload_len: usize) {
    let udp_len = UDP_HLEN + payload_len;
    write_eth_header(buf, h.dst_mac, h.src_mac, ETHERTYPE_IPV4);
    let ip = &mut buf[ETH_HLEN..ETH_HLEN + IPV4_HLEN];
    write_ipv4_header(ip, h.src_ip, h.dst_ip, IPPROTO_UDP, udp_len, h.ip_id);
    let udp = &mut buf[ETH_HLEN + IPV4_HLEN..UDP_V4_HEADERS];
    put16(udp, 0, h.src_port);
    put16(udp, 2, h.dst_port);
    put16(udp, 4, udp_len as u16);
    put16(udp, 6, 0);
}

/// The UDP checksum field value for a datagram (`udp`: header and payload): never 0, which
/// would mean "no checksum" (RFC 768).
pub fn udp_v4_checksum(src: Ipv4Addr, dst: Ipv4Addr, udp: &[u8]) -> u16 {
    let sum = pseudo_header_v4(src, dst, IPPROTO_UDP, udp.len());
    // The checksum field itself must read as zero while summing.
    let sum = checksum_add(checksum_add(sum, &udp[..6]), &udp[8..]);
    match checksum_finish(sum) {
        0 => 0xffff,
        c => c,
    }
}

/// A complete UDP-over-IPv4 frame with both checksums computed.
pub fn build_udp_v4(h: &UdpV4, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    build_udp_v4_into(&mut f, h, payload);
    f
}

/// [`build_udp_v4`] into a reused buffer (replacing its contents).
pub fn build_udp_v4_into(f: &mut Vec<u8>, h: &UdpV4, payload: &[u8]) {
    f.clear();
    f.resize(UDP_V4_HEADERS, 0);
    write_udp_v4_headers(f, h, payload.len());
    f.extend_from_slice(payload);
    let c = udp_v4_checksum(h.src_ip, h.dst_ip, &f[ETH_HLEN + IPV4_HLEN..]);
    put16(f, ETH_HLEN + IPV4_HLEN + 6, c);
}

/// An ARP packet for IPv4 over Ethernet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arp {
    pub oper: u16,
    pub sha: Mac,
    pub spa: Ipv4Addr,
    pub tha: Mac,
    pub tpa: Ipv4Addr,
}

impl Arp {
    /// A complete Ethernet frame carrying this packet, sent from `sha` to `eth_dst`.
    pub fn to_frame(&self, eth_dst: Mac) -> Vec<u8> {
        let mut f = vec![0; ETH_HLEN + ARP_LEN];
        write_eth_header(&mut f, eth_dst, self.sha, ETHERTYPE_ARP);
        let a = &mut f[ETH_HLEN..];
        put16(a, 0, 1); // Ethernet
        put16(a, 2, ETHERTYPE_IPV4);
        a[4] = 6;
        a[5] = 4;
        put16(a, 6, self.oper);
        a[8..14].copy_from_slice(&self.sha);
        a[14..18].copy_from_slice(&self.spa.octets());
        a[18..24].copy_from_slice(&self.tha);
        a[24..28].copy_from_slice(&self.tpa.octets());
        f
    }

    /// Parses the ARP packet of an Ethernet frame: IPv4 over Ethernet only.
    pub fn parse(frame: &[u8]) -> Option<Arp> {
        let a = frame.get(ETH_HLEN..ETH_HLEN + ARP_LEN)?;
        if be16(frame, 12) != ETHERTYPE_ARP
            || be16(a, 0) != 1
            || be16(a, 2) != ETHERTYPE_IPV4
            || a[4] != 6
            || a[5] != 4
        {
            return None;
        }
        Some(Arp {
            oper: be16(a, 6),
            sha: mac_at(a, 8),
            spa: ipv4_at(a, 14),
            tha: mac_at(a, 18),
            tpa: ipv4_at(a, 24),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 1071 the slow way: 16-bit words, end-around carry after every addition.
    fn reference_sum(data: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for i in (0..data.len()).step_by(2) {
            let hi = u32::from(data[i]) << 8;
            let lo = data.get(i + 1).map_or(0, |&b| u32::from(b));
            sum += hi | lo;
            if sum > 0xffff {
                sum = (sum & 0xffff) + 1;
            }
        }
        sum as u16
    }

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071, 3: the sum of these words is 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum_add(0, &data), 0xddf2);
        assert_eq!(internet_checksum(&data), !0xddf2);
    }

    #[test]
    fn checksum_matches_reference_on_all_lengths() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 37 + 11) as u8).collect();
        for len in 0..data.len() {
            assert_eq!(
                checksum_add(0, &data[..len]),
                u32::from(reference_sum(&data[..len])),
                "length {len}"
            );
        }
    }

    #[test]
    fn checksum_of_all_ones_does_not_fold_to_zero() {
        assert_eq!(checksum_add(0, &[0xff; 64]), 0xffff);
        assert_eq!(internet_checksum(&[0xff; 64]), 0);
    }

    #[test]
    fn ipv4_header_checksum_verifies_to_zero() {
        let h = UdpV4 {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_ip: Ipv4Addr::new(10, 0, 2, 15),
            dst_ip: Ipv4Addr::new(10, 0, 2, 2),
            src_port: 1234,
            dst_port: 7,
            ip_id: 99,
        };
        let f = build_udp_v4(&h, b"hello");
        assert_eq!(reference_sum(&f[ETH_HLEN..ETH_HLEN + IPV4_HLEN]), 0xffff);
    }

    #[test]
    fn finish_checksum_completes_a_partial_udp_checksum() {
        // Arrange: a frame as Linux hands it over with CHECKSUM_PARTIAL: the field holds the
        // folded pseudo-header sum (not complemented).
        let h = UdpV4 {
            src_mac: [2, 0, 0, 0, 0, 0x15],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_ip: Ipv4Addr::new(10, 0, 2, 15),
            dst_ip: Ipv4Addr::new(10, 0, 2, 2),
            src_port: 40000,
            dst_port: 9,
            ip_id: 1,
        };
        let full = build_udp_v4(&h, b"some payload, odd length");
        let mut partial = full.clone();
        let l4 = ETH_HLEN + IPV4_HLEN;
        let pseudo = pseudo_header_v4(h.src_ip, h.dst_ip, IPPROTO_UDP, full.len() - l4);
        put16(&mut partial, l4 + 6, pseudo as u16);

        // Act
        finish_checksum(&mut partial, l4, 6).unwrap();

        // Assert: same as the full computation, and the datagram verifies.
        assert_eq!(partial, full);
        let mut check = Vec::new();
        check.extend_from_slice(&h.src_ip.octets());
        check.extend_from_slice(&h.dst_ip.octets());
        check.extend_from_slice(&[0, IPPROTO_UDP]);
        check.extend_from_slice(&((full.len() - l4) as u16).to_be_bytes());
        check.extend_from_slice(&partial[l4..]);
        assert_eq!(reference_sum(&check), 0xffff);
    }

    #[test]
    fn finish_checksum_rejects_out_of_range_fields() {
        let mut f = [0u8; 40];
        assert!(finish_checksum(&mut f, 34, 6).is_err());
        assert!(finish_checksum(&mut f, 41, 0).is_err());
        assert!(finish_checksum(&mut f, usize::MAX, 2).is_err());
        assert!(finish_checksum(&mut f, 2, usize::MAX).is_err());
        assert!(finish_checksum(&mut f, 38, 0).is_ok());
        assert!(finish_checksum(&mut f, 0, 38).is_ok());
    }

    #[test]
    fn arp_round_trips_through_a_frame() {
        let arp = Arp {
            oper: ARP_REQUEST,
            sha: [2, 0, 0, 0, 0, 0x15],
            spa: Ipv4Addr::new(10, 0, 2, 15),
            tha: [0; 6],
            tpa: Ipv4Addr::new(10, 0, 2, 2),
        };
        let f = arp.to_frame(BROADCAST_MAC);
        assert_eq!(f.len(), 42);
        assert_eq!(Arp::parse(&f), Some(arp));
        assert_eq!(Arp::parse(&f[..41]), None);
    }
}
