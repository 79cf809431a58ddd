//! The second engine in a bench run: the same probe workload on QEMU's device models
//! (virtio-blk-pci, PIIX IDE, virtio-net-pci, e1000), so a report compares vmbench's devices
//! with QEMU's in one interleaved run. QEMU's NIC is linked to vmbench's peer through a UDP
//! socket pair on the loopback interface ([`crate::qemu_peer::PeerBridge`]).

use std::time::Instant;

use super::{metrics, Runner};
use crate::qemu::{self, Accel, QemuConfig, QemuDisk, QemuNic};
use crate::qemu_peer::PeerBridge;
use crate::results;
use crate::scenario::{Case, Disk, NetBackend as NetBackendParam, Nic};
use crate::session::{Ending, Outcome, Timed, Timeline};

type Failure = (String, Vec<String>);

/// Runs a case on QEMU's devices (the second engine), so our models are compared with
/// QEMU's in the same interleaved run.
pub fn repetition(r: &mut Runner, case: &Case, index: u32) -> Result<results::Repetition, Failure> {
    let p = &case.params;
    if p.nic != Nic::None && p.net_backend == NetBackendParam::Tap {
        return Err((
            "the QEMU engine links its NIC to vmbench's peer; tap is not offered there".into(),
            vec![],
        ));
    }
    let mut cfg = QemuConfig::new(r.probe.clone());
    cfg.exec = case.probe_exec().to_string();
    if p.workload.kind().is_windowed() && cfg.exec.len() + 6 <= crate::scenario::PROBE_EXEC_MAX {
        cfg.exec.push_str(" raw=1");
    }
    cfg.mem_mib = u64::from(p.mem_mib);
    cfg.accel = Accel::Auto;
    let limits = r.scenario.run.limits();
    cfg.timeout = limits.ready + limits.run;
    cfg.disk = match p.disk {
        Disk::None => None,
        kind => {
            let path = r.disk_for(case).map_err(|e| (e, vec![]))?;
            let k = if kind == Disk::Ide {
                qemu::DiskKind::Ide
            } else {
                qemu::DiskKind::Virtio
            };
            Some(QemuDisk::open(k, path).map_err(|e| (e.to_string(), vec![]))?)
        }
    };
    let bridge = match p.nic {
        Nic::None => None,
        _ => Some(
            PeerBridge::start()
                .map_err(|e| (format!("cannot start the loopback peer: {e}"), vec![]))?,
        ),
    };
    if let Some(b) = &bridge {
        let kind = if p.nic == Nic::Virtio {
            qemu::NicKind::Virtio
        } else {
            qemu::NicKind::E1000
        };
        let mut nic = QemuNic::new(kind, b.netdev());
        nic.mac = vmm::machine::GUEST_MAC;
        cfg.nic = Some(nic);
    }
    let begin = Instant::now();
    let q = qemu::run(&cfg, |_| {}).map_err(|e| (format!("QEMU: {e}"), vec![]))?;
    let wall = begin.elapsed().as_secs_f64();
    let mut out = outcome(&q, begin);
    if let Some(b) = &bridge {
        out.device_counters.insert("peer".into(), b.counters());
    }
    drop(bridge);
    r.check(&out)?;
    metrics::repetition(case, index, &out, wall, r.scenario.run.duration_secs)
        .map_err(|e| (e, out.console_tail.clone()))
}

/// A QEMU run in the shape of a vmbench session (no exit counts: QEMU does not expose them).
fn outcome(q: &qemu::QemuOutcome, begin: Instant) -> Outcome {
    let ending = match q.guest_status {
        Some(code) => Ending::Exited { code },
        None => Ending::Crashed {
            vcpu: 0,
            reason: format!(
                "QEMU ended without the guest's exit status (exit code {:?}): {}",
                q.exit_status,
                q.stderr.join(" | ")
            ),
            rip: 0,
            registers: String::new(),
        },
    };
    let ready = q.ready.map(|d| begin + d);
    Outcome {
        ending,
        records: q
            .records
            .iter()
            .map(|record| Timed {
                record: record.clone(),
                vcpu: None,
                at: begin,
                exits: None,
                cpu: None,
                kvm: None,
            })
            .collect(),
        console_tail: q.console.clone(),
        timeline: Timeline {
            begin: Some(begin),
            setup_done: None,
            started: Some(begin),
            first_instruction: vec![None],
            ready: vec![ready],
            exit: Some(begin + q.wall),
        },
        exits: Default::default(),
        last_exit: format!("QEMU ({})", q.accel.name()),
        ioeventfd_writes: 0,
        tsc_khz: 0,
        device_counters: Default::default(),
    }
}
