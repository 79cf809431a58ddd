//! End-to-end: the probe's e1000 driver drives vmbench's emulated 82540EM under real KVM, in
//! both driver profiles, against the in-process peer (the TAP back-end is in tap.rs); guest
//! figures are cross-checked with what the other side counted, and the
//! register traffic of each profile with the VM exits it cost.

mod support;
use support::*;

use vmbench::session::{Ending, Outcome};
use vmm::machine::{NetBackendKind, NicConfig, NicKind, GUEST_MAC};
use vmm::MachineConfig;

const PROFILES: [&str; 2] = ["linux", "batched"];

fn run(backend: NetBackendKind, exec: &str) -> Outcome {
    let cfg = MachineConfig {
        vcpus: 1,
        mem_mib: 64,
        probe: probe(),
        exec: exec.into(),
        disk: None,
        nic: Some(NicConfig {
            kind: NicKind::E1000,
            backend,
            mac: GUEST_MAC,
        }),
        linux: None,
    };
    support::run(&cfg)
}

fn boot(backend: NetBackendKind, exec: &str) -> Outcome {
    let out = run(backend, exec);
    assert!(
        matches!(out.ending, Ending::Exited { code: 0 }),
        "{:?} {:?}",
        out.ending,
        out.records
    );
    out
}

/// e1000 register accesses that exited to the VMM per operation in the measured window.
fn e1000_exits_per_op(out: &Outcome) -> f64 {
    let w = vmbench::session::window(out).expect("a measured window");
    let exits = w.exits.by_device.get("e1000").copied().unwrap_or(0);
    exits as f64 / w.ops.max(1) as f64
}

#[test]
fn frames_sent_by_the_probe_are_counted_by_the_peer_in_both_profiles() {
    let mut per_frame = Vec::new();
    for profile in PROFILES {
        let out = boot(
            NetBackendKind::Peer,
            &format!("net-tx size=64 batch=16 profile={profile} duration_ms=200 warmup_ms=50"),
        );

        let r = result(&out, "net-tx");
        assert_eq!(r.get("nic"), Some("e1000"), "{r}");
        assert_eq!(r.get("profile"), Some(profile), "{r}");
        let total = r.get_u64("frames_total").unwrap();
        assert!(r.get_u64("frames").unwrap() > 100, "{r}");
        assert_eq!(
            counter(&out, "peer", "sunk_frames"),
            total,
            "{profile}: every frame reached the discard service"
        );
        assert_eq!(
            counter(&out, "peer", "sunk_bytes"),
            total * (64 - 42),
            "{profile}: UDP payload bytes"
        );
        assert_eq!(counter(&out, "e1000", "tx_dropped"), 0);
        per_frame.push(e1000_exits_per_op(&out));
    }
    let (linux, batched) = (per_frame[0], per_frame[1]);
    // linux: a TDT write per frame, and per completion batch of 16 the interrupt handler's ICR
    // read, IMC write and flush and NAPI's IMS write and flush.
    assert!(
        (1.0..=1.0 + 5.0 / 16.0 + 0.05).contains(&linux),
        "linux: {linux} exits/frame"
    );
    // batched: one TDT write per 16 frames, and it still traps (e1000 has no ioeventfd).
    assert!(
        (1.0 / 16.0..0.1).contains(&batched),
        "batched: {batched} exits/frame"
    );
    assert!(linux > batched);
}

#[test]
fn udp_round_trips_come_back_with_matching_payloads_in_both_profiles() {
    let mut per_op = Vec::new();
    for profile in PROFILES {
        let out = boot(
            NetBackendKind::Peer,
            &format!("net-rr size=200 profile={profile} duration_ms=200 warmup_ms=50"),
        );

        let r = result(&out, "net-rr");
        assert_eq!(
            (r.get("nic"), r.get("profile")),
            (Some("e1000"), Some(profile)),
            "{r}"
        );
        let ops = r.get_u64("ops").unwrap();
        assert!(ops > 10, "{r}");
        assert_eq!(r.get_u64("mismatches"), Some(0), "{r}");
        assert_eq!(r.get_u64("lost"), Some(0), "{r}");
        assert!(counter(&out, "peer", "echoed_frames") >= ops);
        let lat = out.records_of("latency").next().unwrap();
        assert_eq!(lat.record.get_u64("n"), Some(ops));
        per_op.push(e1000_exits_per_op(&out));
    }
    let (linux, batched) = (per_op[0], per_op[1]);
    // linux: TDT, then one interrupt's five accesses (ICR, IMC, flush, then NAPI's IMS and
    // flush) for the reply, whose poll also reclaims the sent frame as e1000_clean does, then
    // RDT: Linux's own per-register figures (tests/fidelity.rs); batched: TDT and RDT.
    assert!(
        (6.9..7.1).contains(&linux),
        "linux: {linux} exits/round trip"
    );
    assert!(
        (1.9..2.1).contains(&batched),
        "batched: {batched} exits/round trip"
    );
}

#[test]
fn the_peer_streams_frames_into_the_probe_in_both_profiles() {
    for profile in PROFILES {
        let out = boot(
            NetBackendKind::Peer,
            &format!("net-rx size=1500 profile={profile} duration_ms=200 warmup_ms=50"),
        );

        let r = result(&out, "net-rx");
        assert_eq!(
            (r.get("nic"), r.get("profile")),
            (Some("e1000"), Some(profile)),
            "{r}"
        );
        let frames = r.get_u64("frames").unwrap();
        assert!(frames > 100, "{r}");
        assert_eq!(r.get_u64("bytes"), Some(frames * 1500));
        let got = r.get_u64("frames_total").unwrap();
        assert!(counter(&out, "peer", "sourced_frames") >= got);
        assert!(counter(&out, "e1000", "rx_frames") >= got);
        assert_eq!(
            counter(&out, "peer", "source_commands"),
            2,
            "start and stop"
        );
        // Buffers go back with RDT writes that trap: at least one per ring's worth.
        let w = vmbench::session::window(&out).unwrap();
        assert!(
            w.exits.by_device.get("e1000").copied().unwrap_or(0) >= w.ops / 256,
            "{:?}",
            w.exits
        );
    }
}

#[test]
fn a_wrong_nic_or_profile_is_refused() {
    let out = run(NetBackendKind::Peer, "net-rr profile=fast");
    assert!(
        matches!(out.ending, Ending::Exited { code } if code == probe_abi::exit::BAD_EXEC),
        "{:?}",
        out.ending
    );
    let out = run(
        NetBackendKind::Peer,
        "net-rr nic=virtio duration_ms=10 warmup_ms=0",
    );
    assert!(
        matches!(out.ending, Ending::Exited { code } if code == probe_abi::exit::FAILED),
        "{:?}",
        out.ending
    );
    assert!(
        out.records_of("error")
            .any(|t| t.record.text.contains("virtio-net")),
        "{:?}",
        out.records
    );
}
