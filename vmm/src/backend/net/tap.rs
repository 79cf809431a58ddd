//! A TAP device (Linux tuntap, Documentation/networking/tuntap.rst) with 12-byte virtio-net
//! headers (virtio 1.2, 5.1.6: `struct virtio_net_hdr` with `num_buffers`), inside a network
//! namespace that vmbench creates and removes. The namespace's kernel is the host the guest
//! talks to (10.0.2.2/24 by default), and vmbench's own UDP and TCP services
//! ([`super::services::host`]) and, on request, an `iperf3 -s` listen there. [`TapHost`] is
//! that host side alone, for QEMU, which is handed the TAP's descriptor. Both ends live in the namespace, so nothing the
//! guest sends can leave it.
//!
//! The header is little-endian, as virtio 1.x wants and as the TAP writes it on x86.

#[cfg(test)]
mod tests;

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::netns::{self, NetNs, DEFAULT_PREFIX, NEED_ROOT};
use super::services::host::{self as host_services, HostServices};
use super::services::iperf3::{Error as Iperf3Error, Iperf3Server, IPERF3_PORT};
use super::services::tcp::TcpCounters;
use super::services::ServiceCounters;
use super::wire::Mac;
use super::{FrameMeta, Gso, GsoKind, NetBackend, NetCounters, Offloads};
use crate::sys;

