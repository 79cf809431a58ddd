//! Networking for the probe: a polling virtio-net driver (virtio 1.2, 5.1) and the e1000
//! driver of `e1000.rs` behind a small NIC trait (`nic.rs`), real Ethernet/ARP/IPv4/UDP framing, and the
//! network workloads: UDP frame streams guest→peer (to the discard port) and peer→guest (from
//! the source port), and UDP request-response round trips (to the echo port), each TSC-timed.
//!
//! Every workload takes `nic=auto|virtio|e1000` (auto: virtio-net if it is on the bus, else an
//! e1000) and `profile=linux|batched|poll`, the driver's register-access pattern (see [`Profile`]);
//! both are reported in the result record.

use core::str::SplitAsciiWhitespace;

use probe_abi::exit;

use crate::alloc;
use crate::args::{Args, Profile};
use crate::e1000::{self, MacSource, E1000};
use crate::io::rdtsc;
use crate::nic::Nic;
use crate::report::Record;
use crate::virtio::{self, Device, Queue};
use crate::window::Window;
use crate::Env;

pub const GUEST_IP: [u8; 4] = [10, 0, 2, 15];
pub const PEER_IP: [u8; 4] = [10, 0, 2, 2];
pub const PORT_ECHO: u16 = 7;
pub const PORT_DISCARD: u16 = 9;
pub const PORT_SOURCE: u16 = 19;
const GUEST_PORT: u16 = 40000;
pub const ETH_HDR: usize = 14;
pub const IP_HDR: usize = 20;
pub const UDP_HDR: usize = 8;
pub const HEADERS: usize = ETH_HDR + IP_HDR + UDP_HDR;
const BUF: u64 = 2048;
const NET_HDR: usize = 12;
const F_MAC: u64 = 1 << 5;
const F_MRG_RXBUF: u64 = 1 << 15;

/// Which NIC a workload drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NicChoice {
    /// virtio-net if the bus has one, else an e1000.
    Auto,
    Virtio,
    E1000,
}

/// Counts a NIC's kicks over the measurement window.
struct Kicks(Option<u64>);

impl Kicks {
    fn tick(&mut self, nic: &dyn Nic, measuring: bool) {
        if measuring && self.0.is_none() {
            self.0 = nic.kicks();
        }
    }

    /// Adds `kicks=` (those of the window) and `kicks_total=` (since the driver started) to a
    /// result record, for NICs that count them.
    fn put(&self, nic: &dyn Nic, r: Record) -> Record {
        match (nic.kicks(), self.0) {
            (Some(now), Some(start)) => r.kv("kicks", now - start).kv("kicks_total", now),
            _ => r,
        }
    }
}

pub struct VirtioNet {
    dev: Device,
    rx: Queue,
    tx: Queue,
    mac: [u8; 6],
    rx_base: u64,
    tx_base: u64,
    rx_posted: usize,
    tx_pending: bool,
}

