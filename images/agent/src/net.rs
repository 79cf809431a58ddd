//! Network workloads through Linux's own NIC driver (e1000 or virtio_net) and its UDP/IP
//! stack, against the peer at the gateway address: echo (7), discard (9) and the source (19)
//! of vmbench's services (`vmm/src/backend/services.rs`), and ICMP echo.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use crate::args::Args;
use crate::rec::Record;
use crate::samples::{Samples, Window};
use crate::sys::busybox;
use crate::{Boot, Outcome};

const IFACE: &str = "eth0";
/// Ethernet + IPv4 + UDP headers: the probe's `size=` is the frame size.
const HEADERS: usize = 14 + 20 + 8;

/// The NIC, configured: its driver and the peer's address.
pub struct Nic {
    pub driver: String,
    pub kind: &'static str,
    pub peer: String,
}

/// Waits for `eth0`, checks its driver against `want`, sets the address and route from the
/// command line and waits for the link.
pub fn up(boot: &Boot, want: &str) -> Result<Nic, String> {
    if !matches!(want, "auto" | "virtio" | "e1000") {
        return Err(format!("`nic={want}`: use auto, virtio or e1000"));
    }
    let sys = format!("/sys/class/net/{IFACE}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::path::Path::new(&sys).exists() {
        if Instant::now() > deadline {
            return Err(format!("no network interface {IFACE} appeared in 10 s"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let driver = crate::sys::driver_of(&sys);
    crate::irq::under_test(IFACE, &sys);
    let kind = match driver.as_str() {
        "e1000" => "e1000",
        "virtio_net" => "virtio",
        other => {
            return Err(format!(
                "{IFACE} is driven by `{other}`, not e1000 or virtio_net"
            ))
        }
    };
    if want != "auto" && want != kind {
        return Err(format!("`nic={want}` but {IFACE} is {kind} ({driver})"));
    }
    let (Some(ip), Some(gw)) = (&boot.ip, &boot.gw) else {
        return Err("the kernel command line has no vmb.ip= and vmb.gw=".into());
    };
    busybox("ip", &["link", "set", IFACE, "up"])?;
    busybox("ip", &["addr", "add", ip, "dev", IFACE])?;
    let carrier = format!("{sys}/carrier");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&carrier).is_ok_and(|c| c.trim() == "1") {
        if Instant::now() > deadline {
            return Err(format!("{IFACE} ({driver}) has no link after 10 s"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    busybox("ip", &["route", "add", "default", "via", gw])?;
    Record::new("nic")
        .kv("name", IFACE)
        .kv("driver", &driver)
        .kv("ip", ip)
        .kv("gw", gw)
        .send();
    Ok(Nic {
        driver,
        kind,
        peer: gw.clone(),
    })
}

fn socket(nic: &Nic, port: u16, timeout: Duration) -> Result<UdpSocket, String> {
    let s = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("udp socket: {e}"))?;
    s.connect((nic.peer.as_str(), port))
        .map_err(|e| format!("cannot reach {}:{port}: {e}", nic.peer))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| format!("udp socket: {e}"))?;
    Ok(s)
}

/// What a windowed workload's `size=` is, with its default.
#[derive(Clone, Copy)]
pub enum Size {
    /// The Ethernet frame of a UDP datagram, as for the probe (42 to 1514).
    Frame(usize),
    /// Bytes per write or read call on a TCP stream (1 to 1 MiB).
    Call(usize),
}

/// The set-up every windowed network workload shares: its size, the NIC brought up, and the
/// measuring window it will open.
pub struct NetSetup {
    /// `size=` as given.
    pub size: usize,
    /// Bytes of payload per datagram (a frame's size less its headers) or per call.
    pub payload: usize,
    pub nic: Nic,
    warmup_ms: u64,
    duration_ms: u64,
}

impl NetSetup {
    /// The keys it reads; a workload's own keys come on top.
    pub const KEYS: [&'static str; 4] = ["size", "nic", "duration_ms", "warmup_ms"];

    /// Reads `size` (checked against `size`'s rule), the window and `nic` from `a`, then
    /// brings the NIC up.
    pub fn parse(a: &Args, boot: &Boot, size: Size) -> Result<NetSetup, String> {
        let (size, payload) = match size {
            Size::Frame(default) => {
                let size: usize = a.num("size", default)?;
                if !(HEADERS..=HEADERS + 1472).contains(&size) {
                    return Err(format!(
                        "`size={size}` is the frame size: use {HEADERS} to {}",
                        HEADERS + 1472
                    ));
                }
                (size, size - HEADERS)
            }
            Size::Call(default) => {
                let size: usize = a.num("size", default)?;
                if !(1..=1 << 20).contains(&size) {
                    return Err(format!("`size={size}`: use 1 to 1048576 bytes per call"));
                }
                (size, size)
            }
        };
        let (warmup_ms, duration_ms) = (a.num("warmup_ms", 200)?, a.num("duration_ms", 1000)?);
        let nic = up(boot, a.str("nic", "auto"))?;
        Ok(NetSetup {
            size,
            payload,
            nic,
            warmup_ms,
            duration_ms,
        })
    }

    /// The window, starting now: once the link is up (and the workload connected), since a
    /// slow guest (an emulated host) may take longer than the whole window to see its
    /// carrier.
    pub fn window(&self) -> Window {
        Window::new(self.warmup_ms, self.duration_ms)
    }
}

/// `net-rr size=S [nic=] [duration_ms=] [warmup_ms=]`: UDP round trips to the echo port, one
/// at a time; each reply's payload must match (a reply lost for 1 s counts as lost).
pub fn rr(words: &[&str], boot: &Boot) -> Outcome {
    let a = Args::parse(words, &NetSetup::KEYS)?;
    let n = NetSetup::parse(&a, boot, Size::Frame(64))?;
    let (size, len, nic) = (n.size, n.payload, &n.nic);
    let mut w = n.window();
    let s = socket(nic, 7, Duration::from_secs(1))?;
    let mut lat = Samples::default();
    let (mut ops, mut lost, mut mismatches, mut seq) = (0u64, 0u64, 0u64, 0u64);
    let mut out = vec![0u8; len];
    let mut back = vec![0u8; len + 1];
    while !w.over() {
        let measuring = w.measuring();
        seq += 1;
        for (i, b) in out.iter_mut().enumerate() {
            *b = probe_abi::pattern_byte(seq, i as u64);
        }
        let t0 = Instant::now();
        s.send(&out).map_err(|e| format!("send to echo: {e}"))?;
        // Skip late replies to earlier (lost) requests.
        let got = loop {
            match s.recv(&mut back) {
                Ok(n) if n == len && back[..n] == out[..] => break Some(true),
                Ok(n) if n == len && back[..8.min(n)] != out[..8.min(n)] => continue,
                Ok(_) => break Some(false),
                Err(_) => break None,
            }
        };
        let ns = t0.elapsed().as_nanos() as u64;
        if measuring {
            match got {
                Some(ok) => {
                    ops += 1;
                    lat.push(ns);
                    mismatches += u64::from(!ok);
                }
                None => lost += 1,
            }
        }
    }
    let window_ns = w.close(ops);
    lat.report("net-rr", "latency");
    Record::new("result")
        .kv("name", "net-rr")
        .kv("ops", ops)
        .kv("window_ns", window_ns)
        .kv("mismatches", mismatches)
        .kv("lost", lost)
        .kv("sent_total", seq)
        .kv("size", size)
        .kv("nic", nic.kind)
        .kv("driver", &nic.driver)
        .kv("profile", "linux")
        .send();
    if mismatches > 0 {
        return Err(format!("{mismatches} echo replies did not match"));
    }
    Ok(())
}

/// `net-tx size=S [nic=] [duration_ms=] [warmup_ms=]`: UDP datagrams to the discard port as
/// fast as the socket takes them.
pub fn tx(words: &[&str], boot: &Boot) -> Outcome {
    let a = Args::parse(words, &NetSetup::KEYS)?;
    let n = NetSetup::parse(&a, boot, Size::Frame(1514))?;
    let (size, len, nic) = (n.size, n.payload, &n.nic);
    let mut w = n.window();
    let s = socket(nic, 9, Duration::from_secs(1))?;
    let buf = vec![0x5au8; len];
    let (mut sent, mut total, mut errors) = (0u64, 0u64, 0u64);
    while !w.over() {
        let measuring = w.measuring();
        match s.send(&buf) {
            Ok(_) => {
                total += 1;
                sent += u64::from(measuring);
            }
            // ENOBUFS: the queue is full; Linux drops, as a real stack would.
            Err(_) => errors += 1,
        }
    }
    let window_ns = w.close(sent);
    Record::new("result")
        .kv("name", "net-tx")
        .kv("ops", sent)
        .kv("frames", sent)
        .kv("frames_total", total)
        .kv("bytes", sent * size as u64)
        .kv("window_ns", window_ns)
        .kv("size", size)
        .kv("send_errors", errors)
        .kv("nic", nic.kind)
        .kv("driver", &nic.driver)
        .kv("profile", "linux")
        .send();
    Ok(())
}

/// `net-rx size=S [nic=] [duration_ms=] [warmup_ms=]`: asks the source port for an endless
/// stream of S-byte frames and counts what arrives.
pub fn rx(words: &[&str], boot: &Boot) -> Outcome {
    let a = Args::parse(words, &NetSetup::KEYS)?;
    let n = NetSetup::parse(&a, boot, Size::Frame(1514))?;
    let (size, nic) = (n.size, &n.nic);
    let mut w = n.window();
    let s = socket(nic, 19, Duration::from_millis(100))?;
    s.send(format!("count=0 size={size}").as_bytes())
        .map_err(|e| format!("send to source: {e}"))?;
    let mut buf = vec![0u8; 65536];
    let (mut frames, mut bytes, mut total) = (0u64, 0u64, 0u64);
    while !w.over() {
        let measuring = w.measuring();
        if let Ok(n) = s.recv(&mut buf) {
            total += 1;
            if measuring {
                frames += 1;
                bytes += (n + HEADERS) as u64;
            }
        }
    }
    let window_ns = w.close(frames);
    let _ = s.send(b"stop");
    Record::new("result")
        .kv("name", "net-rx")
        .kv("ops", frames)
        .kv("frames", frames)
        .kv("frames_total", total)
        .kv("bytes", bytes)
        .kv("window_ns", window_ns)
        .kv("size", size)
        .kv("nic", nic.kind)
        .kv("driver", &nic.driver)
        .kv("profile", "linux")
        .send();
    if total == 0 {
        return Err("no datagram arrived from the source port".into());
    }
    Ok(())
}

/// `ping count=N [nic=]`: ICMP echo to the peer with busybox ping (0.2 s apart), each reply's
/// time a latency sample.
pub fn ping(words: &[&str], boot: &Boot) -> Outcome {
    let a = Args::parse(words, &["count", "nic"])?;
    let count: u32 = a.num("count", 10)?;
    if !(1..=100_000).contains(&count) {
        return Err(format!("`count={count}`: use 1 to 100000"));
    }
    let nic = up(boot, a.str("nic", "auto"))?;
    let out = std::process::Command::new("/bin/busybox")
        .args(["ping", "-c", &count.to_string(), "-i", "0.2", "-W", "2"])
        .arg(&nic.peer)
        .output()
        .map_err(|e| format!("cannot run busybox ping: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lat = Samples::default();
    let mut replies = 0u64;
    for l in text.lines() {
        if let Some(t) = l.split_once("time=").map(|(_, t)| t) {
            if let Ok(ms) = t.trim_end_matches(" ms").trim().parse::<f64>() {
                lat.push((ms * 1e6) as u64);
                replies += 1;
            }
        }
    }
    lat.report("ping", "latency");
    Record::new("result")
        .kv("name", "ping")
        .kv("ops", replies)
        .kv("sent", count)
        .kv("lost", u64::from(count) - replies.min(u64::from(count)))
        .kv("nic", nic.kind)
        .kv("driver", &nic.driver)
        .send();
    if replies == 0 {
        return Err(format!(
            "no echo reply from {}: {}",
            nic.peer,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checks that come before the NIC is touched (no guest needed).
    fn setup_error(words: &[&str], size: Size) -> String {
        let boot = Boot { ip: None, gw: None };
        let a = Args::parse(words, &NetSetup::KEYS).unwrap();
        match NetSetup::parse(&a, &boot, size) {
            Ok(_) => panic!("{words:?} accepted"),
            Err(e) => e,
        }
    }

    #[test]
    fn sizes_windows_and_nics_are_checked_before_the_nic_comes_up() {
        let e = setup_error(&["size=41"], Size::Frame(64));
        assert!(
            e.contains("`size=41` is the frame size: use 42 to 1514"),
            "{e}"
        );
        let e = setup_error(&["size=1515"], Size::Frame(64));
        assert!(e.contains("use 42 to 1514"), "{e}");
        let e = setup_error(&["size=0"], Size::Call(65536));
        assert!(e.contains("`size=0`: use 1 to 1048576"), "{e}");
        let e = setup_error(&[], Size::Call(2 << 20));
        assert!(e.contains("`size=2097152`"), "{e}");
        let e = setup_error(&["warmup_ms=soon"], Size::Frame(64));
        assert!(e.contains("`warmup_ms=soon` is not a valid number"), "{e}");
        let e = setup_error(&["nic=rtl8139"], Size::Frame(64));
        assert!(
            e.contains("`nic=rtl8139`: use auto, virtio or e1000"),
            "{e}"
        );
    }
}