pub const VNET_HDR_LEN: usize = 12;
const TUN_PATH: &str = "/dev/net/tun";
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
const VIRTIO_NET_HDR_F_DATA_VALID: u8 = 2;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_UDP: u8 = 3;
const GSO_TCPV6: u8 = 4;
const GSO_ECN: u8 = 0x80;
/// Room past the caller's buffer, so a frame too long for it is seen whole and dropped
/// rather than cut short: the largest GSO frame a TAP hands over, with margin.
const OVERFLOW_LEN: usize = 70_000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Netns(#[from] netns::Error),
    #[error("{NEED_ROOT}")]
    NoPermission,
    #[error("{TUN_PATH} is missing: load the tun module (modprobe tun) or use the default `peer` back-end")]
    NoTunDevice,
    #[error("cannot set up the tap device ({what})")]
    Tun {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the host-side services")]
    Services(#[source] host_services::Error),
    #[error("cannot start the host-side iperf3 server")]
    Iperf3(#[source] Iperf3Error),
    #[error("bad virtio-net header: {0}")]
    Header(&'static str),
}

/// The guest's addresses, for a permanent neighbour entry in the namespace (so the host side
/// never has to ARP for the guest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestAddr {
    pub ip: Ipv4Addr,
    pub mac: Mac,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapOptions {
    pub ns_prefix: String,
    /// The TAP's name inside the namespace.
    pub if_name: String,
    /// The host side's address on the TAP.
    pub host_ip: Ipv4Addr,
    pub prefix_len: u8,
    pub guest: Option<GuestAddr>,
    /// Start the UDP echo, discard and source and the TCP sink and source in the namespace.
    pub services: bool,
    /// Start `iperf3 -s` in the namespace (iperf3 must be installed on the host).
    pub iperf3: bool,
}

impl Default for TapOptions {
    fn default() -> Self {
        TapOptions {
            ns_prefix: DEFAULT_PREFIX.into(),
            if_name: "vmbtap0".into(),
            host_ip: Ipv4Addr::new(10, 0, 2, 2),
            prefix_len: 24,
            guest: None,
            services: true,
            iperf3: false,
        }
    }
}

/// Frames the TAP refused or we could not deliver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TapStats {
    /// Guest frames the kernel refused (a bad header or GSO request: EINVAL).
    pub tx_rejected: u64,
    /// Guest frames dropped because the TAP was full (EAGAIN).
    pub tx_dropped: u64,
    /// Frames for the guest dropped because the buffer was too small.
    pub rx_too_big: u64,
    /// Frames for the guest dropped because of a header we do not understand.
    pub rx_bad_header: u64,
}

/// The host side of a TAP: the namespace, the TAP's address and the guest's neighbour entry
/// there, and the services. Whoever holds the TAP's file is the guest side: vmbench's own
/// device through [`Tap`], or QEMU, handed the descriptor (`-netdev tap,fd=N`).
pub struct TapHost {
    // Fields drop in this order: the iperf3 server and the services stop, then the namespace
    // goes (it lives on while a TAP file opened in it is still open).
    iperf3: Option<Iperf3Server>,
    services: Option<HostServices>,
    ns: NetNs,
    if_name: String,
    host: String,
}

impl TapHost {
    /// Removes namespaces dead vmbench processes left, creates the namespace, the TAP in it
    /// (up, with the host address), and the services; returns the TAP's file: close-on-exec, non-blocking, 12-byte virtio-net headers
    /// (IFF_VNET_HDR), no offloads toward the guest yet.
    pub fn create(opts: &TapOptions) -> Result<(TapHost, File), Error> {
        if !Path::new(TUN_PATH).exists() {
            return Err(Error::NoTunDevice);
        }
        if opts.if_name.is_empty() || opts.if_name.len() >= libc::IFNAMSIZ {
            return Err(Error::Tun {
                what: "interface name",
                source: io::Error::from(io::ErrorKind::InvalidInput),
            });
        }
        // Namespaces of vmbench processes that died without cleaning up.
        if let Err(e) = netns::cleanup_stale() {
            log::warn!("cannot remove stale vmbench namespaces: {e}");
        }
        let ns = NetNs::create(&opts.ns_prefix)?;
        let name = opts.if_name.clone();
        let file = ns.run(move || {
            disable_ipv6();
            open_tap(&name)
        })??;
        let host = format!("{}/{}", opts.host_ip, opts.prefix_len);
        let dev = opts.if_name.as_str();
        ns.ip(&["link", "set", "lo", "up"])?;
        ns.ip(&["addr", "add", &host, "dev", dev])?;
        ns.ip(&["link", "set", dev, "up"])?;
        if let Some(g) = opts.guest {
            let m = g.mac;
            let mac = format!(
                "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                m[0], m[1], m[2], m[3], m[4], m[5]
            );
            let ip = g.ip.to_string();
            let args = [
                "neigh",
                "replace",
                &ip,
                "lladdr",
                &mac,
                "dev",
                dev,
                "nud",
                "permanent",
            ];
            ns.ip(&args)?;
        }
        let services = if opts.services {
            let s = HostServices::start(&ns, opts.host_ip).map_err(|e| match e {
                host_services::Error::Netns(e) => Error::Netns(e),
                e => Error::Services(e),
            })?;
            Some(s)
        } else {
            None
        };
        let iperf3 = if opts.iperf3 {
            Some(Iperf3Server::start(&ns, opts.host_ip).map_err(Error::Iperf3)?)
        } else {
            None
        };
        let host = TapHost {
            iperf3,
            services,
            ns,
            if_name: opts.if_name.clone(),
            host,
        };
        Ok((host, file))
    }

    pub fn netns(&self) -> &NetNs {
        &self.ns
    }

    pub fn if_name(&self) -> &str {
        &self.if_name
    }

    /// The host-side services' counters, if they run.
    pub fn service_counters(&self) -> Option<ServiceCounters> {
        self.services.as_ref().map(HostServices::counters)
    }

    /// The TCP sink's and source's counters, if the services run.
    pub fn tcp_counters(&self) -> Option<TcpCounters> {
        self.services.as_ref().map(HostServices::tcp_counters)
    }

    /// The services' counters by name, as results report them (`backend_snapshot`'s names).
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        let mut v = Vec::new();
        if let Some(s) = self.service_counters() {
            v.extend(super::service_snapshot(&s));
        }
        if let Some(t) = self.tcp_counters() {
            v.extend(super::tcp_snapshot(&t));
        }
        v
    }

    /// One line for results and logs: where the host side is and what runs there.
    pub fn describe(&self) -> String {
        format!(
            "tap {} in netns {}, host {}, services {}{}",
            self.if_name,
            self.ns.name(),
            self.host,
            if self.services.is_some() {
                "udp echo/7 discard/9 source/19, tcp sink/9 source/19"
            } else {
                "off"
            },
            match &self.iperf3 {
                Some(_) => format!(", iperf3 -s on {IPERF3_PORT}"),
                None => String::new(),
            }
        )
    }
}

pub struct Tap {
    // The TAP closes first, then the host side goes (services, then the namespace).
    file: File,
    host: TapHost,
    /// Offloads enabled toward the guest (TUNSETOFFLOAD).
    to_guest: Offloads,
    counters: NetCounters,
    stats: TapStats,
    overflow: Vec<u8>,
}

impl Tap {
    /// Creates the namespace, the TAP in it (up, with the host address), and the services.
    pub fn create(opts: &TapOptions) -> Result<Tap, Error> {
        let (host, file) = TapHost::create(opts)?;
        Ok(Tap {
            file,
            host,
            to_guest: Offloads::default(),
            counters: NetCounters::default(),
            stats: TapStats::default(),
            overflow: vec![0; OVERFLOW_LEN],
        })
    }

    pub fn netns(&self) -> &NetNs {
        self.host.netns()
    }

    pub fn if_name(&self) -> &str {
        self.host.if_name()
    }

    /// The host-side services' counters, if they run.
    pub fn service_counters(&self) -> Option<ServiceCounters> {
        self.host.service_counters()
    }

    pub fn stats(&self) -> TapStats {
        self.stats
    }
}

/// Best effort: without IPv6 the namespace sends the guest no router solicitations or
/// duplicate address probes, only what the test or benchmark asked for. /proc/sys/net shows
/// the calling thread's namespace.
fn disable_ipv6() {
    for conf in ["all", "default"] {
        let path = format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6");
        let _ = std::fs::write(path, "1");
    }
}

fn tun_error(what: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| match source.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => Error::NoPermission,
        _ => Error::Tun { what, source },
    }
}

/// Opens a TAP named `name` in the calling thread's namespace, non-blocking, with 12-byte
/// virtio-net headers and no offloads toward the guest yet.
fn open_tap(name: &str) -> Result<File, Error> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(TUN_PATH)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::NoTunDevice,
            _ => tun_error("open /dev/net/tun")(e),
        })?;
    let flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
    sys::tun_set_iff(&file, name, flags).map_err(tun_error("TUNSETIFF"))?;
    sys::tun_set_vnet_hdr_size(&file, VNET_HDR_LEN as libc::c_int)
        .map_err(tun_error("TUNSETVNETHDRSZ"))?;
    sys::tun_set_offload(&file, 0).map_err(tun_error("TUNSETOFFLOAD"))?;
    Ok(file)
}

