use std::net::Ipv4Addr;
use std::os::fd::RawFd;

use proptest::prelude::*;

use super::*;
use crate::backend::net::wire::{
    be16, be32, build_udp_v4, pseudo_header_v4, Arp, ARP_REQUEST, BROADCAST_MAC, ETHERTYPE_ARP,
    IPPROTO_TCP, IPPROTO_UDP, UDP_V4_HEADERS,
};
use crate::backend::net::Gso;

const GUEST_MAC: Mac = [0x02, 0, 0, 0, 0, 0x15];

/// RFC 1071 written out the slow way, independent of the code under test: 16-bit words,
/// end-around carry after each addition.
fn ones_sum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for i in (0..data.len()).step_by(2) {
        sum += (u32::from(data[i]) << 8) | data.get(i + 1).map_or(0, |&b| u32::from(b));
        if sum > 0xffff {
            sum -= 0xffff;
        }
    }
    sum as u16
}

/// True if the frame's IPv4 header checksum and UDP checksum (if not zero) verify.
fn udp_checksums_ok(f: &[u8]) -> bool {
    let ip = &f[ETH_HLEN..ETH_HLEN + IPV4_HLEN];
    let udp = &f[ETH_HLEN + IPV4_HLEN..];
    let mut pseudo = ip[12..20].to_vec();
    pseudo.extend_from_slice(&[0, IPPROTO_UDP]);
    pseudo.extend_from_slice(&(udp.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(udp);
    ones_sum(ip) == 0xffff && (be16(udp, 6) == 0 || ones_sum(&pseudo) == 0xffff)
}

fn peer() -> Peer {
    Peer::new(PeerConfig::default()).unwrap()
}

fn is_readable(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `p` is one valid pollfd that outlives the call; a zero timeout never blocks.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n == 1 && p.revents & libc::POLLIN != 0
}

fn guest_udp(dst_port: u16, payload: &[u8]) -> Vec<u8> {
    build_udp_v4(
        &UdpV4 {
            src_mac: GUEST_MAC,
            dst_mac: DEFAULT_PEER_MAC,
            src_ip: DEFAULT_GUEST_IP,
            dst_ip: DEFAULT_PEER_IP,
            src_port: 40000,
            dst_port,
            ip_id: 1,
        },
        payload,
    )
}

fn send(p: &mut Peer, frame: &[u8]) {
    p.send(frame, &FrameMeta::default()).unwrap();
}

fn recv_all(p: &mut Peer) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65_600];
    while let Some((n, meta)) = p.recv(&mut buf).unwrap() {
        assert_eq!(meta, FrameMeta::default());
        out.push(buf[..n].to_vec());
    }
    out
}

#[test]
fn arp_request_gets_a_reply_with_our_addresses() {
    // Arrange
    let mut p = peer();
    let req = Arp {
        oper: ARP_REQUEST,
        sha: GUEST_MAC,
        spa: DEFAULT_GUEST_IP,
        tha: [0; 6],
        tpa: DEFAULT_PEER_IP,
    };
    assert!(!is_readable(p.rx_fd()));

    // Act
    send(&mut p, &req.to_frame(BROADCAST_MAC));

    // Assert
    assert!(is_readable(p.rx_fd()));
    let replies = recv_all(&mut p);
    assert!(!is_readable(p.rx_fd()));
    assert_eq!(replies.len(), 1);
    let f = &replies[0];
    assert_eq!(&f[0..6], &GUEST_MAC);
    assert_eq!(&f[6..12], &DEFAULT_PEER_MAC);
    assert_eq!(be16(f, 12), ETHERTYPE_ARP);
    let reply = Arp::parse(f).unwrap();
    assert_eq!(
        reply,
        Arp {
            oper: ARP_REPLY,
            sha: DEFAULT_PEER_MAC,
            spa: DEFAULT_PEER_IP,
            tha: GUEST_MAC,
            tpa: DEFAULT_GUEST_IP,
        }
    );
    assert_eq!(p.stats().arp_replies, 1);
    assert_eq!(p.counters().rx_frames, 1);
    assert_eq!(p.counters().rx_bytes, 42);
}

