//! QEMU as an [`Engine`]: the same probe workload on QEMU's device models (virtio-blk-pci,
//! PIIX IDE, virtio-net-pci, e1000), so a run compares vmbench's devices with QEMU's. QEMU's
//! NIC is linked to vmbench's peer through a UDP socket pair on the loopback interface, or to
//! a TAP in a namespace vmbench creates, with the same host services as vmbench's own TAP
//! back-end ([`Link`]). QEMU exposes no exit counts, KVM statistics or VMM set-up phase: those
//! are `None` in the outcome. A Linux guest (`guest = "linux"`, docs/agent.md) boots the
//! linux image's `vmlinux` through PVH with its initramfs and the agent's command line, on
//! TCG where KVM cannot run guest kernel code natively.

use std::time::Instant;

use super::link::Link;
use super::{Accel, QemuConfig, QemuDisk, QemuNic};
use crate::engine::{Engine, Error, GuestSpec};
use crate::scenario::{EngineKind, Guest};
use crate::session::{Ending, Limits, Outcome, Timed, Timeline};
use vmm::backend::net::peer::{DEFAULT_GUEST_IP, DEFAULT_PEER_IP};

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
        let mut cfg = QemuConfig::new(spec.probe.clone());
        cfg.exec = spec.exec.clone();
        cfg.accel = self.accel;
        match (spec.guest, &spec.linux) {
            (Guest::Probe, _) if spec.vcpus != 1 => return Err(unsupported(
                format!("{} vCPUs", spec.vcpus),
                "QEMU starts the probe through its PVH entry, on the boot vCPU only; use 1 vCPU",
            )),
            (Guest::Probe, _) => {}
            // `check` made sure a Linux guest has its image.
            (Guest::Linux, None) => return Err(Error::NoLinuxImage),
            (Guest::Linux, Some(img)) => {
                cfg.probe = img.vmlinux.clone();
                cfg.initrd = Some(img.initramfs.clone());
                cfg.vcpus = spec.vcpus;
                cfg.exec = linux_cmdline(spec);
                // A stock kernel runs under KVM only where KVM runs guest kernel code
                // natively; elsewhere (KVM-PVM) it would hang, so TCG it is.
                if self.accel == Accel::Auto && !vmm::kvm::host_kvm().cpl0_native {
                    cfg.accel = Accel::Tcg;
                }
            }
        }
        cfg.mem_mib = spec.mem_mib;
        cfg.timeout = limits.ready + limits.run;
        cfg.disk = spec.disk.as_ref().map(|d| QemuDisk {
            kind: d.kind,
            path: d.image.clone(),
            format: d.format,
            format_stated: d.format_stated,
            read_only: d.read_only,
            direct_io: d.direct_io,
        });
        Ok(cfg)
    }
}

/// A Linux guest's kernel command line (docs/agent.md): the serial console, power off on a
/// panic (QEMU's `-no-reboot` then ends), the NIC's address on the peer's subnet, and the
/// agent's workload after ` -- `.
pub fn linux_cmdline(spec: &GuestSpec) -> String {
    let mut s = String::from("console=ttyS0 panic=-1");
    if spec.nic.is_some() {
        s += &format!(" vmb.ip={DEFAULT_GUEST_IP}/24 vmb.gw={DEFAULT_PEER_IP}");
    }
    s + " -- " + &spec.exec
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
            // QEMU counts nothing a window could be measured with.
            let t = Timed::new(record.clone(), None, Instant::now(), None);
            on_record(&t);
            records.push(t);
        })
        .map_err(Error::Qemu)?;
        let mut out = outcome(spec.guest, &q, begin, records);
        if let Some((backend, l)) = &link {
            out.device_counters
                .insert(backend.as_str().into(), l.counters());
        }
        Ok(out)
    }
}

/// A QEMU run as a session outcome: no exit counts, no KVM statistics, no VMM set-up phase
/// and no first-instruction mark (QEMU does not expose them). The probe's status comes from
/// isa-debug-exit; a Linux guest powers off after its agent's `done status=ok|failed`, and
/// one that never says `done` (a kernel panic) ended with its console tail as the reason.
fn outcome(guest: Guest, q: &super::QemuOutcome, begin: Instant, records: Vec<Timed>) -> Outcome {
    let ending = match (guest, q.guest_status) {
        (Guest::Probe, Some(code)) => Ending::Exited { code },
        (Guest::Probe, None) => Ending::EngineEnded {
            reason: format!(
                "QEMU ended without the guest's exit status (exit code {:?}): {}",
                q.exit_status,
                q.stderr.join(" | ")
            ),
        },
        (Guest::Linux, _) => match q.records_of("done").last() {
            Some(d) if d.get("status") == Some("ok") => Ending::Exited { code: 0 },
            Some(_) => Ending::Exited { code: 1 },
            None => Ending::EngineEnded {
                reason: linux_ended(q),
            },
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
            kernel: q.kernel.map(|d| begin + d),
            init: q.init.map(|d| begin + d),
            // QEMU's exit is its own; `wall` ends with it.
            teardown_ms: None,
        },
        exits: None,
        last_exit: format!("QEMU ({})", q.accel.name()),
        ioeventfd_writes: None,
        tsc_khz: None,
        failed_workers: None,
        device_counters: Default::default(),
        accel: q.accel.name(),
    }
}

/// Why a Linux guest ended without its agent's `done`: the kernel's panic line when there is
/// one, else the console's last lines.
fn linux_ended(q: &super::QemuOutcome) -> String {
    let head = format!(
        "the Linux guest ended without its agent reporting done (QEMU exit code {:?})",
        q.exit_status
    );
    match q.console.iter().find(|l| l.contains("Kernel panic")) {
        Some(p) => format!("{head}: {}", p.trim()),
        None => {
            let n = q.console.len();
            let tail: Vec<&str> = q.console[n.saturating_sub(3)..]
                .iter()
                .map(|l| l.trim())
                .collect();
            format!("{head}; console tail: {}", tail.join(" | "))
        }
    }
}
