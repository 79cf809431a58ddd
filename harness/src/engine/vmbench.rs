//! vmbench's own VMM as an engine: a [`GuestSpec`] becomes a [`MachineConfig`] (the same
//! kinds, field for field), the machine is built and its session run.

use std::time::Instant;

use vmm::backend::block::OpenOptions;
use vmm::machine::{DiskConfig, NicConfig};
use vmm::{Machine, MachineConfig};

use vmm::backend::net::peer::{DEFAULT_GUEST_IP, DEFAULT_PEER_IP};
use vmm::machine::LinuxBoot;

use super::{Engine, Error, GuestSpec};
use crate::scenario::{EngineKind, Guest};
use crate::session::{self, Limits, Outcome, Timed};

/// vmbench's VMM. Reports everything a session can: exit counts, KVM's statistics, every
/// boot phase, device counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct Vmbench;

impl Engine for Vmbench {
    fn kind(&self) -> EngineKind {
        EngineKind::Vmbench
    }

    fn run(
        &self,
        spec: &GuestSpec,
        limits: &Limits,
        on_record: &mut dyn FnMut(&Timed),
    ) -> Result<Outcome, Error> {
        spec.check()?;
        match spec.guest {
            Guest::Probe => {}
            Guest::Linux => {
                if let Some(refusal) = linux_refusal(&vmm::kvm::host_kvm()) {
                    return Err(refusal);
                }
            }
        }
        let mut m = Machine::new(&machine_config(spec)).map_err(Error::Build)?;
        let mut out = session::run(&mut m, limits, on_record).map_err(Error::Run)?;
        let teardown = Instant::now();
        drop(m);
        out.timeline.teardown_ms = Some(teardown.elapsed().as_secs_f64() * 1e3);
        Ok(out)
    }
}

/// Why a stock Linux kernel cannot run on vmbench's VMM on this host, if it cannot: on
/// KVM-PVM guest kernel code (CPL0) is emulated instruction by instruction and a stock
/// kernel dies in its early boot (docs/kvm-pvm.md), so it is refused before anything starts.
pub fn linux_refusal(host: &vmm::kvm::HostKvm) -> Option<Error> {
    (!host.cpl0_native).then(|| Error::Unsupported {
        engine: EngineKind::Vmbench,
        what: format!(
            "a stock Linux kernel on this host ({}: guest kernel code is emulated here, not run, and a stock kernel dies while booting)",
            host.flavour.to_uppercase()
        ),
        hint: "use --engine qemu (engine = \"qemu\"), run it in the emulated host with \
               --host emulated, or bring a kernel built as a PVM guest on a host whose VMM \
               supports it",
    })
}

/// A Linux guest's kernel command line on vmbench's VMM (docs/linux-boot.md): the serial
/// console; `reboot=k` and `panic=-1`, so a reboot or a panic ends in the i8042 reset that
/// ends the machine (a power-off ends it by halting every CPU: `vmm::machine::halt`); the i8042 probed as the minimal controller it is; the
/// NIC's address on the peer's subnet; the user's parameters; the agent's words after ` -- `.
pub fn linux_cmdline(spec: &GuestSpec) -> String {
    let mut s = String::from(
        "console=ttyS0 reboot=k panic=-1 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd",
    );
    if spec.nic.is_some() {
        s += &format!(" vmb.ip={DEFAULT_GUEST_IP}/24 vmb.gw={DEFAULT_PEER_IP}");
    }
    if let Some(l) = spec.linux.as_ref().filter(|l| !l.params.is_empty()) {
        s += " ";
        s += &l.params;
    }
    s + " -- " + &spec.exec
}

/// The machine a spec describes.
pub fn machine_config(spec: &GuestSpec) -> MachineConfig {
    MachineConfig {
        vcpus: spec.vcpus,
        mem_mib: spec.mem_mib,
        probe: spec.probe.clone(),
        exec: spec.exec.clone(),
        // A stated format is passed on; a guessed one is left unstated, so the block back-end
        // recognises it with the same function that filled in `d.format`
        // (vmm::kinds::DiskFormat::detect) and a guessed raw image keeps QEMU's guard on its
        // first sector.
        disk: spec.disk.as_ref().map(|d| DiskConfig {
            kind: d.kind,
            path: d.image.clone(),
            options: OpenOptions {
                read_only: d.read_only,
                direct_io: d.direct_io,
                format: d.format_stated.then_some(d.format),
            },
        }),
        nic: spec.nic.as_ref().map(|n| NicConfig {
            kind: n.kind,
            backend: n.backend,
            mac: n.mac,
        }),
        linux: spec.linux.as_ref().map(|l| LinuxBoot {
            kernel: l.vmlinux.clone(),
            initrd: Some(l.initramfs.clone()),
            cmdline: linux_cmdline(spec),
        }),
    }
}
