//! The one seam between what to run and what runs it. A [`GuestSpec`] says everything about
//! one guest (which guest, its shape, each device with its back-end and image, the workload)
//! and is built once: from a scenario case ([`GuestSpec::for_case`]) or from `boot`'s flags.
//! An [`Engine`] boots it and runs it to its end: vmbench's own VMM ([`vmbench::Vmbench`]) or
//! QEMU ([`qemu::Qemu`]). Nothing downstream re-decides what the spec says; an engine that
//! cannot honour a part of it refuses with [`Error::Unsupported`] instead of ignoring it.

pub mod qemu;
pub mod vmbench;

use std::path::PathBuf;

use vmm::kinds::{DiskFormat, DiskKind, NetBackendKind, NicKind};

use crate::scenario::{Case, EngineKind, Guest};
use crate::session::{Limits, Outcome, Timed};

pub use vmm::machine::GUEST_MAC;

/// Everything about one guest, as both engines need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestSpec {
    pub guest: Guest,
    /// The probe ELF (the guest image of `Guest::Probe`).
    pub probe: PathBuf,
    /// The Linux kernel and initramfs (`Some` exactly for `Guest::Linux`).
    pub linux: Option<LinuxImage>,
    pub vcpus: usize,
    pub mem_mib: u64,
    /// The workload command the guest runs (at most [`probe_abi::EXEC_MAX`] bytes for the
    /// probe), e.g. `net-rr size=64 profile=linux warmup_ms=500 duration_ms=2000 raw=1`; for
    /// a Linux guest the agent's words after ` -- ` on the kernel command line.
    pub exec: String,
    pub nic: Option<NicSpec>,
    pub disk: Option<DiskSpec>,
}

/// A Linux guest's boot files: the linux image's (`images build linux`, docs/images.md) or a
/// kernel the user brings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinuxImage {
    /// An ELF vmlinux (the image's, entered through PVH by QEMU, at `startup_64` by vmbench's
    /// VMM) or a bzImage.
    pub vmlinux: PathBuf,
    /// The initramfs whose `/init` is the agent.
    pub initramfs: PathBuf,
    /// Kernel parameters added before the agent's words (` -- `); empty by default.
    pub params: String,
}

impl LinuxImage {
    /// The boot files of a built linux image.
    pub fn from_manifest(m: &images::manifest::Manifest) -> Option<LinuxImage> {
        let art = |n: &str| {
            m.artifacts
                .iter()
                .find(|a| a.name == n)
                .map(|a| a.path.clone())
        };
        Some(LinuxImage {
            vmlinux: art("vmlinux")?,
            initramfs: art("initramfs.cpio.gz")?,
            params: String::new(),
        })
    }
}

