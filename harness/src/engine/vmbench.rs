//! vmbench's own VMM as an engine: a [`GuestSpec`] becomes a [`MachineConfig`] (the same
//! kinds, field for field), the machine is built and its session run.

use vmm::backend::block::OpenOptions;
use vmm::machine::{DiskConfig, NicConfig};
use vmm::{Machine, MachineConfig};

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
                return Err(Error::Unsupported {
                    engine: EngineKind::Vmbench,
                    what: "guest \"linux\"".into(),
                    hint: "vmbench's VMM does not boot Linux yet; use engine = \"qemu\"",
                })
            }
        }
        let mut m = Machine::new(&machine_config(spec)).map_err(Error::Build)?;
        session::run(&mut m, limits, on_record).map_err(Error::Run)
    }
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
    }
}
