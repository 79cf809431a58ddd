//! What a machine is built from: its shape, the probe, and each device with its back-end.

use std::path::PathBuf;

pub use crate::boot::linux::LinuxBoot;
pub use crate::kinds::{DiskKind, NetBackendKind, NicKind};

/// What to build.
#[derive(Clone, Debug, Default)]
pub struct MachineConfig {
    pub vcpus: usize,
    pub mem_mib: u64,
    pub probe: PathBuf,
    /// The probe workload and its arguments.
    pub exec: String,
    pub disk: Option<DiskConfig>,
    pub nic: Option<NicConfig>,
    /// Boot this Linux kernel instead of the probe (`probe` and `exec` are then unused).
    pub linux: Option<LinuxBoot>,
}

#[derive(Clone, Debug)]
pub struct NicConfig {
    pub kind: NicKind,
    pub backend: NetBackendKind,
    pub mac: [u8; 6],
}

/// The guest's MAC unless configured otherwise (locally administered).
pub const GUEST_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x0f];

#[derive(Clone, Debug)]
pub struct DiskConfig {
    pub kind: DiskKind,
    pub path: PathBuf,
    pub options: crate::backend::block::OpenOptions,
}
