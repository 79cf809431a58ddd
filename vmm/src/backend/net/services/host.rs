//! vmbench's own services on the host side of a TAP, inside its network namespace: UDP echo
//! (port 7), discard (port 9) and the port-19 source, with the semantics and command format of
//! [`crate::backend::net::services`], and the TCP sink (9) and source (19) of
//! [`super::tcp`]. One thread per service, each on a socket created inside the namespace (a
//! socket keeps the namespace it was made in); all stop when dropped.
//!
//! The source sends as fast as the socket takes datagrams. The kernel gives a TAP no
//! back-pressure, so a guest that falls behind loses frames at the TAP's queue; the guest's
//! sequence numbers show it.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::tcp::{self, TcpCounters, TCP_SINK_PORT, TCP_SOURCE_PORT};
use super::{
    fill_source_payload, write_source_seq, ServiceCounters, SourceCommand, DISCARD_PORT, ECHO_PORT,
    SOURCE_PORT,
};
use crate::backend::net::netns::{self, NetNs};
use crate::backend::net::wire::UDP_V4_HEADERS;

/// How long a blocked service thread waits before it looks at the stop flag.
const POLL: Duration = Duration::from_millis(50);
/// While streaming, the source looks for a new command every this many datagrams.
const COMMAND_CHECK_EVERY: u64 = 64;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Netns(#[from] netns::Error),
    #[error("cannot bind {proto} port {port} on {addr} in the namespace")]
    Bind {
        proto: &'static str,
        addr: Ipv4Addr,
        port: u16,
        #[source]
        source: io::Error,
    },
    #[error("cannot start a service thread")]
    Thread(#[source] io::Error),
}

#[derive(Default)]
struct Counters {
    echoed_frames: AtomicU64,
    echoed_bytes: AtomicU64,
    sunk_frames: AtomicU64,
    sunk_bytes: AtomicU64,
    sourced_frames: AtomicU64,
    sourced_bytes: AtomicU64,
    source_commands: AtomicU64,
    bad_commands: AtomicU64,
}

fn bump(c: &AtomicU64, by: u64) {
    c.fetch_add(by, Ordering::Relaxed);
}

pub struct HostServices {
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    tcp: Arc<tcp::Atomics>,
    threads: Vec<JoinHandle<()>>,
}

impl HostServices {
    /// Binds the services to `addr` inside `ns` (the address must already be on an
    /// interface there) and starts their threads.
    pub fn start(ns: &NetNs, addr: Ipv4Addr) -> Result<HostServices, Error> {
        let bind = |port| {
            UdpSocket::bind((addr, port))
                .and_then(|s| s.set_read_timeout(Some(POLL)).map(|()| s))
                .map_err(|source| Error::Bind {
                    proto: "udp",
                    addr,
                    port,
                    source,
                })
        };
        let listen = |port| {
            TcpListener::bind((addr, port)).map_err(|source| Error::Bind {
                proto: "tcp",
                addr,
                port,
                source,
            })
        };
        let (echo, discard, source, tcp_sink, tcp_source) = ns.run(|| -> Result<_, Error> {
            Ok((
                bind(ECHO_PORT)?,
                bind(DISCARD_PORT)?,
                bind(SOURCE_PORT)?,
                listen(TCP_SINK_PORT)?,
                listen(TCP_SOURCE_PORT)?,
            ))
        })??;
        let mut services = HostServices {
            stop: Arc::new(AtomicBool::new(false)),
            counters: Arc::new(Counters::default()),
            tcp: Arc::new(tcp::Atomics::default()),
            threads: Vec::new(),
        };
        // On an error, dropping `services` stops the threads already started.
        services.spawn("vmbench-echo", echo, run_echo)?;
        services.spawn("vmbench-discard", discard, run_discard)?;
        services.spawn("vmbench-source", source, run_source)?;
        services.spawn_tcp("vmbench-tcp-sink", tcp_sink, tcp::sink)?;
        services.spawn_tcp("vmbench-tcp-source", tcp_source, tcp::source)?;
        Ok(services)
    }

    fn spawn_tcp(
        &mut self,
        name: &str,
        listener: TcpListener,
        serve: fn(std::net::TcpStream, &AtomicBool, &tcp::Atomics),
    ) -> Result<(), Error> {
        let stop = Arc::clone(&self.stop);
        let counters = Arc::clone(&self.tcp);
        let t = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || tcp::listen(listener, &stop, &counters, serve))
            .map_err(Error::Thread)?;
        self.threads.push(t);
        Ok(())
    }

    /// What the TCP sink and source saw.
    pub fn tcp_counters(&self) -> TcpCounters {
        self.tcp.snapshot()
    }

    fn spawn(
        &mut self,
        name: &str,
        sock: UdpSocket,
        body: fn(UdpSocket, &AtomicBool, &Counters),
    ) -> Result<(), Error> {
        let stop = Arc::clone(&self.stop);
        let counters = Arc::clone(&self.counters);
        let t = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || body(sock, &stop, &counters))
            .map_err(Error::Thread)?;
        self.threads.push(t);
        Ok(())
    }

    pub fn counters(&self) -> ServiceCounters {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ServiceCounters {
            echoed_frames: get(&c.echoed_frames),
            echoed_bytes: get(&c.echoed_bytes),
            sunk_frames: get(&c.sunk_frames),
            sunk_bytes: get(&c.sunk_bytes),
            sourced_frames: get(&c.sourced_frames),
            sourced_bytes: get(&c.sourced_bytes),
            source_commands: get(&c.source_commands),
            bad_commands: get(&c.bad_commands),
        }
    }
}

