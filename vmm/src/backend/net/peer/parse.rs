//! What the peer understands of a guest frame, and why it refuses the rest. Pure: every
//! length and field the guest controls is checked before it is used; nothing here panics or
//! does I/O.

use std::net::Ipv4Addr;

use crate::backend::net::wire::{
    be16, checksum_add, internet_checksum, ipv4_at, mac_at, pseudo_header_v4, Arp, Mac,
    ARP_REQUEST, BROADCAST_MAC, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETH_HLEN, IPPROTO_ICMP, IPPROTO_UDP,
    IPV4_HLEN, UDP_HLEN,
};

/// The peer's own addresses.
#[derive(Clone, Copy, Debug)]
pub(super) struct Identity {
    pub mac: Mac,
    pub ip: Ipv4Addr,
}

/// Which optional checks to make.
#[derive(Clone, Copy, Debug)]
pub(super) struct Checks {
    /// Verify UDP and ICMP checksums (IPv4 header checksums are always verified).
    pub l4_checksum: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Packet<'a> {
    ArpRequest(Arp),
    Udp(Udp<'a>),
    /// An ICMP echo request; `message` is the whole ICMP message (type, code, checksum,
    /// identifier, sequence number, data).
    IcmpEcho {
        eth_src: Mac,
        ip_src: Ipv4Addr,
        message: &'a [u8],
    },
}

#[derive(Debug, PartialEq, Eq)]
pub(super) struct Udp<'a> {
    pub eth_src: Mac,
    pub ip_src: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: &'a [u8],
}

/// Why a frame was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reject {
    /// Lengths or fields that no valid frame has.
    Malformed,
    /// Addressed to another host (MAC or IP), or multicast.
    NotForUs,
    /// An IPv4 fragment: the peer does not reassemble.
    Fragment,
    /// An IPv4 header with options: the peer does not take them.
    IpOptions,
    BadChecksum,
    /// A protocol or ICMP type the peer does not speak (IPv6, TCP, …).
    Unsupported,
    /// A valid ARP packet that needs no answer (a reply, a request for someone else).
    ArpIgnored,
}

pub(super) fn parse<'a>(
    frame: &'a [u8],
    me: &Identity,
    checks: Checks,
) -> Result<Packet<'a>, Reject> {
    if frame.len() < ETH_HLEN {
        return Err(Reject::Malformed);
    }
    let dst = mac_at(frame, 0);
    let src = mac_at(frame, 6);
    if src[0] & 1 != 0 {
        // A group address is never a valid source.
        return Err(Reject::Malformed);
    }
    let broadcast = dst == BROADCAST_MAC;
    if dst != me.mac && !broadcast {
        return Err(Reject::NotForUs);
    }
    match be16(frame, 12) {
        ETHERTYPE_ARP => parse_arp(frame, me),
        ETHERTYPE_IPV4 if broadcast => Err(Reject::NotForUs),
        ETHERTYPE_IPV4 => parse_ipv4(frame, src, me, checks),
        _ => Err(Reject::Unsupported),
    }
}

fn parse_arp(frame: &[u8], me: &Identity) -> Result<Packet<'static>, Reject> {
    let arp = Arp::parse(frame).ok_or(Reject::Malformed)?;
    if arp.sha[0] & 1 != 0 {
        return Err(Reject::Malformed);
    }
    if arp.oper != ARP_REQUEST || arp.tpa != me.ip || arp.spa == me.ip {
        return Err(Reject::ArpIgnored);
    }
    Ok(Packet::ArpRequest(arp))
}

fn parse_ipv4<'a>(
    frame: &'a [u8],
    eth_src: Mac,
    me: &Identity,
    checks: Checks,
) -> Result<Packet<'a>, Reject> {
    let ip = frame.get(ETH_HLEN..).ok_or(Reject::Malformed)?;
    if ip.len() < IPV4_HLEN || ip[0] >> 4 != 4 {
        return Err(Reject::Malformed);
    }
    let hlen = usize::from(ip[0] & 0xf) * 4;
    if hlen < IPV4_HLEN || hlen > ip.len() {
        return Err(Reject::Malformed);
    }
    if internet_checksum(&ip[..hlen]) != 0 {
        return Err(Reject::BadChecksum);
    }
    if hlen != IPV4_HLEN {
        return Err(Reject::IpOptions);
    }
    let total = usize::from(be16(ip, 2));
    if total < hlen || total > ip.len() {
        return Err(Reject::Malformed);
    }
    // Bytes past the IP total length are Ethernet padding.
    let ip = &ip[..total];
    if be16(ip, 6) & 0x3fff != 0 {
        return Err(Reject::Fragment);
    }
    let ip_src = ipv4_at(ip, 12);
    if ip_src.is_broadcast() || ip_src.is_multicast() || ip_src.is_unspecified() {
        return Err(Reject::Malformed);
    }
    if ipv4_at(ip, 16) != me.ip {
        return Err(Reject::NotForUs);
    }
    let l4 = &ip[IPV4_HLEN..];
    match ip[9] {
        IPPROTO_UDP => parse_udp(l4, eth_src, ip_src, me, checks),
        IPPROTO_ICMP => parse_icmp(l4, eth_src, ip_src, checks),
        _ => Err(Reject::Unsupported),
    }
}

fn parse_udp<'a>(
    l4: &'a [u8],
    eth_src: Mac,
    ip_src: Ipv4Addr,
    me: &Identity,
    checks: Checks,
) -> Result<Packet<'a>, Reject> {
    if l4.len() < UDP_HLEN {
        return Err(Reject::Malformed);
    }
    let len = usize::from(be16(l4, 4));
    if len < UDP_HLEN || len > l4.len() {
        return Err(Reject::Malformed);
    }
    let dgram = &l4[..len];
    if checks.l4_checksum && be16(dgram, 6) != 0 {
        let sum = checksum_add(pseudo_header_v4(ip_src, me.ip, IPPROTO_UDP, len), dgram);
        if sum != 0xffff {
            return Err(Reject::BadChecksum);
        }
    }
    Ok(Packet::Udp(Udp {
        eth_src,
        ip_src,
        src_port: be16(dgram, 0),
        dst_port: be16(dgram, 2),
        payload: &dgram[UDP_HLEN..],
    }))
}

fn parse_icmp<'a>(
    message: &'a [u8],
    eth_src: Mac,
    ip_src: Ipv4Addr,
    checks: Checks,
) -> Result<Packet<'a>, Reject> {
    if message.len() < 8 {
        return Err(Reject::Malformed);
    }
    if checks.l4_checksum && internet_checksum(message) != 0 {
        return Err(Reject::BadChecksum);
    }
    // Type 8, code 0: echo request (RFC 792).
    if message[0] != 8 || message[1] != 0 {
        return Err(Reject::Unsupported);
    }
    Ok(Packet::IcmpEcho {
        eth_src,
        ip_src,
        message,
    })
}