impl VirtioNet {
    /// `profile=linux` negotiates EVENT_IDX and takes interrupts as Linux's virtio_net does
    /// (an MSI-X vector per queue; see [`Nic::wait_rx`] and `queue_tx`); `poll` negotiates
    /// EVENT_IDX and only polls; `batched` notifies once per batch whatever the device is
    /// doing, and only polls.
    pub fn open(profile: Profile) -> Result<VirtioNet, virtio::Error> {
        let dev = Device::find(1)?;
        let (event_idx, irqs) = match profile {
            Profile::Linux => (virtio::F_RING_EVENT_IDX, true),
            Profile::Poll => (virtio::F_RING_EVENT_IDX, false),
            Profile::Batched => (0, false),
        };
        let f = dev.begin(F_MAC | F_MRG_RXBUF | event_idx)?;
        if irqs {
            dev.enable_msix()?;
        }
        let rx = dev.queue(0, 256, irqs.then_some(crate::irq::NET_RX))?;
        let tx = dev.queue(1, 256, irqs.then_some(crate::irq::NET_TX))?;
        let mut mac = [0x02, 0, 0, 0, 0, 0x0f];
        if f & F_MAC != 0 {
            for (i, m) in mac.iter_mut().enumerate() {
                // SAFETY: the MAC is the first 6 bytes of this device's configuration MMIO.
                *m = unsafe { core::ptr::read_volatile((dev.device_cfg + i as u64) as *const u8) };
            }
        }
        let rx_base =
            alloc::alloc(BUF * u64::from(rx.size), 4096).ok_or(virtio::Error::NoMemory)?;
        let tx_base =
            alloc::alloc(BUF * u64::from(tx.size), 4096).ok_or(virtio::Error::NoMemory)?;
        let mut n = VirtioNet {
            dev,
            rx,
            tx,
            mac,
            rx_base,
            tx_base,
            rx_posted: 0,
            tx_pending: false,
        };
        n.dev.driver_ok()?;
        // Fill the RX ring: a buffer per descriptor, keyed by its index.
        while n.rx.free() > 0 {
            let i = n.rx.peek_head();
            n.rx.push(&[(rx_base + u64::from(i) * BUF, BUF as u32, true)]);
            n.rx_posted += 1;
        }
        n.rx.notify();
        Ok(n)
    }
}

impl Nic for VirtioNet {
    fn name(&self) -> &'static str {
        "virtio"
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn queue_tx(&mut self, frame: &[u8]) -> bool {
        if self.tx.irq.is_some() {
            // virtio_net's start_xmit: transmit interrupts off while the sent buffers are
            // freed, then on again for when about three quarters of those still in flight
            // are sent (its TX NAPI frees the rest).
            loop {
                self.tx.disable_cb();
                self.reclaim_tx();
                if self.tx.enable_cb_delayed() {
                    break;
                }
            }
        }
        if self.tx.free() == 0 || frame.len() + NET_HDR > BUF as usize {
            return false;
        }
        let i = self.tx.peek_head();
        let buf = self.tx_base + u64::from(i) * BUF;
        // SAFETY: TX buffer `i` belongs to this driver and is free (its descriptor is free).
        unsafe {
            core::ptr::write_bytes(buf as *mut u8, 0, NET_HDR);
            core::ptr::copy_nonoverlapping(
                frame.as_ptr(),
                (buf + NET_HDR as u64) as *mut u8,
                frame.len(),
            );
        }
        self.tx
            .push(&[(buf, (NET_HDR + frame.len()) as u32, false)]);
        self.tx_pending = true;
        true
    }

    fn flush_tx(&mut self) {
        if self.tx_pending {
            self.tx.notify();
            self.tx_pending = false;
        }
    }

    fn reclaim_tx(&mut self) -> usize {
        // A transmit interrupt that arrived is ended here too, like TX NAPI's poll.
        crate::irq::service();
        let mut n = 0;
        while self.tx.pop_used().is_some() {
            n += 1;
        }
        n
    }

    fn kicks(&self) -> Option<u64> {
        Some(self.rx.kicks + self.tx.kicks)
    }

    fn wait_rx(&mut self, deadline: u64) {
        self.rx.idle(false, deadline);
    }

    fn wait_tx(&mut self, deadline: u64) {
        self.tx.idle(true, deadline);
    }

    fn poll_rx(&mut self, max: usize, f: &mut dyn FnMut(&[u8])) -> usize {
        let mut n = 0;
        while n < max {
            let Some((head, len)) = self.rx.pop_used() else {
                break;
            };
            let buf = self.rx_base + u64::from(head) * BUF;
            let len = (len as usize).min(BUF as usize);
            if len > NET_HDR {
                // SAFETY: RX buffer `head` was filled by the device with `len` bytes.
                let data = unsafe {
                    core::slice::from_raw_parts((buf + NET_HDR as u64) as *const u8, len - NET_HDR)
                };
                f(data);
            }
            let i = self.rx.peek_head();
            self.rx
                .push(&[(self.rx_base + u64::from(i) * BUF, BUF as u32, true)]);
            n += 1;
        }
        if n > 0 {
            self.rx.notify();
        }
        n
    }
}

