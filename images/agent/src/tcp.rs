//! TCP workloads through Linux's NIC driver and TCP stack, against the host side of a TAP in
//! the namespace vmbench creates: `tcp-stream` with vmbench's TCP sink (port 9) and source
//! (port 19) (`vmm/src/backend/net/services/tcp.rs`), and `iperf3`, the image's iperf3 client
//! against the `iperf3 -s` vmbench starts there (port 5201).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::args::Args;
use crate::net::{up, NetSetup, Nic, Size};
use crate::rec::Record;
use crate::{Boot, Outcome};

const SINK_PORT: u16 = 9;
const SOURCE_PORT: u16 = 19;
const IPERF3_PORT: u16 = 5201;
const IPERF3: &str = "/usr/bin/iperf3";
/// How long a connection may stall before the workload gives up.
const STALL: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Guest to host.
    Tx,
    /// Host to guest.
    Rx,
}

impl Direction {
    fn parse(v: &str) -> Result<Direction, String> {
        match v {
            "tx" => Ok(Direction::Tx),
            "rx" => Ok(Direction::Rx),
            other => Err(format!(
                "`direction={other}`: use tx (guest to host) or rx (host to guest)"
            )),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Direction::Tx => "tx",
            Direction::Rx => "rx",
        }
    }
}

fn connect(nic: &Nic, port: u16) -> Result<TcpStream, String> {
    let addr: SocketAddr = format!("{}:{port}", nic.peer)
        .parse()
        .map_err(|_| format!("the gateway `{}` is not an IPv4 address", nic.peer))?;
    let s = TcpStream::connect_timeout(&addr, STALL)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    s.set_read_timeout(Some(STALL))
        .and_then(|()| s.set_write_timeout(Some(STALL)))
        .map_err(|e| format!("tcp socket: {e}"))?;
    Ok(s)
}

/// `tcp-stream direction=tx|rx [size=] [nic=] [duration_ms=] [warmup_ms=]`: one TCP
/// connection moving bytes as fast as it can, guest to host (`tx`, to the sink) or host to
/// guest (`rx`, from the source), `size` bytes per write or read call. At the end the guest
/// closes its side and reads to the host's end, so `bytes_total` (warm-up included) is what
/// the host counted, exactly.
pub fn stream(words: &[&str], boot: &Boot) -> Outcome {
    let mut keys = vec!["direction"];
    keys.extend(NetSetup::KEYS);
    let a = Args::parse(words, &keys)?;
    let dir = Direction::parse(a.str("direction", "tx"))?;
    let n = NetSetup::parse(&a, boot, Size::Call(65536))?;
    let (size, nic) = (n.size, &n.nic);
    let port = match dir {
        Direction::Tx => SINK_PORT,
        Direction::Rx => SOURCE_PORT,
    };
    let mut s = connect(nic, port)?;
    // The clock starts once the link is up and connected (e1000's link takes seconds).
    let mut w = n.window();
    // The source's byte i is `i as u8`: a window of the pattern 256 bytes longer than a read
    // holds every expected chunk.
    let pattern: Vec<u8> = (0..size + 256).map(|i| i as u8).collect();
    let mut buf = pattern[..size].to_vec();
    let (mut ops, mut bytes, mut total, mut mismatches) = (0u64, 0u64, 0u64, 0u64);
    let check = |chunk: &[u8], offset: u64| {
        let at = (offset % 256) as usize;
        u64::from(chunk != &pattern[at..at + chunk.len()])
    };
    while !w.over() {
        let measuring = w.measuring();
        let n = match dir {
            Direction::Tx => s.write(&buf),
            Direction::Rx => s.read(&mut buf),
        };
        let n = match n {
            Ok(0) if dir == Direction::Rx => return Err("the host ended the stream early".into()),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("tcp {}: {e}", dir.name())),
        };
        if dir == Direction::Rx {
            mismatches += check(&buf[..n], total);
        }
        total += n as u64;
        if measuring {
            ops += 1;
            bytes += n as u64;
        }
    }
    let window_ns = w.close(ops);
    // Our end, then the host's: the host closes once it has counted everything (tx), or stops
    // sending when it sees ours (rx); either way what is in flight arrives first.
    s.shutdown(Shutdown::Write)
        .map_err(|e| format!("closing the stream: {e}"))?;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) if dir == Direction::Rx => {
                mismatches += check(&buf[..n], total);
                total += n as u64;
            }
            Ok(_) => return Err("the sink sent data".into()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("waiting for the host's end of the stream: {e}")),
        }
    }
    Record::new("result")
        .kv("name", "tcp-stream")
        .kv("ops", ops)
        .kv("bytes", bytes)
        .kv("bytes_total", total)
        .kv("window_ns", window_ns)
        .kv("direction", dir.name())
        .kv("size", size)
        .kv("mismatches", mismatches)
        .kv("nic", nic.kind)
        .kv("driver", &nic.driver)
        .kv("profile", "linux")
        .send();
    if mismatches > 0 {
        return Err(format!(
            "{mismatches} reads did not hold the source's pattern"
        ));
    }
    if ops == 0 {
        return Err("no byte moved in the window".into());
    }
    Ok(())
}

/// Whole seconds from a `_ms` argument: iperf3 takes `-t` and `-O` in seconds.
fn whole_seconds(key: &str, ms: u64) -> Result<u64, String> {
    if !ms.is_multiple_of(1000) {
        return Err(format!(
            "`{key}={ms}`: iperf3 counts whole seconds, use a multiple of 1000"
        ));
    }
    Ok(ms / 1000)
}