/// The TUNSETOFFLOAD flags for what the guest can receive. TSO implies checksum offload, as
/// in virtio (GUEST_TSO4 requires GUEST_CSUM). [`Offloads`] has no UFO/USO bit, so UDP
/// segmentation offload stays off toward the guest.
pub fn tun_offload_flags(o: Offloads) -> libc::c_uint {
    let mut flags = 0;
    if o.csum || o.tso {
        flags |= libc::TUN_F_CSUM;
    }
    if o.tso {
        flags |= libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
    }
    flags
}

/// The virtio-net header for a frame with `meta`.
pub fn encode_vnet_hdr(meta: &FrameMeta) -> [u8; VNET_HDR_LEN] {
    let mut h = [0u8; VNET_HDR_LEN];
    if let Some((start, offset)) = meta.csum {
        h[0] |= VIRTIO_NET_HDR_F_NEEDS_CSUM;
        h[6..8].copy_from_slice(&start.to_le_bytes());
        h[8..10].copy_from_slice(&offset.to_le_bytes());
    }
    if meta.data_valid {
        h[0] |= VIRTIO_NET_HDR_F_DATA_VALID;
    }
    if let Some(g) = meta.gso {
        h[1] = match g.kind {
            GsoKind::TcpV4 => GSO_TCPV4,
            GsoKind::TcpV6 => GSO_TCPV6,
            GsoKind::Udp => GSO_UDP,
        };
        h[2..4].copy_from_slice(&g.hdr_len.to_le_bytes());
        h[4..6].copy_from_slice(&g.size.to_le_bytes());
    }
    h
}