/// 16-bit ones'-complement sum (RFC 1071).
pub fn checksum(data: &[u8], initial: u32) -> u16 {
    let mut sum = initial;
    let mut i = 0;
    while i + 1 < data.len() {
        sum += u32::from(u16::from_be_bytes([data[i], data[i + 1]]));
        i += 2;
    }
    if i < data.len() {
        sum += u32::from(data[i]) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Writes Ethernet + IPv4 + UDP headers for a frame of `len` bytes into `f[..HEADERS]`.
pub fn udp_frame(
    f: &mut [u8],
    len: usize,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    sport: u16,
    dport: u16,
) {
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[ETH_HDR..ETH_HDR + IP_HDR];
    ip[0] = 0x45;
    ip[1] = 0;
    ip[2..4].copy_from_slice(&((len - ETH_HDR) as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&0u16.to_be_bytes());
    ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // don't fragment
    ip[8] = 64;
    ip[9] = 17;
    ip[10..12].copy_from_slice(&[0, 0]);
    ip[12..16].copy_from_slice(&GUEST_IP);
    ip[16..20].copy_from_slice(&PEER_IP);
    let c = checksum(ip, 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let udp = &mut f[ETH_HDR + IP_HDR..HEADERS];
    udp[0..2].copy_from_slice(&sport.to_be_bytes());
    udp[2..4].copy_from_slice(&dport.to_be_bytes());
    udp[4..6].copy_from_slice(&((len - ETH_HDR - IP_HDR) as u16).to_be_bytes());
    udp[6..8].copy_from_slice(&[0, 0]); // no UDP checksum (allowed over IPv4)
}

/// The UDP payload of a frame for us from `port`, if it is one.
pub fn udp_payload(frame: &[u8], from_port: u16) -> Option<&[u8]> {
    if frame.len() < HEADERS || frame[12..14] != [0x08, 0x00] || frame[ETH_HDR + 9] != 17 {
        return None;
    }
    let ihl = usize::from(frame[ETH_HDR] & 0xf) * 4;
    let u = ETH_HDR + ihl;
    if frame.len() < u + UDP_HDR || u16::from_be_bytes([frame[u], frame[u + 1]]) != from_port {
        return None;
    }
    let ulen = usize::from(u16::from_be_bytes([frame[u + 4], frame[u + 5]]));
    frame.get(u + UDP_HDR..u + ulen.max(UDP_HDR))
}

/// Resolves the peer's MAC with ARP (RFC 826); retries for `timeout_ms`.
pub fn arp(env: &Env, nic: &mut dyn Nic, timeout_ms: u64) -> Option<[u8; 6]> {
    let mut req = [0u8; 60];
    req[0..6].copy_from_slice(&[0xff; 6]);
    req[6..12].copy_from_slice(&nic.mac());
    req[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    req[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    req[22..28].copy_from_slice(&nic.mac());
    req[28..32].copy_from_slice(&GUEST_IP);
    req[38..42].copy_from_slice(&PEER_IP);
    let per_try = u64::from(env.tsc_khz) * 200;
    let deadline = rdtsc() + u64::from(env.tsc_khz) * timeout_ms;
    while rdtsc() < deadline {
        nic.queue_tx(&req);
        nic.flush_tx();
        let until = rdtsc() + per_try;
        let mut mac = None;
        while mac.is_none() && rdtsc() < until {
            nic.reclaim_tx();
            nic.poll_rx(64, &mut |f| {
                if f.len() >= 42
                    && f[12..14] == [0x08, 0x06]
                    && f[20..22] == [0, 2]
                    && f[28..32] == PEER_IP
                {
                    let mut m = [0u8; 6];
                    m.copy_from_slice(&f[22..28]);
                    mac = Some(m);
                }
            });
        }
        if mac.is_some() {
            return mac;
        }
    }
    None
}

/// Opens the NIC the arguments choose, resolves the peer's MAC and runs `run` with both;
/// returns its exit code, or FAILED after an error record.
fn with_nic(
    env: &Env,
    name: &str,
    c: &Common,
    run: impl FnOnce(&mut dyn Nic, [u8; 6]) -> u32,
) -> u32 {
    let choice = match c.nic {
        NicChoice::Auto if crate::pci::find(virtio::VENDOR, 0x1041).is_some() => NicChoice::Virtio,
        NicChoice::Auto if e1000::find().is_some() => NicChoice::E1000,
        NicChoice::Auto => {
            Record::new("error")
                .text(format_args!("{name}: no NIC on bus 0: neither virtio-net (1af4:1041) nor e1000 (8086:100e/100f/1004)"))
                .send(env);
            return exit::FAILED;
        }
        other => other,
    };
    if choice == NicChoice::E1000 && c.profile == Profile::Poll {
        Record::new("error")
            .text(format_args!("{name}: profile=poll is for virtio (EVENT_IDX, no interrupts); the e1000 takes profile=linux or batched"))
            .send(env);
        return exit::BAD_EXEC;
    }
    match choice {
        NicChoice::E1000 => match E1000::open(c.profile) {
            Ok(mut nic) => {
                let f = nic.function;
                let source = match nic.mac_source {
                    MacSource::Eeprom { checksum_ok: true } => "eeprom",
                    MacSource::Eeprom { checksum_ok: false } => "eeprom-bad-checksum",
                    MacSource::Rar => "ral-rah",
                };
                Record::new("log")
                    .text(format_args!(
                        "{name}: e1000 {:04x}:{:04x} at {:02x}:{:02x}.{} mac {} from {source}, link up, profile {}",
                        f.vendor,
                        f.device,
                        f.bus,
                        f.dev,
                        f.func,
                        Mac(nic.mac()),
                        c.profile.name()
                    ))
                    .send(env);
                match resolve_peer(env, name, &mut nic) {
                    Some(peer) => run(&mut nic, peer),
                    None => exit::FAILED,
                }
            }
            Err(e) => {
                Record::new("error")
                    .text(format_args!("{name}: e1000: {e}"))
                    .send(env);
                exit::FAILED
            }
        },
        _ => match VirtioNet::open(c.profile) {
            Ok(mut nic) => match resolve_peer(env, name, &mut nic) {
                Some(peer) => run(&mut nic, peer),
                None => exit::FAILED,
            },
            Err(e) => {
                Record::new("error")
                    .text(format_args!("{name}: virtio-net: {e}"))
                    .send(env);
                exit::FAILED
            }
        },
    }
}

fn resolve_peer(env: &Env, name: &str, nic: &mut dyn Nic) -> Option<[u8; 6]> {
    let peer = arp(env, nic, 3000);
    if peer.is_none() {
        Record::new("error")
            .text(format_args!("{name}: no ARP reply from the peer 10.0.2.2"))
            .send(env);
    }
    peer
}

struct Mac([u8; 6]);

impl core::fmt::Display for Mac {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

struct Common {
    size: usize,
    duration_ms: u64,
    warmup_ms: u64,
    raw: bool,
    nic: NicChoice,
    profile: Profile,
}

fn common(a: &mut Args, size_default: u64) -> Common {
    let nic = a.choice(
        "nic",
        NicChoice::Auto,
        &[
            ("auto", NicChoice::Auto),
            ("virtio", NicChoice::Virtio),
            ("e1000", NicChoice::E1000),
        ],
    );
    let profile = a.profile();
    Common {
        size: a.u64("size", size_default) as usize,
        duration_ms: a.u64("duration_ms", 1000),
        warmup_ms: a.u64("warmup_ms", 200),
        raw: a.u64("raw", 0) != 0,
        nic,
        profile,
    }
}

fn check_size(env: &Env, name: &str, size: usize) -> bool {
    if !(60..=1514).contains(&size) {
        Record::new("error")
            .text(format_args!(
                "{name}: size must be 60..=1514 bytes (a frame without FCS), got {size}"
            ))
            .send(env);
        return false;
    }
    true
}

/// `net-tx size=S batch=B [nic=auto|virtio|e1000] [profile=linux|batched|poll] [duration_ms=]
/// [warmup_ms=]`: UDP frames of S bytes to the peer's discard port, B queued per doorbell. With
/// `profile=linux` an e1000 gets a TDT write per frame (as Linux's e1000_xmit_frame) and the
/// interrupt handler's register traffic per completion batch; with `batched` one TDT write
/// per B frames and none. virtio-net rings its doorbell once per B frames in both.
pub fn tx(env: &Env, args: SplitAsciiWhitespace) -> u32 {
    let mut a = Args::new(env, "net-tx", args);
    let c = common(&mut a, 64);
    let batch = a.u64_in("batch", 32, 1, probe_abi::limits::NET_TX_BATCH_MAX) as usize;
    if !a.finish() || !check_size(env, "net-tx", c.size) {
        return exit::BAD_EXEC;
    }
    with_nic(env, "net-tx", &c, |nic, peer| {
        tx_run(env, &c, batch, nic, peer)
    })
}

fn tx_run(env: &Env, c: &Common, batch: usize, nic: &mut dyn Nic, peer: [u8; 6]) -> u32 {
    let mut frame = [0u8; 1514];
    udp_frame(
        &mut frame,
        c.size,
        nic.mac(),
        peer,
        GUEST_PORT,
        PORT_DISCARD,
    );
    let khz = u64::from(env.tsc_khz);
    let mut window = Window::new(env, c.warmup_ms, c.duration_ms);
    let mut kicks = Kicks(None);
    let (mut sent, mut total) = (0u64, 0u64);
    let mut seq = 0u32;
    loop {
        let now = rdtsc();
        let measuring = window.tick(env, now);
        kicks.tick(nic, measuring);
        if window.over(now) {
            break;
        }
        nic.reclaim_tx();
        let mut queued = 0;
        while queued < batch {
            seq = seq.wrapping_add(1);
            frame[HEADERS..HEADERS + 4].copy_from_slice(&seq.to_be_bytes());
            if !nic.queue_tx(&frame[..c.size]) {
                break;
            }
            queued += 1;
        }
        nic.flush_tx();
        if queued == 0 {
            // The ring is full: wait for the device to send some (bounded, as in net-rx).
            nic.wait_tx(now + khz);
        }
        total += queued as u64;
        if measuring {
            sent += queued as u64;
        }
    }
    let window_ns = window.close(env, sent);
    // Let the device drain what is queued before the VMM is stopped.
    let drain_until = rdtsc() + khz * 100;
    while rdtsc() < drain_until {
        nic.reclaim_tx();
    }
    kicks
        .put(
            nic,
            Record::new("result")
                .kv("name", "net-tx")
                .kv("ops", sent)
                .kv("frames", sent)
                .kv("frames_total", total)
                .kv("bytes", sent * c.size as u64)
                .kv("window_ns", window_ns)
                .kv("size", c.size)
                .kv("batch", batch)
                .kv("nic", nic.name())
                .kv("profile", c.profile.name()),
        )
        .send(env);
    let _ = c.raw;
    exit::OK
}

fn source_command(nic: &mut dyn Nic, peer: [u8; 6], text: &str) {
    let mut f = [0u8; 128];
    let len = (HEADERS + text.len()).max(60);
    f[HEADERS..HEADERS + text.len()].copy_from_slice(text.as_bytes());
    udp_frame(&mut f, len, nic.mac(), peer, GUEST_PORT, PORT_SOURCE);
    // The UDP length must match the text, not the padded frame.
    let ulen = (UDP_HDR + text.len()) as u16;
    f[ETH_HDR + IP_HDR + 4..ETH_HDR + IP_HDR + 6].copy_from_slice(&ulen.to_be_bytes());
    let iplen = (IP_HDR + UDP_HDR + text.len()) as u16;
    f[ETH_HDR + 2..ETH_HDR + 4].copy_from_slice(&iplen.to_be_bytes());
    f[ETH_HDR + 10..ETH_HDR + 12].copy_from_slice(&[0, 0]);
    let c = checksum(&f[ETH_HDR..ETH_HDR + IP_HDR], 0);
    f[ETH_HDR + 10..ETH_HDR + 12].copy_from_slice(&c.to_be_bytes());
    while !nic.queue_tx(&f[..len]) {
        nic.reclaim_tx();
    }
    nic.flush_tx();
    // Wait until the device has taken the frame (it is in the used ring), so a `stop` sent
    // just before the workload ends is not lost with the VM; keep receiving meanwhile.
    let deadline = rdtsc() + u64::from(crate::io::tsc_khz_hint()) * 100;
    while nic.reclaim_tx() == 0 && rdtsc() < deadline {
        nic.poll_rx(256, &mut |_| {});
    }
}

/// `net-rx size=S [nic=auto|virtio|e1000] [profile=linux|batched|poll] [duration_ms=]
/// [warmup_ms=]`: asks the peer's source port for an endless stream of S-byte frames and
/// counts what arrives in the window. With `profile=linux` an e1000 polls at most 64 frames
/// per batch (NAPI's weight) with the interrupt handler's register traffic around each, and
/// returns buffers with an RDT write every 16; with `batched` one RDT write per poll.
pub fn rx(env: &Env, args: SplitAsciiWhitespace) -> u32 {
    let mut a = Args::new(env, "net-rx", args);
    let c = common(&mut a, 64);
    if !a.finish() || !check_size(env, "net-rx", c.size) {
        return exit::BAD_EXEC;
    }
    with_nic(env, "net-rx", &c, |nic, peer| rx_run(env, &c, nic, peer))
}

fn rx_run(env: &Env, c: &Common, nic: &mut dyn Nic, peer: [u8; 6]) -> u32 {
    let mut cmd = [0u8; 48];
    let text = fmt_into(&mut cmd, format_args!("count=0 size={}", c.size));
    source_command(nic, peer, text);
    let khz = u64::from(env.tsc_khz);
    let mut window = Window::new(env, c.warmup_ms, c.duration_ms);
    let mut kicks = Kicks(None);
    let (mut frames, mut bytes, mut total) = (0u64, 0u64, 0u64);
    loop {
        let now = rdtsc();
        let measuring = window.tick(env, now);
        kicks.tick(nic, measuring);
        if window.over(now) {
            break;
        }
        let (mut f, mut b) = (0u64, 0u64);
        let n = nic.poll_rx(256, &mut |fr| {
            if udp_payload(fr, PORT_SOURCE).is_some() {
                f += 1;
                b += fr.len() as u64;
            }
        });
        if n == 0 {
            // Bounded, so the window's edges are seen within a millisecond.
            nic.wait_rx(now + khz);
        }
        nic.reclaim_tx();
        total += f;
        if measuring {
            frames += f;
            bytes += b;
        }
    }
    let window_ns = window.close(env, frames);
    source_command(nic, peer, "stop");
    kicks
        .put(
            nic,
            Record::new("result")
                .kv("name", "net-rx")
                .kv("ops", frames)
                .kv("frames", frames)
                .kv("frames_total", total)
                .kv("bytes", bytes)
                .kv("window_ns", window_ns)
                .kv("size", c.size)
                .kv("nic", nic.name())
                .kv("profile", c.profile.name()),
        )
        .send(env);
    exit::OK
}

/// `net-rr size=S [nic=auto|virtio|e1000] [profile=linux|batched|poll] [duration_ms=] [warmup_ms=]
/// [raw=1]`: UDP round trips to the peer's echo port, one at a time; each reply's payload must
/// match what was sent. With `profile=linux` an e1000 round trip costs what it costs Linux: a
/// TDT write, the interrupt handler's traffic for the TX completion and again for the reply,
/// and an RDT write.
pub fn rr(env: &Env, args: SplitAsciiWhitespace) -> u32 {
    let mut a = Args::new(env, "net-rr", args);
    let c = common(&mut a, 64);
    if !a.finish() || !check_size(env, "net-rr", c.size) {
        return exit::BAD_EXEC;
    }
    with_nic(env, "net-rr", &c, |nic, peer| rr_run(env, &c, nic, peer))
}

fn rr_run(env: &Env, c: &Common, nic: &mut dyn Nic, peer: [u8; 6]) -> u32 {
    let mut frame = [0u8; 1514];
    udp_frame(&mut frame, c.size, nic.mac(), peer, GUEST_PORT, PORT_ECHO);
    for (i, b) in frame[HEADERS..c.size].iter_mut().enumerate() {
        *b = i as u8;
    }
    let khz = u64::from(env.tsc_khz);
    let mut window = Window::new(env, c.warmup_ms, c.duration_ms);
    let mut kicks = Kicks(None);
    let mut lat = crate::samples::Samples::new(1 << 20);
    let (mut ops, mut mismatches, mut lost) = (0u64, 0u64, 0u64);
    let mut seq = 0u32;
    let timeout = khz * 1000;
    loop {
        let now = rdtsc();
        let measuring = window.tick(env, now);
        kicks.tick(nic, measuring);
        if window.over(now) {
            break;
        }
        seq = seq.wrapping_add(1);
        frame[HEADERS..HEADERS + 4].copy_from_slice(&seq.to_be_bytes());
        nic.reclaim_tx();
        let t0 = rdtsc();
        while !nic.queue_tx(&frame[..c.size]) {
            nic.reclaim_tx();
        }
        nic.flush_tx();
        let sent = &frame[HEADERS..c.size];
        let mut got = false;
        let mut bad = false;
        while !got && rdtsc() - t0 < timeout {
            let n = nic.poll_rx(8, &mut |fr| {
                if let Some(p) = udp_payload(fr, PORT_ECHO) {
                    if p.len() >= 4 && p[..4] == seq.to_be_bytes() {
                        got = true;
                        bad = p != sent;
                    }
                }
            });
            if n == 0 {
                nic.wait_rx(t0 + timeout);
            }
        }
        let t1 = rdtsc();
        if measuring {
            if got {
                ops += 1;
                lat.push(env.ns(t1 - t0));
                if bad {
                    mismatches += 1;
                }
            } else {
                lost += 1;
            }
        }
    }
    let window_ns = window.close(env, ops);
    lat.report(env, "net-rr", "latency", c.raw);
    kicks
        .put(
            nic,
            Record::new("result")
                .kv("name", "net-rr")
                .kv("ops", ops)
                .kv("window_ns", window_ns)
                .kv("mismatches", mismatches)
                .kv("lost", lost)
                .kv("sent_total", u64::from(seq))
                .kv("size", c.size)
                .kv("nic", nic.name())
                .kv("profile", c.profile.name()),
        )
        .send(env);
    if mismatches > 0 {
        return crate::disk::errors_seen(
            env,
            "net-rr",
            format_args!("{mismatches} reply(ies) differed from the request"),
        );
    }
    exit::OK
}

/// Formats into a stack buffer.
fn fmt_into<'b>(buf: &'b mut [u8], args: core::fmt::Arguments) -> &'b str {
    struct W<'a> {
        b: &'a mut [u8],
        n: usize,
    }
    impl core::fmt::Write for W<'_> {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let k = s.len().min(self.b.len() - self.n);
            self.b[self.n..self.n + k].copy_from_slice(&s.as_bytes()[..k]);
            self.n += k;
            Ok(())
        }
    }
    let mut w = W { b: buf, n: 0 };
    let _ = core::fmt::write(&mut w, args);
    let n = w.n;
    core::str::from_utf8(&buf[..n]).unwrap_or("")
}
