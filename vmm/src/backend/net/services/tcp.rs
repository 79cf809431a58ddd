//! vmbench's TCP services on the host side of a TAP, for the Linux guest's `tcp-stream`
//! workload: a sink on port 9 (discard, RFC 863) that counts every byte a connection brings
//! until the guest closes it, and a source on port 19 that sends a byte pattern until the guest
//! half-closes (shutdown of its write side), then finishes its own side. The guest reads to the
//! end in both cases, so the guest and these counters see the same bytes, exactly.
//!
//! The source's byte `i` of a connection is `i as u8`, so a guest can check order and
//! integrity. One thread per listener and per connection; all stop when the services drop.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::{DISCARD_PORT, SOURCE_PORT};

pub const TCP_SINK_PORT: u16 = DISCARD_PORT;
pub const TCP_SOURCE_PORT: u16 = SOURCE_PORT;
/// How long a blocked thread waits before it looks at the stop flag.
const POLL: Duration = Duration::from_millis(20);
/// The source's write size; a multiple of 256, so the pattern runs on across writes.
const CHUNK: usize = 64 * 1024;

/// What the TCP services saw; bytes are TCP payload bytes (what a socket sees).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpCounters {
    /// Connections to the sink that ended (the guest closed them).
    pub sink_connections: u64,
    pub sunk_bytes: u64,
    /// Connections to the source that ended (the guest half-closed them).
    pub source_connections: u64,
    pub sourced_bytes: u64,
}

#[derive(Default)]
pub(super) struct Atomics {
    sink_connections: AtomicU64,
    sunk_bytes: AtomicU64,
    source_connections: AtomicU64,
    sourced_bytes: AtomicU64,
}

impl Atomics {
    pub(super) fn snapshot(&self) -> TcpCounters {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TcpCounters {
            sink_connections: get(&self.sink_connections),
            sunk_bytes: get(&self.sunk_bytes),
            source_connections: get(&self.source_connections),
            sourced_bytes: get(&self.sourced_bytes),
        }
    }
}

fn bump(c: &AtomicU64, by: u64) {
    c.fetch_add(by, Ordering::Relaxed);
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Accepts connections until `stop`, each served by `serve` on its own thread; returns when
/// every connection's thread has ended.
pub(super) fn listen(
    listener: TcpListener,
    stop: &AtomicBool,
    c: &Atomics,
    serve: fn(TcpStream, &AtomicBool, &Atomics),
) {
    if let Err(e) = listener.set_nonblocking(true) {
        log::warn!("tcp service: {e}");
        return;
    }
    std::thread::scope(|s| {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((conn, _)) => {
                    let ready = conn
                        .set_nonblocking(false)
                        .and_then(|()| conn.set_read_timeout(Some(POLL)))
                        .and_then(|()| conn.set_write_timeout(Some(POLL)));
                    match ready {
                        Ok(()) => {
                            s.spawn(move || serve(conn, stop, c));
                        }
                        Err(e) => log::debug!("tcp service: {e}"),
                    }
                }
                Err(e) if is_timeout(&e) => std::thread::sleep(POLL),
                Err(e) => {
                    log::debug!("tcp service: {e}");
                    std::thread::sleep(POLL);
                }
            }
        }
    });
}

/// Reads to the end of the connection, counting.
pub(super) fn sink(mut conn: TcpStream, stop: &AtomicBool, c: &Atomics) {
    let mut buf = vec![0u8; CHUNK];
    while !stop.load(Ordering::Relaxed) {
        match conn.read(&mut buf) {
            Ok(0) => {
                // Counted before the close the guest waits for.
                bump(&c.sink_connections, 1);
                return;
            }
            Ok(n) => bump(&c.sunk_bytes, n as u64),
            Err(e) if is_timeout(&e) => {}
            Err(e) => {
                log::debug!("tcp sink: {e}");
                return;
            }
        }
    }
}

/// Sends the pattern until the guest half-closes, then ends its own side.
pub(super) fn source(conn: TcpStream, stop: &AtomicBool, c: &Atomics) {
    let guest_done = AtomicBool::new(false);
    let reader = match conn.try_clone() {
        Ok(r) => r,
        Err(e) => {
            log::debug!("tcp source: {e}");
            return;
        }
    };
    let pattern: Vec<u8> = (0..CHUNK).map(|i| i as u8).collect();
    std::thread::scope(|s| {
        s.spawn(|| wait_for_end(reader, stop, &guest_done));
        let mut w = &conn;
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed) && !guest_done.load(Ordering::Relaxed) {
            let at = (sent % CHUNK as u64) as usize;
            match w.write(&pattern[at..]) {
                Ok(n) => {
                    sent += n as u64;
                    bump(&c.sourced_bytes, n as u64);
                }
                Err(e) if is_timeout(&e) => {}
                Err(e) => {
                    log::debug!("tcp source: {e}");
                    break;
                }
            }
        }
        if guest_done.load(Ordering::Relaxed) {
            bump(&c.source_connections, 1);
        }
        let _ = conn.shutdown(Shutdown::Write);
        guest_done.store(true, Ordering::Relaxed);
    });
}

/// Waits for the guest's end of the stream (or an error), and says so.
fn wait_for_end(mut conn: TcpStream, stop: &AtomicBool, done: &AtomicBool) {
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) && !done.load(Ordering::Relaxed) {
        match conn.read(&mut buf) {
            Ok(0) => break,
            // The guest has nothing to say on this port; whatever it sends is ignored.
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {}
            Err(_) => break,
        }
    }
    done.store(true, Ordering::Relaxed);
}
