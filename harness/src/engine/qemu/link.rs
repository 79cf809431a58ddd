//! What QEMU's NIC is linked to: vmbench's in-process peer over the loopback UDP bridge
//! ([`PeerBridge`]), or a TAP in a network namespace vmbench creates, with the same host-side
//! services as vmbench's own TAP back-end ([`TapHost`]): vmbench opens the TAP there and QEMU
//! inherits its descriptor (`-netdev tap,fd=N`), so both engines reach the same host side.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsRawFd;

use vmm::backend::net::peer::DEFAULT_GUEST_IP;
use vmm::backend::net::tap::{self, GuestAddr, TapHost, TapOptions};
use vmm::kinds::NetBackendKind;

use super::peer::PeerBridge;
use super::{Error, QemuNetdev};

/// A TAP's host side and the TAP's file, whose descriptor QEMU inherits. The file stays open
/// here until QEMU has exited (QEMU holds its own copy).
pub struct QemuTap {
    // The TAP closes first, then the services stop and the namespace goes.
    file: File,
    host: TapHost,
}

impl QemuTap {
    /// A namespace with the TAP (IFF_VNET_HDR: QEMU finds the header with TUNGETIFF and sets
    /// its length and offloads itself), the host at 10.0.2.2/24 knowing the guest's `mac` at
    /// 10.0.2.15, the UDP and TCP services and, with `iperf3`, an `iperf3 -s`.
    pub fn start(mac: [u8; 6], iperf3: bool) -> Result<QemuTap, tap::Error> {
        let opts = TapOptions {
            guest: Some(GuestAddr {
                ip: DEFAULT_GUEST_IP,
                mac,
            }),
            iperf3,
            ..TapOptions::default()
        };
        let (host, file) = TapHost::create(&opts)?;
        Ok(QemuTap { file, host })
    }

    /// The netdev that hands QEMU this TAP (the descriptor must be passed to QEMU's process:
    /// [`super::run`] does, with [`vmm::process::PassFd`]).
    pub fn netdev(&self) -> QemuNetdev {
        QemuNetdev::Tap {
            fd: self.file.as_raw_fd(),
        }
    }

    pub fn host(&self) -> &TapHost {
        &self.host
    }

    /// The host side's counters (UDP services and TCP sink and source).
    pub fn counters(&self) -> BTreeMap<String, u64> {
        self.host
            .counters()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }
}

/// The back-end behind QEMU's NIC, alive for the run.
pub enum Link {
    Peer(PeerBridge),
    Tap(QemuTap),
}

impl Link {
    /// Starts the back-end `kind` for a guest with `mac`; `iperf3` asks for an iperf3 server
    /// (TAP only: the in-process peer speaks no TCP).
    pub fn start(kind: NetBackendKind, mac: [u8; 6], iperf3: bool) -> Result<Link, Error> {
        match kind {
            NetBackendKind::Peer => PeerBridge::start().map(Link::Peer).map_err(Error::Peer),
            NetBackendKind::Tap => QemuTap::start(mac, iperf3)
                .map(Link::Tap)
                .map_err(Error::Tap),
        }
    }

    pub fn netdev(&self) -> QemuNetdev {
        match self {
            Link::Peer(b) => b.netdev(),
            Link::Tap(t) => t.netdev(),
        }
    }

    /// The back-end's counters, reported under its kind's name (`peer`, `tap`).
    pub fn counters(&self) -> BTreeMap<String, u64> {
        match self {
            Link::Peer(b) => b.counters(),
            Link::Tap(t) => t.counters(),
        }
    }
}