/// `iperf3 direction=tx|rx [streams=] [nic=] [duration_ms=] [warmup_ms=]`: the image's iperf3
/// client against the host's `iperf3 -s`, guest to host (`tx`) or host to guest (`rx`, iperf3's
/// `-R`); the warm-up is iperf3's omitted seconds (`-O`). `window-start`/`window-end` are the
/// agent's clock around iperf3's measured seconds; the figures are iperf3's own (its JSON).
pub fn iperf3(words: &[&str], boot: &Boot) -> Outcome {
    let a = Args::parse(
        words,
        &["direction", "streams", "nic", "duration_ms", "warmup_ms"],
    )?;
    let dir = Direction::parse(a.str("direction", "tx"))?;
    let streams: u32 = a.num("streams", 1)?;
    if !(1..=16).contains(&streams) {
        return Err(format!("`streams={streams}`: use 1 to 16"));
    }
    let duration = whole_seconds("duration_ms", a.num("duration_ms", 2000)?)?;
    let warmup = whole_seconds("warmup_ms", a.num("warmup_ms", 1000)?)?;
    if !(1..=3600).contains(&duration) || warmup > 600 {
        return Err("use duration_ms 1000 to 3600000 and warmup_ms up to 600000".into());
    }
    let nic = up(boot, a.str("nic", "auto"))?;
    // iperf3 keeps its send buffer in a temporary file.
    std::fs::create_dir_all("/tmp").map_err(|e| format!("cannot make /tmp: {e}"))?;
    let mut cmd = std::process::Command::new(IPERF3);
    cmd.env("TMPDIR", "/tmp")
        .args(["-c", &nic.peer, "-p", &IPERF3_PORT.to_string(), "-J"])
        .args(["-t", &duration.to_string(), "-O", &warmup.to_string()])
        .args(["-P", &streams.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if dir == Direction::Rx {
        cmd.arg("-R");
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {IPERF3}: {e}"))?;
    let marks = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(warmup));
        Record::new("window-start").send();
        let opened = Instant::now();
        std::thread::sleep(Duration::from_secs(duration));
        Record::new("window-end").send();
        opened.elapsed()
    });
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for iperf3: {e}"))?;
    let _ = marks.join();
    let report = Iperf3Report::parse(&out.stdout).map_err(|e| {
        format!(
            "iperf3 ({}): {e}; stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })?;
    Record::new("result")
        .kv("name", "iperf3")
        .kv("ops", report.intervals)
        .kv("bytes", report.received_bytes)
        .kv("bytes_sent", report.sent_bytes)
        .kv("window_ns", (report.received_seconds * 1e9) as u64)
        .kv("bits_per_second", report.received_bps as u64)
        .kv("retransmits", report.retransmits)
        .kv("direction", dir.name())
        .kv("streams", streams)
        .kv("nic", nic.kind)
        .kv("driver", &nic.driver)
        .kv("profile", "linux")
        .send();
    if report.received_bytes == 0 {
        return Err("iperf3 moved no byte".into());
    }
    Ok(())
}

/// What the agent takes from iperf3's JSON report (`-J`): the `end` sums (omitted seconds
/// excluded) and the measured intervals.
#[derive(Debug, PartialEq)]
struct Iperf3Report {
    intervals: u64,
    sent_bytes: u64,
    received_bytes: u64,
    received_seconds: f64,
    received_bps: f64,
    retransmits: u64,
}

impl Iperf3Report {
    fn parse(json: &[u8]) -> Result<Iperf3Report, String> {
        let v: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| format!("no JSON report ({e})"))?;
        if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
            return Err(format!("iperf3 reports: {e}"));
        }
        let end = v.get("end").ok_or("the report has no `end`")?;
        let sum = |which: &str| {
            end.get(which)
                .ok_or(format!("the report has no end.{which}"))
        };
        let num = |o: &serde_json::Value, k: &str| {
            o.get(k)
                .and_then(|x| x.as_f64())
                .ok_or(format!("the report has no number `{k}`"))
        };
        let sent = sum("sum_sent")?;
        let received = sum("sum_received")?;
        let intervals = v
            .get("intervals")
            .and_then(|i| i.as_array())
            .map(|i| {
                i.iter()
                    .filter(|iv| {
                        iv.get("sum")
                            .and_then(|s| s.get("omitted"))
                            .and_then(|o| o.as_bool())
                            == Some(false)
                    })
                    .count() as u64
            })
            .unwrap_or(0);
        Ok(Iperf3Report {
            intervals,
            sent_bytes: num(sent, "bytes")? as u64,
            received_bytes: num(received, "bytes")? as u64,
            received_seconds: num(received, "seconds")?,
            received_bps: num(received, "bits_per_second")?,
            retransmits: sent
                .get("retransmits")
                .and_then(|r| r.as_u64())
                .unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iperf3_reports_parse_and_errors_say_why() {
        let json = br#"{"start":{},"intervals":[
            {"sum":{"bytes":10,"omitted":true}},
            {"sum":{"bytes":20,"omitted":false}},
            {"sum":{"bytes":30,"omitted":false}}],
          "end":{"sum_sent":{"bytes":5000,"seconds":2.0,"bits_per_second":20000.0,"retransmits":3},
                 "sum_received":{"bytes":4900,"seconds":2.01,"bits_per_second":19502.4}}}"#;
        let r = Iperf3Report::parse(json).unwrap();
        assert_eq!(
            r,
            Iperf3Report {
                intervals: 2,
                sent_bytes: 5000,
                received_bytes: 4900,
                received_seconds: 2.01,
                received_bps: 19502.4,
                retransmits: 3,
            }
        );
        let e = Iperf3Report::parse(br#"{"error":"unable to connect to server"}"#).unwrap_err();
        assert!(e.contains("unable to connect"), "{e}");
        assert!(Iperf3Report::parse(b"iperf3: error").is_err());
        assert!(Iperf3Report::parse(br#"{"end":{}}"#).is_err());
    }
}