#[test]
fn arp_for_another_address_is_ignored() {
    let mut p = peer();
    let req = Arp {
        oper: ARP_REQUEST,
        sha: GUEST_MAC,
        spa: DEFAULT_GUEST_IP,
        tha: [0; 6],
        tpa: Ipv4Addr::new(10, 0, 2, 3),
    };
    send(&mut p, &req.to_frame(BROADCAST_MAC));
    assert!(recv_all(&mut p).is_empty());
    assert_eq!(p.stats().drops.arp_ignored, 1);
}

#[test]
fn udp_echo_reflects_payload_with_swapped_addresses_and_valid_checksums() {
    let mut p = peer();
    let payload: Vec<u8> = (0..301u32).map(|i| (i * 7) as u8).collect();

    send(&mut p, &guest_udp(ECHO_PORT, &payload));
    let replies = recv_all(&mut p);

    assert_eq!(replies.len(), 1);
    let f = &replies[0];
    assert_eq!(f.len(), UDP_V4_HEADERS + payload.len());
    assert_eq!(&f[0..6], &GUEST_MAC);
    assert_eq!(&f[6..12], &DEFAULT_PEER_MAC);
    assert_eq!(f[ETH_HLEN + 9], IPPROTO_UDP);
    assert_eq!(&f[ETH_HLEN + 12..ETH_HLEN + 16], &DEFAULT_PEER_IP.octets());
    assert_eq!(&f[ETH_HLEN + 16..ETH_HLEN + 20], &DEFAULT_GUEST_IP.octets());
    assert_eq!(be16(f, 34), ECHO_PORT);
    assert_eq!(be16(f, 36), 40000);
    assert_ne!(be16(f, 40), 0, "the echo carries a UDP checksum");
    assert!(udp_checksums_ok(f));
    assert_eq!(&f[UDP_V4_HEADERS..], &payload[..]);
    let s = p.service_counters();
    assert_eq!((s.echoed_frames, s.echoed_bytes), (1, 301));
}

#[test]
fn partial_checksums_from_the_guest_are_completed() {
    // Arrange: the UDP checksum field holds only the pseudo-header sum, as Linux leaves it.
    let mut p = peer();
    let mut f = guest_udp(ECHO_PORT, b"partial");
    let l4 = ETH_HLEN + IPV4_HLEN;
    let pseudo = pseudo_header_v4(DEFAULT_GUEST_IP, DEFAULT_PEER_IP, IPPROTO_UDP, f.len() - l4);
    put16(&mut f, l4 + 6, pseudo as u16);
    assert!(!udp_checksums_ok(&f));
    let meta = FrameMeta {
        csum: Some((l4 as u16, 6)),
        ..FrameMeta::default()
    };

    // Act
    p.send(&f, &meta).unwrap();

    // Assert: the same frame without csum is refused; with it, echoed.
    let replies = recv_all(&mut p);
    assert_eq!(replies.len(), 1);
    assert!(udp_checksums_ok(&replies[0]));
    send(&mut p, &f);
    assert!(recv_all(&mut p).is_empty());
    assert_eq!(p.stats().drops.bad_checksum, 1);
}

#[test]
fn discard_counts_frames_and_bytes_and_answers_nothing() {
    let mut p = peer();
    for len in [0, 1, 100, 1472] {
        send(&mut p, &guest_udp(DISCARD_PORT, &vec![0x5a; len]));
    }
    assert!(recv_all(&mut p).is_empty());
    assert!(!is_readable(p.rx_fd()));
    let s = p.service_counters();
    assert_eq!((s.sunk_frames, s.sunk_bytes), (4, 1573));
    let c = p.counters();
    assert_eq!((c.tx_frames, c.tx_bytes), (4, 4 * 42 + 1573));
    assert_eq!((c.rx_frames, c.rx_bytes), (0, 0));
}

#[test]
fn source_makes_exactly_n_frames_of_size_s() {
    let mut p = peer();

    send(&mut p, &guest_udp(SOURCE_PORT, b"count=5 size=100"));
    assert!(is_readable(p.rx_fd()));
    let frames = recv_all(&mut p);

    assert!(!is_readable(p.rx_fd()));
    assert_eq!(frames.len(), 5);
    for (seq, f) in frames.iter().enumerate() {
        assert_eq!(f.len(), 100);
        assert_eq!(&f[0..6], &GUEST_MAC);
        assert_eq!(be16(f, 34), SOURCE_PORT);
        assert_eq!(be16(f, 36), 40000);
        assert!(udp_checksums_ok(f), "frame {seq}");
        let payload = &f[UDP_V4_HEADERS..];
        assert_eq!(
            u64::from(be32(payload, 0)) << 32 | u64::from(be32(payload, 4)),
            seq as u64
        );
        assert!(payload[8..]
            .iter()
            .enumerate()
            .all(|(i, &b)| b == (i + 8) as u8));
    }
    let s = p.service_counters();
    assert_eq!(
        (s.source_commands, s.sourced_frames, s.sourced_bytes),
        (1, 5, 5 * 58)
    );
    assert_eq!(p.counters().rx_frames, 5);
}

