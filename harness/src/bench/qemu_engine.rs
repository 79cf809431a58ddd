//! The second engine in a bench run: the same probe workload on QEMU's device models
//! (virtio-blk-pci, PIIX IDE, virtio-net-pci, e1000), so a report compares vmbench's devices
//! with QEMU's in one interleaved run. QEMU's NIC is linked to vmbench's peer through a UDP
//! socket pair on the loopback interface (QEMU's `dgram` netdev, one frame per datagram).

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use vmm::backend::net::{BackendCounters, FrameMeta, NetBackend};
use vmm::backend::peer::{Peer, PeerConfig};
use vmm::devices::Counters;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::{metrics, Runner};
use crate::qemu::{self, Accel, QemuConfig, QemuDisk, QemuNetdev, QemuNic};
use crate::results;
use crate::scenario::{Case, Disk, NetBackend as NetBackendParam, Nic};
use crate::session::{Ending, Outcome, Timed, Timeline};

type Failure = (String, Vec<String>);

/// vmbench's peer behind a loopback UDP socket: datagrams from QEMU are frames sent to the
/// peer; the peer's frames go back to QEMU's port.
struct PeerBridge {
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
    fn start() -> std::io::Result<PeerBridge> {
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

impl Drop for PeerBridge {
    fn drop(&mut self) {
        let _ = self.kill.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs a case on QEMU's devices (the second engine), so our models are compared with
/// QEMU's in the same interleaved run.
pub fn repetition(r: &mut Runner, case: &Case, index: u32) -> Result<results::Repetition, Failure> {
    let p = &case.params;
    if p.nic != Nic::None && p.net_backend == NetBackendParam::Tap {
        return Err((
            "the QEMU engine links its NIC to vmbench's peer; tap is not offered there".into(),
            vec![],
        ));
    }
    let mut cfg = QemuConfig::new(r.probe.clone());
    cfg.exec = case.probe_exec().to_string();
    if p.workload.kind().is_windowed() && cfg.exec.len() + 6 <= crate::scenario::PROBE_EXEC_MAX {
        cfg.exec.push_str(" raw=1");
    }
    cfg.mem_mib = u64::from(p.mem_mib);
    cfg.accel = Accel::Auto;
    let limits = r.scenario.run.limits();
    cfg.timeout = limits.ready + limits.run;
    cfg.disk = match p.disk {
        Disk::None => None,
        kind => {
            let path = r.disk_for(case).map_err(|e| (e, vec![]))?;
            let k = if kind == Disk::Ide {
                qemu::DiskKind::Ide
            } else {
                qemu::DiskKind::Virtio
            };
            Some(QemuDisk::open(k, path).map_err(|e| (e.to_string(), vec![]))?)
        }
    };
    let bridge = match p.nic {
        Nic::None => None,
        _ => Some(
            PeerBridge::start()
                .map_err(|e| (format!("cannot start the loopback peer: {e}"), vec![]))?,
        ),
    };
    if let Some(b) = &bridge {
        let kind = if p.nic == Nic::Virtio {
            qemu::NicKind::Virtio
        } else {
            qemu::NicKind::E1000
        };
        let mut nic = QemuNic::new(
            kind,
            QemuNetdev::Dgram {
                local_port: b.qemu_port,
                remote_port: b.our_port,
            },
        );
        nic.mac = vmm::machine::GUEST_MAC;
        cfg.nic = Some(nic);
    }
    let begin = Instant::now();
    let q = qemu::run(&cfg, |_| {}).map_err(|e| (format!("QEMU: {e}"), vec![]))?;
    let wall = begin.elapsed().as_secs_f64();
    let mut out = outcome(&q, begin);
    if let Some(b) = &bridge {
        let c = BackendCounters(b.peer.clone()).snapshot();
        out.device_counters.insert(
            "peer".into(),
            c.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        );
    }
    drop(bridge);
    r.check(&out)?;
    metrics::repetition(case, index, &out, wall, r.scenario.run.duration_secs)
        .map_err(|e| (e, out.console_tail.clone()))
}

/// A QEMU run in the shape of a vmbench session (no exit counts: QEMU does not expose them).
fn outcome(q: &qemu::QemuOutcome, begin: Instant) -> Outcome {
    let ending = match q.guest_status {
        Some(code) => Ending::Exited { code },
        None => Ending::Crashed {
            vcpu: 0,
            reason: format!(
                "QEMU ended without the guest's exit status (exit code {:?}): {}",
                q.exit_status,
                q.stderr.join(" | ")
            ),
            rip: 0,
            registers: String::new(),
        },
    };
    let ready = q.ready.map(|d| begin + d);
    Outcome {
        ending,
        records: q
            .records
            .iter()
            .map(|record| Timed {
                record: record.clone(),
                vcpu: None,
                at: begin,
                exits: None,
                cpu: None,
            })
            .collect(),
        console_tail: q.console.clone(),
        timeline: Timeline {
            begin: Some(begin),
            setup_done: None,
            started: Some(begin),
            first_instruction: vec![None],
            ready: vec![ready],
            exit: Some(begin + q.wall),
        },
        exits: Default::default(),
        last_exit: format!("QEMU ({})", q.accel.name()),
        ioeventfd_writes: 0,
        tsc_khz: 0,
        device_counters: Default::default(),
    }
}
