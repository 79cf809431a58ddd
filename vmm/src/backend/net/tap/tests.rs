//! These tests make real namespaces and TAP devices and need root; without it they fail with
//! the reason, they do not skip. All traffic stays in the namespaces they create.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::*;
use crate::backend::net::netns;
use crate::backend::net::services::{DISCARD_PORT, ECHO_PORT, SOURCE_PORT};
use crate::backend::net::wire::{
    be16, build_udp_v4, finish_checksum, pseudo_header_v4, put16, Arp, UdpV4, ARP_REPLY,
    ARP_REQUEST, BROADCAST_MAC, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETH_HLEN, IPPROTO_UDP, IPV4_HLEN,
    UDP_V4_HEADERS,
};

const GUEST_MAC: Mac = [0x02, 0, 0, 0, 0, 0x15];
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const GUEST_PORT: u16 = 40_000;

fn tap_with(opts: TapOptions) -> Tap {
    Tap::create(&opts).unwrap_or_else(|e| {
        panic!("cannot create the test namespace and TAP (these tests need root, /dev/net/tun and `ip netns`): {e}")
    })
}

/// A TAP whose namespace knows the guest's MAC, so no ARP is needed for replies.
fn tap() -> Tap {
    tap_with(TapOptions {
        guest: Some(GuestAddr {
            ip: GUEST_IP,
            mac: GUEST_MAC,
        }),
        ..TapOptions::default()
    })
}

/// RFC 1071 written out the slow way, independent of the code under test.
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

