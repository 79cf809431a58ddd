//! End-to-end: each NIC vmbench emulates, driven by the probe under real KVM, over a TAP in a
//! network namespace vmbench creates: round trips come back from the services there, a stream
//! reaches their sink, and the namespace goes away with the VM. Needs root (CI runs as root).

mod support;
use support::*;

use vmbench::session::{Ending, Outcome};
use vmm::kinds::{Kind, NicKind};
use vmm::machine::{NetBackendKind, NicConfig, GUEST_MAC};
use vmm::MachineConfig;

fn boot(kind: NicKind, exec: &str) -> Outcome {
    let out = run(&MachineConfig {
        vcpus: 1,
        mem_mib: 64,
        probe: probe(),
        exec: exec.into(),
        disk: None,
        nic: Some(NicConfig {
            kind,
            backend: NetBackendKind::Tap,
            mac: GUEST_MAC,
        }),
        linux: None,
    });
    assert!(
        matches!(out.ending, Ending::Exited { code: 0 }),
        "{kind}: {:?} {:?}",
        out.ending,
        out.records
    );
    out
}

#[test]
fn every_nic_round_trips_and_streams_over_tap_and_the_namespace_goes_away() {
    for &nic in NicKind::VALUES {
        for profile in ["linux", "batched"] {
            let rr = boot(
                nic,
                &format!("net-rr size=100 profile={profile} duration_ms=200 warmup_ms=50"),
            );
            let r = result(&rr, "net-rr");
            assert_eq!(r.get("nic"), Some(nic.as_str()), "{r}");
            assert!(r.get_u64("ops").unwrap() > 10, "{nic} {profile}: {r}");
            assert_eq!(r.get_u64("mismatches"), Some(0), "{nic} {profile}: {r}");
            assert_eq!(r.get_u64("lost"), Some(0), "{nic} {profile}: {r}");
            assert!(counter(&rr, "tap", "echoed_frames") >= r.get_u64("ops").unwrap());
        }

        let tx = boot(nic, "net-tx size=1500 batch=8 duration_ms=200 warmup_ms=50");
        let t = result(&tx, "net-tx");
        assert!(t.get_u64("frames").unwrap() > 100, "{nic}: {t}");
        // Every frame went into the TAP; the sink in the namespace saw the stream (the kernel
        // may drop datagrams its socket buffer cannot hold, which is UDP's nature).
        let total = t.get_u64("frames_total").unwrap();
        assert!(
            counter(&tx, "tap", "tx_frames") >= total,
            "{nic}: {:?}",
            tx.device_counters
        );
        let sunk = counter(&tx, "tap", "sunk_frames");
        assert!(sunk > 0 && sunk <= total, "{nic}: sunk {sunk} of {total}");
    }

    assert!(
        our_namespaces().is_empty(),
        "left behind: {:?}",
        our_namespaces()
    );
}
