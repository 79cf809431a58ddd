//! What a running machine tells its owner, in the order it happened.

use std::time::Instant;

use crate::exits::ExitSnapshot;

#[derive(Debug, Clone)]
pub enum Event {
    /// A line the guest wrote to its serial console (records included, when the guest uses
    /// the serial path: a Linux guest's agent). A record line (it starts with
    /// `probe_abi::RECORD_PREFIX`) carries the VMM's counters as they were at its newline.
    Console {
        line: String,
        at: Instant,
        counters: Option<Box<Counters>>,
    },
    /// A record delivered through vCPU `vcpu`'s mailbox, with all exit counters as they were
    /// at the doorbell (exact for that vCPU).
    Record {
        vcpu: usize,
        text: String,
        at: Instant,
        /// The VMM's counters at the doorbell, so a measured window's figures are exact.
        counters: Box<Counters>,
    },
    /// vCPU `vcpu` executed its first instruction (its write to the entry-mark port).
    Entry { vcpu: usize, at: Instant },
    /// The guest asked to end through the debug-exit port.
    Exit { code: u32, at: Instant },
    /// The guest reset the machine through the i8042 (a Linux guest's reboot or panic, with
    /// `reboot=k` and `panic=-1`).
    Reset { at: Instant },
    /// Every vCPU is halted with interrupts masked (or was never started): nothing can run
    /// again. A Linux guest's power-off or halt on this machine, which has no ACPI to power
    /// off with ([`crate::machine::halt`]).
    Halted { at: Instant },
    /// A vCPU crashed or could not run.
    Crash {
        vcpu: usize,
        reason: String,
        rip: u64,
        registers: String,
        at: Instant,
    },
}

/// The VMM's counters at one instant, taken with a record, so that the window between two
/// records is measured exactly.
#[derive(Debug, Clone)]
pub struct Counters {
    pub exits: ExitSnapshot,
    /// CPU time of the whole VMM process (every thread).
    pub cpu: CpuTime,
    /// KVM's own cumulative counters, all vCPUs summed (empty where the host's KVM has no
    /// binary stats).
    pub kvm: std::collections::BTreeMap<String, u64>,
    /// The devices' operation counters, by device then counter name.
    pub devices: crate::counters::DeviceCounters,
}

/// CPU time of this process: user and system from getrusage(RUSAGE_SELF) (microsecond
/// resolution), and the part of user time spent running guest code (vCPU threads inside
/// KVM_RUN) from /proc/self/stat's guest_time, which the kernel counts in clock ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTime {
    pub user_ns: u64,
    pub sys_ns: u64,
    pub guest_ns: u64,
}

impl CpuTime {
    pub fn now() -> CpuTime {
        let Ok((user_ns, sys_ns)) = crate::sys::process_cpu_ns() else {
            return CpuTime::default();
        };
        CpuTime {
            user_ns,
            sys_ns,
            guest_ns: guest_time_ns().unwrap_or(0),
        }
    }

    /// User time spent in the VMM itself, not in the guest.
    pub fn vmm_user_ns(&self) -> u64 {
        self.user_ns.saturating_sub(self.guest_ns)
    }

    pub fn since(&self, earlier: &CpuTime) -> CpuTime {
        CpuTime {
            user_ns: self.user_ns.saturating_sub(earlier.user_ns),
            sys_ns: self.sys_ns.saturating_sub(earlier.sys_ns),
            guest_ns: self.guest_ns.saturating_sub(earlier.guest_ns),
        }
    }
}

/// Field 43 of /proc/self/stat (guest_time), in nanoseconds.
fn guest_time_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may contain spaces; fields resume after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let ticks: u64 = rest.split(' ').nth(43 - 3)?.parse().ok()?;
    let hz = crate::sys::clock_ticks_per_second()?;
    Some(ticks * 1_000_000_000 / hz)
}
