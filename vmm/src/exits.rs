//! VM-exit accounting: every exit a vCPU takes to user space is counted by reason and, for
//! port-I/O and MMIO, by the device that handled it. Counters are atomics so any thread can take
//! a consistent-enough snapshot while the guest runs (each counter is exact; a snapshot taken by
//! the vCPU thread that is itself exiting is exact for that vCPU).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::RwLock;

/// Identifies a device for exit accounting. Assigned by [`ExitStats::register`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(pub usize);

/// Maximum number of devices that can be told apart in the accounting.
pub const MAX_DEVICES: usize = 64;

/// Why a vCPU left KVM_RUN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    PioIn,
    PioOut,
    MmioRead,
    MmioWrite,
    /// KVM_RUN interrupted by a signal (the VMM kicking the vCPU).
    Interrupted,
    Other,
}

impl Reason {
    const ALL: [Reason; 6] = [
        Reason::PioIn,
        Reason::PioOut,
        Reason::MmioRead,
        Reason::MmioWrite,
        Reason::Interrupted,
        Reason::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Reason::PioIn => "pio_in",
            Reason::PioOut => "pio_out",
            Reason::MmioRead => "mmio_read",
            Reason::MmioWrite => "mmio_write",
            Reason::Interrupted => "interrupted",
            Reason::Other => "other",
        }
    }
}

/// The last exit of a vCPU, kept so a hang can be explained.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LastExit {
    /// 0 = none yet, else `Reason as u64 + 1`.
    reason: u64,
    pub addr: u64,
}

impl LastExit {
    pub fn reason(&self) -> Option<Reason> {
        Reason::ALL
            .get(self.reason.checked_sub(1)? as usize)
            .copied()
    }
}

struct VcpuCounters {
    by_reason: [AtomicU64; Reason::ALL.len()],
    by_device: [AtomicU64; MAX_DEVICES],
    last_reason: AtomicU64,
    last_addr: AtomicU64,
}

impl VcpuCounters {
    fn new() -> Self {
        VcpuCounters {
            by_reason: std::array::from_fn(|_| AtomicU64::new(0)),
            by_device: std::array::from_fn(|_| AtomicU64::new(0)),
            last_reason: AtomicU64::new(0),
            last_addr: AtomicU64::new(0),
        }
    }
}

/// Exit counters of all vCPUs of one VM, and the names of the devices they are split by.
pub struct ExitStats {
    vcpus: Vec<VcpuCounters>,
    devices: RwLock<Vec<String>>,
}

impl ExitStats {
    pub fn new(vcpus: usize) -> Self {
        ExitStats {
            vcpus: (0..vcpus).map(|_| VcpuCounters::new()).collect(),
            devices: RwLock::new(Vec::new()),
        }
    }

    /// Gives a device an accounting id; devices past [`MAX_DEVICES`] share the last slot.
    pub fn register(&self, name: &str) -> DeviceId {
        let mut devices = self.devices.write().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = devices.iter().position(|d| d == name) {
            return DeviceId(i);
        }
        if devices.len() + 1 >= MAX_DEVICES {
            devices.truncate(MAX_DEVICES - 1);
            devices.push("other-devices".to_string());
            return DeviceId(MAX_DEVICES - 1);
        }
        devices.push(name.to_string());
        DeviceId(devices.len() - 1)
    }

    /// Counts one exit of `vcpu`. Called on the vCPU's own thread.
    pub fn record(&self, vcpu: usize, reason: Reason, addr: u64, device: Option<DeviceId>) {
        let Some(c) = self.vcpus.get(vcpu) else {
            return;
        };
        c.by_reason[reason as usize].fetch_add(1, Relaxed);
        if let Some(DeviceId(d)) = device {
            c.by_device[d.min(MAX_DEVICES - 1)].fetch_add(1, Relaxed);
        }
        c.last_reason.store(reason as u64 + 1, Relaxed);
        c.last_addr.store(addr, Relaxed);
    }

    pub fn last_exit(&self, vcpu: usize) -> LastExit {
        self.vcpus
            .get(vcpu)
            .map(|c| LastExit {
                reason: c.last_reason.load(Relaxed),
                addr: c.last_addr.load(Relaxed),
            })
            .unwrap_or_default()
    }