/// The guest images a run has: the probe always, the linux image when a case boots Linux.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestImages {
    pub probe: PathBuf,
    pub linux: Option<LinuxImage>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NicSpec {
    pub kind: NicKind,
    pub backend: NetBackendKind,
    pub mac: [u8; 6],
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskSpec {
    pub kind: DiskKind,
    pub image: PathBuf,
    /// The image's format: what its contents say (checked when the spec is built), or what
    /// the user or the scenario stated.
    pub format: DiskFormat,
    /// `format` was stated (`boot --disk-format`, a scenario's `disk_format`), not guessed:
    /// both engines are told it, and a raw image then takes any write; a guessed raw image
    /// refuses guest writes that would make its first sector look like another format.
    pub format_stated: bool,
    pub read_only: bool,
    /// Bypass the host page cache (O_DIRECT).
    pub direct_io: bool,
}

impl DiskSpec {
    /// A writable disk on `image`, its format read from the image's header.
    pub fn open(kind: DiskKind, image: PathBuf) -> Result<DiskSpec, Error> {
        let format = DiskFormat::detect(&image).map_err(|source| Error::DiskUnreadable {
            path: image.clone(),
            source,
        })?;
        Ok(DiskSpec {
            kind,
            image,
            format,
            format_stated: false,
            read_only: false,
            direct_io: false,
        })
    }

    /// A writable disk on `image` in the format the user stated. A stated raw format is not
    /// checked against the contents (a raw disk may hold anything, as with QEMU's
    /// `format=raw`); a stated qcow2 must be one.
    pub fn stated(kind: DiskKind, image: PathBuf, format: DiskFormat) -> Result<DiskSpec, Error> {
        let found = match format {
            DiskFormat::Raw => std::fs::metadata(&image).map(|_| DiskFormat::Raw),
            DiskFormat::Qcow2 => DiskFormat::detect(&image),
        }
        .map_err(|source| Error::DiskUnreadable {
            path: image.clone(),
            source,
        })?;
        if found != format {
            return Err(Error::FormatMismatch {
                path: image,
                wanted: format,
                found,
            });
        }
        Ok(DiskSpec {
            kind,
            image,
            format,
            format_stated: true,
            read_only: false,
            direct_io: false,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the case boots guest \"linux\" but no linux image was given; build it with `vmbench images build linux`")]
    NoLinuxImage,
    #[error("the workload command is {0} bytes; the probe takes at most {max}", max = probe_abi::EXEC_MAX)]
    ExecTooLong(usize),
    #[error("the case has a {0} disk but no disk image was made for it")]
    NoDiskImage(DiskKind),
    #[error("cannot read disk image {}", path.display())]
    DiskUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("disk image {} is {found}, but the case asks for {wanted}; make or convert the image (qemu-img convert -O {wanted}), or state its format", path.display())]
    FormatMismatch {
        path: PathBuf,
        wanted: DiskFormat,
        found: DiskFormat,
    },
    #[error("engine \"{engine}\" cannot run {what}; {hint}")]
    Unsupported {
        engine: EngineKind,
        what: String,
        hint: &'static str,
    },
    #[error("cannot build the VM")]
    Build(#[source] vmm::machine::Error),
    #[error("cannot run the VM")]
    Run(#[source] vmm::machine::Error),
    #[error("QEMU")]
    Qemu(#[source] qemu::Error),
}

/// Boots a [`GuestSpec`] and runs it to its end (or a limit). What an engine cannot observe
/// (exit counts, KVM's statistics, some boot phases) is `None` in the [`Outcome`], never
/// made up.
pub trait Engine {
    fn kind(&self) -> EngineKind;

    /// `on_record` sees each record as it arrives (for live output).
    fn run(
        &self,
        spec: &GuestSpec,
        limits: &Limits,
        on_record: &mut dyn FnMut(&Timed),
    ) -> Result<Outcome, Error>;
}

/// The engine a scenario's `engine` names (QEMU picks KVM when it can run the guest, else TCG).
pub fn for_kind(kind: EngineKind) -> Box<dyn Engine> {
    match kind {
        EngineKind::Vmbench => Box::new(vmbench::Vmbench),
        EngineKind::Qemu => Box::new(qemu::Qemu::default()),
    }
}

impl GuestSpec {
    /// The guest of one scenario case. `disk_image` is the image made for the case's disk
    /// (its format is checked against the case's `disk_format`).
    pub fn for_case(
        case: &Case,
        images: &GuestImages,
        disk_image: Option<PathBuf>,
    ) -> Result<GuestSpec, Error> {
        let p = &case.params;
        let mut exec = case.probe_exec().to_string();
        let linux = match p.guest {
            Guest::Probe => {
                // Raw per-operation samples when they fit; the figures do not depend on them.
                if p.workload.kind().is_windowed() && exec.len() + 6 <= probe_abi::EXEC_MAX {
                    exec.push_str(" raw=1");
                }
                None
            }
            Guest::Linux => Some(images.linux.clone().ok_or(Error::NoLinuxImage)?),
        };
        let disk = match (p.disk, disk_image) {
            (None, _) => None,
            (Some(kind), None) => return Err(Error::NoDiskImage(kind)),
            (Some(kind), Some(image)) => {
                // The scenario states the format (and made the image in it): checked against
                // the contents all the same, then passed on as stated.
                let d = DiskSpec::open(kind, image)?;
                if d.format != p.disk_format {
                    return Err(Error::FormatMismatch {
                        path: d.image,
                        wanted: p.disk_format,
                        found: d.format,
                    });
                }
                Some(DiskSpec {
                    format_stated: true,
                    ..d
                })
            }
        };
        let spec = GuestSpec {
            guest: p.guest,
            probe: images.probe.clone(),
            linux,
            vcpus: p.vcpus as usize,
            mem_mib: u64::from(p.mem_mib),
            exec,
            nic: p.nic.map(|kind| NicSpec {
                kind,
                backend: p.net_backend,
                mac: GUEST_MAC,
            }),
            disk,
        };
        spec.check()?;
        Ok(spec)
    }

    /// What holds for every engine.
    pub fn check(&self) -> Result<(), Error> {
        match self.guest {
            Guest::Probe if self.exec.len() > probe_abi::EXEC_MAX => {
                Err(Error::ExecTooLong(self.exec.len()))
            }
            Guest::Probe => Ok(()),
            Guest::Linux if self.linux.is_none() => Err(Error::NoLinuxImage),
            Guest::Linux => Ok(()),
        }
    }
}

/// Makes an empty disk image of `format` and `size_mib` at `dir/name.<format>` (a sparse raw
/// file, or a qcow2 with 64 KiB clusters) for a case's disk.
pub fn create_image(
    dir: &std::path::Path,
    name: &str,
    format: DiskFormat,
    size_mib: u32,
) -> Result<PathBuf, String> {
    let size = u64::from(size_mib) << 20;
    let p = dir.join(format!("{name}.{format}"));
    let made = match format {
        DiskFormat::Raw => std::fs::File::create(&p).and_then(|f| f.set_len(size)),
        DiskFormat::Qcow2 => {
            vmm::backend::block::qcow2::create(&p, size, 16).map_err(std::io::Error::other)
        }
    };
    made.map_err(|e| format!("cannot create {}: {e}", p.display()))?;
    Ok(p)
}

/// An error with its causes, on one line: `cannot build the VM: ...: ...`.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests;