#[test]
fn source_checksums_hold_for_odd_and_tiny_sizes() {
    for size in [42, 43, 49, 50, 51, 1514, 9000] {
        let mut p = peer();
        let cmd = guest_udp(SOURCE_PORT, format!("count=3 size={size}").as_bytes());
        send(&mut p, &cmd);
        let frames = recv_all(&mut p);
        assert_eq!(frames.len(), 3, "size {size}");
        assert!(
            frames
                .iter()
                .all(|f| f.len() == size && udp_checksums_ok(f)),
            "size {size}"
        );
    }
}

#[test]
fn unbounded_source_runs_until_stop() {
    let mut p = peer();
    let mut buf = vec![0u8; 2048];
    send(&mut p, &guest_udp(SOURCE_PORT, b"count=0 size=64"));
    for _ in 0..1000 {
        assert_eq!(p.recv(&mut buf).unwrap().map(|(n, _)| n), Some(64));
    }
    assert!(is_readable(p.rx_fd()));

    send(&mut p, &guest_udp(SOURCE_PORT, b"stop"));

    assert!(!is_readable(p.rx_fd()));
    assert!(p.recv(&mut buf).unwrap().is_none());
    assert_eq!(p.service_counters().sourced_frames, 1000);
}

#[test]
fn source_frames_too_big_for_the_buffer_end_the_stream() {
    let mut p = peer();
    let mut small = [0u8; 1000];
    send(&mut p, &guest_udp(SOURCE_PORT, b"count=0 size=1514"));
    assert!(p.recv(&mut small).unwrap().is_none());
    assert!(!is_readable(p.rx_fd()));
    assert_eq!(p.stats().drops.source_aborted, 1);
}

#[test]
fn bad_source_commands_are_counted() {
    let mut p = peer();
    send(&mut p, &guest_udp(SOURCE_PORT, b"count=5"));
    send(&mut p, &guest_udp(SOURCE_PORT, b"size=10 count=1"));
    assert!(recv_all(&mut p).is_empty());
    assert_eq!(p.service_counters().bad_commands, 2);
}

#[test]
fn icmp_echo_is_answered() {
    let mut p = peer();
    let mut f = guest_udp(0, b"");
    f.truncate(ETH_HLEN + IPV4_HLEN);
    f.extend_from_slice(&[8, 0, 0, 0, 0x12, 0x34, 0, 1, b'p', b'i', b'n', b'g', b'!']);
    let icmp_len = f.len() - ETH_HLEN - IPV4_HLEN;
    f[ETH_HLEN + 9] = IPPROTO_ICMP;
    put16(&mut f, ETH_HLEN + 2, (IPV4_HLEN + icmp_len) as u16);
    crate::backend::net::wire::set_ipv4_checksum(&mut f[ETH_HLEN..ETH_HLEN + IPV4_HLEN]);
    let c = !ones_sum(&f[ETH_HLEN + IPV4_HLEN..]);
    put16(&mut f, ETH_HLEN + IPV4_HLEN + 2, c);

    send(&mut p, &f);
    let replies = recv_all(&mut p);

    assert_eq!(replies.len(), 1);
    let r = &replies[0];
    let icmp = &r[ETH_HLEN + IPV4_HLEN..];
    assert_eq!(icmp[0], 0);
    assert_eq!(&icmp[4..], &f[ETH_HLEN + IPV4_HLEN + 4..]);
    assert_eq!(ones_sum(icmp), 0xffff);
    assert_eq!(ones_sum(&r[ETH_HLEN..ETH_HLEN + IPV4_HLEN]), 0xffff);
    assert_eq!(p.stats().icmp_echoed, 1);
}