    /// A copy of all counters, for differences between two points of a run.
    pub fn snapshot(&self) -> ExitSnapshot {
        let devices = self.devices.read().unwrap_or_else(|e| e.into_inner());
        let vcpus = self
            .vcpus
            .iter()
            .map(|c| {
                let mut counts = BTreeMap::new();
                for r in Reason::ALL {
                    let n = c.by_reason[r as usize].load(Relaxed);
                    if n > 0 {
                        counts.insert(r.name().to_string(), n);
                    }
                }
                let mut by_device = BTreeMap::new();
                for (i, name) in devices.iter().enumerate() {
                    let n = c.by_device[i].load(Relaxed);
                    if n > 0 {
                        by_device.insert(name.clone(), n);
                    }
                }
                VcpuExits {
                    by_reason: counts,
                    by_device,
                }
            })
            .collect();
        ExitSnapshot { vcpus }
    }
}

/// Exits of one vCPU by reason and by device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VcpuExits {
    pub by_reason: BTreeMap<String, u64>,
    pub by_device: BTreeMap<String, u64>,
}

impl VcpuExits {
    pub fn total(&self) -> u64 {
        self.by_reason.values().sum()
    }
}

/// Counters of all vCPUs at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExitSnapshot {
    pub vcpus: Vec<VcpuExits>,
}

fn sub_map(a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    a.iter()
        .filter_map(|(k, &v)| {
            let d = v.saturating_sub(b.get(k).copied().unwrap_or(0));
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

impl ExitSnapshot {
    /// Exits that happened between `earlier` and `self`.
    pub fn since(&self, earlier: &ExitSnapshot) -> ExitSnapshot {
        let empty = VcpuExits::default();
        let vcpus = self
            .vcpus
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let e = earlier.vcpus.get(i).unwrap_or(&empty);
                VcpuExits {
                    by_reason: sub_map(&v.by_reason, &e.by_reason),
                    by_device: sub_map(&v.by_device, &e.by_device),
                }
            })
            .collect();
        ExitSnapshot { vcpus }
    }

    /// All vCPUs summed.
    pub fn total(&self) -> VcpuExits {
        let mut t = VcpuExits::default();
        for v in &self.vcpus {
            for (k, n) in &v.by_reason {
                *t.by_reason.entry(k.clone()).or_default() += n;
            }
            for (k, n) in &v.by_device {
                *t.by_device.entry(k.clone()).or_default() += n;
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_reason_and_device_per_vcpu() {
        let stats = ExitStats::new(2);
        let serial = stats.register("serial");
        let mailbox = stats.register("mailbox");

        stats.record(0, Reason::PioOut, 0x3f8, Some(serial));
        stats.record(0, Reason::PioOut, 0x3f8, Some(serial));
        stats.record(1, Reason::PioIn, 0x4f4, Some(mailbox));
        stats.record(1, Reason::MmioRead, 0xf000_0000, None);
        let s = stats.snapshot();

        assert_eq!(s.vcpus[0].by_reason["pio_out"], 2);
        assert_eq!(s.vcpus[0].by_device["serial"], 2);
        assert_eq!(s.vcpus[1].total(), 2);
        assert_eq!(s.vcpus[1].by_device.get("serial"), None);
        assert_eq!(s.total().by_device["mailbox"], 1);
        let last = stats.last_exit(1);
        assert_eq!(
            (last.reason(), last.addr),
            (Some(Reason::MmioRead), 0xf000_0000)
        );
        assert_eq!(stats.last_exit(0).reason(), Some(Reason::PioOut));
    }

    #[test]
    fn registering_a_name_twice_gives_the_same_id() {
        let stats = ExitStats::new(1);
        assert_eq!(stats.register("a"), stats.register("a"));
        assert_ne!(stats.register("a"), stats.register("b"));
    }

    #[test]
    fn difference_between_snapshots() {
        let stats = ExitStats::new(1);
        let d = stats.register("dev");
        stats.record(0, Reason::PioOut, 1, Some(d));
        let before = stats.snapshot();
        stats.record(0, Reason::PioOut, 1, Some(d));
        stats.record(0, Reason::MmioWrite, 2, None);

        let diff = stats.snapshot().since(&before);

        assert_eq!(diff.vcpus[0].by_reason["pio_out"], 1);
        assert_eq!(diff.vcpus[0].by_reason["mmio_write"], 1);
        assert_eq!(diff.vcpus[0].by_device["dev"], 1);
        assert_eq!(diff.total().total(), 2);
    }

    #[test]
    fn no_exit_yet_has_no_reason() {
        let stats = ExitStats::new(1);
        assert_eq!(stats.last_exit(0).reason(), None);
        assert_eq!(stats.last_exit(5), LastExit::default());
    }
}
