//! The network back-end trait shared by virtio-net and e1000: Ethernet frames in and out, with
//! the offload metadata a virtio-net header (or an e1000 context descriptor) carries.

pub mod gso;
pub mod netns;
pub mod peer;
pub mod services;
pub mod tap;
pub mod wire;

use std::io;
use std::os::fd::RawFd;

/// Checksum and segmentation offload for one frame, in virtio-net header terms (virtio 1.2,
/// 5.1.6): the device or back-end must finish what the sender left undone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameMeta {
    /// Checksum still to be computed: from byte `start` to the end, stored at `start + offset`.
    pub csum: Option<(u16, u16)>,
    /// Segmentation still to be done.
    pub gso: Option<Gso>,
    /// The checksum is known good (receive side).
    pub data_valid: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gso {
    pub kind: GsoKind,
    /// Bytes of headers (Ethernet + IP + TCP/UDP).
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub size: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GsoKind {
    TcpV4,
    TcpV6,
    Udp,
}

/// What a back-end can carry without the device doing it in software.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offloads {
    /// Frames with `csum` set may be sent as they are.
    pub csum: bool,
    /// Frames with `gso` set may be sent as they are.
    pub tso: bool,
}

/// Frame and byte counters a back-end keeps, for cross-checking guest-side figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetCounters {
    pub tx_frames: u64,
    pub tx_bytes: u64,
    pub rx_frames: u64,
    pub rx_bytes: u64,
}

pub trait NetBackend: Send {
    /// Sends one frame (from the destination MAC on). A back-end that lacks an offload the
    /// frame needs completes it in software first.
    fn send(&mut self, frame: &[u8], meta: &FrameMeta) -> io::Result<()>;
    /// Takes the next received frame into `buf` without blocking: `Ok(None)` when there is
    /// none. A frame longer than `buf` is dropped and counted, never truncated silently.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<(usize, FrameMeta)>>;
    /// Becomes readable when `recv` may have a frame (for the device worker's epoll).
    fn rx_fd(&self) -> RawFd;
    fn offloads(&self) -> Offloads {
        Offloads::default()
    }
    /// Enables the offloads the driver negotiated (for TAP: TUNSETOFFLOAD).
    fn set_offloads(&mut self, _o: Offloads) -> io::Result<()> {
        Ok(())
    }
    fn counters(&self) -> NetCounters;
    /// What the services behind the back-end (echo, discard, source) saw, where there are
    /// such services; the harness cross-checks guest figures against them.
    fn service_counters(&self) -> Option<services::ServiceCounters> {
        None
    }
    /// What the TCP services behind the back-end saw (the TAP namespace has them).
    fn tcp_counters(&self) -> Option<services::tcp::TcpCounters> {
        None
    }
    /// One line for results and logs.
    fn describe(&self) -> String;
}

/// A back-end's counters, as the machine reports them per device.
pub struct BackendCounters(pub std::sync::Arc<std::sync::Mutex<Box<dyn NetBackend>>>);

impl crate::counters::Counters for BackendCounters {
    fn snapshot(&self) -> Vec<(&'static str, u64)> {
        backend_snapshot(&**self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A back-end's counters and its services' (for a device that owns its back-end).
pub fn backend_snapshot(b: &dyn NetBackend) -> Vec<(&'static str, u64)> {
    let c = b.counters();
    let mut v = vec![
        ("tx_frames", c.tx_frames),
        ("tx_bytes", c.tx_bytes),
        ("rx_frames", c.rx_frames),
        ("rx_bytes", c.rx_bytes),
    ];
    if let Some(s) = b.service_counters() {
        v.extend(service_snapshot(&s));
    }
    if let Some(t) = b.tcp_counters() {
        v.extend(tcp_snapshot(&t));
    }
    v
}

/// The services' counters by name.
pub fn service_snapshot(s: &services::ServiceCounters) -> [(&'static str, u64); 8] {
    [
        ("echoed_frames", s.echoed_frames),
        ("echoed_bytes", s.echoed_bytes),
        ("sunk_frames", s.sunk_frames),
        ("sunk_bytes", s.sunk_bytes),
        ("sourced_frames", s.sourced_frames),
        ("sourced_bytes", s.sourced_bytes),
        ("source_commands", s.source_commands),
        ("bad_commands", s.bad_commands),
    ]
}

/// The TCP services' counters by name.
pub fn tcp_snapshot(t: &services::tcp::TcpCounters) -> [(&'static str, u64); 4] {
    [
        ("tcp_sink_connections", t.sink_connections),
        ("tcp_sunk_bytes", t.sunk_bytes),
        ("tcp_source_connections", t.source_connections),
        ("tcp_sourced_bytes", t.sourced_bytes),
    ]
}