#[test]
fn malformed_and_foreign_frames_are_dropped_and_counted() {
    // Arrange: one frame per reason, each a small corruption of a valid echo request.
    let good = guest_udp(ECHO_PORT, b"x");
    let l3 = ETH_HLEN;
    let edit = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut v = good.clone();
        f(&mut v);
        v
    };
    let fix_ip =
        |v: &mut Vec<u8>| crate::backend::net::wire::set_ipv4_checksum(&mut v[l3..l3 + 20]);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![], "malformed"),
        (good[..13].to_vec(), "malformed"),
        (good[..30].to_vec(), "malformed"),
        (
            edit(&|v| {
                put16(v, l3 + 2, 2000);
                fix_ip(v)
            }),
            "malformed",
        ),
        (
            edit(&|v| {
                put16(v, l3 + 2, 10);
                fix_ip(v)
            }),
            "malformed",
        ),
        (
            edit(&|v| {
                put16(v, l3 + 24, 3);
                fix_ip(v)
            }),
            "malformed",
        ),
        (
            edit(&|v| {
                put16(v, l3 + 24, 500);
                fix_ip(v)
            }),
            "malformed",
        ),
        (
            edit(&|v| {
                v[l3] = 0x65;
                fix_ip(v)
            }),
            "malformed",
        ),
        (edit(&|v| v[6] = 0x01), "malformed"),
        (
            edit(&|v| {
                v[l3] = 0x46;
                crate::backend::net::wire::set_ipv4_checksum(&mut v[l3..l3 + 24])
            }),
            "ip_options",
        ),
        (
            edit(&|v| {
                put16(v, l3 + 6, 0x2000);
                fix_ip(v)
            }),
            "fragments",
        ),
        (
            edit(&|v| {
                put16(v, l3 + 6, 0x0001);
                fix_ip(v)
            }),
            "fragments",
        ),
        (edit(&|v| v[l3 + 10] ^= 1), "bad_checksum"),
        (
            edit(&|v| {
                let n = v.len();
                v[n - 1] ^= 1
            }),
            "bad_checksum",
        ),
        (edit(&|v| v[0] = 0x04), "not_for_us"),
        (
            edit(&|v| v[0..6].copy_from_slice(&BROADCAST_MAC)),
            "not_for_us",
        ),
        (
            edit(&|v| {
                v[l3 + 19] = 3;
                fix_ip(v)
            }),
            "not_for_us",
        ),
        (edit(&|v| put16(v, 12, 0x86dd)), "unsupported"),
        (
            edit(&|v| {
                v[l3 + 9] = IPPROTO_TCP;
                fix_ip(v)
            }),
            "unsupported",
        ),
        (
            edit(&|v| {
                put16(v, 36, 12345);
                put16(v, 40, 0)
            }),
            "no_service",
        ),
    ];
    let mut p = peer();

    // Act + Assert
    for (frame, reason) in &cases {
        let before = p.stats().drops;
        send(&mut p, frame);
        let d = p.stats().drops;
        let bumped = match *reason {
            "malformed" => d.malformed - before.malformed,
            "ip_options" => d.ip_options - before.ip_options,
            "fragments" => d.fragments - before.fragments,
            "bad_checksum" => d.bad_checksum - before.bad_checksum,
            "not_for_us" => d.not_for_us - before.not_for_us,
            "unsupported" => d.unsupported - before.unsupported,
            "no_service" => d.no_service - before.no_service,
            _ => unreachable!(),
        };
        assert_eq!(bumped, 1, "{reason}: {frame:02x?}");
    }
    assert!(recv_all(&mut p).is_empty());
    assert_eq!(p.service_counters(), ServiceCounters::default());
    assert_eq!(p.counters().tx_frames, cases.len() as u64);
}

#[test]
fn ethernet_padding_after_the_datagram_is_ignored() {
    let mut p = peer();
    let mut f = guest_udp(ECHO_PORT, b"ab");
    f.resize(60, 0xee);
    send(&mut p, &f);
    let replies = recv_all(&mut p);
    assert_eq!(replies.len(), 1);
    assert_eq!(&replies[0][UDP_V4_HEADERS..], b"ab");
}

