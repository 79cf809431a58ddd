//! The guest as an attacker (issue 15): the probe's `hostile` workload makes seeded random
//! reads and writes of each device's configuration space, memory BARs and I/O ports. Whatever
//! the device and the guest make of it, vmbench must come out standing: no panic, no hang,
//! an ending it can report (the guest's exit, its crash, a failed device), for a few seeds on
//! every device.

mod support;
use support::*;

use std::process::Command;

/// Accesses per run: each is one VM exit, tens of microseconds on a KVM-PVM host.
const ACCESSES: u32 = 20_000;
const SEEDS: [u32; 3] = [1, 2, 3];

fn hostile(devices: &[&str], dev: &str, seed: u32) {
    let exec = format!("hostile seed={seed} n={ACCESSES} dev={dev}");
    let o = Command::new(env!("CARGO_BIN_EXE_vmbench"))
        .arg("boot")
        .arg("--probe")
        .arg(probe())
        .args(devices)
        .args(["--run-timeout", "60", "--probe-exec", &exec])
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("vmbench runs");
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    let what = format!(
        "{dev} seed {seed}: exit {:?}\n{out}\n{err}",
        o.status.code()
    );
    // 0: the guest finished; 1: it crashed, or a device failed, and vmbench said so. Never
    // 101 (a panic), a signal, or 2 (vmbench could not run the machine at all).
    assert!(matches!(o.status.code(), Some(0 | 1)), "{what}");
    assert!(!err.contains("panicked"), "{what}");
    assert!(
        out.contains("boot timeline:"),
        "the session reached its end: {what}"
    );
    assert!(
        out.contains("; teardown "),
        "the machine was torn down after it (and the timeline says how long that took): {what}"
    );
    if o.status.code() == Some(0) {
        let r = out
            .lines()
            .find(|l| l.starts_with("result name=hostile"))
            .unwrap_or_else(|| panic!("no result: {what}"));
        assert!(r.contains("devices=1"), "{what}");
    }
}

#[test]
fn hostile_accesses_to_every_device_leave_vmbench_standing() {
    let dir = TempDir::new("hostile-guest");
    let img = dir.path("disk.raw");
    sized_file(&img, 16 << 20);
    let img = img.to_str().unwrap();
    let configs: [(&[&str], &str); 4] = [
        (&["--nic", "e1000"], "e1000"),
        (&["--nic", "virtio"], "virtio-net"),
        (&["--disk", "virtio", "--disk-image", img], "virtio-blk"),
        (&["--disk", "ide", "--disk-image", img], "ide"),
    ];
    for (devices, dev) in configs {
        for seed in SEEDS {
            hostile(devices, dev, seed);
        }
    }
}
