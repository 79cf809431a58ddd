//! The network back-end trait shared by virtio-net and e1000: Ethernet frames in and out, with
//! the offload metadata a virtio-net header (or an e1000 context descriptor) carries.

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
    /// One line for results and logs.
    fn describe(&self) -> String;
}