#[test]
fn ufo_datagram_is_echoed_whole() {
    let mut p = peer();
    let payload = vec![0x33u8; 4000];
    let f = guest_udp(ECHO_PORT, &payload);
    let meta = FrameMeta {
        gso: Some(Gso {
            kind: GsoKind::Udp,
            hdr_len: 42,
            size: 1480,
        }),
        ..FrameMeta::default()
    };

    p.send(&f, &meta).unwrap();

    let replies = recv_all(&mut p);
    assert_eq!(replies.len(), 1);
    assert_eq!(&replies[0][UDP_V4_HEADERS..], &payload[..]);
    assert_eq!((p.stats().gso_frames, p.stats().gso_segments), (1, 3));
}

#[test]
fn tso_frames_are_segmented_then_refused_for_lack_of_tcp() {
    let mut p = peer();
    let mut f = guest_udp(0, &[0u8; 12]);
    f.truncate(ETH_HLEN + IPV4_HLEN);
    let mut tcp = [0u8; 20];
    tcp[12] = 5 << 4;
    f.extend_from_slice(&tcp);
    f.extend_from_slice(&[7u8; 3000]);
    f[ETH_HLEN + 9] = IPPROTO_TCP;
    let meta = FrameMeta {
        csum: Some((34, 16)),
        gso: Some(Gso {
            kind: GsoKind::TcpV4,
            hdr_len: 54,
            size: 1000,
        }),
        data_valid: false,
    };

    p.send(&f, &meta).unwrap();

    let s = p.stats();
    assert_eq!(
        (s.gso_frames, s.gso_segments, s.drops.unsupported),
        (1, 3, 3)
    );
    assert_eq!(p.counters().tx_frames, 1);
}

#[test]
fn a_full_reply_queue_drops_and_counts() {
    let mut p = Peer::new(PeerConfig {
        queue_frames: 2,
        ..PeerConfig::default()
    })
    .unwrap();
    for _ in 0..5 {
        send(&mut p, &guest_udp(ECHO_PORT, b"q"));
    }
    assert_eq!(recv_all(&mut p).len(), 2);
    assert_eq!(p.stats().drops.queue_full, 3);
    assert_eq!(p.service_counters().echoed_frames, 2);
}

#[test]
fn replies_too_big_for_the_buffer_are_dropped_not_truncated() {
    let mut p = peer();
    send(&mut p, &guest_udp(ECHO_PORT, &[1u8; 500]));
    let mut small = [0u8; 100];
    assert!(p.recv(&mut small).unwrap().is_none());
    assert_eq!(p.stats().drops.too_big, 1);
    assert!(!is_readable(p.rx_fd()));
}

fn any_meta() -> impl Strategy<Value = FrameMeta> {
    let kind = prop_oneof![
        Just(GsoKind::TcpV4),
        Just(GsoKind::TcpV6),
        Just(GsoKind::Udp)
    ];
    let gso = proptest::option::of((kind, any::<u16>(), any::<u16>()).prop_map(
        |(kind, hdr_len, size)| Gso {
            kind,
            hdr_len,
            size,
        },
    ));
    (
        proptest::option::of((0u16..200, 0u16..200)),
        gso,
        any::<bool>(),
    )
        .prop_map(|(csum, gso, data_valid)| FrameMeta {
            csum,
            gso,
            data_valid,
        })
}

/// Frames that get past the first checks: a valid echo request with random bytes overwritten.
fn mangled_frame() -> impl Strategy<Value = Vec<u8>> {
    let base = guest_udp(ECHO_PORT, &[0u8; 64]);
    let edits = proptest::collection::vec((0..base.len(), any::<u8>()), 0..8);
    (edits, 0..base.len() + 1).prop_map(move |(edits, len)| {
        let mut f = base.clone();
        for (i, b) in edits {
            f[i] = b;
        }
        f.truncate(len.max(ETH_HLEN));
        f
    })
}

proptest! {
    #[test]
    fn send_never_panics_on_random_bytes(
        frame in proptest::collection::vec(any::<u8>(), 0..2000),
        meta in any_meta(),
    ) {
        let mut p = peer();
        p.send(&frame, &meta).unwrap();
        let _ = recv_all(&mut p);
    }

    #[test]
    fn send_never_panics_on_mangled_frames(frame in mangled_frame(), meta in any_meta()) {
        let mut p = peer();
        p.send(&frame, &meta).unwrap();
        for f in recv_all(&mut p) {
            let udp = be16(&f, 12) == ETHERTYPE_IPV4 && f[ETH_HLEN + 9] == IPPROTO_UDP;
            prop_assert!(!udp || udp_checksums_ok(&f));
        }
    }
}
