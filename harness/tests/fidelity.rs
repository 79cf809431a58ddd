//! The probe's `linux` profiles against Linux's own drivers, register by register (issue 14,
//! item 3): the probe runs `scenarios/fidelity.toml`'s workloads on this host, and its exits
//! per operation on each register must be within 10% of what Linux's `e1000` and `ata_piix`
//! did on the same devices and workloads, its virtio notifications and interrupts within 10%
//! of `virtio_net`'s and `virtio_blk`'s. Linux's figures are recorded data
//! (`tests/data/linux-register-exits.toml`, which says how it was recorded): a stock kernel
//! cannot run on every host that runs the tests (KVM-PVM), and it takes minutes where it can.

mod support;
use support::*;

use std::collections::BTreeMap;

use serde::Deserialize;
use vmbench::results::{self, CaseStatus};

const RECORDED: &str = include_str!("data/linux-register-exits.toml");

/// Per-operation rates below this are not compared (one access every ten operations).
const FLOOR: f64 = 0.1;
/// The largest difference allowed, relative to Linux's rate.
const TOLERANCE: f64 = 0.10;

#[derive(Deserialize)]
struct Recorded {
    /// Registers Linux's drivers access on a timer, not per operation (their rate per
    /// operation depends on how fast the host runs the workload).
    periodic: Vec<String>,
    case: Vec<RecordedCase>,
}

#[derive(Deserialize)]
struct RecordedCase {
    /// The case id in `scenarios/fidelity.toml` (guest=linux).
    id: String,
    device: String,
    ops: u64,
    /// Exits per operation by register, `read:REG` / `write:REG` (e1000, IDE).
    #[serde(default)]
    per_op: BTreeMap<String, f64>,
    /// Notifications per operation (virtio: the notify register's writes are ioeventfd
    /// kicks, not exits to vmbench).
    kicks_per_op: Option<f64>,
    /// Interrupts per operation (virtio: MSI-X, irqfds, not exits to vmbench either).
    interrupts_per_op: Option<f64>,
}

/// Registers whose rates differ by more than the tolerance, as `(register, linux, probe)`.
fn mismatches(
    linux: &BTreeMap<String, f64>,
    probe: &BTreeMap<String, f64>,
    periodic: &[String],
) -> Vec<(String, f64, f64)> {
    let mut names: Vec<&String> = linux.keys().chain(probe.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|n| !periodic.contains(n))
        .filter_map(|n| {
            let l = linux.get(n).copied().unwrap_or(0.0);
            let p = probe.get(n).copied().unwrap_or(0.0);
            let compared = l >= FLOOR || p >= FLOOR;
            (compared && (p - l).abs() > TOLERANCE * l).then(|| (n.clone(), l, p))
        })
        .collect()
}

#[test]
fn the_comparison_catches_a_missing_an_extra_and_a_wrong_register() {
    let linux = BTreeMap::from([
        ("read:ICR".to_string(), 1.02),
        ("read:STATUS".to_string(), 2.04),
        ("read:stats".to_string(), 0.26),
        ("write:ICS".to_string(), 0.004),
    ]);
    let periodic = vec!["read:stats".to_string()];
    let good = BTreeMap::from([
        ("read:ICR".to_string(), 1.0),
        ("read:STATUS".to_string(), 2.0),
        ("write:ICS".to_string(), 0.05),
    ]);
    assert!(mismatches(&linux, &good, &periodic).is_empty());
    let bad = BTreeMap::from([
        ("read:STATUS".to_string(), 3.0),
        ("write:TDT".to_string(), 1.0),
    ]);
    let found: Vec<String> = mismatches(&linux, &bad, &periodic)
        .into_iter()
        .map(|(n, ..)| n)
        .collect();
    assert_eq!(found, ["read:ICR", "read:STATUS", "write:TDT"]);
}

#[test]
fn the_probes_linux_profiles_make_linuxs_register_accesses_per_operation() {
    let recorded: Recorded =
        toml::from_str(RECORDED).expect("tests/data/linux-register-exits.toml");
    assert!(!recorded.case.is_empty());
    let filter: Vec<String> = recorded
        .case
        .iter()
        .map(|c| c.id.replace("guest=linux", "guest=probe"))
        .collect();
    let dir = TempDir::new("fidelity");
    let run = dir.path("run");
    let stdout = bench_ok(&[
        "scenarios/fidelity.toml".as_ref(),
        "--duration".as_ref(),
        "0.5".as_ref(),
        "--filter".as_ref(),
        filter.join("|").as_ref(),
        "--out".as_ref(),
        run.as_os_str(),
    ]);
    let doc = results::load(&run.join(results::RESULTS_FILE)).unwrap();
    assert_eq!(doc.cases.len(), recorded.case.len(), "{stdout}");
    let mut report = Vec::new();
    for rec in &recorded.case {
        assert!(rec.ops >= 100, "{}: too few operations recorded", rec.id);
        let id = rec.id.replace("guest=linux", "guest=probe");
        let case = doc.cases.iter().find(|c| c.id == id).expect(&id);
        assert_eq!(case.status, CaseStatus::Ok, "{id}");
        let virtio = [
            ("kicks", "kicks_per_op", rec.kicks_per_op),
            ("interrupts", "interrupts_per_op", rec.interrupts_per_op),
        ];
        if virtio.iter().any(|(.., linux)| linux.is_some()) {
            for (what, metric, linux) in virtio {
                let Some(linux) = linux else { continue };
                let probe = case.repetitions[0].metrics.get(metric).copied();
                let probe = probe.unwrap_or_else(|| panic!("{id}: no {metric}"));
                if (probe - linux).abs() > TOLERANCE * linux {
                    report.push(format!(
                        "{}: {what}: Linux {linux:.3}/op, probe {probe:.3}/op",
                        rec.device
                    ));
                }
            }
            continue;
        }
        let exits = &case.repetitions[0].exits;
        let prefix = format!("{} ", rec.device);
        let probe: BTreeMap<String, f64> = exits
            .per_op
            .iter()
            .filter_map(|(k, v)| {
                let reg = k.strip_prefix("register:")?.strip_prefix(&prefix)?;
                Some((reg.to_string(), *v))
            })
            .collect();
        assert!(!probe.is_empty(), "{id}: no register counts in {exits:?}");
        for (reg, linux, probe) in mismatches(&rec.per_op, &probe, &recorded.periodic) {
            report.push(format!(
                "{}: {reg}: Linux {linux:.3}/op, probe {probe:.3}/op",
                rec.device
            ));
        }
    }
    assert!(
        report.is_empty(),
        "the probe's linux profile is more than {}% off Linux's driver:\n{}",
        TOLERANCE * 100.0,
        report.join("\n")
    );
}
