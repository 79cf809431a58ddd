//! vmbench's in-process peer behind a UDP socket on 127.0.0.1, for QEMU's `dgram` netdev (one
//! Ethernet frame per datagram): how QEMU's NICs reach the same peer as vmbench's. Only
//! datagrams from QEMU's own loopback port are accepted.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use vmm::backend::net::peer::{Peer, PeerConfig};
use vmm::backend::net::{BackendCounters, FrameMeta, NetBackend};
use vmm::counters::Counters;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::QemuNetdev;

/// vmbench's peer behind a loopback UDP socket: datagrams from QEMU are frames sent to the
/// peer; the peer's frames go back to QEMU's port.
pub struct PeerBridge {
    peer: Arc<Mutex<Box<dyn NetBackend>>>,
    kill: EventFd,
    thread: Option<JoinHandle<()>>,
    /// The port QEMU binds; the bridge sends there.
    qemu_port: u16,
    /// The bridge's port; QEMU sends there.
    our_port: u16,
}

fn free_loopback_port() -> std::io::Result<u16> {
    Ok(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

impl PeerBridge {
    pub fn start() -> std::io::Result<PeerBridge> {
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        sock.set_nonblocking(true)?;
        let our_port = sock.local_addr()?.port();
        let qemu_port = free_loopback_port()?;
        let peer: Box<dyn NetBackend> = Box::new(Peer::new(PeerConfig::default())?);
        let peer = Arc::new(Mutex::new(peer));
        let kill = EventFd::new(libc::EFD_NONBLOCK)?;
        let epoll = Epoll::new()?;
        let rx_fd = peer.lock().unwrap_or_else(|e| e.into_inner()).rx_fd();
        for (fd, token) in [(sock.as_raw_fd(), 1u64), (rx_fd, 2), (kill.as_raw_fd(), 3)] {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )?;
        }
        let p = peer.clone();
        let to_qemu = SocketAddrV4::new(Ipv4Addr::LOCALHOST, qemu_port);
        let thread = std::thread::Builder::new()
            .name("peer-bridge".into())
            .spawn(move || {
                let mut buf = vec![0u8; 65536];
                let mut events = [EpollEvent::default(); 4];
                loop {
                    let n = match epoll.wait(-1, &mut events) {
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(_) => return,
                    };
                    for ev in &events[..n] {
                        match ev.data() {
                            3 => return,
                            1 => {
                                while let Ok((len, from)) = sock.recv_from(&mut buf) {
                                    // Only QEMU's port on this host may talk to the peer.
                                    if from.ip().is_loopback() && from.port() == qemu_port {
                                        let _ = p
                                            .lock()
                                            .unwrap_or_else(|e| e.into_inner())
                                            .send(&buf[..len], &FrameMeta::default());
                                    }
                                }
                            }
                            _ => {
                                // A bounded burst per wake-up, so QEMU's frames are read in between.
                                for _ in 0..64 {
                                    let got =
                                        p.lock().unwrap_or_else(|e| e.into_inner()).recv(&mut buf);
                                    match got {
                                        Ok(Some((len, _))) => {
                                            let _ = sock.send_to(&buf[..len], to_qemu);
                                        }
                                        _ => break,
                                    }
                                }
                            }
                        }
                    }
                }
            })?;
        Ok(PeerBridge {
            peer,
            kill,
            thread: Some(thread),
            qemu_port,
            our_port,
        })
    }
}

impl PeerBridge {
    /// The netdev QEMU needs to reach this bridge.
    pub fn netdev(&self) -> QemuNetdev {
        QemuNetdev::Dgram {
            local_port: self.qemu_port,
            remote_port: self.our_port,
        }
    }

    /// The peer's counters (frames, and what its echo, discard and source services saw).
    pub fn counters(&self) -> BTreeMap<String, u64> {
        BackendCounters(self.peer.clone())
            .snapshot()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }
}

impl Drop for PeerBridge {
    fn drop(&mut self) {
        let _ = self.kill.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