impl Drop for HostServices {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                log::warn!("a host-side network service thread panicked");
            }
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Receives the next datagram, or `None` on timeout or a passing error.
fn next_datagram(sock: &UdpSocket, buf: &mut [u8], what: &str) -> Option<(usize, SocketAddr)> {
    match sock.recv_from(buf) {
        Ok(got) => Some(got),
        Err(e) if is_timeout(&e) => None,
        Err(e) => {
            log::debug!("{what}: {e}");
            // Do not spin on a persistent error.
            std::thread::sleep(POLL);
            None
        }
    }
}

fn run_echo(sock: UdpSocket, stop: &AtomicBool, c: &Counters) {
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        let Some((n, from)) = next_datagram(&sock, &mut buf, "echo service") else {
            continue;
        };
        if sock.send_to(&buf[..n], from).is_ok() {
            bump(&c.echoed_frames, 1);
            bump(&c.echoed_bytes, n as u64);
        }
    }
}

fn run_discard(sock: UdpSocket, stop: &AtomicBool, c: &Counters) {
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        if let Some((n, _)) = next_datagram(&sock, &mut buf, "discard service") {
            bump(&c.sunk_frames, 1);
            bump(&c.sunk_bytes, n as u64);
        }
    }
}

struct Stream {
    to: SocketAddr,
    /// Datagrams still to send; `None` until stopped.
    remaining: Option<u64>,
    payload: Vec<u8>,
    seq: u64,
}

fn run_source(sock: UdpSocket, stop: &AtomicBool, c: &Counters) {
    let mut cmd = [0u8; 512];
    let mut stream: Option<Stream> = None;
    while !stop.load(Ordering::Relaxed) {
        let Some(s) = &mut stream else {
            if let Some((n, from)) = next_datagram(&sock, &mut cmd, "source service") {
                stream = command(&cmd[..n], from, c).unwrap_or(None);
            }
            continue;
        };
        write_source_seq(&mut s.payload, s.seq);
        match sock.send_to(&s.payload, s.to) {
            Ok(_) => {
                s.seq += 1;
                bump(&c.sourced_frames, 1);
                bump(&c.sourced_bytes, s.payload.len() as u64);
                if let Some(r) = &mut s.remaining {
                    *r -= 1;
                }
            }
            Err(e) if is_timeout(&e) || e.raw_os_error() == Some(libc::ENOBUFS) => {
                std::thread::yield_now();
            }
            Err(e) => {
                log::warn!("source service: stream to {} ended: {e}", s.to);
                stream = None;
                continue;
            }
        }
        if s.remaining == Some(0) {
            stream = None;
        } else if s.seq % COMMAND_CHECK_EVERY == 0 {
            if let Some((n, from)) = poll_command(&sock, &mut cmd) {
                if let Some(next) = command(&cmd[..n], from, c) {
                    stream = next;
                }
            }
        }
    }
}

/// A datagram waiting on the socket, without blocking.
fn poll_command(sock: &UdpSocket, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
    if sock.set_nonblocking(true).is_err() {
        return None;
    }
    let got = sock.recv_from(buf).ok();
    let _ = sock.set_nonblocking(false);
    got
}

/// What a command asks for: `Some(new stream or None for stop)`, or `None` for a bad command
/// (which leaves the stream in progress alone).
fn command(text: &[u8], from: SocketAddr, c: &Counters) -> Option<Option<Stream>> {
    match SourceCommand::parse(text) {
        Ok(SourceCommand::Start { count, frame_size }) => {
            bump(&c.source_commands, 1);
            let mut payload = vec![0; frame_size - UDP_V4_HEADERS];
            fill_source_payload(&mut payload, 0);
            Some(Some(Stream {
                to: from,
                remaining: (count != 0).then_some(count),
                payload,
                seq: 0,
            }))
        }
        Ok(SourceCommand::Stop) => {
            bump(&c.source_commands, 1);
            Some(None)
        }
        Err(e) => {
            log::debug!("source service: {e}");
            bump(&c.bad_commands, 1);
            None
        }
    }
}