fn udp_checksums_ok(f: &[u8]) -> bool {
    let ip = &f[ETH_HLEN..ETH_HLEN + IPV4_HLEN];
    let udp = &f[ETH_HLEN + IPV4_HLEN..];
    let mut pseudo = ip[12..20].to_vec();
    pseudo.extend_from_slice(&[0, IPPROTO_UDP]);
    pseudo.extend_from_slice(&(udp.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(udp);
    ones_sum(ip) == 0xffff && be16(udp, 6) != 0 && ones_sum(&pseudo) == 0xffff
}

fn guest_udp(dst_port: u16, payload: &[u8]) -> Vec<u8> {
    build_udp_v4(
        &UdpV4 {
            src_mac: GUEST_MAC,
            dst_mac: [0; 6],
            src_ip: GUEST_IP,
            dst_ip: HOST_IP,
            src_port: GUEST_PORT,
            dst_port,
            ip_id: 1,
        },
        payload,
    )
}

/// The TAP's own MAC, learned the way a guest learns it: by ARP.
fn host_mac(tap: &mut Tap) -> Mac {
    let req = Arp {
        oper: ARP_REQUEST,
        sha: GUEST_MAC,
        spa: GUEST_IP,
        tha: [0; 6],
        tpa: HOST_IP,
    };
    tap.send(&req.to_frame(BROADCAST_MAC), &FrameMeta::default())
        .unwrap();
    let (f, _) = recv_matching(tap, "an ARP reply", |f| {
        Arp::parse(f).is_some_and(|a| a.oper == ARP_REPLY)
    });
    Arp::parse(&f).unwrap().sha
}

/// Reads frames until one matches, for at most two seconds; answers the kernel's ARP
/// requests for the guest on the way, as a guest would.
fn recv_matching(tap: &mut Tap, what: &str, want: impl Fn(&[u8]) -> bool) -> (Vec<u8>, FrameMeta) {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut buf = vec![0u8; 65_600];
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let Some((n, meta)) = tap.recv(&mut buf).unwrap() else {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        };
        let f = &buf[..n];
        if want(f) {
            return (f.to_vec(), meta);
        }
        if let Some(a) = Arp::parse(f).filter(|a| a.oper == ARP_REQUEST && a.tpa == GUEST_IP) {
            let reply = Arp {
                oper: ARP_REPLY,
                sha: GUEST_MAC,
                spa: GUEST_IP,
                tha: a.sha,
                tpa: a.spa,
            };
            tap.send(&reply.to_frame(a.sha), &FrameMeta::default())
                .unwrap();
        }
        seen.push(f.len());
    }
    panic!("no {what} from the TAP within 2 s (other frames seen, by length: {seen:?})");
}

fn is_udp_from(f: &[u8], port: u16) -> bool {
    f.len() >= UDP_V4_HEADERS
        && be16(f, 12) == ETHERTYPE_IPV4
        && f[ETH_HLEN + 9] == IPPROTO_UDP
        && be16(f, 34) == port
        && be16(f, 36) == GUEST_PORT
}

fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn kernel_answers_arp_and_our_service_echoes_udp() {
    // Arrange: no static neighbour, so the namespace learns the guest from its ARP request.
    let mut tap = tap_with(TapOptions::default());

    // Act + Assert: ARP.
    let req = Arp {
        oper: ARP_REQUEST,
        sha: GUEST_MAC,
        spa: GUEST_IP,
        tha: [0; 6],
        tpa: HOST_IP,
    };
    tap.send(&req.to_frame(BROADCAST_MAC), &FrameMeta::default())
        .unwrap();
    let (f, _) = recv_matching(&mut tap, "ARP reply", |f| be16(f, 12) == ETHERTYPE_ARP);
    let reply = Arp::parse(&f).unwrap();
    assert_eq!(reply.oper, ARP_REPLY);
    assert_eq!(
        (reply.spa, reply.tha, reply.tpa),
        (HOST_IP, GUEST_MAC, GUEST_IP)
    );
    assert_eq!(&f[0..6], &GUEST_MAC);
    let host_mac = reply.sha;

    // Act + Assert: UDP echo.
    let mut req = guest_udp(ECHO_PORT, b"hello through the tap");
    req[0..6].copy_from_slice(&host_mac);
    tap.send(&req, &FrameMeta::default()).unwrap();
    let (f, meta) = recv_matching(&mut tap, "UDP echo reply", |f| is_udp_from(f, ECHO_PORT));
    assert_eq!(meta, FrameMeta::default(), "no offloads were enabled");
    assert_eq!(&f[0..6], &GUEST_MAC);
    assert_eq!(&f[6..12], &host_mac);
    assert_eq!(&f[ETH_HLEN + 12..ETH_HLEN + 16], &HOST_IP.octets());
    assert_eq!(&f[ETH_HLEN + 16..ETH_HLEN + 20], &GUEST_IP.octets());
    assert_eq!(&f[UDP_V4_HEADERS..], b"hello through the tap");
    assert!(udp_checksums_ok(&f));
    let s = tap.service_counters().unwrap();
    assert_eq!((s.echoed_frames, s.echoed_bytes), (1, 21));
    assert!(tap.counters().tx_frames == 2 && tap.counters().rx_frames >= 2);
}

#[test]
fn discard_service_counts_frames_and_bytes() {
    let mut tap = tap();
    let mac = host_mac(&mut tap);
    for len in [1usize, 100, 1472] {
        let mut f = guest_udp(DISCARD_PORT, &vec![0x5a; len]);
        f[0..6].copy_from_slice(&mac);
        tap.send(&f, &FrameMeta::default()).unwrap();
    }
    wait_for("3 frames at the discard service", || {
        tap.service_counters().unwrap().sunk_frames == 3
    });
    assert_eq!(tap.service_counters().unwrap().sunk_bytes, 1573);
    assert_eq!(tap.stats(), TapStats::default());
}

#[test]
fn source_service_sends_n_frames_of_size_s() {
    let mut tap = tap();
    let mac = host_mac(&mut tap);
    let mut cmd = guest_udp(SOURCE_PORT, b"count=5 size=200");
    cmd[0..6].copy_from_slice(&mac);

    tap.send(&cmd, &FrameMeta::default()).unwrap();

    for seq in 0..5u64 {
        let (f, _) = recv_matching(&mut tap, "source frame", |f| is_udp_from(f, SOURCE_PORT));
        assert_eq!(f.len(), 200);
        assert!(udp_checksums_ok(&f));
        let payload = &f[UDP_V4_HEADERS..];
        assert_eq!(payload[..8], seq.to_be_bytes());
        assert!(payload[8..]
            .iter()
            .enumerate()
            .all(|(i, &b)| b == (i + 8) as u8));
    }
    let s = tap.service_counters().unwrap();
    assert_eq!(
        (s.source_commands, s.sourced_frames, s.sourced_bytes),
        (1, 5, 5 * 158)
    );
}

#[test]
fn checksum_offload_round_trips_through_vnet_headers() {
    // Arrange: the guest can take partial checksums, and sends one of its own.
    let mut tap = tap();
    tap.set_offloads(Offloads {
        csum: true,
        tso: false,
    })
    .unwrap();
    let mac = host_mac(&mut tap);
    let mut req = guest_udp(ECHO_PORT, b"offloaded checksum");
    req[0..6].copy_from_slice(&mac);
    let l4 = ETH_HLEN + IPV4_HLEN;
    let pseudo = pseudo_header_v4(GUEST_IP, HOST_IP, IPPROTO_UDP, req.len() - l4);
    put16(&mut req, l4 + 6, pseudo as u16);
    let meta = FrameMeta {
        csum: Some((l4 as u16, 6)),
        ..FrameMeta::default()
    };

    // Act: the kernel must take our partial checksum, and hand back its own.
    tap.send(&req, &meta).unwrap();
    let (mut f, meta) = recv_matching(&mut tap, "UDP echo reply", |f| is_udp_from(f, ECHO_PORT));

    // Assert
    assert_eq!(
        meta.csum,
        Some((l4 as u16, 6)),
        "the kernel left the checksum to the guest"
    );
    assert!(!udp_checksums_ok(&f));
    finish_checksum(&mut f, l4, 6).unwrap();
    assert!(udp_checksums_ok(&f));
    assert_eq!(&f[UDP_V4_HEADERS..], b"offloaded checksum");
    assert!(tap.describe().contains("csum=true"));
}

#[test]
fn frames_too_big_for_the_buffer_are_dropped_whole() {
    let mut tap = tap();
    let mac = host_mac(&mut tap);
    let mut req = guest_udp(ECHO_PORT, &[9u8; 1000]);
    req[0..6].copy_from_slice(&mac);
    tap.send(&req, &FrameMeta::default()).unwrap();
    wait_for("the echo", || {
        tap.service_counters().unwrap().echoed_frames == 1
    });
    let mut small = [0u8; 200];
    let deadline = Instant::now() + Duration::from_secs(2);
    while tap.stats().rx_too_big == 0 && Instant::now() < deadline {
        assert!(tap.recv(&mut small).unwrap().is_none_or(|(n, _)| n <= 200));
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(tap.stats().rx_too_big, 1);
}

#[test]
fn bad_offload_requests_are_refused_and_counted() {
    let mut tap = tap();
    let req = guest_udp(DISCARD_PORT, &[0u8; 10]);
    // A checksum to be stored far past the end of the frame.
    let meta = FrameMeta {
        csum: Some((5000, 6)),
        ..FrameMeta::default()
    };
    tap.send(&req, &meta).unwrap();
    assert_eq!(tap.stats().tx_rejected, 1);
}

#[test]
fn namespace_is_gone_after_drop() {
    let tap = tap();
    let name = tap.netns().name().to_string();
    assert!(netns::list().unwrap().contains(&name));

    drop(tap);

    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        !listed
            .lines()
            .any(|l| l.split_whitespace().next() == Some(&name)),
        "{listed}"
    );
}

#[test]
fn run_enters_the_namespace_on_another_thread_only() {
    let ns = NetNs::create(DEFAULT_PREFIX).expect("need root and ip netns");
    let own = || std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    let before = own();

    let inside = ns.run(own).unwrap();

    assert_ne!(inside, before);
    assert_eq!(own(), before);
}

#[test]
fn cleanup_stale_removes_only_dead_owners() {
    // Arrange: a namespace named for a process that has exited, and one of ours.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = format!("vmbench-{dead}-0");
    let ok = std::process::Command::new("ip")
        .args(["netns", "add", &stale])
        .status()
        .unwrap();
    assert!(ok.success(), "cannot create namespaces (need root)");
    let ours = NetNs::create(DEFAULT_PREFIX).unwrap();

    // Act
    let removed = netns::cleanup_stale().unwrap();

    // Assert: gone, by this call or by a TAP another test set up meanwhile (each cleans up).
    assert!(!removed.contains(&ours.name().to_string()), "{removed:?}");
    let now = netns::list().unwrap();
    assert!(!now.contains(&stale));
    assert!(now.contains(&ours.name().to_string()));
}

#[test]
fn vnet_headers_encode_and_decode() {
    let metas = [
        FrameMeta::default(),
        FrameMeta {
            csum: Some((34, 6)),
            ..FrameMeta::default()
        },
        FrameMeta {
            data_valid: true,
            ..FrameMeta::default()
        },
        FrameMeta {
            csum: Some((34, 16)),
            gso: Some(Gso {
                kind: GsoKind::TcpV4,
                hdr_len: 66,
                size: 1448,
            }),
            data_valid: false,
        },
        FrameMeta {
            csum: Some((54, 16)),
            gso: Some(Gso {
                kind: GsoKind::TcpV6,
                hdr_len: 86,
                size: 1428,
            }),
            data_valid: false,
        },
        FrameMeta {
            csum: None,
            gso: Some(Gso {
                kind: GsoKind::Udp,
                hdr_len: 42,
                size: 1480,
            }),
            data_valid: false,
        },
    ];
    for m in metas {
        assert_eq!(decode_vnet_hdr(&encode_vnet_hdr(&m)).unwrap(), m);
    }
    let tso = encode_vnet_hdr(&metas[3]);
    assert_eq!(tso, [1, 1, 66, 0, 0xa8, 0x05, 34, 0, 16, 0, 0, 0]);
    let mut ecn = tso;
    ecn[1] |= 0x80;
    assert_eq!(decode_vnet_hdr(&ecn).unwrap(), metas[3]);
    let mut bad = tso;
    bad[1] = 2;
    assert!(decode_vnet_hdr(&bad).is_err());
}

#[test]
fn offload_flags_follow_the_guest() {
    let f = |csum, tso| tun_offload_flags(Offloads { csum, tso });
    assert_eq!(f(false, false), 0);
    assert_eq!(f(true, false), libc::TUN_F_CSUM);
    assert_eq!(
        f(true, true),
        libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6
    );
    assert_eq!(f(false, true), f(true, true));
}

#[test]
fn permission_errors_name_root_and_the_peer_back_end() {
    let msg = Error::NoPermission.to_string();
    assert!(
        msg.contains("root (CAP_NET_ADMIN)") && msg.contains("`peer`"),
        "{msg}"
    );
    assert!(Error::NoTunDevice.to_string().contains("/dev/net/tun"));
}

/// A TCP connection from inside the namespace to the host side's `port`.
fn tcp_in(host: &TapHost, port: u16) -> std::net::TcpStream {
    let s = host
        .netns()
        .run(|| std::net::TcpStream::connect((HOST_IP, port)))
        .unwrap()
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

#[test]
fn tcp_sink_and_source_count_exactly_what_the_other_end_saw() {
    use std::io::{Read, Write};
    use std::net::Shutdown;
    let (host, _file) = TapHost::create(&TapOptions::default()).unwrap();

    // Sink: everything written before the close is counted before the sink closes.
    let mut s = tcp_in(&host, DISCARD_PORT);
    let chunk = vec![0xa5u8; 100_000];
    for _ in 0..20 {
        s.write_all(&chunk).unwrap();
    }
    s.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    let t = host.tcp_counters().unwrap();
    assert_eq!((t.sunk_bytes, t.sink_connections), (2_000_000, 1));

    // Source: the pattern until our half-close, then the rest of what was sent, then its end.
    let mut s = tcp_in(&host, SOURCE_PORT);
    let mut got = vec![0u8; 300_000];
    s.read_exact(&mut got).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    s.read_to_end(&mut got).unwrap();
    assert!(got.iter().enumerate().all(|(i, &b)| b == i as u8));
    let t = host.tcp_counters().unwrap();
    assert_eq!(t.sourced_bytes, got.len() as u64);
    assert_eq!(t.source_connections, 1);
    assert!(host.describe().contains("tcp sink/9 source/19"));
}

#[test]
fn iperf3_server_in_the_namespace_serves_a_client_there_and_goes_with_it() {
    let opts = TapOptions {
        iperf3: true,
        ..TapOptions::default()
    };
    let (host, _file) = TapHost::create(&opts).unwrap_or_else(|e| {
        panic!("the namespace with iperf3 -s (needs root and `apt-get install iperf3`): {e}")
    });
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", host.netns().name(), "iperf3"])
        .args(["-c", "10.0.2.2", "-t", "1", "-J"])
        .output()
        .unwrap();
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{json}");
    assert!(json.contains("\"sum_received\""), "{json}");
    let name = host.netns().name().to_string();
    drop(host);
    // The server went with the namespace: nothing of ours is left.
    assert!(!netns::list().unwrap().contains(&name));
    let ps = std::process::Command::new("ps")
        .args(["-o", "args=", "--ppid", &std::process::id().to_string()])
        .output()
        .unwrap();
    let children = String::from_utf8_lossy(&ps.stdout);
    assert!(!children.contains("iperf3 -s -B 10.0.2.2"), "{children}");
}