/// The frame metadata a virtio-net header describes (`num_buffers` is ignored). The ECN bit
/// is dropped: [`FrameMeta`] cannot carry it and the segments are the same without it.
pub fn decode_vnet_hdr(h: &[u8; VNET_HDR_LEN]) -> Result<FrameMeta, Error> {
    let le = |at: usize| u16::from_le_bytes([h[at], h[at + 1]]);
    let kind = match h[1] & !GSO_ECN {
        GSO_NONE => None,
        GSO_TCPV4 => Some(GsoKind::TcpV4),
        GSO_TCPV6 => Some(GsoKind::TcpV6),
        GSO_UDP => Some(GsoKind::Udp),
        _ => return Err(Error::Header("unknown gso type")),
    };
    Ok(FrameMeta {
        csum: (h[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0).then(|| (le(6), le(8))),
        gso: kind.map(|kind| Gso {
            kind,
            hdr_len: le(2),
            size: le(4),
        }),
        data_valid: h[0] & VIRTIO_NET_HDR_F_DATA_VALID != 0,
    })
}

impl NetBackend for Tap {
    fn service_counters(&self) -> Option<ServiceCounters> {
        Tap::service_counters(self)
    }

    fn tcp_counters(&self) -> Option<TcpCounters> {
        self.host.tcp_counters()
    }

    fn send(&mut self, frame: &[u8], meta: &FrameMeta) -> io::Result<()> {
        let hdr = encode_vnet_hdr(meta);
        // One writev: the TAP takes a frame per write, header first.
        let n = (&self.file).write_vectored(&[IoSlice::new(&hdr), IoSlice::new(frame)]);
        let e = match n {
            Ok(_) => {
                self.counters.tx_frames += 1;
                self.counters.tx_bytes += frame.len() as u64;
                return Ok(());
            }
            Err(e) => e,
        };
        match e.raw_os_error() {
            // The guest's frame was bad, not the back-end: count it, like a NIC would.
            Some(libc::EINVAL) => self.stats.tx_rejected += 1,
            Some(libc::EAGAIN) => self.stats.tx_dropped += 1,
            _ => return Err(e),
        }
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<(usize, FrameMeta)>> {
        loop {
            let mut hdr = [0u8; VNET_HDR_LEN];
            // One readv: the TAP hands over a frame per read, header first; what does not
            // fit in `buf` lands in the overflow buffer, so a too-big frame is seen whole.
            let n = (&self.file).read_vectored(&mut [
                IoSliceMut::new(&mut hdr),
                IoSliceMut::new(buf),
                IoSliceMut::new(&mut self.overflow),
            ]);
            let n = match n {
                Ok(n) => n,
                Err(e) => {
                    return match e.kind() {
                        io::ErrorKind::WouldBlock => Ok(None),
                        io::ErrorKind::Interrupted => continue,
                        _ => Err(e),
                    }
                }
            };
            if n < VNET_HDR_LEN {
                self.stats.rx_bad_header += 1;
                continue;
            }
            let len = n - VNET_HDR_LEN;
            if len > buf.len() {
                self.stats.rx_too_big += 1;
                continue;
            }
            let Ok(meta) = decode_vnet_hdr(&hdr) else {
                self.stats.rx_bad_header += 1;
                continue;
            };
            self.counters.rx_frames += 1;
            self.counters.rx_bytes += len as u64;
            return Ok(Some((len, meta)));
        }
    }

    fn rx_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// A TAP with virtio-net headers accepts partial checksums and GSO frames from the guest.
    fn offloads(&self) -> Offloads {
        Offloads {
            csum: true,
            tso: true,
        }
    }

    /// What the guest driver can receive (GUEST_CSUM, GUEST_TSO4/6): the kernel may then hand
    /// over frames with partial checksums and GSO super-frames.
    fn set_offloads(&mut self, o: Offloads) -> io::Result<()> {
        sys::tun_set_offload(&self.file, tun_offload_flags(o))?;
        self.to_guest = o;
        Ok(())
    }

    fn counters(&self) -> NetCounters {
        self.counters
    }

    fn describe(&self) -> String {
        let o = self.to_guest;
        format!(
            "{}, offloads to guest: csum={} tso={}",
            self.host.describe(),
            o.csum,
            o.tso
        )
    }
}
