//! An `iperf3 -s` (iperf3(1), installed on the host) inside the TAP's network namespace, for
//! the Linux guest's `iperf3` workload: bound to the namespace's host address only, started
//! with `ip netns exec`, tied to vmbench's life (parent-death signal) and killed on drop.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::backend::net::netns::{self, NetNs};
use crate::process::DieWithParent;

/// iperf3's default port.
pub const IPERF3_PORT: u16 = 5201;
/// How long the server may take to listen.
const START_LIMIT: Duration = Duration::from_secs(10);
const INSTALL_HINT: &str = "apt-get install iperf3";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("iperf3 is not installed on the host (not on PATH): install it with `{INSTALL_HINT}`")]
    Missing,
    #[error(transparent)]
    Netns(#[from] netns::Error),
    #[error("cannot start `ip netns exec ... iperf3 -s`")]
    Spawn(#[source] io::Error),
    #[error("iperf3 -s ended before it listened ({status}): {stderr}")]
    Ended { status: String, stderr: String },
    #[error("iperf3 -s did not listen on port {IPERF3_PORT} within {} s", START_LIMIT.as_secs())]
    NotListening,
}

/// A running `iperf3 -s`; killed when dropped.
pub struct Iperf3Server {
    child: Child,
    addr: Ipv4Addr,
}

/// `iperf3` on `PATH`.
fn find_iperf3() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("iperf3"))
        .find(|p| p.is_file())
}

impl Iperf3Server {
    /// Starts `iperf3 -s` on `addr`:[`IPERF3_PORT`] inside `ns` and waits until it listens.
    /// Spawn it from a thread that outlives it (see [`crate::process`]).
    pub fn start(ns: &NetNs, addr: Ipv4Addr) -> Result<Iperf3Server, Error> {
        let iperf3 = find_iperf3().ok_or(Error::Missing)?;
        let mut child = Command::new("ip")
            .die_with_parent()
            .args(["netns", "exec", ns.name()])
            .arg(&iperf3)
            .args([
                "-s",
                "-B",
                &addr.to_string(),
                "-p",
                &IPERF3_PORT.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(Error::Spawn)?;
        // The server's complaints, the last few kept, read all its life so it never blocks.
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(pipe) = child.stderr.take() {
            let keep = Arc::clone(&stderr);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut k = keep.lock().unwrap_or_else(|e| e.into_inner());
                    if k.len() == 5 {
                        k.pop_front();
                    }
                    k.push_back(line);
                }
            });
        }
        let mut server = Iperf3Server { child, addr };
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                // Give the reader a moment to take the last words.
                std::thread::sleep(Duration::from_millis(50));
                let said = stderr.lock().unwrap_or_else(|e| e.into_inner());
                return Err(Error::Ended {
                    status: status.to_string(),
                    stderr: said.iter().cloned().collect::<Vec<_>>().join(" | "),
                });
            }
            if ns.run(|| listening(IPERF3_PORT))? {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err(Error::NotListening);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }
}

impl Drop for Iperf3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether an IPv4 TCP socket listens on `port` in the calling thread's namespace
/// (`/proc/thread-self/net/tcp`: local address `HEX_IP:HEX_PORT`, state `0A` = LISTEN).
fn listening(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/thread-self/net/tcp").unwrap_or_default();
    listens_in(&table, port)
}

fn listens_in(table: &str, port: u16) -> bool {
    let want = format!("{port:04X}");
    table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3 && f[1].rsplit(':').next() == Some(want.as_str()) && f[3] == "0A"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listen_table_is_read_by_port_and_state() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue\n\
   0: 0202000A:1451 00000000:0000 0A 00000000:00000000 00:00000000 00000000\n\
   1: 0202000A:0009 0F02000A:9C40 01 00000000:00000000 00:00000000 00000000\n";
        assert!(listens_in(table, 5201));
        // Port 9 has a connection, not a listener.
        assert!(!listens_in(table, 9));
        assert!(!listens_in(table, 19));
        assert!(!listens_in("", 5201));
    }
}
