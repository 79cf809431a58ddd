//! QEMU as an [`Engine`]: the same probe workload on QEMU's device models (virtio-blk-pci,
//! PIIX IDE, virtio-net-pci, e1000), so a run compares vmbench's devices with QEMU's. QEMU's
//! NIC is linked to vmbench's peer through a UDP socket pair on the loopback interface, or to
//! a TAP in a namespace vmbench creates, with the same host services as vmbench's own TAP
//! back-end ([`Link`]). QEMU exposes no exit counts, KVM statistics or VMM set-up phase: those
//! are `None` in the outcome.

use std::time::Instant;

use super::link::Link;
use super::{Accel, QemuConfig, QemuDisk, QemuNic};
use crate::engine::{Engine, Error, GuestSpec};
use crate::scenario::EngineKind;
use crate::session::{Ending, Limits, Outcome, Timed, Timeline};

/// QEMU with the given accelerator (`Auto`: KVM when it can run the guest, else TCG).
#[derive(Clone, Copy, Debug)]
pub struct Qemu {
    pub accel: Accel,
}

impl Default for Qemu {
    fn default() -> Self {
        Qemu { accel: Accel::Auto }
    }
}

fn unsupported(what: String, hint: &'static str) -> Error {
    Error::Unsupported {
        engine: EngineKind::Qemu,
        what,
        hint,
    }
}

impl Qemu {
    /// QEMU's configuration for a spec, refusing what QEMU would not honour.
    pub fn config(&self, spec: &GuestSpec, limits: &Limits) -> Result<QemuConfig, Error> {
        spec.check()?;
        if spec.vcpus != 1 {
            return Err(unsupported(
                format!("{} vCPUs", spec.vcpus),
                "QEMU starts the probe through its PVH entry, on the boot vCPU only; use 1 vCPU",
            ));
        }
        let mut cfg = QemuConfig::new(spec.probe.clone());
        cfg.exec = spec.exec.clone();
        cfg.mem_mib = spec.mem_mib;
        cfg.accel = self.accel;
        cfg.timeout = limits.ready + limits.run;
        cfg.disk = spec.disk.as_ref().map(|d| QemuDisk {
            kind: d.kind,
            path: d.image.clone(),
            format: d.format,
            read_only: d.read_only,
            direct_io: d.direct_io,
        });
        Ok(cfg)
    }
}

impl Engine for Qemu {
    fn kind(&self) -> EngineKind {
        EngineKind::Qemu
    }

    fn run(
        &self,
        spec: &GuestSpec,
        limits: &Limits,
        on_record: &mut dyn FnMut(&Timed),
    ) -> Result<Outcome, Error> {
        let mut cfg = self.config(spec, limits)?;
        let link = match &spec.nic {
            None => None,
            Some(n) => {
                // The iperf3 server runs only for the workload that talks to it.
                let iperf3 = spec.exec.split_whitespace().next() == Some("iperf3");
                let l = Link::start(n.backend, n.mac, iperf3).map_err(Error::Qemu)?;
                cfg.nic = Some(QemuNic {
                    kind: n.kind,
                    netdev: l.netdev(),
                    mac: n.mac,
                });
                Some((n.backend, l))
            }
        };
        let begin = Instant::now();
        let mut records = Vec::new();
        let q = super::run(&cfg, |record| {
            let t = Timed {
                record: record.clone(),
                vcpu: None,
                at: Instant::now(),
                exits: None,
                cpu: None,
                kvm: None,
                devices: None,
            };
            on_record(&t);
            records.push(t);
        })
        .map_err(Error::Qemu)?;
        let mut out = outcome(&q, begin, records);
        if let Some((backend, l)) = &link {
            out.device_counters
                .insert(backend.as_str().into(), l.counters());
        }
        Ok(out)
    }
}

/// A QEMU run as a session outcome: no exit counts, no KVM statistics, no VMM set-up phase
/// and no first-instruction mark (QEMU does not expose them).
fn outcome(q: &super::QemuOutcome, begin: Instant, records: Vec<Timed>) -> Outcome {
    let ending = match q.guest_status {
        Some(code) => Ending::Exited { code },
        None => Ending::EngineEnded {
            reason: format!(
                "QEMU ended without the guest's exit status (exit code {:?}): {}",
                q.exit_status,
                q.stderr.join(" | ")
            ),
        },
    };
    Outcome {
        ending,
        records,
        console_tail: q.console.clone(),
        timeline: Timeline {
            begin: Some(begin),
            setup_done: None,
            started: Some(begin),
            first_instruction: vec![None],
            ready: vec![q.ready.map(|d| begin + d)],
            exit: Some(begin + q.wall),
        },
        exits: None,
        last_exit: format!("QEMU ({})", q.accel.name()),
        ioeventfd_writes: None,
        tsc_khz: None,
        failed_workers: None,
        device_counters: Default::default(),
    }
}
